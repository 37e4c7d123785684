"""The phone-side recommender: verified bundle + durable event log + ExecuTorch adaptation + scored top-k.

    rec = Recommender.open(bundle_dir, state_path, trusted_key=PUBLIC_KEY_PEM_PATH)
    rec.record("196", "242", 881250949.0)          # returns once the event is durable
    rec.recommend("196", now=881260000.0, k=10)    # [Recommendation(item_id, score, because), ...]

Events arriving out of order are ACCEPTED and ordered by (timestamp, arrival): a phone's clock and a sync queue
both reorder events, and refusing them would lose real interactions. Because a head is always rebuilt from
phi0 on the user's ordered events (not updated incrementally), a late event simply marks the head stale and the
next `recommend` re-adapts on the corrected order. A duplicate event_id is a no-op; with other content, InputError.

Adaptation is lazy: `recommend` adapts the head if events arrived since the last adaptation, if the stored head
belongs to another bundle serial, or (with the manifest's `adapt_scene = "query"`, what the sdk's eager model
does) if the scene at `now` differs from the scene the head was adapted in (the scene changes with the local
hour, not every second: runtime_py/scene.py). Heads are stored with the serial,
the last event seq and the scene; they are a cache, so they are written with the next event's transaction (or
at `close`), never inside `recommend` (store.py says why a head needs no fsync).

Hot path: everything that does not change between two calls is prepared outside `recommend`: per catalog the
dequantized table and what `because` needs (catalog_state.py, results.py); per trending pack the (N,) trend tensor;
per user the adapted head, hist_vecs/hist_mask and the (N,) exclude mask, as tensors sharing memory with numpy
arrays. `recommend` then fills the scene buffer, runs score.pte once and maps ids to strings (`_results`, the
catalog's `Explainer.results` bound at install: one attribute lookup, as a method's). With score.pte's rank
method (manifest `rank_method`), forward's user vector and per-item offset are kept per user, and a repeat call
while the head, history, scene and trend pack are unchanged runs only `rank` (table product + offset + top-k:
about half of forward's time on ML-100K, bench/results/latency.md).

Large catalogs (a chunked score.pte, manifest `chunks`): the table is score.pte's quantized constant and the runtime
reads its rows back from the program at open (ChunkedScoreProgram.table). score.pte takes one per-item input, t =
trend with -inf at excluded items, as views of ONE shared buffer: `recommend` writes -inf at the user's items,
runs score.pte and restores them (O(history), no per-user (N,) array). Such a program has
no rank method, so a large bundle with the item-item term (`neighbors`) is refused (BundleError), and so are
catalog deltas on it.

Catalog deltas (`add_items`): catalog_state.py (the applied deltas, the catalog they make, their items' scores
merged with score.pte's top-k). Nothing of this runs without deltas.

One `Recommender` owns its state database: all writes go through it, so the per-user cache is invalidated by
`record`/`forget` without a database read per request; a second one on the same state file gets StateError.
"""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .bundle import Bundle, open_bundle
from .bundle_codecs import catalog_digest
from .catalog_state import CatalogDeltas, CatalogState
from .errors import BundleError, InputError, MetaRecRuntimeError, StateError
from .manifest import at_length, onboarding_row, onboarding_weight
from .neighbors import NeighborPack, neighbor_term
from .packs import PackSetters
from .programs import AdaptProgram, ChunkedScoreProgram, ScoreProgram, load_adapt_program, load_score_program
from .results import TREND_LABELS, Event, Recommendation  # the result types stay importable from here too
from .scene import SceneClock, shift_for
from .store import Store
from .trending import TrendingPack
from .user_state import UserState
from .validate import MAX_TIME, MIN_TIME, check_id as _check_id, \
    check_neighbor_pack as _check_nb_pack, check_path as _check_path, check_time as _check_time  # every public argument is checked in validate.py

_TIME_RANGE = (MIN_TIME, MAX_TIME)


