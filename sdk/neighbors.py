"""Item statistics of the fit users' events: neighbour tables for the score's item-item term
(runtime_py/neighbors.py), and the popularity prior and co-occurrence vectors training starts from (sdk/train.py).

Two kinds, the two item-item baselines of PROTOCOL v1, cut to each item's top `m` for the phone:
- "transition": P(next = j | previous = i) over fit users' consecutive events (the transition baseline);
- "cooc": cosine of binary co-occurrence, c(i, j) / sqrt(n_i n_j) (item-kNN).
Export decides on validation users whether either pays and with what weight (export/select.py).
"""
from __future__ import annotations

import numpy as np

NEIGHBOR_M = 20  # neighbours kept per item: ML-100K's 1,682 items -> 202 KB; shipped only where it pays
LAST, DECAY = 3, 0.5  # the transition baseline's: the last 3 items, each older one at half the weight


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """(N,) log1p(count) centred over the items with a fit event (0 for the others): the popularity baseline's
    signal in the bias. The id biases start at 0 and move < 1 at the outer rate, while log counts span ~5 units;
    without it a catalog whose trend counts are sparse (few users a week) ranks below popularity."""
    x = np.log1p(np.asarray(counts, np.float64))
    seen = counts > 0
    if seen.any():
        x[seen] -= x[seen].mean()
    x[~seen] = 0.0
    return x.astype(np.float32)


def cooc_vectors(ds, fit_users: np.ndarray, dim: int) -> np.ndarray:
    """(N, dim) item vectors whose dot products approximate item-kNN's cosine co-occurrence among fit users:
    item-kNN is the best personal signal on this data, so the table starts there instead of at zero."""
    keep = np.isin(ds.user, fit_users)
    x = np.zeros((ds.n_users, ds.n_items), np.float32)
    x[ds.user[keep], ds.item[keep]] = 1.0
    c = x.T @ x
    deg = np.sqrt(np.diag(c)) + 1.0
    c = c / deg[:, None] / deg[None, :]
    np.fill_diagonal(c, 0.0)
    lam, vec = np.linalg.eigh(c.astype(np.float64))
    top = np.argsort(-lam)[:dim]
    v = vec[:, top] * np.sqrt(np.clip(lam[top], 0, None))[None, :]
    scale = np.linalg.norm(v, axis=1)
    return (v / max(float(scale[scale > 0].mean()), 1e-8)).astype(np.float32) if (scale > 0).any() else \
        v.astype(np.float32)


def _top_m(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, m) int32 with -1 padding, weights (n, m) float32): each row's m largest values."""
    order = np.lexsort((cols, -vals, rows))  # by row, value descending, column for ties
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - start[rows]
    keep = rank < m
    ids = np.full((n, m), -1, np.int32)
    w = np.zeros((n, m), np.float32)
    ids[rows[keep], rank[keep]] = cols[keep]
    w[rows[keep], rank[keep]] = vals[keep]
    return ids, w


def build_neighbors(ds, users: np.ndarray, kind: str, m: int = NEIGHBOR_M) -> tuple[np.ndarray, np.ndarray]:
    """The (N, m) neighbour table of `kind` from the events of `users` (never the evaluated users)."""
    n = ds.n_items
    per_user = ds.user_events()
    if kind == "transition":
        prev, nxt = [], []
        for u in np.asarray(users):
            it = ds.item[per_user[u]]
            prev.append(it[:-1])
            nxt.append(it[1:])
        prev, nxt = np.concatenate(prev or [[]]).astype(np.int64), np.concatenate(nxt or [[]]).astype(np.int64)
        key, cnt = np.unique(prev * n + nxt, return_counts=True)
        r, c = key // n, key % n
        tot = np.bincount(r, weights=cnt, minlength=n)
        return _top_m(r, c, cnt / tot[r], n, m)
    if kind == "cooc":
        from scipy.sparse import csr_matrix

        keep = np.isin(ds.user, np.asarray(users))
        x = csr_matrix((np.ones(int(keep.sum()), np.float32), (ds.user[keep], ds.item[keep])),
                       shape=(ds.n_users, n))
        x.data[:] = 1.0  # binary: a repeated pair counts once
        c = (x.T @ x).tocoo()
        deg = np.asarray(x.sum(0)).ravel()
        off = c.row != c.col
        r, k, v = c.row[off].astype(np.int64), c.col[off].astype(np.int64), c.data[off].astype(np.float64)
        return _top_m(r, k, v / np.sqrt(deg[r] * deg[k]), n, m)
    raise ValueError(f"neighbour kind {kind!r} unknown; known: 'transition', 'cooc'")
