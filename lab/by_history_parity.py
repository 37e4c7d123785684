"""Does the runtime serve a real bundle's weights by history length as the sdk's scorer does? Top-10 of
`metarec.runtime.Recommender` vs the eager prior served as the bundle (bench/runtime_eval.py parity), on the first
N test users at K = 0, 1, 2, 3, 5, 8 (every bucket). Session 10, issue 20.
usage: python lab/by_history_parity.py BUNDLE PUBLIC_KEY CHECKPOINT DATASET [--users 80] [--json OUT]"""
import argparse
import json

from metarec.bench.runtime_eval import _fp32_reference, _use_bundle_weights, runtime_next_item
from metarec.runtime.bundle import open_bundle
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import split_users
from metarec.sdk.train import load_checkpoint

ap = argparse.ArgumentParser()
for a in ("bundle", "key", "checkpoint", "dataset"):
    ap.add_argument(a)
ap.add_argument("--users", type=int, default=80)
ap.add_argument("--json")
a = ap.parse_args()
shipped = open_bundle(a.bundle, a.key)
model, cfg, _ = load_checkpoint(a.checkpoint)
eager = _fp32_reference(model, cfg, shipped)
_use_bundle_weights(eager, shipped)  # the table and bias as shipped: parity measures serving, not quantization
ds = load_dataset(a.dataset)
rt = runtime_next_item(a.bundle, a.key, ds, users=split_users(ds).test[:a.users], ks=(0, 1, 2, 3, 5, 8), eager=eager)
out = {"by_history": shipped.manifest.by_history and vars(shipped.manifest.by_history) | {}, "parity": rt["parity"]}
print(json.dumps(out["parity"], indent=1))
if a.json:
    json.dump(out, open(a.json, "w"), indent=1, default=list)
