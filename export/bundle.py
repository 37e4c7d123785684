"""Steps 3-5 of export: ONNX, manifest, signature; and `export_bundle`, the whole pipeline the CLI calls.

    export_bundle("artifacts/prior.pt", "artifacts/bundle", quant="int4", key_path="artifacts/keys/private.pem")

The bundle directory holds: manifest.json, manifest.sig (Ed25519 over the exact manifest bytes), score.pte,
adapt.pte, items.bin (the one copy of the item table), head0.bin (phi0, float32), item_ids.bin and, optionally,
model.onnx. This is the bundle's only writer: the schema, names and byte formats belong to the runtime's bundle
contract (runtime_py/manifest.py, runtime_py/bundle_codecs.py; docs/bundle-format.md); this module only fills
them in.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from metarec.runtime.bundle_codecs import (check_item_ids, encode_floats, encode_item_ids, encode_neighbors,
                                           encode_popularity, encode_program, sign_manifest)
from metarec.runtime.bundle_codecs import generate_keypair as _rt_keypair
from metarec.runtime.manifest import (ADAPT_FILE, ADAPT_INPUTS, ADAPT_METHOD, ADAPT_OUTPUTS, ADAPT_PARAMETER,
                                      ADAPT_PREPARE_METHOD, ADAPT_PREPARE_OUTPUTS, ADAPT_STEP_INPUTS,
                                      ADAPT_UNROLLED_METHOD, HEAD_FILE, IDS_FILE, MANIFEST_FILE, NEIGHBORS_FILE,
                                      ONNX_FILE, POPULARITY_FILE, RANK_INPUTS, RANK_METHOD, RESERVED_FILES,
                                      SCORE_CACHE_OUTPUTS, SCORE_FILE, SCORE_INPUTS, SCORE_METHOD, SCORE_OUTPUTS,
                                      SIGNATURE_FILE, TABLE_FILE, HeadSpec, HistoryWeights, Manifest, NeighborSpec,
                                      ProgramIO, Shapes, TableSpec)
from metarec.runtime.manifest import CHUNKED_SCORE_INPUTS, COLUMNS_METHOD, chunk_input_names
from metarec.runtime.errors import BundleError
from metarec.runtime.probe import probe_in_child
from metarec.runtime.scene import SceneSpec

from .compress import compress_model, early_histories, sdk_finetune, table_of
from .config import CompressConfig, ExportConfig, parse_prune
from .errors import ExportError
from .programs import check_lowerable, export_adapt_program, export_score_program, flatten_head, head_layout


# The phone profile: on ML-100K the shape that fits the 64 KiB budget; the default d=32, M=8 prior is pruned to it
# by measured importance and re-fine-tuned for 100 steps, at no HR@10 loss (bench/results/export.md). The targets are
# upper bounds (CompressConfig.for_model): a prior already at this shape (bench/results/d16_x2) is neither pruned
# nor re-fine-tuned. `prune="none"` exports any model unpruned.
DEFAULT_PRUNE = "dim=16,prototypes=4"


# ---------------------------------------------------------------------------------------------- keys
def generate_keypair(directory: str | os.PathLike) -> Path:
    """Write a development Ed25519 pair `private.pem` (0600) and `public.pem` into `directory`; returns it.

    Keep the directory outside any bundle: the phone must only ever see the public key.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    priv, pub = _rt_keypair()
    p = d / "private.pem"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    (d / "public.pem").write_bytes(pub)
    return d


# ---------------------------------------------------------------------------------------------- loading
def load_model(checkpoint_or_model):
    """(model in eval mode, item_ids list[str] | None, extra configs) from a MetaRecModel or a checkpoint path."""
    if isinstance(checkpoint_or_model, torch.nn.Module):
        return checkpoint_or_model.eval(), getattr(checkpoint_or_model, "item_ids", None), {}
    path = Path(checkpoint_or_model)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    from metarec.sdk.train import load_checkpoint

    try:
        model, cfg, ck = load_checkpoint(path)
    except (KeyError, ValueError) as e:
        raise ExportError(f"{path} is not a metarec checkpoint: {e}") from e
    extra = {"train": cfg.to_dict()}
    if "floor" in ck:  # the validation floor `metarec train` measured: recorded in the manifest, checked on export
        extra["floor"] = ck["floor"]
    if "validation" in ck:  # the validation prior and baseline results: export's choices (select.py), not shipped
        extra["validation"] = ck["validation"]
    return model, ck.get("item_ids"), extra


