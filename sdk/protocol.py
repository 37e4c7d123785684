"""PROTOCOL v1 (docs/protocol.md): the arrival-time split, the recommender contract and every accuracy figure.

Nothing else in the project computes HR@10 / NDCG@10 / Recall@10: baselines and the meta-learner all go through
`run_protocol` (or `evaluate_users` for choices on validation users), so their numbers compare directly.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Protocol as _TypingProtocol

import numpy as np
from tqdm.auto import tqdm

from metarec.runtime.config import VersionedConfig
from metarec.runtime.scene import SceneSpec, scene_features, scene_labels
from metarec.sdk.data import Dataset

PROTOCOL_VERSION = "v1"
KS = (0, 1, 2, 3, 5, 10)
HEADLINE_KS = (1, 2, 3)
TOPN = 10
WEEK = 7 * 86400.0
ONBOARDING_SPAN = 3  # history positions k-3..k+3 count as "at k": one position alone is too few events a week


# ---------------------------------------------------------------------------------------------- split
@dataclasses.dataclass(frozen=True)
class SplitConfig(VersionedConfig):
    """Users split by arrival (first event) time: earliest train, then validation, then test."""

    VERSION = 1
    version: int = 1
    train_frac: float = 0.7  # (float) share of users, earliest arrivals first, that are train users
    val_frac: float = 0.1  # (float) share of users after them that are validation users (the rest: test)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.train_frac < 1 and 0 <= self.val_frac < 1 and self.train_frac + self.val_frac < 1):
            raise ValueError("need 0 < train_frac, 0 <= val_frac and train_frac + val_frac < 1")


@dataclasses.dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _id_sort_key(ids: np.ndarray) -> np.ndarray:
    try:
        return ids.astype(np.int64)
    except ValueError:
        return np.argsort(np.argsort(ids))  # lexicographic rank


def split_users(ds: Dataset, cfg: SplitConfig = SplitConfig()) -> Split:
    """Sort users by first-event time (ties: user id); earliest 70% train, next 10% validation, last 20% test."""
    first = np.full(ds.n_users, np.inf)
    np.minimum.at(first, ds.user, ds.ts)
    order = np.lexsort((_id_sort_key(ds.user_ids), first))
    a = int(round(cfg.train_frac * ds.n_users))
    b = int(round((cfg.train_frac + cfg.val_frac) * ds.n_users))
    return Split(train=order[:a], val=order[a:b], test=order[b:])


# ---------------------------------------------------------------------------------------------- what a model may see
class EventLog:
    """All events in time order; answers "what did OTHER users do strictly before t" (the time rule)."""

    def __init__(self, ds: Dataset, keep: np.ndarray | None = None):
        keep = np.ones(ds.n_events, bool) if keep is None else keep
        self.n_items = ds.n_items
        self.user = ds.user[keep]
        self.item = ds.item[keep]
        self.ts = ds.ts[keep]
        self.rating = ds.rating[keep]
        order = np.argsort(self.user, kind="stable")
        self._by_user = order
        self._user_bounds = np.searchsorted(self.user[order], np.arange(ds.n_users + 1))

    def cut(self, t: float) -> int:
        """Number of events strictly before t."""
        return int(np.searchsorted(self.ts, t, side="left"))

    def user_rows(self, user: int) -> np.ndarray:
        return self._by_user[self._user_bounds[user]:self._user_bounds[user + 1]]

    def counts(self, t: float, exclude_user: int, window: float | None = None) -> np.ndarray:
        """Per-item event counts of users other than `exclude_user` in [t - window, t) (window None: all past)."""
        hi = self.cut(t)
        lo = 0 if window is None else int(np.searchsorted(self.ts, t - window, side="left"))
        c = self._prefix(hi) - self._prefix(lo) if hi > lo else np.zeros(self.n_items)
        own = self.user_rows(exclude_user)
        own = own[(own >= lo) & (own < hi)]
        if len(own):
            c -= np.bincount(self.item[own], minlength=self.n_items)
        return c

    def _prefix(self, i: int) -> np.ndarray:
        """(n_items,) float64 counts of the first i events: a stored sum every `_stride` events plus the rest (every
        query's popularity was a pass over the whole log: 13 s of ML-100K's export, O(events) per query on ML-1M)."""
        j = i // self._stride
        return self._sums[j] + np.bincount(self.item[j * self._stride:i], minlength=self.n_items)

    @functools.cached_property
    def _stride(self) -> int:
        # at least 4,096 events; more where the sums would pass 16 M cells (128 MB), e.g. over a 1 M-item catalog
        return max(4096, -(-len(self.item) * self.n_items // (1 << 24)))

    @functools.cached_property
    def _sums(self) -> np.ndarray:
        """(events // stride + 1, n_items) float64: the counts of the first 0, stride, 2 x stride, ... events."""
        b = self._stride
        n = len(self.item) // b
        out = np.zeros((n + 1, self.n_items))
        for j in range(n):
            out[j + 1] = out[j] + np.bincount(self.item[j * b:(j + 1) * b], minlength=self.n_items)
        return out

    @functools.cached_property
    def position(self) -> np.ndarray:
        """(n_events,) each event's 0-based index among its user's events (time order)."""
        pos = np.empty(len(self.user), np.int64)
        starts = self._user_bounds[:-1]
        pos[self._by_user] = np.arange(len(self.user)) - np.repeat(starts, np.diff(self._user_bounds))
        return pos

    def onboarding_counts(self, t: float, exclude_user: int, k: int, span: int = ONBOARDING_SPAN,
                          window: float = WEEK) -> np.ndarray:
        """Per-item counts of other users' events in [t - window, t) that were their user's event number k - span
        .. k + span (0-based): what users at a history of k events took lately (a sign-up flow's items)."""
        hi = self.cut(t)
        lo = int(np.searchsorted(self.ts, t - window, side="left"))
        m = (self.user[lo:hi] != exclude_user) & (np.abs(self.position[lo:hi] - int(k)) <= span)
        return np.bincount(self.item[lo:hi][m], minlength=self.n_items).astype(np.float64)

    def visible(self, t: float, exclude_user: int) -> np.ndarray:
        """Row indices of events other users made strictly before t."""
        rows = np.arange(self.cut(t))
        return rows[self.user[rows] != exclude_user]


@dataclasses.dataclass
class Query:
    """One cold-start query: what the device has seen (support) and when the next event happens (t)."""

    user: int
    support_items: np.ndarray  # (K,) item indices in time order
    support_ts: np.ndarray  # (K,)
    t: float  # the target's timestamp: scene and the time rule are taken here
    scene: np.ndarray  # (F,) scene features at t
    trending: np.ndarray  # (n_items,) 7-day counts of other users' events in [t - 7d, t)
    popularity: np.ndarray  # (n_items,) counts of other users' events before t
    log: EventLog  # for models that need more than counts; use log.visible(t, user) only


class Recommender(_TypingProtocol):
    """The one contract every model implements (baselines and the meta-learner alike)."""

    name: str

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog) -> "Recommender":
        """Learn from the events of `fit_users` (train users, or train + validation users for the test)."""

    def score(self, q: Query) -> np.ndarray:
        """Scores (n_items,) for the full catalog; higher is better. The evaluator removes the support items."""


