"""The Recommender's pack setters (recommender.py): the server's trending, neighbour and onboarding packs, each
checked against the open bundle before it changes anything (validate.py) and persisted in the store."""
from __future__ import annotations

import time

from .errors import BundleError, InputError
from .neighbors import NeighborPack
from .onboarding import OnboardingPack
from .trending import TrendingPack
from .validate import check_neighbor_pack as _check_nb_pack, check_pack as _check_pack, check_time as _check_time


class PackSetters:
    """Mixed into `Recommender`; uses its lock, store, catalog and per-user cache."""

    def set_trending(self, pack: TrendingPack, now: float | None = None, allow_older: bool = False) -> None:
        """Use `pack` (e.g. from `TrendingPack.load(path, trusted_key)`) from now on; it is persisted. `InputError`
        (nothing changed) for a pack of another catalog, stale or from the future at `now` (default: this device's
        clock), or older than the pack in use; `allow_older` is for replays of history (an evaluation), never for
        packs from the network."""
        if not isinstance(pack, TrendingPack):
            raise InputError(f"set_trending takes a TrendingPack, got {type(pack).__name__}")
        with self._lock:
            self._check_open()
            now_t = time.time() if now is None else _check_time(now, "now")
            _check_pack(pack, self.catalog, now_t, None if allow_older or self._pack is None else self._pack.at)
            self._store.put_trending(pack.to_json())
            self._set_trend(pack)

    @property
    def neighbor_spec(self):
        """The bundle's item-item term (manifest NeighborSpec: kind, m, last, decay, weight), or None."""
        return self._nb

    def set_neighbors(self, pack: NeighborPack, now: float | None = None, allow_older: bool = False) -> None:
        """Use `pack` (from `NeighborPack.load(path, trusted_key)`, `metarec neighbors`) as the item-item term's
        table from now on; it is persisted. `InputError` (nothing changed) when the bundle has no such term, for a
        pack of another catalog, kind or m, stale or from the future at `now`, or older than the pack in use
        (`allow_older`: replays of history only, as for `set_trending`)."""
        if not isinstance(pack, NeighborPack):
            raise InputError(f"set_neighbors takes a NeighborPack, got {type(pack).__name__}")
        with self._lock:
            self._check_open()
            now_t = time.time() if now is None else _check_time(now, "now")
            current = None if allow_older or self._nb_pack is None else self._nb_pack.at
            _check_nb_pack(pack, self._nb, self.catalog, self.shapes.N, now_t, current)
            self._store.put_neighbor_pack(pack.to_bytes())
            self._nb_pack, self._nb_table = pack, (pack.ids, pack.weights)
            self._users.clear()  # each cached user's term came from the old table: rebuilt on the next call

    @property
    def onboarding_spec(self):
        """The bundle's onboarding term (manifest OnboardingSpec: weight, span, window_days), or None."""
        return self._ob

    def set_onboarding(self, pack: OnboardingPack, now: float | None = None, allow_older: bool = False) -> None:
        """Use `pack` (from `OnboardingPack.load(path, trusted_key)`, `metarec onboarding`) for the onboarding term
        from now on; it is persisted (the store's `onboarding_pack` row) and restored by `open`. `InputError`
        (nothing changed) when the bundle has no such term, for a pack of another catalog, stale or from the future at
        `now`, or older than the pack in use (`allow_older`: replays of history only, as for `set_trending`)."""
        if not isinstance(pack, OnboardingPack):
            raise InputError(f"set_onboarding takes an OnboardingPack, got {type(pack).__name__}")
        pack = OnboardingPack.from_rows(pack.at, pack.rows, pack.catalog)  # one built directly skipped the checks
        with self._lock:
            self._check_open()
            if self._ob is None:
                raise InputError("this bundle has no onboarding term (its export chose none on validation users)")
            now_t = time.time() if now is None else _check_time(now, "now")
            current = None if allow_older or self._ob_pack is None else self._ob_pack.at
            _check_pack(pack, self.catalog, now_t, current, "onboarding pack")
            self._store.put_onboarding_pack(pack.to_json())  # first: a failed write changes nothing
            self._use_onboarding(pack)

    def _use_onboarding(self, pack: OnboardingPack) -> None:
        self._ob_pack, self._ob_rows = pack, pack.log_rows(self._cat.index, self.shapes.N)
        self._users.clear()  # each cached user's offset holds the old counts: rebuilt on the next call

    def _restore_onboarding(self) -> None:
        """At open, as the neighbour pack: the stored pack (a row failing its checksum: StateError) when the bundle
        has the term; one for another catalog, or malformed, is dropped (the term stays off until a pack is set)."""
        stored = self._store.get_onboarding_pack() if self._ob is not None else None
        if stored is not None:
            try:
                pack = OnboardingPack.from_json(stored)
                _check_pack(pack, self.catalog, pack.at, None, "onboarding pack")
                self._use_onboarding(pack)
            except (BundleError, InputError):
                pass
