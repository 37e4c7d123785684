"""`metarec bench --only scaling-runtime --items N --json OUT`: recommend latency through the product at N items.

A synthetic checkpoint (bench/scaling_programs.py's model: d=32, random weights, the shape bench/results/scaling.md
measured) is written to a temporary folder and exported by `metarec export` itself (a child process: the CLI, int8,
no pruning, no ONNX; a catalog of at least ExportConfig.large_catalog_items items gets the large-catalog score.pte).
The bundle is opened with `Recommender.open`, one user records 3 items, and `Recommender.recommend` is timed on one
thread (torch and ExecuTorch's threadpool pinned), warm: the user's head adapted, the scene hour unchanged, which is
what an app's repeated calls are. `bandwidth_bound_us` = one pass over the table the call reads / the best copy
bandwidth measured before and after (numpy copy, bench_util.copy_bandwidth): for the large program score.pte's
bytes as inflated (the quantized table, its scales and the item bias: all but ~60 KB of it), for the small one the
fp32 table input. `stream_bound_us` adds the other per-item inputs (large: t, 4 B/item; small: trend, exclude and
score.pte).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metarec.bench import bench_util as bu

DEFAULT_QUANT = "int8"  # bench/results/scaling.md: the chunked int8 program is the one that meets 2x at 1M items


def make_bundle(n_items: int, folder: Path, quant: str = DEFAULT_QUANT, extra_args: tuple = ()) -> tuple[Path, Path]:
    """(bundle dir, public key) of a synthetic N-item checkpoint exported by `metarec export` in a child process."""
    from metarec.bench.scaling_programs import synthetic_model
    from metarec.export import generate_keypair
    from metarec.export.bundle import save_exported_model

    model = synthetic_model(n_items)
    ckpt = save_exported_model(model, folder / "synthetic.pt", None, [f"i{j}" for j in range(n_items)], {})
    del model
    keys = generate_keypair(folder / "keys")
    out = folder / "bundle"
    cmd = [sys.executable, "-m", "metarec.bench.cli", "export", str(ckpt), "--out", str(out), "--key",
           str(keys / "private.pem"), "--quant", quant, "--prune", "none", "--no-onnx", *extra_args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"metarec export failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return out, keys / "public.pem"


def stream_bytes(bundle_dir: Path) -> dict:
    """What one recommend call must read, from the bundle's manifest: bytes per part."""
    import zlib

    m = json.loads((bundle_dir / "manifest.json").read_bytes())
    n, d = m["shapes"]["N"], m["shapes"]["d"]
    score = m["programs"]["score"]
    raw = (bundle_dir / score["file"]).read_bytes()
    pte = len(zlib.decompress(raw)) if score["codec"] == "zlib" else len(raw)
    if score.get("chunks"):
        return {"score_pte": pte, "t": 4 * n}
    return {"score_pte": pte, "table_fp32": 4 * n * d, "trend": 4 * n, "exclude": 4 * n}


def measure(bundle_dir: Path, key: Path, runs: int, state: Path) -> dict:
    """p50/p99/min of warm `Recommender.recommend` calls, one thread."""
    from metarec.runtime import Recommender

    t0 = time.perf_counter()
    rec = Recommender.open(bundle_dir, state, trusted_key=key)
    open_s = time.perf_counter() - t0
    try:
        now = 1_700_000_000.0
        for j, item in enumerate(rec.item_ids[:3]):
            rec.record("u", item, now + j)
        rec.recommend("u", now=now + 60, k=10)  # adapts the head, binds the inputs
        ns = bu.time_calls(lambda: rec.recommend("u", now=now + 60, k=10), runs)
        first = rec.recommend("u", now=now + 60, k=10)
        recorded = set(rec.item_ids[:3])
        cold = bu.time_calls(lambda: rec.recommend("v", now=now + 60, k=10), max(50, runs // 10))  # no history
    finally:
        rec.close()
    return {"warm": bu.summarize(ns), "new_user": bu.summarize(cold), "open_s": open_s,
            "top3": [r.item_id for r in first[:3]], "recorded_excluded": not recorded & {r.item_id for r in first}}


def run_scaling_runtime(n_items: int | None, runs: int, command: str, json_out: str | os.PathLike | None = None,
                        quant: str = DEFAULT_QUANT, bundle_dir: str | os.PathLike | None = None) -> dict:
    """Export a synthetic N-item bundle (or, `n_items` None, measure `bundle_dir`), measure, write `json_out`: {"items", "recommend_p50_us",
    "bandwidth_bound_us", ...}."""
    pin = bu.pin_threads(1)
    with tempfile.TemporaryDirectory(prefix="metarec-scaling-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if n_items is not None:
            b, key = make_bundle(n_items, tmp, quant)
        else:
            from metarec.bench.run import require_bundle

            b, key = require_bundle(bundle_dir)
        export_s = time.perf_counter() - t0
        sizes = {p.name: p.stat().st_size for p in sorted(b.iterdir()) if p.is_file()}
        manifest = json.loads((b / "manifest.json").read_bytes())
        parts = stream_bytes(b)
        bw = bu.copy_bandwidth()
        load0 = os.getloadavg()
        m = measure(b, key, runs, tmp / "state.db")
        bw_end = bu.copy_bandwidth()
    best = max(bw["best_gbps"], bw_end["best_gbps"])
    table_bytes = parts["score_pte"] if "t" in parts else parts["table_fp32"]
    bound_us = table_bytes / (best * 1e9) * 1e6
    stream_us = sum(parts.values()) / (best * 1e9) * 1e6
    p50 = m["warm"]["p50_us"]
    out = {"items": int(manifest["shapes"]["N"]), "recommend_p50_us": p50, "bandwidth_bound_us": bound_us,
           "x_bound": p50 / bound_us, "stream_bound_us": stream_us, "x_stream_bound": p50 / stream_us,
           "recommend_p99_us": m["warm"]["p99_us"], "recommend_min_us": m["warm"]["min_us"],
           "new_user_p50_us": m["new_user"]["p50_us"], "runs": runs,
           "program": "large (chunked, table inside score.pte)" if manifest["programs"]["score"].get("chunks")
           else "small (table input)", "table_format": manifest["item_table"]["format"],
           "large_catalog_items": manifest["configs"]["export"].get("large_catalog_items"),
           "stream_bytes": parts, "bundle_bytes": sizes, "bundle_total_bytes": sum(sizes.values()),
           "copy_gbps_best": best, "open_s": m["open_s"], "export_s": export_s, "threads": pin,
           "loadavg_before_after": [load0, os.getloadavg()], "recorded_excluded": m["recorded_excluded"],
           "command": command}
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{out['items']:,} items ({out['program']}, {out['table_format']}): recommend p50 {p50:,.1f} us, "
          f"bound {bound_us:,.1f} us = {out['x_bound']:.2f}x; bundle {out['bundle_total_bytes']:,} bytes",
          flush=True)
    return out


