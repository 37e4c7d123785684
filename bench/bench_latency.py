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

T0 = 1_700_000_000.0  # a fixed "now" for the synthetic user (scene features depend on it)


# ---------------------------------------------------------------------------------------------- bundle inputs
class BundleView:
    """The bundle's manifest (raw JSON, so a schema skew between export and runtime does not stop the bench),
    decoded item table, phi0 and program bytes."""

    def __init__(self, bundle_dir: Path):
        from metarec.runtime.table import decode_table

        self.dir = Path(bundle_dir)
        self.m = json.loads((self.dir / "manifest.json").read_bytes())
        sh = self.m["shapes"]
        self.shapes = sh
        ts = self.m["item_table"]
        self.table = decode_table((self.dir / ts["file"]).read_bytes(), sh["N"], sh["d"], ts["format"],
                                  ts.get("group_size", 0))
        self.head0 = np.frombuffer((self.dir / self.m["head"]["file"]).read_bytes(), "<f4").astype(np.float32)
        self.score_io = self.m["programs"]["score"]
        self.adapt_io = self.m["programs"]["adapt"]
        codec = self.m.get("configs", {}).get("export", {}).get("program_codec", "none")
        self.score_pte = _decode_program((self.dir / self.score_io["file"]).read_bytes(), codec)
        self.adapt_pte = _decode_program((self.dir / self.adapt_io["file"]).read_bytes(), codec)
        self.onnx = self.dir / "model.onnx"

    def inputs(self, n_hist: int = 3, seed: int = 0) -> dict:
        """Contract inputs by name for a user with `n_hist` events (right-aligned history, sdk/model.py)."""
        from metarec.runtime.scene import SceneSpec, scene_features

        sh, rng = self.shapes, np.random.default_rng(seed)
        N, L, d = sh["N"], sh["L"], sh["d"]
        items = rng.choice(N, n_hist, replace=False)
        hv = np.zeros((L, d), np.float32)
        hm = np.zeros(L, np.float32)
        hv[L - n_hist:] = self.table[items]
        hm[L - n_hist:] = 1.0
        S = sh.get("S", L)
        tv = np.zeros((S, d), np.float32)
        tm = np.zeros(S, np.float32)
        tv[S - n_hist:] = self.table[items]
        tm[S - n_hist:] = 1.0
        exclude = np.zeros(N, np.float32)
        exclude[items] = 1.0
        scene = scene_features(np.array([T0]), SceneSpec.from_dict(self.m["scene_spec"]))[0].astype(np.float32)
        return {"head": self.head0.copy(), "theta0": self.head0.copy(), "hist_vecs": hv, "hist_mask": hm,
                "scene": scene, "trend": np.log1p(rng.integers(0, 30, N)).astype(np.float32), "exclude": exclude,
                "table": np.ascontiguousarray(self.table), "target_vecs": tv, "target_mask": tm,
                "neg_vecs": np.ascontiguousarray(self.table[np.asarray(self.m["negatives"], np.int64)]),
                "items": items}


def _decode_program(data: bytes, codec: str) -> bytes:
    """Program bytes as ExecuTorch loads them: export may store .pte files zlib-compressed (manifest
    configs.export.program_codec); an ExecuTorch flatbuffer carries 'ET' at bytes 4..6, a zlib stream does not."""
    import zlib

    if codec == "zlib" or (data[4:6] != b"ET" and data[:1] == b"\x78"):
        return zlib.decompress(data)
    return data


def find_checkpoint(bundle_dir: Path) -> Path | None:
    env = os.environ.get("METAREC_CHECKPOINT")
    # the exported model itself (export --save-model; `make demo` writes it) before the checkpoint it came from:
    # compressing the checkpoint again skips export's re-fine-tune, so that would not be the shipped model
    cands = ([Path(env)] if env else []) + [bundle_dir.parent / f"{bundle_dir.name}.model.pt",
                                            bundle_dir.parent / "prior.pt", Path("artifacts/prior.pt")]
    return next((c for c in cands if c.is_file()), None)


def bundle_model(bv: BundleView, ckpt: Path):
    """The eager model behind the bundle: checkpoint -> export's compress step with the manifest's config."""
    from metarec.export.bundle import load_model
    from metarec.export.compress import compress_model
    from metarec.export.config import CompressConfig

    model, _, _ = load_model(ckpt)
    cc = bv.m.get("configs", {}).get("compress")
    if cc:
        model, _ = compress_model(model, CompressConfig.from_dict(cc))
    if model.n_items != bv.shapes["N"] or model.cfg.dim != bv.shapes["d"]:
        raise ValueError(f"checkpoint {ckpt} ({model.n_items} x {model.cfg.dim}) is not this bundle's model "
                         f"({bv.shapes['N']} x {bv.shapes['d']})")
    return model


