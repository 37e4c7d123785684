"""bench/results/latency.{json,md,png}: the latency suite's tables, target verdicts, profiles and plot."""
from __future__ import annotations

from pathlib import Path

from metarec.bench import bench_util as bu

ORT = "ONNX Runtime (model.onnx)"
ORT_ADAPT = "ONNX Runtime (unrolled steps)"


def _table(rows: dict, ref: str | None) -> list[str]:
    refv = rows.get(ref, {}).get("p50_us") if ref else None
    out = ["| backend | p50 us | p99 us | min us | runs | p50 / ONNX Runtime |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in rows.items():
        r = bu.ratio(v["p50_us"], refv)
        out.append(f"| {k} | {bu.fmt_us(v['p50_us'])} | {bu.fmt_us(v['p99_us'])} | {bu.fmt_us(v['min_us'])} | "
                   f"{v['runs']:,} | {'-' if r is None else f'{r:.2f}'} |")
    return out


def _targets(t: dict) -> list[str]:
    out = ["| target | measured | met | miss |", "|---|---:|---|---:|"]
    for name, v in t.items():
        val = "not measured" if v["value"] is None else f"{v['value']:.2f} {v['unit']}"
        met = "n/a" if v["met"] is None else ("yes" if v["met"] else "**no**")
        miss = "" if not v.get("miss_pct") else f"+{v['miss_pct']:.0f}%"
        out.append(f"| {name} | {val} | {met} | {miss} |")
    return out


def _profile(rows: list[dict], title: str) -> list[str]:
    if not rows:
        return []
    out = ["", f"**{title}** (cProfile, own time per call, top functions):", "",
           "| function | own us/call | cum us/call |", "|---|---:|---:|"]
    for r in rows:
        out.append(f"| `{r['name']}` | {r['tottime_us_per_call']:.1f} | {r['cumtime_us_per_call']:.1f} |")
    return out


def write_latency(d: dict, command: str, out_dir=None) -> None:
    from metarec.bench.paths import RESULTS_DIR
    from metarec.sdk.results import write_results

    out = Path(out_dir or RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    _plot(d, out / "latency.png", command)
    sh = d["shapes"]
    la = d["loadavg_before_after"]
    lines = ["# Latency: recommend and adaptation, per backend (1 thread)", "",
             f"Bundle `{d['bundle']}` (N={sh['N']}, d={sh['d']}, L={sh['L']}, P={sh['P']}, k_max={sh['k_max']}, "
             f"inner steps {d.get('inner_steps', '?')}); "
             f"eager model from `{d['checkpoint']}`" + (f" ({d['model_note']})" if d.get("model_note") else "") + ".",
             f"{d['runs']:,} timed calls per backend after warm-up, backends interleaved in 10 rounds so load from "
             f"other processes hits all alike; process niceness {d['threads'].get('nice', 0)}. "
             f"Load average before/after: {la[0][0]:.1f} / {la[1][0]:.1f} "
             "(2 cores shared with other jobs: p50/p99 include their interference; min does not).", "",
             "## Targets", ""] + _targets(d["targets"]) + [
             "", "## Score (z, table pass, trend, exclusions, top-k) -- same inputs", ""] + _table(d["score"], ORT) + [
             "", "## One whole adaptation (adapt.pte inner_steps Meta-SGD steps) -- same inputs", ""] + \
        _table(d["adapt"], ORT_ADAPT if ORT_ADAPT in d["adapt"] else None)
    if d.get("runtime"):
        lines += ["", "## The runtime's public API (metarec.runtime.Recommender)", "",
                  "| path | p50 us | p99 us | min us | runs |", "|---|---:|---:|---:|---:|"]
        for k, v in d["runtime"].items():
            lines.append(f"| {k} | {bu.fmt_us(v['p50_us'])} | {bu.fmt_us(v['p99_us'])} | {bu.fmt_us(v['min_us'])} "
                         f"| {v['runs']:,} |")
    lines += ["", "## Parity (same inputs)", ""] + [f"- {k}: {v:.3g}" for k, v in d["parity"].items()]
    if d.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {k}: {v}" for k, v in d["notes"].items()]
    if d.get("analysis"):
        lines += ["", "## Where targets are missed: what dominates", "", d["analysis"]]
    lines += _profile(d.get("profile_score", []), "score.pte call from Python")
    lines += _profile(d.get("profile_recommend", []), "Recommender.recommend, warm user")
    lines += _profile(d.get("profile_record_adapt_recommend", []), "record + recommend of a stale user")
    lines += ["", "![latency](latency.png)"]
    write_results("latency", d, "\n".join(lines), command, out)


def _plot(d: dict, path: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("score / recommend", {**d["score"], **{f"runtime: {k}": v for k, v in d.get("runtime", {}).items()
                                                     if k.startswith("recommend")}}),
              ("one whole adaptation", {**d["adapt"], **{f"runtime: {k}": v for k, v in d.get("runtime", {}).items()
                                                        if k.startswith("adapt")}})]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, (title, rows), (tgt, tlab) in zip(axes, panels, ((25.0, "target 25 us (recommend p50)"),
                                                             (60.0, "target 60 us (adaptation p50)"))):
        ax.axvline(tgt, color="tab:red", ls="--", lw=1, label=tlab)
        names = list(rows)
        p50 = [rows[n]["p50_us"] for n in names]
        p99 = [rows[n]["p99_us"] for n in names]
        y = range(len(names))
        ax.barh(y, p99, color="0.85", label="p99")
        ax.barh(y, p50, color="tab:blue", label="p50")
        ax.set_yticks(list(y), [n.replace(" (", "\n(") for n in names], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("us per call, 1 thread (log)")
        ax.set_title(title)
        ax.invert_yaxis()
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Latency per backend, N={d['shapes']['N']} items")
    fig.tight_layout()
    bu.save_png(fig, path, command)
