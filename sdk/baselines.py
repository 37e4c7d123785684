"""Reference baselines of PROTOCOL v1, all behind the one `Recommender` contract (sdk.protocol).

Event-based baselines (item-kNN, transition) are time-honest: each query recomputes its statistics from the
events OTHER users made strictly before the target's timestamp, read from `q.log`. ALS and MF are fit on the
fit users' events (the usual offline prior) and fold the cold user in from the support alone. The sequential
models (SASRec / GRU4Rec-style, sdk/baselines_seq.py) are fit on the fit users' item sequences the same way and read
the support in time order.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from metarec.sdk.baselines_seq import SeqRec
from metarec.sdk.data import Dataset
from metarec.sdk.neighbors import user_item_csr
from metarec.sdk.protocol import (HEADLINE_KS, EventLog, Query, Recommender, evaluate_users, run_protocol,
                                  split_users, summarize_next_item)


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


class Onboarding:
    """Per-item count of other users' events in [t - 7 days, t) at the query's history position (K +- 3, sdk.protocol
    `EventLog.onboarding_counts`): what users with as many events as this one took lately. Ties by the 7-day
    count, then popularity."""

    name = "onboarding"

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "Onboarding":
        return self

    def score(self, q: Query) -> np.ndarray:
        c = q.log.onboarding_counts(q.t, q.user, len(q.support_items))
        m = q.popularity.max() + 1.0
        return (c * (q.trending.max() + 1.0) + q.trending) * m + q.popularity


# ---------------------------------------------------------------------------------------------- item-kNN
class _FirstTouches:
    """Rows of a log where a user touches an item for the first time: the binary user-item sets, in time order."""

    def __init__(self, log: EventLog):
        key = log.user.astype(np.int64) * log.n_items + log.item
        _, first = np.unique(key, return_index=True)  # the log is time-sorted: the lowest row is the first touch
        self.rows = np.sort(first)
        self.user = log.user[self.rows]
        self.item = log.item[self.rows]
        self.n_users = int(log.user.max()) + 1 if len(log.user) else 0

    def before(self, log: EventLog, t: float, exclude_user: int) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) of first touches by users other than `exclude_user` strictly before t."""
        hi = int(np.searchsorted(self.rows, log.cut(t), side="left"))
        u, i = self.user[:hi], self.item[:hi]
        other = u != exclude_user
        return u[other], i[other]


class _LogCache:
    """Per-log precomputation, rebuilt when a query carries another log (e.g. the new-item run's)."""

    def __init__(self, build: Callable[[EventLog], object]):
        self._build, self._log, self._value = build, None, None

    def get(self, log: EventLog):
        if log is not self._log:
            self._log, self._value = log, self._build(log)
        return self._value


class ItemKNN:
    """Item-item cosine over binary co-occurrence in other users' events before q.t; score = sum of similarities
    to the support items. K=0: popularity.

    cos(s, i) = c(s, i) / sqrt(n_s n_i) with c the number of users who touched both; summing over s is one pass:
    w_v = sum_{s in S, v touched s} 1/sqrt(n_s), score_i = sum_{v touched i} w_v / sqrt(n_i).
    pool "all": every other user's past (what PROTOCOL v1 allows a server); "fit": only the fit users' past (the
    co-occurrence an offline kNN is built from, cut at q.t), which is what the issue's reference figures match.
    """

    def __init__(self, pool: str = "all"):
        if pool not in ("all", "fit"):
            raise ValueError(f"pool {pool!r} unknown; known: 'all', 'fit'")
        self.pool = pool
        self.name = "item_knn" if pool == "all" else "item_knn_fitpool"
        self._cache = _LogCache(_FirstTouches)
        self._fit_mask = None

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "ItemKNN":
        self._cache.get(log)
        if self.pool == "fit":
            self._fit_mask = np.zeros(ds.n_users, bool)
            self._fit_mask[np.asarray(fit_users)] = True
        return self

    def score(self, q: Query) -> np.ndarray:
        if len(q.support_items) == 0:
            return q.popularity.astype(np.float64)
        ft = self._cache.get(q.log)
        users, items = ft.before(q.log, q.t, q.user)
        if self._fit_mask is not None:
            keep = self._fit_mask[users]
            users, items = users[keep], items[keep]
        n_items = len(q.popularity)
        n = np.bincount(items, minlength=n_items).astype(np.float64)
        inv = np.zeros(n_items)
        np.divide(1.0, np.sqrt(n), out=inv, where=n > 0)
        w_item = np.zeros(n_items)
        sup = np.unique(q.support_items)
        w_item[sup] = inv[sup]
        w_user = np.bincount(users, weights=w_item[items], minlength=max(ft.n_users, q.user + 1))
        return np.bincount(items, weights=w_user[users], minlength=n_items) * inv


