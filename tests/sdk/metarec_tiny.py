"""Tiny synthetic datasets for the model / meta / train tests (seconds, no files)."""
from __future__ import annotations

import numpy as np

from metarec.sdk.data import build_dataset


def tiny_dataset(n_users: int = 40, n_items: int = 30, per_user: int = 12, seed: int = 0):
    """Users with two planted tastes (even / odd items) and time-sorted events over a few weeks."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    t0 = 880_000_000.0
    for u in range(n_users):
        start = t0 + u * 3600 * 7
        taste = np.arange(u % 2, n_items, 2)
        seq = rng.choice(taste, size=per_user, replace=False)
        for p, i in enumerate(seq):
            users.append(u)
            items.append(int(i))
            ts.append(start + p * 600.0)
    genres = np.zeros((n_items, 3), np.float32)
    genres[np.arange(n_items), np.arange(n_items) % 3] = 1.0
    return build_dataset("tiny", users, items, ts, item_ids=np.arange(n_items).astype(str), item_genres=genres,
                         item_year=np.linspace(1990, 1998, n_items).astype(np.float32))
