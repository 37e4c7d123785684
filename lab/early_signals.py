"""Is there a sign-up signal beside the onboarding count that the item-item baselines miss? (session 18, issue 20)

Item-item statistics from users' EARLY events only (a sign-up flow's pages), against the same statistics over
whole histories, each alone and z-blended with the onboarding count (sdk/baselines.py `Onboarding`), HR@10 over the
K = 1..3 queries of PROTOCOL's validation (or test) users. No training.
- transitions: the consecutive moves (previous -> next) of other users before the query, summed over the last 3
  support items (decay 0.5): all moves, or only those whose previous item was a user's event number < P;
- co-occurrence: item-kNN (cosine over first touches before the query), over whole histories or each user's first P.

    python lab/early_signals.py DATASET [val|test]
"""
import sys

import numpy as np

from metarec.sdk.baselines import ItemKNN, _FirstTouches, make_baseline
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users


def positions(user: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Each row's index in its user's sequence, `order` sorting the rows by (user, time)."""
    pos = np.empty(len(user), np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(user[order])) + 1]
    pos[order] = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return pos


class EarlyTransitions:
    def __init__(self, log, n_items, max_pos=None, last=3, decay=0.5):
        order = np.lexsort((np.arange(len(log.ts)), log.user))
        pos = positions(log.user, order)
        same = log.user[order][1:] == log.user[order][:-1]
        a, b = order[:-1][same], order[1:][same]
        g = np.lexsort((log.ts[b], log.item[a]))
        self.prev, self.next, self.ts, self.user, self.pos = (x[g] for x in (log.item[a], log.item[b], log.ts[b],
                                                                             log.user[b], pos[a]))
        self.bounds = np.searchsorted(self.prev, np.arange(n_items + 1))
        self.n, self.max_pos, self.last, self.decay = n_items, max_pos, last, decay

    def score(self, q):
        if len(q.support_items) == 0:
            return q.popularity.astype(float)
        out = np.zeros(self.n)
        for age, s in enumerate(q.support_items[::-1][:self.last]):
            lo, hi = self.bounds[s], self.bounds[s + 1]
            hi = lo + int(np.searchsorted(self.ts[lo:hi], q.t, side="left"))
            m = self.user[lo:hi] != q.user
            if self.max_pos is not None:
                m &= self.pos[lo:hi] < self.max_pos
            c = np.bincount(self.next[lo:hi][m], minlength=self.n).astype(float)
            if c.sum() > 0:
                out += self.decay ** age * c / c.sum()
        return out


class EarlyKNN:
    def __init__(self, log, max_pos):
        self.ft, self.max_pos = _FirstTouches(log), max_pos
        self.pos = positions(self.ft.user, np.lexsort((self.ft.rows, self.ft.user)))

    def score(self, q):
        n_items = len(q.popularity)
        if len(q.support_items) == 0:
            return q.popularity.astype(float)
        hi = int(np.searchsorted(self.ft.rows, q.log.cut(q.t), side="left"))
        m = (self.ft.user[:hi] != q.user) & (self.pos[:hi] < self.max_pos)
        users, items = self.ft.user[:hi][m], self.ft.item[:hi][m]
        n = np.bincount(items, minlength=n_items).astype(float)
        inv = np.zeros(n_items)
        np.divide(1.0, np.sqrt(n), out=inv, where=n > 0)
        w_item = np.zeros(n_items)
        sup = np.unique(q.support_items)
        w_item[sup] = inv[sup]
        w_user = np.bincount(users, weights=w_item[items], minlength=self.ft.n_users + 1)
        return np.bincount(items, weights=w_user[users], minlength=n_items) * inv


class Plus:
    def __init__(self, a, b, w):
        self.a, self.b, self.w = a, b, w

    def score(self, q):
        z = lambda v: (v - v.mean()) / (v.std() + 1e-12)
        return z(self.a.score(q)) + self.w * z(self.b.score(q))


def main() -> None:
    ds = load_dataset(sys.argv[1])
    sp, log = split_users(ds), EventLog(ds)
    users = getattr(sp, sys.argv[2] if len(sys.argv) > 2 else "val")
    onb = make_baseline("onboarding")
    scorers = {"transitions (all)": EarlyTransitions(log, ds.n_items), "transitions from events < 20":
               EarlyTransitions(log, ds.n_items, 20), "item-kNN (all)": ItemKNN().fit(ds, sp.train, log),
               "item-kNN over first 20": EarlyKNN(log, 20), "item-kNN over first 50": EarlyKNN(log, 50)}
    print(f"{sys.argv[1]}, {len(users)} users ({sys.argv[2] if len(sys.argv) > 2 else 'val'}), HR@10 K = 1..3")
    print(f"onboarding alone: {np.mean(evaluate_users(onb, ds, users, log, ks=(1, 2, 3))['hr']):.4f}")
    for name, s in scorers.items():
        row = [np.mean(evaluate_users(m, ds, users, log, ks=(1, 2, 3))["hr"]) for m in
               (s, Plus(s, onb, 1.0), Plus(s, onb, 2.0))]
        print(f"{name}: alone {row[0]:.4f}, + onboarding x1 {row[1]:.4f}, x2 {row[2]:.4f}", flush=True)


if __name__ == "__main__":
    main()
