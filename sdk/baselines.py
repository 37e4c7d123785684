"""Reference baselines of PROTOCOL v1, all behind the one `Recommender` contract (sdk.protocol)."""
from __future__ import annotations

import numpy as np

from metarec.sdk.data import Dataset
from metarec.sdk.protocol import EventLog, Query


class Popularity:
    """Per-item count of other users' events strictly before the target's timestamp."""

    name = "popularity"

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "Popularity":
        return self  # nothing to learn: counts come with the query, time-honestly

    def score(self, q: Query) -> np.ndarray:
        return q.popularity.astype(np.float64)


class Trending:
    """Per-item count of other users' events in [t - 7 days, t); ties broken by popularity."""

    name = "trending"

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "Trending":
        return self

    def score(self, q: Query) -> np.ndarray:
        # lexicographic (trend, popularity): counts are integers, so scaling by max+1 keeps the order exact
        return q.trending * (q.popularity.max() + 1.0) + q.popularity
