"""The one writer of catalog deltas (the reader: runtime_py/catalog.py; the byte format: bundle_codecs.py).

    make_delta("artifacts/bundle", "artifacts/keys/private.pem", "delta-1", items_csv="new_items.csv",
               model="artifacts/bundle.model.pt", seq=1)             # `metarec catalog add`
    make_delta("artifacts/bundle", "artifacts/keys/private.pem", "delta-2", retire=["1682"], seq=2)

Adding items needs the bundle's exported model (`metarec export --save-model`, which `make demo` writes to
artifacts/bundle.model.pt; `catalog add` looks for `<BUNDLE>.model.pt` by default): the bundle holds the items'
quantized vectors and compiled programs, not the attribute encoder. The model is proven to be the bundle's
(its quantized table and phi0 equal the bundle's, bit for bit), and the attribute encoding to be the training
data's (sdk/catalog.py), before anything is signed. The new items are scored exactly as the model scores items
it never saw an event of (id-less: attribute vector, new-item bias and trend weight), by a small score program over
the kernel (`DeltaScoreModule`), smoke-run in a child before signing like a bundle's programs.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from metarec.runtime.bundle import open_bundle
from metarec.runtime.bundle_codecs import catalog_digest, encode_delta, sign_manifest
from metarec.runtime.table_codec import decode_table
from metarec.runtime.catalog import probe_in_child
from metarec.runtime.errors import BundleError

from .errors import ExportError
from .lower import lower
from .programs import ScoreModule, flatten_head, score_example_inputs


class DeltaScoreModule(ScoreModule):
    """A catalog delta's program: score.pte's kernel over the delta's (id-less) items, every score returned (the
    runtime merges them with score.pte's top-k)."""

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        return self.scores(head, hist_vecs, hist_mask, scene, trend, exclude, table)


def public_pem(private_key_path) -> bytes:
    """The public key PEM of an Ed25519 private key file (the bundle is verified with it before a delta is made)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    except (OSError, ValueError, TypeError) as e:
        raise ExportError(f"cannot read the signing key {private_key_path}: {e}") from e


def check_model_is_bundles(model, bundle) -> None:
    """ExportError unless `model` is the one `bundle` was exported from: its table quantized like the bundle's and
    its phi0 equal the bundle's, bit for bit."""
    from .compress import quantize_table

    spec, sh = bundle.manifest.item_table, bundle.manifest.shapes
    if model.n_items != sh.N or model.cfg.dim != sh.d:
        raise ExportError(f"the model has {model.n_items} items of dim {model.cfg.dim}, the bundle {sh.N} of {sh.d}: "
                          "give the model `metarec export --save-model` wrote with this bundle")
    table = model.export_item_table()
    if spec.format == "mixed":  # each row is its int8 or its int4 form (the row mask is the file's, not the model's)
        rows = [quantize_table(table, f, spec.group_size, spec.scale_dtype).dequantized for f in ("int8", "int4")]
        same = bool(np.all((rows[0] == bundle.table).all(1) | (rows[1] == bundle.table).all(1)))
    else:
        qt = quantize_table(table, "none" if spec.format == "float32" else spec.format, spec.group_size,
                            spec.scale_dtype)
        same = np.array_equal(qt.dequantized, bundle.table)
    head = flatten_head(model, model.head_init()).detach().numpy().astype(np.float32)
    if not (same and np.array_equal(head, bundle.head0)):
        raise ExportError("the model is not this bundle's (its quantized item table or phi0 differ): give the model "
                          "`metarec export --save-model` wrote with this bundle")


def new_item_rows(model, train_cfg: dict, items_csv, catalog) -> tuple[list[str], np.ndarray, list[str]]:
    """(new ids, their (n, G+2) attribute rows in the model's encoding, genre values the model never saw)."""
    from metarec.sdk.catalog import attribute_schema
    from metarec.sdk.data import load_dataset
    from metarec.sdk.tables import load_items

    items = load_items(items_csv)
    ids = [str(i) for i in items["item_ids"]]
    if not ids:
        raise ExportError(f"{items_csv}: no items")
    dup = [i for i in ids if i in catalog]
    if dup:
        raise ExportError(f"{items_csv}: {len(dup)} item(s) already in the bundle's catalog, e.g. {dup[0]!r}")
    schema = attribute_schema(load_dataset(train_cfg["dataset"]), model.item_attrs.numpy())
    names = items["genre_names"]
    genres = [[names[j] for j in np.flatnonzero(row)] for row in items["item_genres"]]
    attrs, unknown = schema.encode(genres, items["item_year"])
    return ids, attrs, unknown


