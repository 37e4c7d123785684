"""Would a co-occurrence term inside the scorer pay? score = z(prior) + w * z(item-item baseline), w chosen on
validation users (the checkpoint's validation prior, baselines fit on train users), then test users (the shipped
prior, baselines fit on train + validation users), paired against the best simple baseline.

    python lab/hybrid_val.py CHECKPOINT DATASET OUT.json [--other transition3,item_knn]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from metarec.export.select_blocks import validation_state
from metarec.sdk.baselines import BLEND_GRID, _CachedZ, _Weighted
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.floor import FLOOR_BASELINES, baseline_on, verdict
from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users, split_users, summarize_next_item
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig, load_checkpoint, model_from_state


def _hr(res):
    return summarize_next_item(res, ks=HEADLINE_KS)["headline"]["hr10"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--other", default="transition3,item_knn")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    split, log = split_users(ds), EventLog(ds)
    fit = np.r_[split.train, split.val]
    model, cfg, ck = load_checkpoint(a.checkpoint)
    v = ck["validation"]
    vcfg = TrainConfig.from_dict(v["train_config"])
    vprior = MetaRecRecommender(vcfg).set_model(model_from_state(vcfg, v["n_items"], validation_state(v)), vcfg)
    prior = MetaRecRecommender(cfg).set_model(model, cfg)
    out = {"dataset": ds.name, "checkpoint": a.checkpoint, "rows": {}}
    test_base = {n: evaluate_users(baseline_on(n, ds, fit, log), ds, split.test, log, ks=HEADLINE_KS)
                 for n in FLOOR_BASELINES}
    best = max(test_base, key=lambda n: _hr(test_base[n]))
    prior_res = evaluate_users(prior, ds, split.test, log, ks=HEADLINE_KS)
    out["rows"]["prior"] = {"test_hr10": _hr(prior_res)}
    for other in a.other.split(","):
        zv = _CachedZ([vprior, baseline_on(other, ds, split.train, log)])
        table = []
        for w in BLEND_GRID:
            wv = np.array([1.0 - w, w])
            table.append((_hr(evaluate_users(_Weighted(zv, wv), ds, split.val, log, ks=HEADLINE_KS)), w))
        hr_val, w = max(table)
        zt = _CachedZ([prior, baseline_on(other, ds, fit, log)])
        res = evaluate_users(_Weighted(zt, np.array([1.0 - w, w])), ds, split.test, log, ks=HEADLINE_KS)
        p = paired_difference(res, test_base[best], HEADLINE_KS)
        out["rows"][f"prior+{other}"] = {"w": w, "val_hr10": hr_val, "val_grid": table, "test_hr10": _hr(res),
                                         "vs": best, "paired": p["hr10_diff"], "ci": p["hr10_diff_ci"],
                                         "verdict": verdict(p["hr10_diff_ci"])}
        print(f"prior+{other}: w {w} (val {hr_val:.3f}) test {_hr(res):.3f} vs {best} {_hr(test_base[best]):.3f}: "
              f"{p['hr10_diff']:+.3f} [{p['hr10_diff_ci'][0]:+.3f}, {p['hr10_diff_ci'][1]:+.3f}]", flush=True)
    out["rows"].update({n: {"test_hr10": _hr(r)} for n, r in test_base.items()})
    json.dump(out, open(a.out, "w"), indent=1, default=float)


if __name__ == "__main__":
    main()
