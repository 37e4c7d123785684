"""Issue 20 item 5: the sequential baseline (SASRec-style, sdk/baselines_seq.py) against the best simple baselines and
the meta-learned prior on the PROTOCOL headline queries of the test users (K = 1..3), paired per user.

Each model is fit on train + validation users (as run_protocol does); seeded ones (sasrec, sasrec+trending, the
prior) once per seed. Per method: headline HR@10 with its bootstrap interval over users (per-user HR averaged over
the seeds first). Pairs: sdk.coldstart_diagnostics.paired_difference (seed i against seed i; a deterministic
baseline is its own run for every seed).

    OMP_NUM_THREADS=1 python lab/seq_paired.py OUT.json [--dataset ml-100k] [--seeds 0,1,2] [--no-prior]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from metarec.sdk.baselines import SEEDED, make_baseline
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import HEADLINE_KS, EventLog, bootstrap_ci, evaluate_users, split_users

OTHERS = ("item_knn", "transition3+trending", "item_knn+trending", "trending", "popularity")
SEQ = ("sasrec", "sasrec+trending")


def _headline(runs: list[dict]) -> dict:
    users = np.unique(runs[0]["user"])
    per_user = np.mean([[r["hr"][r["user"] == u].mean() for u in users] for r in runs], 0)
    return {"hr10": float(per_user.mean()), "hr10_ci": bootstrap_ci(per_user), "n_users": int(len(users)),
            "per_seed": [float(np.mean([r["hr"][r["user"] == u].mean() for u in users])) for r in runs]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--no-prior", action="store_true")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    ds = load_dataset(a.dataset)
    split, log = split_users(ds), EventLog(ds)
    fit = np.r_[split.train, split.val]
    runs, fit_s, params = {}, {}, {}

    def run(name, make, seed_list):
        runs[name], fit_s[name], params[name] = [], [], []
        for s in seed_list:
            t0 = time.perf_counter()
            m = make(s).fit(ds, fit, log)
            fit_s[name].append(round(time.perf_counter() - t0, 1))
            params[name].append(getattr(m, "params", None) if name != "metarec" else None)
            runs[name].append(evaluate_users(m, ds, split.test, log, ks=HEADLINE_KS, progress=True,
                                             desc=f"{name} seed {s}"))
            print(f"{name} seed {s}: fit {fit_s[name][-1]} s, headline HR@10 {_headline(runs[name][-1:])['hr10']:.3f}",
                  flush=True)

    for n in OTHERS + SEQ:
        run(n, lambda s, n=n: make_baseline(n, s if n in SEEDED else None), seeds if n in SEEDED else [None])
    if not a.no_prior:
        from metarec.sdk.recommender import MetaRecRecommender
        from metarec.sdk.train import TrainConfig

        run("metarec", lambda s: MetaRecRecommender(TrainConfig(seed=s)), seeds)

    def seeded(name):  # a deterministic run stands for every seed
        return runs[name] if len(runs[name]) == len(seeds) else runs[name] * len(seeds)

    heads = {n: _headline(r) for n, r in runs.items()}
    pairs = {}
    for s in SEQ:
        for o in [n for n in runs if n != s]:
            d = paired_difference(seeded(s), seeded(o), HEADLINE_KS)
            pairs[f"{s} - {o}"] = {k: d[k] for k in ("hr10_diff", "hr10_diff_ci", "n_users", "n_queries",
                                                    "n_seeds", "measurable")}
    out = {"command": f"OMP_NUM_THREADS=1 python lab/seq_paired.py {a.out} --dataset {a.dataset} --seeds {a.seeds}"
                      + (" --no-prior" if a.no_prior else ""),
           "dataset": ds.name, "users": "test", "ks": list(HEADLINE_KS), "seeds": seeds, "headline": heads,
           "paired": pairs, "fit_seconds": fit_s,
           "sasrec_params": [{k: v for k, v in (p or {}).items() if k != "inner_val_curve"} for p in params["sasrec"]],
           "blend_weights": [p["weights"] for p in params["sasrec+trending"]]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    for n, h in heads.items():
        print(f"{n:22s} HR@10 {h['hr10']:.3f} [{h['hr10_ci'][0]:.3f}, {h['hr10_ci'][1]:.3f}]  fit s {fit_s[n]}")
    for k, d in pairs.items():
        lo, hi = d["hr10_diff_ci"]
        print(f"{k:45s} {d['hr10_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
