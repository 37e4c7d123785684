"""How high can ANY scorer get on the fixed-target learning curve at K=3? Validation users only.

Evidence for issue 4's "Recall@10 at K=3 >= 0.20" criterion (bench/results/curve_ceiling/README.md). Each scorer
follows PROTOCOL v1's time rule (only other users' events strictly before the query time, i.e. event 11's) and is
scored by `metarec.sdk.protocol.learning_curve` itself (same ties, same exclusions). Usage, from the repo root:

    OMP_NUM_THREADS=1 python lab/ceiling.py bench/results/curve_ceiling/ceiling.json
"""
import json
import sys
import time

import numpy as np

from metarec.sdk import baselines as B
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, learning_curve, split_users

WEEK, DAY = 7 * 86400.0, 86400.0
KS = (0, 1, 3, 5, 10)
ds = load_dataset("ml-100k")
sp, log = split_users(ds), EventLog(ds)
per_user = ds.user_events()
pos = np.zeros(ds.n_events, np.int64)  # an event's position in its user's history
for rows in per_user:
    pos[rows] = np.arange(len(rows))
first_ts = np.array([ds.ts[r[0]] if len(r) else np.inf for r in per_user])
N = ds.n_items


def visible(t, user):
    """Row indices of other users' events strictly before t (the time rule)."""
    rows = np.arange(np.searchsorted(ds.ts, t, side="left"))
    return rows[ds.user[rows] != user]


def user_item(rows):
    """(n_users, N) binary matrix of the given event rows."""
    X = np.zeros((ds.n_users, N))
    X[ds.user[rows], ds.item[rows]] = 1.0
    return X


class _Base:
    def fit(self, ds_, fit_users, log_):
        return self

    def score(self, q):
        if len(q.support_items) == 0:  # K=0: the same popularity every personal scorer falls back to
            return q.popularity.astype(np.float64)
        return self.personal(q) + 1e-9 * q.popularity  # popularity breaks the many zero ties


class NewUserTrending(_Base):
    """7-day counts of events that were within their user's first 20 ("what new users rate this week")."""
    name = "new-user trending (7 d, positions < 20)"

    def score(self, q):
        rows = visible(q.t, q.user)
        rows = rows[(ds.ts[rows] >= q.t - WEEK) & (pos[rows] < 20)]
        return np.bincount(ds.item[rows], minlength=N) + 1e-9 * q.popularity


class EASE(_Base):
    """Closed-form linear item-item model (Steck 2019) on every other user's past; one fit per query time."""

    def __init__(self, lam):
        self.lam, self.name, self._cache = lam, f"EASE (lambda {lam:g})", {}

    def personal(self, q):
        key = (q.user, q.t)
        if key not in self._cache:
            X = user_item(visible(q.t, q.user))
            P = np.linalg.inv(X.T @ X + self.lam * np.eye(N))
            Bm = -P / np.diag(P)[None, :]
            np.fill_diagonal(Bm, 0.0)
            self._cache = {key: Bm}  # one user's K sweep shares the fit
        return self._cache[key][q.support_items].sum(0)


class RecentUserKNN(_Base):
    """User-kNN over users who arrived in the last `days` (they saw the same site): neighbours weighted by their
    overlap with the support, items by the neighbours' weight (popularity-damped)."""

    def __init__(self, days):
        self.days, self.name = days, f"recent-user kNN ({days} d arrivals)"

    def personal(self, q):
        rows = visible(q.t, q.user)
        X = user_item(rows[first_ts[ds.user[rows]] >= q.t - self.days * DAY])
        w = X[:, q.support_items].sum(1)
        return (w @ X) / np.sqrt(X.sum(0) + 1.0)


class DirectMap(_Base):
    """Supervised for this very task: ridge map from a user's first-K multi-hot to its events 11..20, fit on other
    users whose 20th event is before q.t."""

    def __init__(self, lam):
        self.lam, self.name, self._cache = lam, f"direct first-K -> events 11..20 map (ridge {lam:g})", {}

    def personal(self, q):
        k = len(q.support_items)
        key = (q.user, k)
        if key not in self._cache:
            donors = [u for u in range(ds.n_users)
                      if u != q.user and len(per_user[u]) >= 20 and ds.ts[per_user[u][19]] < q.t]
            X, Y = np.zeros((len(donors), N)), np.zeros((len(donors), N))
            for j, u in enumerate(donors):
                X[j, ds.item[per_user[u][:k]]] = 1.0
                Y[j, ds.item[per_user[u][10:20]]] = 1.0
            self._cache = {key: np.linalg.solve(X.T @ X + self.lam * np.eye(N), X.T @ Y)}
        return self._cache[key][q.support_items].sum(0)


def main(out_path):
    scorers = [B.make_baseline("popularity"), B.make_baseline("trending"), NewUserTrending(),
               B.make_baseline("item_knn"), EASE(250.0), EASE(1000.0), EASE(4000.0), RecentUserKNN(30),
               RecentUserKNN(90), DirectMap(10.0), DirectMap(100.0)]
    res = {}
    for m in scorers:
        t0 = time.perf_counter()
        m.fit(ds, sp.train, log)
        c = learning_curve(m, ds, sp.val, log, ks=KS)
        res[m.name] = {str(k): {"recall10": c["recall10"][str(k)]["recall10"], "ci": c["recall10"][str(k)]["recall10_ci"],
                                "n": c["recall10"][str(k)]["n"]} for k in KS}
        print(m.name, " ".join(f"K={k}:{res[m.name][str(k)]['recall10']:.3f}" for k in KS),
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    with open(out_path, "w") as f:
        json.dump({"users": "val", "ks": list(KS), "results": res,
                   "command": "OMP_NUM_THREADS=1 python lab/ceiling.py "
                              "bench/results/curve_ceiling/ceiling.json"}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
