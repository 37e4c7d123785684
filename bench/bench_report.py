"""Accuracy report: gathers bench/results/{baselines,coldstart,export}.json (written by other stages) into
bench/results/report.md with plots, beside links to the latency, memory and scaling results.

Any dict in those files that holds a PROTOCOL v1 result (`per_k` and `headline`, as `run_protocol` returns) is a
model row, named by its key path; rows under a key containing "ablation" form the ablation table, and rows in
export.json (or under a "compress"/"variant" key) the compression table. Other tables of scalars in export.json
are rendered as they are. A missing file becomes a "not yet produced: run <command>" line, never a failure.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from metarec.bench import bench_util as bu

SOURCES = {
    "baselines": "metarec baselines --dataset ml-100k",
    "coldstart": "python -m metarec.sdk.coldstart --out bench/results --ablations-file lab/ablations.py --seeds 0,1,2 "
                 "--ablation-seeds 0",
    "export": "python -m metarec.export.report artifacts/prior.pt --out bench/results",
}
PERF = {"latency": "metarec bench --only latency", "memory": "metarec bench --only memory",
        "scaling": "metarec bench --only scaling"}


def _is_result(d) -> bool:
    return isinstance(d, dict) and "per_k" in d and "headline" in d


def collect_results(obj, path: tuple = ()) -> list[tuple[str, dict]]:
    """(name, PROTOCOL v1 result) for every result dict nested in `obj`, named by its key path."""
    out = []
    if _is_result(obj):
        name = obj.get("model") if not path or path[-1] in ("result", "results") else None
        return [(name or "/".join(p for p in path if p not in ("results", "result")) or "model", obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "provenance":
                out += collect_results(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            name = v.get("name") or v.get("model") or str(i) if isinstance(v, dict) else str(i)
            out += collect_results(v, path + (str(name),))
    return out


def coldstart_rows(d: dict) -> tuple[list, list, list[str]]:
    """(main rows, ablation rows, seed-spread lines) from sdk.coldstart's report: per-seed PROTOCOL results carry
    bootstrap CIs, so the plots use the first seed of each variant; the mean and spread over seeds go in a table."""
    main, abl, spread = [], [], []

    def first(v):
        seeds = v.get("seeds", {}) if isinstance(v, dict) else {}
        for s in sorted(seeds, key=str):
            if _is_result(seeds[s]):
                return s, seeds[s]
        return None, None

    def mean_line(name, v):
        m = (v or {}).get("mean", {}).get("headline_hr10") if isinstance(v, dict) else None
        if m:
            spread.append(f"| {name} | {m['mean']:.3f} | [{m['min']:.3f}, {m['max']:.3f}] | {len(v.get('seeds', {}))} |")

    s, r = first(d.get("full"))
    if r is not None:
        main.append((f"metarec (seed {s})", r))
    mean_line("metarec (full)", d.get("full"))
    for name, v in (d.get("ablations") or {}).items():
        s, r = first(v)
        if r is not None:
            abl.append((f"{name} (seed {s})", r))
        mean_line(name, v)
    return main, abl, spread


def _scalar_tables(obj, path: tuple = ()) -> list[tuple[str, list[dict]]]:
    """Tables of scalar rows (dict of dicts or list of dicts) that are not PROTOCOL results."""
    out = []
    if isinstance(obj, dict) and obj and all(isinstance(v, dict) and not _is_result(v) for v in obj.values()):
        rows = [{"name": k, **{kk: vv for kk, vv in v.items() if _scalar(vv)}} for k, v in obj.items()]
        if all(len(r) > 1 for r in rows) and path:
            out.append(("/".join(path), rows))
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        rows = [{kk: vv for kk, vv in v.items() if _scalar(vv)} for v in obj]
        if all(len(r) > 1 for r in rows):
            out.append(("/".join(path) or "rows", rows))
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "provenance" and not _is_result(v):
                out += _scalar_tables(v, path + (str(k),))
    return out


def _scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _f(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _load(results_dir: Path, name: str) -> dict | None:
    p = results_dir / f"{name}.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


# ---------------------------------------------------------------------------------------------- sections
def _coldstart(rows, png, command) -> list[str]:
    ks = sorted({k for _, r in rows for k in r["per_k"]}, key=int)
    out = ["## Cold start per K (next-item HR@10, bootstrap 95% CI over users)", "",
           "| model | headline HR@10 (K=1..3) | 95% CI | NDCG@10 | " + " | ".join(f"K={k}" for k in ks) + " |",
           "|---|---:|---|---:|" + "---:|" * len(ks)]
    for name, r in sorted(rows, key=lambda x: -x[1]["headline"]["hr10"]):
        h = r["headline"]
        out.append(f"| {name} | {h['hr10']:.3f} | {bu.ci_text(h, 'hr10')} | {h['ndcg10']:.3f} | "
                   + " | ".join(_f(r["per_k"].get(k, {}).get("hr10")) for k in ks) + " |")
    _plot_lines(rows, png, command, lambda r: r["per_k"], "hr10", "support size K", "next-item HR@10",
                "Cold start per K (95% CI)")
    return out + ["", f"![cold start per K]({png.name})", ""]


def _learning(rows, png, command) -> list[str]:
    rows = [(n, r) for n, r in rows if r.get("learning_curve", {}).get("recall10")]
    if not rows:
        return ["## Learning curve", "", "not yet produced: no result carries a learning curve", ""]
    ks = sorted({k for _, r in rows for k in r["learning_curve"]["recall10"]}, key=int)
    out = ["## Learning curve (Recall@10 on fixed targets, events 11..20, by support size K)", "",
           "| model | " + " | ".join(f"K={k}" for k in ks) + " | learning speed K |", "|---|" + "---:|" * (len(ks) + 1)]
    for name, r in rows:
        lc = r["learning_curve"]
        out.append(f"| {name} | " + " | ".join(_f(lc["recall10"].get(k, {}).get("recall10")) for k in ks)
                   + f" | {lc.get('learning_speed_k', '-')} |")
    _plot_lines(rows, png, command, lambda r: r["learning_curve"]["recall10"], "recall10", "support size K",
                "Recall@10 (fixed targets)", "Learning curve (95% CI)")
    return out + ["", f"![learning curve]({png.name})", ""]


def _new_items(rows, png, command) -> list[str]:
    rows = [(n, r) for n, r in rows if r.get("new_items")]
    if not rows:
        return ["## New items", "", "not yet produced: no result carries a new-item run", ""]
    out = ["## New items (items withheld from training)", "", "| model | HR@10 | 95% CI | NDCG@10 | n |",
           "|---|---:|---|---:|---:|"]
    for name, r in sorted(rows, key=lambda x: -x[1]["new_items"]["hr10"]):
        ni = r["new_items"]
        out.append(f"| {name} | {ni['hr10']:.3f} | {bu.ci_text(ni, 'hr10')} | {_f(ni.get('ndcg10'))} | {ni.get('n', '-')} |")
    _plot_bars([(n, r["new_items"]) for n, r in rows], png, command, "hr10", "new-item HR@10", "New items (95% CI)")
    return out + ["", f"![new items]({png.name})", ""]


def _scene(rows) -> list[str]:
    rows = [(n, r) for n, r in rows if r.get("scene")]
    if not rows:
        return ["## Scene retention", "", "not yet produced: no result carries scene figures", ""]
    out = ["## Scene retention (HR@10 when the scene changed vs stayed the same)", "",
           "| model | changed HR@10 (n) | same HR@10 (n) | retention [95% CI] | weekend HR@10 (n) |", "|---|---:|---:|---:|---:|"]
    for name, r in rows:
        s = r["scene"]
        c, sm, w = s.get("changed", {}), s.get("same", {}), s.get("weekend", {})
        out.append(f"| {name} | {_f(c.get('hr10'))} ({c.get('n', '-')}) | {_f(sm.get('hr10'))} ({sm.get('n', '-')}) | "
                   f"{_f(s.get('retention'))} {bu.ci_text(s, 'retention')} | {_f(w.get('hr10'))} ({w.get('n', '-')}) |")
    small = [n for n, r in rows if r["scene"].get("changed", {}).get("n", 0) < 30]
    if small:
        out += ["", f"Caution: fewer than 30 changed-scene queries for {', '.join(small)}; retention is noise there."]
    return out + [""]


def _headline_table(title: str, rows, png, command) -> list[str]:
    out = [f"## {title}", "", "| variant | headline HR@10 | 95% CI | NDCG@10 | new-item HR@10 |", "|---|---:|---|---:|---:|"]
    for name, r in rows:
        h = r["headline"]
        out.append(f"| {name} | {h['hr10']:.3f} | {bu.ci_text(h, 'hr10')} | {h['ndcg10']:.3f} | "
                   f"{_f(r.get('new_items', {}).get('hr10'))} |")
    _plot_bars([(n, r["headline"]) for n, r in rows], png, command, "hr10", "headline HR@10 (K=1..3)", title)
    return out + ["", f"![{title}]({png.name})", ""]


# ---------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_lines(rows, png, command, series, key, xlabel, ylabel, title) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for name, r in rows:
        s = series(r)
        ks = sorted(s, key=int)
        y = [s[k][key] for k in ks]
        ci = [s[k].get(f"{key}_ci") for k in ks]
        yerr = None
        if all(c for c in ci):
            yerr = [[max(0.0, yy - c[0]) for yy, c in zip(y, ci)], [max(0.0, c[1] - yy) for yy, c in zip(y, ci)]]
        style = "-" if "metarec" in name.lower() else "--"
        ax.errorbar([int(k) for k in ks], y, yerr=yerr, fmt="o" + style, capsize=2, ms=3,
                    lw=2 if style == "-" else 1, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    bu.save_png(fig, png, command)


def _plot_bars(rows, png, command, key, xlabel, title) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.5))
    names = [n for n, _ in rows]
    y = [r[key] for _, r in rows]
    ci = [r.get(f"{key}_ci") for _, r in rows]
    xerr = None
    if all(c for c in ci):
        xerr = [[max(0.0, v - c[0]) for v, c in zip(y, ci)], [max(0.0, c[1] - v) for v, c in zip(y, ci)]]
    ax.barh(range(len(names)), y, xerr=xerr, capsize=2, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    bu.save_png(fig, png, command)


# ---------------------------------------------------------------------------------------------- suite
def run_report(command: str, out_dir=None) -> dict:
    from metarec.bench.paths import RESULTS_DIR
    from metarec.sdk.results import write_results

    out = Path(out_dir or RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    src = {name: _load(out, name) for name in SOURCES}
    lines = ["# MetaRec Edge: accuracy and on-device cost, side by side", "",
             "Sources (each file names the command and commit that produced it):", ""]
    for name, cmd in {**SOURCES, **PERF}.items():
        d = _load(out, name)
        if d is None:
            lines.append(f"- `{name}`: not yet produced: run `{cmd}`")
        else:
            pv = d.get("provenance", {})
            lines.append(f"- [`{name}.md`]({name}.md): `{pv.get('command', '?')}` at `{pv.get('commit', '?')}`")
    lines.append("")
    main, ablations, compression, spread = [], [], [], []
    for name, d in src.items():
        if d is None:
            continue
        if name == "coldstart" and ("full" in d or "ablations" in d):
            m, a, spread = coldstart_rows(d)
            main += m
            ablations += a
            continue
        for rname, r in collect_results(d):
            if "/seeds/" in f"/{rname}/":
                continue
            label = rname if name == "baselines" else f"{rname}" if "metarec" in rname.lower() else f"{name}:{rname}"
            low = rname.lower()
            if "ablation" in low:
                ablations.append((label, r))
            elif name == "export" or "compress" in low or "variant" in low:
                compression.append((label, r))
            else:
                main.append((label, r))
    counts = {"models": len(main), "ablations": len(ablations), "compression_variants": len(compression)}
    if main:
        lines += _coldstart(main, out / "report_coldstart.png", command)
        lines += _learning(main, out / "report_learning_curve.png", command)
        lines += _new_items(main, out / "report_new_items.png", command)
        lines += _scene(main)
    else:
        lines += ["## Cold start, learning curve, new items, scene", "",
                  f"not yet produced: run `{SOURCES['baselines']}` and `{SOURCES['coldstart']}`", ""]
    if spread:
        lines += ["## Meta-learned prior over seeds (coldstart.json)", "",
                  "| variant | headline HR@10 mean | min..max over seeds | seeds |", "|---|---:|---|---:|"] + spread + [""]
    if ablations:
        full = [(f"{n} = full model", r) for n, r in main if n.startswith("metarec")][:1]
        lines += _headline_table("Ablations", full + ablations, out / "report_ablations.png", command)
    else:
        lines += ["## Ablations", "", f"not yet produced: run `{SOURCES['coldstart']}` with its ablations", ""]
    if compression:
        lines += _headline_table("Compression variants", compression, out / "report_compression.png", command)
    ex = src.get("export") or {}
    variants = [v for v in ex.get("variants", []) if isinstance(v, dict) and "hr10" in v]
    if variants:
        rows = [(f"{v.get('variant', '?')} ({v.get('phone_bytes', 0) / 1024:.0f} KB)", v) for v in variants]
        _plot_bars(rows, out / "report_compression.png", command, "hr10", "headline HR@10 (K=1..3), 95% CI",
                   "Compression variants (phone bundle size)")
        lines += ["## Compression variants (export.json)", "", f"![compression variants](report_compression.png)", ""]
        counts["compression_variants"] = len(variants)
    ex_tables = _scalar_tables({k: v for k, v in ex.items() if k != "provenance"})
    for tname, rows in ex_tables[:6]:
        cols = list(dict.fromkeys(c for r in rows for c in r))
        lines += [f"## Export: {tname}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_f(r.get(c)) for c in cols) + " |" for r in rows] + [""]
    if not compression and not ex_tables:
        lines += ["## Compression variants", "", f"not yet produced: run `{SOURCES['export']}`", ""]
    lines += _perf_summary(out)
    write_results("report", {"counts": counts, "sources": {k: v is not None for k, v in src.items()}},
                  "\n".join(lines), command, out)
    return counts


def _perf_summary(out: Path) -> list[str]:
    lines = ["## On-device cost (from the benchmark suites)", ""]
    lat = _load(out, "latency")
    if lat:
        lines += ["| target | measured | met |", "|---|---:|---|"]
        for name, v in lat.get("targets", {}).items():
            val = "not measured" if v["value"] is None else f"{v['value']:.2f} {v['unit']}"
            lines.append(f"| {name} | {val} | {'n/a' if v['met'] is None else ('yes' if v['met'] else 'no')} |")
        lines += ["", "Details: [latency.md](latency.md)", ""]
    else:
        lines.append(f"- latency: not yet produced: run `{PERF['latency']}`")
    mem = _load(out, "memory")
    if mem and mem.get("error"):
        lines.append(f"- memory: not measured, the serving process failed ([memory.md](memory.md))")
    elif mem:
        lines.append(f"- memory: peak RSS {mem['peak_rss_mib']:.1f} MiB serving {mem['users']:,} users; state "
                     f"{mem['state_bytes_per_user']:,.0f} bytes/user ([memory.md](memory.md))")
    else:
        lines.append(f"- memory: not yet produced: run `{PERF['memory']}`")
    sc = _load(out, "scaling")
    if sc:
        v = sc.get("target_1m_within_2x", {})
        b = sc.get("target_1m_within_2x_best_variant", {})
        best = (f"; best large-catalog variant, {str(b.get('variant')).split(' (')[0]}: {_f(b.get('value'), 2)}x"
                if b.get("variant") else "")
        lines.append(f"- scaling: largest catalog, score.pte as exported, at {_f(v.get('value'), 2)}x the bandwidth "
                     f"bound{best} (target 2x, p50) ([scaling.md](scaling.md))")
    else:
        lines.append(f"- scaling: not yet produced: run `{PERF['scaling']}`")
    return lines + [""]
