"""The bundle's item table file (`items.bin`), both directions; bundle_codecs.py holds the other byte formats.

Little-endian, row-major, symmetric quantization x ~= q * scale, one scale per `group_size` consecutive columns of
a row:
float32: N*d float32. int8: N*d int8, then N*(d/group_size) scales. int4: N*d/2 bytes (column 2j in the low
nibble, 2j+1 in the high nibble, each stored as q+8 with q in [-8, 7]), then the scales. Scales are float32, or
IEEE half (`scale_dtype` "float16": half the scale bytes, the same dequantized values when the quantizer chose
half scales); the phone computes x = q * float32(scale).
mixed: int8 rows for some items (export: the most used ones) and int4 rows for the rest, both with
`group_size` and `scale_dtype`: a row mask of ceil(N/8) bytes (bit i = byte i // 8, bit i % 8, LSB first; 1 =
row i is int8; the padding bits are 0), then the R int8 rows in index order as an (R, d) int8 table, then the
N - R int4 rows in index order as an (N - R, d) int4 table.
"""
from __future__ import annotations

import numpy as np

from .errors import BundleError

# ---------------------------------------------------------------------------------------------- item table
_QMAX = {"int8": 127, "int4": 7}
MIXED = "mixed"  # int8 rows where the row mask says so, int4 rows elsewhere
TABLE_FORMATS = ("float32", *_QMAX, MIXED)
SCALE_DTYPES = {"float32": "<f4", "float16": "<f2"}  # scale_dtype -> numpy little-endian dtype


def _scale_bytes(scale_dtype: str) -> int:
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype {scale_dtype!r} unknown; known: {tuple(SCALE_DTYPES)}")
    return np.dtype(SCALE_DTYPES[scale_dtype]).itemsize


def _groups(d: int, fmt: str, group_size: int) -> int:
    if fmt == "float32":
        return 0
    if fmt == MIXED:
        fmt = "int4"  # its int4 rows set the rules (even d); its int8 rows share the groups
    if fmt not in _QMAX:
        raise ValueError(f"table format {fmt!r} unknown; known: {TABLE_FORMATS}")
    if group_size < 1 or d % group_size:
        raise ValueError(f"group_size {group_size} must divide d={d}")
    if fmt == "int4" and d % 2:
        raise ValueError("int4 tables need an even d")
    return d // group_size


def table_nbytes(n: int, d: int, fmt: str, group_size: int = 0, scale_dtype: str = "float32", wide: int = 0
                 ) -> int:
    """Exact file size of an (n, d) table in `fmt` (`mixed`: `wide` of its rows int8)."""
    g = _groups(d, fmt, group_size)
    if fmt == MIXED:
        if not 0 <= wide <= n:
            raise ValueError(f"a mixed table of {n} rows cannot hold {wide} int8 rows")
        return (_mask_bytes(n) + table_nbytes(wide, d, "int8", group_size, scale_dtype)
                + table_nbytes(n - wide, d, "int4", group_size, scale_dtype))
    if fmt == "float32":
        return n * d * 4
    data = n * d if fmt == "int8" else n * d // 2
    return data + n * g * _scale_bytes(scale_dtype)


def _mask_bytes(n: int) -> int:
    return (n + 7) // 8


def pack_mixed(wide: np.ndarray, int8_part: bytes, int4_part: bytes) -> bytes:
    """File bytes of a mixed table: the row mask `wide` (N,) bool, then the int8 rows' and the int4 rows' tables
    (each already in the layout above, rows in index order)."""
    wide = np.asarray(wide)
    if wide.ndim != 1 or wide.dtype != np.bool_:
        raise ValueError("the row mask must be a 1-D bool array")
    return np.packbits(wide, bitorder="little").tobytes() + int8_part + int4_part


