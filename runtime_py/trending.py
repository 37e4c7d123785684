"""Trending pack: the small server-sent list of 7-day item counts at a time `at` (PROTOCOL v1, "Scene").

On disk: canonical JSON `{"at": ..., "counts": {item_id: count}, "version": 1}` plus a detached Ed25519
signature in `<path>.sig`, the same scheme as the bundle manifest (bundle_codecs.py), so a phone only trusts packs
from the bundle's key. A pack shipped inside a bundle is covered by the manifest's hash instead.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import BundleError, InputError
from .bundle_codecs import sign_manifest, verify_signature

PACK_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TrendingPack:
    """Item counts over the 7 days before `at` (unix seconds). Build with `from_counts`."""

    at: float
    counts: Mapping[str, float]

    @classmethod
    def from_counts(cls, at: float, counts: Mapping[str, float]) -> "TrendingPack":
        """Validate and freeze; `InputError` for a non-finite `at`, an empty id or a negative/non-finite count."""
        try:
            at_f = float(at)
        except (TypeError, ValueError) as e:
            raise InputError(f"trending pack time {at!r} is not a number") from e
        if not math.isfinite(at_f):
            raise InputError(f"trending pack time {at!r} is not finite")
        if not isinstance(counts, Mapping):
            raise InputError("trending counts must be a mapping {item_id: count}")
        clean: dict[str, float] = {}
        for item, c in counts.items():
            if not isinstance(item, str) or not item:
                raise InputError(f"trending item id {item!r} must be a non-empty str")
            if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)):
                raise InputError(f"trending count for {item!r} is not a number: {c!r}")
            cf = float(c)
            if not math.isfinite(cf) or cf < 0:
                raise InputError(f"trending count for {item!r} must be finite and >= 0, got {c!r}")
            clean[item] = cf
        return cls(at=at_f, counts=dict(sorted(clean.items())))

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, no whitespace): what the signature covers."""
        return json.dumps({"at": self.at, "counts": dict(self.counts), "version": PACK_VERSION}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> "TrendingPack":
        """Parse pack bytes; `BundleError` if malformed (the pack came from outside, like a bundle)."""
        try:
            d = json.loads(data.decode("utf-8"))
            if not isinstance(d, dict) or set(d) != {"at", "counts", "version"}:
                raise ValueError("a trending pack has exactly the fields at, counts, version")
            if d["version"] != PACK_VERSION:
                raise ValueError(f"trending pack version {d['version']!r} unsupported (this runtime reads 1)")
            return cls.from_counts(d["at"], d["counts"])
        except (UnicodeDecodeError, ValueError, TypeError) as e:  # InputError is a ValueError
            raise BundleError(f"invalid trending pack: {e}") from e

    def save(self, path: str | Path, private_key_pem: bytes | str | Path) -> None:
        """Write the pack to `path` and its signature to `<path>.sig`."""
        data = self.to_json()
        Path(path).write_bytes(data)
        Path(f"{path}.sig").write_bytes(sign_manifest(data, private_key_pem))

    @classmethod
    def load(cls, path: str | Path, trusted_key: bytes | str | Path) -> "TrendingPack":
        """Read and verify a signed pack; `BundleError` if it is missing, unsigned, forged or malformed."""
        try:
            data = Path(path).read_bytes()
            sig = Path(f"{path}.sig").read_bytes()
        except OSError as e:
            raise BundleError(f"cannot read trending pack {path}: {e}") from e
        verify_signature(data, sig, trusted_key)
        return cls.from_json(data)

    def log_counts(self, index: Mapping[str, int], n_items: int) -> np.ndarray:
        """The score program's `trend` input: log1p(count) per item index; items not in the catalog are ignored
        (a pack may be newer than the bundle)."""
        out = np.zeros(n_items, dtype=np.float64)
        for item, c in self.counts.items():
            i = index.get(item)
            if i is not None:
                out[i] = c
        return np.log1p(out).astype(np.float32)


