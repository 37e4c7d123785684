"""Memory: peak RSS of a process that opens the bundle and serves 1,000 users, and the state database's bytes per
user.

The serving process is a child (`python -m metarec.bench.bench_memory BUNDLE KEY STATE USERS EVENTS`), so its
peak RSS is its own: the parent reads it from the child's /proc status (VmHWM) just before it exits, and
cross-checks with getrusage(RUSAGE_CHILDREN).ru_maxrss. A baseline child that imports the same modules but opens
nothing separates the cost of the bundle and the users from the interpreter + torch + executorch floor.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = 1_700_000_000.0


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def serve(bundle: str, key: str, state: str, users: int, events: int, baseline: bool = False) -> dict:
    """Child body: open the bundle, record `events` events + recommend for each of `users` synthetic users."""
    import numpy as np

    from metarec.runtime import Recommender  # noqa: F401  (imported in the baseline too: same floor)
    import metarec.runtime.recommender  # noqa: F401

    out = {"vmhwm_kib_after_import": _vmhwm_kib()}
    if not baseline:  # what the runtime's lazy imports cost, before any bundle byte is read
        import executorch.runtime  # noqa: F401

        out["vmhwm_kib_after_executorch_runtime_import"] = _vmhwm_kib()
        import executorch.extension.training  # noqa: F401

        out["vmhwm_kib_after_executorch_training_import"] = _vmhwm_kib()
        out["torchao_imported"] = "torchao" in sys.modules
    if baseline:
        out["vmhwm_kib"] = _vmhwm_kib()
        return out
    t0 = time.perf_counter()
    rec = Recommender.open(bundle, state, trusted_key=key)
    out["vmhwm_kib_after_open"] = _vmhwm_kib()
    rng = np.random.default_rng(0)
    ids = rec.item_ids
    n_rec = 0
    for u in range(users):
        uid = f"user-{u:05d}"
        for j, it in enumerate(rng.choice(len(ids), events, replace=False)):
            rec.record(uid, ids[int(it)], T0 + 60.0 * j)
        n_rec += len(rec.recommend(uid, T0 + 3600.0, 10))
    rec.close()
    out.update(serve_s=time.perf_counter() - t0, recommendations=n_rec, vmhwm_kib=_vmhwm_kib())
    return out


def _child(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "metarec.bench.bench_memory", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"memory child failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res["ru_maxrss_children_kib"] = after if after > before else None  # max over all children so far
    return res


def _db_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.parent.glob(state.name + "*") if p.is_file())


def run_memory(bundle: Path, key: Path, command: str, out_dir=None, users: int = 1000, events: int = 5,
               write: bool = True) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="metarec-bench-mem-"))
    state = tmp / "state.db"
    base = _child([str(bundle), str(key), str(tmp / "unused.db"), "0", "0", "--baseline"])
    try:
        res = _child([str(bundle), str(key), str(state), str(users), str(events)])
    except RuntimeError as e:  # the runtime could not serve this bundle: record why, with provenance, then fail
        if write:
            from metarec.sdk.results import write_results

            write_results("memory", {"error": str(e), "bundle": str(bundle)},
                          f"# Memory: not measured\n\nThe serving process failed on `{bundle}`:\n\n```\n{e}\n```",
                          command, out_dir)
        raise
    # checkpoint the WAL so the main file holds everything, then measure (and keep the WAL size for the record)
    import sqlite3

    wal_before = _db_bytes(state)
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        heads = db.execute("SELECT COUNT(*) FROM heads").fetchone()[0]
        n_events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    db_bytes = _db_bytes(state)
    bundle_bytes = sum(p.stat().st_size for p in Path(bundle).iterdir() if p.is_file())
    data = {"users": users, "events_per_user": events, "child": res, "baseline_child": base,
            "peak_rss_mib": res["vmhwm_kib"] / 1024, "baseline_rss_mib": base["vmhwm_kib"] / 1024,
            "peak_rss_over_baseline_mib": (res["vmhwm_kib"] - base["vmhwm_kib"]) / 1024,
            "state_db_bytes": db_bytes, "state_db_bytes_with_wal_before_checkpoint": wal_before,
            "state_bytes_per_user": db_bytes / users, "stored_heads": heads, "stored_events": n_events,
            "bundle_bytes": bundle_bytes}
    if write:
        _write(data, command, out_dir)
    return data


def _write(d: dict, command: str, out_dir) -> None:
    from metarec.sdk.results import write_results

    c = d["child"]
    lines = ["# Memory: one process serving 1,000 users", "",
             f"A child process opens the bundle ({d['bundle_bytes']:,} bytes on disk) and, for each of "
             f"{d['users']:,} synthetic users, records {d['events_per_user']} events (durable: WAL, synchronous=FULL) "
             f"and asks for a top-10 (which adapts the user's head with adapt.pte and stores it).", "",
             "| measure | value |", "|---|---:|",
             f"| peak RSS (VmHWM) of the serving process | {d['peak_rss_mib']:.1f} MiB |",
             f"| peak RSS of a baseline process (same imports, no bundle) | {d['baseline_rss_mib']:.1f} MiB |",
             f"| peak RSS attributable to bundle + users | {d['peak_rss_over_baseline_mib']:.1f} MiB |",
             f"| ... after `import executorch.runtime` (before any bundle byte) | "
             f"{c.get('vmhwm_kib_after_executorch_runtime_import', 0) / 1024:.1f} MiB |",
             f"| ... after `import executorch.extension.training` | "
             f"{c.get('vmhwm_kib_after_executorch_training_import', 0) / 1024:.1f} MiB |",
             f"| ... after opening the bundle (programs loaded) | {c.get('vmhwm_kib_after_open', 0) / 1024:.1f} MiB |",
             f"| state database (after WAL checkpoint) | {d['state_db_bytes']:,} bytes |",
             f"| state bytes per user ({d['events_per_user']} events + 1 head each) | "
             f"{d['state_bytes_per_user']:,.0f} bytes |",
             f"| stored heads / events | {d['stored_heads']:,} / {d['stored_events']:,} |",
             f"| serving time for all users (incl. fsyncs) | {c.get('serve_s', 0):.1f} s |", "",
             "What dominates the peak: the Python runtime's imports, not the bundle or the users. "
             f"`import executorch.runtime` alone adds "
             f"{(c.get('vmhwm_kib_after_executorch_runtime_import', 0) - c.get('vmhwm_kib_after_import', 0)) / 1024:.0f}"
             f" MiB (its package imports the export stack{', including torchao' if c.get('torchao_imported') else ''}); "
             "serving 1,000 users adds "
             f"{(c['vmhwm_kib'] - c.get('vmhwm_kib_after_open', c['vmhwm_kib'])) / 1024:.1f} MiB on top of the "
             "opened bundle. A phone links the C++ runtime, which has none of these imports.",
             "State: per user, 5 event rows (ids + timestamp, indexed) and one head of P float32 "
             "(P*4 bytes) with its serial; `secure_delete` and WAL checkpointing keep the file compact."]
    write_results("memory", d, "\n".join(lines), command, out_dir)


if __name__ == "__main__":
    a = sys.argv[1:]
    baseline = "--baseline" in a
    a = [x for x in a if x != "--baseline"]
    print(json.dumps(serve(a[0], a[1], a[2], int(a[3]), int(a[4]), baseline=baseline)))