# ---------------------------------------------------------------------------------------------- transition
class _Transitions:
    """Consecutive (previous item -> next item) pairs of each user, grouped by previous item, by time within."""

    def __init__(self, log: EventLog):
        order = np.lexsort((np.arange(len(log.ts)), log.user))  # per user, log (time) order
        same = log.user[order][1:] == log.user[order][:-1]
        a, b = order[:-1][same], order[1:][same]
        prev, nxt, ts, user = log.item[a], log.item[b], log.ts[b], log.user[b]
        g = np.lexsort((ts, prev))
        self.prev, self.next, self.ts, self.user = prev[g], nxt[g], ts[g], user[g]
        self.bounds = np.searchsorted(self.prev, np.arange(log.n_items + 1))

    def row(self, s: int, t: float, exclude_user: int, n_items: int) -> np.ndarray:
        """Counts of the items other users moved to right after `s`, for moves made strictly before t."""
        lo, hi = self.bounds[s], self.bounds[s + 1]
        hi = lo + int(np.searchsorted(self.ts[lo:hi], t, side="left"))
        keep = self.user[lo:hi] != exclude_user
        return np.bincount(self.next[lo:hi][keep], minlength=n_items).astype(np.float64)


class Transition:
    """Next-item transition probabilities P(next | s) from other users' consecutive events before q.t, summed over
    the last `last` support items with weights decay**age (most recent: 1). K=0: popularity."""

    def __init__(self, last: int = 3, decay: float = 0.5):
        if last < 1 or not 0 < decay <= 1:
            raise ValueError("need last >= 1 and 0 < decay <= 1")
        self.last, self.decay = last, decay
        self.name = f"transition{last}"
        self._cache = _LogCache(_Transitions)

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "Transition":
        self._cache.get(log)
        return self

    def score(self, q: Query) -> np.ndarray:
        if len(q.support_items) == 0:
            return q.popularity.astype(np.float64)
        tr = self._cache.get(q.log)
        n_items = len(q.popularity)
        out = np.zeros(n_items)
        for age, s in enumerate(q.support_items[::-1][:self.last]):
            row = tr.row(int(s), q.t, q.user, n_items)
            if row.sum() > 0:
                out += self.decay ** age * row / row.sum()
        return out


# ---------------------------------------------------------------------------------------------- ALS (implicit)
class ALS:
    """implicit's ALS fit on the fit users; a cold user is folded in from the support with implicit's own
    `recalculate_user` (the least-squares solve `recommend(..., recalculate_user=True)` uses). K=0: popularity."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 2.0, iterations: int = 15,
                 seed: int = 0, threads: int = 1):
        self.name = "als"
        self.params = dict(factors=factors, regularization=regularization, alpha=alpha, iterations=iterations,
                           seed=seed)
        self.threads = threads

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "ALS":
        from implicit.cpu.als import AlternatingLeastSquares

        from threadpoolctl import threadpool_limits

        p = self.params
        with threadpool_limits(1, "blas"):  # implicit's advice (it warns otherwise): its own threads, not OpenBLAS's
            self.model = AlternatingLeastSquares(factors=p["factors"], regularization=p["regularization"],
                                                 alpha=p["alpha"], iterations=p["iterations"],
                                                 random_state=p["seed"], num_threads=self.threads)
            self.model.fit(user_item_csr(ds, fit_users), show_progress=False)
        return self

    def fold_in(self, support_items: np.ndarray) -> np.ndarray:
        """The cold user's factor, solved from the support alone."""
        from scipy.sparse import csr_matrix

        items = np.unique(support_items)
        row = csr_matrix((np.ones(len(items), np.float32), (np.zeros(len(items), int), items)),
                         shape=(1, self.model.item_factors.shape[0]))
        return self.model.recalculate_user(0, row)

    def score(self, q: Query) -> np.ndarray:
        if len(q.support_items) == 0:
            return q.popularity.astype(np.float64)
        return self.model.item_factors @ self.fold_in(q.support_items).astype(np.float64)


