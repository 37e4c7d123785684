"""The cold-start report and its CLI: the prior over seeds against the baselines, ablations side by side, the
synthetic-truth checks; written as coldstart.{json,md,png} into the folder the caller names.

    python -m metarec.sdk.coldstart --out bench/results --ablations-file lab/ablations.py \
        --seeds 0,1,2 --ablation-seeds 0
`--ablations-file` gives the entries `--part ablations` runs (default: the core variants only, see
`metarec.sdk.coldstart.load_ablations`); `--part` / `--partial-out` / `--merge` spread the work over processes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np

from metarec.sdk.coldstart import (CORE_VARIANTS, FULL, TWIN, load_ablations, mean_over_seeds, mean_over_seeds_key,
                                   run_ablations, run_variant, variant_config)
from metarec.sdk.coldstart_diagnostics import adaptation_effect, synthetic_truth
from metarec.sdk.train import TrainConfig


def _syn_row(name: str, runs: list[dict]) -> str:
    """One variant of the synthetic table: means over seeds (slices pooled: n is per seed, the same each seed)."""
    ch = np.mean([r["scene"]["changed"]["hr10"] for r in runs])
    same = np.mean([r["scene"]["same"]["hr10"] for r in runs])
    sc = runs[0]["scene"]
    prs = [r["prototypes"] for r in runs if r.get("prototypes")]
    proto = (f"{np.mean([p['accuracy'] for p in prs]):.3f} vs {prs[0]['chance']:.3f} ({prs[0]['n_users']})"
             if prs else "-")
    return (f"| {name} | {np.mean([x['headline']['hr10'] for x in runs]):.3f} | {ch:.3f} ({sc['changed']['n']}) | "
            f"{same:.3f} ({sc['same']['n']}) | {ch / same if same > 0 else float('nan'):.3f} | {proto} |")


def _f(x) -> str:
    return "-" if x is None else f"{x['mean']:.3f}"


def coldstart_markdown(report: dict, baselines: dict | None) -> str:
    """Tables: the prior (mean of seeds) against every baseline, then the ablations side by side."""
    full = report["full"]["mean"]
    ks = list(full["per_k_hr10"])
    lines = [f"# Cold start, PROTOCOL v1, {report['dataset']} ({report['users']} users)", "",
             f"MetaRec prior: mean of seeds {report['seeds']} (spread min..max in the JSON). Baselines: "
             "baselines.json (one seed). Headline = mean over K=1..3 of next-item HR@10 / NDCG@10.", "",
             "| model | HR@10 (K=1..3) | NDCG@10 | " + " | ".join(f"HR K={k}" for k in ks) +
             " | Recall@10 K=0 | K=3 | K=5 | K=10 | new-item HR@10 (n) |",
             "|---" * (7 + len(ks) + 1) + "|"]
    rc = full.get("recall10", {})
    lines.append(f"| **metarec** | {_f(full['headline_hr10'])} | {_f(full['headline_ndcg10'])} | " +
                 " | ".join(_f(full["per_k_hr10"][k]) for k in ks) +
                 f" | {_f(rc.get('0'))} | {_f(rc.get('3'))} | {_f(rc.get('5'))} | {_f(rc.get('10'))} | "
                 f"{_f(full.get('new_items_hr10'))} ({full.get('new_items_n', '-')}"
                 f"{'; seeds ' + ','.join(map(str, full['new_items_seeds'])) if 'new_items_seeds' in full else ''}) |")
    for name, r in (baselines or {}).items():
        c = r.get("learning_curve", {}).get("recall10", {})
        g = (lambda k: f"{c[k]['recall10']:.3f}" if k in c else "-")
        ni = r.get("new_items", {})
        lines.append(f"| {name} | {r['headline']['hr10']:.3f} | {r['headline']['ndcg10']:.3f} | " +
                     " | ".join(f"{r['per_k'][k]['hr10']:.3f}" for k in ks) +
                     f" | {g('0')} | {g('3')} | {g('5')} | {g('10')} | "
                     f"{ni.get('hr10', float('nan')):.3f} ({ni.get('n', '-')}) |")
    lines += ["", f"## Ablations ({report['users']} users, seeds {report['ablation_seeds']})", "",
              "| variant | HR@10 (K=1..3) | NDCG@10 | " + " | ".join(f"HR K={k}" for k in ks) +
              " | Recall@10 K=3 | K=5 | K=10 | train s |", "|---" * (7 + len(ks)) + "|"]
    for name, r in report["ablations"].items():
        m = r["mean"]
        rc = m.get("recall10", {})
        lines.append(f"| {name} | {_f(m['headline_hr10'])} | {_f(m['headline_ndcg10'])} | " +
                     " | ".join(_f(m["per_k_hr10"][k]) for k in ks) +
                     f" | {_f(rc.get('3'))} | {_f(rc.get('5'))} | {_f(rc.get('10'))} | {_f(m['train_seconds'])} |")
    eff = report.get("adaptation_effect")  # set by write_coldstart
    if eff:
        lines += ["", f"Adaptation against its 0-step twin (`{TWIN}`, seeds {report['twin']['seed_list']}): "
                  "learning-curve Recall@10 of the full model minus the twin's, paired over the same "
                  f"{eff['3']['n_users']} test users, seeds pooled (PROTOCOL v1: an interval holding 0 is \"no "
                  "difference\"): " + "; ".join(
                      f"K={k} {eff[k]['recall10_diff']:+.4f} [{eff[k]['recall10_diff_ci'][0]:+.4f}, "
                      f"{eff[k]['recall10_diff_ci'][1]:+.4f}] -> "
                      + ("measurable" if eff[k]["measurable"] else "no difference")
                      + f" (per seed {', '.join(f'{x:+.4f}' for x in eff[k]['per_seed'])})" for k in ("3", "5"))
                  + "."]
    for key in sorted(k for k in report if k.startswith("synthetic")):
        syn = report[key]
        lines += ["", f"## {key}: synthetic scene data (planted truth; test users, seeds {syn['seeds']}; "
                  f"{syn.get('note', 'default TrainConfig')})", "",
                  "| variant | HR@10 K=1..3 | scene changed: HR@10 (n) | same: HR@10 (n) | retention | "
                  "prototype accuracy vs chance (n) |", "|---|---|---|---|---|---|"]
        for name, runs in syn["runs"].items():
            lines.append(_syn_row(name, runs))
        if "share_of_oracle" in syn:
            modes = [m for m in ("truth", "prototype", "posterior", "posterior_taste", "world") if f"vs_oracle_{m}" in syn]
            ref = ", ".join(f"{m} {syn[f'vs_oracle_{m}']['hr10_diff']:+.3f} [{syn[f'vs_oracle_{m}']['hr10_diff_ci'][0]:+.3f}, "
                            f"{syn[f'vs_oracle_{m}']['hr10_diff_ci'][1]:+.3f}]" for m in modes)
            lines += ["", f"The product reaches {syn['share_of_oracle']:.2f} x the oracle's headline (sdk/synthetic_oracle.py: "
                      f"truth = the user's true prototype and taste; prototype = truth without the taste; posterior = "
                      f"Bayes over prototypes from the support; posterior_taste = Bayes over prototype and taste; "
                      f"world = no user). Paired HR@10, product - reference: {ref}."]
        eff, pl = syn.get("scene_effect"), syn.get("planted_scene")
        if eff:
            lines += ["", f"Scene effect, full - no scene encoder, paired over the same test queries (K=1..3, "
                      f"{eff['n_queries']} queries of {eff['n_users']} users, {eff['n_seeds']} seed(s) pooled): "
                      f"HR@10 {eff['hr10_diff']:+.3f}, 95% bootstrap interval over users "
                      f"[{eff['hr10_diff_ci'][0]:+.3f}, {eff['hr10_diff_ci'][1]:+.3f}] -> "
                      + ("measurable" if eff["measurable"] else "no difference")
                      + (f"; per seed {', '.join(f'{x:+.3f}' for x in eff['per_seed'])}" if eff.get("per_seed")
                         else "") + "."]
        lifts = [r["day_part_lift"] for r in syn["runs"].get(FULL, []) if r.get("day_part_lift")]
        if lifts:
            each = ", ".join(f"{x['learned']:.2f}" for x in lifts)
            lines += ["", "Day-part lift the full model learned (score change of the true day part's items minus the "
                      f"swapped-in part's, clock moved 6/12/18 h; {lifts[0]['n']} rescorings per seed): "
                      f"{np.mean([x['learned'] for x in lifts]):.2f} logits (per seed {each}); planted "
                      f"{lifts[0]['planted']:.2f}."]
        if pl:
            lines += ["", f"Planted scene effect: {pl['events_on_active_scene_items']:.1%} of all events and "
                      f"{pl['targets_on_active_scene_items']:.1%} of the {pl['n_targets']} test targets are items "
                      f"of a scene factor active at the event; those items are {pl['catalog_share_active']:.1%} "
                      "of the catalog."]
    return "\n".join(lines) + "\n"


def coldstart_plot(report: dict, baselines: dict | None, path: str | Path) -> None:
    """Learning curve (fixed targets) of the prior against the baselines, and next-item HR@10 by K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    full = report["full"]["mean"]
    for name, r in (baselines or {}).items():
        c = r.get("learning_curve", {}).get("recall10", {})
        if c:
            ks = sorted(c, key=int)
            ax[0].plot([int(k) for k in ks], [c[k]["recall10"] for k in ks], "--", lw=1, label=name)
        ks = sorted(r["per_k"], key=int)
        ax[1].plot([int(k) for k in ks], [r["per_k"][k]["hr10"] for k in ks], "--", lw=1, label=name)
    for name, style in ((FULL, "k-o"), ("0 inner steps (trained with 0)", "r-s")):
        m = report["ablations"].get(name, {}).get("mean") if name != FULL else full
        if m and m.get("recall10"):
            ks = [k for k in sorted(m["recall10"], key=int) if m["recall10"][k] is not None]
            ax[0].plot([int(k) for k in ks], [m["recall10"][k]["mean"] for k in ks], style, lw=2,
                       label="metarec" if name == FULL else "metarec, 0 steps")
    ks = sorted(full["per_k_hr10"], key=int)
    ax[1].plot([int(k) for k in ks], [full["per_k_hr10"][k]["mean"] for k in ks], "k-o", lw=2, label="metarec")
    ax[0].set(xlabel="support size K", ylabel="Recall@10 (events 11..20)", title="learning curve (fixed targets)")
    ax[1].set(xlabel="support size K", ylabel="HR@10 (next item)", title="next-item HR@10")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.suptitle(f"{report['dataset']}, PROTOCOL v1, {report['users']} users — {report['command']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_coldstart(report: dict, command: str, out_dir: str | Path, baselines_path: str | Path | None = None) -> Path:
    """<out_dir>/coldstart.{json,md,png}, each naming `command`; baselines from `baselines_path` (default: the
    baselines.json beside them), when it exists."""
    from metarec.sdk.results import write_results

    out = Path(out_dir)
    bpath = Path(baselines_path) if baselines_path else out / "baselines.json"
    baselines = json.loads(bpath.read_text())["results"] if bpath.is_file() else None
    report = {**report, "command": command}
    eff = adaptation_effect(report)
    if eff:
        report["adaptation_effect"] = eff
    p = write_results("coldstart", report, coldstart_markdown(report, baselines), command, out)
    coldstart_plot(report, baselines, out / "coldstart.png")
    return p


def _recommender(cfg: TrainConfig):
    from metarec.sdk.recommender import MetaRecRecommender

    return MetaRecRecommender(config=cfg)


def _apply_new_items(report: dict) -> None:
    """A separate new-item part replaces the new-item figures of the full runs (same config and seeds)."""
    ni = report.pop("new_items", None)
    if not ni or "full" not in report:
        return
    for r in report["full"]["seeds"].values():
        r.pop("new_items", None)  # superseded: only the separate new-item runs count
    for s, r in ni.items():
        report["full"]["seeds"].setdefault(str(s), {})["new_items"] = r
    runs = [report["full"]["seeds"][str(s)] for s in ni]
    m = report["full"]["mean"]
    m["new_items_hr10"] = mean_over_seeds_key([r["new_items"]["hr10"] for r in runs])
    m["new_items_ndcg10"] = mean_over_seeds_key([r["new_items"]["ndcg10"] for r in runs])
    m["new_items_n"] = runs[0]["new_items"]["n"]
    m["new_items_seeds"] = sorted(ni)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m metarec.sdk.coldstart")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--config", default=None, help="TrainConfig JSON (default: TrainConfig())")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ablation-seeds", default="0")
    ap.add_argument("--ablations", default=None, help="';'-separated names (default: all of the ablations file)")
    ap.add_argument("--ablations-file", default=None,
                    help="entries for --part ablations: a .py defining ABLATIONS (e.g. lab/ablations.py) or a JSON "
                         "{name: [train overrides, model overrides]} (default: the core variants only)")
    ap.add_argument("--users", default="test", choices=("val", "test"))
    ap.add_argument("--part", default="all", choices=("all", "full", "ablations", "synthetic", "newitems", "twin"),
                    help="run only a part (to spread the work over processes), see --partial-out / --merge")
    ap.add_argument("--partial-out", default=None, help="write this part's raw results here instead of the report")
    ap.add_argument("--merge", default=None, help="','-separated partial files: write the report from them")
    ap.add_argument("--synthetic-config", default=None,
                    help="JSON of SyntheticConfig overrides for the synthetic part (default: SyntheticConfig())")
    ap.add_argument("--synthetic-world", default=None,
                    help="a named world of sdk.synthetic.WORLDS (e.g. world-a) for the synthetic part; "
                         "--synthetic-config then overrides its fields")
    ap.add_argument("--command", default=None, help="the command line to record (default: this one)")
    ap.add_argument("--out", default=None, help="results folder for the report (required unless --partial-out)")
    ap.add_argument("--baselines", default=None, help="baselines.json to compare with (default: the one in --out)")
    a = ap.parse_args(argv)
    cmd = a.command or "python -m metarec.sdk.coldstart " + " ".join(shlex.quote(x) for x in argv)
    if a.out is None and not a.partial_out:
        ap.error("--out is required to write the report")
    ablations = load_ablations(a.ablations_file) if a.ablations_file else CORE_VARIANTS
    if a.merge:
        parts = [json.loads(Path(p).read_text()) for p in a.merge.split(",")]
        report = {}
        for p in parts:  # the first part that has a key wins (the full part's seeds, dataset, users)
            for k, v in p.items():
                if k not in ("ablations", "new_items"):
                    report.setdefault(k, v)
        report["ablations"] = {k: v for p in parts for k, v in p.get("ablations", {}).items()}
        report["new_items"] = {k: v for p in parts for k, v in p.get("new_items", {}).items()}
        _apply_new_items(report)
        report["ablations"] = {**({FULL: report["full"]} if "full" in report else {}), **report["ablations"]}
        print(write_coldstart(report, cmd, a.out, a.baselines))
        return 0
    from metarec.sdk.data import load_dataset

    ds = load_dataset(a.dataset)
    base = TrainConfig.load(a.config) if a.config else TrainConfig()
    base = dataclasses.replace(base, dataset=a.dataset, fit_users="train" if a.users == "val" else "train+val")
    seeds = [int(s) for s in a.seeds.split(",")]
    report: dict = {"dataset": ds.name, "users": a.users, "seeds": seeds, "ablation_seeds": a.ablation_seeds}
    if a.part in ("all", "full"):
        runs = {s: run_variant(ds, variant_config(base, FULL, s), a.users, new_items=a.users == "test")
                for s in seeds}
        report["full"] = {"seeds": runs, "mean": mean_over_seeds(list(runs.values()))}
    if a.part == "newitems":  # the separate new-item training run alone (PROTOCOL v1 "new items")
        from metarec.sdk.protocol import new_item_run, split_users

        report["new_items"] = {s: new_item_run(lambda s=s: _recommender(variant_config(base, FULL, s)), ds,
                                               split_users(ds)) for s in seeds}
    if a.part in ("all", "twin"):  # the 0-step twin on the full part's seeds, for the paired adaptation test
        runs = {s: run_variant(ds, variant_config(base, TWIN, s), a.users) for s in seeds}
        report["twin"] = {"name": TWIN, "seeds": runs, "seed_list": seeds}
    if a.part in ("all", "synthetic"):
        from metarec.sdk.synthetic import SyntheticConfig

        over = json.loads(a.synthetic_config) if a.synthetic_config else {}
        if a.synthetic_world:
            from metarec.sdk.synthetic import world_config

            syn_cfg = world_config(a.synthetic_world, **over)
        else:
            syn_cfg = SyntheticConfig.from_dict(over) if a.synthetic_config else None
        report["synthetic"] = synthetic_truth(dataclasses.replace(base, fit_users="train+val"), seeds, syn_cfg)
        if a.synthetic_world:
            report["synthetic"]["world"] = a.synthetic_world
    if a.part in ("all", "ablations"):
        names = a.ablations.split(";") if a.ablations else [n for n in ablations if n != FULL]
        report["ablations"] = run_ablations(ds, base, names, [int(s) for s in a.ablation_seeds.split(",")],
                                            a.users, ablations=ablations)
    if a.partial_out:
        Path(a.partial_out).write_text(json.dumps(report, default=float))
        print(a.partial_out)
        return 0
    report["ablations"] = {FULL: report["full"], **report.get("ablations", {})}
    print(write_coldstart(report, cmd, a.out, a.baselines))
    return 0
