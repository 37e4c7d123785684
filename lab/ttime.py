"""Training seconds of the default and of the by-K gate + attribute sensitivity candidate (test-run size, twice)."""
import sys, numpy as np, torch, time
torch.set_num_threads(1)
from ablations import ABLATIONS  # lab/ablations.py (run from the repo root: python lab/ttime.py ...)
from metarec.sdk.coldstart import variant_config
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users
from metarec.sdk.train import TrainConfig, fit_model
ds = load_dataset("ml-100k"); sp = split_users(ds)
for rep in range(2):
    for name in ["full (metasgd, 1 step)", "trend gate by support size + trend sensitivity from attributes"]:
        cfg = variant_config(TrainConfig(), name, 0, ABLATIONS)
        _, st = fit_model(cfg, ds, np.r_[sp.train, sp.val])
        print(f"{name}: {st['train_seconds']:.1f} s", flush=True)
