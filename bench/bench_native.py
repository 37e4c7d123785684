"""The native runtime (runtime_native/, build/native/metarec-native) beside the Python reference runtime and ONNX
Runtime, one thread each, in one `metarec bench` run (issue 16's closing table).

Each backend runs in its own child process, `runs` times (default 3), so each peak RSS (VmHWM) is that process's:
- native: `metarec-native bench BUNDLE KEY --users 1000 --recommends 10000` (runtime_native/src/cli.cpp): opens the
  bundle (verify + SQLite state), records 1..3 events per user and asks for a top-10 (which adapts), re-adapts
  for two new scene hours, then serves the warm recommends; one JSON line;
- Python reference: the same protocol through `metarec.runtime.Recommender` (`python -m metarec.bench.bench_native
  python ...`), torch and ExecuTorch threads pinned to 1; the adaptation time is `_adapt_user`'s, as the native
  library's is all of its adapt_user (mr_stats);
- ONNX Runtime: model.onnx (the bundle's scorer) and the same Meta-SGD steps unrolled and exported to ONNX here
  (bench_latency_backends), 1 intra/inter-op thread, in a process importing only numpy + onnxruntime: the graphs
  alone (no verification, no store, no scene or exclusions), the lower bound of what an ORT app would carry.
The adaptation headline is the one a user's first recommend after its new events triggers (native
`adapt_after_record_p50_us`); `adapt_after_pause` is its control: the same re-adaptation after the thread slept as
long as the records took, without I/O (docs/native.md explains the gap between the two and the warm figure).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NATIVE_CLI = REPO / "build" / "native" / "metarec-native"
NATIVE_LIB = REPO / "build" / "native" / "libmetarec.so"
NOW = 893000000.0  # the native bench's clock: inside ML-100K's range
TARGETS = {"peak_rss_mib": 16.0, "recommend_p50_us": 10.0, "adapt_after_record_p50_us": 30.0,
           "first_recommend_us": 5000.0}


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _p(v: list[float], q: float) -> float:
    """The native CLI's percentile (sorted[min(n - 1, int(q * n))]), so both runtimes read alike."""
    s = sorted(v)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


# ---------------------------------------------------------------------------------------------- children
def python_child(bundle: str, key: str, users: int, recommends: int, pack: str = "") -> dict:
    """runtime_native/src/cli.cpp's bench, step for step, through the Python reference runtime. `pack`: a neighbour
    pack installed in the state before the timed open (as the native column's `--from` state holds it)."""
    t_imp = time.perf_counter()
    from metarec.bench.bench_util import pin_threads
    from metarec.runtime import Recommender

    import_ms = (time.perf_counter() - t_imp) * 1e3
    pin_threads(1)
    state = Path(tempfile.mkdtemp(prefix="metarec-bench-native-py-")) / "state.db"
    if pack:
        from metarec.runtime.neighbors import NeighborPack

        p = NeighborPack.load(pack, key)
        with Recommender.open(bundle, state, trusted_key=key) as rec:
            rec.set_neighbors(p, now=p.at)
    clock = time.perf_counter_ns
    t0 = clock()
    rec = Recommender.open(bundle, state, trusted_key=key)
    open_ms = (clock() - t0) / 1e6
    has_table = rec._nb_table is not None
    adapt_ns = []
    inner = rec._adapt_user

    def timed(user_id, u):  # the library-side adaptation time, as mr_stats reports natively
        a = clock()
        inner(user_id, u)
        adapt_ns.append(clock() - a)

    rec._adapt_user = timed
    k_max = min(rec.shapes.k_max, rec.shapes.N)
    k = min(10, k_max)
    t0 = clock()
    first = rec.recommend("cold-user", NOW, k_max)
    first_us = (clock() - t0) / 1e3
    items = [r.item_id for r in first]
    after_record, adapt_hour, after_pause, adapt_rec, rec_us, record_us = [], [], [], [], [], []
    seed = 12345
    for u in range(users):
        user = f"u{u}"
        events = 1 + u % 3
        t_rec = clock()
        for e in range(events):
            seed = (seed * 1103515245 + 12345) & 0xFFFFFFFF
            t2 = clock()
            rec.record(user, items[(seed >> 8) % len(items)], NOW - 3600.0 * (events - e))
            record_us.append((clock() - t2) / 1e3)
        records_s = (clock() - t_rec) / 1e9
        n0 = len(adapt_ns)
        t1 = clock()
        rec.recommend(user, NOW, k)
        adapt_rec.append((clock() - t1) / 1e3)
        if len(adapt_ns) == n0 + 1:
            after_record.append(adapt_ns[-1] / 1e3)
        for h in (1, 2):
            n0 = len(adapt_ns)
            rec.recommend(user, NOW + 3600.0 * h, k)
            if len(adapt_ns) == n0 + 1:
                adapt_hour.append(adapt_ns[-1] / 1e3)
        time.sleep(records_s)  # the control: blocked as long as the records, no I/O
        n0 = len(adapt_ns)
        rec.recommend(user, NOW + 3600.0 * 3, k)
        if len(adapt_ns) == n0 + 1:
            after_pause.append(adapt_ns[-1] / 1e3)
    hot = max(1, min(users, 16))
    for i in range(recommends):
        user = f"u{users - 1 - (i % hot)}"
        t1 = clock()
        rec.recommend(user, NOW + float(i % 60), k)
        rec_us.append((clock() - t1) / 1e3)
    rec.close()
    shutil.rmtree(state.parent, ignore_errors=True)
    hwm = _vmhwm_kib()
    return {"import_ms": import_ms, "open_ms": open_ms, "first_recommend_us": first_us, "users": users,
            "adaptations": len(after_record) + len(adapt_hour) + len(after_pause),  # as the native CLI counts
            "adapt_after_record_p50_us": _p(after_record, 0.5),
            "adapt_after_record_p99_us": _p(after_record, 0.99),
            "adapt_plus_recommend_after_record_p50_us": _p(adapt_rec, 0.5), "adapt_p50_us": _p(adapt_hour, 0.5),
            "adapt_p99_us": _p(adapt_hour, 0.99), "adapt_after_pause_p50_us": _p(after_pause, 0.5),
            "record_p50_us": _p(record_us, 0.5), "recommends": recommends, "recommend_p50_us": _p(rec_us, 0.5),
            "recommend_p99_us": _p(rec_us, 0.99), "peak_rss_kib": hwm, "peak_rss_mib": hwm / 1024,
            "neighbor_table": int(has_table)}