def make_query(ds: Dataset, log: EventLog, user: int, rows: np.ndarray, k: int, t: float,
               trend_log: EventLog | None = None, spec: SceneSpec = SceneSpec()) -> Query:
    """Query for `user` whose support is the events `rows[:k]` (positions into ds), scored at time t."""
    tl = trend_log or log
    return Query(user=user, support_items=ds.item[rows[:k]], support_ts=ds.ts[rows[:k]], t=float(t),
                 scene=scene_features([t], spec)[0], trending=tl.counts(t, user, WEEK),
                 popularity=tl.counts(t, user), log=log)


# ---------------------------------------------------------------------------------------------- metrics
def rank_metrics(scores: np.ndarray, target: int, exclude: np.ndarray, n: int = TOPN) -> tuple[float, float]:
    """HR@n and NDCG@n of `target` with random tie-breaking in expectation (PROTOCOL v1 "Ties")."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if not np.isfinite(s[target]):
        raise ValueError("target score is not finite")
    s[exclude] = -np.inf
    st = s[target]
    g = int(np.count_nonzero(s > st))
    e = int(np.count_nonzero(s == st)) - 1
    if g >= n:
        return 0.0, 0.0
    ranks = np.arange(g + 1, min(n, g + e + 1) + 1)
    return len(ranks) / (e + 1), float(np.sum(1.0 / np.log2(ranks + 1))) / (e + 1)


def recall_at(scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray, n: int = TOPN) -> float:
    """Share of `targets` in the top n; the tie block at the n-th score shares the slots left in proportion."""
    s = np.asarray(scores, dtype=np.float64).copy()
    s[exclude] = -np.inf
    cand = s[np.isfinite(s)]
    if len(cand) <= n:
        return float(np.isfinite(s[targets]).sum()) / len(targets)
    vn = np.partition(cand, len(cand) - n)[len(cand) - n]  # the n-th highest score
    above = int(np.count_nonzero(s > vn))
    tied = int(np.count_nonzero(s == vn))
    st = s[targets]
    hits = np.count_nonzero(st > vn) + np.count_nonzero(st == vn) * (n - above) / tied
    return float(hits) / len(targets)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean over users (1,000 resamples, seed 0)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


# ---------------------------------------------------------------------------------------------- runs
def next_item_queries(ds: Dataset, log: EventLog, users: Iterable[int], ks=KS, trend_log: EventLog | None = None):
    """Yield (user, k, query, target item) for every next-item query of PROTOCOL v1."""
    per_user = ds.user_events()
    for u in users:
        rows = per_user[u]
        for k in ks:
            if len(rows) < k + 1:
                continue
            target_row = rows[k]
            yield u, k, make_query(ds, log, u, rows, k, ds.ts[target_row], trend_log), int(ds.item[target_row])


def evaluate_users(model: Recommender, ds: Dataset, users: Iterable[int], log: EventLog, ks=KS,
                   progress: bool = False, desc: str = "") -> dict:
    """Per-query HR/NDCG for next-item queries of `users` (used for test reports and validation choices)."""
    out = {"user": [], "k": [], "hr": [], "ndcg": [], "scene_changed": [], "target_scene": []}
    users = list(users)
    it = next_item_queries(ds, log, users, ks)
    n_ev = np.bincount(ds.user, minlength=ds.n_users)
    total = sum(1 for u in users for k in ks if n_ev[u] >= k + 1) if progress else None
    for u, k, q, target in tqdm(it, total=total, disable=not progress, desc=desc or getattr(model, "name", "")):
        if target in set(q.support_items.tolist()):
            continue  # a repeat of a support item cannot be recommended (support is excluded)
        hr, nd = rank_metrics(model.score(q), target, q.support_items)
        out["user"].append(u)
        out["k"].append(k)
        out["hr"].append(hr)
        out["ndcg"].append(nd)
        lab = scene_labels(np.r_[q.support_ts[-1:] if k else [q.t], q.t])
        out["scene_changed"].append(bool(k and lab[0] != lab[1]))
        out["target_scene"].append(q.scene)
    return {k: np.asarray(v) for k, v in out.items()}


def summarize_next_item(res: dict, ks=KS, headline=HEADLINE_KS) -> dict:
    """per_k table and the headline (K = 1..3 unless `headline` names other K) with bootstrap intervals over
    users."""
    per_k = {}
    for k in ks:
        m = res["k"] == k
        per_k[str(k)] = {"hr10": float(res["hr"][m].mean()) if m.any() else float("nan"),
                         "ndcg10": float(res["ndcg"][m].mean()) if m.any() else float("nan"),
                         "n": int(m.sum()), "hr10_ci": bootstrap_ci(res["hr"][m]),
                         "ndcg10_ci": bootstrap_ci(res["ndcg"][m])}
    hm = np.isin(res["k"], headline)
    users = np.unique(res["user"][hm])
    # per-user mean over the headline's K, so the bootstrap resamples users, not queries
    hr_u = np.array([res["hr"][hm & (res["user"] == u)].mean() for u in users])
    nd_u = np.array([res["ndcg"][hm & (res["user"] == u)].mean() for u in users])
    headline = {"hr10": float(hr_u.mean()), "hr10_ci": bootstrap_ci(hr_u), "ndcg10": float(nd_u.mean()),
                "ndcg10_ci": bootstrap_ci(nd_u), "n_users": int(len(users))}
    return {"per_k": per_k, "headline": headline}


def retention_ci(hr, user, changed, same, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile interval of HR@10(changed) / HR@10(same) over users resampled as bootstrap_ci does (a user's
    queries stay together): on real data a few dozen changed-scene queries make the ratio swing. NaN when more than
    5% of the resamples lack a query on one side or score HR 0 on the same side."""
    m = np.asarray(changed, bool) | np.asarray(same, bool)  # the users with a query on either side, as bootstrap_ci's
    if not (np.any(changed) and np.any(same)):
        return [float("nan"), float("nan")]
    hr, changed, same = np.asarray(hr, np.float64)[m], np.asarray(changed, bool)[m], np.asarray(same, bool)[m]
    ids, inv = np.unique(np.asarray(user)[m], return_inverse=True)
    per = [np.bincount(inv, weights=w, minlength=len(ids)) for w in (hr * changed, changed, hr * same, same)]
    idx = np.random.default_rng(seed).integers(0, len(ids), size=(n_boot, len(ids)))
    hc, nc, hs, ns = (p[idx].sum(1) for p in per)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (hc / nc) / (hs / ns)
    ratio = ratio[np.isfinite(ratio)]
    if len(ratio) < n_boot * 0.95:  # too many resamples without one side: no interval
        return [float("nan"), float("nan")]
    return [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))]


