"""val users, model trained on train users (seed s): trend term x c when K >= 1 (K=0 as is)."""
import sys, json, numpy as np, torch
torch.set_num_threads(1)
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users, EventLog, evaluate_users, summarize_next_item, learning_curve
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
ds = load_dataset("ml-100k"); sp = split_users(ds); log = EventLog(ds)
seed = int(sys.argv[1])
rec = MetaRecRecommender(config=TrainConfig(fit_users="train", seed=seed, progress=False)).fit(ds, sp.train, log)
m = rec.model
cache = {}
def parts(q):
    """(the model's scores, its trend term) of one query, computed once for every c."""
    key = (q.user, len(q.support_items), float(q.t))
    if key not in cache:
        s = torch.as_tensor(np.asarray(q.scene, np.float32))
        tr = torch.from_numpy(np.log1p(np.asarray(q.trending, np.float32)))
        with torch.no_grad():
            cache[key] = (rec.score(q), m.trend_term(s, tr).numpy())
    return cache[key]
class W:
    name = "w"
    def __init__(s, c): s.c = c
    def score(s, q):
        base, tt = parts(q)
        if len(q.support_items) == 0 or s.c == 1.0:
            return base
        return base + (s.c - 1.0) * tt.astype(np.float64)
out = {}
for c in (1.0, 1.5, 2.0, 2.5, 3.0):
    r = summarize_next_item(evaluate_users(W(c), ds, sp.val, log, ks=(0, 1, 2, 3)), ks=(0, 1, 2, 3))
    lc = learning_curve(W(c), ds, sp.val, log, ks=(3, 5))["recall10"]
    out[c] = {"hr": r["headline"]["hr10"], "ndcg": r["headline"]["ndcg10"], **{f"k{k}": r["per_k"][str(k)]["hr10"] for k in (1, 2, 3)},
              "rec3": lc["3"]["recall10"], "rec5": lc["5"]["recall10"]}
    print(seed, c, {k: round(v, 4) for k, v in out[c].items()}, flush=True)
json.dump(out, open(f"runs/tscale_{seed}.json", "w"))
