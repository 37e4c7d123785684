"""The bundle as the phone receives it: every file hashed, the manifest signed, the key pair kept out."""
import hashlib
import json
import os

import numpy as np
import pytest

from metarec.export.bundle import ExportError, build_manifest, export_bundle
from metarec.export.config import ExportConfig
from metarec.runtime.errors import BundleError
from metarec.runtime.bundle_codecs import verify_signature

FAST = ExportConfig(k_max=10, onnx=False)


@pytest.fixture(scope="module")
def bundle(model, keys, tmp_path_factory):
    return export_bundle(model, tmp_path_factory.mktemp("b") / "bundle", quant="int4", prune="none",
                         key_path=keys / "private.pem", serial=7, export_config=FAST)


def test_files_hashes_and_signature(bundle, keys):
    raw = (bundle / "manifest.json").read_bytes()
    verify_signature(raw, (bundle / "manifest.sig").read_bytes(), keys / "public.pem")
    m = json.loads(raw)
    assert raw == json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()  # canonical
    on_disk = {p.name for p in bundle.iterdir()} - {"manifest.json", "manifest.sig"}
    assert set(m["files"]) == on_disk == {"score.pte", "adapt.pte", "items.bin", "head0.bin", "item_ids.bin"}
    assert m["item_ids"] == [] and m["item_ids_file"] == "item_ids.bin"
    for name, e in m["files"].items():
        data = (bundle / name).read_bytes()
        assert e == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert m["serial"] == 7 and m["schema_version"] == 2 and m["created_at"].endswith("Z")
    sh = m["shapes"]
    assert (sh["N"], sh["d"], sh["k_max"], sh["F"]) == (96, 32, 10, 15)
    assert m["item_table"] == {"file": "items.bin", "format": "int4", "group_size": 32, "scale_dtype": "float16"}
    assert m["files"]["items.bin"]["bytes"] == 96 * 32 // 2 + 96 * 2  # int4 nibbles, then one half scale a row
    assert m["programs"]["score"]["inputs"][-1] == "table" and m["programs"]["adapt"]["parameters"] == ["delta"]
    assert set(m["configs"]) >= {"model", "compress", "export", "layout"}


def test_tampered_manifest_fails_verification(bundle, keys):
    raw = bytearray((bundle / "manifest.json").read_bytes())
    raw[raw.index(b'"serial":7')+9] = ord("8")
    with pytest.raises(BundleError):
        verify_signature(bytes(raw), (bundle / "manifest.sig").read_bytes(), keys / "public.pem")


def test_keys_never_in_bundle(bundle, keys):
    assert not any(p.suffix == ".pem" for p in bundle.iterdir())
    assert oct(os.stat(keys / "private.pem").st_mode & 0o777) == "0o600"
    priv = (keys / "private.pem").read_bytes()
    assert all(priv not in p.read_bytes() for p in bundle.iterdir())


def test_default_serial_increases_and_stale_files_go(model, keys, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "old.bin").write_bytes(b"x")
    a = json.loads((export_bundle(model, out, key_path=keys / "private.pem", export_config=FAST)
                    / "manifest.json").read_bytes())["serial"]
    assert not (out / "old.bin").exists()
    b = json.loads((export_bundle(model, out, key_path=keys / "private.pem", serial=a + 1, export_config=FAST)
                    / "manifest.json").read_bytes())["serial"]
    assert b > a > 1_600_000_000


def test_pruned_bundle_is_smaller(model, keys, tmp_path, bundle):
    small = export_bundle(model, tmp_path / "p", quant="int4", prune="dim=16,prototypes=2",
                          key_path=keys / "private.pem", export_config=FAST)
    m = json.loads((small / "manifest.json").read_bytes())
    assert m["shapes"]["d"] == 16 and m["configs"]["compress"]["prune_dim"] == 16
    for name in ("items.bin", "head0.bin", "score.pte", "adapt.pte"):
        assert (small / name).stat().st_size < (bundle / name).stat().st_size, name


def test_default_is_the_phone_profile(model, keys, tmp_path):
    m = json.loads((export_bundle(model, tmp_path / "d", key_path=keys / "private.pem", export_config=FAST)
                    / "manifest.json").read_bytes())
    assert (m["shapes"]["d"], m["configs"]["model"]["n_prototypes"], m["item_table"]["format"]) == (16, 4, "int4")


def test_export_errors(model, keys, tmp_path):
    with pytest.raises(ExportError):
        export_bundle(model, tmp_path / "x", key_path=tmp_path / "missing.pem")
    with pytest.raises(ExportError):
        export_bundle(tmp_path / "nope.pt", tmp_path / "x", key_path=keys / "private.pem")
    with pytest.raises(ValueError):
        export_bundle(model, tmp_path / "x", quant="int3", key_path=keys / "private.pem")
    with pytest.raises(ExportError):
        export_bundle(model, tmp_path / "x", key_path=keys / "private.pem", item_ids=["a"])


