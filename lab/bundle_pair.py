"""Two bundles on the same PROTOCOL v1 test queries through the runtime's public API, paired: HR@10 over K = 1..3,
B minus A with its 95% bootstrap interval over users (e.g. a bundle exported before and after a change to export).

    python lab/bundle_pair.py BUNDLE_A BUNDLE_B DATASET --key artifacts/keys/public.pem [--json OUT]
"""
from __future__ import annotations

import argparse
import json

from metarec.bench.runtime_eval import runtime_next_item
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import HEADLINE_KS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("dataset")
    ap.add_argument("--key", required=True)
    ap.add_argument("--json")
    a = ap.parse_args()
    ds = load_dataset(a.dataset)
    ra, rb = (runtime_next_item(x, a.key, ds, progress=False) for x in (a.a, a.b))
    p = paired_difference(rb["results"], ra["results"], HEADLINE_KS)
    out = {"dataset": ds.name, "a": a.a, "b": a.b, "hr10_a": ra["headline"]["hr10"], "hr10_b": rb["headline"]["hr10"],
           "n_users": ra["headline"]["n_users"], "b_minus_a": p["hr10_diff"],
           "ci": [float(x) for x in p["hr10_diff_ci"]]}
    print(f"{ds.name}: A {out['hr10_a']:.3f}, B {out['hr10_b']:.3f}, B minus A {out['b_minus_a']:+.3f} "
          f"[{out['ci'][0]:+.3f}, {out['ci'][1]:+.3f}] over {out['n_users']} test users (K = 1..3)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
