"""Item table files: one copy of the item vectors in the bundle, dequantized once when the bundle opens.

The runtime needs rows of the table outside score.pte (history, support and negative vectors for adapt.pte, and
item-item similarity for `because`), so the table is stored once here rather than read back out of a program.
Byte layouts (little-endian, row-major, symmetric quantization x ~= q * scale, one scale per `group_size`
consecutive columns of a row):
- float32: N*d float32.
- int8: N*d int8, then N*(d/group_size) float32 scales.
- int4: N*d/2 bytes (column 2j in the low nibble, 2j+1 in the high nibble, each stored as q+8 with q in
  [-8, 7]), then N*(d/group_size) float32 scales.
`encode_table` is the writer export uses, so reader and writer live side by side.
"""
from __future__ import annotations

import numpy as np

from .errors import BundleError

_QMAX = {"int8": 127, "int4": 7}


def _groups(d: int, fmt: str, group_size: int) -> int:
    if fmt == "float32":
        return 0
    if group_size < 1 or d % group_size:
        raise ValueError(f"group_size {group_size} must divide d={d}")
    if fmt == "int4" and d % 2:
        raise ValueError("int4 tables need an even d")
    return d // group_size


def table_nbytes(n: int, d: int, fmt: str, group_size: int = 0) -> int:
    """Exact file size of an (n, d) table in `fmt`."""
    g = _groups(d, fmt, group_size)
    if fmt == "float32":
        return n * d * 4
    data = n * d if fmt == "int8" else n * d // 2
    return data + n * g * 4


def encode_table(table: np.ndarray, fmt: str, group_size: int = 0) -> bytes:
    """Serialize a float (N, d) table in `fmt` (see module docstring)."""
    t = np.asarray(table, dtype=np.float32)
    if t.ndim != 2 or not np.all(np.isfinite(t)):
        raise ValueError("table must be a finite 2-D array")
    n, d = t.shape
    if fmt == "float32":
        return t.astype("<f4").tobytes()
    if fmt not in _QMAX:
        raise ValueError(f"table format {fmt!r} unknown; known: float32, int8, int4")
    g = _groups(d, fmt, group_size)
    qmax = _QMAX[fmt]
    grouped = t.reshape(n, g, group_size)
    scale = np.abs(grouped).max(axis=2) / qmax
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(grouped / scale[:, :, None]), -qmax - (fmt == "int4"), qmax).astype(np.int8).reshape(n, d)
    if fmt == "int8":
        data = q.tobytes()
    else:
        u = (q.astype(np.int16) + 8).astype(np.uint8)
        data = (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8).tobytes()
    return data + scale.astype("<f4").tobytes()


def decode_table(data: bytes, n: int, d: int, fmt: str, group_size: int = 0) -> np.ndarray:
    """The (n, d) float32 table from file bytes; `BundleError` if the size or values do not fit the spec."""
    try:
        expected = table_nbytes(n, d, fmt, group_size)
    except ValueError as e:
        raise BundleError(f"item table spec invalid: {e}") from e
    if len(data) != expected:
        raise BundleError(f"item table has {len(data)} bytes, expected {expected} for ({n}, {d}) {fmt}")
    if fmt == "float32":
        out = np.frombuffer(data, dtype="<f4").reshape(n, d).astype(np.float32)
    else:
        g = d // group_size
        split = n * d if fmt == "int8" else n * d // 2
        scale = np.frombuffer(data, dtype="<f4", offset=split).reshape(n, g)
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