# ---------------------------------------------------------------------------------------------- backends
def _tensors(inp: dict, names) -> list:
    import torch

    return [torch.from_numpy(inp[n]) for n in names]


def score_backends(bv: BundleView, inp: dict, model) -> tuple[dict, dict]:
    """{name: zero-arg callable returning top-k ids} and {name: note} for every scorer that can be built."""
    import torch

    fns, notes = {}, {}
    names = bv.score_io["inputs"]
    args = _tensors(inp, names)
    i_ids = bv.score_io["outputs"].index("topk_ids")

    # the pybindings loader (what executorch.runtime wraps): executorch.runtime's load_program aborted the
    # process on one bundle here (runtime_paths runs in a child process for that reason)
    prog = bu.load_pte(bv.score_pte)
    fns["score.pte (XNNPACK)"] = lambda: prog.forward(args)[i_ids]
    fns["_keep"] = prog
    try:  # the runtime's own call path: inputs bound once, outputs read in place (runtime_py/programs.py)
        from metarec.runtime.manifest import ProgramIO, Shapes
        from metarec.runtime.programs import ScoreProgram

        sp = ScoreProgram(bv.score_pte, ProgramIO(**bv.score_io), Shapes(**bv.shapes))
        bound_args = list(args)
        fns["score.pte (XNNPACK), inputs bound once"] = lambda: sp.execute_bound(bound_args)[1].copy()
        fns["_keep_sp"] = sp
        notes["score.pte (XNNPACK), inputs bound once"] = (
            "the Recommender's call: ScoreProgram.execute_bound (set_inputs once per user, then execute; outputs "
            "read from the program's memory, no per-call tensor wrapping)")
        if sp.has_rank:  # the runtime's repeat call: rank from forward's user vector and offset
            out = sp.execute_bound(bound_args)
            named = {"user_vec": torch.from_numpy(out[2].copy()), "offset": torch.from_numpy(out[3].copy()),
                     "table": args[list(bv.score_io["inputs"]).index("table")]}
            rank_args = [named[n] for n in sp.rank_order]
            fns["score.pte rank method (user vector kept), bound"] = lambda: sp.rank_bound(rank_args)[1].copy()
            notes["score.pte rank method (user vector kept), bound"] = (
                "what the Recommender runs while a user's head, history, scene (whole hour) and trend pack are "
                "unchanged: table product + offset + top-k from forward's user_vec and offset (same top-k)")
    except Exception as e:  # noqa: BLE001 - an older runtime without execute_bound
        notes["score.pte (XNNPACK), inputs bound once"] = f"unavailable: {type(e).__name__}: {e}"

    if bv.onnx.is_file():
        import onnxruntime as ort

        sess = ort.InferenceSession(str(bv.onnx), bu.ort_session_options(1), providers=["CPUExecutionProvider"])
        dt = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(int64)": np.int64}
        feed = {i.name: inp[i.name].astype(dt.get(i.type, np.float32)) for i in sess.get_inputs()}
        oi = [o.name for o in sess.get_outputs()].index("topk_ids") if "topk_ids" in \
            [o.name for o in sess.get_outputs()] else 1
        fns["ONNX Runtime (model.onnx)"] = lambda: sess.run(None, feed)[oi]
        # ONNX Runtime's counterpart of bound inputs: an IO binding (inputs bound once, outputs allocated by ORT)
        binding = sess.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, arr)
        out_names = [o.name for o in sess.get_outputs()]
        for name in out_names:
            binding.bind_output(name, "cpu")

        def ort_bound():
            sess.run_with_iobinding(binding)
            return binding.get_outputs()[oi].numpy()

        fns["ONNX Runtime (model.onnx), IO binding"] = ort_bound
    else:
        notes["ONNX Runtime (model.onnx)"] = "bundle has no model.onnx"

    if model is None:
        notes["portable ExecuTorch"] = notes["eager torch"] = "no checkpoint beside the bundle (artifacts/prior.pt)"
    else:
        from metarec.export.programs import ScoreModule

        half = bv.m["item_table"]["format"] != "float32"  # export keeps the bias in float16 for quantized bundles
        try:
            mod = ScoreModule(model, model.export_item_bias(), bv.shapes["k_max"],
                              torch.float16 if half else torch.float32).eval()
        except TypeError:  # an export without the bias_dtype option
            mod = ScoreModule(model, model.export_item_bias(), bv.shapes["k_max"]).eval()
        ex = tuple(_tensors(inp, names))
        with torch.no_grad():
            ep = torch.export.export(mod, ex, strict=False)
        port = bu.load_pte(bu.lower_program(ep, xnnpack=False))
        fns["portable ExecuTorch (no delegate)"] = lambda: port.forward(ex)[i_ids]
        fns["_keep2"] = port

        def eager():
            with torch.inference_mode():
                return mod(*ex)[i_ids]

        fns["eager torch"] = eager
    return fns, notes


