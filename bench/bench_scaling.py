"""Catalog scaling: recommend latency of score programs with 1K..1M synthetic items against the memory-bandwidth
bound measured in the same run.

The synthetic scorer has score.pte's structure (contracts.md): head (P,), hist_vecs (L, d), hist_mask (L,),
scene (F,), trend (N,), exclude (N,) -> top-k, computed by `MetaRecModel.score_from_vectors` (so z, the scene gate
and the `F.linear(z, table) + bias + trend` pass are the real model's) with random weights, the item table as a
program constant. When export ships a program builder that takes a table, we use it (same graph by construction).

Bound = bytes the scorer must stream per call / copy bandwidth (numpy copy; read+written bytes counted, see
bench_util.copy_bandwidth). We report two bounds: the table alone (the issue's definition) and the table plus the
per-item inputs (bias, trend, exclude: 12 bytes per item) that a full pass also reads.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from metarec.bench import bench_util as bu

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)


def _model(n_items: int, seed: int = 0):
    import torch

    from metarec.sdk.model import MetaRecModel, ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig()
    rng = np.random.default_rng(seed)
    attrs = (rng.random((n_items, 21)) < 0.1).astype(np.float32)
    m = MetaRecModel(cfg, n_items, attrs).eval()
    with torch.no_grad():
        m.item_emb.normal_(0, 0.1)
        for p in m.head0.values():
            p.normal_(0, 0.1)
    return m


STAGES = ("linear", "elementwise", "full")


def score_module(model, k: int, quant: str = "none", stage: str = "full", topk_mode: str = "flat"):
    """The `nn.Module` score.pte exports: flat head + history + scene + trend + exclude -> top-k (bench's copy).

    `stage` cuts the graph for the profile by subtraction: "linear" returns z . table (all N scores),
    "elementwise" adds bias, trend and exclusion, "full" is the real program (+ top-k)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} unknown; known: {STAGES}")
    if topk_mode not in ("flat", "blocked"):
        raise ValueError(f"topk_mode {topk_mode!r} unknown; known: flat, blocked")
    n_blocks = 1000 if model.n_items % 1000 == 0 and model.n_items >= 1000 * k else 0
    if topk_mode == "blocked" and not n_blocks:
        raise ValueError("blocked top-k needs N a multiple of 1000 and N >= 1000 * k")
    import torch
    import torch.nn.functional as F
    from torch import nn

    names = list(model.head_param_names)
    shapes = [tuple(model.head0[n].shape) for n in names]
    sizes = [int(np.prod(s)) for s in shapes]

    class Score(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Linear(model.cfg.dim, model.n_items, bias=False)
            with torch.no_grad():
                self.table.weight.copy_(model.export_item_table())
            self.register_buffer("bias", model.export_item_bias())
            object.__setattr__(self, "model", model)  # not a submodule: unused item params stay out

        def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude):
            parts = torch.split(head, sizes)
            h = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
            z = self.model.user_vector(h, hist_vecs, hist_mask, scene)
            out = self.table(z[None])[0]  # 2-D input: the quantized linear kernels need it
            if stage == "linear":
                return (out,)
            out = out + self.bias
            out = out + self.model.trend_term(scene, trend)
            out = out - exclude * 1e9  # exclude = 1.0 drops the item below every real score
            if stage == "elementwise":
                return (out,)
            if topk_mode == "blocked":
                return _blocked_topk(out, k, n_blocks)
            v, i = torch.topk(out, k)
            return v, i

    mod = Score().eval()
    if quant != "none":
        _quantize_table(mod, quant)
    return mod


def _blocked_topk(scores, k: int, n_blocks: int):
    """Exact top-k in two passes: block maxima, the k best blocks, then top-k among their items. Any top-k item
    lies in one of the k blocks with the largest maxima (else k items from other blocks beat it), so the result
    equals a flat top-k up to ties, while the O(N) part is a max reduction instead of a selection over N."""
    import torch

    blocks = scores.reshape(n_blocks, -1)
    b = blocks.shape[1]
    _, bi = torch.topk(blocks.amax(1), k)
    v, j = torch.topk(blocks.index_select(0, bi).reshape(-1), k)
    return v, bi.index_select(0, torch.div(j, b, rounding_mode="floor")) * b + torch.remainder(j, b)


