"""The item-item term of the score: what co-occurrence or transitions after the user's last items add.

A low-rank prior cannot hold every item-item link of a large catalog (docs/decisions/neighbors.md: on a 9,125-item
MovieLens the prior alone sits below a transition baseline); export ships each item's top-m neighbours when the
validation users say they pay (export/select.py), and both the sdk's eager scorer and the runtimes add

    term = weight * c / std(c),   c = sum over the last `last` history items h (newest first, age a)
                                      of decay**a * row(h),

c a sparse (N,) vector (row(h): h's neighbours and their weights), std over the whole catalog. The term is sparse,
so the runtime adds it to score.pte's cached per-item offset and ranks with the rank method.
"""
from __future__ import annotations

import numpy as np


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
