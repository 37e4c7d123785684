"""Would a larger popularity weight in the bias pay? The prior's pop_w (w * centred log1p(fit count) in a seen item's
bias) raised by delta at serving, HR@10 over K = 1..3: validation users with the checkpoint's validation prior, test
users with the shipped prior, each paired against delta = 0 and against the best simple baseline on test.

    python lab/pop_weight_val.py CHECKPOINT DATASET OUT.json
"""
from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import torch

from metarec.export.select_blocks import validation_state
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.floor import FLOOR_BASELINES, baseline_on
from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig, load_checkpoint, model_from_state

torch.set_num_threads(1)
DELTAS = (0.0, 0.25, 0.5, 1.0, 2.0)


def hr(res):
    return float(np.mean(res["hr"]))


def with_delta(model, cfg, delta):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.pop_w += delta
    return MetaRecRecommender(cfg).set_model(m, cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("dataset")
    ap.add_argument("out")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    split, log = split_users(ds), EventLog(ds)
    model, cfg, ck = load_checkpoint(a.checkpoint)
    v = ck["validation"]
    vcfg = TrainConfig.from_dict(v["train_config"])
    vmodel = model_from_state(vcfg, v["n_items"], validation_state(v))
    out = {"dataset": ds.name, "pop_w": float(model.pop_w), "val": {}, "test": {}}
    val = {d: evaluate_users(with_delta(vmodel, vcfg, d), ds, split.val, log, ks=HEADLINE_KS) for d in DELTAS}
    for d in DELTAS:
        p = paired_difference(val[d], val[0.0], HEADLINE_KS)
        out["val"][str(d)] = {"hr10": hr(val[d]), "minus_0": p["hr10_diff"], "ci": p["hr10_diff_ci"]}
        print("val", d, out["val"][str(d)], flush=True)
    fit = np.r_[split.train, split.val]
    base = {n: evaluate_users(baseline_on(n, ds, fit, log), ds, split.test, log, ks=HEADLINE_KS)
            for n in FLOOR_BASELINES}
    best = max(base, key=lambda n: hr(base[n]))
    t0 = evaluate_users(with_delta(model, cfg, 0.0), ds, split.test, log, ks=HEADLINE_KS)
    for d in DELTAS:
        res = t0 if d == 0.0 else evaluate_users(with_delta(model, cfg, d), ds, split.test, log, ks=HEADLINE_KS)
        p, q = paired_difference(res, t0, HEADLINE_KS), paired_difference(res, base[best], HEADLINE_KS)
        out["test"][str(d)] = {"hr10": hr(res), "minus_0": p["hr10_diff"], "ci": p["hr10_diff_ci"],
                               "minus_best": q["hr10_diff"], "best_ci": q["hr10_diff_ci"], "best": best,
                               "best_hr10": hr(base[best])}
        print("test", d, out["test"][str(d)], flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
