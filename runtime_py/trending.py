"""Trending pack: the small server-sent list of 7-day item counts at a time `at` (PROTOCOL v1, "Scene").

On disk: the canonical JSON of bundle_codecs.py (`encode_pack`: at, catalog, counts, version) plus a detached
Ed25519 signature in `<path>.sig`, the same scheme as the bundle manifest, so a phone only trusts packs from the
bundle's key. A pack shipped inside a bundle is covered by the manifest's hash instead. A pack is bound to one
catalog (`catalog`, `catalog_digest`) and `Recommender.set_trending` refuses it for another catalog, when stale or
from the future (`check_pack_time`), and when older than the pack in use (a replay).
"""
from __future__ import annotations

import dataclasses
import math
import os
import stat
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import BundleError, InputError
from .bundle_codecs import PACK_VERSION, decode_pack, encode_pack, sign_manifest, verify_signature

__all__ = ["PACK_VERSION", "TrendingPack"]


@dataclasses.dataclass(frozen=True)
class TrendingPack:
    """Item counts over the 7 days before `at` (unix seconds). Build with `from_counts`."""

    at: float
    counts: Mapping[str, float]
    catalog: str = ""  # catalog_digest of the catalog counted ("" = unbound: only an app's own or a bundle's pack)

    @classmethod
    def from_counts(cls, at: float, counts: Mapping[str, float], catalog: str = "") -> "TrendingPack":
        """Validate and freeze; `InputError` for a non-finite `at`, an empty id or a negative/non-finite count."""
        try:
            at_f = float(at) if not isinstance(at, bool) else math.nan  # true is not a time
        except (TypeError, ValueError, OverflowError) as e:  # 10**400 overflows float
            raise InputError(f"trending pack time {type(at).__name__} is not a number in range") from e
        if not math.isfinite(at_f):
            raise InputError(f"trending pack time {at!r} is not finite")
        if not isinstance(catalog, str):
            raise InputError("trending pack catalog must be a str (catalog_digest)")
        if not isinstance(counts, Mapping):
            raise InputError("trending counts must be a mapping {item_id: count}")
        clean: dict[str, float] = {}
        for item, c in counts.items():
            if not isinstance(item, str) or not item:
                raise InputError(f"trending item id {item!r} must be a non-empty str")
            if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)):
                raise InputError(f"trending count for {item!r} is not a number: {c!r}")
            try:
                cf = float(c)
            except OverflowError as e:  # an int beyond float range
                raise InputError(f"trending count for {item!r} is out of range") from e
            if not math.isfinite(cf) or cf < 0:
                raise InputError(f"trending count for {item!r} must be finite and >= 0, got {c!r}")
            clean[item] = cf
        return cls(at=at_f, counts=dict(sorted(clean.items())), catalog=catalog)

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, no whitespace): what the signature covers."""
        return encode_pack(self.at, dict(self.counts), self.catalog)

    @classmethod
    def from_json(cls, data: bytes, require_catalog: bool = False) -> "TrendingPack":
        """Parse pack bytes; `BundleError` if malformed (the pack came from outside, like a bundle). A pack from
        outside a bundle must be bound to a catalog (`require_catalog`, what `load` asks)."""
        try:
            at, counts, catalog = decode_pack(data, require_catalog)
            return cls.from_counts(at, counts, catalog)
        except (UnicodeDecodeError, ValueError, TypeError) as e:  # InputError is a ValueError
            raise BundleError(f"invalid trending pack: {e}") from e

    def save(self, path: str | Path, private_key_pem: bytes | str | Path) -> None:
        """Write the pack to `path` and its signature to `<path>.sig`."""
        write_signed(path, self.to_json(), private_key_pem)

    @classmethod
    def load(cls, path: str | Path, trusted_key: bytes | str | Path) -> "TrendingPack":
        """Read and verify a signed pack; `BundleError` if it is missing, unsigned, forged or malformed."""
        return cls.from_json(read_signed(path, trusted_key, 32 << 20, "trending pack"), require_catalog=True)

    def log_counts(self, index: Mapping[str, int], n_items: int) -> np.ndarray:
        """The score program's `trend` input: log1p(count) per item index; items not in the catalog are ignored
        (a pack may be newer than the bundle)."""
        out = np.zeros(n_items, dtype=np.float64)
        for item, c in self.counts.items():
            i = index.get(item)
            if i is not None:
                out[i] = c
        return np.log1p(out).astype(np.float32)


def write_signed(path: str | Path, data: bytes, private_key_pem: bytes | str | Path) -> None:
    """`data` to `path` and its Ed25519 signature to `<path>.sig` (packs from the server)."""
    Path(path).write_bytes(data)
    Path(f"{path}.sig").write_bytes(sign_manifest(data, private_key_pem))


def read_signed(path: str | Path, trusted_key, limit: int, what: str) -> bytes:
    """The bytes of `path` once `<path>.sig` verifies with `trusted_key`; `BundleError` if either is missing,
    larger than `limit` (or 1 KB) or the signature fails."""
    try:  # bounded reads: a pack path replaced by a FIFO or /dev/zero must not hang or exhaust memory
        data = _read_bounded(Path(path), limit)
        sig = _read_bounded(Path(f"{path}.sig"), 1024)
    except OSError as e:
        raise BundleError(f"cannot read {what} {path}: {e}") from e
    verify_signature(data, sig, trusted_key)
    return data


def _read_bounded(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return data
