"""ctypes binding of the native runtime (runtime_native/, `make native` -> build/native/libmetarec.so).

`NativeRecommender` mirrors `Recommender`'s calls (open, record, set_trending, set_neighbors, set_onboarding,
recommend, forget, close) and raises the same typed errors from the C API's return codes, so the Python runtime's tests and the parity
runs drive both the same way. Standard library only: the native process needs no numpy, torch or executorch import
(set_neighbors reads a NeighborPack's numpy arrays, so numpy is already there when it is called).
The library is `$METAREC_NATIVE_LIB` when set, else build/native/libmetarec.so beside this checkout.
"""
from __future__ import annotations

import ctypes as C
import os
from pathlib import Path
from typing import NamedTuple

from .errors import BundleError, InputError, StateError

MR_OK, MR_BUNDLE_ERROR, MR_INPUT_ERROR, MR_STATE_ERROR = 0, 1, 2, 3
_ERRORS = {MR_BUNDLE_ERROR: BundleError, MR_INPUT_ERROR: InputError, MR_STATE_ERROR: StateError}
DEFAULT_LIB = Path(__file__).resolve().parent.parent / "build" / "native" / "libmetarec.so"


class NativeRecommendation(NamedTuple):
    item_id: str
    score: float


class NativeNeighborSpec(NamedTuple):
    """The bundle's item-item term as the library read it (manifest.py NeighborSpec without `file`)."""

    kind: str
    m: int
    last: int
    decay: float
    weight: float


class NativeOnboardingSpec(NamedTuple):
    """The bundle's onboarding term as the library read it (manifest_terms.py OnboardingSpec)."""

    weight: tuple
    span: int
    window_days: float