def model_fingerprint(model) -> str:
    """sha256 prefix of the model's weights: the default model_version."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- steps
def write_programs(model, table: np.ndarray, out: Path, ecfg: ExportConfig, quant: str = "none") -> None:
    """Step 2: score.pte and (when the phone adapts) adapt.pte from the (compressed) model and the table the phone
    will decode."""
    t = torch.from_numpy(np.array(table, dtype=np.float32))
    bias_dtype = torch.float32 if quant == "none" else torch.float16
    score = export_score_program(model, model.export_item_bias(), t, ecfg.k_max, bias_dtype, ecfg.rank_method)
    (out / SCORE_FILE).write_bytes(encode_program(score, ecfg.program_codec))
    write_adapt_program(model, t, out, ecfg)


def write_adapt_program(model, table: torch.Tensor, out: Path, ecfg: ExportConfig) -> None:
    """adapt.pte, only when the model runs steps: a bundle that never adapts does not carry the program
    (ML-100K: 22 KB of 92)."""
    if model.inner_steps:
        (out / ADAPT_FILE).write_bytes(encode_program(export_adapt_program(model, table), ecfg.program_codec))


def write_large_programs(model, out: Path, ecfg: ExportConfig, quant: str) -> dict:
    """Step 2 for large catalogs: the chunked score.pte holding the quantized table (export/large.py) and adapt.pte.
    Returns what the manifest records: {"chunks": edges, "format": table format, "group_size": ...}."""
    from .large import export_chunked_score_program

    score, edges, (fmt, group) = export_chunked_score_program(model, ecfg.k_max, quant, ecfg.large_chunk_items)
    (out / SCORE_FILE).write_bytes(encode_program(score, ecfg.program_codec))
    # adapt.pte's example inputs only: nothing baked
    write_adapt_program(model, model.export_item_table().detach().to(torch.float32), out, ecfg)
    return {"chunks": edges, "format": fmt, "group_size": group}


def write_onnx(model, table: np.ndarray, out: Path, k_max: int, bias_dtype=torch.float32) -> Path:
    """Step 3: model.onnx, the same scorer (table as an input) for runtimes other than ExecuTorch."""
    from .onnx_model import export_onnx

    path = out / ONNX_FILE
    export_onnx(model, torch.from_numpy(np.array(table, np.float32)), k_max, path, bias_dtype)
    return path


def file_entries(out: Path) -> dict:
    """{name: {"sha256", "bytes"}} of every file in the bundle but the manifest and its signature."""
    res = {}
    for p in sorted(out.iterdir()):
        if p.is_file() and p.name not in RESERVED_FILES:
            data = p.read_bytes()
            res[p.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return res


def build_manifest(model, qt, files: dict, *, serial: int, model_version: str, configs: dict,
                   k_max: int, created_at: str | None = None, codec: str = "none", rank_method: bool = False,
                   large: dict | None = None, neighbors=None, by_history=None, head_dtype: str = "float32",
                   onboarding=None) -> bytes:
    """Step 4: canonical manifest bytes for a written bundle directory; ExportError if they break the contract.
    `large`: `write_large_programs`' result (the chunked score.pte holds the table; `qt` is then unused).
    `neighbors`: the item-item term's NeighborSpec, `by_history`: HistoryWeights (both need the rank method, so
    never with `large`; nor is `onboarding`, the OnboardingSpec). `head_dtype`: how head0.bin stores phi0."""
    if large is not None and (neighbors is not None or by_history is not None or onboarding is not None):
        raise ExportError("the item-item term, weights by history length and the onboarding term need score.pte's "
                          "rank method, which the large-catalog program lacks")
    names, shapes = head_layout(model)
    n, d = model.n_items, model.cfg.dim
    score = dict(file=SCORE_FILE, method=SCORE_METHOD, inputs=SCORE_INPUTS, outputs=SCORE_OUTPUTS, codec=codec)
    if large is not None:
        chunks = tuple(large["chunks"])
        score.update(inputs=CHUNKED_SCORE_INPUTS + chunk_input_names(len(chunks) - 1), chunks=chunks,
                     columns_method=COLUMNS_METHOD)
        table = TableSpec(file="", format=large["format"], group_size=large["group_size"], program="score")
        table_dtypes = {"table": f"{large['format']} constant inside score.pte (torchao, 8-bit dynamic activations)",
                        "item_bias": "float32 (inside score.pte)",
                        "table_in_score_program": "constant; read back by the columns method"}
    else:
        table = TableSpec(file=TABLE_FILE, format=qt.fmt, group_size=qt.group_size, scale_dtype=qt.scale_dtype)
        table_dtypes = {"table": qt.fmt, "item_bias": "float32" if qt.fmt == "float32" else
                        "float16 values stored as float32 (inside score.pte)",
                        "table_in_score_program": "float32 input `table` (N, d)"}
    if rank_method and large is None:
        score.update(outputs=SCORE_OUTPUTS + SCORE_CACHE_OUTPUTS, rank_method=RANK_METHOD, rank_inputs=RANK_INPUTS)
    programs = {"score": score}
    if model.inner_steps:  # a bundle that never adapts has no adapt program (write_adapt_program)
        programs["adapt"] = dict(
            file=ADAPT_FILE, method=ADAPT_METHOD, inputs=ADAPT_INPUTS, outputs=ADAPT_OUTPUTS, codec=codec,
            parameters=(ADAPT_PARAMETER,), inner_steps=int(model.inner_steps), lr=1.0,
            prepare_method=ADAPT_PREPARE_METHOD, prepare_outputs=ADAPT_PREPARE_OUTPUTS,
            step_inputs=ADAPT_STEP_INPUTS, unrolled_method=ADAPT_UNROLLED_METHOD)
    try:
        return Manifest(
            model_version=model_version, serial=int(serial),
            created_at=created_at or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            shapes=Shapes(N=n, d=d, L=model.cfg.hist_len, F=SceneSpec().dim, P=sum(int(np.prod(s)) for s in shapes),
                          k_max=k_max, S=model.cfg.hist_len, R=int(model.negatives.numel())),
            item_ids_file=IDS_FILE, negatives=[int(i) for i in model.negatives.tolist()],
            scene_spec=SceneSpec().to_dict(), files=files,
            programs={k: ProgramIO(**v) for k, v in programs.items()},
            item_table=table,
            head=HeadSpec(file=HEAD_FILE, param_names=names, param_shapes=shapes, dtype=head_dtype),
            neighbors=neighbors, by_history=by_history, onboarding=onboarding,
            dtypes={**table_dtypes, "head": head_dtype, "topk_ids": "int64", "program_inputs": "float32"},
            configs=configs).to_json()
    except ValueError as e:  # never write a manifest the runtime would refuse
        raise ExportError(f"the bundle breaks the manifest contract: {e}") from e


def sign_bundle(out: Path, manifest_bytes: bytes, key_path) -> None:
    """Step 5: write manifest.json and its Ed25519 signature manifest.sig."""
    try:
        sig = sign_manifest(manifest_bytes, key_path)
    except (OSError, ValueError, TypeError) as e:
        raise ExportError(f"cannot sign with {key_path}: {e}") from e
    (out / MANIFEST_FILE).write_bytes(manifest_bytes)
    (out / SIGNATURE_FILE).write_bytes(sig)


# ---------------------------------------------------------------------------------------------- pipeline
def _training_data(train_cfg: dict):
    """(dataset, fit users, TrainConfig) a checkpoint was trained on: what pruning re-fine-tunes with."""
    from metarec.sdk.data import load_dataset
    from metarec.sdk.train import TrainConfig, fit_users_for

    tcfg = TrainConfig.from_dict(train_cfg)
    ds = load_dataset(tcfg.dataset)
    return ds, fit_users_for(tcfg, ds), tcfg


def export_bundle(checkpoint_or_model, out_dir, quant: str = "auto", prune=None, key_path=None,
                  serial: int | None = None, *, export_config: ExportConfig | None = None,
                  compress_config: CompressConfig | None = None, item_ids=None, hist_samples=None,
                  finetune=None, model_out=None, progress=None, force: bool = False) -> Path:
    """compress -> programs -> onnx -> manifest -> sign, into `out_dir` (created; stale bundle files removed).
    A checkpoint whose validation floor says "below" (sdk/floor.py) is an ExportError unless `force`.

    `quant="auto"` (the default): the checkpoint's validation run chooses the serving steps and the compression
    (select.py) and the chosen form must not lose to the best baseline there ("below": ExportError unless `force`);
    without a validation run (a model, or `--no-floor`) auto means int4 and the phone profile, unchecked.
    `prune`: None (the phone profile, DEFAULT_PRUNE; with quant="auto": chosen), "none" (no pruning), a dict, or the
    CLI spec "dim=24,prototypes=6". `serial`: default the current unix time, so a later export always has a larger serial.
    `model_out`: also save the exported model (after pruning and re-fine-tuning) as a checkpoint there, outside the
    bundle: the eager twin of the shipped programs, for `metarec parity` and the benchmarks' eager backends.
    `progress`: called with one line per step (the CLI prints them; a minute of silence looks like a hang).
    """
    say = progress or (lambda msg: None)
    if key_path is None or not Path(key_path).is_file():
        raise ExportError(f"signing key {key_path!r} not found (make one with `metarec keygen DIR`)")
    ecfg = export_config or ExportConfig()
    model, ck_ids, extra = load_model(checkpoint_or_model)
    validation = extra.pop("validation", None)
    check_lowerable(model.cfg, extra.get("train", {}).get("learner"))
    auto = compress_config is None and quant == "auto" and prune in (None, "auto")  # a given --prune: int4 with it
    # the prior alone below the floor: with choices to make, the selection's floor judges the bundle it chooses
    # (an item-item term can lift it: ML-1M's prior 0.103 vs 0.117); without them, the prior is the bundle
    if extra.get("floor", {}).get("verdict") == "below" and not force and not (auto and validation is not None):
        from metarec.sdk.floor import floor_summary

        raise ExportError(f"{floor_summary(extra['floor'])}: this prior loses to a simple baseline on validation "
                          "users; ship the baseline, or export anyway with force=True (--force)")
    nb_spec = bh_spec = ob_spec = None
    if auto and validation is not None:
        model, compress_config, nb_spec, bh_spec, ob_spec = _choose(model, validation, extra, ecfg, force, say)
        if (nb_spec is not None or bh_spec is not None or ob_spec is not None) and ecfg.large_catalog(model.n_items):
            # the large-catalog score.pte has no rank method (no cached offset to add them to): ship without them
            say(f"the item-item term, weights by history length and onboarding term the selection chose are not "
                f"shipped: {model.n_items:,} items get the large-catalog score.pte, which has no rank method to add "
                "them to")
            extra["selection"]["neighbors"]["shipped"] = False
            sel = extra["selection"]
            sel["shipped_neighbors"] = sel["shipped_by_history"] = sel["shipped_onboarding"] = None
            nb_spec = bh_spec = ob_spec = None
    elif auto:
        say("no validation run in the checkpoint (a model, or trained with --no-floor): int4 and the phone profile, "
            "not checked against the baselines")
    quant = "int4" if quant == "auto" else quant
    prune = DEFAULT_PRUNE if prune in (None, "auto") else (None if prune in ("none", "") else prune)
    ccfg = compress_config or CompressConfig(quant=quant, **parse_prune(prune))
    ids = item_ids if item_ids is not None else ck_ids
    if ids is None:
        ids = [str(i) for i in range(model.n_items)]
    ids = [str(i) for i in ids]
    try:
        check_item_ids(ids, model.n_items)
    except ValueError as e:
        raise ExportError(f"item ids: {e}") from e
    model_version = ecfg.model_version or model_fingerprint(model)
    ccfg = ccfg.for_model(model.cfg.dim, model.cfg.n_prototypes)
    if ccfg.prunes and finetune is None and ccfg.finetune_steps and "train" in extra:
        say(f"1/5 prune to {ccfg.prune_dim or model.cfg.dim} dims, {ccfg.prune_prototypes or model.cfg.n_prototypes} "
            f"prototypes and re-fine-tune {ccfg.finetune_steps} steps on the checkpoint's data")
        ds, fit_users, tcfg = _training_data(extra["train"])  # prune by importance on real histories, re-fine-tune
        hist_samples = early_histories(ds, fit_users, model.cfg.hist_len) if hist_samples is None else hist_samples
        finetune = sdk_finetune(ds, fit_users, tcfg)
    model, creport = compress_model(model, ccfg, hist_samples, finetune)
    large = ecfg.large_catalog(model.n_items)  # the large-catalog score.pte holds the table itself
    qt = None
    if large and ccfg.quant == "mixed":
        raise ExportError(f"a mixed table is a file; {model.n_items:,} items get the large-catalog score.pte, whose "
                          "table constant has one format: use int8 or int4")
    if not large:
        share = f", the most used {ccfg.int8_share:.0%} int8" if ccfg.quant == "mixed" else ""
        say(f"2/5 quantize the item table ({ccfg.quant}{share})")
        qt = table_of(model, ccfg)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():  # a bundle is a unit: never leave a previous export's files behind
        if p.is_file():
            p.unlink()
    if qt is not None:
        (out / TABLE_FILE).write_bytes(qt.data)
    (out / IDS_FILE).write_bytes(encode_item_ids(ids))  # a file, not inline JSON (manifest.py)
    (out / HEAD_FILE).write_bytes(encode_floats(flatten_head(model, model.head_init()).detach().numpy(),
                                                ccfg.head_dtype))  # compress_model rounded phi0 to it
    neighbors = None
    if nb_spec is not None:  # the table from every fit user's events: in the bundle, or a first pack beside it
        ds, fit_users, _ = _training_data(extra["train"])
        from metarec.sdk.neighbors import build_neighbors

        table = build_neighbors(ds, fit_users, nb_spec["kind"], nb_spec["m"])
        if ecfg.neighbors_in_bundle:
            (out / NEIGHBORS_FILE).write_bytes(encode_neighbors(*table))
        else:
            from metarec.runtime.bundle_codecs import catalog_digest
            from metarec.runtime.neighbors import NeighborPack

            pack = neighbor_pack_path(out)
            NeighborPack(float(ds.ts.max()) + 1.0, catalog_digest(ids), nb_spec["kind"], *table).save(pack, key_path)
            say(f"   first neighbour pack ({nb_spec['kind']}, m={nb_spec['m']}, {pack.stat().st_size / 1024:.0f} KB): "
                f"{pack} (+ .sig); the server sends fresh ones: `metarec neighbors`")
        neighbors = NeighborSpec(file=NEIGHBORS_FILE if ecfg.neighbors_in_bundle else "", **nb_spec)
    by_history = None
    if bh_spec is not None:
        if bh_spec["popularity"]:
            (out / POPULARITY_FILE).write_bytes(encode_popularity(model.log_pop.detach().numpy()))
        by_history = HistoryWeights(term=bh_spec["term"], popularity=bh_spec["popularity"],
                                    file=POPULARITY_FILE if bh_spec["popularity"] else "")
    if ob_spec is not None:  # a first pack beside the bundle; the server sends fresh ones (`metarec onboarding`)
        from metarec.runtime.bundle_codecs import catalog_digest
        from metarec.runtime.onboarding import OnboardingPack
        from metarec.sdk.onboarding import pack_rows
        from metarec.sdk.protocol import EventLog

        ds, _, _ = _training_data(extra["train"])
        at = float(ds.ts.max()) + 1.0
        pack = onboarding_pack_path(out)
        OnboardingPack.from_rows(at, pack_rows(EventLog(ds), at, -1, ob_spec, ids), catalog_digest(ids)).save(
            pack, key_path)
        say(f"   first onboarding pack ({pack.stat().st_size / 1024:.0f} KB): {pack} (+ .sig); the server sends "
            "fresh ones: `metarec onboarding`")
    else:  # a previous export's pack would belong to a term this bundle does not have
        for stale in (onboarding_pack_path(out), Path(str(onboarding_pack_path(out)) + ".sig")):
            stale.unlink(missing_ok=True)
    large_io = None
    adapt_note = " and adapt.pte" if model.inner_steps else " (no adapt.pte: the phone runs no adaptation step)"
    if large:
        say(f"2/5 {model.n_items:,} items >= large_catalog_items={ecfg.large_catalog_items:,}: the large-catalog "
            f"score.pte, table quantized inside it ({ccfg.quant}), chunks of {ecfg.large_chunk_items:,}")
        say(f"3/5 lower score.pte (top-{ecfg.k_max}, chunked){adapt_note} to ExecuTorch")
        large_io = write_large_programs(model, out, ecfg, ccfg.quant)
    else:
        say(f"3/5 lower score.pte (top-{ecfg.k_max}){adapt_note} to ExecuTorch")
        write_programs(model, qt.dequantized, out, ecfg, ccfg.quant)
    if ecfg.onnx and large:
        say("4/5 no model.onnx: its scorer takes the table as an input, and a large bundle has the table only "
            "inside score.pte")
    elif ecfg.onnx:
        say("4/5 write model.onnx")
        write_onnx(model, qt.dequantized, out, ecfg.k_max, torch.float32 if ccfg.quant == "none" else torch.float16)
    selection = extra.pop("selection", None)
    if selection is not None:
        from .select_report import manifest_record

        extra["selection"] = manifest_record(selection)
    configs = {"model": model.cfg.to_dict(), "compress": ccfg.to_dict(), "export": ecfg.to_dict(),
               "compress_report": creport, **extra,
               "layout": {"hist": "right: slot L-1 newest", "trend": "log1p counts", "exclude": "1=out, score -inf",
                          "table": "score.pte constant, rows read back by its columns method" if large else
                          f"decoded {TABLE_FILE} = score input `table`",
                          "onnx": "score.pte I/O" if ecfg.onnx and not large else "none"}}
    if large:
        configs["layout"]["exclude"] = "t<c> = trend with -inf at excluded items"
    serial = serial or int(time.time())
    manifest = build_manifest(model, qt, file_entries(out), serial=serial,
                              model_version=model_version, configs=configs, k_max=ecfg.k_max,
                              codec=ecfg.program_codec, rank_method=ecfg.rank_method, large=large_io,
                              neighbors=neighbors, by_history=by_history, head_dtype=ccfg.head_dtype,
                              onboarding=ob_spec)
    try:  # a bundle whose programs fault inside ExecuTorch is never signed (docs/decisions/program-trust.md)
        probe_in_child(out, manifest)
    except BundleError as e:
        raise ExportError(f"the runtime cannot run this bundle, not signed: {e}") from e
    say(f"5/5 sign the manifest (serial {serial})")
    sign_bundle(out, manifest, key_path)
    path = selection_report_path(out)
    if selection is not None:
        path.write_text(json.dumps(selection, indent=1, sort_keys=True, default=_jsonable))
        say(f"   the whole selection report (every weight grid): {path}")
    elif path.exists():  # a previous export's report would describe choices this bundle did not make
        path.unlink()
    if model_out is not None:
        save_exported_model(model, model_out, extra.get("train"), ids, creport,
                            source=None if isinstance(checkpoint_or_model, torch.nn.Module) else checkpoint_or_model)
    return out


def selection_report_path(bundle_dir) -> Path:
    """Where export writes the whole selection report (the manifest records its summary)."""
    out = Path(bundle_dir)
    return out.with_name(out.name + ".selection.json")


def _jsonable(o):
    return o.to_dict() if hasattr(o, "to_dict") else o.tolist() if hasattr(o, "tolist") else str(o)


def onboarding_pack_path(bundle_dir) -> Path:
    """Where export writes the first onboarding pack of a bundle with the onboarding term."""
    out = Path(bundle_dir)
    return out.with_name(out.name + ".onboarding")


def neighbor_pack_path(bundle_dir) -> Path:
    """Where export writes the first neighbour pack of a bundle whose table is not inside it."""
    out = Path(bundle_dir)
    return out.with_name(out.name + ".neighbors")


def _choose(model, validation: dict, extra: dict, ecfg: ExportConfig, force: bool, say):
    """(the shipped model with the chosen serving steps, the chosen CompressConfig); records the selection in
    `extra` (the manifest's configs) and refuses a chosen form below the best baseline unless `force`."""
    import copy
    import dataclasses

    from .select import select
    from .select_report import selection_summary

    say("0/5 choose the serving steps, the item-item term and the compression on validation users (HR@10 over "
        "K = 1..10, the checkpoint's validation run)")
    from metarec.sdk.train import TrainConfig

    sel = select(validation, ecfg.accuracy_budget, say,
                 offset_terms=ecfg.rank_method and not ecfg.large_catalog(model.n_items),
                 mixed_table=not ecfg.large_catalog(model.n_items),
                 shipped_prior=(model, TrainConfig.from_dict(extra["train"])) if "train" in extra else None)
    extra["selection"] = sel.report  # the whole report, written beside the bundle; the manifest keeps a summary
    best = extra.get("floor", {}).get("best_baseline", "best baseline")
    say(selection_summary(sel.report, best))
    if sel.report["bundle_floor"]["verdict"] == "below" and not force:
        raise ExportError(f"{selection_summary(sel.report, best)}: every compressed form of this prior loses to a "
                          "simple baseline on validation users; ship the baseline, or export anyway with --force")
    if sel.neighbors is not None and not ecfg.rank_method:
        raise ExportError("the chosen item-item term needs score.pte's rank method (ExportConfig.rank_method)")
    if sel.pop_delta:
        from .select import with_pop_delta

        model = with_pop_delta(model, sel.pop_delta)
    if sel.inner_steps != model.cfg.inner_steps:
        model = copy.deepcopy(model)
        model.cfg = dataclasses.replace(model.cfg, inner_steps=sel.inner_steps)
    return model, sel.compress, sel.neighbors, sel.by_history, sel.onboarding


def save_exported_model(model, path, train_cfg: dict | None, item_ids, compress_report: dict,
                        source=None) -> Path:
    """The exported model as a training-format checkpoint (`load_checkpoint` reads it); atomic write. From a
    `source` checkpoint it keeps what ties it to its data (fit users, data fingerprint), so `metarec eval` and
    `metarec parity` use these weights instead of re-training on a fingerprint mismatch."""
    from metarec.sdk.train import CHECKPOINT_VERSION, TrainConfig

    base = train_cfg if train_cfg is not None else TrainConfig().to_dict()
    tcfg = TrainConfig.from_dict({**base, "model": model.cfg.to_dict()})
    ck = {"checkpoint_version": CHECKPOINT_VERSION, "train_config": tcfg.to_dict(), "step": 0,
          "state_dict": model.state_dict(), "n_items": model.n_items, "item_ids": list(item_ids),
          "stats": {"exported_model": True, "compress_report": compress_report}}
    if source is not None:
        src = torch.load(source, weights_only=False, map_location="cpu")
        ck.update({k: src[k] for k in ("fit_users", "data_fingerprint") if k in src})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)
    return path
