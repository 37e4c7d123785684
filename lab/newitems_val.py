"""New-item HR@10 on VALIDATION users (fit on train users with the withheld 10% of items): PROTOCOL's new-item
run with the split's test role played by the validation users. usage: newitems_val.py OUT.json "name1;name2" 0,1"""
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from ablations import ABLATIONS  # lab/ablations.py (run from the repo root: python lab/newitems_val.py ...)
from metarec.sdk.coldstart import variant_config
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import Split, new_item_run, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
ds = load_dataset("ml-100k"); sp = split_users(ds)
vsplit = Split(train=sp.train, val=sp.val[:0], test=sp.val)
out = {}
for name in sys.argv[2].split(";"):
    for seed in [int(s) for s in sys.argv[3].split(",")]:
        cfg = variant_config(TrainConfig(fit_users="train"), name, seed, ABLATIONS)
        r = new_item_run(lambda: MetaRecRecommender(config=cfg), ds, vsplit)
        out.setdefault(name, {})[seed] = r
        print(name, seed, r["hr10"], r["ndcg10"], r["n"], flush=True)
json.dump(out, open(sys.argv[1], "w"), default=float)
