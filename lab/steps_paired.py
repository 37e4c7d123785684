"""Does the phone's adaptation pay on TEST users? The shipped prior served with its inner steps against the same
prior served without them (the bundle's skip), paired over the same queries, HR@10 at K = 1..3 and K = 1..10.

    python lab/steps_paired.py CHECKPOINT DATASET OUT.json
"""
from __future__ import annotations

import dataclasses
import json
import sys

from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import load_checkpoint


def main(ck: str, dataset: str, out: str) -> None:
    ds = load_dataset(dataset)
    split, log = split_users(ds), EventLog(ds)
    model, cfg, _ = load_checkpoint(ck)
    ks = tuple(range(1, 11))
    res = {}
    for steps in (cfg.model.inner_steps, 0):
        scfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, inner_steps=steps))
        res[steps] = evaluate_users(MetaRecRecommender(scfg).set_model(model, scfg), ds, split.test, log, ks=ks)
    rep = {"checkpoint": ck, "dataset": ds.name, "steps": cfg.model.inner_steps, "users": "test"}
    for name, sel in (("headline", (1, 2, 3)), ("k1_10", ks)):
        p = paired_difference(res[cfg.model.inner_steps], res[0], sel)
        rep[name] = {"diff": p["hr10_diff"], "ci": p["hr10_diff_ci"], "n_users": p["n_users"]}
        print(f"{ds.name} {name}: {cfg.model.inner_steps} step(s) minus none {p['hr10_diff']:+.4f} "
              f"[{p['hr10_diff_ci'][0]:+.4f}, {p['hr10_diff_ci'][1]:+.4f}] (n={p['n_users']})", flush=True)
    json.dump(rep, open(out, "w"), indent=1, default=float)


if __name__ == "__main__":
    main(*sys.argv[1:4])
