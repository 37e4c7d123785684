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


def user_item_csr(ds, users: np.ndarray):
    """(n_users, n_items) binary float32 CSR of `users`' events: a repeated (user, item) pair counts once."""
    from scipy.sparse import csr_matrix

    keep = np.isin(ds.user, np.asarray(users))
    x = csr_matrix((np.ones(int(keep.sum()), np.float32), (ds.user[keep], ds.item[keep])),
                   shape=(ds.n_users, ds.n_items))
    x.data[:] = 1.0  # the constructor sums repeated pairs
    return x


DENSE_EIGH_MAX = 4096  # items up to which the dense solver runs (seconds); beyond, its O(n^3) took 6 min at 14k items


def cooc_vectors(ds, fit_users: np.ndarray, dim: int) -> np.ndarray:
    """(N, dim) item vectors whose dot products approximate item-kNN's cosine co-occurrence among fit users:
    item-kNN is the best personal signal on this data, so the table starts there instead of at zero.
    The top `dim` eigenpairs of the cosine matrix: dense up to DENSE_EIGH_MAX items, else Lanczos on the sparse
    user x item events without forming the N x N matrix (docs/decisions/cooc-init.md). Each vector's largest entry
    is positive, and one BLAS thread: LAPACK's eigenvector signs followed its thread count (ML-100K: 7 of 32 columns
    flipped with 2 threads), so `make demo` and a run with OMP_NUM_THREADS=1 had trained different priors."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _cooc_vectors(ds, fit_users, dim)


def _cooc_vectors(ds, fit_users: np.ndarray, dim: int) -> np.ndarray:
    if ds.n_items > DENSE_EIGH_MAX and dim < ds.n_items:
        lam, vec = _cooc_top_sparse(user_item_csr(ds, fit_users), dim)
    else:
        keep = np.isin(ds.user, fit_users)
        x = np.zeros((ds.n_users, ds.n_items), np.float32)
        x[ds.user[keep], ds.item[keep]] = 1.0
        c = x.T @ x
        deg = np.sqrt(np.diag(c)) + 1.0
        c = c / deg[:, None] / deg[None, :]
        np.fill_diagonal(c, 0.0)
        lam, vec = np.linalg.eigh(c.astype(np.float64))
    top = np.argsort(-lam)[:dim]
    v = _signed(vec[:, top]) * np.sqrt(np.clip(lam[top], 0, None))[None, :]
    scale = np.linalg.norm(v, axis=1)
    return (v / max(float(scale[scale > 0].mean()), 1e-8)).astype(np.float32) if (scale > 0).any() else \
        v.astype(np.float32)


def _cooc_top_sparse(x, k: int):
    """(eigenvalues (k,), eigenvectors (n, k)): the k largest of the dense path's matrix D^-1 X'X D^-1 with a zero
    diagonal for the binary user x item events `x`, over the items with events (the others' rows are 0). Few such
    items: dense on them; else Lanczos, applied as X' (X v) so memory stays O(events). Signs: `_signed`."""
    from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh

    n = x.shape[1]
    cnt = np.asarray(x.sum(axis=0), np.float64).ravel()  # X'X's diagonal
    seen = np.flatnonzero(cnt > 0)
    xs, cs = x[:, seen], cnt[seen]
    inv = 1.0 / (np.sqrt(cs) + 1.0)
    m = len(seen)
    if m <= DENSE_EIGH_MAX or k >= m:
        c = (xs.T @ xs).toarray().astype(np.float64) * inv[:, None] * inv[None, :]
        np.fill_diagonal(c, 0.0)
        lam_s, vec_s = np.linalg.eigh(c)
        top = np.argsort(-lam_s)[:k]
        lam_s, vec_s = lam_s[top], vec_s[:, top]
    else:
        def mv(v):
            v = np.asarray(v, np.float64).reshape(-1)
            return inv * (xs.T @ (xs @ (inv * v))) - cs * inv * inv * v

        op = LinearOperator((m, m), matvec=mv, dtype=np.float64)
        try:  # a fixed start: the same vectors each run
            lam_s, vec_s = eigsh(op, k=k, which="LA", v0=np.full(m, 1.0 / np.sqrt(m)))
        except ArpackError as e:
            raise ValueError(f"the co-occurrence start found no {k} vectors over {m} items ({e}): too few fit "
                             "events for it; set TrainConfig.cooc_init to false") from e
    lam, vec = np.zeros(k), np.zeros((n, k))
    lam[:len(lam_s)] = lam_s
    vec[seen, :vec_s.shape[1]] = vec_s
    return lam, vec


def _signed(vec: np.ndarray) -> np.ndarray:
    """Each column times the sign of its largest-magnitude entry: an eigenvector's sign is LAPACK's and ARPACK's
    choice (it followed the BLAS thread count and build), the start must not be."""
    k = vec.shape[1]
    flip = np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(k)]) if len(vec) else np.ones(k)
    return vec * np.where(flip == 0, 1.0, flip)[None, :]


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
        x = user_item_csr(ds, users)
        c = (x.T @ x).tocoo()
        deg = np.asarray(x.sum(0)).ravel()
        off = c.row != c.col
        r, k, v = c.row[off].astype(np.int64), c.col[off].astype(np.int64), c.data[off].astype(np.float64)
        return _top_m(r, k, v / np.sqrt(deg[r] * deg[k]), n, m)
    raise ValueError(f"neighbour kind {kind!r} unknown; known: 'transition', 'cooc'")


