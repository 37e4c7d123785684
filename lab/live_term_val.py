"""Would a server-fresh item-item term pay? The prior's scores plus the term built from a neighbour pack of the
query's moment (sdk/neighbors.py LiveNeighbors: other users' events before t, each item's top-m), kind / m / weight
picked on validation users (the checkpoint's validation prior), then test users (the shipped prior) paired against
the best simple baseline.

    python lab/live_term_val.py CHECKPOINT DATASET OUT.json [--m 20,50]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from metarec.export.select_blocks import validation_state
from metarec.runtime.neighbors import add_neighbor_term
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.floor import FLOOR_BASELINES, baseline_on, verdict
from metarec.sdk.neighbors import DECAY, LAST, LiveNeighbors
from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig, load_checkpoint, model_from_state

KS = tuple(range(1, 11))
WEIGHTS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def hr(res, ks=HEADLINE_KS):
    return float(np.mean(res["hr"][np.isin(res["k"], ks)]))


class Plus:
    def __init__(self, base, live, weight, memo):
        self.base, self.live, self.weight, self.memo, self.name = base, live, weight, memo, "plus"

    def score(self, q):
        key = (q.user, len(q.support_items))
        if key not in self.memo:
            self.memo[key] = self.base.score(q)
        s = self.memo[key].copy()
        if self.live is not None and len(q.support_items):
            ids, w, local = self.live.rows(q.log, q.support_items, q.t, q.user)
            add_neighbor_term(s, ids, w, local, LAST, DECAY, self.weight)
        return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--m", default="20,50")
    ap.add_argument("--kinds", default="transition,cooc")
    ap.add_argument("--pick-ks", default="1-10", help="1-10 (export's choice) or 1-3 (the headline's)")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    split, log = split_users(ds), EventLog(ds)
    fit = np.r_[split.train, split.val]
    model, cfg, ck = load_checkpoint(a.checkpoint)
    v = ck["validation"]
    vcfg = TrainConfig.from_dict(v["train_config"])
    vprior = MetaRecRecommender(vcfg).set_model(model_from_state(vcfg, v["n_items"], validation_state(v)), vcfg)
    prior = MetaRecRecommender(cfg).set_model(model, cfg)
    out = {"dataset": ds.name, "checkpoint": a.checkpoint, "grid": []}
    vmemo, tmemo = {}, {}

    best = None
    pick = KS if a.pick_ks == "1-10" else HEADLINE_KS
    base_val = evaluate_users(Plus(vprior, None, 0.0, vmemo), ds, split.val, log, ks=KS)
    out["val_prior"] = {"k1to10": hr(base_val, KS), "k1to3": hr(base_val)}
    print(out["val_prior"], flush=True)
    for m in [int(x) for x in a.m.split(",")]:
        for kind in a.kinds.split(","):
            live = LiveNeighbors(kind, m)
            for w in WEIGHTS:
                res = evaluate_users(Plus(vprior, live, w, vmemo), ds, split.val, log, ks=KS)
                out["grid"].append({"m": m, "kind": kind, "w": w, "val_hr10_k1to10": hr(res, KS),
                                    "val_hr10_k1to3": hr(res)})
                print(out["grid"][-1], flush=True)
                if best is None or hr(res, pick) > best[0]:
                    best = (hr(res, pick), m, kind, w)
    _, m, kind, w = best
    test_base = {n: evaluate_users(baseline_on(n, ds, fit, log), ds, split.test, log, ks=HEADLINE_KS)
                 for n in FLOOR_BASELINES}
    bname = max(test_base, key=lambda n: hr(test_base[n]))
    prior_res = evaluate_users(prior, ds, split.test, log, ks=HEADLINE_KS)
    res = evaluate_users(Plus(prior, LiveNeighbors(kind, m), w, tmemo), ds, split.test, log, ks=HEADLINE_KS)
    p = paired_difference(res, test_base[bname], HEADLINE_KS)
    q = paired_difference(res, prior_res, HEADLINE_KS)
    out["chosen"] = {"m": m, "kind": kind, "w": w}
    out["test"] = {"prior": hr(prior_res), "prior+live": hr(res), "best_baseline": bname,
                   "best_baseline_hr10": hr(test_base[bname]), "minus_best": p["hr10_diff"],
                   "minus_best_ci": p["hr10_diff_ci"], "verdict": verdict(p["hr10_diff_ci"]),
                   "minus_prior": q["hr10_diff"], "minus_prior_ci": q["hr10_diff_ci"]}
    print(json.dumps(out["test"], indent=1))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