def adapt_backends(bv: BundleView, inp: dict, model) -> tuple[dict, dict]:
    """{name: zero-arg callable returning the adapted head (P,)} for one whole adaptation (inner_steps steps)."""
    import torch

    fns, notes = {}, {}
    io = bv.adapt_io
    steps = int(io.get("inner_steps", 3))
    from metarec.runtime.manifest import ProgramIO, Shapes
    from metarec.runtime.programs import AdaptProgram

    ap = AdaptProgram(bv.adapt_pte, ProgramIO(**io), Shapes(**bv.shapes))
    # as tensors sharing the arrays' memory, as Recommender._adapt_user passes them (numpy inputs cost a
    # from_numpy per input and call, ~0.8 us each)
    named = {n: torch.from_numpy(inp[n]) for n in io["inputs"]}
    fns["adapt.pte (ExecuTorch training runtime)"] = lambda: ap.adapt(named)
    notes["adapt.pte (ExecuTorch training runtime)"] = (
        "the runtime's AdaptProgram: adapt.pte's `prepare` once (if the bundle has one), then inner_steps x "
        "(training method + the training API's SGD step); the training step runs portable kernels, `prepare` is one "
        "XNNPACK call in current bundles (export/programs.py AdaptPrepareXnn)")
    fns["adapt.pte, TrainingModule.forward_backward per step"] = lambda: _public_api_adapt(ap, named)
    notes["adapt.pte, TrainingModule.forward_backward per step"] = (
        "the same program and steps through the training API's Python forward_backward/named_gradients (3 extra "
        "metadata method calls, output clones and a dict per step): what the runtime's cached loop saves")
    if model is None:
        notes["eager torch"] = notes["ONNX Runtime (unrolled steps)"] = "no checkpoint beside the bundle"
        return fns, notes
    from metarec.export.programs import AdaptModule

    mod = AdaptModule(model)
    ex = [torch.from_numpy(inp[n]) for n in io["inputs"]]

    def eager():
        with torch.no_grad():
            mod.delta.zero_()
        for _ in range(steps):
            loss, scale = mod(*ex)
            (g,) = torch.autograd.grad(loss, mod.delta)
            with torch.no_grad():
                mod.delta -= g
        return (ex[0] + scale * mod.delta).detach()

    fns["eager torch (autograd, same steps)"] = eager
    try:  # ARCHITECTURE.md's stateless alternative: not the runtime's path (the brief requires the training runtime)
        unrolled = bu.load_pte(bu.lower_program(_unrolled_export(mod, ex, steps), xnnpack=True))
        fns["stateless unrolled steps (.pte, XNNPACK; alternative)"] = lambda: unrolled.forward(ex)[0]
        fns["_keep_unrolled"] = unrolled
        notes["stateless unrolled steps (.pte, XNNPACK; alternative)"] = (
            "the same steps as one pure program (make_fx over torch.func.grad, torch.export, XNNPACK), built here: "
            "one call, nothing mutable; a measured alternative, not what the runtime runs")
    except Exception as e:  # noqa: BLE001
        notes["stateless unrolled steps (.pte, XNNPACK; alternative)"] = f"could not build: {type(e).__name__}: {e}"
    try:
        sess, feed = _onnx_unrolled_adapt(mod, ex, io["inputs"], steps)
        fns["ONNX Runtime (unrolled steps)"] = lambda: sess.run(None, feed)[0]
    except Exception as e:  # noqa: BLE001 - an export failure is a finding to report, not a crash
        notes["ONNX Runtime (unrolled steps)"] = f"could not export the unrolled steps to ONNX: {type(e).__name__}: {e}"
    return fns, notes


