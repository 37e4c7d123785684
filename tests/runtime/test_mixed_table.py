"""The mixed item table (int8 rows where the row mask is set, int4 elsewhere) and the half-precision phi0 file:
byte layout, round trips and refusals (runtime_py/bundle_codecs.py)."""
import numpy as np
import pytest

from metarec.runtime.bundle_codecs import decode_floats, encode_floats
from metarec.runtime.table_codec import MIXED, decode_table, encode_table, table_nbytes
from metarec.runtime.errors import BundleError
from metarec.runtime.manifest import HeadSpec, TableSpec


def _table(n=13, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("scale_dtype", ["float32", "float16"])
@pytest.mark.parametrize("wide_rows", [(), (0,), (3, 4, 12), tuple(range(13))])
def test_mixed_rows_decode_as_their_own_format(scale_dtype, wide_rows):
    t = _table()
    wide = np.zeros(len(t), bool)
    wide[list(wide_rows)] = True
    data = encode_table(t, MIXED, 4, scale_dtype, wide=wide)
    assert len(data) == table_nbytes(13, 8, MIXED, 4, scale_dtype, len(wide_rows))
    back = decode_table(data, 13, 8, MIXED, 4, scale_dtype)
    int8 = decode_table(encode_table(t, "int8", 4, scale_dtype), 13, 8, "int8", 4, scale_dtype)
    int4 = decode_table(encode_table(t, "int4", 4, scale_dtype), 13, 8, "int4", 4, scale_dtype)
    np.testing.assert_array_equal(back[wide], int8[wide])
    np.testing.assert_array_equal(back[~wide], int4[~wide])
    # the layout: a 2-byte LSB-first row mask, then the int8 rows, then the int4 rows
    assert np.array_equal(np.unpackbits(np.frombuffer(data[:2], np.uint8), bitorder="little")[:13], wide)
    r = len(wide_rows)
    assert data[2:2 + r * 8] == encode_table(t[wide], "int8", 4, scale_dtype)[:r * 8]


def test_mixed_file_bytes_sit_between_int4_and_int8():
    n, d, g = 1682, 32, 32
    wide = table_nbytes(n, d, MIXED, g, "float16", 168)
    assert table_nbytes(n, d, "int4", g, "float16") < wide < table_nbytes(n, d, "int8", g, "float16")
    assert wide == 211 + 168 * (32 + 2) + (n - 168) * (16 + 2)


def test_mixed_table_refusals():
    t = _table()
    wide = np.zeros(13, bool)
    wide[[1, 5]] = True
    data = encode_table(t, MIXED, 4, "float16", wide=wide)
    with pytest.raises(BundleError, match="bytes"):
        decode_table(data[:-1], 13, 8, MIXED, 4, "float16")
    with pytest.raises(BundleError, match="bytes"):
        decode_table(data + b"\0", 13, 8, MIXED, 4, "float16")
    flipped = bytes([data[0] ^ 0x01]) + data[1:]  # one more int8 row: the sizes no longer add up
    with pytest.raises(BundleError, match="int8 rows"):
        decode_table(flipped, 13, 8, MIXED, 4, "float16")
    padded = data[:1] + bytes([data[1] | 0x80]) + data[2:]  # bit 15 is past row 12
    with pytest.raises(BundleError, match="padding"):
        decode_table(padded, 13, 8, MIXED, 4, "float16")
    with pytest.raises(BundleError, match="shorter"):
        decode_table(b"\0", 13, 8, MIXED, 4, "float16")
    with pytest.raises(BundleError, match="spec invalid"):
        decode_table(data, 13, 7, MIXED, 7, "float16")  # int4 rows need an even d
    with pytest.raises(ValueError, match="row mask"):
        encode_table(t, MIXED, 4, "float16")
    with pytest.raises(ValueError, match="row mask"):
        encode_table(t, "int8", 4, "float16", wide=wide)
    with pytest.raises(ValueError, match="bool"):
        encode_table(t, MIXED, 4, "float16", wide=wide[:-1])


def test_mixed_table_spec_is_a_file_only():
    assert TableSpec(file="items.bin", format=MIXED, group_size=32, scale_dtype="float16").format == MIXED
    with pytest.raises(ValueError, match="mixed"):
        TableSpec(file="", format=MIXED, group_size=32, program="score")


def test_half_head_file_round_trips_and_refuses_what_it_cannot_hold():
    a = np.array([0.5, -1.25, 3e-3, 1000.0], np.float32).astype(np.float16).astype(np.float32)
    data = encode_floats(a, "float16")
    assert len(data) == 8
    back = decode_floats(data, (4,), "head0.bin", "float16")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, a)
    with pytest.raises(ValueError, match="float16"):
        encode_floats(np.array([0.1], np.float32), "float16")  # 0.1 is not a half: rounding here would hide it
    with pytest.raises(ValueError, match="float16"):
        encode_floats(np.array([1e6], np.float32), "float16")
    with pytest.raises(BundleError, match="bytes"):
        decode_floats(data, (4,), "head0.bin")  # read as float32: half the values
    with pytest.raises(BundleError, match="non-finite"):
        decode_floats(np.array([np.inf], "<f2").tobytes(), (1,), "head0.bin", "float16")
    with pytest.raises(BundleError, match="unknown"):
        decode_floats(data, (4,), "head0.bin", "bfloat16")


def test_head_dtype_is_checked_and_left_out_while_float32():
    h = HeadSpec(file="head0.bin", param_names=("u",), param_shapes=((4,),), dtype="float16")
    assert h.dtype == "float16"
    with pytest.raises(ValueError, match="head.dtype"):
        HeadSpec(file="head0.bin", param_names=("u",), param_shapes=((4,),), dtype="int8")
