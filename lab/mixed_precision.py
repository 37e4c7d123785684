"""Does an item table with int8 rows for the most-used items and int4 rows for the rest keep int8's accuracy at
fewer bytes? Each form is served as the bundle serves it and paired against the float32 table on the same queries.

    OMP_NUM_THREADS=1 python lab/mixed_precision.py CHECKPOINT BUNDLE OUT.json [--forms shares|export]

`shares` (session 12's question): shares of int8 rows by fit-user popularity, on validation users (validation
prior) and test users (shipped prior). `export`: export's unpruned candidates exactly as export quantizes them
(export/compress.py table_of), on test users and, in-sample, with the shipped prior on validation users: what each
form costs there, and whether the shipped prior's own fit users would have shown it.
BUNDLE: a bundle exported from CHECKPOINT (its manifest gives the serving choices).
"""
import argparse
import json

import numpy as np
import torch

from quant_variants import KS, paired_row, quant, row_text, serve, setup

from metarec.export.compress import round_head, table_of
from metarec.export.config import CompressConfig
from metarec.sdk.protocol import evaluate_users

SHARES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
EXPORT_FORMS = {"int4": CompressConfig(quant="int4"), "mixed 10%": CompressConfig(quant="mixed", int8_share=0.1),
                "mixed 30%": CompressConfig(quant="mixed", int8_share=0.3), "int8": CompressConfig(quant="int8")}


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


def run(model, tcfg, shipped, ds, users, log, delta, steps, forms):
    ref_table = model.export_item_table().numpy()
    ref = evaluate_users(serve(model, tcfg, shipped, ref_table, delta, steps), ds, users, log, ks=KS)
    out = {}
    for name, make in forms.items():
        m, deq, nb = make(model, ref_table)
        res = evaluate_users(serve(m, tcfg, shipped, deq, delta, steps), ds, users, log, ks=KS)
        out[name] = {"bytes": int(nb), **paired_row(res, ref)}
        print(f"  {name:16s} {nb / 1000:6.1f} KB  {row_text(out[name])}", flush=True)
    return out


def share_forms(ds, split):
    counts = np.bincount(ds.item[np.isin(ds.user, split.train)], minlength=ds.n_items)
    order = np.argsort(-counts, kind="stable")
    return {f"int8 share {s:4.2f}": (lambda m, t, s=s: (m, *mixed(t, order, s))) for s in SHARES}


def export_forms():
    def make(ccfg):
        def f(model, _):
            m = round_head(model, ccfg.head_dtype)
            qt = table_of(m, ccfg)
            return m, qt.dequantized, len(qt.data)
        return f
    return {name: make(c) for name, c in EXPORT_FORMS.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint"), ap.add_argument("bundle"), ap.add_argument("out")
    ap.add_argument("--key", default="artifacts/keys/public.pem")
    ap.add_argument("--forms", choices=("shares", "export"), default="shares")
    a = ap.parse_args()
    c = setup(a.checkpoint, a.bundle, a.key)
    ds, split, log = c["ds"], c["split"], c["log"]
    out = {"checkpoint": a.checkpoint, "bundle": a.bundle, "dataset": ds.name, "forms": a.forms}
    parts = [("validation", c["vprior"], c["vcfg"], split.val)] if a.forms == "shares" else \
        [("validation, shipped prior", c["prior"], c["tcfg"], split.val)]  # in-sample: does it see test's loss?
    parts.append(("test", c["prior"], c["tcfg"], split.test))
    forms = share_forms(ds, split) if a.forms == "shares" else export_forms()
    for part, prior, cfg, users in parts:
        print(f"{ds.name}: {part} users ({len(users)})")
        out[part] = run(prior, cfg, c["shipped"], ds, users, log, c["delta"], c["steps"], forms)
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