def ort_child(score_onnx: str, adapt_onnx: str, inputs_npz: str, users: int, recommends: int) -> dict:
    """model.onnx and the unrolled adaptation in ONNX Runtime, 1 thread, in a process with numpy + onnxruntime."""
    clock = time.perf_counter_ns
    t_imp = clock()
    import numpy as np
    import onnxruntime as ort

    from metarec.bench.bench_util import ort_session_options

    import_ms = (clock() - t_imp) / 1e6
    inp = dict(np.load(inputs_npz))
    dt = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(int64)": np.int64}
    t0 = clock()
    score = ort.InferenceSession(score_onnx, ort_session_options(1), providers=["CPUExecutionProvider"])
    adapt = None
    if adapt_onnx:
        adapt = ort.InferenceSession(adapt_onnx, ort_session_options(1, os.environ.get("ORT_ADAPT_LEVEL",
                                                                                     "ORT_ENABLE_BASIC")),
                                     providers=["CPUExecutionProvider"])
    open_ms = (clock() - t0) / 1e6
    feed = {i.name: inp[i.name].astype(dt.get(i.type, np.float32)) for i in score.get_inputs()}
    t0 = clock()
    score.run(None, feed)
    first_us = (clock() - t0) / 1e3
    out = {"import_ms": import_ms, "open_ms": open_ms, "first_recommend_us": first_us}
    if adapt is not None:
        afeed = {i.name: inp[i.name].astype(np.float32) for i in adapt.get_inputs()}
        a_us = []
        for _ in range(users):
            t1 = clock()
            adapt.run(None, afeed)
            a_us.append((clock() - t1) / 1e3)
        out.update(adaptations=users, adapt_p50_us=_p(a_us, 0.5), adapt_p99_us=_p(a_us, 0.99))
    r_us = []
    for _ in range(recommends):
        t1 = clock()
        score.run(None, feed)
        r_us.append((clock() - t1) / 1e3)
    hwm = _vmhwm_kib()
    out.update(recommends=recommends, recommend_p50_us=_p(r_us, 0.5), recommend_p99_us=_p(r_us, 0.99),
               peak_rss_kib=hwm, peak_rss_mib=hwm / 1024)
    return out


# ---------------------------------------------------------------------------------------------- parent
def _run_json(cmd: list[str], timeout: int = 1800) -> dict:
    from metarec.bench.bench_util import raise_priority

    # every child at the timing priority (nice -20 when permitted), as bench_util.pin_threads sets for Python
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=raise_priority)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = " | ".join(p.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} exited with {p.returncode}: {tail[-800:]}")
    return json.loads(lines[-1])


