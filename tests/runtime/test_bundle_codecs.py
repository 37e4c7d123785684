"""The bundle contract's byte formats (runtime_py/bundle_codecs.py): what the writer encodes, the reader decodes
exactly; anything else is refused with a typed error."""
import numpy as np
import pytest

from metarec.runtime import BundleError
from metarec.runtime.bundle_codecs import (PROGRAM_CODECS, decode_floats, decode_item_ids, decode_program,
                                           encode_floats, encode_item_ids, encode_program, generate_keypair,
                                           sign_manifest, verify_signature)
from metarec.runtime.table_codec import TABLE_FORMATS, decode_table, encode_table, pack_table, table_nbytes

PTE = b"\x3c\x00\x00\x00ET12" + bytes(range(256)) * 4  # the flatbuffer magic, then arbitrary bytes


def test_sign_and_verify_are_consistent():
    priv, pub = generate_keypair()
    other_priv, other_pub = generate_keypair()
    sig = sign_manifest(b"payload", priv)
    verify_signature(b"payload", sig, pub)
    with pytest.raises(BundleError):
        verify_signature(b"payload!", sig, pub)
    with pytest.raises(BundleError):
        verify_signature(b"payload", sig, other_pub)
    with pytest.raises(BundleError):
        verify_signature(b"payload", sig[:-1], pub)
    with pytest.raises(BundleError):
        verify_signature(b"payload", sig, b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")


@pytest.mark.parametrize("fmt, gs, tol", [("float32", 0, 0.0), ("int8", 4, 1 / 127), ("int4", 4, 1 / 7)])
def test_table_round_trip_within_quantization_error(fmt, gs, tol):
    t = np.random.default_rng(0).normal(size=(13, 8)).astype(np.float32)
    data = encode_table(t, fmt, gs)
    assert len(data) == table_nbytes(13, 8, fmt, gs)
    back = decode_table(data, 13, 8, fmt, gs)
    group_max = np.abs(t.reshape(13, -1, gs or 8)).max(axis=2, keepdims=True)
    err = np.abs(back - t).reshape(13, -1, gs or 8)
    assert np.all(err <= group_max * tol / 2 + 1e-6)
    with pytest.raises(BundleError):
        decode_table(data[:-1], 13, 8, fmt, gs)


@pytest.mark.parametrize("fmt, gs", [("float32", 0), ("int8", 4), ("int4", 4), ("int4", 8)])
def test_table_writer_and_reader_round_trip_exactly(fmt, gs):
    """decode(encode(t)) is a fixed point: encoding the decoded table gives the same bytes and the same floats."""
    t = np.random.default_rng(1).normal(size=(11, 8)).astype(np.float32)
    data = encode_table(t, fmt, gs)
    back = decode_table(data, 11, 8, fmt, gs)
    assert encode_table(back, fmt, gs) == data
    np.testing.assert_array_equal(decode_table(encode_table(back, fmt, gs), 11, 8, fmt, gs), back)
    if fmt == "float32":
        np.testing.assert_array_equal(back, t)


@pytest.mark.parametrize("fmt, lo, hi", [("int8", -128, 127), ("int4", -8, 7)])
def test_packed_quantized_table_decodes_to_q_times_scale(fmt, lo, hi):
    """export packs torchao's integers with pack_table; the reader must give back exactly q * scale."""
    rng = np.random.default_rng(2)
    q = rng.integers(lo, hi + 1, size=(5, 8)).astype(np.int8)
    q[0, :2] = (lo, hi)  # both ends of the range, low and high nibble for int4
    scale = rng.uniform(0.01, 2.0, size=(5, 2)).astype(np.float32)
    back = decode_table(pack_table(q, scale, fmt), 5, 8, fmt, 4)
    np.testing.assert_array_equal(back, (q.reshape(5, 2, 4) * scale[:, :, None]).reshape(5, 8))
    with pytest.raises(ValueError, match="range"):
        pack_table(np.full((5, 8), hi + 1), scale, fmt)
    with pytest.raises(ValueError, match="does not fit"):
        pack_table(q, scale[:, :1][:4], fmt)
    assert set(TABLE_FORMATS) == {"float32", "int8", "int4", "mixed"}


@pytest.mark.parametrize("codec", PROGRAM_CODECS)
def test_program_codecs_round_trip_exactly(codec):
    stored = encode_program(PTE, codec)
    assert decode_program(stored, codec) == PTE
    assert (stored == PTE) == (codec == "none")


def test_program_codecs_refuse_unknown_and_mismatched():
    with pytest.raises(ValueError, match="unknown"):
        encode_program(PTE, "lz4")
    with pytest.raises(BundleError, match="unknown"):
        decode_program(PTE, "lz4")
    with pytest.raises(BundleError, match="not an ExecuTorch program"):
        decode_program(encode_program(PTE, "zlib"), "none")  # no sniffing: the manifest's codec is the truth
    with pytest.raises(BundleError, match="zlib"):
        decode_program(PTE, "zlib")
    with pytest.raises(BundleError, match="not an ExecuTorch program"):
        decode_program(encode_program(b"not a program at all", "zlib"), "zlib")


def test_item_ids_and_float_files_round_trip_exactly():
    ids = ("12", "ünï", "a b", "x" * 60)
    assert decode_item_ids(encode_item_ids(ids), 4) == ids
    with pytest.raises(BundleError):
        decode_item_ids(encode_item_ids(ids), 5)
    a = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(decode_floats(encode_floats(a), (3, 4), "x.bin"), a)
    with pytest.raises(BundleError, match="bytes"):
        decode_floats(encode_floats(a)[:-4], (3, 4), "x.bin")
    with pytest.raises(BundleError, match="non-finite"):
        decode_floats(np.full(2, np.nan, "<f4").tobytes(), (2,), "x.bin")
    with pytest.raises(ValueError, match="finite"):
        encode_floats(np.full(2, np.nan))


@pytest.mark.parametrize("fmt, lo, hi", [("int8", -128, 127), ("int4", -8, 7)])
def test_half_scales_decode_like_the_same_values_stored_as_float32(fmt, lo, hi):
    """scale_dtype float16: 2 bytes a group instead of 4, and the table the phone decodes is unchanged when the
    scales are halves; scales a half cannot hold exactly (or at all) are refused, not rounded silently."""
    rng = np.random.default_rng(3)
    q = rng.integers(lo, hi + 1, size=(6, 8)).astype(np.int8)
    scale = rng.uniform(0.01, 2.0, size=(6, 2)).astype(np.float16).astype(np.float32)
    half, full = pack_table(q, scale, fmt, "float16"), pack_table(q, scale, fmt, "float32")
    assert len(full) - len(half) == 6 * 2 * 2 == table_nbytes(6, 8, fmt, 4) - table_nbytes(6, 8, fmt, 4, "float16")
    np.testing.assert_array_equal(decode_table(half, 6, 8, fmt, 4, "float16"), decode_table(full, 6, 8, fmt, 4))
    for wrong in ((half, "float32"), (full, "float16")):  # the other dtype's length
        with pytest.raises(BundleError, match="bytes"):
            decode_table(wrong[0], 6, 8, fmt, 4, wrong[1])
    with pytest.raises(ValueError, match="exactly representable"):
        pack_table(q, scale + 1e-4, fmt, "float16")
    with pytest.raises(ValueError, match="finite"):
        pack_table(q, np.full((6, 2), 1e6, np.float32), fmt, "float16")  # beyond a half's 65504
    with pytest.raises(ValueError, match="scale_dtype"):
        pack_table(q, scale, fmt, "bfloat16")
    # a stored half that decodes to inf (0x7C00) is refused by the reader
    bad = bytearray(half)
    bad[-2:] = np.array([np.inf], "<f2").tobytes()
    with pytest.raises(BundleError, match="non-finite"):
        decode_table(bytes(bad), 6, 8, fmt, 4, "float16")


def test_the_encoder_picks_q_against_the_half_scale():
    """encode_table with half scales quantizes against the rounded scale: decode(encode(t)) is a fixed point."""
    t = np.random.default_rng(4).normal(size=(9, 8)).astype(np.float32)
    data = encode_table(t, "int4", 4, "float16")
    back = decode_table(data, 9, 8, "int4", 4, "float16")
    assert encode_table(back, "int4", 4, "float16") == data
    assert np.abs(back - t).max() <= np.abs(t).max() / 7
