"""Seeds differ more than any setting does (ML-100K validation headline 0.44..0.47 over seeds): does combining N
priors lift it, and does a weight average of N runs from one init (a "soup": same bytes as one prior) keep what a
score ensemble (N x the bytes) gains? Members share the init (seed `--init-seed`) and differ in task order and id
dropout. Fit on train users, scored on validation users, paired over the same queries. Session 13, issue 20.

    python lab/soup.py DATASET OUT.json [--members 4] [--init-seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

import metarec.sdk.train as train
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig, model_from_state


class Ensemble:
    def __init__(self, members):
        self.members = members

    def score(self, q):
        return np.mean([m.score(q) for m in self.members], 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument("--users", default="val", choices=("val", "test"))
    a = ap.parse_args()
    orig = train.build_model
    train.build_model = lambda cfg, ds, fu: orig(dataclasses.replace(cfg, seed=a.init_seed), ds, fu)
    ds = load_dataset(a.dataset)
    sp, log = split_users(ds), EventLog(ds)
    fit, score = (sp.train, sp.val) if a.users == "val" else (np.concatenate([sp.train, sp.val]), sp.test)
    ks = tuple(range(1, 11))
    recs, res = [], []
    for s in range(a.members):
        cfg = TrainConfig(dataset=a.dataset, seed=s, progress=False,
                          fit_users="train" if a.users == "val" else "train+val")
        recs.append(MetaRecRecommender(config=cfg).fit(ds, fit, log))
        res.append(evaluate_users(recs[-1], ds, score, log, ks=ks))
        print(f"member {s}: {np.mean(res[-1]['hr'][np.isin(res[-1]['k'], (1, 2, 3))]):.4f}", flush=True)
    sds = [r.model.state_dict() for r in recs]
    soup_sd = {k: (torch.stack([sd[k].float() for sd in sds]).mean(0).to(sds[0][k].dtype)
                   if sds[0][k].is_floating_point() else sds[0][k]) for k in sds[0]}
    cfg = recs[0].config
    soup = MetaRecRecommender(config=cfg).set_model(model_from_state(cfg, ds.n_items, soup_sd), cfg)
    rows = {"soup": evaluate_users(soup, ds, score, log, ks=ks),
            "ensemble": evaluate_users(Ensemble(recs), ds, score, log, ks=ks)}
    rep = {"dataset": ds.name, "users": a.users, "members": a.members, "init_seed": a.init_seed,
           "member_hr10_k1_3": [float(np.mean(r["hr"][np.isin(r["k"], (1, 2, 3))])) for r in res]}
    for name, r in rows.items():
        rep[name] = {"hr10_k1_3": float(np.mean(r["hr"][np.isin(r["k"], (1, 2, 3))]))}
        for tag, sel in (("headline", (1, 2, 3)), ("k1_10", ks)):
            p = paired_difference([r] * len(res), res, sel)
            rep[name][tag] = {"diff_vs_members": p["hr10_diff"], "ci": p["hr10_diff_ci"]}
            print(f"{ds.name} {name} {rep[name]['hr10_k1_3']:.4f}; {tag} minus a member {p['hr10_diff']:+.4f} "
                  f"[{p['hr10_diff_ci'][0]:+.4f}, {p['hr10_diff_ci'][1]:+.4f}]", flush=True)
    json.dump(rep, open(a.out, "w"), indent=1, default=float)


if __name__ == "__main__":
    main()
