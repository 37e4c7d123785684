"""The catalog an open bundle serves: its own items plus those of the catalog deltas applied to it.

Catalog deltas (`Recommender.add_items`, catalog.py reads one): the new items get indices N, N+1, ... after the
bundle's; each delta's score program scores them (once per user state and scene, like forward, then reused), and
the scores are merged with score.pte's top-k (`CatalogState.merge`); retired items are excluded for every user.
Nothing of this runs without deltas. A large-catalog bundle (chunked score.pte) takes no deltas.

`CatalogDeltas` owns the applied deltas: it checks a new one against the bundle and the earlier ones, persists it
(durable before it applies) and verifies the stored ones again on open. Each change yields a whole new
`CatalogState`, computed before anything is installed, so a refused delta changes nothing; the Recommender
installs it and drops every cached user (their masks and `because` codes have the old catalog's size).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .bundle import Bundle
from .bundle_codecs import load_public_key
from .catalog import CatalogDelta, DeltaScorer
from .errors import BundleError, StateError
from .manifest import DELTA_INPUTS, SHAPE_LIMITS, Shapes
from .results import Explainer
from .store import Store

if TYPE_CHECKING:
    from .user_state import UserState


@dataclasses.dataclass(frozen=True)
class CatalogState:
    """Everything that depends on the catalog (ids, vectors, `because`, the delta programs' spans)."""

    item_ids: tuple[str, ...]  # the bundle's, then each delta's in seq order
    index: dict[str, int]  # item id -> index into item_ids
    table: np.ndarray  # (n_total, d) item rows
    explain: Explainer
    spans: list[tuple[int, tuple[str, ...]]]  # per delta with items: (its first index - N, its ids)
    scorers: list[DeltaScorer]  # per span: the delta's score program
    tables: list[torch.Tensor]  # per span: its rows (the delta program's `table` input)
    retired: frozenset[int]  # indices of retired items
    retired_idx: np.ndarray  # the same, sorted, for masks
    delta_ids: np.ndarray  # N .. n_total - 1: the delta items' indices, in score order

    @property
    def n_total(self) -> int:
        return len(self.item_ids)

    def merge(self, u: UserState, scores_t, ids_t, scene_key: bytes, trends: list, scene_t: torch.Tensor):
        """score.pte's top-k merged with every delta item's score for user state `u` (each delta program runs once
        per user state and scene, like forward; a repeat call reuses the scores), best first. `trends`: each delta
        program's slice of the trend vector."""
        if u.delta_args is not u.args or u.delta_scene != scene_key:
            parts = []
            for scorer, trend, table, excl in zip(self.scorers, trends, self.tables, u.delta_exclude):
                named = {"head": u.head, "hist_vecs": u.hist_vecs, "hist_mask": u.hist_mask, "scene": scene_t,
                         "trend": trend, "exclude": excl, "table": table}
                parts.append(scorer.run([named[n] for n in DELTA_INPUTS]))
            u.delta_scores, u.delta_args, u.delta_scene = np.concatenate(parts), u.args, scene_key
        ids = np.concatenate([np.asarray(ids_t, dtype=np.int64), self.delta_ids])
        scores = np.concatenate([np.asarray(scores_t, dtype=np.float32), u.delta_scores])
        order = np.argsort(-scores, kind="stable")
        return scores[order], ids[order]


class CatalogDeltas:
    """The catalog deltas applied to one open bundle, in seq order, and the catalog state they make."""

    def __init__(self, bundle: Bundle, table: np.ndarray, shapes: Shapes, chunked: bool, catalog: str,
                 trusted_key=None):
        self._bundle, self._table, self._shapes, self._chunked = bundle, table, shapes, chunked
        self._catalog = catalog  # catalog_digest of the bundle's ids: what a delta is bound to
        self._key = None if trusted_key is None else load_public_key(trusted_key)  # verifies deltas
        self.applied: list[tuple[CatalogDelta, DeltaScorer | None]] = []

    @property
    def seq(self) -> int:
        """The seq of the last applied delta (0: none); the next must be this + 1."""
        return self.applied[-1][0].seq if self.applied else 0

    def add(self, delta_path: str | Path, store: Store) -> CatalogState:
        """Verify, check and persist the delta at `delta_path`; the state to install with it applied."""
        if self._key is None:
            raise BundleError("this Recommender has no trusted key (open it with Recommender.open)")
        delta = CatalogDelta.load(delta_path, self._key)
        scorer = self.check(delta, self.applied)
        state = self.state(self.applied + [(delta, scorer)])
        store.add_delta(delta.bundle_serial, delta.seq, delta.raw, delta.sig)  # durable before it applies
        self.applied.append((delta, scorer))
        return state

    def load(self, store: Store) -> CatalogState | None:
        """Apply the deltas stored for this bundle's serial, each verified again (signature, binding, seq); one that
        fails was changed outside this runtime: `StateError`. None: there are none."""
        if self._key is None:
            return None
        applied, serial = [], self._bundle.serial
        for seq, raw, sig in store.deltas(serial):
            try:
                delta = CatalogDelta.from_signed(raw, sig, self._key)
                scorer = self.check(delta, applied)
            except BundleError as e:
                raise StateError(f"state database holds catalog delta {seq} of serial {serial} that no longer "
                                 f"verifies ({e}); it was changed outside the runtime") from e
            if delta.seq != seq:
                raise StateError(f"state database holds catalog delta {delta.seq} under seq {seq} (corrupt)")
            applied.append((delta, scorer))
        if not applied:
            return None
        state = self.state(applied)
        self.applied = applied
        return state

    def check(self, delta: CatalogDelta, applied: list) -> DeltaScorer | None:
        """The delta's scorer if it fits this bundle after the `applied` deltas; `BundleError` otherwise."""
        serial = self._bundle.serial
        if self._chunked:
            raise BundleError("catalog deltas are not supported on a large-catalog bundle (chunked score.pte): "
                              "export a new bundle with the new items instead")
        if delta.bundle_serial != serial:
            raise BundleError(f"catalog delta is for bundle serial {delta.bundle_serial}, this bundle is {serial}")
        if delta.catalog != self._catalog:
            raise BundleError("catalog delta was made for another catalog (its `catalog` differs from this bundle's)")
        expect = (applied[-1][0].seq if applied else 0) + 1
        if delta.seq < expect:
            raise BundleError(f"catalog delta seq {delta.seq} is already applied (a replay); the next is {expect}")
        if delta.seq > expect:
            raise BundleError(f"catalog delta seq {delta.seq} is out of order: the next is {expect}")
        known = set(self._bundle.item_ids).union(*(d.items for d, _ in applied))
        dup = [i for i in delta.items if i in known]
        if dup:
            raise BundleError(f"catalog delta adds {len(dup)} id(s) already in the catalog, e.g. {dup[0]!r}")
        unknown = [i for i in delta.retire if i not in known]
        if unknown:
            raise BundleError(f"catalog delta retires {len(unknown)} id(s) not in the catalog, e.g. {unknown[0]!r}")
        if len(known) + len(delta.items) > SHAPE_LIMITS["N"]:
            raise BundleError(f"catalog deltas would grow the catalog beyond {SHAPE_LIMITS['N']} items")
        if not delta.items:
            return None
        delta.table(self._shapes.d)  # sized against this bundle's d
        return DeltaScorer(delta.program, self._shapes, len(delta.items))

    def state(self, deltas=()) -> CatalogState:
        """The catalog state for the bundle plus `deltas` ((delta, scorer) pairs, in seq order)."""
        b, n, d = self._bundle, self._shapes.N, self._shapes.d
        ids, tables, spans, scorers, retired_ids = list(b.item_ids), [self._table], [], [], set()
        for delta, scorer in deltas:
            if delta.items:
                spans.append((len(ids) - n, delta.items))
                scorers.append(scorer)
                tables.append(delta.table(d))
                ids.extend(delta.items)
            retired_ids.update(delta.retire)
        table = tables[0] if len(tables) == 1 else np.ascontiguousarray(np.concatenate(tables), dtype=np.float32)
        index = {item: i for i, item in enumerate(ids)}
        ids = tuple(ids)
        retired = frozenset(index[i] for i in retired_ids)
        return CatalogState(
            item_ids=ids, index=index, table=table,
            explain=Explainer(ids, table, b.prototypes, b.manifest.prototype_labels, keep_unit=not self._chunked),
            spans=spans, scorers=scorers, tables=[torch.from_numpy(t) for t in tables[1:]], retired=retired,
            retired_idx=np.asarray(sorted(retired), dtype=np.int64),
            delta_ids=np.arange(n, len(ids), dtype=np.int64))
