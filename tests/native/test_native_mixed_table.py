"""The mixed item table (manifest item_table.format "mixed": a row mask, the int8 rows, then the int4 rows) and the
half-precision phi0 (head.dtype "float16") in the native runtime: the same top-10 ids and scores as the Python
runtime (runtime_py/bundle_codecs.py _decode_mixed, decode_floats) on tiny bundles and on a real export, and the same
refusals, each on a bundle signed again with the real key so that the content is what is refused."""
import copy
import hashlib
import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch

from metarec.runtime import Recommender
from metarec.runtime.table_codec import encode_table
from metarec.runtime.errors import BundleError
from metarec.runtime.native import NativeRecommender

from native_helpers import module_of_tests, python_and_native, resign
from test_native_by_history import _drive, _users

TINY = module_of_tests("runtime/tiny_bundle.py", "native_tiny_bundle")
N_EXPORT = 93  # not a multiple of 8: the row mask's last byte has padding bits (tiny bundles have N = 40)
HALF_BAD = [0x7C00, 0xFC00, 0x7E00, 0x7C01]  # +inf, -inf, quiet and signalling NaN


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_bytes())


def _variant(src, dst, pem, files=None, **changes):
    """A copy of bundle `src` at `dst` with `files` ({name: bytes}) replaced and the manifest `changes`, signed
    again with the real key."""
    shutil.copytree(src, dst)
    entries = dict(_manifest(dst)["files"])
    for name, data in (files or {}).items():
        (dst / name).write_bytes(data)
        entries[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    resign(dst, pem, files=entries, **changes)
    return dst


def _refused(bundle, keys, lib, tmp_path, match, tag="r"):
    with pytest.raises(BundleError, match=match):
        NativeRecommender.open(bundle, tmp_path / f"nat-{tag}.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError, match=match):
        Recommender.open(bundle, tmp_path / f"py-{tag}.db", trusted_key=keys / "public.pem")


def _mask(data: bytes, n: int) -> np.ndarray:
    """The row mask a mixed items.bin starts with, as (n,) bool (LSB first)."""
    return np.unpackbits(np.frombuffer(data, np.uint8, count=(n + 7) // 8), bitorder="little")[:n].astype(bool)


# ---------------------------------------------------------------------------------------------- tiny bundles
@pytest.fixture(scope="module")
def tiny():
    """(TinyModel, programs with score.pte's rank method): the table is score.pte's input, so items.bin's decoded
    values are the scores' (no adapt program: the native runtime serves tiny bundles without one)."""
    m = TINY.TinyModel(seed=5)
    return m, TINY.export_programs(m, rank=True)


def _tiny_bundle(tiny, keys, out, wide, scale_dtype="float16", head_dtype="float32", model=None):
    m, programs = tiny
    data = encode_table(m.table.numpy(), "mixed", 4, scale_dtype, wide=wide)
    return TINY.write_bundle(out, model or m, programs, keys / "private.pem", rank=True, with_adapt=False,
                             table=(data, scale_dtype), table_format="mixed", head_dtype=head_dtype)


def _masks(n):
    some = np.zeros(n, bool)
    some[np.random.default_rng(11).choice(n, n // 3, replace=False)] = True
    return {"none": np.zeros(n, bool), "some": some, "all": np.ones(n, bool)}


@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_a_mixed_table_gives_the_python_top10_and_scores(tiny, keys, lib, tmp_path, scale_dtype):
    users = _users(TINY.ITEM_IDS, 8, seed=41)
    answers = {}
    for name, wide in _masks(TINY.N).items():
        b = _tiny_bundle(tiny, keys, tmp_path / name, wide, scale_dtype)
        want, got, _ = python_and_native(b, keys, lib, tmp_path, users, name, _drive)
        assert got == want, name
        answers[name] = want
    # each row's format follows the mask: some int8 rows answer unlike all-int4 and unlike all-int8
    assert answers["some"] != answers["none"] and answers["some"] != answers["all"]


def test_a_half_head_gives_the_python_top10_and_scores(tiny, keys, lib, tmp_path):
    """phi0 as halves, a tenth of them subnormal: with no adapt program phi0 is every user's head, so a decoder
    flushing subnormals or widening halves another way answers other scores."""
    m = tiny[0]
    half = copy.copy(m)
    p = m.phi0.numpy().astype(np.float16)
    rng = np.random.default_rng(13)
    sub = rng.choice(len(p), len(p) // 10, replace=False)
    p[sub] = (rng.integers(1, 0x400, len(sub)) | np.where(rng.random(len(sub)) < 0.5, 0x8000, 0)).astype(
        np.uint16).view(np.float16)
    half.phi0 = torch.from_numpy(p.astype(np.float32))
    users = _users(TINY.ITEM_IDS, 8, seed=43)
    wide = _masks(TINY.N)["some"]
    b16 = _tiny_bundle(tiny, keys, tmp_path / "h16", wide, head_dtype="float16", model=half)
    assert len((b16 / "head_init.bin").read_bytes()) == 2 * TINY.P
    want, got, _ = python_and_native(b16, keys, lib, tmp_path, users, "h16", _drive)
    assert got == want
    # the float32 phi0 it was rounded from answers other scores: the test reads the head it decodes
    b32 = _tiny_bundle(tiny, keys, tmp_path / "h32", wide, head_dtype="float32")
    want32 = python_and_native(b32, keys, lib, tmp_path, users, "h32", _drive)[0]
    assert sum(want[k][1] != want32[k][1] for k in want) >= len(want) // 2


def test_an_explicit_float32_head_dtype_is_the_default(tiny, keys, lib, tmp_path):
    """"float32" spelled out (the exporter leaves it out) is accepted by both and reads the same head."""
    wide = _masks(TINY.N)["some"]
    absent = _tiny_bundle(tiny, keys, tmp_path / "absent", wide)
    assert "dtype" not in _manifest(absent)["head"]
    spelled = _variant(absent, tmp_path / "spelled", keys / "private.pem",
                       head={**_manifest(absent)["head"], "dtype": "float32"})
    users = _users(TINY.ITEM_IDS, 4, seed=47)
    want, got, _ = python_and_native(spelled, keys, lib, tmp_path, users, "spelled", _drive)
    assert got == want == python_and_native(absent, keys, lib, tmp_path, users, "absent", _drive)[1]


# ---------------------------------------------------------------------------------------------- a real export
@pytest.fixture(scope="module")
def mixed_export(tmp_path_factory, keys):
    """(bundle dir, item ids): export_bundle with a mixed table (the most used quarter int8) and its defaults
    (half scales, half phi0), N not a multiple of 8."""
    from metarec.export.bundle import export_bundle
    from metarec.export.config import CompressConfig, ExportConfig

    model = module_of_tests("export/conftest.py", "native_export_fixtures").make_model(dim=16, seed=4, n_items=N_EXPORT)
    ids = [f"m{3 + 11 * j}" for j in range(N_EXPORT)]
    path = export_bundle(model, tmp_path_factory.mktemp("mixed") / "bundle", key_path=keys / "private.pem",
                         serial=10, item_ids=ids, export_config=ExportConfig(k_max=20, onnx=False),
                         compress_config=CompressConfig(quant="mixed", int8_share=0.25))
    return path, ids


def test_an_exported_mixed_bundle_is_served_as_python_serves_it(mixed_export, keys, lib, tmp_path):
    bundle, ids = mixed_export
    man = _manifest(bundle)
    assert (man["item_table"]["format"], man["item_table"]["scale_dtype"], man["head"]["dtype"]) == (
        "mixed", "float16", "float16")
    wide = _mask((bundle / "items.bin").read_bytes(), N_EXPORT)
    assert wide.sum() == round(0.25 * N_EXPORT)  # both parts present
    want, got, adaptations = python_and_native(bundle, keys, lib, tmp_path, _users(ids, 8, seed=53), "x", _drive)
    assert got == want
    assert adaptations > 0  # the adapt program ran on history vectors from the mixed table


# ---------------------------------------------------------------------------------------------- refusals
def _items(mixed_export):
    return (mixed_export[0] / "items.bin").read_bytes()


def _with_items(mixed_export, tmp_path, keys, data, tag="b"):
    return _variant(mixed_export[0], tmp_path / tag, keys / "private.pem", files={"items.bin": data})


@pytest.mark.parametrize("bit", [N_EXPORT, 8 * ((N_EXPORT + 7) // 8) - 1])  # the first and the last padding bit
def test_a_padding_bit_set_in_the_row_mask_is_refused(mixed_export, keys, lib, tmp_path, bit):
    data = bytearray(_items(mixed_export))
    data[bit // 8] |= 1 << (bit % 8)
    _refused(_with_items(mixed_export, tmp_path, keys, bytes(data)), keys, lib, tmp_path, "padding bits")


@pytest.mark.parametrize("to", ["int8", "int4"])
def test_a_flipped_mask_bit_no_longer_adds_up_and_is_refused(mixed_export, keys, lib, tmp_path, to):
    data = bytearray(_items(mixed_export))
    wide = _mask(bytes(data), N_EXPORT)
    row = int(np.flatnonzero(~wide if to == "int8" else wide)[0])
    data[row // 8] ^= 1 << (row % 8)
    r = int(wide.sum()) + (1 if to == "int8" else -1)
    _refused(_with_items(mixed_export, tmp_path, keys, bytes(data)), keys, lib, tmp_path,
             rf"item table has {len(data)} bytes, expected \d+ for \({N_EXPORT}, 16\) mixed with {r} int8 rows")


@pytest.mark.parametrize("cut", ["-1", "+1", "+2 (a half scale more)", "mask only", "shorter than the mask", "empty"])
def test_a_truncated_or_extended_mixed_table_is_refused(mixed_export, keys, lib, tmp_path, cut):
    data, mb = _items(mixed_export), (N_EXPORT + 7) // 8
    bad = {"-1": data[:-1], "+1": data + b"\0", "+2 (a half scale more)": data + b"\0\x3c", "mask only": data[:mb],
           "shorter than the mask": data[:mb - 1], "empty": b""}[cut]
    _refused(_with_items(mixed_export, tmp_path, keys, bad), keys, lib, tmp_path, "item table has")


def test_a_mixed_table_declared_as_the_programs_constant_is_refused(mixed_export, keys, lib, tmp_path):
    spec = _manifest(mixed_export[0])["item_table"]
    # scale_dtype left out: with it, both refuse first for half scales outside a table file
    b = _variant(mixed_export[0], tmp_path / "b", keys / "private.pem",
                 item_table={"file": "", "format": "mixed", "group_size": spec["group_size"], "program": "score"})
    _refused(b, keys, lib, tmp_path, "mixed table is a file, never a program's constant")


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # numpy, on inf * 0
def test_a_non_finite_mixed_table_value_is_refused(mixed_export, keys, lib, tmp_path):
    """The last int4 row's scale (the file's last two bytes) as +inf: refused, as for a plain table."""
    data = _items(mixed_export)[:-2] + (0x7C00).to_bytes(2, "little")
    _refused(_with_items(mixed_export, tmp_path, keys, data), keys, lib, tmp_path, "non-finite")


def _with_head(mixed_export, tmp_path, keys, data, tag="b", **head):
    spec = {**_manifest(mixed_export[0])["head"], **head}
    return _variant(mixed_export[0], tmp_path / tag, keys / "private.pem", files={"head0.bin": data}, head=spec)


@pytest.mark.parametrize("value", ["bfloat16", "float64", "", "Float16", "int8", 16, None, True, ["float16"]])
def test_an_unknown_head_dtype_is_refused(mixed_export, keys, lib, tmp_path, value):
    b = _with_head(mixed_export, tmp_path, keys, (mixed_export[0] / "head0.bin").read_bytes(), dtype=value)
    _refused(b, keys, lib, tmp_path, "head.dtype")


@pytest.mark.parametrize("case", ["float32 bytes, float16 declared", "float16 bytes, float32 declared",
                                  "one half more", "one half less", "odd length"])
def test_a_head_file_of_the_wrong_size_is_refused(mixed_export, keys, lib, tmp_path, case):
    half = (mixed_export[0] / "head0.bin").read_bytes()
    data, dtype = {"float32 bytes, float16 declared": (np.frombuffer(half, "<f2").astype("<f4").tobytes(), "float16"),
                   "float16 bytes, float32 declared": (half, "float32"), "one half more": (half + half[:2], "float16"),
                   "one half less": (half[:-2], "float16"), "odd length": (half + b"\0", "float16")}[case]
    want = len(half) // 2 * (2 if dtype == "float16" else 4)
    b = _with_head(mixed_export, tmp_path, keys, data, dtype=dtype)
    _refused(b, keys, lib, tmp_path, rf"head0\.bin has {len(data)} bytes, expected {want} ")


@pytest.mark.parametrize("at", ["first", "last"])
@pytest.mark.parametrize("bits", HALF_BAD)
def test_a_half_head_value_decoding_to_inf_or_nan_is_refused(mixed_export, keys, lib, tmp_path, bits, at):
    data = bytearray((mixed_export[0] / "head0.bin").read_bytes())
    i = 0 if at == "first" else len(data) - 2
    data[i:i + 2] = bits.to_bytes(2, "little")
    _refused(_with_head(mixed_export, tmp_path, keys, bytes(data)), keys, lib, tmp_path, "head0.bin holds non-finite")


def _state(db):
    with sqlite3.connect(db) as c:
        return [sorted(c.execute(f"SELECT * FROM {t}").fetchall()) for t in ("events", "heads", "meta", "trending")]


def test_a_refused_mixed_table_or_half_head_changes_no_state(mixed_export, keys, lib, tmp_path):
    bundle, ids = mixed_export
    state = tmp_path / "s.db"
    with NativeRecommender.open(bundle, state, keys / "public.pem", lib=lib) as rec:
        rec.record("u", ids[4], 8.8e8)
    pem, items = keys / "private.pem", bytearray(_items(mixed_export))
    head = bytearray((bundle / "head0.bin").read_bytes())
    items[N_EXPORT // 8] |= 1 << (N_EXPORT % 8)
    head[:2] = (0x7E00).to_bytes(2, "little")
    # serial 11: had either opened, the state would now record it (the control below shows it does)
    bad = {"mask": {"items.bin": bytes(items)}, "head": {"head0.bin": bytes(head)}}
    for name, files in bad.items():
        before = _state(state)
        b = _variant(bundle, tmp_path / name, pem, files=files, serial=11)
        with pytest.raises(BundleError):
            NativeRecommender.open(b, state, keys / "public.pem", lib=lib)
        assert _state(state) == before, name
    control = _variant(bundle, tmp_path / "ok", pem, serial=11)
    NativeRecommender.open(control, state, keys / "public.pem", lib=lib).close()
    assert _state(state) != before
