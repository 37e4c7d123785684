"""The per-K trend gate offsets a variant learns (usage: koff.py "ablation name" SEED), fit on train users."""
import sys, numpy as np, torch
torch.set_num_threads(1)
from ablations import ABLATIONS  # lab/ablations.py (run from the repo root: python lab/koff.py ...)
from metarec.sdk.coldstart import variant_config
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users
from metarec.sdk.train import TrainConfig, fit_model
ds = load_dataset("ml-100k"); sp = split_users(ds)
cfg = variant_config(TrainConfig(fit_users="train"), sys.argv[1], int(sys.argv[2]), ABLATIONS)
m, st = fit_model(cfg, ds, sp.train)
print(st)
print("k_off", [round(float(x), 3) for x in m.trend_k_off])
with torch.no_grad():
    sc = torch.zeros(15)
    for k in range(0, 11):
        hm = torch.zeros(10); hm[10 - k:] = 1
        w, dw = m.trend_weights(sc, hm)
        print(k, round(float(w), 3), round(float(w + dw), 3))
    print("known items", int(m.item_known.sum()), "of", m.n_items)
