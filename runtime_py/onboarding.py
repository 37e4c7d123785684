"""Onboarding pack: the server's counts of what other users took at each history length lately (manifest
`onboarding`, runtime_py/manifest_terms.py OnboardingSpec), one row per K = 0..ONBOARDING_ROWS-1.

On disk: the canonical JSON of bundle_codecs.py (`encode_onboarding`: at, catalog, kind, rows, version) plus a
detached Ed25519 signature in `<path>.sig`, as a trending pack. A pack is bound to one catalog;
`Recommender.set_onboarding` refuses it for another catalog, when stale or from the future, or older than the pack
in use. The pack set is persisted in the state file (store.py `onboarding_pack`: `to_json` bytes) and restored by
`open` (one for another catalog is dropped there); until a pack is set the term is off.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .bundle_codecs import decode_onboarding, encode_onboarding
from .errors import BundleError, InputError
from .manifest_terms import ONBOARDING_ROWS
from .trending import TrendingPack, read_signed, write_signed


@dataclasses.dataclass(frozen=True)
class OnboardingPack:
    """Per history length K (row K; the last row for longer histories) item counts at `at`. Build with
    `from_rows`."""

    at: float
    rows: tuple[Mapping[str, float], ...]
    catalog: str

    @classmethod
    def from_rows(cls, at: float, rows: Sequence[Mapping[str, float]], catalog: str) -> "OnboardingPack":
        """Validate and freeze: `InputError` for other than ONBOARDING_ROWS rows, an unbound pack, or a row a
        trending pack would refuse (a non-finite time, an empty id, a negative or non-finite count)."""
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or len(rows) != ONBOARDING_ROWS:
            raise InputError(f"an onboarding pack has exactly {ONBOARDING_ROWS} rows (history lengths 0.."
                             f"{ONBOARDING_ROWS - 1})")
        if not isinstance(catalog, str) or len(catalog) != 64:
            raise InputError("an onboarding pack must be bound to a catalog (Recommender.catalog: 64 hex)")
        checked = [TrendingPack.from_counts(at, r, catalog) for r in rows]  # one validation for every count map
        return cls(at=checked[0].at, rows=tuple(p.counts for p in checked), catalog=catalog)

    def to_json(self) -> bytes:
        return encode_onboarding(self.at, [dict(r) for r in self.rows], self.catalog)

    @classmethod
    def from_json(cls, data: bytes) -> "OnboardingPack":
        """Parse pack bytes; `BundleError` if malformed."""
        try:
            at, rows, catalog = decode_onboarding(data, ONBOARDING_ROWS)
            return cls.from_rows(at, rows, catalog)
        except (UnicodeDecodeError, ValueError, TypeError) as e:  # InputError is a ValueError
            raise BundleError(f"invalid onboarding pack: {e}") from e

    def save(self, path: str | Path, private_key_pem: bytes | str | Path) -> None:
        write_signed(path, self.to_json(), private_key_pem)

    @classmethod
    def load(cls, path: str | Path, trusted_key: bytes | str | Path) -> "OnboardingPack":
        """Read and verify a signed pack; `BundleError` if it is missing, unsigned, forged or malformed."""
        return cls.from_json(read_signed(path, trusted_key, 32 << 20, "onboarding pack"))

    def log_rows(self, index: Mapping[str, int], n_items: int) -> np.ndarray:
        """(ONBOARDING_ROWS, n_items) float32 log1p(count); ids not in the catalog are ignored."""
        out = np.zeros((ONBOARDING_ROWS, n_items), dtype=np.float64)
        for k, row in enumerate(self.rows):
            at = np.fromiter((index.get(item, -1) for item in row), np.int64, len(row))
            c = np.fromiter(row.values(), np.float64, len(row))
            keep = (at >= 0) & (at < n_items)
            out[k, at[keep]] = c[keep]
        return np.log1p(out).astype(np.float32)
