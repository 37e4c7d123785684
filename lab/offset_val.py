"""new_trend_offset for a variant, chosen as ModelConfig documents: on VALIDATION users of the new-item run (fit on
train users without the withheld items), HR@10 over ALL targets at positions 2..20 (seen and new) and over the new
ones. usage: offset_val.py "variant" seeds offsets"""
import sys, numpy as np, torch
torch.set_num_threads(1)
from ablations import ABLATIONS  # lab/ablations.py (run from the repo root: python lab/offset_val.py ...)
from metarec.sdk.coldstart import variant_config
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, make_query, rank_metrics, split_users, withheld_items, subset_events
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
ds = load_dataset("ml-100k"); sp = split_users(ds)
held = np.zeros(ds.n_items, bool); held[withheld_items(ds)] = True
keep = ~held[ds.item]
full_log, vis_log = EventLog(ds), EventLog(ds, keep)
per_user = ds.user_events()
qs = [(u, p) for u in sp.val for p in range(1, min(20, len(per_user[u])))
      if ds.item[per_user[u][p]] not in ds.item[per_user[u][:p]]]
for seed in [int(s) for s in sys.argv[2].split(",")]:
    cfg = variant_config(TrainConfig(fit_users="train"), sys.argv[1], seed, ABLATIONS)
    rec = MetaRecRecommender(config=cfg).fit(subset_events(ds, keep), sp.train, vis_log)
    queries = [(make_query(ds, vis_log, u, per_user[u], p, ds.ts[per_user[u][p]], trend_log=full_log),
                int(ds.item[per_user[u][p]])) for u, p in qs]
    for off in [float(x) for x in sys.argv[3].split(",")]:
        rec.model.cfg.new_trend_offset = off
        hr_all, hr_new = [], []
        for q, t in queries:
            h = rank_metrics(rec.score(q), t, q.support_items)[0]
            hr_all.append(h)
            if held[t]:
                hr_new.append(h)
        print(f"{sys.argv[1]} seed {seed} offset {off}: HR@10 all pos 2..20 {np.mean(hr_all):.4f} (n={len(hr_all)}) new {np.mean(hr_new):.4f} (n={len(hr_new)})", flush=True)
