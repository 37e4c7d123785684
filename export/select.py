"""Export's choices, made on validation users (docs/decisions/export-selection.md).

`metarec train` leaves in the checkpoint a prior fit on the train users and the best simple baseline's per-query
results on the validation users (sdk/floor.py `validation_run`). Export uses them to decide, per dataset, what a
user would otherwise set by hand, then applies the decisions to the shipped prior:
1. steps: the phone's adaptation steps are kept only when they pay, i.e. the prior with its steps beats the same
   prior served without them, paired over the validation queries with an interval above 0; otherwise the bundle
   ships `inner_steps = 0` and the runtime skips adaptation (both runtimes honour it);
2. compression: candidates from the smallest bundle up (pruned + int4 ... float32), each applied to the
   validation prior (pruned ones re-fine-tuned on the train users) and scored as the phone decodes it; the first
   within `ExportConfig.accuracy_budget` (relative HR@10) of the uncompressed validation prior is chosen, else the
   most accurate;
3. the bundle's floor: the chosen form against the best baseline, paired: "below" stops the export unless forced.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .compress import compress_model, early_histories, quantize_table, sdk_finetune
from .config import CompressConfig, parse_prune

HEADLINE_KS = (1, 2, 3)
# (name, prune spec or None, quant), the phone profile first; ordered by table bytes at selection time
CANDIDATES = (("pruned+int4", "dim=16,prototypes=4", "int4"), ("pruned+int8", "dim=16,prototypes=4", "int8"),
              ("int4", None, "int4"), ("int8", None, "int8"), ("fp32", None, "none"))


@dataclasses.dataclass
class Selection:
    """What export chose and why (the `selection` block of the manifest's configs)."""

    inner_steps: int
    compress: CompressConfig
    report: dict


def _evaluate(model, tcfg, ds, users, log, table=None, quant="none") -> dict:
    """Per-query results of `model` served with its own inner steps, on the table the phone decodes."""
    from metarec.sdk.protocol import evaluate_users

    from .report import compressed_recommender

    table = model.export_item_table().numpy() if table is None else table
    scfg = dataclasses.replace(tcfg, model=dataclasses.replace(tcfg.model, inner_steps=int(model.cfg.inner_steps)))
    return evaluate_users(compressed_recommender(scfg, model, table, quant), ds, users, log, ks=HEADLINE_KS)


def _hr(res: dict) -> float:
    return float(np.mean(res["hr"][np.isin(res["k"], HEADLINE_KS)]))


def _paired(a: dict, b: dict) -> dict:
    from metarec.sdk.coldstart_diagnostics import paired_difference

    p = paired_difference(a, b, HEADLINE_KS)
    return {"diff": p["hr10_diff"], "ci": [float(x) for x in p["hr10_diff_ci"]]}


def _with_steps(model, steps: int):
    """The same prior served with `steps` inner steps (0: the runtime skips adaptation)."""
    import copy

    m = copy.deepcopy(model)
    m.cfg = dataclasses.replace(m.cfg, inner_steps=steps)
    return m.eval()


def select(validation: dict, budget: float, say=lambda m: None) -> Selection:
    """The decisions above from a checkpoint's `validation` block (sdk/floor.py ValidationRun.to_checkpoint)."""
    from metarec.sdk.data import load_dataset
    from metarec.sdk.floor import verdict
    from metarec.sdk.protocol import EventLog, split_users
    from metarec.sdk.train import TrainConfig, model_from_state

    tcfg = TrainConfig.from_dict(validation["train_config"])
    ds = load_dataset(tcfg.dataset)
    split, log = split_users(ds), EventLog(ds)
    base = {k: np.asarray(v) for k, v in validation["baseline"].items()}
    prior = model_from_state(tcfg, int(validation["n_items"]), validation["state_dict"], "validation prior")
    rep: dict = {"users": "validation", "n_users": int(len(split.val)), "budget": budget}

    # 1. do the steps pay?
    steps = int(prior.cfg.inner_steps)
    full = _evaluate(prior, tcfg, ds, split.val, log)
    if steps:
        skip = _evaluate(_with_steps(prior, 0), tcfg, ds, split.val, log)
        p = _paired(full, skip)
        keep = verdict(p["ci"]) == "above"
        rep["steps"] = {"trained": steps, "hr10_with": _hr(full), "hr10_without": _hr(skip), "paired": p,
                        "kept": keep}
        say(f"   steps: {steps} step(s) {_hr(full):.3f} vs none {_hr(skip):.3f}: paired {p['diff']:+.3f} "
            f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] -> {'kept' if keep else 'skipped on the phone'}")
        if not keep:
            steps, prior, full = 0, _with_steps(prior, 0), skip
    ref = _hr(full)

    # 2. the smallest compression within the budget
    hist = early_histories(ds, split.train, prior.cfg.hist_len)
    finetune = sdk_finetune(ds, split.train, tcfg)
    pruned_cache: dict = {}
    rows = []
    for name, prune, quant in CANDIDATES:
        ccfg = CompressConfig(quant=quant, **parse_prune(prune)).for_model(prior.cfg.dim, prior.cfg.n_prototypes)
        if prune and not ccfg.prunes:
            continue  # the prior is already within the prune targets: the unpruned row is the same model
        if ccfg.prunes:
            if prune not in pruned_cache:
                pruned_cache[prune] = compress_model(prior, ccfg, hist, finetune)[0]
            model = pruned_cache[prune]
        else:
            model = prior
        qt = quantize_table(model.export_item_table(), quant, ccfg.table_group_size(model.cfg.dim))
        res = _evaluate(model, tcfg, ds, split.val, log, qt.dequantized, quant)
        hr = _hr(res)
        rows.append({"name": name, "compress": ccfg, "table_bytes": len(qt.data), "hr10": hr,
                     "rel_loss": (ref - hr) / ref if ref > 0 else 0.0, "res": res})
    rows.sort(key=lambda r: r["table_bytes"])
    ok = [r for r in rows if r["rel_loss"] <= budget]
    pick = ok[0] if ok else max(rows, key=lambda r: r["hr10"])
    for r in rows:
        say(f"   {r['name']}: table {r['table_bytes'] / 1024:.1f} KB, HR@10 {r['hr10']:.3f} "
            f"({-100 * r['rel_loss']:+.1f}% vs uncompressed){'  <- chosen' if r is pick else ''}")
    rep["compression"] = [{k: (v.to_dict() if k == "compress" else v) for k, v in r.items() if k != "res"}
                          for r in rows]
    rep["chosen"] = pick["name"]
    rep["within_budget"] = bool(ok)

    # 3. the bundle's floor: the chosen form against the best baseline, same queries
    p = _paired(pick["res"], base)
    rep["bundle_floor"] = {"hr10": pick["hr10"], "baseline_hr10": _hr(base), "paired": p, "verdict": verdict(p["ci"])}
    return Selection(steps, pick["compress"], rep)


def selection_summary(rep: dict, best_baseline: str) -> str:
    """One console line: the chosen form against the best baseline on the validation users."""
    f = rep["bundle_floor"]
    lo, hi = f["paired"]["ci"]
    return (f"bundle floor (validation users, n={rep['n_users']}): {rep['chosen']} HR@10 {f['hr10']:.3f} vs "
            f"{best_baseline} {f['baseline_hr10']:.3f}: paired {f['paired']['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            f"-> {f['verdict']}")
