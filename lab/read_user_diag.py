"""How much of the user does the prior read from 1-3 events? Serving-time variants of a checkpoint's prior on one
user split (no retraining), HR@10 over K = 1..3, each paired against the prior as served:
- "support hidden": the same prior with the history masked (what the world terms alone give);
- "+ table kNN x w": the prior plus w * z-scored sum of cosines between the support's rows and every row of the
  prior's own item table (does the table hold user signal the user vector does not use?);
- "prototype posterior": u = sum_m p(m | support) prototype_m, p from the softmax likelihood of the support under
  each of the prior's prototypes (a Bayes reader over the model's own prototypes), plus bias and the served trend.

    python lab/read_user_diag.py CHECKPOINT DATASET OUT.json [--users val|test]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import load_checkpoint

torch.set_num_threads(1)


def hr(res):
    return float(np.mean(res["hr"]))


class Variant:
    def __init__(self, rec, kind, w=0.0):
        self.rec, self.kind, self.w, self.name = rec, kind, w, kind
        t = rec.table.detach().numpy().astype(np.float64)
        self.unit = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
        self.t = t
        self.protos = rec.model.prototypes.detach().numpy().astype(np.float64)
        self.bias = rec.bias.detach().numpy().astype(np.float64)

    def score(self, q):
        rec = self.rec
        if self.kind == "hidden":
            q2 = type(q)(**{**q.__dict__, "support_items": q.support_items[:0], "support_ts": q.support_ts[:0]})
            return rec.score(q2)
        s = rec.score(q)
        if self.kind == "knn" and len(q.support_items):
            c = self.unit @ self.unit[np.asarray(q.support_items)].sum(0)
            s = s + self.w * (c - c.mean()) / (c.std() + 1e-9)
        if self.kind == "posterior" and len(q.support_items):
            logits = self.protos @ self.t.T + self.bias  # (M, N)
            logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
            post = logp[:, np.asarray(q.support_items)].sum(1)
            p = np.exp(post - post.max())
            p /= p.sum()
            u = p @ self.protos
            hidden = Variant.score(Variant(rec, "hidden"), q)  # bias + trend + scene terms without the user
            z = self.t @ u
            s = hidden + self.w * (z - z.mean()) / (z.std() + 1e-9)
        return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("dataset")
    ap.add_argument("out")
    ap.add_argument("--users", default="val")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    split, log = split_users(ds), EventLog(ds)
    model, cfg, _ = load_checkpoint(a.checkpoint)
    rec = MetaRecRecommender(cfg).set_model(model, cfg)
    users = split.val if a.users == "val" else split.test
    base = evaluate_users(rec, ds, users, log, ks=HEADLINE_KS)
    out = {"dataset": ds.name, "users": a.users, "checkpoint": a.checkpoint, "prior": hr(base), "rows": {}}
    print(f"prior {hr(base):.3f}", flush=True)
    for kind, w in [("hidden", 0.0), ("knn", 0.5), ("knn", 1.0), ("knn", 2.0), ("posterior", 1.0),
                    ("posterior", 2.0), ("posterior", 4.0)]:
        res = evaluate_users(Variant(rec, kind, w), ds, users, log, ks=HEADLINE_KS)
        p = paired_difference(res, base, HEADLINE_KS)
        name = kind if kind == "hidden" else f"{kind} x{w}"
        out["rows"][name] = {"hr10": hr(res), "minus_prior": p["hr10_diff"], "ci": p["hr10_diff_ci"]}
        print(f"{name}: {hr(res):.3f} ({p['hr10_diff']:+.3f} [{p['hr10_diff_ci'][0]:+.3f}, "
              f"{p['hr10_diff_ci'][1]:+.3f}])", flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
