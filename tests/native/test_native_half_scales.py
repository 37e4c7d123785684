"""Float16 table scales (manifest item_table.scale_dtype, runtime_py/bundle_codecs.py decode_table): the native
runtime decodes an int8 / int4 items.bin whose scales are IEEE halves to the Python runtime's table (same top-10 ids
and scores at K = 0 .. 6), and refuses what the Python runtime refuses: a byte length of the other scale width, the
key on a float32 table or a table inside score.pte, an unknown value, a scale decoding to inf / NaN."""
import hashlib
import json
import shutil

import numpy as np
import pytest

from metarec.runtime import Recommender
from metarec.runtime.bundle import open_bundle
from metarec.runtime.table_codec import encode_table, pack_table
from metarec.runtime.errors import BundleError
from metarec.runtime.native import NativeRecommender

from native_helpers import python_and_native, resign
from test_native_by_history import _drive, _users

GROUP = 4  # d = 16: four scales per row, so a scale indexed by the wrong group shows


def _table(exported, keys):
    """The fixture bundle's decoded (N, d) float32 table (Python's reading of it)."""
    return open_bundle(exported[0], keys / "public.pem").table


def _variant(exported, dst, pem, data: bytes, **table_spec):
    """A copy of the fixture bundle whose items.bin is `data` and whose item_table is `table_spec` (None values
    are written as JSON null), signed again. score.pte takes the table as an input: any items.bin fits it."""
    shutil.copytree(exported[0], dst)
    man = json.loads((dst / "manifest.json").read_bytes())
    ts = man["item_table"]
    (dst / ts["file"]).write_bytes(data)
    files = {**man["files"], ts["file"]: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    spec = {"file": ts["file"], **table_spec}
    resign(dst, pem, files=files, item_table=spec)
    return dst


def _answers(bundle, keys, lib, tmp_path, users, tag):
    return python_and_native(bundle, keys, lib, tmp_path, users, tag, _drive)[:2]


def _refused(bundle, keys, lib, tmp_path, match):
    with pytest.raises(BundleError, match=match):
        NativeRecommender.open(bundle, tmp_path / "nat-r.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError, match=match):
        Recommender.open(bundle, tmp_path / "py-r.db", trusted_key=keys / "public.pem")


def test_the_fixture_bundle_ships_half_scales(exported):
    """The exporter's default (CompressConfig.scale_dtype): every other native parity test reads half scales."""
    ts = json.loads((exported[0] / "manifest.json").read_bytes())["item_table"]
    assert ts["format"] == "int4" and ts["scale_dtype"] == "float16"


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_half_scales_give_the_python_top10_and_scores(exported, keys, item_ids, lib, tmp_path, fmt):
    pem, table = keys / "private.pem", _table(exported, keys)
    users = _users(item_ids, 8, seed=17)
    half = _variant(exported, tmp_path / "half", pem, encode_table(table, fmt, GROUP, "float16"), format=fmt,
                    group_size=GROUP, scale_dtype="float16")
    want, got = _answers(half, keys, lib, tmp_path, users, "half")
    assert got == want
    # the same table with float32 scales answers differently: the test reads which scales were decoded
    full = _variant(exported, tmp_path / "full", pem, encode_table(table, fmt, GROUP, "float32"), format=fmt,
                    group_size=GROUP)
    want32, got32 = _answers(full, keys, lib, tmp_path, users, "full")
    assert got32 == want32
    assert sum(want[k][1] != want32[k][1] for k in want) >= len(want) // 2


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_raw_half_scales_decode_exactly_subnormals_included(exported, keys, item_ids, lib, tmp_path, fmt):
    """Scales straight from half bit patterns (subnormals, small and large normals, both signs) with q over the
    whole int range: a decoder flushing subnormals or rounding the half another way answers other scores."""
    n, d = _table(exported, keys).shape
    rng = np.random.default_rng(7 if fmt == "int8" else 8)
    lo, hi = (-128, 127) if fmt == "int8" else (-8, 7)
    q = rng.integers(lo, hi + 1, (n, d)).astype(np.int8)
    bits = np.where(rng.random((n, d // GROUP)) < 0.3, rng.integers(1, 0x400, (n, d // GROUP)),
                    rng.integers(0x2000, 0x3C00, (n, d // GROUP))).astype(np.uint16)
    bits |= np.where(rng.random(bits.shape) < 0.5, 0x8000, 0).astype(np.uint16)
    scale = bits.view(np.float16).astype(np.float32)
    b = _variant(exported, tmp_path / "raw", keys / "private.pem", pack_table(q, scale, fmt, "float16"), format=fmt,
                 group_size=GROUP, scale_dtype="float16")
    want, got = _answers(b, keys, lib, tmp_path, _users(item_ids, 6, seed=23), "raw")
    assert got == want


def test_an_explicit_float32_scale_dtype_is_the_default(exported, keys, item_ids, lib, tmp_path):
    """"float32" spelled out (the exporter leaves it out) is accepted by both, on an int and on a float32 table."""
    pem, table = keys / "private.pem", _table(exported, keys)
    users = _users(item_ids, 4, seed=29)
    for fmt, group in (("int8", GROUP), ("float32", 0)):
        data = encode_table(table, fmt, group)
        spec = {"format": fmt, **({"group_size": group} if group else {})}
        absent = _variant(exported, tmp_path / f"{fmt}-absent", pem, data, **spec)
        spelled = _variant(exported, tmp_path / f"{fmt}-spelled", pem, data, **spec, scale_dtype="float32")
        want, got = _answers(spelled, keys, lib, tmp_path, users, f"{fmt}-spelled")
        assert got == want == _answers(absent, keys, lib, tmp_path, users, f"{fmt}-absent")[1]


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_a_byte_length_of_the_other_scale_width_is_refused(exported, keys, lib, tmp_path, fmt):
    pem, table = keys / "private.pem", _table(exported, keys)
    cases = {"float32 bytes, float16 declared": (encode_table(table, fmt, GROUP, "float32"), "float16"),
             "float16 bytes, float32 declared": (encode_table(table, fmt, GROUP, "float16"), "float32"),
             "float16 bytes + 2, float16 declared": (encode_table(table, fmt, GROUP, "float16") + b"\0\0", "float16"),
             "float16 bytes - 2, float16 declared": (encode_table(table, fmt, GROUP, "float16")[:-2], "float16")}
    for i, (name, (data, declared)) in enumerate(cases.items()):
        b = _variant(exported, tmp_path / f"b{i}", pem, data, format=fmt, group_size=GROUP, scale_dtype=declared)
        with pytest.raises(BundleError, match="item table has"):
            NativeRecommender.open(b, tmp_path / f"nat{i}.db", keys / "public.pem", lib=lib)
        with pytest.raises(BundleError, match="item table has"):
            Recommender.open(b, tmp_path / f"py{i}.db", trusted_key=keys / "public.pem")


@pytest.mark.parametrize("value", ["bfloat16", "float64", "", "Float16", 16, 2, None, True, ["float16"]])
def test_an_unknown_scale_dtype_is_refused(exported, keys, lib, tmp_path, value):
    data = encode_table(_table(exported, keys), "int8", GROUP, "float16")
    b = _variant(exported, tmp_path / "b", keys / "private.pem", data, format="int8", group_size=GROUP,
                 scale_dtype=value)
    _refused(b, keys, lib, tmp_path, "scale_dtype")


def test_half_scales_on_a_float32_table_or_a_table_in_score_pte_are_refused(exported, keys, lib, tmp_path):
    pem, table = keys / "private.pem", _table(exported, keys)
    b = _variant(exported, tmp_path / "f32", pem, encode_table(table, "float32"), format="float32",
                 scale_dtype="float16")
    _refused(b, keys, lib, tmp_path, "scale_dtype applies to an int table file only")
    # a large-catalog table spec (inside score.pte, no file) with half scales: refused for the key first, by both
    c = _variant(exported, tmp_path / "prog", pem, encode_table(table, "int4", GROUP, "float16"), format="int4",
                 group_size=GROUP, scale_dtype="float16")
    man = json.loads((c / "manifest.json").read_bytes())
    resign(c, pem, item_table={**man["item_table"], "file": "", "program": "score"})
    _refused(c, keys, lib, tmp_path, "scale_dtype applies to an int table file only")


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # numpy, on NaN
@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("bits", [0x7C00, 0xFC00, 0x7E00, 0x7C01])  # +inf, -inf, quiet and signalling NaN
def test_a_half_scale_decoding_to_inf_or_nan_is_refused(exported, keys, lib, tmp_path, fmt, bits):
    table = _table(exported, keys)
    n, d = table.shape
    data = bytearray(encode_table(table, fmt, GROUP, "float16"))
    split = n * d if fmt == "int8" else n * d // 2
    row = int(np.flatnonzero(np.abs(table).sum(axis=1) > 0)[-1])  # a row whose q are not all 0
    at = split + 2 * (row * (d // GROUP) + d // GROUP - 1)  # its last group's scale
    data[at:at + 2] = int(bits).to_bytes(2, "little")
    b = _variant(exported, tmp_path / "b", keys / "private.pem", bytes(data), format=fmt, group_size=GROUP,
                 scale_dtype="float16")
    _refused(b, keys, lib, tmp_path, "non-finite")


def test_the_largest_half_scale_is_finite_and_opens(exported, keys, lib, tmp_path):
    """65504 x 127 is finite in float32: accepted by both (no overflow check beyond the decoded values')."""
    table = _table(exported, keys)
    n, d = table.shape
    data = bytearray(encode_table(table, "int8", GROUP, "float16"))
    data[n * d:n * d + 2] = (0x7BFF).to_bytes(2, "little")
    b = _variant(exported, tmp_path / "b", keys / "private.pem", bytes(data), format="int8", group_size=GROUP,
                 scale_dtype="float16")
    NativeRecommender.open(b, tmp_path / "nat.db", keys / "public.pem", lib=lib).close()
    Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem").close()