def _ort_files(bundle: Path, key: Path, tmp: Path) -> tuple[Path | None, Path | None, Path, str]:
    """model.onnx (verified), the unrolled adaptation as ONNX (needs the checkpoint beside the bundle) and the
    contract inputs (bench_latency_backends.bundle_inputs) as .npz; a note when something is missing."""
    import numpy as np

    from metarec.bench.bench_latency_backends import bundle_inputs, bundle_model, find_checkpoint, \
        onnx_unrolled_adapt_file
    from metarec.runtime.bundle import open_bundle
    from metarec.runtime.manifest import ONNX_FILE

    b = open_bundle(bundle, key)
    inp = bundle_inputs(b)
    npz = tmp / "inputs.npz"
    np.savez(npz, **{k: v for k, v in inp.items() if k != "items"})
    if ONNX_FILE not in b.manifest.files:
        return None, None, npz, "bundle has no model.onnx (exported with --no-onnx): no ONNX Runtime column"
    notes = []
    score = tmp / "model.onnx"
    score.write_bytes(b.read_file(ONNX_FILE))
    adapt = None
    ckpt = find_checkpoint(Path(bundle))
    if "adapt" not in b.manifest.programs:
        notes.append("the bundle has no adapt program (no step pays): no ORT adaptation")
    elif ckpt is None:
        notes.append("no checkpoint beside the bundle: ORT adaptation not built")
    else:
        try:
            import torch

            from metarec.export.programs import AdaptModule

            io = b.manifest.programs["adapt"]
            mod = AdaptModule(bundle_model(b, ckpt))
            ex = [torch.from_numpy(inp[n]) for n in io.inputs]
            adapt = onnx_unrolled_adapt_file(mod, ex, io.inputs, io.inner_steps)
        except Exception as e:  # noqa: BLE001 - a missing ORT row is a finding, not a crash
            notes.append(f"ORT adaptation could not be exported: {type(e).__name__}: {e}")
    return score, adapt, npz, "; ".join(notes)


def _neighbor_pack(bundle: Path, key: Path, tmp: Path) -> tuple[Path | None, Path | None, str]:
    """(the bundle's first neighbour pack, a native state file holding it, what the output says about the term).
    A bundle whose item-item term ships only in packs (`neighbors.file` "") has the term off until a pack is set: the
    pack export wrote beside it (export/bundle.py neighbor_pack_path) is installed so the timings cover the term."""
    from metarec.export.bundle import neighbor_pack_path
    from metarec.runtime.bundle import open_bundle
    from metarec.runtime.native import NativeRecommender
    from metarec.runtime.neighbors import NeighborPack

    spec = open_bundle(bundle, key).manifest.neighbors
    if spec is None:
        return None, None, "no item-item term in this bundle"
    path = neighbor_pack_path(bundle)
    if not path.is_file():
        return None, None, ("item-item term with its table in the bundle (neighbors.bin)" if spec.file else
                            f"item-item term OFF: the bundle ships its table in packs only and {path} is missing")
    pack = NeighborPack.load(path, key)
    state = tmp / "native-with-pack.db"
    with NativeRecommender.open(bundle, state, key) as nat:
        nat.set_neighbors(pack, now=pack.at)
    return path, state, (f"item-item term ON: the bundle's first neighbour pack ({path.name}, {spec.kind} x{spec.m}) "
                         "installed in every backend's state before the timed open (ORT: graphs only, no term)")


def _sizes(bundle: Path, cli: Path) -> dict:
    lib = cli.parent / "libmetarec.so"
    out = {"libmetarec.so": lib.stat().st_size if lib.is_file() else None,
           "metarec-native": cli.stat().st_size if cli.is_file() else None}
    strip = shutil.which("strip")
    if strip and lib.is_file():
        with tempfile.TemporaryDirectory() as t:
            s = Path(t) / "lib.so"
            if subprocess.run([strip, "-o", str(s), str(lib)], capture_output=True).returncode == 0:
                out["libmetarec.so stripped"] = s.stat().st_size
    try:  # the ExecuTorch libraries it loads (DT_NEEDED), from the venv's wheel
        import importlib.util

        et_lib = Path(list(importlib.util.find_spec("executorch").submodule_search_locations)[0]) / "lib"
        needed = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
        for f in sorted(et_lib.glob("*.so")):
            if f.name in needed:
                out[f"executorch/lib/{f.name}"] = f.stat().st_size
    except Exception:  # noqa: BLE001 - sizes are context, not the measurement
        pass
    for name in ("score.pte", "adapt.pte", "model.onnx"):
        if (bundle / name).is_file():
            out[f"bundle/{name}"] = (bundle / name).stat().st_size
    return out


