"""Where does the default prior stand against the simple baselines on VALIDATION users (fit on train users)?

The question behind the floor gate (issue 20: "a bundle that loses to the best simple baseline on validation users
is an error"): on ML-100K, prior vs each baseline, paired over the same next-item queries (K = 1..3).

    python lab/floor_val.py [--dataset ml-100k] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from metarec.sdk.baselines import make_baseline
    from metarec.sdk.coldstart_diagnostics import paired_difference
    from metarec.sdk.data import fetch_ml100k, load_dataset
    from metarec.sdk.protocol import EventLog, evaluate_users, split_users, summarize_next_item
    from metarec.sdk.recommender import MetaRecRecommender
    from metarec.sdk.train import TrainConfig

    ds = load_dataset(str(fetch_ml100k()) if a.dataset == "ml-100k" else a.dataset)
    split, log = split_users(ds), EventLog(ds)
    ks = (1, 2, 3)
    prior = MetaRecRecommender(TrainConfig(seed=a.seed, progress=False)).fit(ds, split.train, log)
    res = {"metarec": evaluate_users(prior, ds, split.val, log, ks=ks)}
    # the blends (item_knn+trending, ...) choose their weight on validation users, so they cannot be scored there
    for name in ("popularity", "trending", "item_knn", "transition3", "als"):
        res[name] = evaluate_users(make_baseline(name).fit(ds, split.train, log), ds, split.val, log, ks=ks)
    out = {n: summarize_next_item(r, ks=ks)["headline"] for n, r in res.items()}
    out["paired_vs_prior"] = {n: paired_difference(res["metarec"], r, ks) for n, r in res.items() if n != "metarec"}
    print(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