def delta_program(new_model, table: np.ndarray, bias_dtype: torch.dtype) -> bytes:
    """The delta's score program (.pte bytes) over `new_model`'s id-less items and their decoded `table`."""
    t = torch.from_numpy(np.array(table, dtype=np.float32))
    mod = DeltaScoreModule(new_model, new_model.export_item_bias(), 1, bias_dtype).eval()
    example = score_example_inputs(new_model, t)
    return lower(torch.export.export(mod, example, strict=False), "score", plan_inputs=False)


def make_delta(bundle_dir, key_path, out, *, items_csv=None, model=None, retire=(), seq: int = 1,
               probe: bool = True, progress=None) -> dict:
    """Write the signed delta `out` + `out.sig` for the bundle in `bundle_dir`: `items_csv` (an items file,
    sdk/tables.py) adds items, scored by `model` (the bundle's exported model; default `<bundle_dir>.model.pt`);
    `retire` retires ids. Returns a summary {items, retired, unknown_genres, seq, bundle_serial, bytes}."""
    from .compress import quantize_table

    say = progress or (lambda msg: None)
    if int(seq) < 1:
        raise ExportError(f"--seq must be >= 1, got {seq}")
    try:
        bundle = open_bundle(bundle_dir, public_pem(key_path))
    except BundleError as e:
        raise ExportError(f"bundle {bundle_dir} does not verify with the public half of {key_path}: {e}") from e
    if bundle.manifest.item_table.program:
        raise ExportError(f"bundle {bundle_dir} is a large-catalog bundle (chunked score.pte): the runtime takes no "
                          "catalog delta on it; export a new bundle with the new items instead")
    catalog = set(bundle.item_ids)
    retire = [str(r) for r in retire]
    unknown_retire = [r for r in retire if r not in catalog]
    if unknown_retire:
        say(f"note: {len(unknown_retire)} retired id(s) are not in the bundle (e.g. {unknown_retire[0]!r}); a phone "
            "accepts them only if an earlier delta added them")
    ids, table_bytes, program, unknown, spec = [], None, None, [], bundle.manifest.item_table
    fmt = "int8" if spec.format == "mixed" else spec.format  # new items in a mixed bundle: few rows, use unknown
    if items_csv is not None:
        from .bundle import load_model

        model_path = Path(model) if model is not None else Path(str(Path(bundle_dir).resolve()) + ".model.pt")
        mdl, _, extra = load_model(model_path)
        if "train" not in extra:
            raise ExportError(f"{model_path} records no training config: the attribute encoding is unknown")
        say(f"1/4 check {model_path} is the bundle's model")
        check_model_is_bundles(mdl, bundle)
        say(f"2/4 encode the new items' attributes ({items_csv})")
        ids, attrs, unknown = new_item_rows(mdl, extra["train"], items_csv, catalog)
        if unknown:
            say(f"note: genre value(s) the model never saw are ignored: {', '.join(unknown[:10])}")
        new = mdl.new_items_model(attrs)
        qt = quantize_table(new.export_item_table(), "none" if fmt == "float32" else fmt, spec.group_size,
                            spec.scale_dtype)
        table_bytes = qt.data
        table = decode_table(qt.data, len(ids), bundle.manifest.shapes.d, fmt, spec.group_size, spec.scale_dtype)
        say(f"3/4 lower the delta's score program ({len(ids)} items)")
        program = delta_program(new, table, torch.float32 if fmt == "float32" else torch.float16)
    if not ids and not retire:
        raise ExportError("nothing to do: give an items file to add and/or ids to retire")
    data = encode_delta(at=time.time(), bundle_serial=bundle.serial, catalog=catalog_digest(bundle.item_ids),
                        seq=int(seq), items=ids, retire=retire, table=table_bytes, table_format=fmt,
                        group_size=spec.group_size, scale_dtype=spec.scale_dtype, program=program)
    if program is not None and probe:
        try:
            probe_in_child(data, bundle.manifest.shapes.d)
        except BundleError as e:
            raise ExportError(f"the runtime cannot run this delta, not signed: {e}") from e
    say(f"4/4 sign the delta (bundle serial {bundle.serial}, seq {seq})")
    try:
        sig = sign_manifest(data, Path(key_path))
    except (OSError, ValueError, TypeError) as e:
        raise ExportError(f"cannot sign with {key_path}: {e}") from e
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    Path(f"{out}.sig").write_bytes(sig)
    return {"items": len(ids), "retired": len(retire), "unknown_genres": unknown, "seq": int(seq),
            "bundle_serial": bundle.serial, "bytes": len(data)}
