"""Which 4-bit quantizer of the item table loses least? Test users (the shipped prior) and validation users (the
validation prior), each served as the bundle serves it (steps, popularity delta, item-item term, weights by
history length); every variant paired against the float32 table on the same queries (session 11, issue 20).

    OMP_NUM_THREADS=1 python lab/quant_variants.py CHECKPOINT BUNDLE OUT.json [--users N]

BUNDLE: a bundle exported from CHECKPOINT with an unpruned table (its manifest gives the serving choices).
"""
import argparse
import copy
import dataclasses
import json

import numpy as np
import torch
from torch import nn

from metarec.bench.runtime_eval import _serve_as
from metarec.export.select_blocks import validation_state
from metarec.export.report import compressed_recommender
from metarec.runtime.bundle import open_bundle
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users
from metarec.sdk.train import TrainConfig, load_checkpoint, model_from_state

torch.set_num_threads(1)
KS = tuple(range(1, 11))


def quant(table, bits, group, algo="affine", mapping="SYMMETRIC", scale_dtype=None):
    """torchao's weight quantizer on a Linear holding the table; returns the dequantized table and its bytes."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, MappingType, PerGroup, quantize_
    from torchao.quantization.quantize_.workflows.intx.intx_choose_qparams_algorithm import (
        IntxChooseQParamsAlgorithm)

    n, d = table.shape
    lin = nn.Linear(d, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(table)
    cfg = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=getattr(torch, f"int{bits}"), weight_granularity=PerGroup(group),
        weight_mapping_type=getattr(MappingType, mapping), weight_scale_dtype=scale_dtype,
        intx_choose_qparams_algorithm=IntxChooseQParamsAlgorithm(algo))
    quantize_(lin, cfg)
    w = lin.weight
    q = w.qdata.detach().float().reshape(n, d)
    s = w.scale.detach().reshape(n, d // group)
    zp = getattr(w, "zero_point", None)
    z = zp.detach().float().reshape(n, d // group) if zp is not None else torch.zeros_like(s, dtype=torch.float32)
    deq = ((q.reshape(n, d // group, group) - z[..., None]) * s.float()[..., None]).reshape(n, d)
    sb = 2 if scale_dtype in (torch.float16, torch.bfloat16) else 4
    nb = n * d * bits // 8 + n * (d // group) * sb + (n * (d // group) if bool((z != 0).any()) else 0)
    return deq.numpy().astype(np.float32), nb


VARIANTS = {
    "int4 g32 affine (shipped)": dict(bits=4, group=32),
    "int4 g32 affine fp16 scale": dict(bits=4, group=32, scale_dtype=torch.float16),
    "int4 g32 hqq": dict(bits=4, group=32, algo="hqq_scale_only"),
    "int4 g32 hqq fp16 scale": dict(bits=4, group=32, algo="hqq_scale_only", scale_dtype=torch.float16),
    "int4 g32 noclip": dict(bits=4, group=32, mapping="SYMMETRIC_NO_CLIPPING_ERR"),
    "int4 g16 affine fp16 scale": dict(bits=4, group=16, scale_dtype=torch.float16),
    "int4 g16 hqq fp16 scale": dict(bits=4, group=16, algo="hqq_scale_only", scale_dtype=torch.float16),
    "int4 g32 rotated fp16": dict(bits=4, group=32, scale_dtype=torch.float16, pre="rotate"),
    "int4 g32 awq0.5 fp16": dict(bits=4, group=32, scale_dtype=torch.float16, pre=0.5),
    "int4 g32 awq1 fp16": dict(bits=4, group=32, scale_dtype=torch.float16, pre=1.0),
    "int4 g16 awq0.5 fp16": dict(bits=4, group=16, scale_dtype=torch.float16, pre=0.5),
    "int8 g32": dict(bits=8, group=32),
}


def serve(model, tcfg, shipped, table, delta, steps):
    m = copy.deepcopy(model)
    m.cfg = dataclasses.replace(m.cfg, inner_steps=steps)
    if delta:
        with torch.no_grad():
            m.pop_w += delta
    cfg = dataclasses.replace(tcfg, model=m.cfg)
    return _serve_as(compressed_recommender(cfg, m, table, "int4"), shipped)


def transformed(table, kw, model, ds, train_users):
    """Quantize table @ A and decode back with A^-1: A a random rotation, or diag(importance^alpha) (AWQ-like:
    the score's error weights dimension j by E[z_j^2], the user vectors' second moment)."""
    kw = dict(kw)
    pre = kw.pop("pre", None)
    t = torch.from_numpy(table)
    if pre is None:
        return quant(t, **kw)
    d = table.shape[1]
    if pre == "rotate":
        A = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0]
        Ainv = A.T
    else:
        from metarec.export.compress import early_histories, measure_importance
        imp = measure_importance(model, early_histories(ds, train_users, model.cfg.hist_len))["dim"]
        ez = imp / np.maximum((table ** 2).mean(0), 1e-12)
        c = torch.from_numpy((ez / ez.mean()) ** (pre / 2)).float()
        A, Ainv = torch.diag(c), torch.diag(1 / c)
    deq, nb = quant(t @ A, **kw)
    return (torch.from_numpy(deq) @ Ainv).numpy().astype(np.float32), nb + d * 2


def run(model, tcfg, shipped, ds, users, log, delta, steps, train_users):
    ref_table = model.export_item_table().numpy()
    ref = evaluate_users(serve(model, tcfg, shipped, ref_table, delta, steps), ds, users, log, ks=KS)
    out = {"fp32": {"hr10_k1_3": float(np.mean(ref["hr"][ref["k"] <= 3])), "hr10_k1_10": float(np.mean(ref["hr"]))}}
    for name, kw in VARIANTS.items():
        deq, nb = transformed(ref_table, kw, model, ds, train_users)
        err = deq - ref_table
        snr = 10 * np.log10((ref_table ** 2).sum() / (err ** 2).sum())
        res = evaluate_users(serve(model, tcfg, shipped, deq, delta, steps), ds, users, log, ks=KS)
        out[name] = {"bytes": int(nb), "snr_db": float(snr), **paired_row(res, ref)}
        print(f"  {name:30s} {nb / 1024:6.1f} KB snr {snr:5.1f} dB  {row_text(out[name])}", flush=True)
    return out


def paired_row(res: dict, ref: dict) -> dict:
    """HR@10 of `res` and its paired difference to `ref` (same queries), over K = 1..3 and K = 1..10."""
    row = {}
    for tag, ks in (("k1_3", (1, 2, 3)), ("k1_10", KS)):
        p = paired_difference(res, ref, ks)
        row[f"hr10_{tag}"] = float(np.mean(res["hr"][np.isin(res["k"], ks)]))
        row[f"diff_{tag}"] = [p["hr10_diff"], *map(float, p["hr10_diff_ci"])]
    return row


def row_text(row: dict) -> str:
    return "  ".join(f"{name} {row[f'hr10_{tag}']:.3f} {row[f'diff_{tag}'][0]:+.4f} [{row[f'diff_{tag}'][1]:+.4f},"
                     f"{row[f'diff_{tag}'][2]:+.4f}]" for name, tag in (("K1-3", "k1_3"), ("K1-10", "k1_10")))


def setup(checkpoint, bundle, key):
    """What both lab scripts read: the bundle's serving choices, the shipped and validation priors, the data."""
    shipped = open_bundle(bundle, key)
    m = shipped.manifest
    delta = float(m.configs.get("selection", {}).get("popularity", {}).get("delta", 0.0))
    prior, tcfg, ck = load_checkpoint(checkpoint)
    val = ck["validation"]
    vcfg = TrainConfig.from_dict(val["train_config"])
    ds = load_dataset(vcfg.dataset)
    vprior = model_from_state(vcfg, int(val["n_items"]), validation_state(val), "validation prior")
    return dict(shipped=shipped, steps=m.inner_steps, delta=delta, prior=prior, tcfg=tcfg, vprior=vprior,
                vcfg=vcfg, ds=ds, split=split_users(ds), log=EventLog(ds))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint"), ap.add_argument("bundle"), ap.add_argument("out")
    ap.add_argument("--key", default="artifacts/keys/public.pem")
    a = ap.parse_args()
    c = setup(a.checkpoint, a.bundle, a.key)
    ds, split, log = c["ds"], c["split"], c["log"]
    out = {"checkpoint": a.checkpoint, "bundle": a.bundle, "dataset": ds.name}
    print(f"{ds.name}: validation users ({len(split.val)}), validation prior")
    out["validation"] = run(c["vprior"], c["vcfg"], c["shipped"], ds, split.val, log, c["delta"], c["steps"],
                            split.train)
    print(f"{ds.name}: test users ({len(split.test)}), shipped prior")
    out["test"] = run(c["prior"], c["tcfg"], c["shipped"], ds, split.test, log, c["delta"], c["steps"], split.train)
    json.dump(out, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
