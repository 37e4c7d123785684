"""Training time and memory against catalog size at ML-100K's scale of events: `metarec train`'s whole path (load,
the floor's validation fit and baselines, the product's fit) on 100,000 synthetic events of 1,000 users over N items.

Each size runs in a child process (`python -m metarec.bench.bench_train_scaling --child ...`), so its wall time and
peak RSS (VmHWM) are its own. `--dense-max` sets sdk.neighbors.DENSE_EIGH_MAX in the children: the default is the
product's; a large value runs the dense eigendecomposition that every catalog took before session 15
(docs/decisions/cooc-init.md). The brief's target: training <= 5 min on 2 cores at ML-100K scale.

    python -m metarec.bench.bench_train_scaling --sizes 2000,8000,16000,32000 --out bench/results/train_scaling
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

USERS, EVENTS, CLUSTERS = 1_000, 100_000, 20
T0 = 1_600_000_000


def write_events(path: Path, n_items: int, seed: int = 0) -> None:
    """Zipf-popular items in CLUSTERS taste groups (co-occurrence to find), one event a day-ish per user."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, CLUSTERS, USERS)
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.05
    item_group = rng.integers(0, CLUSTERS, n_items)
    per = EVENTS // USERS
    rows = []
    for u in range(USERS):
        p = pop * np.where(item_group == group[u], 8.0, 1.0)
        items = rng.choice(n_items, per, p=p / p.sum())
        ts = T0 + rng.integers(0, 300, 1) * 86_400 + np.sort(rng.integers(0, 60 * 86_400, per))
        rows += [(u, int(i), int(t)) for i, t in zip(items, ts)]
    with path.open("w") as f:
        f.write("user,item,timestamp\n")
        f.writelines(f"{u},{i},{t}\n" for u, i, t in rows)


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def child(events: str, out: str, steps: int, dense_max: int | None) -> dict:
    from metarec.sdk import neighbors
    from metarec.sdk.train import TrainConfig, train

    if dense_max is not None:
        neighbors.DENSE_EIGH_MAX = dense_max
    t = time.perf_counter()
    train(TrainConfig(dataset=events, steps=steps, progress=False), out)
    return {"seconds": time.perf_counter() - t, "peak_rss_mib": _vmhwm_kib() / 1024}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,8000,16000,32000")
    ap.add_argument("--steps", type=int, default=600, help="the product's default")
    ap.add_argument("--dense-max", type=int, default=None, help="DENSE_EIGH_MAX in the children (default: product's)")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    ap.add_argument("--child", nargs=3, metavar=("EVENTS", "CKPT", "DENSE_MAX"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        dm = None if a.child[2] == "-" else int(a.child[2])
        print(json.dumps(child(a.child[0], a.child[1], a.steps, dm)))
        return
    from tqdm.auto import tqdm

    from metarec.sdk import neighbors

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in tqdm([int(s) for s in a.sizes.split(",")], desc="catalog sizes"):
            ev = Path(tmp) / f"events_{n}.csv"
            write_events(ev, n)
            cmd = [sys.executable, "-m", "metarec.bench.bench_train_scaling", "--steps", str(a.steps),
                   "--child", str(ev), str(Path(tmp) / f"{n}.pt"), "-" if a.dense_max is None else str(a.dense_max)]
            p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if p.returncode:
                raise SystemExit(f"size {n}: {p.stderr[-2000:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            dense = n <= (a.dense_max if a.dense_max is not None else neighbors.DENSE_EIGH_MAX)
            rows.append({"n_items": n, "cooc_path": "dense" if dense else "sparse", **r})
            tqdm.write(f"{n} items ({rows[-1]['cooc_path']}): {r['seconds']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB")
    from metarec.bench.bench_util import caption

    command = (f"python -m metarec.bench.bench_train_scaling --sizes {a.sizes} --steps {a.steps}"
               f"{'' if a.dense_max is None else f' --dense-max {a.dense_max}'}")
    head = (f"# metarec train vs catalog size ({EVENTS:,} events, {USERS:,} users, {a.steps} steps, floor on, "
            f"1 thread)\n\n`{caption(command)}`\n\n"
            "| items | co-occurrence start | train, s | peak RSS, MiB | <= 5 min |\n|---|---|---|---|---|\n")
    md = head + "".join(f"| {r['n_items']:,} | {r['cooc_path']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
                        f"{'yes' if r['seconds'] <= 300 else 'no'} |\n" for r in rows)
    print(md)
    if a.out:
        Path(a.out + ".json").write_text(json.dumps({"command": caption(command), "steps": a.steps,
                                                     "dense_max": a.dense_max, "rows": rows}, indent=1))
        Path(a.out + ".md").write_text(md)


if __name__ == "__main__":
    main()