# ---------------------------------------------------------------------------------------------- MF pretrain + fine-tune
class MFFineTune:
    """Softmax MF pretrained on the fit users; a cold user's vector starts at the prior u0 (mean user vector) and
    takes `steps` gradient steps on L(support) + alpha * ||u - u0||^2 with the item side frozen. K=0: the prior."""

    def __init__(self, dim: int = 32, epochs: int = 10, batch: int = 4096, lr: float = 0.02,
                 weight_decay: float = 1e-5, steps: int = 5, step_lr: float = 1.0, alpha: float = 0.1, seed: int = 0,
                 threads: int = 1):
        self.name = "mf_finetune"
        self.params = dict(dim=dim, epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay, steps=steps,
                           step_lr=step_lr, alpha=alpha, seed=seed)
        self.threads = threads

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "MFFineTune":
        import torch

        prev_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # a shared 2-core box: more threads only contend
        try:
            self._pretrain(ds, fit_users)
        finally:
            torch.set_num_threads(prev_threads)
        return self

    def _pretrain(self, ds: Dataset, fit_users: np.ndarray) -> None:
        import torch
        import torch.nn.functional as F

        p = self.params
        gen = torch.Generator().manual_seed(p["seed"])
        users = np.unique(np.asarray(fit_users))
        m = np.isin(ds.user, users)
        ev_u = torch.as_tensor(np.searchsorted(users, ds.user[m]))
        ev_i = torch.as_tensor(ds.item[m])
        U = (0.1 * torch.randn(len(users), p["dim"], generator=gen)).requires_grad_()
        E = (0.1 * torch.randn(ds.n_items, p["dim"], generator=gen)).requires_grad_()
        b = torch.zeros(ds.n_items, requires_grad=True)
        opt = torch.optim.Adam([U, E, b], lr=p["lr"], weight_decay=p["weight_decay"])
        batch = p["batch"]
        for _ in range(p["epochs"]):
            perm = torch.randperm(len(ev_u), generator=gen)
            for j in range(0, len(perm), batch):
                idx = perm[j:j + batch]
                loss = F.cross_entropy(F.linear(U[ev_u[idx]], E, b), ev_i[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.E, self.b = E.detach(), b.detach()
        self.u0 = U.detach().mean(0)

    def user_vector(self, support_items: np.ndarray):
        """u fine-tuned on the support: full-batch gradient steps on CE(support) + alpha ||u - u0||^2."""
        import torch
        import torch.nn.functional as F

        p = self.params
        u = self.u0.clone().requires_grad_()
        tgt = torch.as_tensor(np.asarray(support_items, np.int64))
        for _ in range(p["steps"]):
            logits = F.linear(u.expand(len(tgt), -1), self.E, self.b)
            loss = F.cross_entropy(logits, tgt) + p["alpha"] * (u - self.u0).pow(2).sum()
            (g,) = torch.autograd.grad(loss, u)
            u = (u - p["step_lr"] * g).detach().requires_grad_()
        return u.detach()

    def score(self, q: Query) -> np.ndarray:
        import torch

        u = self.u0 if len(q.support_items) == 0 else self.user_vector(q.support_items)
        with torch.no_grad():
            return (self.E @ u + self.b).double().numpy()


# ---------------------------------------------------------------------------------------------- z-score blends
def zscore(s: np.ndarray) -> np.ndarray:
    """(s - mean) / std over the catalog; a constant score becomes all zeros."""
    s = np.asarray(s, np.float64)
    sd = s.std()
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)


BLEND_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 11))  # weight of the last component; rest gets 1-a


