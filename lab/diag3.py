"""new_trend_offset at serving, default prior, validation users (usage: diag3.py SEED). Reuses runs/diag_s<SEED>.pt
when diag.py / diag2.py left it (else trains the same seeded model and saves it there)."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users, EventLog, evaluate_users, summarize_next_item
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
ds = load_dataset("ml-100k"); sp = split_users(ds); log = EventLog(ds)
seed = int(sys.argv[1])
rec = MetaRecRecommender(config=TrainConfig(fit_users="train", seed=seed, progress=False), checkpoint=f"runs/diag_s{seed}.pt",
                         save_to=f"runs/diag_s{seed}.pt").fit(ds, sp.train, log)
print("known", int(rec.model.item_known.sum()))
for off in (0.5, 1.0, 1.5, 2.0):
    rec.model.cfg.new_trend_offset = off
    s = summarize_next_item(evaluate_users(rec, ds, sp.val, log, ks=(0, 1, 2, 3)), ks=(0, 1, 2, 3))
    print(f"seed {seed} new_trend_offset {off}: headline HR {s['headline']['hr10']:.3f} NDCG {s['headline']['ndcg10']:.3f} K0 {s['per_k']['0']['hr10']:.3f} K1 {s['per_k']['1']['hr10']:.3f}", flush=True)
