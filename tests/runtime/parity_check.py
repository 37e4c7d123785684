"""Parity and HR@10 of the on-device runtime against the sdk's eager model, on PROTOCOL v1 test users.

Not a unit test (it needs a trained checkpoint and ML-100K; minutes, not seconds). Usage:
    .venv/bin/python tests/runtime/parity_check.py CHECKPOINT BUNDLE_DIR PUBLIC_KEY [--ks 0,1,2,3,5,10]
For each test user and K, the runtime records the first K events (as an app would), gets the trending pack of
the target's time, and returns its top 10; the sdk's `MetaRecRecommender` (eager torch, the same checkpoint)
scores the same query and its top 10 excludes the support, as the evaluator does. Prints the share of
(user, K) queries whose top-10 lists are identical (ordered, and as sets), and HR@10 at K = 1..3 both ways.
(Lives here because the runtime team owns it; bench/ may adopt it.)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("bundle")
    ap.add_argument("public_key")
    ap.add_argument("--ks", default="0,1,2,3,5,10")
    ap.add_argument("--dataset", default="ml-100k")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]

    from metarec.runtime import Recommender, TrendingPack
    from metarec.sdk.data import fetch_ml100k, load_dataset
    from metarec.sdk.protocol import WEEK, EventLog, evaluate_users, make_query, split_users, summarize_next_item
    from metarec.sdk.recommender import MetaRecRecommender

    ds = load_dataset(str(fetch_ml100k()) if args.dataset == "ml-100k" else args.dataset)
    split, log = split_users(ds), EventLog(ds)
    eager = MetaRecRecommender(checkpoint=args.checkpoint, config=None).fit(ds, np.r_[split.train, split.val], log)
    per_user = ds.user_events()
    rows_out = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            Recommender.open(args.bundle, Path(tmp) / "state.db", trusted_key=args.public_key) as rec:
        for u in split.test:
            rows = per_user[u]
            uid = f"test-{ds.user_ids[u]}"
            done = 0
            for k in sorted(ks):
                if len(rows) < k + 1:
                    break
                for j in range(done, k):
                    r = rows[j]
                    rec.record(uid, str(ds.item_ids[ds.item[r]]), float(ds.ts[r]), event_id=f"{uid}:{j}")
                done = k
                t = float(ds.ts[rows[k]])
                target = int(ds.item[rows[k]])
                if target in set(ds.item[rows[:k]].tolist()):
                    continue  # the evaluator's rule: a repeat of a support item cannot be recommended
                counts = log.counts(t, u, WEEK)
                nz = np.nonzero(counts)[0]
                rec.set_trending(TrendingPack.from_counts(t, {str(ds.item_ids[i]): int(counts[i]) for i in nz}))
                got = [r.item_id for r in rec.recommend(uid, now=t, k=10)]
                s = eager.score(make_query(ds, log, u, rows, k, t)).copy()
                s[ds.item[rows[:k]]] = -np.inf
                want = [str(ds.item_ids[i]) for i in np.argsort(-s, kind="stable")[:10]]
                rows_out.append((int(u), k, got == want, set(got) == set(want),
                                 float(str(ds.item_ids[target]) in got)))
    secs = time.perf_counter() - t0
    same = np.array([r[2] for r in rows_out])
    same_set = np.array([r[3] for r in rows_out])
    kk = np.array([r[1] for r in rows_out])
    user = np.array([r[0] for r in rows_out])
    hr = np.array([r[4] for r in rows_out])
    head = (kk >= 1) & (kk <= 3)
    hr_rt = float(np.mean([hr[head & (user == x)].mean() for x in np.unique(user[head])]))
    ev = summarize_next_item(evaluate_users(eager, ds, split.test, log, ks=(1, 2, 3)), ks=(1, 2, 3))
    print(json.dumps({
        "queries": int(len(rows_out)), "parity_ordered": float(same.mean()), "parity_set": float(same_set.mean()),
        "parity_by_k": {str(k): float(same[kk == k].mean()) for k in sorted(set(kk.tolist()))},
        "hr10_runtime_k1to3": hr_rt, "hr10_eval_k1to3": ev["headline"]["hr10"],
        "hr10_abs_diff": abs(hr_rt - ev["headline"]["hr10"]), "runtime_seconds": round(secs, 1)}, indent=1))


if __name__ == "__main__":
    main()
