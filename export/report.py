"""`compression_report`: every compression variant measured on PROTOCOL v1 -> <out>/export.{json,md}.

    python -m metarec.export.report artifacts/prior.pt --out bench/results \
        [--prune dim=24,prototypes=6] [--finetune-steps 100]

Per variant (fp32, int8, int4, pruned + int8, pruned + int4): the phone bundle's bytes (every file but model.onnx),
with a per-file breakdown; SNR (dB) of the variant's scores against the fp32 model's over the test queries;
mean top-10 overlap with fp32; headline HR@10 (K = 1..3, test users) through `metarec.sdk.protocol`. The variant
is scored with the exact tensors the phone gets (its decoded items.bin rows for history, adaptation, scoring);
that this equals the programs is what tests/export/test_programs.py checks.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .bundle import generate_keypair, export_bundle, load_model
from .compress import compress_model, early_histories, quantize_table, sdk_finetune, snr_db, topk_overlap
from .config import CompressConfig, ExportConfig, parse_prune

HEADLINE_KS = (1, 2, 3)


class _Recording:
    """A PROTOCOL v1 recommender that also keeps every score vector it returned (same query order every run)."""

    def __init__(self, rec):
        self.rec, self.name, self.scores = rec, rec.name, []

    def fit(self, *a, **k):
        return self

    def score(self, q):
        s = self.rec.score(q)
        self.scores.append(s.astype(np.float32))
        return s


def compressed_recommender(train_cfg, model, table: np.ndarray, quant: str):
    """`MetaRecRecommender` (sdk's PROTOCOL v1 wrapper) on the compressed model and the phone's table.

    No `fit`: the model is given (a fit would retrain when the checkpoint's data fingerprint is missing)."""
    from metarec.sdk.recommender import MetaRecRecommender

    bias = model.export_item_bias()
    if quant != "none":  # the bundle's score.pte holds the bias in float16 (programs.ScoreModule)
        bias = bias.to(torch.float16).float()
    table = torch.from_numpy(np.array(table, np.float32))
    return MetaRecRecommender(config=train_cfg).set_model(model, train_cfg, table, bias)


def compression_report(checkpoint, out_dir, variants=None, prune: str | dict | None = "dim=16,prototypes=4",
                       finetune_steps: int = 100, command: str | None = None, max_users: int | None = None) -> dict:
    """Measure every variant and write <out_dir>/export.{json,md}; returns the JSON dict."""
    from metarec.sdk.data import load_dataset
    from metarec.sdk.protocol import EventLog, evaluate_users, split_users, summarize_next_item
    from metarec.sdk.results import write_results

    base, _, extra = load_model(checkpoint)
    tcfg_d = extra.get("train", {})
    from metarec.sdk.train import TrainConfig

    tcfg = TrainConfig.from_dict(tcfg_d) if tcfg_d else TrainConfig()
    ds = load_dataset(tcfg.dataset)
    split, log = split_users(ds), EventLog(ds)
    fit_users = np.r_[split.train, split.val]
    test = split.test if max_users is None else split.test[:max_users]
    pr = parse_prune(prune)
    variants = variants or [("fp32", "none", False), ("int8", "int8", False), ("int4", "int4", False),
                            ("pruned+int8", "int8", True), ("pruned+int4", "int4", True)]
    hist = early_histories(ds, split.train, base.cfg.hist_len)
    keydir = Path(tempfile.mkdtemp(prefix="metarec-keys-"))
    generate_keypair(keydir)
    rows, ref_scores, pruned_cache = [], None, {}
    skipped = []
    for name, quant, pruned in variants:
        ccfg = CompressConfig(quant=quant, **(pr if pruned else {}),
                              finetune_steps=finetune_steps if pruned else 0).for_model(base.cfg.dim,
                                                                                        base.cfg.n_prototypes)
        if pruned and not ccfg.prunes:  # the prior is already at (or below) the prune targets: same as unpruned
            skipped.append(name)
            print(f"{name}: skipped, the prior (d={base.cfg.dim}, M={base.cfg.n_prototypes}) is within {pr}")
            continue
        if pruned:
            key = json.dumps(pr, sort_keys=True)
            if key not in pruned_cache:  # prune + fine-tune once; the int8 / int4 variants share the model
                pruned_cache[key] = compress_model(base, ccfg, hist, sdk_finetune(ds, fit_users, tcfg))
            model, creport = pruned_cache[key]
        else:
            model, creport = compress_model(base, ccfg)
        qt = quantize_table(model.export_item_table(), quant, ccfg.table_group_size(model.cfg.dim), ccfg.scale_dtype)
        with tempfile.TemporaryDirectory() as tmp:
            b = export_bundle(model, Path(tmp) / "b", quant=quant, key_path=keydir / "private.pem",
                              compress_config=CompressConfig(quant=quant),  # already pruned above
                              export_config=ExportConfig(onnx=name == "fp32"), item_ids=list(ds.item_ids))
            files = {p.name: p.stat().st_size for p in sorted(b.iterdir())}
        rec = _Recording(compressed_recommender(tcfg, model, qt.dequantized, quant))
        res = evaluate_users(rec, ds, test, log, ks=HEADLINE_KS)
        head = summarize_next_item(res, ks=HEADLINE_KS)["headline"]
        scores = np.stack(rec.scores)
        if ref_scores is None:
            ref_scores = scores
        finite = np.isfinite(ref_scores) & np.isfinite(scores)
        row = {"variant": name, "quant": quant, "d": model.cfg.dim, "prototypes": model.cfg.n_prototypes,
               "phone_bytes": sum(v for k, v in files.items() if not k.endswith(".onnx")), "files": files,
               "table_snr_db": snr_db(model.export_item_table().numpy(), qt.dequantized),
               "score_snr_db": snr_db(ref_scores[finite], scores[finite]),
               "top10_overlap": topk_overlap(ref_scores, scores, 10), "hr10": head["hr10"],
               "hr10_ci": head["hr10_ci"], "n_users": head["n_users"], "compress": creport}
        rows.append(row)
        print(f"{name}: {row['phone_bytes'] / 1024:.1f} KB, SNR {row['score_snr_db']:.1f} dB, "
              f"overlap {row['top10_overlap']:.3f}, HR@10 {row['hr10']:.4f}", flush=True)
    fp = rows[0]["hr10"]
    for r in rows:
        r["hr10_rel_loss"] = (fp - r["hr10"]) / fp if fp > 0 else float("nan")
    command = command or "python -m metarec.export.report " + str(checkpoint)
    data = {"dataset": ds.name, "checkpoint": str(checkpoint), "train_config": tcfg.to_dict(), "prune": pr, "finetune_steps": finetune_steps,
            "budget_bytes": 64 * 1024, "variants": rows, "skipped": skipped}
    md = ["# Compression variants (PROTOCOL v1, test users, headline HR@10 = K 1..3)", "",
          "| variant | d | M | phone bundle KB | score SNR dB | table SNR dB | top-10 overlap | HR@10 [95% CI] | "
          "rel. loss |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r['d']} | {r['prototypes']} | {r['phone_bytes'] / 1024:.1f} | "
                  f"{r['score_snr_db']:.1f} | {r['table_snr_db']:.1f} | {r['top10_overlap']:.3f} | "
                  f"{r['hr10']:.4f} [{r['hr10_ci'][0]:.3f}, {r['hr10_ci'][1]:.3f}] | {100 * r['hr10_rel_loss']:.1f}% |")
    md += ["", f"Checkpoint {checkpoint}: TrainConfig steps={tcfg.steps}. Pruned variants: importance-ranked dims "
           f"and prototypes ({pr}), then {finetune_steps} more meta-training steps, so their HR@10 includes that "
           "extra training. Score SNR / overlap are against the fp32 model over the same queries; rel. loss < 0 "
           "is a gain. Quantized bundles also store the item bias in float16."
           + (f" Not run: {', '.join(skipped)} (the prior, d={base.cfg.dim} and M={base.cfg.n_prototypes}, is "
              f"already within the prune targets, so they equal the unpruned rows)." if skipped else ""), "",
           "Phone bundle = every bundle file but the optional model.onnx. Per-file bytes:", "",
           "| variant | " + " | ".join(sorted(rows[0]["files"])) + " |",
           "|---|" + "---|" * len(rows[0]["files"])]
    for r in rows:
        md.append(f"| {r['variant']} | " + " | ".join(str(r["files"].get(k, "-")) for k in sorted(rows[0]["files"]))
                  + " |")
    write_results("export", data, "\n".join(md), command, out_dir)
    return data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m metarec.export.report", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--prune", default="dim=16,prototypes=4")
    p.add_argument("--finetune-steps", type=int, default=100)
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--max-users", type=int, default=None)
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    compression_report(a.checkpoint, a.out, prune=a.prune, finetune_steps=a.finetune_steps,
                       command="python -m metarec.export.report " + " ".join(argv), max_users=a.max_users)
    return 0


if __name__ == "__main__":
    sys.exit(main())
