"""Diagnostic (val users, seed 0): how do history and trend share the K=1..3 headline?"""
import dataclasses, sys, json
import numpy as np, torch
torch.set_num_threads(1)
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users, EventLog, evaluate_users, summarize_next_item
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
from metarec.sdk import baselines as B
ds = load_dataset("ml-100k"); sp = split_users(ds); log = EventLog(ds)
cfg = TrainConfig(fit_users="train", seed=0, progress=False)
rec = MetaRecRecommender(config=cfg, checkpoint="runs/diag_s0.pt", save_to="runs/diag_s0.pt").fit(ds, sp.train, log)
KS=(1,2,3)
def head(m):
    return summarize_next_item(evaluate_users(m, ds, sp.val, log, ks=KS), ks=KS)["headline"]["hr10"]
class W:
    name="w"
    def __init__(s, f): s.f=f
    def score(s, q): return s.f(q)
m = rec.model
def sc(q, trend_mult=1.0, hist=True):
    qq = q if hist else dataclasses.replace(q, support_items=q.support_items[:0])
    hv, hm = rec.history(qq.support_items)
    s = torch.as_tensor(np.asarray(q.scene, np.float32))
    tr = torch.from_numpy(np.log1p(np.asarray(q.trending, np.float32)))
    h = rec.adapted_head(qq.support_items, q.scene)
    with torch.no_grad():
        z = m.user_vector(h, hv, hm, s)
        out = torch.nn.functional.linear(z, rec.table) + rec.bias + trend_mult * m.trend_term(s, tr)
    return out.numpy().astype(np.float64)
print("default", head(rec), flush=True)
print("no history (K=0 scoring)", head(W(lambda q: sc(q, hist=False))), flush=True)
for c in (0.5, 1.5, 2.0, 3.0):
    print("trend x", c, head(W(lambda q, c=c: sc(q, trend_mult=c))), flush=True)
with torch.no_grad():
    print("trend weight at a few scenes", [float(m.trend_weights(torch.as_tensor(np.asarray(q, np.float32)))[0]) for q in [np.zeros(15)]])