def _public_api_adapt(ap, named: dict):
    """AdaptProgram.adapt with every step through TrainingModule.forward_backward + named_gradients()."""
    import torch

    io = ap.io
    args = [torch.from_numpy(np.array(named[n], dtype=np.float32)) for n in io.inputs]
    step_args, scale = ap._step_args(args)
    ap._delta.zero_()
    for _ in range(io.inner_steps):
        out = ap._module.forward_backward(io.method, step_args)
        ap._optimizer.step(ap._module.named_gradients())
    if scale is None:
        scale = out[io.outputs.index("scale")]
    return np.asarray(named["theta0"], np.float32) + scale.numpy() * ap._delta.numpy()


def _unrolled_graph(mod, ex, steps: int):
    """The `steps` Meta-SGD steps as one pure function (make_fx over torch.func.grad)."""
    import torch
    from torch.func import functional_call, grad
    from torch.fx.experimental.proxy_tensor import make_fx

    def loss_of(delta, *a):
        return functional_call(mod, {"delta": delta}, a)[0]

    def unrolled(*a):
        delta = torch.zeros_like(mod.delta)
        for _ in range(steps):
            delta = delta - grad(loss_of)(delta, *a)
        return (a[0] + mod.scale(a[3]) * delta,)

    return make_fx(unrolled)(*ex)


def _unrolled_export(mod, ex, steps: int):
    import torch

    return torch.export.export(_unrolled_graph(mod, ex, steps), tuple(ex), strict=False)


def _onnx_unrolled_adapt(mod, ex, names, steps: int):
    """The same `steps` Meta-SGD steps as one pure function (make_fx over torch.func.grad), exported to ONNX."""
    import onnxruntime as ort
    import torch
    from torch.func import functional_call, grad
    from torch.fx.experimental.proxy_tensor import make_fx

    params = {"delta": torch.zeros_like(mod.delta)}

    def loss_of(delta, *a):
        return functional_call(mod, {"delta": delta}, a)[0]

    def unrolled(*a):
        delta = torch.zeros_like(params["delta"])
        for _ in range(steps):
            delta = delta - grad(loss_of)(delta, *a)
        scale = mod.scale(a[3])
        return (a[0] + scale * delta,)

    gm = make_fx(unrolled)(*ex)
    path = Path(tempfile.mkdtemp(prefix="metarec-bench-")) / "adapt_unrolled.onnx"
    torch.onnx.export(gm, tuple(ex), str(path), dynamo=True, input_names=list(names), output_names=["head"],
                      opset_version=18, verbose=False)
    # ORT_ENABLE_BASIC: the EXTENDED/ALL fusions changed this graph's result by 3e-2 (measured: BASIC matches
    # adapt.pte and eager to 1.5e-8 at the same speed), so the faster-looking levels are not the same math.
    sess = ort.InferenceSession(str(path), bu.ort_session_options(1, "ORT_ENABLE_BASIC"),
                                providers=["CPUExecutionProvider"])
    by_name = dict(zip(names, ex))
    feed = {i.name: by_name[i.name].numpy() for i in sess.get_inputs()}
    return sess, feed


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
    pin = bu.pin_threads(1)
    load0 = os.getloadavg()
    bv = BundleView(bundle)
    inp = bv.inputs()
    ckpt = find_checkpoint(Path(bundle))
    model, model_note = None, None
    if ckpt is not None:
        try:
            model = bundle_model(bv, ckpt)
        except Exception as e:  # noqa: BLE001
            model_note = f"checkpoint {ckpt} unusable: {type(e).__name__}: {e}"
    else:
        model_note = "no checkpoint found (artifacts/prior.pt or $METAREC_CHECKPOINT)"

    data = {"threads": pin, "runs": runs, "bundle": str(bundle), "checkpoint": str(ckpt) if ckpt else None,
            "model_note": model_note, "shapes": bv.shapes, "bundle_files": {p.name: p.stat().st_size for p in
                                                                          sorted(Path(bundle).iterdir())},
            "score": {}, "adapt": {}, "runtime": {}, "notes": {}, "parity": {},
            "inner_steps": int(bv.adapt_io.get("inner_steps", 3))}
    # ---- scorers
    fns, notes = score_backends(bv, inp, model)
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
    afns, anotes = adapt_backends(bv, inp, model)
    akeep = {k: v for k, v in afns.items() if k.startswith("_")}  # loaded programs: alive while timed
    afns = {k: v for k, v in afns.items() if not k.startswith("_")}
    aref = np.asarray(afns["adapt.pte (ExecuTorch training runtime)"](), np.float32)
    for k, f in afns.items():
        got = np.asarray(f(), np.float32).reshape(-1)
        data["parity"][f"adapt max |head - adapt.pte head| {k}"] = float(np.abs(got - aref).max())
    atimes = bu.time_interleaved(afns, runs)
    data["adapt"] = {k: bu.summarize(v) for k, v in atimes.items()}
    data["notes"].update({f"adapt: {k}": v for k, v in anotes.items()})
    # compute-only chain: one adaptation then one score call, back to back (what a stale user costs without I/O)
    sfn, afn = fns["score.pte (XNNPACK)"], afns["adapt.pte (ExecuTorch training runtime)"]
    data["adapt"]["adapt.pte + score.pte (chained, no I/O)"] = bu.summarize(
        bu.time_calls(lambda: (afn(), sfn()), runs))
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
    data["programs"] = {"score.pte": bu.program_profile(bv.score_pte), "adapt.pte": bu.program_profile(bv.adapt_pte)}
    if bv.adapt_io.get("prepare_method"):
        data["programs"]["adapt.pte prepare"] = bu.program_profile(bv.adapt_pte, bv.adapt_io["prepare_method"])
    data["analysis"] = analysis(data)
    if write:
        from metarec.bench.bench_latency_report import write_latency

        write_latency(data, command, out_dir)
    return data


