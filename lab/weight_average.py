"""Does tail weight averaging (TrainConfig.average_last) lift the prior? Per seed, one prior per setting fit on the
train users, scored on the validation users (or fit on train + validation, scored on test users), paired over the
same queries against the last iterate (average_last 0), HR@10 at K = 1..3 and K = 1..10. Session 13, issue 20.

    python lab/weight_average.py DATASET OUT.json [--seeds 0,1,2] [--shares 0.25,0.5] [--users val|test]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--shares", default="0.25,0.5")
    ap.add_argument("--users", default="val", choices=("val", "test"))
    ap.add_argument("--config", default=None, help="base TrainConfig JSON (default: TrainConfig())")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    sp, log = split_users(ds), EventLog(ds)
    fit, score = (sp.train, sp.val) if a.users == "val" else (np.concatenate([sp.train, sp.val]), sp.test)
    base = TrainConfig() if a.config is None else TrainConfig.load(a.config)
    base = dataclasses.replace(base, dataset=a.dataset, progress=False,
                               fit_users="train" if a.users == "val" else "train+val")
    seeds = [int(s) for s in a.seeds.split(",")]
    shares = [0.0] + [float(s) for s in a.shares.split(",")]
    ks = tuple(range(1, 11))
    res: dict[float, list] = {s: [] for s in shares}
    secs: dict[float, list] = {s: [] for s in shares}
    for seed in seeds:
        for share in shares:
            cfg = dataclasses.replace(base, seed=seed, average_last=share)
            t0 = time.perf_counter()
            rec = MetaRecRecommender(config=cfg).fit(ds, fit, log)
            secs[share].append(time.perf_counter() - t0)
            r = evaluate_users(rec, ds, score, log, ks=ks)
            res[share].append(r)
            hr = float(np.mean(r["hr"][np.isin(r["k"], (1, 2, 3))]))
            print(f"{ds.name} seed {seed} average_last {share}: HR@10 K=1..3 {hr:.4f}", flush=True)
    rep = {"dataset": ds.name, "users": a.users, "seeds": seeds, "base": base.to_dict(), "settings": {}}
    for share in shares:
        row = {"train_seconds": secs[share],
               "hr10_k1_3": [float(np.mean(r["hr"][np.isin(r["k"], (1, 2, 3))])) for r in res[share]]}
        if share:
            for name, sel in (("headline", (1, 2, 3)), ("k1_10", ks)):
                p = paired_difference(res[share], res[0.0], sel)
                row[name] = {"diff": p["hr10_diff"], "ci": p["hr10_diff_ci"], "n_users": p["n_users"]}
                print(f"{ds.name} {name}: average_last {share} minus last iterate {p['hr10_diff']:+.4f} "
                      f"[{p['hr10_diff_ci'][0]:+.4f}, {p['hr10_diff_ci'][1]:+.4f}] (n={p['n_users']}, "
                      f"{len(seeds)} seeds)", flush=True)
        rep["settings"][str(share)] = row
    rep["command"] = "python lab/weight_average.py " + " ".join(
        [a.dataset, a.out, "--seeds", a.seeds, "--shares", a.shares, "--users", a.users]
        + (["--config", a.config] if a.config else []))
    json.dump(rep, open(a.out, "w"), indent=1, default=float)


if __name__ == "__main__":
    main()
