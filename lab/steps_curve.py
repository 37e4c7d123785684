"""HR@10 on test users after 0, 1, 2, 3 serving steps of the shipped prior (issue 20 item 3's plot).

    python lab/steps_curve.py OUT.png NAME=CHECKPOINT=DATASET [NAME=CHECKPOINT=DATASET ...]
"""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np

from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, bootstrap_ci, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import load_checkpoint

KS = tuple(range(1, 11))


def curve(ck: str, dataset: str) -> dict:
    ds = load_dataset(dataset)
    split, log = split_users(ds), EventLog(ds)
    model, cfg, _ = load_checkpoint(ck)
    out = {}
    for steps in range(4):
        scfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, inner_steps=steps))
        r = evaluate_users(MetaRecRecommender(scfg).set_model(model, scfg), ds, split.test, log, ks=KS)
        per_user = np.array([r["hr"][r["user"] == u].mean() for u in np.unique(r["user"])])
        out[steps] = {"hr10": float(per_user.mean()), "ci": bootstrap_ci(per_user)}
        print(f"{dataset} steps {steps}: HR@10 (K 1..10) {per_user.mean():.4f}", flush=True)
    return out


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png, specs = sys.argv[1], sys.argv[2:]
    res = {}
    for spec in specs:
        name, ck, dataset = spec.split("=", 2)
        res[name] = curve(ck, dataset)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, c in res.items():
        y = [c[s]["hr10"] for s in range(4)]
        lo = [c[s]["ci"][0] for s in range(4)]
        hi = [c[s]["ci"][1] for s in range(4)]
        ax.errorbar(range(4), y, yerr=[np.subtract(y, lo), np.subtract(hi, y)], marker="o", capsize=3, label=name)
    ax.set_xticks(range(4))
    ax.set_xlabel("serving steps (the prior is trained with 1)")
    ax.set_ylabel("HR@10, test users, K = 1..10")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    json.dump(res, open(png.rsplit(".", 1)[0] + ".json", "w"), indent=1, default=float)


if __name__ == "__main__":
    main()