def scene_slices(res: dict, ks=HEADLINE_KS) -> dict:
    """HR@10 over the queries with K in `ks` (1..3 unless told) where the target's scene differs from the last support
    event's, and where not."""
    hm = np.isin(res["k"], ks)
    ch, same = hm & res["scene_changed"], hm & ~res["scene_changed"]
    hr_ch = float(res["hr"][ch].mean()) if ch.any() else float("nan")
    hr_same = float(res["hr"][same].mean()) if same.any() else float("nan")
    sc = np.stack(res["target_scene"]) if len(res["target_scene"]) else np.zeros((0, 15))
    wk, hol = (sc[:, 13] > 0) & hm, (sc[:, 14] > 0) & hm
    return {"changed": {"hr10": hr_ch, "n": int(ch.sum())}, "same": {"hr10": hr_same, "n": int(same.sum())},
            "retention": hr_ch / hr_same if same.any() and ch.any() and hr_same > 0 else float("nan"),
            "retention_ci": retention_ci(res["hr"], res["user"], ch, same) if "user" in res else [float("nan")] * 2,
            "weekend": {"hr10": float(res["hr"][wk].mean()) if wk.any() else float("nan"), "n": int(wk.sum())},
            "holiday": {"hr10": float(res["hr"][hol].mean()) if hol.any() else float("nan"), "n": int(hol.sum())}}