class _CachedZ:
    """Component z-scores per query, computed once so that every grid point re-ranks the same queries."""

    def __init__(self, components: list):
        self.components, self._memo = components, {}

    def get(self, q: Query) -> np.ndarray:
        key = (q.user, len(q.support_items), q.t)
        if key not in self._memo:
            self._memo[key] = np.stack([zscore(c.score(q)) for c in self.components])
        return self._memo[key]


class _Weighted:
    def __init__(self, z: _CachedZ, w: np.ndarray, name: str = "blend"):
        self.z, self.w, self.name = z, np.asarray(w, np.float64), name

    def score(self, q: Query) -> np.ndarray:
        return self.w @ self.z.get(q)


class Blend:
    """score = sum_j w_j * zscore(score_j). Weights (two components: (1 - a, a), a on BLEND_GRID) are picked on
    validation users by the headline HR@10 with the components fit on train users; then refit on all fit users.

    `fit` uses only users in `fit_users`: train users = fit_users among split.train, validation users = fit_users
    among split.val (run_protocol passes train + validation users, so test users are never scored here).
    """

    def __init__(self, name: str, make_components: list[Callable[[], Recommender]], weights=None,
                 grid=BLEND_GRID):
        if len(make_components) != 2 and weights is None:
            raise ValueError("weight search is over two components; pass weights for more")
        self.name, self.make_components, self.grid = name, make_components, grid
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        self.fixed = weights is not None
        self.val_table: list[dict] = []

    def select_weights(self, ds: Dataset, train_users: np.ndarray, val_users: np.ndarray, log: EventLog) -> np.ndarray:
        """Grid search on validation users (headline HR@10 = mean over K=1..3; first best wins on ties)."""
        z = _CachedZ([mk().fit(ds, train_users, log) for mk in self.make_components])
        best, self.val_table = None, []
        for a in self.grid:
            w = np.array([round(1.0 - a, 6), a])
            res = evaluate_users(_Weighted(z, w), ds, val_users, log, ks=HEADLINE_KS)
            hr = summarize_next_item(res, ks=HEADLINE_KS)["headline"]["hr10"]
            self.val_table.append({"weights": w.tolist(), "val_hr10": hr})
            if best is None or hr > best[0]:
                best = (hr, w)
        return best[1]

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "Blend":
        fit_users = np.asarray(fit_users)
        if not self.fixed:
            split = split_users(ds)
            tr = np.intersect1d(split.train, fit_users)
            va = np.intersect1d(split.val, fit_users)
            if len(va) == 0 or len(tr) == 0:
                raise ValueError(f"{self.name}: weight selection needs train and validation users among fit_users")
            self.weights = self.select_weights(ds, tr, va, log)
        self.components = [mk().fit(ds, fit_users, log) for mk in self.make_components]
        return self

    def score(self, q: Query) -> np.ndarray:
        return sum(w * zscore(c.score(q)) for w, c in zip(self.weights, self.components) if w != 0)

    @property
    def params(self) -> dict:
        return {"weights": None if self.weights is None else self.weights.tolist(),
                "components": [mk().name for mk in self.make_components], "selected_on": "validation users",
                "grid": list(self.grid), "validation": self.val_table}


# ---------------------------------------------------------------------------------------------- registry + runs
BASELINES: dict[str, Callable[..., Recommender]] = {
    "popularity": Popularity,
    "trending": Trending,
    "item_knn": ItemKNN,
    "item_knn_fitpool": lambda: ItemKNN(pool="fit"),
    "als": ALS,
    "mf_finetune": MFFineTune,
    "transition3": lambda: Transition(last=3),
    "item_knn+trending": lambda: Blend("item_knn+trending", [ItemKNN, Trending]),
    "item_knn_fitpool+trending": lambda: Blend("item_knn_fitpool+trending",
                                               [lambda: ItemKNN(pool="fit"), Trending]),
    "als+trending": lambda seed=0: Blend("als+trending", [lambda: ALS(seed=seed), Trending]),
    "transition3+trending": lambda: Blend("transition3+trending", [lambda: Transition(last=3), Trending]),
    "onboarding": Onboarding,
    "item_knn+onboarding": lambda: Blend("item_knn+onboarding", [ItemKNN, Onboarding]),
    "transition3+onboarding": lambda: Blend("transition3+onboarding", [lambda: Transition(last=3), Onboarding]),
    # sequential (sdk/baselines_seq.py): torch models fit on the fit users' sequences, ~1 min each on ML-100K
    "sasrec": lambda seed=0: SeqRec("sasrec", seed=seed),
    "gru4rec": lambda seed=0: SeqRec("gru4rec", seed=seed),
    "sasrec+trending": lambda seed=0: Blend("sasrec+trending", [lambda: SeqRec("sasrec", seed=seed), Trending]),
}
SEEDED = ("als", "mf_finetune", "als+trending", "sasrec", "gru4rec", "sasrec+trending")  # the rest are deterministic: one run is every seed's run
SEEDS = (0, 1, 2)  # PROTOCOL v1: every figure is the mean of 3 training seeds


