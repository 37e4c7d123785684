"""Would forward blocks give validation the power it lacks? Users in arrival order; each block of arriving users is
judged by a prior (and the simple baselines) fit on every user before it, so nothing fit later judges earlier users
(the time rule). Blocks at arrival shares [0.5, 0.6), [0.6, 0.7) and [0.7, 0.8) (today's validation users); the last
block [0.8, 1.0) is the test users, fit on [0, 0.8), for reference. Per block and pooled over the validation blocks:
HR@10 over K = 1..3 of the prior with its popularity weight raised by each delta, and of every floor baseline,
paired against the best baseline and against delta 0.

    OMP_NUM_THREADS=1 python lab/forward_blocks.py DATASET OUT.json [--config TRAIN.json] [--seed N]
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.floor import FLOOR_BASELINES, baseline_on
from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig

torch.set_num_threads(1)
DELTAS = (0.0, 0.5, 1.0, 2.0, 4.0)
EDGES = (0.5, 0.6, 0.7, 0.8, 1.0)


def hr(res):
    return float(np.mean(res["hr"]))


def cat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def with_delta(rec, delta):
    import copy

    m = copy.deepcopy(rec.model)
    with torch.no_grad():
        m.pop_w += delta
    return MetaRecRecommender(rec.config).set_model(m, rec.config)


def summary(res: dict, names) -> dict:
    base = [n for n in names if not n.startswith("delta")]
    best = max(base, key=lambda n: hr(res[n]))
    out = {"n_queries": int(len(res["delta 0.0"]["hr"])), "n_users": int(len(np.unique(res["delta 0.0"]["user"]))),
           "hr10": {n: hr(res[n]) for n in names}, "best_baseline": best}
    for n in names:
        if n.startswith("delta"):
            p = paired_difference(res[n], res[best], HEADLINE_KS)
            q = paired_difference(res[n], res["delta 0.0"], HEADLINE_KS)
            out[n] = {"minus_best": p["hr10_diff"], "best_ci": [float(x) for x in p["hr10_diff_ci"]],
                      "minus_0": q["hr10_diff"], "ci_0": [float(x) for x in q["hr10_diff_ci"]]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--config")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    cfg = TrainConfig.load(a.config) if a.config else TrainConfig()
    cfg = dataclasses.replace(cfg, dataset=a.dataset)
    sp, log = split_users(ds), EventLog(ds)
    order = np.r_[sp.train, sp.val, sp.test]  # arrival order
    n = len(order)
    names = [f"delta {d}" for d in DELTAS] + list(FLOOR_BASELINES)
    blocks, out = [], {"dataset": ds.name, "edges": EDGES, "blocks": []}
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        fit, judge = order[:int(round(lo * n))], order[int(round(lo * n)):int(round(hi * n))]
        rec = MetaRecRecommender(cfg).fit(ds, np.sort(fit), log)
        res = {f"delta {d}": evaluate_users(with_delta(rec, d), ds, judge, log, ks=HEADLINE_KS) for d in DELTAS}
        for b in FLOOR_BASELINES:
            res[b] = evaluate_users(baseline_on(b, ds, np.sort(fit), log), ds, judge, log, ks=HEADLINE_KS)
        s = summary(res, names)
        s["block"] = [lo, hi]
        out["blocks"].append(s)
        print(f"block [{lo}, {hi}): fit {len(fit)} users, {s['n_users']} judged, {s['n_queries']} queries; "
              f"best {s['best_baseline']} {s['hr10'][s['best_baseline']]:.3f}; " + "; ".join(
                  f"{d} {s['hr10'][d]:.3f} ({s[d]['minus_best']:+.3f} [{s[d]['best_ci'][0]:+.3f}, "
                  f"{s[d]['best_ci'][1]:+.3f}])" for d in names if d.startswith("delta")), flush=True)
        if hi <= 0.8:
            blocks.append(res)
    for label, sel in (("pooled validation", blocks), ("today's validation", blocks[-1:])):
        s = summary(cat_all(sel, names) if len(sel) > 1 else sel[0], names)
        out[label] = s
        print(f"{label}: {s['n_users']} users, {s['n_queries']} queries; best {s['best_baseline']} "
              f"{s['hr10'][s['best_baseline']]:.3f}; " + "; ".join(
                  f"{d} {s['hr10'][d]:.3f} (vs best {s[d]['minus_best']:+.3f} [{s[d]['best_ci'][0]:+.3f}, "
                  f"{s[d]['best_ci'][1]:+.3f}], vs 0 {s[d]['minus_0']:+.3f} [{s[d]['ci_0'][0]:+.3f}, "
                  f"{s[d]['ci_0'][1]:+.3f}])" for d in names if d.startswith("delta")), flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


def cat_all(blocks, names):
    return {k: cat([b[k] for b in blocks]) for k in names}


if __name__ == "__main__":
    main()
