"""Cold-start runs of the meta-learned prior: a variant is a base TrainConfig plus overrides, fitted and scored
with PROTOCOL v1 (`sdk.protocol`, docs/protocol.md).

`run_ablations` fits each variant on validation users (`users="val"`, fit on train users: the only place choices
are made) or once on test users (`users="test"`, fit on train + validation users). The entries are the caller's:
`CORE_VARIANTS` are the ones the report itself needs (the full prior, its 0-step twin, the no-scene check); any
other set comes from an ablations file (`load_ablations`: a .py file defining ABLATIONS, e.g. lab/ablations.py, or a
JSON {name: [TrainConfig overrides, ModelConfig overrides]}). The report and the CLI are in `coldstart_report`:
    python -m metarec.sdk.coldstart --out bench/results --ablations-file lab/ablations.py \
        --seeds 0,1,2 --ablation-seeds 0
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from metarec.sdk.model import ModelConfig
from metarec.sdk.train import TrainConfig

FULL = "full (metasgd, 1 step)"
TWIN = "0 inner steps (trained with 0)"  # the "fair" no-adaptation twin
NO_SCENE = "no scene encoder"
# name -> (TrainConfig overrides, ModelConfig overrides): the variants the report's own parts run
CORE_VARIANTS: dict[str, tuple[dict, dict]] = {FULL: ({}, {}), TWIN: ({}, {"inner_steps": 0}),
                                               NO_SCENE: ({}, {"use_scene": False})}
Ablations = Mapping[str, tuple[dict, dict]]


def load_ablations(path: str | os.PathLike) -> dict[str, tuple[dict, dict]]:
    """Ablation entries from a .py file that defines ABLATIONS, or from a JSON {name: [train, model overrides]}."""
    p = Path(path)
    if p.suffix == ".py":
        spec = importlib.util.spec_from_file_location(f"_ablations_{p.stem}", p)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load ablations from {p}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        raw = getattr(mod, "ABLATIONS", None)
    else:
        raw = json.loads(p.read_text())
    if not isinstance(raw, Mapping):
        raise ValueError(f"{p}: ABLATIONS must be a dict of name -> (train overrides, model overrides)")
    out = {}
    for name, entry in raw.items():
        if len(entry) != 2 or not all(isinstance(x, Mapping) for x in entry):
            raise ValueError(f"{p}: ablation {name!r} must be (train overrides, model overrides), got {entry!r}")
        out[str(name)] = (dict(entry[0]), dict(entry[1]))
    return out


def variant_config(base: TrainConfig, name: str, seed: int, ablations: Ablations | None = None) -> TrainConfig:
    """`base` with the entry `name` (of CORE_VARIANTS or `ablations`) applied and the given seed."""
    entries = {**CORE_VARIANTS, **(ablations or {})}
    if name not in entries:
        raise ValueError(f"unknown ablation {name!r}; known: {list(entries)}")
    tr, mo = entries[name]
    model = ModelConfig.from_dict({**base.model.to_dict(), **mo})
    return TrainConfig.from_dict({**base.to_dict(), **tr, "model": model.to_dict(), "seed": seed,
                                  "progress": False})


def run_variant(ds, cfg: TrainConfig, users: str = "test", new_items: bool = False, curve: bool = True) -> dict:
    """One fitted variant through PROTOCOL v1 (test: `run_protocol`; val: fit on train users, score val users)."""
    from metarec.sdk.protocol import (EventLog, evaluate_users, learning_curve, run_protocol, split_users,
                                      summarize_next_item)
    from metarec.sdk.recommender import MetaRecRecommender

    fits: list = []

    def make():
        fits.append(MetaRecRecommender(config=cfg))
        return fits[-1]

    t0 = time.perf_counter()
    if users == "test":
        out = run_protocol(make, ds, new_items=new_items, curve=curve, progress=False, name="metarec")
    elif users == "val":
        sp, log = split_users(ds), EventLog(ds)
        rec = make().fit(ds, sp.train, log)
        out = {"model": "metarec", **summarize_next_item(evaluate_users(rec, ds, sp.val, log))}
        if curve:
            out["learning_curve"] = learning_curve(rec, ds, sp.val, log)
    else:
        raise ValueError(f"users must be 'val' or 'test', got {users!r}")
    out["train_seconds"] = [f.stats.get("train_seconds") for f in fits]
    out["wall_seconds"] = time.perf_counter() - t0
    out["config"] = cfg.to_dict()
    return out


def run_ablations(ds, base: TrainConfig, names=None, seeds=(0,), users: str = "test", curve: bool = True,
                  ablations: Ablations | None = None) -> dict:
    """{ablation name: {"seeds": {seed: protocol result}, "mean": headline/per-K/curve means over seeds}}; `names`
    default: every entry of `ablations` (or of CORE_VARIANTS)."""
    out = {}
    for name in names or list(ablations or CORE_VARIANTS):
        runs = {s: run_variant(ds, variant_config(base, name, s, ablations), users, curve=curve) for s in seeds}
        out[name] = {"seeds": runs, "mean": mean_over_seeds(list(runs.values()))}
    return out


def mean_over_seeds(runs: list[dict]) -> dict:
    """Mean and spread (min, max) over seeds of the figures the report shows."""
    def agg(vals):
        v = [x for x in vals if x is not None and np.isfinite(x)]
        return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))} if v else None

    m = {"headline_hr10": agg([r["headline"]["hr10"] for r in runs]),
         "headline_ndcg10": agg([r["headline"]["ndcg10"] for r in runs]),
         "per_k_hr10": {k: agg([r["per_k"][k]["hr10"] for r in runs]) for k in runs[0]["per_k"]},
         "train_seconds": agg([t for r in runs for t in r.get("train_seconds", []) if t is not None])}
    if "learning_curve" in runs[0]:
        m["recall10"] = {k: agg([r["learning_curve"]["recall10"][k]["recall10"] for r in runs])
                         for k in runs[0]["learning_curve"]["recall10"]}
    if "new_items" in runs[0]:
        m["new_items_hr10"] = agg([r["new_items"]["hr10"] for r in runs])
        m["new_items_ndcg10"] = agg([r["new_items"]["ndcg10"] for r in runs])
        m["new_items_n"] = runs[0]["new_items"]["n"]
    return m


def mean_over_seeds_key(v: list[float]) -> dict:
    return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def prototype_mixture(model, support_items: np.ndarray, scene: np.ndarray) -> np.ndarray:
    """(M,) prototype weights the model gives the last L support items (`MetaRecModel.prototype_mixture`)."""
    import torch

    L = model.cfg.hist_len
    items = np.asarray(support_items, np.int64)[-L:]
    mask = torch.zeros(L)
    mask[L - len(items):] = 1.0
    hist = torch.zeros(L, model.cfg.dim)
    with torch.no_grad():
        hist[L - len(items):] = model.export_item_table()[torch.from_numpy(items)]
        return model.prototype_mixture(hist, mask, torch.as_tensor(scene, dtype=torch.float32)).numpy()


if __name__ == "__main__":  # the CLI lives with the report it writes
    import sys

    from metarec.sdk.coldstart_report import main

    raise SystemExit(main(sys.argv[1:]))