def learning_curve(model: Recommender, ds: Dataset, users: Iterable[int], log: EventLog, ks=KS,
                   progress: bool = False) -> dict:
    """Fixed targets (events 11..20, scored at event 11's time); support = the first K events."""
    per_user = ds.user_events()
    users = [u for u in users if len(per_user[u]) >= 20]
    rec = {k: [] for k in ks}
    for u in tqdm(users, disable=not progress, desc="learning curve"):
        rows = per_user[u]
        targets = ds.item[rows[10:20]]
        for k in ks:
            q = make_query(ds, log, u, rows, k, ds.ts[rows[10]])
            rec[k].append(recall_at(model.score(q), targets, q.support_items))
    # per_user (in `users` order) lets two models be compared paired over the same users (coldstart's twin test)
    curve = {str(k): {"recall10": float(np.mean(v)) if v else float("nan"), "recall10_ci": bootstrap_ci(v),
                      "n": len(v), "per_user": [float(x) for x in v]} for k, v in rec.items()}
    top = curve[str(max(ks))]["recall10"]
    speed = next((k for k in ks if curve[str(k)]["recall10"] >= 0.95 * top), None)
    return {"recall10": curve, "learning_speed_k": speed, "users": [int(u) for u in users]}


def withheld_items(ds: Dataset, frac: float = 0.1, seed: int = 0) -> np.ndarray:
    """Item indices withheld for the new-item run: default_rng(0).choice over the sorted raw ids."""
    ids = np.arange(ds.n_items)  # item index order is the sorted raw id order
    return np.sort(np.random.default_rng(seed).choice(ids, size=round(frac * len(ids)), replace=False))