class Recommender(PackSetters):
    """An app's recommender over one verified bundle and one state database. Not for concurrent processes."""

    _MAX_CACHED_USERS = 32  # each cached user holds an (N,) float32 exclude mask and (N,) bytes of `because`

    def __init__(self, bundle: Bundle, store: Store, score: ScoreProgram | ChunkedScoreProgram,
                 adapt: AdaptProgram | None,
                 trusted_key=None):
        self._bundle, self._store, self._score, self._adapt = bundle, store, score, adapt
        m = bundle.manifest
        self.shapes = m.shapes
        self._chunked = isinstance(score, ChunkedScoreProgram)
        # the item rows: the bundle's decoded table, or (large catalogs) the score program's own, read back from it
        self._table = score.table if self._chunked else bundle.table
        if self._table is None or self._table.shape != (m.shapes.N, m.shapes.d):
            raise BundleError("the bundle's item table is missing or not (N, d)")
        self._neg_vecs = np.ascontiguousarray(self._table[np.asarray(m.negatives, dtype=np.int64)])
        # adapt.pte's inputs that outlive one call, as tensors once (each from_numpy per call cost ~0.8 us)
        self._neg_t = torch.from_numpy(self._neg_vecs)
        self._head0_t = torch.from_numpy(np.array(bundle.head0, dtype=np.float32))
        self._adapt_scene_np = np.zeros(m.shapes.F, dtype=np.float32)
        self._adapt_scene_t = torch.from_numpy(self._adapt_scene_np)
        # adapted heads not yet in the store: {user_id: (serial, event_seq, scene key, head bytes)}. Heads are a
        # cache rebuilt by replay, so they ride along with the next durable write (an event's transaction) or
        # `close`, instead of a SQLite transaction inside `recommend` (see `_adapt_user`).
        self._pending_heads: dict[str, tuple] = {}
        self._query_scene = m.adapt_scene == "query"
        self._right_aligned = m.history_align == "right"
        # score.pte's optional `table` input, shared, not copied (large catalogs: the table is inside score.pte)
        self._table_t = None if self._chunked else torch.from_numpy(self._table)
        self._nb = m.neighbors  # the item-item term joins forward's cached offset, then `rank` ranks
        self._by_k, self._pop = m.by_history, bundle.popularity  # so do the weights by history length
        self._ob, self._ob_pack, self._ob_rows = m.onboarding, None, None  # and the onboarding term, once a pack is set
        if (self._nb is not None or self._by_k is not None or self._ob is not None) \
                and (self._chunked or not score.has_rank):
            raise BundleError("the bundle's item-item term (neighbors), weights by history length (by_history) or "
                              "onboarding term need score.pte's rank method"
                              + (", which a large-catalog (chunked) score.pte lacks" if self._chunked else ""))
        self._clock = SceneClock(bundle.scene_spec)
        self._scene_np = np.zeros(self.shapes.F, dtype=np.float32)
        self._scene_t = torch.from_numpy(self._scene_np)
        self._tz = None  # the device's time zone (`open`); None: the bundle's offset
        self._users: OrderedDict[str, UserState] = OrderedDict()
        self._lock = threading.RLock()
        self._closed = False
        self.catalog = catalog_digest(bundle.item_ids)  # what a trending pack and a catalog delta are bound to
        self._pack: TrendingPack | None = None
        self._deltas = CatalogDeltas(bundle, self._table, m.shapes, self._chunked, self.catalog, trusted_key)
        self._install_catalog(self._deltas.state())
        self._set_trend(self._initial_pack())
        self._nb_pack, self._nb_table = None, bundle.neighbors  # a stored neighbour pack replaces the bundle's table
        stored = store.get_neighbor_pack() if self._nb is not None else None
        if stored is not None:
            try:
                pack = NeighborPack.from_bytes(stored)
                _check_nb_pack(pack, self._nb, self.catalog, m.shapes.N, pack.at, None)
                self._nb_pack, self._nb_table = pack, (pack.ids, pack.weights)
            except (BundleError, InputError):  # one for another bundle's term or catalog: dropped
                pass
        self._restore_onboarding()  # the stored onboarding pack likewise (packs.py)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, bundle_dir: str | Path, state_path: str | Path, trusted_key, tz=None) -> "Recommender":
        """Verify `bundle_dir` with `trusted_key` (Ed25519 public key PEM path or bytes), open the state database
        and load both programs. `BundleError` for any untrusted or unusable bundle (including a serial older than
        one this state has accepted), `StateError` for an unusable database. `tz`: the device's time zone (UTC
        offset in hours or a zoneinfo name) for every scene; None: the bundle's fixed offset.
        A new bundle: `close`, then `open` it with the same `state_path` (events kept, heads re-adapted)."""
        _check_path(bundle_dir, "bundle_dir"), _check_path(state_path, "state_path")
        if tz is not None:
            shift_for(tz, 0.0, 0.0)  # a bad tz fails here (InputError), not at the first recommend
        try:  # the bundle is verified and its programs loaded before the state file is touched (or created)
            bundle = open_bundle(bundle_dir, trusted_key)
            m = bundle.manifest
            score = load_score_program(bundle.programs["score"], m.programs["score"], m.shapes)
            adapt = load_adapt_program(bundle)
        except MetaRecRuntimeError:
            raise
        except Exception as e:  # nothing bare escapes: whatever broke, it broke while reading the bundle
            raise BundleError(f"bundle {bundle_dir} cannot be used: {e}") from e
        store = Store(state_path)
        try:
            store.accept_serial(m.serial)  # the rollback check; only once the bundle is proven usable
            rec = cls(bundle, store, score, adapt, trusted_key=trusted_key)
            rec._tz = tz
            state = rec._deltas.load(store)  # every stored delta of this serial, verified again
            if state is not None:
                rec._install_catalog(state)
            return rec
        except MetaRecRuntimeError:
            store.close(discard=True)  # a refused bundle leaves no new state file behind
            raise
        except Exception as e:
            store.close(discard=True)
            raise BundleError(f"bundle {bundle_dir} cannot be used: {e}") from e

    def _initial_pack(self) -> TrendingPack | None:
        stored = self._store.get_trending()
        if stored is not None:
            try:
                pack = TrendingPack.from_json(stored)
                if not pack.catalog or pack.catalog == self.catalog:  # a pack for an older catalog is dropped
                    return pack
            except BundleError:  # a pack we wrote ourselves cannot be malformed unless the disk lied; drop it
                pass
        return self._bundle.trending

    def _tz_shift(self, ts: float, tz) -> float:
        return 0.0 if tz is None else shift_for(tz, ts, self._bundle.scene_spec.utc_offset_hours)

    # -- public API -----------------------------------------------------------------------------------------------
    @property
    def serial(self) -> int:
        return self._bundle.serial

    def record(self, user_id: str, item_id: str, timestamp: float, event_id: str | None = None) -> None:
        """Append one interaction; returns only once it is durable. Duplicate event_id: no-op (other content:
        InputError)."""
        with self._lock:
            self._check_open()
            _check_id(user_id, "user_id")
            _check_id(item_id, "item_id")
            if item_id not in self._cat.index:
                raise InputError(f"unknown item_id {item_id!r}: not in this bundle's catalog")
            ts = _check_time(timestamp, "timestamp")
            eid = uuid.uuid4().hex if event_id is None else _check_id(event_id, "event_id")
            pending = self._pending_heads.pop(user_id, None)  # this user's head goes stale with this event
            heads = [(u, *h) for u, h in self._pending_heads.items()]
            try:
                added = self._store.add_event(eid, user_id, item_id, ts, heads=heads)
            except BaseException:
                if pending is not None:
                    self._pending_heads[user_id] = pending
                raise
            self._pending_heads.clear()  # written with the event, in its (durable) transaction
            if not added and pending is not None:  # a duplicate changes nothing: the head is still current
                self._store.put_head(user_id, *pending)
            if added:
                self._users.pop(user_id, None)

    @property
    def retired(self) -> frozenset[str]:
        """Item ids retired by catalog deltas: never recommended again (their events stay valid)."""
        return frozenset(self.item_ids[i] for i in self._cat.retired)

    @property
    def delta_seq(self) -> int:
        """The seq of the last catalog delta applied to this bundle (0: none); the next must be this + 1."""
        return self._deltas.seq

    def add_items(self, delta_path: str | Path) -> None:
        """Apply a signed catalog delta (`<delta>` + `<delta>.sig`, from `metarec catalog add|retire`): its new
        items are scored, recorded, excluded and explained like the bundle's own from now on, its retired items are
        never recommended again. Returns once the delta is durable (kept in the state database, re-verified on
        every open). `BundleError` (nothing changed) for a delta signed by another key, made for another bundle
        serial or catalog, replayed or out of order (seq must be `delta_seq + 1`), adding an id already in the
        catalog, retiring an unknown one, or whose program does not fit this bundle."""
        _check_path(delta_path, "delta_path")
        with self._lock:
            self._check_open()
            self._install_catalog(self._deltas.add(delta_path, self._store))

    def recommend(self, user_id: str, now: float, k: int = 10, tz=None) -> list[Recommendation]:
        """Top-k items for `user_id` in the scene at `now` (unix seconds), excluding what the user recorded.

        `tz`: the device's time zone for the scene (hour, weekday, holiday): a UTC offset in hours (e.g. 5.5) or a
        zoneinfo name (e.g. "Europe/Paris", daylight saving followed); default the one given to `open`, else the
        bundle's fixed offset. `k` is at most `min(k_max, catalog size)` (`metarec export --k-max`)."""
        with self._lock:
            self._check_open()
            _check_id(user_id, "user_id")
            now = _check_time(now, "now")
            top = min(self.shapes.k_max, self.shapes.N)
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= top:
                raise InputError(f"k must be an int in [1, {top}] (this bundle's top-k capacity k_max="
                                 f"{self.shapes.k_max}, catalog {self.shapes.N}; export with --k-max for more), "
                                 f"got {k!r}")
            u = self._users.get(user_id)
            if u is None:
                u = self._load_user(user_id)
            else:
                self._users.move_to_end(user_id)
            self._clock.fill(now + self._tz_shift(now, self._tz if tz is None else tz), self._scene_np)
            scene_key = self._scene_np.tobytes()
            if u.head_scene != b"" and (u.head is None or (self._query_scene and u.head_scene != scene_key)):
                self._adapt_user(user_id, u)
            if u.args_head is not u.head or u.args_trend is not self._trend:  # built once per head / trend pack
                named = {"head": u.head, "hist_vecs": u.hist_vecs, "hist_mask": u.hist_mask,
                         "scene": self._scene_t, "trend": self._trend, "exclude": u.exclude, "table": self._table_t,
                         **self._t_named}
                u.args, u.args_head, u.args_trend = [named[n] for n in self._score.order], u.head, self._trend
                u.rank_key = None
            if self._chunked:
                return self._recommend_chunked(u, int(k))
            try:
                if u.rank_key == scene_key:  # same head, history, trend and scene: only the table product + top-k
                    scores_t, ids_t = self._score.rank_bound(u.rank_args)
                else:
                    out = self._score.execute_bound(u.args)
                    scores_t, ids_t = out[0], out[1]
                    if len(out) == 4:
                        self._keep_rank_inputs(u, out[2], out[3], scene_key)
                        # forward's top-k lacks them (the onboarding term only once a pack is set)
                        if self._nb is not None or self._by_k is not None or self._ob_rows is not None:
                            scores_t, ids_t = self._score.rank_bound(u.rank_args)
            except Exception as e:
                raise BundleError(f"score program failed: {e}") from e
            if self._delta_scorers:
                scores_t, ids_t = self._cat.merge(u, scores_t, ids_t, scene_key, self._delta_trend, self._scene_t)
            return self._results(u, scores_t, ids_t, int(k))

    def _recommend_chunked(self, u: UserState, k: int) -> list[Recommendation]:
        """The large-catalog call: the user's items at -inf in the shared t buffer for this one call."""
        t, idx = self._t_np, u.idx
        try:
            t[idx] = -np.inf
            scores_t, ids_t = self._score.execute_bound(u.args)
            out = self._results(u, scores_t, ids_t, k)  # reads the program's output views before anything else
        except MetaRecRuntimeError:
            raise
        except Exception as e:
            raise BundleError(f"score program failed: {e}") from e
        finally:
            t[idx] = self._trend_np[idx]
        return out

    def history(self, user_id: str) -> list[Event]:
        """The user's recorded events, ordered by timestamp (ties by arrival)."""
        with self._lock:
            self._check_open()
            _check_id(user_id, "user_id")
            return [Event(eid, item, ts) for eid, item, ts, _ in self._store.events(user_id)]

    def forget(self, user_id: str) -> None:
        """Erase the user's events and head (the database overwrites the freed pages)."""
        with self._lock:
            self._check_open()
            _check_id(user_id, "user_id")
            self._pending_heads.pop(user_id, None)  # never write a forgotten user's head back
            self._store.forget(user_id)
            self._users.pop(user_id, None)
            self._score.unbind()  # score.pte may still hold the user's input list bound

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._users.clear()
                try:
                    self._flush_heads()
                finally:
                    self._store.close()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StateError("this Recommender is closed")

    def _install_catalog(self, st: CatalogState) -> None:
        """Serve `st` from now on (computed whole beforehand: a refused delta never gets here)."""
        self._cat, self.item_ids = st, st.item_ids
        self._results, self._delta_scorers = st.explain.results, st.scorers  # the hot path's: one attribute each
        self._users.clear()  # every cached user's exclude mask and `because` codes have the old catalog's size
        self._score.unbind()
        self._set_trend(self._pack)

    def _set_trend(self, pack: TrendingPack | None) -> None:
        n, total = self.shapes.N, self._cat.n_total
        self._pack = pack
        vec = np.zeros(total, dtype=np.float32) if pack is None else pack.log_counts(self._cat.index, total)
        self._trend_np = vec
        self._trend = torch.from_numpy(vec[:n])  # score.pte's; each delta program takes its slice of the rest
        self._delta_trend = [torch.from_numpy(vec[n + o:n + o + len(sc_n)]) for o, sc_n in self._cat.spans]
        self._trend_code = (vec > 0).astype(np.uint8).tobytes()
        self._t_named = {}
        if self._chunked:  # score.pte's t inputs: views of one buffer, trend everywhere but during a call
            self._t_np = vec.copy()
            edges = self._score.chunks
            self._t_named = {f"t{c}": torch.from_numpy(self._t_np[None, a:b])
                             for c, (a, b) in enumerate(zip(edges[:-1], edges[1:]))}
        for user in [u for u, st in self._users.items() if st.because_labels is TREND_LABELS]:
            del self._users[user]  # they explain items by the old trend: rebuild lazily

    def _load_user(self, user_id: str) -> UserState:
        """Build a user's hot-path inputs from the store, with the stored head if it is still valid."""
        sh, b, cat = self.shapes, self._bundle, self._cat
        events = self._store.events(user_id)
        seq = max((e[3] for e in events), default=0)
        # Items the current catalog lacks (dropped by a newer bundle) and times an older runtime let through stay in
        # the log but are not used: one such event never breaks the user.
        known = [e for e in events if e[1] in cat.index and _TIME_RANGE[0] <= e[2] <= _TIME_RANGE[1]]
        idx = np.asarray([cat.index[e[1]] for e in known], dtype=np.int64)
        last_ts = max((e[2] for e in known), default=None)
        hist_np, mask_np = self._slots(idx, sh.L)
        # the bundle's items, then every delta's; large catalogs (no deltas): score.pte's t carries exclusions
        exclude = np.zeros(0 if self._chunked else cat.n_total, dtype=np.float32)
        if not self._chunked:
            exclude[idx] = 1.0
            exclude[cat.retired_idx] = 1.0  # retired items sink like recorded ones
        u = UserState(seq, idx, last_ts, hist_np, mask_np, exclude[:sh.N], *cat.explain.codes(idx, self._trend_code))
        if cat.retired:
            u.excluded = u.excluded | cat.retired
        u.delta_exclude = [torch.from_numpy(exclude[sh.N + o:sh.N + o + len(ids)]) for o, ids in cat.spans]
        bk = self._by_k
        if self._nb_table is not None and len(idx):
            nb = self._nb
            w = at_length(bk.term, len(idx), nb.weight) if bk is not None else nb.weight
            if w > 0:
                u.neighbor = neighbor_term(*self._nb_table, idx, nb.last, nb.decay, w, sh.N)
        if self._pop is not None:
            u.pop_w = at_length(bk.popularity, len(idx), 0.0)
        if self._ob_rows is not None:
            u.onboard = (onboarding_weight(self._ob.weight, len(idx)), onboarding_row(len(idx)))
        if len(idx) == 0:  # nothing to adapt on: phi0 in every scene
            u.head, u.head_scene = torch.from_numpy(b.head0.copy()), b""
        else:
            row = self._store.get_head(user_id)
            if row is not None and row[0] == b.serial and row[1] == seq and len(row[3]) == sh.P * 4:
                head = np.frombuffer(row[3], dtype="<f4").astype(np.float32)
                if np.all(np.isfinite(head)):
                    u.head, u.head_scene, u.stored_seq = torch.from_numpy(head), row[2], seq
        self._users[user_id] = u
        if len(self._users) > self._MAX_CACHED_USERS:
            self._users.popitem(last=False)
        return u

    def _keep_rank_inputs(self, u: UserState, vec: np.ndarray, offset: np.ndarray, scene_key: bytes) -> None:
        """Copy forward's user vector and offset (views of the program's output memory) into the user's own
        arrays, which score.pte's rank method takes until the head, history, trend pack or scene changes."""
        if u.rank_args is None:
            u.vec_np, u.offset_np = np.empty_like(vec), np.empty_like(offset)
            named = {"user_vec": torch.from_numpy(u.vec_np), "offset": torch.from_numpy(u.offset_np),
                     "table": self._table_t}
            u.rank_args = [named[n] for n in self._score.rank_order]
        np.copyto(u.vec_np, vec)
        np.copyto(u.offset_np, offset)
        if u.neighbor is not None:
            u.offset_np[u.neighbor[0]] += u.neighbor[1]
        if u.pop_w:
            u.offset_np[:len(self._pop)] += u.pop_w * self._pop
        if u.onboard is not None and u.onboard[0]:
            u.offset_np += u.onboard[0] * self._ob_rows[u.onboard[1]]
        u.rank_key = scene_key

    def _adapt_user(self, user_id: str, u: UserState) -> None:
        """Adapt phi0 on the user's events with adapt.pte (scene per `adapt_scene`; phi0 itself when the bundle has
        no adapt program); the head goes to the store
        with the serial, deferred (`_pending_heads`): heads are a cache, so a crash before the next event or
        `close` only costs one re-adaptation, while a write here cost a SQLite transaction per stale user."""
        scene = self._adapt_scene_np
        if self._query_scene:
            scene[:] = self._scene_np
            key = scene.tobytes()
        else:
            self._clock.fill(u.last_ts + self._tz_shift(u.last_ts, self._tz), scene)
            key = b"last_event"
        if self.shapes.S == self.shapes.L:
            target, tmask = u.hist_vecs, u.hist_mask
        else:
            target, tmask = (torch.from_numpy(a) for a in self._slots(u.idx, self.shapes.S))
        inputs = {"theta0": self._head0_t, "hist_vecs": u.hist_vecs, "hist_mask": u.hist_mask,
                  "scene": self._adapt_scene_t, "target_vecs": target, "target_mask": tmask, "neg_vecs": self._neg_t}
        try:
            head = self._bundle.head0.copy() if self._adapt is None else self._adapt.adapt(inputs)
        except Exception as e:
            raise BundleError(f"adapt program failed: {e}") from e
        if not np.all(np.isfinite(head)):  # a diverged step must not poison the store; phi0 is a safe answer
            head = self._bundle.head0.copy()
        if u.stored_seq != u.seq:  # a re-adaptation for a new scene alone stays in memory: no write per query
            self._pending_heads[user_id] = (self._bundle.serial, u.seq, key, head.astype("<f4").tobytes())
            u.stored_seq = u.seq
        u.head, u.head_scene = torch.from_numpy(head), key

    def _flush_heads(self) -> None:
        """Write the deferred heads (one transaction, not fsynced: see Store.put_head)."""
        if self._pending_heads:
            heads, self._pending_heads = self._pending_heads, {}
            self._store.put_heads([(u, *h) for u, h in heads.items()])

    def _slots(self, idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The last `size` items' vectors in time order, aligned per the manifest's `history_align`."""
        keep = idx[-size:]
        vecs = np.zeros((size, self.shapes.d), dtype=np.float32)
        mask = np.zeros(size, dtype=np.float32)
        rows = slice(size - len(keep), size) if self._right_aligned else slice(0, len(keep))
        vecs[rows] = self._cat.table[keep]
        mask[rows] = 1.0
        return vecs, mask
