"""PROTOCOL v1 next-item queries run through the phone's runtime (not the sdk), the way an app would drive it.

Each test user is a fresh user on the device: its events are recorded one by one; before event K+1 the app sets
the trending pack of that moment (other users' 7-day counts, what the server would ship) and asks for the top 10.
Only top-10 lists come back, so HR@10/NDCG@10 are read off the list (model scores are continuous: no ties).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from metarec.runtime import Recommender, TrendingPack
from metarec.sdk.data import Dataset
from metarec.sdk.protocol import HEADLINE_KS, WEEK, EventLog, bootstrap_ci, split_users


def runtime_next_item(bundle_dir, trusted_key, ds: Dataset, users=None, ks=HEADLINE_KS, state_path=None,
                      progress: bool = True) -> dict:
    """HR@10 / NDCG@10 per K and the K=1..3 headline through `metarec.runtime.Recommender`."""
    users = split_users(ds).test if users is None else users
    log = EventLog(ds)
    per_user = ds.user_events()
    tmp = None
    if state_path is None:
        tmp = tempfile.TemporaryDirectory()
        state_path = Path(tmp.name) / "state.db"
    rec = Recommender.open(bundle_dir, state_path, trusted_key=trusted_key)
    rows_out = []  # (user, k, hr, ndcg, top10 ids)
    try:
        for u in tqdm(users, disable=not progress, desc="runtime"):
            rows = per_user[u]
            uid = f"eval-{ds.user_ids[u]}"
            done = 0
            for k in sorted(ks):
                if len(rows) < k + 1:
                    break
                for j in range(done, k):  # the device records the user's events as they happen
                    r = rows[j]
                    rec.record(uid, str(ds.item_ids[ds.item[r]]), float(ds.ts[r]), event_id=f"{uid}:{j}")
                done = k
                t = float(ds.ts[rows[k]])
                counts = log.counts(t, u, WEEK)
                nz = np.nonzero(counts)[0]
                rec.set_trending(TrendingPack.from_counts(t, {str(ds.item_ids[i]): int(counts[i]) for i in nz}))
                top = [r.item_id for r in rec.recommend(uid, now=t, k=10)]
                target = str(ds.item_ids[ds.item[rows[k]]])
                pos = top.index(target) + 1 if target in top else 0
                rows_out.append((int(u), k, float(pos > 0), 1.0 / np.log2(pos + 1) if pos else 0.0, top))
    finally:
        rec.close()
        if tmp is not None:
            tmp.cleanup()
    user = np.array([r[0] for r in rows_out])
    kk = np.array([r[1] for r in rows_out])
    hr = np.array([r[2] for r in rows_out])
    nd = np.array([r[3] for r in rows_out])
    per_k = {str(k): {"hr10": float(hr[kk == k].mean()), "ndcg10": float(nd[kk == k].mean()), "n": int((kk == k).sum())}
             for k in sorted(ks)}
    us = np.unique(user)
    hr_u = np.array([hr[user == x].mean() for x in us])
    nd_u = np.array([nd[user == x].mean() for x in us])
    return {"per_k": per_k, "headline": {"hr10": float(hr_u.mean()), "hr10_ci": bootstrap_ci(hr_u),
                                         "ndcg10": float(nd_u.mean()), "ndcg10_ci": bootstrap_ci(nd_u),
                                         "n_users": int(len(us))},
            "top10": {(int(r[0]), int(r[1])): r[4] for r in rows_out}}