def _quantize_table(mod, quant: str) -> None:
    """torchao weight quantization of the table (8-bit dynamic activations, int4/int8 weights, group 32)."""
    import torch
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerGroup

    try:
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig as Cfg
    except ImportError as e:  # pragma: no cover
        raise ModuleNotFoundError("torchao >= 0.12 with Int8DynamicActivationIntxWeightConfig is required") from e
    wdt = {"int4": torch.int4, "int8": torch.int8}[quant]
    quantize_(mod, Cfg(weight_dtype=wdt, weight_granularity=PerGroup(32)),
              filter_fn=lambda m, fqn: fqn == "table")


def example_inputs(model, n_items: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    P = model.head_size()
    L, d = cfg.hist_len, cfg.dim
    head = torch.cat([model.head0[n].detach().reshape(-1) for n in model.head_param_names])
    hist = torch.randn(L, d, generator=g) * 0.1
    mask = torch.zeros(L)
    mask[-3:] = 1.0
    scene = torch.rand(15, generator=g)
    trend = torch.log1p(torch.randint(0, 20, (n_items,), generator=g).float())
    exclude = torch.zeros(n_items)
    exclude[:3] = 1.0
    assert head.numel() == P
    return (head, hist, mask, scene, trend, exclude)


def build_scorer(n_items: int, k: int = 10, quant: str = "none", xnnpack: bool = True, seed: int = 0,
                 stage: str = "full", topk_mode: str = "flat"):
    """(pte bytes, example inputs, eager module) of a synthetic scorer with `n_items` items."""
    import torch

    model = _model(n_items, seed)
    mod = score_module(model, k, quant, stage, topk_mode)
    ex = example_inputs(model, n_items, seed)
    with torch.no_grad():
        ep = torch.export.export(mod, ex)
    return bu.lower_program(ep, xnnpack=xnnpack), ex, mod


def build_export_scorer(n_items: int, k: int = 10, topk_mode: str = "flat", seed: int = 0):
    """score.pte exactly as export builds it (export.programs.ScoreModule: the fp32 table is an input), for a
    synthetic model with `n_items` items; `blocked` swaps only the final top-k."""
    import torch

    from metarec.export.programs import ScoreModule, score_example_inputs

    model = _model(n_items, seed)
    table = model.export_item_table()
    mod = ScoreModule(model, model.export_item_bias(), k).eval()
    if topk_mode == "blocked":
        if n_items % 1000 or n_items < 1000 * k:
            raise ValueError("blocked top-k needs N a multiple of 1000 and N >= 1000 * k")

        def forward(*a):
            return _blocked_topk(mod.scores(*a), k, 1000)

        mod.forward = forward
    ex = score_example_inputs(model, table)
    with torch.no_grad():
        ep = torch.export.export(mod, ex, strict=False)
    return bu.lower_program(ep, xnnpack=True), ex, mod


def measure_size(n_items: int, runs: int, k: int = 10, quant: str = "none",
                 table_fmt_bytes: float | None = None, topk_mode: str = "flat", layout: str = "constant") -> dict:
    """Build, lower (XNNPACK), load and time one scorer; returns its row of the scaling table.

    layout "input": export's score.pte (fp32 table passed in); "constant": the table baked in, `quant` format."""
    import torch

    t0 = time.time()
    if layout == "input":
        pte, ex, mod = build_export_scorer(n_items, k, topk_mode)
    else:
        pte, ex, mod = build_scorer(n_items, k, quant, topk_mode=topk_mode)
    build_s = time.time() - t0
    prog = bu.load_pte(pte)
    got = prog.forward(ex)
    with torch.no_grad():
        ref = mod(*ex)
    agree = bool(torch.equal(got[1], ref[1])) if quant == "none" else float(
        len(set(got[1].tolist()) & set(ref[1].tolist())) / k)
    ns = bu.time_calls(lambda: prog.forward(ex), runs)
    d = ex[1].shape[1]
    bpe = {"none": 4.0, "int8": 1.0 + 4 / 32, "int4": 0.5 + 4 / 32}[quant] if table_fmt_bytes is None else table_fmt_bytes
    row = {"n_items": n_items, "layout": layout, "quant": quant, "topk": topk_mode, "k": k,
           "variant": variant_name(layout, quant, topk_mode), "pte_bytes": len(pte), "build_s": round(build_s, 1),
           "table_bytes": int(n_items * d * bpe), "stream_bytes": int(n_items * d * bpe + 12 * n_items),
           "topk_matches_eager": agree, **bu.summarize(ns)}
    prof = bu.program_profile(pte)
    row["program"] = {k: prof[k] for k in ("instructions", "delegate_calls", "portable_kernel_calls")}
    row["portable_ops"] = sorted(prof["portable_ops"])
    del prog
    return row


def table_input_linear(n_items: int, d: int, runs: int) -> dict:
    """The table pass alone with the table as a program INPUT (export's layout): `F.linear(z, table)` lowered
    with the XNNPACK partitioner, timed, with its plan (does XNNPACK take the matmul, or portable aten::mm?)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Linear(nn.Module):
        def forward(self, z, table):
            return (F.linear(z[None], table)[0],)

    ex = (torch.randn(d), torch.randn(n_items, d))
    pte = bu.lower_program(torch.export.export(Linear(), ex), xnnpack=True)
    prog = bu.load_pte(pte)
    return {"n_items": n_items, **bu.summarize(bu.time_calls(lambda: prog.forward(ex), runs, warmup=3)),
            "program": bu.program_profile(pte)}


def stage_profile(n_items: int, runs: int, k: int = 10, quant: str = "none") -> dict:
    """Profile by subtraction: time the program cut after the table pass, after the element-wise terms, and whole.

    ExecuTorch's pip runtime has no per-op event tracer, so each stage is its own lowered program; the partial
    programs also return all N scores (one N-float output copy that the full program does not pay).
    Reports p50 and min per stage and the increments (min is the least disturbed by other load on the machine).
    """
    out = {}
    for stage in STAGES:
        pte, ex, _ = build_scorer(n_items, k, quant, stage=stage)
        prog = bu.load_pte(pte)
        out[stage] = bu.summarize(bu.time_calls(lambda: prog.forward(ex), runs))
        del prog
    inc = {"table pass (z . table, XNNPACK)": out["linear"],
           "bias + trend + exclude (element-wise)": {k2: out["elementwise"][k2] - out["linear"][k2]
                                                     for k2 in ("p50_us", "min_us")},
           "top-k (portable kernel)": {k2: out["full"][k2] - out["elementwise"][k2] for k2 in ("p50_us", "min_us")}}
    return {"n_items": n_items, "quant": quant, "stages": out,
            "increments": {name: {"p50_us": v["p50_us"], "min_us": v["min_us"]} for name, v in inc.items()},
            "non_delegated_ops": _non_delegated_ops(build_scorer(1000, k, quant)[0])}


def _non_delegated_ops(pte: bytes) -> list[str]:
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        prog = deserialize_pte_binary(pte)
        prog = getattr(prog, "program", prog)
        ops = prog.execution_plan[0].operators
        return sorted({o.name + (f".{o.overload}" if o.overload else "") for o in ops})
    except Exception as e:  # noqa: BLE001 - diagnostics only
        return [f"unavailable: {type(e).__name__}"]


def variant_name(layout: str, quant: str, topk_mode: str) -> str:
    base = "score.pte as exported (fp32 table input)" if layout == "input" else \
        f"table constant {'fp32' if quant == 'none' else quant}"
    return base + (", blocked top-k" if topk_mode == "blocked" else "")


# (layout, quant, topk mode, sizes: "all" or "largest")
DEFAULT_VARIANTS = (("input", "none", "flat", "all"), ("constant", "int4", "flat", "all"),
                    ("input", "none", "blocked", "largest"), ("constant", "int4", "blocked", "largest"))


def run_scaling(runs: int, command: str, out_dir=None, sizes=DEFAULT_SIZES, variants=DEFAULT_VARIANTS, k: int = 10,
                write: bool = True, bw_bytes: int = 256 << 20, min_runs_big: int = 1000) -> dict:
    """The scaling suite: bandwidth, then each size (and table format), then the bound and the ratio to it."""
    pin = bu.pin_threads(1)
    bw = bu.copy_bandwidth(bw_bytes)
    load0 = os.getloadavg()
    rows = []
    for layout, quant, topk_mode, which in variants:
        for n in (sizes if which == "all" else (max(sizes),)):
            r = measure_size(n, runs if n < 1_000_000 else min(runs, max(min_runs_big, 1)), k, quant,
                             topk_mode=topk_mode, layout=layout)
            gbps = bw["best_gbps"]
            r["bound_table_us"] = r["table_bytes"] / (gbps * 1e9) * 1e6
            r["bound_stream_us"] = r["stream_bytes"] / (gbps * 1e9) * 1e6
            r["x_table_bound"] = r["p50_us"] / r["bound_table_us"]
            r["x_table_bound_min"] = r["min_us"] / r["bound_table_us"]
            r["x_stream_bound"] = r["p50_us"] / r["bound_stream_us"]
            r["effective_gbps"] = r["stream_bytes"] / (r["p50_us"] * 1e-6) / 1e9
            rows.append(r)
    big = [r for r in rows if r["n_items"] == max(sizes)]
    shipped = next((r for r in big if r["layout"] == "input" and r["topk"] == "flat"), None)
    best_big = min(big, key=lambda r: r["x_table_bound"]) if big else None
    profile = None
    if best_big is not None and best_big["x_table_bound"] > 2.0 or shipped and shipped["x_table_bound"] > 2.0:
        q = next((r["quant"] for r in big if r["layout"] == "constant"), "int4")
        profile = stage_profile(max(sizes), min(runs, max(min_runs_big, 1)), k, q)
        if shipped is not None and shipped["x_table_bound"] > 2.0:
            profile["table_input_linear"] = table_input_linear(max(sizes), 32, min(runs, 100))
    data = {"threads": pin, "bandwidth": bw, "loadavg_before_after": [load0, os.getloadavg()], "profile": profile, "k": k, "rows": rows,
            "target_1m_within_2x": bu.verdict(shipped["x_table_bound"] if shipped else None, 2.0, "x bound"),
            "target_1m_within_2x_best_variant": dict(bu.verdict(best_big["x_table_bound"] if best_big else None, 2.0,
                                                               "x bound"),
                                                     variant=best_big["variant"] if best_big else None),
            "target_note": "p50 / (table bytes / copy bandwidth) at the largest catalog: score.pte as exported, "
                           "and the best variant measured"}
    if write:
        _write(data, command, out_dir)
    return data


def _write(data: dict, command: str, out_dir) -> None:
    from metarec.sdk.results import RESULTS_DIR, write_results

    out = Path(out_dir or RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    _plot(data, out / "scaling.png", command)
    bw, la = data["bandwidth"], data["loadavg_before_after"]
    lines = ["# Catalog scaling: recommend (score + top-k) against the memory-bandwidth bound", "",
             f"Copy bandwidth (numpy copy of {bw['buffer_bytes'] >> 20} MiB, {bw['convention']}): "
             f"best {bw['best_gbps']:.2f} GB/s, median {bw['median_gbps']:.2f} GB/s. Bound = table bytes / best "
             "(stream bound adds the 12 bytes/item of bias, trend and exclude).",
             f"1 thread, top-{data['k']}, XNNPACK, synthetic model (random weights) with score.pte's graph. "
             "\"score.pte as exported\" is export's own `ScoreModule` (fp32 table as an input, as shipped); \"table "
             "constant\" bakes a torchao-quantized table into the program; \"blocked top-k\" is a proposed exact "
             "two-pass top-k (block maxima, then the k best blocks) replacing the flat top-k.",
             f"Niceness {data['threads'].get('nice', 0)}; load average before/after: {la[0][0]:.1f} / {la[1][0]:.1f} "
             "(other jobs share the 2 cores; p50 "
             "includes their interference, min does not).", "",
             "| items | variant | .pte bytes | p50 us | p99 us | min us | table bound us | x bound (p50) | x bound (min) "
             "| eff. GB/s |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        lines.append(f"| {r['n_items']:,} | {r['variant']} | {r['pte_bytes']:,} | "
                     f"{bu.fmt_us(r['p50_us'])} | {bu.fmt_us(r['p99_us'])} | {bu.fmt_us(r['min_us'])} | "
                     f"{bu.fmt_us(r['bound_table_us'])} | {r['x_table_bound']:.2f} | {r['x_table_bound_min']:.2f} | "
                     f"{r['effective_gbps']:.2f} |")
    v, b = data["target_1m_within_2x"], data["target_1m_within_2x_best_variant"]

    def say(x):
        if x["value"] is None:
            return "not measured"
        return f"{'MET' if x['met'] else 'MISSED'} at {x['value']:.2f}x" + (
            "" if x["met"] else f" ({x['miss_pct']:.0f}% over 2x)")

    lines += ["", f"Target (largest catalog within 2x of the table bound, p50): score.pte as exported: {say(v)}; "
                  f"best variant ({b.get('variant')}): {say(b)}.", "", "![scaling](scaling.png)"]
    prof = data.get("profile")
    if prof:
        lines += ["", f"## What dominates at {prof['n_items']:,} items: profile by subtraction "
                      f"(table constant {prof['quant']}, flat top-k)", "",
                  "Each stage is its own lowered program (the pip runtime has no per-op tracer): the program cut after "
                  "the table pass, after bias + trend + exclude, and whole. Increments of min times (p50 differences "
                  "are swamped by other jobs on this machine; both are in scaling.json).", "",
                  "| part | min us |", "|---|---:|"]
        for name, x in prof["increments"].items():
            lines.append(f"| {name} | {bu.fmt_us(x['min_us'])} |")
        lines += ["", "Ops left outside the XNNPACK delegate (portable kernels): "
                  + ", ".join(f"`{o}`" for o in prof["non_delegated_ops"])]
        tl = prof.get("table_input_linear")
        if tl:
            sh = next((r for r in data["rows"] if r["n_items"] == tl["n_items"] and r["layout"] == "input"
                       and r["topk"] == "flat"), None)
            on_mm = "aten::mm" in tl["program"]["portable_ops"]
            lines += ["", f"## What dominates score.pte as exported at {tl['n_items']:,} items", "",
                      f"The table pass alone, `F.linear(z, table)` with the table as a program input (export's "
                      f"layout), lowered with the XNNPACK partitioner: p50 {bu.fmt_us(tl['p50_us'])} us, min "
                      f"{bu.fmt_us(tl['min_us'])} us ({tl['runs']} runs)"
                      + (f" (the whole score call, measured separately: p50 {bu.fmt_us(sh['p50_us'])} us, min "
                         f"{bu.fmt_us(sh['min_us'])} us)" if sh else "") + ". "
                      + ("Its plan runs the matmul as the portable `aten::mm` kernel: XNNPACK does not take a "
                         "linear whose weight is a runtime input here, so the one O(N) pass that matters runs a "
                         "naive kernel. The table as a (quantized) program constant is delegated (rows above)."
                         if on_mm else f"Plan: {tl['program']}.")]
    if data.get("analysis"):
        lines += ["", data["analysis"]]
    write_results("scaling", data, "\n".join(lines), command, out)


def _plot(data: dict, path: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    variants = list(dict.fromkeys(r["variant"] for r in data["rows"]))
    for j, name in enumerate(variants):
        rs = [r for r in data["rows"] if r["variant"] == name]
        n = [r["n_items"] for r in rs]
        c = f"C{j}"
        if len(rs) == 1:
            ax.plot(n, [rs[0]["p50_us"]], "*", ms=12, color=c, label=f"p50 {name}")
            continue
        ax.plot(n, [r["p50_us"] for r in rs], "o-", color=c, label=f"p50 {name}")
        ax.fill_between(n, [r["min_us"] for r in rs], [r["p99_us"] for r in rs], color=c, alpha=0.12)
        ax.plot(n, [r["bound_table_us"] for r in rs], "--", color=c, label=f"bandwidth bound ({name.split(',')[0]})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("catalog items")
    ax.set_ylabel("us per recommend, 1 thread (band: min..p99)")
    ax.set_title(f"Catalog scaling vs copy bandwidth {data['bandwidth']['best_gbps']:.1f} GB/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    bu.save_png(fig, path, command)
