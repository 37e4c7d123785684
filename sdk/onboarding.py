"""The onboarding term's server side (manifest `onboarding`, runtime_py/onboarding.py): what other users took at
each history length lately, as counts (`EventLog.onboarding_counts`) and as the signed pack a server ships.
The sdk's scorer reads the same counts from the log at each query's time, so it ranks as the runtimes do with the
pack of that moment (docs/decisions/onboarding.md).
"""
from __future__ import annotations

import numpy as np

from metarec.runtime.manifest import ONBOARDING_ROWS, onboarding_row
from metarec.sdk.catalog import id_counts

DAY = 86400.0


def onboarding_feature(log, t: float, user: int, k: int, spec) -> np.ndarray:
    """(N,) log1p of the counts a user with `k` events reads (its pack row), other users' events before t."""
    return np.log1p(log.onboarding_counts(t, user, onboarding_row(k), spec.span, spec.window_days * DAY))


def pack_rows(log, t: float, user: int, spec, item_ids) -> list[dict]:
    """The pack's rows at t ({item id: count} per K = 0..ONBOARDING_ROWS-1, zero counts left out), without `user`'s
    events (-1: everyone's, what a server ships)."""
    rows = []
    for k in range(ONBOARDING_ROWS):
        c = log.onboarding_counts(t, user, k, spec.span, spec.window_days * DAY)
        rows.append(id_counts(item_ids, c.astype(np.int64)))
    return rows