def load_library(path: str | os.PathLike | None = None) -> C.CDLL:
    """The C API with its argument types declared (ctypes would otherwise pass doubles as ints)."""
    lib = C.CDLL(str(path or os.environ.get("METAREC_NATIVE_LIB") or DEFAULT_LIB))
    P, S, I, D = C.c_void_p, C.c_char_p, C.c_int, C.c_double
    sigs = {
        "mr_open": (I, [S, S, S, C.POINTER(P)]),
        "mr_record": (I, [P, S, S, D, S]),
        "mr_set_trending": (I, [P, D, C.c_size_t, C.POINTER(S), C.POINTER(D)]),
        "mr_recommend": (I, [P, S, D, I, C.POINTER(S), C.POINTER(C.c_float), C.POINTER(I)]),
        "mr_forget": (I, [P, S]),
        "mr_last_error": (S, [P]),
        "mr_close": (None, [P]),
        "mr_info": (I, [P, C.POINTER(I), C.POINTER(I), C.POINTER(C.c_longlong)]),
        "mr_count_events": (I, [P, S, C.POINTER(C.c_longlong)]),
        "mr_stats": (I, [P, C.POINTER(C.c_longlong), C.POINTER(C.c_longlong)]),
        "mr_set_neighbors": (I, [P, D, S, I, C.c_longlong, P, P]),
        "mr_neighbor_spec": (I, [P, C.c_char_p, C.c_size_t, C.POINTER(I), C.POINTER(I), C.POINTER(D), C.POINTER(D),
                                 C.POINTER(I)]),
        "mr_catalog": (I, [P, C.c_char_p, C.c_size_t]),
        "mr_set_onboarding": (I, [P, D, C.c_size_t, C.POINTER(C.c_size_t), C.POINTER(S), C.POINTER(D)]),
        "mr_onboarding_spec": (I, [P, C.POINTER(D), C.c_size_t, C.POINTER(C.c_size_t), C.POINTER(I), C.POINTER(D)]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode("utf-8")


class NativeRecommender:
    """The native runtime through its C API. Not for concurrent processes on one state file."""

    def __init__(self, lib: C.CDLL, handle: int):
        self._lib, self._h = lib, C.c_void_p(handle)
        k, n, serial = C.c_int(), C.c_int(), C.c_longlong()
        self._check(lib.mr_info(self._h, C.byref(k), C.byref(n), C.byref(serial)))
        self.k_max, self.n_items, self.serial = k.value, n.value, serial.value
        digest = C.create_string_buffer(65)
        self._check(lib.mr_catalog(self._h, digest, 65))
        self.catalog = digest.value.decode()  # what a trending or neighbour pack is bound to (catalog_digest)
        kind, m, last, decay, weight = C.create_string_buffer(16), C.c_int(), C.c_int(), C.c_double(), C.c_double()
        self._check(lib.mr_neighbor_spec(self._h, kind, 16, C.byref(m), C.byref(last), C.byref(decay),
                                         C.byref(weight), None))
        self.neighbor_spec = NativeNeighborSpec(kind.value.decode(), m.value, last.value, decay.value,
                                                weight.value) if m.value else None
        weights, n_w, span, window = (C.c_double * 16)(), C.c_size_t(), C.c_int(), C.c_double()
        self._check(lib.mr_onboarding_spec(self._h, weights, 16, C.byref(n_w), C.byref(span), C.byref(window)))
        self.onboarding_spec = NativeOnboardingSpec(tuple(weights[:n_w.value]), span.value,
                                                    window.value) if n_w.value else None

    @classmethod
    def open(cls, bundle_dir, state_path, trusted_key, lib: C.CDLL | None = None) -> "NativeRecommender":
        """As `Recommender.open`; `trusted_key` is PEM bytes/text or a path to a PEM file."""
        lib = lib or load_library()
        pem = trusted_key if isinstance(trusted_key, bytes) else (
            trusted_key.encode() if isinstance(trusted_key, str) and "-----BEGIN" in trusted_key
            else Path(trusted_key).read_bytes())
        h = C.c_void_p()
        rc = lib.mr_open(_b(str(bundle_dir)), _b(str(state_path)), pem, C.byref(h))
        if rc != MR_OK:
            msg = lib.mr_last_error(h).decode() if h.value else "mr_open failed"
            lib.mr_close(h)
            raise _ERRORS.get(rc, StateError)(msg)
        return cls(lib, h.value)

    def _check(self, rc: int) -> None:
        if self._h is None:
            raise StateError("this NativeRecommender is closed")
        if rc != MR_OK:
            raise _ERRORS.get(rc, StateError)(self._lib.mr_last_error(self._h).decode())

    def _live(self):
        if self._h is None:
            raise StateError("this NativeRecommender is closed")
        return self._h

    def record(self, user_id: str, item_id: str, timestamp: float, event_id: str | None = None) -> None:
        self._live()
        self._check(self._lib.mr_record(self._h, _b(user_id), _b(item_id), float(timestamp), _b(event_id)))

    def set_trending(self, pack, now: float | None = None, allow_older: bool = False) -> None:
        """A `TrendingPack` (or anything with `.at` and `.counts`). `now` / `allow_older` mirror
        `Recommender.set_trending`'s signature; the C API does not check a pack's freshness (docs/native.md)."""
        self._live()
        items = list(pack.counts.items())
        ids = (C.c_char_p * max(1, len(items)))(*[_b(i) for i, _ in items])
        counts = (C.c_double * max(1, len(items)))(*[float(c) for _, c in items])
        self._check(self._lib.mr_set_trending(self._h, float(pack.at), len(items), ids, counts))

    def set_neighbors(self, pack, now: float | None = None, allow_older: bool = False) -> None:
        """A `NeighborPack` (runtime_py/neighbors.py) as the item-item term's table, as `Recommender.set_neighbors`:
        persisted in the state file (store.py's `neighbor_pack` row, the same bytes), reloaded at open. The library
        checks kind, m and the row count against the bundle's term (InputError, nothing changed); `now` /
        `allow_older` mirror the Python signature, freshness is not checked (as set_trending)."""
        import numpy as np

        self._live()
        if pack.catalog != self.catalog:
            raise InputError("neighbour pack was made for another catalog (its `catalog` differs from this bundle's)")
        ids = np.asarray(pack.ids)
        if ids.ndim != 2 or ((ids < -1) | (ids >= 2**31)).any():
            raise InputError(f"neighbour pack ids must be (N, m) item indices, got shape {ids.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        w = np.ascontiguousarray(pack.weights, dtype=np.float32)
        if w.shape != ids.shape:
            raise InputError(f"neighbour pack ids {ids.shape} and weights {w.shape} differ in shape")
        self._check(self._lib.mr_set_neighbors(self._h, float(pack.at), _b(pack.kind), int(ids.shape[1]),
                                               int(ids.shape[0]), ids.ctypes.data, w.ctypes.data))

    def set_onboarding(self, pack, now: float | None = None, allow_older: bool = False) -> None:
        """An `OnboardingPack` (runtime_py/onboarding.py: `at`, `rows`, `catalog`) for the onboarding term, as
        `Recommender.set_onboarding`: persisted in the state file (store.py's `onboarding_pack` row, the same bytes),
        restored at open. `InputError`, nothing changed, when the bundle has no term, for a pack of another catalog,
        other than 11 rows or a negative or non-finite count; `now` / `allow_older` mirror the Python signature,
        freshness is not checked (as set_trending)."""
        self._live()
        if self.onboarding_spec is not None and pack.catalog != self.catalog:
            raise InputError("onboarding pack was made for another catalog (its `catalog` differs from this bundle's)")
        try:
            at, rows = float(pack.at), [list(r.items()) for r in pack.rows]
            entries = [(_b(i), float(c)) for r in rows for i, c in r]
        except (AttributeError, TypeError, ValueError) as e:
            raise InputError(f"an onboarding pack has a time and rows mapping item ids (str) to counts: {e}") from e
        lengths = (C.c_size_t * max(1, len(rows)))(*[len(r) for r in rows])
        ids = (C.c_char_p * max(1, len(entries)))(*[i for i, _ in entries])
        counts = (C.c_double * max(1, len(entries)))(*[c for _, c in entries])
        self._check(self._lib.mr_set_onboarding(self._h, at, len(rows), lengths, ids, counts))

    def recommend(self, user_id: str, now: float, k: int = 10) -> list[NativeRecommendation]:
        self._live()
        if isinstance(k, bool) or not isinstance(k, int) or not -2**31 <= k < 2**31:
            raise InputError(f"k must be an int, got {k!r}")
        n_slots = max(1, min(k, self.k_max))
        ids, scores, n = (C.c_char_p * n_slots)(), (C.c_float * n_slots)(), C.c_int()
        self._check(self._lib.mr_recommend(self._h, _b(user_id), float(now), k, ids, scores, C.byref(n)))
        return [NativeRecommendation(ids[i].decode(), float(scores[i])) for i in range(n.value)]

    def forget(self, user_id: str) -> None:
        self._live()
        self._check(self._lib.mr_forget(self._h, _b(user_id)))

    def count_events(self, user_id: str) -> int:
        self._live()
        n = C.c_longlong()
        self._check(self._lib.mr_count_events(self._h, _b(user_id), C.byref(n)))
        return n.value

    def stats(self) -> tuple[int, float]:
        """(adaptations since open, the last one's wall time in us)."""
        a, ns = C.c_longlong(), C.c_longlong()
        self._check(self._lib.mr_stats(self._h, C.byref(a), C.byref(ns)))
        return a.value, ns.value / 1000.0

    def close(self) -> None:
        if self._h is not None:
            self._lib.mr_close(self._h)
            self._h = None

    def __enter__(self) -> "NativeRecommender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
