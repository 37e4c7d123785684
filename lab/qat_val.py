"""Would quantization-aware fine-tuning make the int4 table (near) free? The prior is fine-tuned N steps with its
own outer loss while its item table passes through int4 fake quantization (torchao's symmetric per-group grid,
half scales; straight-through gradients), then quantized as export does. Controls: int4 without fine-tuning, and
the same fine-tune without fake quantization. Test users (the shipped prior, fine-tuned on the fit users) and
validation users (the validation prior, fine-tuned on the train users), served as the bundle serves (session 11).

    OMP_NUM_THREADS=1 python lab/qat_val.py CHECKPOINT BUNDLE OUT.json [--steps 100]
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from metarec.export.compress import quantize_table, sdk_finetune
from metarec.sdk.protocol import evaluate_users

sys.path.insert(0, str(Path(__file__).parent))
from quant_variants import KS, paired_row, row_text, serve, setup  # noqa: E402

torch.set_num_threads(1)


def fake_int4(t: torch.Tensor, group: int = 32) -> torch.Tensor:
    """t through torchao's symmetric int4 grid (scale = amax / 7.5, as a half), straight-through gradient."""
    n, d = t.shape
    g = t.reshape(n, d // group, group)
    scale = (g.detach().abs().amax(-1, keepdim=True) / 7.5).half().float().clamp_min(1e-8)
    q = torch.clamp(torch.round(g / scale), -8, 7) * scale
    return t + (q.reshape(n, d) - t).detach()


def finetuned(model, ds, users, tcfg, steps, qat):
    m = copy.deepcopy(model)
    if qat:
        plain = m.item_table
        m.item_table = lambda id_keep=None: fake_int4(plain(id_keep)) if m.training else plain(id_keep)
    m = sdk_finetune(ds, users, tcfg)(m, steps)
    if qat:
        del m.item_table
    return m.eval()


def run(model, tcfg, shipped, ds, users, fit, log, delta, steps, ft_steps):
    ref = evaluate_users(serve(model, tcfg, shipped, model.export_item_table().numpy(), delta, steps), ds, users,
                         log, ks=KS)
    out = {}
    variants = {"int4": (model, True), "fine-tune, fp32": (finetuned(model, ds, fit, tcfg, ft_steps, False), False),
                "qat, fp32": (finetuned(model, ds, fit, tcfg, ft_steps, True), False)}
    variants["fine-tune + int4"] = (variants["fine-tune, fp32"][0], True)
    variants["qat + int4"] = (variants["qat, fp32"][0], True)
    for name, (m, q) in variants.items():
        table = m.export_item_table().numpy()
        if q:
            table = quantize_table(table, "int4", 32, "float16").dequantized
        res = evaluate_users(serve(m, tcfg, shipped, table, delta, steps), ds, users, log, ks=KS)
        out[name] = paired_row(res, ref)
        print(f"  {name:18s} {row_text(out[name])}", flush=True)
    out["fp32"] = {"hr10_k1_3": float(np.mean(ref["hr"][ref["k"] <= 3])), "hr10_k1_10": float(np.mean(ref["hr"]))}
    print(f"  fp32 K1-3 {out['fp32']['hr10_k1_3']:.3f} K1-10 {out['fp32']['hr10_k1_10']:.3f}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint"), ap.add_argument("bundle"), ap.add_argument("out")
    ap.add_argument("--key", default="artifacts/keys/public.pem")
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args()
    c = setup(a.checkpoint, a.bundle, a.key)
    ds, split, log = c["ds"], c["split"], c["log"]
    out = {"checkpoint": a.checkpoint, "dataset": ds.name, "finetune_steps": a.steps}
    print(f"{ds.name}: validation users ({len(split.val)})")
    out["validation"] = run(c["vprior"], c["vcfg"], c["shipped"], ds, split.val, split.train, log, c["delta"],
                            c["steps"], a.steps)
    print(f"{ds.name}: test users ({len(split.test)})")
    out["test"] = run(c["prior"], c["tcfg"], c["shipped"], ds, split.test, np.r_[split.train, split.val], log,
                      c["delta"], c["steps"], a.steps)
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
