"""What `Recommender.recommend` and `history` return, and `because`: why each recommended item is there.

`because` comes from item vectors, not from the score: for a user with history, the recent item (of their 64 latest)
whose vector is closest (cosine) to the recommended item's; for a user without, the closest interest prototype; for
a bundle without prototypes, whether the trending pack counts the item. An `Explainer` serves one catalog (the
bundle's items plus those of catalog deltas, catalog_state.py builds it) and keeps per catalog what does not depend
on the user: unit-normalised rows (a small catalog's, all of them) and one prototype code byte per item.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .user_state import UserState

TREND_LABELS = ["popular", "trending"]  # compared by identity: a user explained by the trend pack
BECAUSE_ITEMS = 64  # `because` considers the user's 64 most recent distinct items (codes fit in one byte)


class Recommendation(NamedTuple):
    """One recommended item. `because` says why, and `because_kind` what `because` is:

    - "item": an item id the user recorded (of their 64 latest), the one whose vector is closest to this item's;
    - "prototype": a user without history: the label of the interest prototype closest to this item (the
      manifest's `prototype_labels`, e.g. "p0");
    - "trend": a bundle without prototypes: "trending" or "popular", from the current trending pack.
    """

    item_id: str  # the catalog's raw id
    score: float  # the model's score; higher ranks first (comparable within one call only)
    because: str  # an item id or a label, per because_kind
    because_kind: str  # "item" | "prototype" | "trend"


# Recommendation(a, b, c) runs NamedTuple's Python-level __new__ (~0.35 us); tuple.__new__ builds the same object
# directly (10 per recommend: ~2.5 us saved a call)
_new = tuple.__new__


class Event(NamedTuple):
    event_id: str
    item_id: str
    timestamp: float


class Explainer:
    """`because` over one catalog: `because` codes for a user (`codes`), and the explained top-k (`results`)."""

    __slots__ = ("item_ids", "n", "_table", "_unit_table", "_proto_labels", "proto_code")

    def __init__(self, item_ids: tuple[str, ...], table: np.ndarray, prototypes: np.ndarray | None,
                 prototype_labels, keep_unit: bool):
        self.item_ids, self.n, self._table = item_ids, len(item_ids), table
        # unit rows: kept for the whole catalog when it is small, else computed for the rows asked for
        self._unit_table = _unit(table) if keep_unit else None
        self._proto_labels, self.proto_code = prototype_labels, None
        if prototypes is not None and len(prototypes) <= 256:
            proto_unit = _unit(prototypes)
            step = 1 << 16  # in blocks: no (N, d) temporary for a large catalog
            self.proto_code = b"".join((self.unit_rows(slice(a, a + step)) @ proto_unit.T)
                                       .argmax(axis=1).astype(np.uint8).tobytes() for a in range(0, len(table), step))

    def codes(self, idx: np.ndarray, trend_code: bytes) -> tuple[np.ndarray | bytes, list[str]]:
        """For every item, which of the user's recent items (cosine of item vectors) best supports it; for a user
        without history, which prototype; without prototypes, whether the item is trending. One byte per item."""
        recent = list(dict.fromkeys(idx[::-1].tolist()))[:BECAUSE_ITEMS]
        if recent:  # explained lazily in `results`, for the returned items only
            return np.asarray(recent, dtype=np.int64), [self.item_ids[j] for j in recent]
        if self.proto_code is not None:
            return self.proto_code, list(self._proto_labels)
        return trend_code, TREND_LABELS

    def unit_rows(self, rows) -> np.ndarray:
        """Unit-normalised item rows (index array, list or slice) for `because`."""
        if self._unit_table is not None:
            return self._unit_table[rows]
        return _unit(self._table[rows])

    def results(self, u: UserState, scores_t, ids_t, k: int) -> list[Recommendation]:
        """The k best non-excluded items of score.pte's top-k for user state `u`, each with its `because`.

        score.pte sinks excluded items below every real score, so the first k ids are the answer unless the user
        excluded nearly the whole catalog; only then the slow filtering path runs (~3 us saved per call)."""
        item_ids, labels, codes, n = self.item_ids, u.because_labels, u.because_code, self.n
        ids = ids_t[:k].tolist()
        if u.excluded.isdisjoint(ids) and 0 <= min(ids) and max(ids) < n:
            picked = list(zip(ids, scores_t[:k].tolist()))
        else:
            picked = []
            for i, s in zip(ids_t.tolist(), scores_t.tolist()):
                if i in u.excluded or not 0 <= i < n:
                    continue
                picked.append((i, s))
                if len(picked) == k:
                    break
        if isinstance(codes, np.ndarray):  # recent items: the most similar one (cosine of item vectors) explains
            if not picked:
                return []
            # A user's answer changes little between calls: the explanation of an item is computed once per cached
            # user (<= N small ints; 8 us of numpy per call otherwise, a third of the runtime's own time)
            cache = u.because_of
            missing = [i for i, _ in picked if i not in cache]
            if missing:
                if u.recent_unit_t is None:
                    u.recent_unit_t = np.ascontiguousarray(self.unit_rows(codes).T)
                cache.update(zip(missing, (self.unit_rows(missing) @ u.recent_unit_t).argmax(axis=1).tolist()))
            return [_new(Recommendation, (item_ids[i], s, labels[cache[i]], "item")) for i, s in picked]
        kind = "trend" if labels is TREND_LABELS else "prototype"
        return [_new(Recommendation, (item_ids[i], s, labels[codes[i]], kind)) for i, s in picked]


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero), float32."""
    n = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(n > 0, n, 1.0)).astype(np.float32)