def test_saved_model_is_the_shipped_one_after_refinetune(model, keys, tmp_path):
    """--save-model writes the model the programs were made from: pruned AND re-fine-tuned, not the input."""
    import numpy as np
    import torch

    from metarec.export.programs import flatten_head
    from metarec.sdk.train import load_checkpoint

    def finetune(m, steps):  # stands in for the sdk re-fine-tune: any change export must carry into the file
        with torch.no_grad():
            m.head0["u"].add_(0.5)
        return m

    out = export_bundle(model, tmp_path / "b", prune="dim=16,prototypes=2", key_path=keys / "private.pem",
                        export_config=FAST, finetune=finetune, model_out=tmp_path / "b.model.pt")
    assert not (out / "b.model.pt").exists()  # outside the bundle
    saved, _, _ = load_checkpoint(tmp_path / "b.model.pt")
    assert (saved.cfg.dim, saved.cfg.n_prototypes) == (16, 2)
    head0 = np.frombuffer((out / "head0.bin").read_bytes(), "<f2").astype(np.float32)  # default: phi0 in halves
    assert json.loads((out / "manifest.json").read_bytes())["head"]["dtype"] == "float16"
    np.testing.assert_array_equal(flatten_head(saved, saved.head_init()).detach().numpy(), head0)


def test_bundle_opens_with_the_runtime_reader(bundle, keys, model):
    """The one writer's output is what the one reader accepts: codecs recorded per program, exact table."""
    from metarec.export.compress import quantize_table
    from metarec.runtime.bundle import open_bundle

    b = open_bundle(bundle, keys / "public.pem")
    assert {p.codec for p in b.manifest.programs.values()} == {FAST.program_codec}
    qt = quantize_table(model.export_item_table(), "int4", b.manifest.item_table.group_size,
                        b.manifest.item_table.scale_dtype)
    np.testing.assert_array_equal(b.table, qt.dequantized)
    assert b.read_file("items.bin") == qt.data


def test_manifest_contract_failure_raises_export_error_and_writes_nothing(model, keys, tmp_path, monkeypatch):
    """No hand-written fallback: a manifest the contract refuses stops the export before anything is signed."""
    import metarec.export.bundle as writer
    from metarec.export.compress import quantize_table

    qt = quantize_table(model.export_item_table(), "none")
    with pytest.raises(ExportError, match="not listed in files"):
        build_manifest(model, qt, {}, serial=1, model_version="m", configs={}, k_max=10, codec="zlib")
    with pytest.raises(ExportError, match="program codec"):
        build_manifest(model, qt, {}, serial=1, model_version="m", configs={}, k_max=10, codec="lz4")
    real = writer.file_entries
    monkeypatch.setattr(writer, "file_entries", lambda out: {k: v for k, v in real(out).items() if k != "items.bin"})
    out = tmp_path / "broken"
    with pytest.raises(ExportError, match="items.bin"):
        export_bundle(model, out, quant="none", prune="none", key_path=keys / "private.pem", export_config=FAST)
    assert not (out / "manifest.json").exists() and not (out / "manifest.sig").exists()


def test_a_bundle_whose_programs_fail_the_smoke_run_is_never_signed(model, keys, tmp_path, monkeypatch):
    """export smoke-runs the programs in a child before signing (docs/decisions/program-trust.md); a fault there
    (tests/runtime/test_probe.py shows a real one is caught) stops the export unsigned."""
    import metarec.export.bundle as writer

    seen = []

    def faulting(out, manifest):
        seen.append(json.loads(manifest)["serial"])
        raise BundleError("program smoke run was killed by SIGSEGV inside ExecuTorch")
    monkeypatch.setattr(writer, "probe_in_child", faulting)
    out = tmp_path / "crashing"
    with pytest.raises(ExportError, match="not signed.*SIGSEGV"):
        export_bundle(model, out, quant="none", prune="none", key_path=keys / "private.pem", serial=3,
                      export_config=FAST)
    assert seen == [3] and not (out / "manifest.sig").exists() and not (out / "manifest.json").exists()


def test_mixed_bundle_keeps_the_most_used_rows_int8_and_serves_them(model, keys, tmp_path):
    """--quant mixed: the runtime decodes the table export quantized (int8 rows for the share of items the model's
    popularity ranks first, int4 for the rest), and the saved model's phi0 is the half-precision one shipped."""
    from metarec.export.compress import quantize_table, wide_rows
    from metarec.export.config import CompressConfig
    from metarec.runtime.bundle import open_bundle

    ccfg = CompressConfig(quant="mixed", int8_share=0.25)
    out = export_bundle(model, tmp_path / "b", key_path=keys / "private.pem", export_config=FAST,
                        compress_config=ccfg, model_out=tmp_path / "b.model.pt")
    b = open_bundle(out, keys / "public.pem")
    spec = b.manifest.item_table
    assert (spec.format, b.manifest.head.dtype) == ("mixed", "float16")
    wide = wide_rows(model, 0.25)
    assert wide.sum() == round(0.25 * model.n_items)
    table = model.export_item_table()
    rows = {f: quantize_table(table, f, spec.group_size, spec.scale_dtype).dequantized for f in ("int8", "int4")}
    np.testing.assert_array_equal(b.table[wide], rows["int8"][wide])
    np.testing.assert_array_equal(b.table[~wide], rows["int4"][~wide])
    assert not np.array_equal(rows["int8"][~wide], rows["int4"][~wide])  # so the check above can fail
    assert len(b.read_file("items.bin")) < len(quantize_table(table, "int8", spec.group_size,
                                                              spec.scale_dtype).data)