def _p(d: dict, section: str, key: str, q: str = "p50_us"):
    v = d.get(section, {}).get(key)
    return None if v is None else v[q]


def targets(d: dict) -> dict:
    """The issue's targets, each with value, met and how far off."""
    ort = _p(d, "score", "ONNX Runtime (model.onnx)")
    pte = _p(d, "score", "score.pte (XNNPACK)")
    rec = _p(d, "runtime", "recommend (warm user)")
    ad = _p(d, "adapt", "adapt.pte (ExecuTorch training runtime)")
    ar99 = _p(d, "adapt", "adapt.pte + score.pte (chained, no I/O)", "p99_us")
    ar99_rt = _p(d, "runtime", "adapt + recommend after a new event", "p99_us")
    return {
        "score.pte p50 / ONNX Runtime p50 <= 1.0": bu.verdict(bu.ratio(pte, ort), 1.0, "x"),
        "runtime recommend p50 / score.pte p50 <= 2.0": bu.verdict(bu.ratio(rec, pte), 2.0, "x"),
        "runtime recommend p50 <= 25 us": bu.verdict(rec, 25.0, "us"),
        "adaptation (<= 3 steps) p50 <= 60 us": bu.verdict(ad, 60.0, "us"),
        "adaptation + recommend p99 <= 1 ms (compute: adapt.pte + score.pte)": bu.verdict(ar99, 1000.0, "us"),
        "adaptation + recommend p99 <= 1 ms (runtime, incl. store reads/writes)": bu.verdict(ar99_rt, 1000.0, "us"),
    }


