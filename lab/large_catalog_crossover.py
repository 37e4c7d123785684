"""Where should `metarec export` switch to the large-catalog score.pte? Both programs on the same synthetic
checkpoint, through `Recommender.recommend` (one thread, warm user), at each catalog size given.

    .venv/bin/python lab/large_catalog_crossover.py OUT.json 10000 100000 [--runs 1000]

Each size: `metarec export` twice (--large-catalog-items 0: the small program, the fp32 table as an input; and
--large-catalog-items 1: the large one, int8 table inside score.pte), then bench/bench_scaling_runtime.measure on
each, interleaved in that order. Figures back docs/decisions/large-catalog.md.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from metarec.bench import bench_util as bu
from metarec.bench.bench_scaling_runtime import make_bundle, measure, stream_bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("sizes", nargs="+", type=int)
    ap.add_argument("--runs", type=int, default=1000)
    a = ap.parse_args()
    pin = bu.pin_threads(1)
    rows = []
    for n in a.sizes:
        with tempfile.TemporaryDirectory(prefix="metarec-crossover-") as tmp:
            bw = bu.copy_bandwidth()["best_gbps"]
            for name, threshold in (("small", 0), ("large", 1)):
                folder = Path(tmp) / name
                folder.mkdir()
                b, key = make_bundle(n, folder, extra_args=("--large-catalog-items", str(threshold)))
                m = measure(b, key, a.runs, folder / "state.db")
                parts = stream_bytes(b)
                table = parts["score_pte"] if "t" in parts else parts["table_fp32"]  # as bench_scaling_runtime
                bound = table / (bw * 1e9) * 1e6
                size = sum(p.stat().st_size for p in b.iterdir())
                rows.append({"items": n, "program": name, "recommend_p50_us": m["warm"]["p50_us"],
                             "recommend_min_us": m["warm"]["min_us"], "bandwidth_bound_us": bound,
                             "x_bound": m["warm"]["p50_us"] / bound,
                             "stream_bound_us": sum(parts.values()) / (bw * 1e9) * 1e6, "bundle_bytes": size, "open_s": m["open_s"]})
                print(json.dumps(rows[-1]), flush=True)
    Path(a.out).write_text(json.dumps({"threads": pin, "loadavg": os.getloadavg(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
