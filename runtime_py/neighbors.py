"""The item-item term of the score: what co-occurrence or transitions after the user's last items add.

A low-rank prior cannot hold every item-item link of a large catalog (docs/decisions/neighbors.md: on a 9,125-item
MovieLens the prior alone sits below a transition baseline); export ships each item's top-m neighbours when the
validation users say they pay (export/select.py), and both the sdk's eager scorer and the runtimes add

    term = weight * c / std(c),   c = sum over the last `last` history items h (newest first, age a)
                                      of decay**a * row(h),

c a sparse (N,) vector (row(h): h's neighbours and their weights), std over the whole catalog. The term is sparse,
so the runtime adds it to score.pte's cached per-item offset and ranks with the rank method.

The table is the server's statistics, not the model's: a `NeighborPack` (signed like a trending pack, bound to the
bundle's catalog and to the term's kind and m) carries it, and the server sends a fresh one as the log grows
(`metarec neighbors`); a bundle may carry an initial table (neighbors.bin) or none (docs/decisions/neighbors.md).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from .bundle_codecs import decode_neighbors, encode_neighbors
from .errors import BundleError, InputError

NEIGHBOR_PACK_VERSION = 1
_MAX_NEIGHBOR_PACK_BYTES = 256 << 20  # 10^6 items x 40 neighbours x 6 bytes


def neighbor_term(ids: np.ndarray, weights: np.ndarray, history: np.ndarray, last: int, decay: float,
                  weight: float, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, float32 values) of the term for `history` (item indices, oldest first); empty when the
    history is empty or its neighbours carry no weight."""
    hist = np.asarray(history, np.int64)[::-1][:last]
    if len(hist) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ages = decay ** np.arange(len(hist), dtype=np.float64)
    idx = ids[hist].reshape(-1)
    val = (weights[hist].astype(np.float64) * ages[:, None]).reshape(-1)
    keep = idx >= 0  # -1 (a pack's "no neighbour"): its weight counts nowhere, not at index -1 = the last item
    idx, val = idx[keep], val[keep]
    uniq, inv = np.unique(idx, return_inverse=True)
    c = np.bincount(inv, weights=val, minlength=len(uniq))
    # std over the catalog of a vector that is c on `uniq` and 0 elsewhere
    mean = c.sum() / n_items
    var = (c * c).sum() / n_items - mean * mean
    if not var > 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return uniq, (weight * c / np.sqrt(var)).astype(np.float32)


def add_neighbor_term(scores: np.ndarray, ids, weights, history, last: int, decay: float, weight: float) -> None:
    """scores (N,) += the term, in place (the sdk's eager scorer; the runtime adds it to its cached offset)."""
    i, v = neighbor_term(ids, weights, history, last, decay, weight, len(scores))
    if len(i):
        np.add.at(scores, i, v)


@dataclasses.dataclass(frozen=True)
class NeighborPack:
    """Each catalog item's top-m neighbours (`ids` (N, m) item indices, -1 = none; `weights` (N, m) >= 0) of `kind`
    from the events before `at`, bound to a catalog (catalog_digest). On disk: one line of canonical JSON (at,
    catalog, kind, m, n, version), a newline, then neighbors.bin's bytes; the signature in `<path>.sig`."""

    at: float
    catalog: str
    kind: str
    ids: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        at = self.at
        if isinstance(at, bool) or not isinstance(at, (int, float, np.integer, np.floating)) or \
                not math.isfinite(float(at)):
            raise InputError(f"neighbour pack time {at!r} is not a finite number")
        if not isinstance(self.catalog, str) or not isinstance(self.kind, str):
            raise InputError("neighbour pack catalog and kind must be str")
        ids, w = np.asarray(self.ids), np.asarray(self.weights)
        if ids.ndim != 2 or ids.shape != w.shape or ids.shape[1] < 1:
            raise InputError(f"neighbour pack ids {ids.shape} and weights {w.shape} must both be (N, m), m >= 1")
        if not np.issubdtype(ids.dtype, np.integer) or ((ids < -1) | (ids >= len(ids))).any():
            raise InputError(f"neighbour pack ids must be item indices in [-1, {len(ids)})")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise InputError("neighbour pack weights must be finite and >= 0")
        object.__setattr__(self, "at", float(at))
        object.__setattr__(self, "ids", ids.astype(np.int64))
        object.__setattr__(self, "weights", w.astype(np.float16).astype(np.float32))  # as stored

    @property
    def m(self) -> int:
        return int(self.ids.shape[1])

    def to_bytes(self) -> bytes:
        head = json.dumps({"at": self.at, "catalog": self.catalog, "kind": self.kind, "m": self.m,
                           "n": int(len(self.ids)), "version": NEIGHBOR_PACK_VERSION}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
        return head + b"\n" + encode_neighbors(self.ids, self.weights)

    @classmethod
    def from_bytes(cls, data: bytes) -> "NeighborPack":
        """Parse pack bytes; `BundleError` if malformed (a pack comes from outside, like a bundle)."""
        try:
            head, _, body = bytes(data).partition(b"\n")
            d = json.loads(head[:4096].decode("ascii"))
            if not isinstance(d, dict) or set(d) != {"at", "catalog", "kind", "m", "n", "version"}:
                raise ValueError(f"header fields {sorted(d) if isinstance(d, dict) else d!r}")
            if d["version"] != NEIGHBOR_PACK_VERSION or isinstance(d["version"], bool):
                raise ValueError(f"version {d['version']!r} unsupported (this runtime reads {NEIGHBOR_PACK_VERSION})")
            n, m = d["n"], d["m"]
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in (n, m)) or m > 256:
                raise ValueError(f"n={n!r}, m={m!r} out of range")
            if not d["catalog"]:
                raise ValueError("the pack is bound to no catalog")
            ids, w = decode_neighbors(body, n, m, "neighbour pack")
            return cls(d["at"], d["catalog"], d["kind"], ids, w)
        except (UnicodeDecodeError, ValueError, TypeError, KeyError) as e:  # InputError is a ValueError
            raise BundleError(f"invalid neighbour pack: {e}") from e

    def save(self, path: str | Path, private_key_pem: bytes | str | Path) -> None:
        """Write the pack to `path` and its Ed25519 signature to `<path>.sig`."""
        from .trending import write_signed

        write_signed(path, self.to_bytes(), private_key_pem)

    @classmethod
    def load(cls, path: str | Path, trusted_key: bytes | str | Path) -> "NeighborPack":
        """Read and verify a signed pack; `BundleError` if it is missing, unsigned, forged or malformed."""
        from .trending import read_signed

        return cls.from_bytes(read_signed(path, trusted_key, _MAX_NEIGHBOR_PACK_BYTES, "neighbour pack"))