def _spread(runs: list[dict], key: str) -> dict | None:
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def run_native(bundle: Path, key: Path, command: str, out_dir=None, runs: int = 3, users: int = 1000,
               recommends: int = 10000, write: bool = True) -> dict:
    from metarec.bench.run import SuiteSkipped

    cli = Path(os.environ.get("METAREC_NATIVE_CLI") or NATIVE_CLI)
    if not cli.is_file():
        raise SuiteSkipped(f"{cli} is missing: run `make native` first")
    tmp = Path(tempfile.mkdtemp(prefix="metarec-bench-native-"))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    score_onnx, adapt_onnx, npz, ort_note = _ort_files(bundle, key, tmp)
    pack, pack_state, nb_note = _neighbor_pack(Path(bundle), Path(key), tmp)
    print(f"   {nb_note}", flush=True)
    res = {"native": [], "python": [], "ort": []}
    for i in range(runs):  # interleaved: a burst of load on the shared machine hits every backend alike
        print(f"   run {i + 1}/{runs}: native", end="", flush=True)
        res["native"].append(_run_json([str(cli), "bench", str(bundle), str(key), "--users", str(users),
                                        "--recommends", str(recommends)] +
                                       (["--from", str(pack_state)] if pack_state else [])))
        print(", python", end="", flush=True)
        res["python"].append(_run_json([sys.executable, "-m", "metarec.bench.bench_native", "python", str(bundle),
                                        str(key), str(users), str(recommends)] + ([str(pack)] if pack else [])))
        for name in ("native", "python"):
            if pack and not res[name][-1].get("neighbor_table"):
                raise RuntimeError(f"{name}: the neighbour pack {pack} was installed but no table is in use")
        if score_onnx is not None:
            print(", onnxruntime", end="", flush=True)
            res["ort"].append(_run_json([sys.executable, "-m", "metarec.bench.bench_native", "ort", str(score_onnx),
                                         str(adapt_onnx or ""), str(npz), str(users), str(recommends)]))
        print(flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    keys = sorted({k for rs in res.values() for r in rs for k in r})
    data = {"runs": runs, "users": users, "recommends": recommends, "bundle": str(bundle), "cli": str(cli),
            "threads": "1 (native: ExecuTorch threadpool reset to 1; Python: torch + ExecuTorch pinned; ORT: 1 "
                       "intra/inter-op thread)",
            "per_run": res, "spread": {b: {k: _spread(rs, k) for k in keys if _spread(rs, k)} for b, rs in res.items()},
            "sizes_bytes": _sizes(Path(bundle), cli), "ort_note": ort_note, "neighbor_note": nb_note,
            "neighbor_pack": str(pack) if pack else None, "seconds": time.perf_counter() - t0,
            "loadavg_before_after": [load0, os.getloadavg()], "cpus": os.cpu_count()}
    nat = data["spread"]["native"]
    adapts = "adapt" in json.loads((Path(bundle) / "manifest.json").read_bytes())["programs"]
    if not adapts:  # its "adaptation" rows time a copy of phi0: no adaptation target is measured
        data["adapt_note"] = "the bundle has no adapt program (no step pays): adaptation rows copy phi0"
    data["targets"] = {k: {"target": t, "median": nat[k]["median"], "worst": nat[k]["max"],
                           "met_median": nat[k]["median"] <= t, "met_every_run": nat[k]["max"] <= t}
                       for k, t in TARGETS.items() if k in nat and (adapts or not k.startswith("adapt"))}
    if write:
        _write(data, command, out_dir)
    return data


def _cell(s: dict | None, fmt: str) -> str:
    if not s:
        return "-"
    if len(s["runs"]) == 1 or s["min"] == s["max"]:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def _write(d: dict, command: str, out_dir) -> None:
    from metarec.bench.paths import RESULTS_DIR
    from metarec.sdk.results import write_results

    sp, n = d["spread"], d["runs"]
    rows = [("peak RSS (VmHWM), MiB", "peak_rss_mib", "{:.2f}", "<= 16"),
            ("open (verify + state; ORT: sessions), ms", "open_ms", "{:.1f}", ""),
            ("first recommend after open, us", "first_recommend_us", "{:.0f}", "<= 5,000"),
            ("recommend p50, warm user, us", "recommend_p50_us", "{:.2f}", "<= 10"),
            ("recommend p99, warm user, us", "recommend_p99_us", "{:.1f}", ""),
            ("**adaptation p50, first recommend after new events**, us", "adapt_after_record_p50_us", "{:.1f}",
             "<= 30"),
            ("adaptation p99, same, us", "adapt_after_record_p99_us", "{:.1f}", ""),
            ("adapt + recommend after new events, p50, us", "adapt_plus_recommend_after_record_p50_us", "{:.1f}", ""),
            ("adaptation p50, new scene hour (no event between), us", "adapt_p50_us", "{:.1f}", ""),
            ("control: adaptation p50 after a pause as long as the records, us", "adapt_after_pause_p50_us",
             "{:.1f}", ""),
            ("record p50 (durable: fsync), us", "record_p50_us", "{:.0f}", "")]
    lines = ["# Native runtime beside the Python reference and ONNX Runtime", "",
             f"One `metarec bench` run, {n} runs per backend interleaved (median, (min-max) over the runs), one "
             f"thread each, {d['users']:,} users (1..3 events each) and {d['recommends']:,} warm recommends; "
             f"load average before / after {d['loadavg_before_after'][0][0]:.1f} / "
             f"{d['loadavg_before_after'][1][0]:.1f} on {d['cpus']} cores (shared).", "",
             f"Item-item term: {d.get('neighbor_note', '-')}.", "",
             "| measure | native (libmetarec.so) | Python runtime | ONNX Runtime (graphs only) | target |",
             "|---|---:|---:|---:|---:|"]
    # ORT has no runtime around its graphs: its adaptation is one call of the unrolled steps on fixed inputs
    ort_keys = {k: k for k in ("peak_rss_mib", "open_ms", "first_recommend_us", "recommend_p50_us",
                               "recommend_p99_us")}
    ort_keys.update(adapt_after_record_p50_us="adapt_p50_us", adapt_after_record_p99_us="adapt_p99_us")
    for label, k, fmt, target in rows:
        ort = _cell(sp["ort"].get(ort_keys[k]), fmt) if k in ort_keys else "-"
        if k.startswith("adapt_after_record") and ort != "-":
            ort += " (one call)"
        lines.append(f"| {label} | {_cell(sp['native'].get(k), fmt)} | {_cell(sp['python'].get(k), fmt)} | "
                     f"{ort} | {target} |")
    lines += ["", "Targets (issue 16) on the native runtime: " + "; ".join(
        f"{k} {v['median']:.2f} (worst run {v['worst']:.2f}) vs {v['target']:g}: "
        f"{'met' if v['met_every_run'] else 'met on the median only' if v['met_median'] else 'MISSED'}"
        for k, v in d["targets"].items()) + "." + (f" Not measured: {d['adapt_note']}." if d.get("adapt_note")
                                                   else ""), "",
        "Sizes (bytes): " + ", ".join(f"{k} {v:,}" for k, v in d["sizes_bytes"].items() if v) + ".", "",
        "How to read it: the native and Python columns run the same protocol (runtime_native/src/cli.cpp `bench`, "
        "bench/bench_native.py `python_child`): open, a cold user's first top-k, then per user 1..3 durable "
        "records and a top-10 (the adaptation after new events), two new scene hours (re-adaptation without an "
        "event), a pause as long as that user's records took and one more new hour (the control), then warm "
        "recommends of 16 cached users. Adaptation times are the runtimes' own adapt step (inputs, adapt.pte, "
        "head), not the scoring after it. The ONNX Runtime column runs the graphs alone (model.onnx and the same "
        "Meta-SGD steps exported to ONNX) on fixed inputs in a process importing numpy + onnxruntime: no bundle "
        "verification, store, scene or exclusions, so its open and RSS are a lower bound for an ORT app and its "
        "adaptation is one warm call." + (f" Note: {d['ort_note']}." if d["ort_note"] else ""),
        "",
        "The adaptation after new events vs the new-hour one: both run the same instructions (callgrind, "
        "docs/native.md \"Adaptation after a record\"), so a gap between them is the caches: a durable record "
        "blocks in fsync and other processes run on the core meanwhile. The control row (a sleep of the same "
        "length, no I/O, no SQLite) isolates that: when it is as slow as the row above, the machine's load, not "
        "the library's work, sets the headline adaptation figure."]
    write_results("native", d, "\n".join(lines), command, out_dir or RESULTS_DIR)


if __name__ == "__main__":  # children: `python BUNDLE KEY USERS RECOMMENDS [PACK]`,
    # `ort SCORE ADAPT NPZ USERS RECOMMENDS`
    a = sys.argv[1:]
    if a[0] == "python":
        print(json.dumps(python_child(a[1], a[2], int(a[3]), int(a[4]), *a[5:6])))
    elif a[0] == "ort":
        print(json.dumps(ort_child(a[1], a[2], a[3], int(a[4]), int(a[5]))))
    else:
        raise SystemExit(f"unknown child {a[0]!r}")