def make_baseline(name: str, seed: int | None = None) -> Recommender:
    """A fresh baseline by registry name (`seed` reaches the training of the seeded ones)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](seed=seed) if seed is not None and name in SEEDED else BASELINES[name]()


def _run_one(ds: Dataset, name: str, seed: int | None, progress: bool) -> dict:
    made: list = []

    def factory():
        m = make_baseline(name, seed)
        made.append(m)
        return m

    r = run_protocol(factory, ds, progress=progress, name=name)
    if getattr(made[0], "params", None) is not None:
        r["params"] = made[0].params
    if len(made) > 1 and getattr(made[1], "params", None) is not None:
        r["new_items"]["params"] = made[1].params
    return r


def _mean_runs(runs: list):
    """Element-wise mean of the numbers of several run_protocol results (same structure); the rest from the first."""
    a = runs[0]
    if isinstance(a, bool) or a is None or isinstance(a, str):
        return a
    if isinstance(a, (int, float)):
        return a if isinstance(a, int) else float(np.mean([r for r in runs]))
    if isinstance(a, dict):
        return {k: _mean_runs([r[k] for r in runs]) if k != "params" else [r[k] for r in runs] for k in a}
    if isinstance(a, list) and all(isinstance(r, list) and len(r) == len(a) for r in runs):
        return [_mean_runs([r[i] for r in runs]) for i in range(len(a))]
    return a


def run_baselines(ds: Dataset, names=None, progress: bool = True, seeds=SEEDS) -> dict[str, dict]:
    """run_protocol for each named baseline (all by default). Seeded baselines run once per seed and report the
    mean (intervals: mean of the per-seed bounds) plus `seed_runs` (each seed's headline) and the spread; every
    result carries the model's `params` (e.g. a blend's validation-chosen weights)."""
    names = list(BASELINES) if names is None else list(names)
    for n in names:
        if n not in BASELINES:
            raise ValueError(f"unknown baseline {n!r}; known: {', '.join(BASELINES)}")
    out = {}
    for n in names:
        if n not in SEEDED or len(seeds) <= 1:
            out[n] = _run_one(ds, n, seeds[0] if n in SEEDED and seeds else None, progress)
            out[n]["seeds"] = list(seeds[:1]) if n in SEEDED else "deterministic"
            continue
        runs = [_run_one(ds, n, s, progress) for s in seeds]
        r = _mean_runs(runs)
        hr = [x["headline"]["hr10"] for x in runs]
        nd = [x["headline"]["ndcg10"] for x in runs]
        lc = r.get("learning_curve")
        if lc:  # the speed of the mean curve (PROTOCOL: smallest K reaching 95% of Recall@10 at the largest K)
            ks = sorted(lc["recall10"], key=int)
            top = lc["recall10"][ks[-1]]["recall10"]
            lc["learning_speed_k"] = next((int(k) for k in ks if lc["recall10"][k]["recall10"] >= 0.95 * top), None)
        r["seeds"] = list(seeds)
        r["seed_runs"] = [{"seed": s, "headline": x["headline"], "new_items_hr10": x.get("new_items", {}).get("hr10")}
                          for s, x in zip(seeds, runs)]
        r["seed_spread"] = {"hr10": [min(hr), max(hr)], "ndcg10": [min(nd), max(nd)], "hr10_sd": float(np.std(hr))}
        out[n] = r
    return out
