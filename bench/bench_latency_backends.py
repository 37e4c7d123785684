"""The latency suite's backends: the same bundle's scorer and adaptation built every way that can run them.

Each backend is a zero-arg callable over the same contract inputs (`score_backends`, `adapt_backends`);
bench_latency.py times them and bench_latency_report.py writes the tables. The eager model comes from the
checkpoint beside the bundle, compressed with the manifest's compress config exactly as export did.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from metarec.bench import bench_util as bu
from metarec.runtime.bundle import Bundle
from metarec.runtime.manifest import ONNX_FILE

T0 = 1_700_000_000.0  # a fixed "now" for the synthetic user (scene features depend on it)


# ---------------------------------------------------------------------------------------------- bundle inputs
def bundle_inputs(b: Bundle, n_hist: int = 3, seed: int = 0) -> dict:
    """Contract inputs by name for a user with `n_hist` events (right-aligned history, sdk/model.py), from a
    bundle the runtime's reader verified and decoded (`open_bundle`)."""
    from metarec.runtime.scene import scene_features

    sh, rng = b.manifest.shapes, np.random.default_rng(seed)
    N, L, S, d = sh.N, sh.L, sh.S, sh.d
    items = rng.choice(N, n_hist, replace=False)
    hv = np.zeros((L, d), np.float32)
    hm = np.zeros(L, np.float32)
    hv[L - n_hist:] = b.table[items]
    hm[L - n_hist:] = 1.0
    tv = np.zeros((S, d), np.float32)
    tm = np.zeros(S, np.float32)
    tv[S - n_hist:] = b.table[items]
    tm[S - n_hist:] = 1.0
    exclude = np.zeros(N, np.float32)
    exclude[items] = 1.0
    scene = scene_features(np.array([T0]), b.scene_spec)[0].astype(np.float32)
    return {"head": b.head0.copy(), "theta0": b.head0.copy(), "hist_vecs": hv, "hist_mask": hm,
            "scene": scene, "trend": np.log1p(rng.integers(0, 30, N)).astype(np.float32), "exclude": exclude,
            "table": np.ascontiguousarray(b.table), "target_vecs": tv, "target_mask": tm,
            "neg_vecs": np.ascontiguousarray(b.table[np.asarray(b.manifest.negatives, np.int64)]),
            "items": items}


def find_checkpoint(bundle_dir: Path) -> Path | None:
    env = os.environ.get("METAREC_CHECKPOINT")
    # the exported model itself (export --save-model; `make demo` writes it) before the checkpoint it came from:
    # compressing the checkpoint again skips export's re-fine-tune, so that would not be the shipped model
    cands = ([Path(env)] if env else []) + [bundle_dir.parent / f"{bundle_dir.name}.model.pt",
                                            bundle_dir.parent / "prior.pt", Path("artifacts/prior.pt")]
    return next((c for c in cands if c.is_file()), None)


def bundle_model(b: Bundle, ckpt: Path):
    """The eager model behind the bundle: checkpoint -> export's compress step with the manifest's config."""
    from metarec.export.bundle import load_model
    from metarec.export.compress import compress_model
    from metarec.export.config import CompressConfig

    model, _, _ = load_model(ckpt)
    cc, sh = b.manifest.configs.get("compress"), b.manifest.shapes
    if cc:
        model, _ = compress_model(model, CompressConfig.from_dict(cc))
    if model.n_items != sh.N or model.cfg.dim != sh.d:
        raise ValueError(f"checkpoint {ckpt} ({model.n_items} x {model.cfg.dim}) is not this bundle's model "
                         f"({sh.N} x {sh.d})")
    return model


# ---------------------------------------------------------------------------------------------- backends
def _tensors(inp: dict, names) -> list:
    import torch

    return [torch.from_numpy(inp[n]) for n in names]


def score_backends(b: Bundle, inp: dict, model) -> tuple[dict, dict]:
    """{name: zero-arg callable returning top-k ids} and {name: note} for every scorer that can be built."""
    import torch

    fns, notes = {}, {}
    io = b.manifest.programs["score"]
    names = io.inputs
    args = _tensors(inp, names)
    i_ids = io.outputs.index("topk_ids")

    # the pybindings loader (what executorch.runtime wraps): executorch.runtime's load_program aborted the
    # process on one bundle here (runtime_paths runs in a child process for that reason)
    prog = bu.load_pte(b.programs["score"])
    fns["score.pte (XNNPACK)"] = lambda: prog.forward(args)[i_ids]
    fns["_keep"] = prog
    try:  # the runtime's own call path: inputs bound once, outputs read in place (runtime_py/programs.py)
        from metarec.runtime.programs import ScoreProgram

        sp = ScoreProgram(b.programs["score"], io, b.manifest.shapes)
        bound_args = list(args)
        fns["score.pte (XNNPACK), inputs bound once"] = lambda: sp.execute_bound(bound_args)[1].copy()
        fns["_keep_sp"] = sp
        notes["score.pte (XNNPACK), inputs bound once"] = (
            "the Recommender's call: ScoreProgram.execute_bound (set_inputs once per user, then execute; outputs "
            "read from the program's memory, no per-call tensor wrapping)")
        if sp.has_rank:  # the runtime's repeat call: rank from forward's user vector and offset
            out = sp.execute_bound(bound_args)
            named = {"user_vec": torch.from_numpy(out[2].copy()), "offset": torch.from_numpy(out[3].copy()),
                     "table": args[names.index("table")]}
            rank_args = [named[n] for n in sp.rank_order]
            fns["score.pte rank method (user vector kept), bound"] = lambda: sp.rank_bound(rank_args)[1].copy()
            notes["score.pte rank method (user vector kept), bound"] = (
                "what the Recommender runs while a user's head, history, scene (whole hour) and trend pack are "
                "unchanged: table product + offset + top-k from forward's user_vec and offset (same top-k)")
    except Exception as e:  # noqa: BLE001 - an older runtime without execute_bound
        notes["score.pte (XNNPACK), inputs bound once"] = f"unavailable: {type(e).__name__}: {e}"

    if ONNX_FILE in b.manifest.files:
        import onnxruntime as ort

        sess = ort.InferenceSession(b.read_file(ONNX_FILE), bu.ort_session_options(1),
                                    providers=["CPUExecutionProvider"])
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

        half = b.manifest.item_table.format != "float32"  # export keeps the bias in float16 for quantized bundles
        try:
            mod = ScoreModule(model, model.export_item_bias(), b.manifest.shapes.k_max,
                              torch.float16 if half else torch.float32).eval()
        except TypeError:  # an export without the bias_dtype option
            mod = ScoreModule(model, model.export_item_bias(), b.manifest.shapes.k_max).eval()
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


