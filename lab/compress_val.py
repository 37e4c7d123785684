"""Does a compressed phone model keep the trend calibration's gain? Validation users only (issue 4 / issue 5).

Per seed: meta-train the prior on TRAIN users (default TrainConfig, that seed), compress it as export does (prune by
measured importance, 100 fine-tune steps on train users, int4 / int8 table as the phone decodes it), and score the
94 validation users (PROTOCOL v1 headline, K=1..3) with the serving trend scale (ModelConfig.trend_hist_scale) at
1 and 2. Writes OUT.json; usage from the repo root:

    OMP_NUM_THREADS=1 python lab/compress_val.py OUT.json SEED [SEED ...] [--model JSON]

--model: ModelConfig overrides of the prior, e.g. '{"dim": 16, "n_prototypes": 4}' (then the variants that would
not shrink it are skipped: a pruned variant must prune).
"""
import copy
import dataclasses
import json
import sys

import numpy as np
import torch

from metarec.export.compress import compress_model, early_histories, quantize_table, sdk_finetune
from metarec.export.config import CompressConfig
from metarec.export.report import compressed_recommender
from metarec.sdk.data import load_dataset
from metarec.sdk.protocol import EventLog, evaluate_users, split_users, summarize_next_item
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig

torch.set_num_threads(1)
SCALES = (1.0, 2.0)
VARIANTS = [("fp32", "none", {}), ("int4", "int4", {}), ("pruned d16 M4 + int4 (the bundle)", "int4",
            {"prune_dim": 16, "prune_prototypes": 4}), ("pruned d16 M8 + int4", "int4", {"prune_dim": 16}),
            ("pruned d24 M8 + int8", "int8", {"prune_dim": 24}), ("int4 group 8", "int4", {}, 8)]


def with_scale(model, scale):
    m = copy.deepcopy(model)
    m.cfg = dataclasses.replace(m.cfg, trend_hist_scale=scale)
    return m.eval()


def main(out, seeds, model_over=None):
    ds = load_dataset("ml-100k")
    sp, log = split_users(ds), EventLog(ds)
    res = {}
    for seed in seeds:
        cfg = TrainConfig(fit_users="train", seed=seed, progress=False)
        if model_over:
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "model": {**cfg.model.to_dict(), **model_over}})
        base = MetaRecRecommender(config=cfg).fit(ds, sp.train, log).model
        hist = early_histories(ds, sp.train, base.cfg.hist_len)
        res[seed] = {}
        for name, quant, prune, *group in VARIANTS:
            ccfg = CompressConfig(quant=quant, **prune, finetune_steps=100 if prune else 0,
                                  **({"group_size": group[0]} if group else {})).for_model(base.cfg.dim,
                                                                                            base.cfg.n_prototypes)
            if prune and not ccfg.prunes:  # the prior is already within the targets: same as the unpruned row
                continue
            model, _ = compress_model(base, ccfg, hist, sdk_finetune(ds, sp.train, cfg) if ccfg.prunes else None)
            qt = quantize_table(model.export_item_table(), quant, ccfg.table_group_size(model.cfg.dim))
            table = model.export_item_table().numpy() if quant == "none" else qt.dequantized
            res[seed][name] = {}
            for s in SCALES:
                rec = compressed_recommender(cfg, with_scale(model, s), table, quant)
                head = summarize_next_item(evaluate_users(rec, ds, sp.val, log, ks=(1, 2, 3)), ks=(1, 2, 3))
                res[seed][name][str(s)] = {"hr10": head["headline"]["hr10"], "ndcg10": head["headline"]["ndcg10"]}
            print(seed, name, {s: round(v["hr10"], 4) for s, v in res[seed][name].items()}, flush=True)
        with open(out, "w") as f:
            json.dump({"users": "val", "results": res, "command": "OMP_NUM_THREADS=1 python "
                       "lab/compress_val.py " + " ".join(sys.argv[1:])}, f, indent=1)


if __name__ == "__main__":
    args = sys.argv[1:]
    over = json.loads(args.pop(args.index("--model") + 1)) if "--model" in args else None
    if over is not None:
        args.remove("--model")
    main(args[0], [int(s) for s in args[1:]], over)
