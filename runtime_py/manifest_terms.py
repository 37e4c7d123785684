"""The bundle contract, manifest part 1b: the field checks every manifest block uses, and the optional terms the
runtimes add to score.pte's cached offset before `rank` (the item-item term, `neighbors`; weights by history
length, `by_history`; the onboarding term, `onboarding`). manifest.py holds the manifest and re-exports these names, so a reader imports them there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


NEIGHBOR_KINDS = ("transition", "cooc")


@dataclasses.dataclass(frozen=True)
class NeighborSpec:
    """The item-item term (runtime_py/neighbors.py): `file` holds each item's `m` neighbours (int32 indices, -1 =
    none, then float16 weights, row-major (N, m)), or is "" when the table comes in a neighbour pack only (the
    server's statistics: `Recommender.set_neighbors`; until one is set the term is off); the last `last` history
    items add their rows with weight decay**age, and the sum, divided by its standard deviation over the catalog, times `weight` joins the score."""

    file: str
    m: int
    last: int
    decay: float
    weight: float
    kind: str

    def __post_init__(self) -> None:
        check(isinstance(self.file, str), "neighbors.file must be a str ('' = the table comes in a pack)")
        check(is_int(self.m) and 1 <= self.m <= 256, "neighbors.m must be an int in [1, 256]")
        check(is_int(self.last) and 1 <= self.last <= 64, "neighbors.last must be an int in [1, 64]")
        for name in ("decay", "weight"):
            v = getattr(self, name)
            check(is_number(v) and math.isfinite(v) and v > 0,
                   f"neighbors.{name} must be a finite number > 0")
        check(self.decay <= 1, "neighbors.decay must be <= 1")
        check(self.kind in NEIGHBOR_KINDS, f"neighbors.kind {self.kind!r} unknown; known: {NEIGHBOR_KINDS}")


MAX_LENGTHS = 16  # history-length buckets a HistoryWeights may hold


def at_length(values: tuple, k: int, default: float) -> float:
    """The entry of `values` for a user with `k` known events: min(max(k, 1), len) - 1 (the last covers every
    longer history); `default` when `values` is empty. Both runtimes and the sdk's scorer index so."""
    return float(values[min(max(int(k), 1), len(values)) - 1]) if values else float(default)


@dataclasses.dataclass(frozen=True)
class HistoryWeights:
    """Weights by the user's history length K (the user's events the catalog knows; entry `at_length`):
    `term`: the item-item term's weight (replaces neighbors.weight; 0 = off at that length; empty = neighbors.weight
    at every length); `popularity`: the weight of the catalog's popularity feature (`file`: float16 little-endian
    (N,), sdk/neighbors.py log_popularity) added to bundle items' scores (empty = none, and `file` is "").
    Why: a user's first events are a sign-up page's popular items, later ones follow sequences (ML-1M)."""

    term: tuple[float, ...] = ()
    popularity: tuple[float, ...] = ()
    file: str = ""

    def __post_init__(self) -> None:
        for name, lo, hi in (("term", 0.0, 64.0), ("popularity", -64.0, 64.0)):
            v = getattr(self, name)
            check(isinstance(v, (list, tuple)) and len(v) <= MAX_LENGTHS,
                   f"by_history.{name} must be a list of at most {MAX_LENGTHS} numbers")
            check(all(is_number(x) and math.isfinite(x) and lo <= x <= hi for x in v),
                  f"by_history.{name} values must be finite, in [{lo}, {hi}]")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        check(isinstance(self.file, str), "by_history.file must be a str")
        check(bool(self.file) == bool(self.popularity), "by_history.file is set exactly when popularity is")
        check(bool(self.term or self.popularity), "by_history holds term or popularity weights (else leave it out)")


ONBOARDING_ROWS = 11  # an onboarding pack's rows: history lengths K = 0..10, the last one also for longer histories


def onboarding_weight(weights: tuple, k: int) -> float:
    """The onboarding term's weight for a user with `k` known events: entry min(k, len - 1), K = 0 first (a new user
    has its own entry: the term reads the sign-up flow's first step there). Both runtimes and the sdk index so."""
    return float(weights[min(max(int(k), 0), len(weights) - 1)]) if weights else 0.0


def onboarding_row(k: int) -> int:
    """The onboarding pack row a user with `k` known events reads (both runtimes and the sdk's scorer)."""
    return min(max(int(k), 0), ONBOARDING_ROWS - 1)


@dataclasses.dataclass(frozen=True)
class OnboardingSpec:
    """The onboarding term (runtime_py/onboarding.py): an onboarding pack holds, per history length K (row
    `onboarding_row(K)`), the server's counts of items other users took as their event number K - span .. K + span
    (0-based) in the `window_days` before the pack's time; weight(K) * log1p(count) joins bundle items' scores.
    `weight` is indexed by `onboarding_weight` (entry min(K, len - 1), K = 0 first; 0 = off at that length). Until the app sets a pack the term is off.
    Why: a new user's first events follow the app's sign-up flow, and the users who signed up lately show it."""

    weight: tuple[float, ...]
    span: int
    window_days: float

    def __post_init__(self) -> None:
        v = self.weight
        check(isinstance(v, (list, tuple)) and 1 <= len(v) <= MAX_LENGTHS,
              f"onboarding.weight must be a list of 1..{MAX_LENGTHS} numbers")
        check(all(is_number(x) and math.isfinite(x) and 0.0 <= x <= 64.0 for x in v),
              "onboarding.weight values must be finite, in [0, 64]")
        check(any(x > 0 for x in v), "onboarding.weight is 0 at every length (leave the block out)")
        object.__setattr__(self, "weight", tuple(float(x) for x in v))
        check(is_int(self.span) and 0 <= self.span <= 64, "onboarding.span must be an int in [0, 64]")
        check(is_number(self.window_days) and math.isfinite(self.window_days) and 0 < self.window_days <= 366,
              "onboarding.window_days must be a number in (0, 366]")
