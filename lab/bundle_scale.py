"""The bundle's own weights (eager sdk, test users): headline with the trend calibration at 2 and at 1.

    python lab/bundle_scale.py artifacts/bundle.model.pt   (after `make demo`)
"""
import dataclasses, sys, numpy as np, torch
torch.set_num_threads(1)
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users, EventLog, evaluate_users, summarize_next_item
from metarec.sdk.recommender import MetaRecRecommender
ds = load_dataset("ml-100k"); sp = split_users(ds); log = EventLog(ds)
rec = MetaRecRecommender(checkpoint=sys.argv[1]).fit(ds, np.concatenate([sp.train, sp.val]), log)
for sc in (2.0, 1.0):
    rec.model.cfg = dataclasses.replace(rec.model.cfg, trend_hist_scale=sc)
    r = summarize_next_item(evaluate_users(rec, ds, sp.test, log, ks=(1, 2, 3)), ks=(1, 2, 3))
    print(sys.argv[1], sc, round(r["headline"]["hr10"], 4), round(r["headline"]["ndcg10"], 4), {k: round(v["hr10"], 3) for k, v in r["per_k"].items()}, flush=True)