def adapt_backends(b: Bundle, inp: dict, model) -> tuple[dict, dict]:
    """{name: zero-arg callable returning the adapted head (P,)} for one whole adaptation (inner_steps steps)."""
    import torch

    fns, notes = {}, {}
    io = b.manifest.programs["adapt"]
    steps = io.inner_steps
    from metarec.runtime.programs import AdaptProgram

    ap = AdaptProgram(b.programs["adapt"], io, b.manifest.shapes)
    # as tensors sharing the arrays' memory, as Recommender._adapt_user passes them (numpy inputs cost a
    # from_numpy per input and call, ~0.8 us each)
    named = {n: torch.from_numpy(inp[n]) for n in io.inputs}
    fns["adapt.pte (ExecuTorch training runtime)"] = lambda: ap.adapt(named)
    notes["adapt.pte (ExecuTorch training runtime)"] = (
        "the runtime's AdaptProgram: adapt.pte's `prepare` once (if the bundle has one), then inner_steps x "
        "(training method + the training API's SGD step); the training step runs portable kernels, `prepare` is one "
        "XNNPACK call in current bundles (export/programs.py AdaptPrepareModule)")
    fns["adapt.pte, TrainingModule.forward_backward per step"] = lambda: _public_api_adapt(ap, named)
    notes["adapt.pte, TrainingModule.forward_backward per step"] = (
        "the same program and steps through the training API's Python forward_backward/named_gradients (3 extra "
        "metadata method calls, output clones and a dict per step): what the runtime's cached loop saves")
    if model is None:
        notes["eager torch"] = notes["ONNX Runtime (unrolled steps)"] = "no checkpoint beside the bundle"
        return fns, notes
    from metarec.export.programs import AdaptModule

    mod = AdaptModule(model)
    ex = [torch.from_numpy(inp[n]) for n in io.inputs]

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
    try:  # docs/architecture.md's stateless alternative: not the runtime's path (the brief requires the training runtime)
        unrolled = bu.load_pte(bu.lower_program(_unrolled_export(mod, ex, steps), xnnpack=True))
        fns["stateless unrolled steps (.pte, XNNPACK; alternative)"] = lambda: unrolled.forward(ex)[0]
        fns["_keep_unrolled"] = unrolled
        notes["stateless unrolled steps (.pte, XNNPACK; alternative)"] = (
            "the same steps as one pure program (make_fx over torch.func.grad, torch.export, XNNPACK), built here: "
            "one call, nothing mutable; a measured alternative, not what the runtime runs")
    except Exception as e:  # noqa: BLE001
        notes["stateless unrolled steps (.pte, XNNPACK; alternative)"] = f"could not build: {type(e).__name__}: {e}"
    try:
        sess, feed = _onnx_unrolled_adapt(mod, ex, io.inputs, steps)
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
    """The same `steps` Meta-SGD steps as one pure function (make_fx over torch.func.grad), exported to ONNX, in an
    ONNX Runtime session, and its feed."""
    import onnxruntime as ort

    path = onnx_unrolled_adapt_file(mod, ex, names, steps)
    # ORT_ENABLE_BASIC: the EXTENDED/ALL fusions changed this graph's result by 3e-2 (measured: BASIC matches
    # adapt.pte and eager to 1.5e-8 at the same speed), so the faster-looking levels are not the same math.
    sess = ort.InferenceSession(str(path), bu.ort_session_options(1, ORT_ADAPT_LEVEL),
                                providers=["CPUExecutionProvider"])
    by_name = dict(zip(names, ex))
    feed = {i.name: by_name[i.name].numpy() for i in sess.get_inputs()}
    return sess, feed


ORT_ADAPT_LEVEL = "ORT_ENABLE_BASIC"  # the level at which ORT's unrolled adaptation is adapt.pte's math


def onnx_unrolled_adapt_file(mod, ex, names, steps: int) -> Path:
    """The unrolled steps as an .onnx file in a fresh temporary folder (inputs named `names`, output `head`)."""
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

    def amax_all(x, dim=(), keepdim=False):  # the exporter's aten_amax needs dims: a full reduction is aten.max
        return torch.ops.aten.max.default(x) if not dim and not keepdim else NotImplemented

    # eval(): the exporter warns about a module in training mode
    gm = make_fx(unrolled, decomposition_table={torch.ops.aten.amax.default: amax_all})(*ex).eval()
    path = Path(tempfile.mkdtemp(prefix="metarec-bench-")) / "adapt_unrolled.onnx"
    torch.onnx.export(gm, tuple(ex), str(path), dynamo=True, input_names=list(names), output_names=["head"],
                      opset_version=18, verbose=False)
    return path