def pack_table(q: np.ndarray, scale: np.ndarray, fmt: str, scale_dtype: str = "float32") -> bytes:
    """File bytes of an already quantized table: q (N, d) ints in `fmt`'s range, scale (N, d / group_size), stored
    as `scale_dtype` (half scales must already be halves: rounding them here would change the dequantized table)."""
    q, scale = np.asarray(q), np.asarray(scale, np.float32)
    _scale_bytes(scale_dtype)
    with np.errstate(over="ignore"):  # an overflow is refused just below, with its reason
        stored = scale.astype(SCALE_DTYPES[scale_dtype])
    if not np.all(np.isfinite(stored)) or not np.array_equal(stored.astype(np.float32), scale):
        raise ValueError(f"scales are not finite and exactly representable as {scale_dtype}")
    n, d = q.shape
    if scale.ndim != 2 or scale.shape[0] != n or scale.shape[1] < 1 or d % scale.shape[1]:
        raise ValueError(f"scale {scale.shape} does not fit a ({n}, {d}) table")
    _groups(d, fmt, d // scale.shape[1])  # an int format, and an even d for int4
    qmax = _QMAX[fmt]
    if q.min(initial=0) < -qmax - 1 or q.max(initial=0) > qmax:
        raise ValueError(f"quantized values outside the {fmt} range")
    if fmt == "int8":
        data = q.astype(np.int8).tobytes()
    else:
        u = (q.astype(np.int16) + 8).astype(np.uint8)
        data = (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8).tobytes()
    return data + stored.tobytes()


def encode_table(table: np.ndarray, fmt: str, group_size: int = 0, scale_dtype: str = "float32",
                 wide: np.ndarray | None = None) -> bytes:
    """Serialize a float (N, d) table in `fmt`, quantizing symmetrically per group (module docstring); `mixed`
    stores the rows where `wide` (N,) bool is set as int8, the others as int4."""
    t = np.asarray(table, dtype=np.float32)
    if t.ndim != 2 or not np.all(np.isfinite(t)):
        raise ValueError("table must be a finite 2-D array")
    n, d = t.shape
    if (fmt == MIXED) != (wide is not None):
        raise ValueError("a row mask goes with the mixed format, and only with it")
    if fmt == MIXED:
        wide = np.asarray(wide)
        if wide.shape != (n,) or wide.dtype != np.bool_:
            raise ValueError(f"the row mask must be a ({n},) bool array")
        _groups(d, fmt, group_size)
        return pack_mixed(wide, encode_table(t[wide], "int8", group_size, scale_dtype),
                          encode_table(t[~wide], "int4", group_size, scale_dtype))
    if fmt == "float32":
        return t.astype("<f4").tobytes()
    g = _groups(d, fmt, group_size)
    qmax = _QMAX[fmt]
    grouped = t.reshape(n, g, group_size)
    scale = np.abs(grouped).max(axis=2) / qmax
    # rounded to the stored dtype first, so q is chosen against the scale the phone reads
    _scale_bytes(scale_dtype)
    with np.errstate(over="ignore"):  # pack_table refuses a scale beyond the stored dtype
        scale = scale.astype(SCALE_DTYPES[scale_dtype]).astype(np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(grouped / scale[:, :, None]), -qmax - (fmt == "int4"), qmax).astype(np.int8).reshape(n, d)
    return pack_table(q, scale, fmt, scale_dtype)


def decode_table(data: bytes, n: int, d: int, fmt: str, group_size: int = 0, scale_dtype: str = "float32"
                 ) -> np.ndarray:
    """The (n, d) float32 table from file bytes; `BundleError` if the size or values do not fit the spec."""
    if fmt == MIXED:
        return _decode_mixed(data, n, d, group_size, scale_dtype)
    try:
        expected = table_nbytes(n, d, fmt, group_size, scale_dtype)
    except ValueError as e:
        raise BundleError(f"item table spec invalid: {e}") from e
    if len(data) != expected:
        raise BundleError(f"item table has {len(data)} bytes, expected {expected} for ({n}, {d}) {fmt}")
    if fmt == "float32":
        out = np.frombuffer(data, dtype="<f4").reshape(n, d).astype(np.float32)
    else:
        g = d // group_size
        split = n * d if fmt == "int8" else n * d // 2
        scale = np.frombuffer(data, dtype=SCALE_DTYPES[scale_dtype], offset=split).reshape(n, g).astype(np.float32)
        if fmt == "int8":
            q = np.frombuffer(data[:split], dtype=np.int8).reshape(n, d).astype(np.float32)
        else:
            u = np.frombuffer(data[:split], dtype=np.uint8).reshape(n, d // 2)
            q = np.empty((n, d), dtype=np.float32)
            q[:, 0::2] = (u & 0x0F).astype(np.float32) - 8
            q[:, 1::2] = (u >> 4).astype(np.float32) - 8
        out = (q.reshape(n, g, group_size) * scale[:, :, None]).reshape(n, d).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise BundleError("item table holds non-finite values")
    return out  # writable on purpose: torch.from_numpy shares it with score.pte's `table` input without a copy


def _decode_mixed(data: bytes, n: int, d: int, group_size: int, scale_dtype: str) -> np.ndarray:
    try:
        _groups(d, MIXED, group_size)
        _scale_bytes(scale_dtype)
    except ValueError as e:
        raise BundleError(f"item table spec invalid: {e}") from e
    mb = _mask_bytes(n)
    if len(data) < mb:
        raise BundleError(f"item table has {len(data)} bytes, shorter than the {mb}-byte row mask of {n} rows")
    bits = np.unpackbits(np.frombuffer(data, np.uint8, count=mb), bitorder="little")
    if bits[n:].any():
        raise BundleError("item table row mask sets padding bits past the last row")
    wide = bits[:n].astype(bool)
    r = int(wide.sum())
    expected = table_nbytes(n, d, MIXED, group_size, scale_dtype, r)
    if len(data) != expected:
        raise BundleError(f"item table has {len(data)} bytes, expected {expected} for ({n}, {d}) mixed with "
                          f"{r} int8 rows")
    split = mb + table_nbytes(r, d, "int8", group_size, scale_dtype)
    out = np.empty((n, d), np.float32)
    out[wide] = decode_table(data[mb:split], r, d, "int8", group_size, scale_dtype)
    out[~wide] = decode_table(data[split:], n - r, d, "int4", group_size, scale_dtype)
    return out