def new_item_run(make_model: Callable[[], Recommender], ds: Dataset, split: Split, progress: bool = False) -> dict:
    """Item cold start: withheld items' events are invisible to fitting and to the model's log; only their
    attributes and counts (trending / popularity, as events happen) reach the model."""
    held = withheld_items(ds)
    is_held = np.zeros(ds.n_items, bool)
    is_held[held] = True
    keep = ~is_held[ds.item]
    full_log, vis_log = EventLog(ds), EventLog(ds, keep)
    model = make_model().fit(subset_events(ds, keep), np.r_[split.train, split.val], vis_log)
    per_user = ds.user_events()
    hr, nd = [], []
    # a target repeating an earlier item of the user is skipped, as in evaluate_users (support is excluded)
    queries = [(u, p) for u in split.test for p in range(1, min(20, len(per_user[u])))
               if is_held[ds.item[per_user[u][p]]] and ds.item[per_user[u][p]] not in ds.item[per_user[u][:p]]]
    for u, p in tqdm(queries, disable=not progress, desc="new items"):
        rows = per_user[u]
        q = make_query(ds, vis_log, u, rows, p, ds.ts[rows[p]], trend_log=full_log)
        h, n = rank_metrics(model.score(q), int(ds.item[rows[p]]), q.support_items)
        hr.append(h)
        nd.append(n)
    return {"hr10": float(np.mean(hr)) if hr else float("nan"), "ndcg10": float(np.mean(nd)) if nd else float("nan"),
            "n": len(hr), "hr10_ci": bootstrap_ci(hr), "n_withheld_items": int(len(held))}


def subset_events(ds: Dataset, keep: np.ndarray) -> Dataset:
    """The same catalog and users with only the kept events (attributes of every item stay known)."""
    return dataclasses.replace(ds, user=ds.user[keep], item=ds.item[keep], rating=ds.rating[keep], ts=ds.ts[keep])


def run_protocol(make_model: Callable[[], Recommender], ds: Dataset, *, new_items: bool = True,
                 curve: bool = True, progress: bool = True, name: str | None = None) -> dict:
    """The full v1 report for one model: fit on train + validation users, touch test users once."""
    split = split_users(ds)
    log = EventLog(ds)
    model = make_model().fit(ds, np.r_[split.train, split.val], log)
    res = evaluate_users(model, ds, split.test, log, progress=progress)
    out = {"model": name or model.name, "protocol": PROTOCOL_VERSION, "dataset": ds.name,
           **summarize_next_item(res), "scene": scene_slices(res)}
    if curve:
        out["learning_curve"] = learning_curve(model, ds, split.test, log, progress=progress)
    if new_items:
        out["new_items"] = new_item_run(make_model, ds, split, progress=progress)
    return out
