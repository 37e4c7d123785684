"""Does an item table with int8 rows for the most-used items and int4 rows for the rest keep int8's accuracy at
fewer bytes? Shares of int8 rows by fit-user popularity, each served as the bundle serves it and paired against
the float32 table on the same queries; validation users (validation prior) and test users (shipped prior).

    OMP_NUM_THREADS=1 python lab/mixed_precision.py CHECKPOINT BUNDLE OUT.json
"""
import argparse
import json

import numpy as np
import torch

from quant_variants import KS, paired_row, quant, row_text, serve, setup

from metarec.sdk.protocol import evaluate_users

SHARES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def mixed(table, order, share):
    n = len(table)
    hi = order[:int(round(share * n))]
    t = torch.from_numpy(table)
    q4, _ = quant(t, bits=4, group=32, scale_dtype=torch.float16)
    q8, _ = quant(t, bits=8, group=table.shape[1], scale_dtype=torch.float16)
    out = q4.copy()
    out[hi] = q8[hi]
    d = table.shape[1]
    nb = len(hi) * (d + 2) + (n - len(hi)) * (d // 2 + 2 * (d // 32))
    return out, nb


def run(model, tcfg, shipped, ds, users, log, delta, steps, order):
    ref_table = model.export_item_table().numpy()
    ref = evaluate_users(serve(model, tcfg, shipped, ref_table, delta, steps), ds, users, log, ks=KS)
    out = {}
    for share in SHARES:
        deq, nb = mixed(ref_table, order, share)
        res = evaluate_users(serve(model, tcfg, shipped, deq, delta, steps), ds, users, log, ks=KS)
        out[str(share)] = {"bytes": int(nb), **paired_row(res, ref)}
        print(f"  int8 share {share:4.2f} {nb / 1000:6.1f} KB  {row_text(out[str(share)])}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint"), ap.add_argument("bundle"), ap.add_argument("out")
    ap.add_argument("--key", default="artifacts/keys/public.pem")
    a = ap.parse_args()
    c = setup(a.checkpoint, a.bundle, a.key)
    ds, split, log = c["ds"], c["split"], c["log"]
    counts = np.bincount(ds.item[np.isin(ds.user, split.train)], minlength=ds.n_items)
    order = np.argsort(-counts, kind="stable")
    out = {"checkpoint": a.checkpoint, "bundle": a.bundle, "dataset": ds.name}
    for part, prior, cfg, users in (("validation", c["vprior"], c["vcfg"], split.val),
                                    ("test", c["prior"], c["tcfg"], split.test)):
        print(f"{ds.name}: {part} users ({len(users)})")
        out[part] = run(prior, cfg, c["shipped"], ds, users, log, c["delta"], c["steps"], order)
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