def _top_row(vals: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (m,) int32 with -1 padding, weights (m,) float32): one row's m largest positive values, the same order
    as `_top_m` (value descending, column for ties)."""
    nz = np.flatnonzero(vals > 0)
    order = np.lexsort((nz, -vals[nz]))[:m]
    ids = np.full(m, -1, np.int32)
    w = np.zeros(m, np.float32)
    ids[:len(order)] = nz[order]
    w[:len(order)] = vals[nz[order]]
    return ids, w


class LiveNeighbors:
    """The rows of a server's neighbour pack at time t: each item's top-m neighbours of `kind` from the events OTHER
    users made strictly before t (the time rule of the item-item baselines, whose statistics they are).

    A pack holds every item's row; a query's term reads only the rows of its last items, so evaluation builds those
    rows alone (the ranking is the one the full pack gives; tests/sdk/test_neighbors_live.py checks it)."""

    def __init__(self, kind: str, m: int = NEIGHBOR_M):
        from metarec.sdk.baselines import _FirstTouches, _LogCache, _Transitions

        if kind not in ("transition", "cooc"):
            raise ValueError(f"neighbour kind {kind!r} unknown; known: 'transition', 'cooc'")
        self.kind, self.m = kind, m
        self._cache = _LogCache(_Transitions if kind == "transition" else _FirstTouches)
        self._memo: dict = {}
        self._before_key, self._before = None, None

    def truncated(self, m: int) -> "LiveNeighbors":
        """The same rows cut to their first m neighbours, sharing this one's work (top-m is a prefix of top-M)."""
        if not 1 <= m <= self.m:
            raise ValueError(f"m={m} must be in [1, {self.m}]")
        return _Truncated(self, m)

    def row(self, log, s: int, t: float, exclude_user: int) -> tuple[np.ndarray, np.ndarray]:
        key = (id(log), int(s), float(t), int(exclude_user))
        if key not in self._memo:
            if len(self._memo) > 100_000:
                self._memo.clear()
            self._memo[key] = _top_row(self._values(log, int(s), t, exclude_user), self.m)
        return self._memo[key]

    def _values(self, log, s: int, t: float, exclude_user: int) -> np.ndarray:
        n = log.n_items
        st = self._cache.get(log)
        if self.kind == "transition":
            c = st.row(s, t, exclude_user, n)
            tot = c.sum()
            return c / tot if tot > 0 else c
        key = (id(log), float(t), int(exclude_user))
        if self._before_key != key:  # a query's rows share one cut of the log (3 rows: 3x fewer passes over it)
            users, items = st.before(log, t, exclude_user)
            self._before_key, self._before = key, (users, items, np.bincount(items, minlength=n).astype(np.float64))
        users, items, deg = self._before
        if deg[s] == 0:
            return np.zeros(n)
        mine = np.zeros(int(users.max()) + 1 if len(users) else 1, bool)
        mine[users[items == s]] = True
        c = np.bincount(items[mine[users]], minlength=n).astype(np.float64)
        c[s] = 0.0
        out = np.zeros(n)
        np.divide(c, np.sqrt(deg[s] * deg), out=out, where=deg > 0)
        return out

    def rows(self, log, history: np.ndarray, t: float, exclude_user: int, last: int = LAST
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids (R, m), weights (R, m), the last `last` history items as row numbers, oldest first): the pack's rows
        at t that a term over `history` reads (runtime_py/neighbors.py takes them as its table)."""
        h = np.asarray(history, np.int64)[::-1][:last][::-1]
        uniq, local = np.unique(h, return_inverse=True)
        ids = np.full((len(uniq), self.m), -1, np.int32)
        w = np.zeros((len(uniq), self.m), np.float32)
        for r, s in enumerate(uniq):
            ids[r], w[r] = self.row(log, int(s), t, exclude_user)
        return ids, w, local

    def table(self, log, history: np.ndarray, t: float, exclude_user: int, last: int = LAST
              ) -> tuple[np.ndarray, np.ndarray]:
        """(ids (N, m), weights (N, m)): the pack at t with the rows a term over `history` reads filled."""
        rid, rw, local = self.rows(log, history, t, exclude_user, last)
        h = np.asarray(history, np.int64)[::-1][:last][::-1]
        ids = np.full((log.n_items, self.m), -1, np.int32)
        w = np.zeros((log.n_items, self.m), np.float32)
        ids[h], w[h] = rid[local], rw[local]
        return ids, w


class _Truncated(LiveNeighbors):
    def __init__(self, full: LiveNeighbors, m: int):
        self.kind, self.m, self._full = full.kind, m, full

    def row(self, log, s: int, t: float, exclude_user: int) -> tuple[np.ndarray, np.ndarray]:
        ids, w = self._full.row(log, s, t, exclude_user)
        return ids[:self.m], w[:self.m]


def pack_table(ds, at: float, kind: str, m: int, catalog_ids) -> tuple[np.ndarray, np.ndarray]:
    """A neighbour pack's table at `at` (`metarec neighbors`): each item's top-m neighbours of `kind` from every
    user's events strictly before `at`, indexed by the bundle's catalog `catalog_ids` (events on items outside it
    count; such neighbours are dropped from the rows)."""
    from metarec.sdk.protocol import subset_events

    if not np.isfinite(at):
        raise ValueError(f"neighbour pack time must be finite, got {at}")
    ds_at = subset_events(ds, ds.ts < at)
    ids_ds, w_ds = build_neighbors(ds_at, np.arange(ds.n_users), kind, m)
    index = {str(x): i for i, x in enumerate(catalog_ids)}
    to_b = np.array([index.get(str(x), -1) for x in ds.item_ids], np.int64)
    ids = np.full((len(index), m), -1, np.int32)
    w = np.zeros((len(index), m), np.float32)
    for j in np.flatnonzero(to_b >= 0):
        keep = ids_ds[j] >= 0
        keep[keep] = to_b[ids_ds[j][keep]] >= 0
        n = int(keep.sum())
        ids[to_b[j], :n] = to_b[ids_ds[j][keep]]
        w[to_b[j], :n] = w_ds[j][keep]
    return ids, w
