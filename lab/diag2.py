"""Diagnostic (val users, usage: diag2.py SEED): headline and K=0 HR@10 with the dot product, item bias and trend term
of the default prior each rescaled at serving."""
import dataclasses, sys
import numpy as np, torch
torch.set_num_threads(1)
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users, EventLog, evaluate_users, summarize_next_item
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
ds = load_dataset("ml-100k"); sp = split_users(ds); log = EventLog(ds)
seed = int(sys.argv[1])
cfg = TrainConfig(fit_users="train", seed=seed, progress=False)
rec = MetaRecRecommender(config=cfg, checkpoint=f"runs/diag_s{seed}.pt", save_to=f"runs/diag_s{seed}.pt").fit(ds, sp.train, log)
KS=(0,1,2,3)
m = rec.model
# cache queries' pieces
class W:
    name="w"
    def __init__(s, f): s.f=f
    def score(s, q): return s.f(q)
cache = {}
def parts(q):
    key = (q.user, len(q.support_items))
    if key not in cache:
        hv, hm = rec.history(q.support_items)
        s = torch.as_tensor(np.asarray(q.scene, np.float32))
        tr = torch.from_numpy(np.log1p(np.asarray(q.trending, np.float32)))
        h = rec.adapted_head(q.support_items, q.scene)
        with torch.no_grad():
            z = m.user_vector(h, hv, hm, s)
            cache[key] = ((torch.nn.functional.linear(z, rec.table)).numpy(), rec.bias.numpy(), m.trend_term(s, tr).numpy())
    return cache[key]
def run(a, b, c):
    res = evaluate_users(W(lambda q: (a*parts(q)[0] + b*parts(q)[1] + c*parts(q)[2]).astype(np.float64)), ds, sp.val, log, ks=KS)
    s = summarize_next_item(res, ks=KS)
    return s["headline"]["hr10"], s["per_k"]["0"]["hr10"]
for a, b, c in [(1,1,1),(1,1,2),(1,1,3),(1,0.5,1),(1,0.5,2),(1,0,1),(1,0,2),(0.5,1,1),(0,1,1),(0,1,2),(0,0,1),(2,1,1)]:
    print(f"dot x{a} bias x{b} trend x{c}: headline %.3f  K0 %.3f" % run(a,b,c), flush=True)
