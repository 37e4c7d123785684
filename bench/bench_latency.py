"""Latency of `recommend` and of one whole adaptation, per backend, same model and same inputs, one run.

Backends (1 thread each, warm-up, >= 1,000 timed calls, p50/p99, ratios to ONNX Runtime):
- score.pte / adapt.pte from the bundle, run by ExecuTorch (score.pte is XNNPACK-lowered by export);
- portable ExecuTorch: the same eager module (export's `ScoreModule`/`AdaptModule` on the bundle's model)
  lowered here WITHOUT the XNNPACK partitioner;
- ONNX Runtime over the bundle's model.onnx (and, for adaptation, the same <= 3 unrolled Meta-SGD steps exported
  to ONNX here, since ONNX Runtime has no training program);
- eager torch on the same modules;
- the runtime's whole `Recommender.recommend` (scene, trending, exclusions, ids) and adapt + recommend.
The eager model comes from the checkpoint beside the bundle (artifacts/prior.pt for `make demo`), compressed with
the manifest's compress config exactly as export did; backends that need it are skipped (and say so) without it.
Every backend's top-k is compared with score.pte's on the same inputs (parity is reported, not assumed).
The backends are built in bench_latency_backends.py; the tables, targets and analysis in bench_latency_report.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from metarec.bench import bench_util as bu
from metarec.bench.bench_latency_backends import T0, adapt_backends, bundle_inputs, bundle_model, find_checkpoint, \
    score_backends
from metarec.bench.bench_latency_report import analysis, targets


# ---------------------------------------------------------------------------------------------- runtime
def runtime_paths_child(bundle: Path, key: Path, runs: int, timeout: int = 1800) -> dict:
    """`runtime_paths` in a child process: a crash inside the runtime (an abort in native code) becomes a reported
    failure instead of killing the whole bench."""
    import subprocess
    import sys

    tmp = Path(tempfile.mkdtemp(prefix="metarec-bench-rt-"))
    out = tmp / "rt.json"
    p = subprocess.run([sys.executable, "-m", "metarec.bench.bench_latency", str(bundle), str(key), str(runs),
                        str(out)], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0 or not out.is_file():
        tail = " | ".join(ln for ln in p.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"runtime child exited with {p.returncode}: {tail[-800:]}")
    d = json.loads(out.read_text())
    d["times"] = {k: np.asarray(v, dtype=np.int64) for k, v in d["times"].items()}
    return d


def runtime_paths(bundle: Path, key: Path, runs: int) -> dict:
    """The runtime's whole recommend for a warm user, and adapt + recommend after a new event (end to end and
    without the durable write), through the public Recommender API."""
    from metarec.runtime import Recommender

    tmp = Path(tempfile.mkdtemp(prefix="metarec-bench-state-"))
    rec = Recommender.open(bundle, tmp / "state.db", trusted_key=key)
    try:
        ids = rec.item_ids
        rng = np.random.default_rng(1)
        for j, it in enumerate(rng.choice(len(ids), 3, replace=False)):
            rec.record("warm", ids[int(it)], T0 - 3600 + j)
        rec.recommend("warm", T0, 10)
        res = {"recommend (warm user)": bu.time_calls(lambda: rec.recommend("warm", T0, 10), runs)}
        # the same user asked again and again with the clock running (+1 s per call): the scene changes only
        # with the hour, so the adapted head and the user vector are reused (one re-adaptation per hour)
        clock_s = [T0]

        def ticking():
            clock_s[0] += 1.0
            rec.recommend("warm", clock_s[0], 10)

        res["recommend (warm user, clock +1 s per call)"] = bu.time_calls(ticking, runs)
        # the same with the scene at the exact time (SceneSpec.hour_resolution_minutes=0, what bundles before the
        # whole-hour scene did): every call sees a new scene and, with adapt_scene "query", re-adapts the head
        from metarec.runtime.scene import SceneClock, SceneSpec

        whole_hours = rec._clock
        rec._clock = SceneClock(dataclasses.replace(whole_hours.spec, hour_resolution_minutes=0))
        try:
            res["recommend (warm user, clock +1 s per call, exact-time scene)"] = bu.time_calls(ticking, runs)
        finally:
            rec._clock = whole_hours
        u = rec._users.get("warm")
        if u is not None and getattr(u, "rank_key", None) is not None:
            def recompute():  # the first call after a trending pack / bundle change: forward instead of rank
                u.rank_key = None
                rec.recommend("warm", clock_s[0], 10)

            res["recommend (warm user, user vector recomputed)"] = bu.time_calls(recompute, runs)
        # adapt + recommend: each call follows a new event of one of 64 users, so the head is stale and the
        # runtime reloads the events, adapts (adapt.pte), stores the head and scores
        n_users, rec_ns, ar_ns = 64, [], []
        picks = rng.choice(len(ids), size=runs + 64 * 3, replace=True)
        for u in range(n_users):
            for j in range(2):
                rec.record(f"u{u}", ids[int(picks[u * 2 + j])], T0 - 7200 + j)
        clock = time.perf_counter_ns
        for i in range(runs):
            uid = f"u{i % n_users}"
            t0 = clock()
            rec.record(uid, ids[int(picks[i])], T0 - 3600 + i)
            t1 = clock()
            rec.recommend(uid, T0, 10)
            t2 = clock()
            rec_ns.append(t1 - t0)
            ar_ns.append(t2 - t1)
        res["record (durable event write)"] = np.asarray(rec_ns)
        res["adapt + recommend after a new event"] = np.asarray(ar_ns)
        prof = bu.cprofile_top(lambda: rec.recommend("warm", T0, 10), calls=min(runs, 1000))

        def stale():
            rec.record("p", ids[int(rng.integers(len(ids)))], T0 - 1.0)
            rec.recommend("p", T0, 10)

        prof_ar = bu.cprofile_top(stale, calls=200, top=10)
        return {"times": res, "profile_recommend": prof, "profile_record_adapt_recommend": prof_ar}
    finally:
        rec.close()


# ---------------------------------------------------------------------------------------------- suite
def _overlap(a, b) -> float:
    a, b = np.asarray(a).reshape(-1)[:10], np.asarray(b).reshape(-1)[:10]
    return float(len(set(a.tolist()) & set(b.tolist())) / max(1, len(a)))


def run_latency(bundle: Path, key: Path, runs: int, command: str, out_dir=None, write: bool = True) -> dict:
    from metarec.runtime.bundle import open_bundle

    b = open_bundle(bundle, key)  # the runtime's reader (verified, decoded once); a bad bundle fails before timing
    pin = bu.pin_threads(1)
    load0 = os.getloadavg()
    inp = bundle_inputs(b)
    ckpt = find_checkpoint(Path(bundle))
    model, model_note = None, None
    if ckpt is not None:
        try:
            model = bundle_model(b, ckpt)
        except Exception as e:  # noqa: BLE001
            model_note = f"checkpoint {ckpt} unusable: {type(e).__name__}: {e}"
    else:
        model_note = "no checkpoint found (artifacts/prior.pt or $METAREC_CHECKPOINT)"

    data = {"threads": pin, "runs": runs, "bundle": str(bundle), "checkpoint": str(ckpt) if ckpt else None,
            "model_note": model_note, "shapes": dataclasses.asdict(b.manifest.shapes),
            "bundle_files": {p.name: p.stat().st_size for p in sorted(Path(bundle).iterdir())},
            "score": {}, "adapt": {}, "runtime": {}, "notes": {}, "parity": {},
            "inner_steps": b.manifest.inner_steps}
    # ---- scorers
    fns, notes = score_backends(b, inp, model)
    keep = {k: v for k, v in fns.items() if k.startswith("_")}
    fns = {k: v for k, v in fns.items() if not k.startswith("_")}
    ref = np.asarray(fns["score.pte (XNNPACK)"]())
    for k, f in fns.items():
        data["parity"][f"score top-10 overlap {k} vs score.pte"] = _overlap(f(), ref)
    times = bu.time_interleaved(fns, runs)
    data["score"] = {k: bu.summarize(v) for k, v in times.items()}
    data["notes"].update({f"score: {k}": v for k, v in notes.items()})
    del keep
    # ---- adaptation
    sfn = fns["score.pte (XNNPACK)"]
    akeep = None
    if "adapt" in b.manifest.programs:
        afns, anotes = adapt_backends(b, inp, model)
        akeep = {k: v for k, v in afns.items() if k.startswith("_")}  # loaded programs: alive while timed
        afns = {k: v for k, v in afns.items() if not k.startswith("_")}
        aref = np.asarray(afns["adapt.pte (ExecuTorch training runtime)"](), np.float32)
        for k, f in afns.items():
            got = np.asarray(f(), np.float32).reshape(-1)
            data["parity"][f"adapt max |head - adapt.pte head| {k}"] = float(np.abs(got - aref).max())
        atimes = bu.time_interleaved(afns, runs)
        data["adapt"] = {k: bu.summarize(v) for k, v in atimes.items()}
        data["notes"].update({f"adapt: {k}": v for k, v in anotes.items()})
        # compute-only chain: one adaptation then one score call, back to back (a stale user's cost without I/O)
        afn = afns["adapt.pte (ExecuTorch training runtime)"]
        data["adapt"]["adapt.pte + score.pte (chained, no I/O)"] = bu.summarize(
            bu.time_calls(lambda: (afn(), sfn()), runs))
    else:
        data["notes"]["adapt"] = ("this bundle has no adapt.pte (export found no adaptation step that pays on "
                                  "validation users): nothing to time; every user is served phi0")
    # ---- the runtime's public API
    try:
        rt = runtime_paths_child(Path(bundle), Path(key), runs)
        data["runtime"] = {k: bu.summarize(v) for k, v in rt["times"].items()}
        data["profile_recommend"] = rt["profile_recommend"]
        data["profile_record_adapt_recommend"] = rt["profile_record_adapt_recommend"]
    except Exception as e:  # noqa: BLE001 - a runtime/export skew is a finding; the backends above still count
        data["notes"]["runtime"] = f"Recommender could not serve this bundle: {type(e).__name__}: {e}"
    data["loadavg_before_after"] = [load0, os.getloadavg()]
    rt = data["runtime"]
    if "recommend (warm user, user vector recomputed)" in rt:
        f = lambda k, sec="runtime": data[sec].get(k, {}).get("p50_us", float("nan"))  # noqa: E731
        data["notes"]["runtime: which recommend is which"] = (
            f"score.pte has a rank method, so a repeat recommend of a user whose head, history, scene (whole hour) "
            f"and trend pack are unchanged runs only `rank` (table product + offset + top-k, "
            f"{f('score.pte rank method (user vector kept), bound', 'score'):.1f} us bound) from the user vector and "
            f"offset its last forward returned: warm user {f('recommend (warm user)'):.1f} us. The first call after "
            f"a change runs forward (the whole scorer, "
            f"{f('score.pte (XNNPACK), inputs bound once', 'score'):.1f} us bound) and keeps those: "
            f"{f('recommend (warm user, user vector recomputed)'):.1f} us; after a new event the head is re-adapted "
            f"first (adapt + recommend row). With the clock running (+1 s per call, one hour boundary crossed per "
            f"3,600 calls) recommend is {f('recommend (warm user, clock +1 s per call)'):.1f} us: the scene changes "
            "only with the hour (runtime_py/scene.py). The target is read on the warm-user row, as before.")
    data["targets"] = targets(data)
    data["profile_score"] = bu.cprofile_top(lambda: sfn(), calls=min(runs, 1000), top=6)
    data["programs"] = {"score.pte": bu.program_profile(b.programs["score"])}
    if "adapt" in b.manifest.programs:
        data["programs"]["adapt.pte"] = bu.program_profile(b.programs["adapt"])
        prepare = b.manifest.programs["adapt"].prepare_method
        if prepare:
            data["programs"]["adapt.pte prepare"] = bu.program_profile(b.programs["adapt"], prepare)
    data["analysis"] = analysis(data)
    if write:
        from metarec.bench.bench_latency_report import write_latency

        write_latency(data, command, out_dir)
    return data


if __name__ == "__main__":  # the child of runtime_paths_child: bundle key runs out.json
    import sys

    _b, _k, _r, _o = sys.argv[1:5]
    bu.pin_threads(1)
    _d = runtime_paths(Path(_b), Path(_k), int(_r))
    _d["times"] = {k: v.tolist() for k, v in _d["times"].items()}
    Path(_o).write_text(json.dumps(_d))