def analysis(d: dict) -> str:
    """Plain-text account of each missed target: by how much, and what dominates (from the profiles above)."""
    t, out = d["targets"], []
    sp, ap = d["programs"]["score.pte"], d["programs"]["adapt.pte"]
    la = d["loadavg_before_after"][0][0]

    def miss(name):
        v = t.get(name, {})
        return v if v.get("met") is False else None

    def ops(p, n=6):
        return ", ".join(f"{k} x{v}" for k, v in list(p["portable_ops"].items())[:n])

    v = miss("score.pte p50 / ONNX Runtime p50 <= 1.0")
    if v:
        out.append(
            f"- score.pte vs ONNX Runtime: {v['value']:.2f}x ({v['miss_pct']:.0f}% over). score.pte's plan has "
            f"{sp['instructions']} instructions: {sp['delegate_calls']} XNNPACK delegate calls (the graph is cut "
            f"into that many partitions) and {sp['portable_kernel_calls']} portable kernel calls ({ops(sp)}). "
            "At this catalog size the arithmetic is tiny, so per-instruction dispatch and partition boundaries "
            "dominate; ONNX Runtime runs the same graph as one fused session. Fix (export): keep the user-vector "
            "graph delegable (F.normalize -> x * rsqrt(sum(x*x)+eps), masked_fill/where -> arithmetic masks, "
            "sum -> matmul with ones) so XNNPACK takes it in one partition; see scaling.md for the table pass.")
    v = miss("runtime recommend p50 <= 25 us")
    if v:
        rec = d["runtime"].get("recommend (warm user)", {}).get("p50_us")
        pte = d["score"].get("score.pte (XNNPACK)", {}).get("p50_us")
        top = ", ".join(f"{r['name']} {r['tottime_us_per_call']:.0f} us" for r in d.get("profile_recommend", [])[:4])
        bound = d["score"].get("score.pte (XNNPACK), inputs bound once", {}).get("p50_us")
        base = bound if bound is not None else pte
        out.append(f"- runtime recommend: {v['value']:.1f} us vs 25 us (+{v['miss_pct']:.0f}%). The score.pte call "
                   f"the runtime makes (inputs bound once) is {base:.1f} us of it, the runtime's Python "
                   f"+{rec - base:.1f} us; cProfile own time per call: {top}. Inside score.pte "
                   f"({sp['delegate_calls']} XNNPACK call(s), portable: {ops(sp)}), export/programs.py ScoreModule "
                   "gives the split, from programs cut after each stage: call floor with 7 inputs 2.8 us, user "
                   "vector ~8 us (~40 tiny XNNPACK ops), table product + bias ~6 us (XNNPACK's dynamic "
                   "fully-connected packs the (N, d) input table every call), trend term ~3 us, top-k ~4-5 us "
                   "(portable). A constant (pre-packed) quantized table would cut the product to ~2 us, but the "
                   "table would then be in the bundle twice (the runtime needs float rows), over the 64 KiB budget.")
    v = miss("adaptation (<= 3 steps) p50 <= 60 us")
    if v:
        ort_a = d["adapt"].get("ONNX Runtime (unrolled steps)", {}).get("p50_us")
        pp = d["programs"].get("adapt.pte prepare")
        out.append(
            f"- adaptation: {v['value']:.0f} us vs 60 us (+{v['miss_pct']:.0f}%). adapt.pte's training step is "
            f"portable: each step runs {ap['instructions']} portable instructions "
            f"({ops(ap)}), times the inner steps ({d.get('inner_steps', '?')}), plus the SGD step"
            + (f", after one `prepare` call ({pp['instructions']} instructions, {pp['delegate_calls']} XNNPACK "
               "call(s): the head-free part of the loss)" if pp else "")
            + "; every ExecuTorch method call from Python costs ~4 us plus ~0.5 us per input before any op runs"
            + (f"; the same steps as one ONNX Runtime graph take {ort_a:.0f} us" if ort_a else "")
            + ". ARCHITECTURE.md's 56 us was the stateless unrolled program lowered to XNNPACK (make_fx over "
            "torch.func.grad): one call instead of 1 + inner_steps, but not the training runtime the brief requires.")
    for name in ("adaptation + recommend p99 <= 1 ms (compute: adapt.pte + score.pte)",
                 "adaptation + recommend p99 <= 1 ms (runtime, incl. store reads/writes)"):
        v = miss(name)
        if v:
            key = "adapt.pte + score.pte (chained, no I/O)" if "compute" in name else \
                "adapt + recommend after a new event"
            row = (d["adapt"] if "compute" in name else d["runtime"]).get(key, {})
            why = (f"p50 {row.get('p50_us', 0):.0f} us and min {row.get('min_us', 0):.0f} us, so the tail is "
                   f"scheduling: load average {la:.1f} on 2 cores while this ran (other jobs)")
            if "runtime" in name:
                rec = d["runtime"].get("record (durable event write)", {})
                why += (f"; recommend no longer writes the head (it rides along with the next event's durable "
                        f"commit, which a bare record pays: p50 {rec.get('p50_us', 0):.0f} us here)")
                top = d.get("profile_record_adapt_recommend", [])[:4]
                if top:
                    why += ("; cProfile of record + recommend for a stale user (own time per call, profiler "
                            "overhead included): " + ", ".join(f"{r['name']} {r['tottime_us_per_call']:,.0f} us"
                                                               for r in top)
                            + (" -- the per-user `because` pass over all N items and the durable SQLite writes, "
                               "not adapt.pte, dominate" if any("_because" in r["name"] for r in top[:2])
                               and any("sqlite" in r["name"] for r in top[:3]) else ""))
            out.append(f"- {name}: p99 {v['value']:.0f} us (+{v['miss_pct']:.0f}%): {why}.")
    return "\n".join(out) if out else "All targets met."


if __name__ == "__main__":  # the child of runtime_paths_child: bundle key runs out.json
    import sys

    _b, _k, _r, _o = sys.argv[1:5]
    bu.pin_threads(1)
    _d = runtime_paths(Path(_b), Path(_k), int(_r))
    _d["times"] = {k: v.tolist() for k, v in _d["times"].items()}
    Path(_o).write_text(json.dumps(_d))
