"""The synthetic catalog-scaling scorers that bench_scaling.py times: score.pte's structure with 1K..1M random
items, the fused large-catalog scorer (quantized table constant, gated trend, max-tree top-k), its chunked form (the
program `metarec export` ships for large catalogs: export/large.py, imported here) and the reference check. Every score term comes from sdk/kernel.py (through the model's bound methods); lowering is
export/lower.py's.
"""
from __future__ import annotations

import numpy as np

from metarec.bench import bench_util as bu
# the large-catalog program's parts are export's (export/large.py); re-exported for the benchmarks
from metarec.export.large import DEFAULT_CHUNK, chained_topk, chunk_bounds, max_tree, tree_levels, tree_topk  # noqa: F401

def synthetic_model(n_items: int, seed: int = 0):
    import torch

    from metarec.sdk.model import MetaRecModel, ModelConfig

    torch.manual_seed(seed)
    # pinned to the shape bench/results/scaling.md was measured with: a 10^5-10^6-item catalog wants d=32 (and group
    # 32 int4 rows, XNNPACK's rule), not the ML-100K phone's d=16; the trend scale adds one L-wide Linear, nothing
    # per item, so it stays at the measured 1.0
    cfg = ModelConfig(dim=32, n_prototypes=8, trend_hist_scale=1.0)
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
    from torch import nn

    from metarec.sdk import kernel

    shapes = kernel.head_shapes(model.cfg)

    class Score(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Linear(model.cfg.dim, model.n_items, bias=False)
            with torch.no_grad():
                self.table.weight.copy_(model.export_item_table())
            self.register_buffer("bias", model.export_item_bias())
            object.__setattr__(self, "model", model)  # not a submodule: unused item params stay out

        def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude):
            m = self.model
            w = m.kernel_weights()
            z, s = kernel.user_vector(m.cfg, w, kernel.unflatten_head(head, shapes), hist_vecs, hist_mask, scene)
            out = self.table(z[None])[0]  # 2-D input: the quantized linear kernels need it
            if stage == "linear":
                return (out,)
            out = out + kernel.offset(m.cfg, w, s, trend, self.bias, hist_mask, serving=True, exclude=exclude)
            if stage == "elementwise":
                return (out,)
            if topk_mode == "blocked":
                return blocked_topk(out, k, n_blocks)
            v, i = torch.topk(out, k)
            return v, i

    mod = Score().eval()
    if quant != "none":
        quantize_table(mod, quant)
    return mod


def blocked_topk(scores, k: int, n_blocks: int):
    """Exact top-k in two passes: block maxima, the k best blocks, then top-k among their items. Any top-k item
    lies in one of the k blocks with the largest maxima (else k items from other blocks beat it), so the result
    equals a flat top-k up to ties, while the O(N) part is a max reduction instead of a selection over N."""
    import torch

    blocks = scores.reshape(n_blocks, -1)
    b = blocks.shape[1]
    _, bi = torch.topk(blocks.amax(1), k)
    v, j = torch.topk(blocks.index_select(0, bi).reshape(-1), k)
    return v, bi.index_select(0, torch.div(j, b, rounding_mode="floor")) * b + torch.remainder(j, b)


FUSED_STAGES = ("linear", "elementwise", "full")


def fused_module(model, k: int, quant: str = "int4", stage: str = "full"):
    """The large-catalog scorer: score.pte's semantics with every per-item term streamed once.

    inputs: head, hist_vecs, hist_mask, scene, t with t = trend and -inf at excluded items (ONE per-item input,
    built by the caller: trend.copy(); t[exclude] = -inf). scores = z . v_i + bias_i + gate(scene) * t_i:
    - the table is a torchao-quantized program constant (XNNPACK delegates a Linear only with a constant weight)
      and the item bias is that Linear's bias, added in the GEMV's output stage (no extra pass);
    - gate * t is one delegated multiply + add; gate = softplus(.) > 0, clamped at 1e-30 so that an excluded
      item's gate * -inf is -inf, never NaN (softplus underflows to 0 below about -104);
    - top-k is exact and two-stage (`tree_topk`): a delegated max tree, then the portable top-k over candidates.
    `stage` cuts the graph for the profile by subtraction ("linear", "elementwise", "full")."""
    if stage not in FUSED_STAGES:
        raise ValueError(f"stage {stage!r} unknown; known: {FUSED_STAGES}")
    import torch
    from torch import nn

    from metarec.sdk import kernel

    class FusedScore(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Linear(model.cfg.dim, model.n_items, bias=True)
            with torch.no_grad():
                self.table.weight.copy_(model.export_item_table())
                self.table.bias.copy_(model.export_item_bias())
            object.__setattr__(self, "model", model)  # not a submodule: unused item params stay out

        def gate(self, scene, hist_mask):
            m = self.model
            if not m.cfg.use_trend:
                return torch.zeros(1, 1)
            w = m.kernel_weights()
            s = kernel.scene_encoding(m.cfg, w, scene.reshape(1, -1))
            return kernel.trend_gain(m.cfg, w, s, hist_mask.reshape(1, -1), serving=True).reshape(1, 1).clamp_min(1e-30)

        def forward(self, head, hist_vecs, hist_mask, scene, t):
            z = user_vec(self.model, head, hist_vecs, hist_mask, scene)
            out = self.table(z[None])  # (1, N) = z . v_i + bias_i
            # the profile's cut programs return only k scores: returning all N would add an N-float output
            # copy the whole program does not pay and blur the increments
            if stage == "linear":
                return (out[0, :k],)
            out = (out + self.gate(scene, hist_mask) * t[None])[0]
            if stage == "elementwise":
                return (out[:k],)
            return tree_topk(out, k)

    mod = FusedScore().eval()
    if quant != "none":
        quantize_table(mod, quant)
    return mod


def fused_inputs(model, n_items: int, seed: int = 0) -> tuple:
    """(head, hist_vecs, hist_mask, scene, t): example_inputs with trend and exclude folded into t."""
    head, hist, mask, scene, trend, exclude = example_inputs(model, n_items, seed)
    t = trend.clone()
    t[exclude > 0.5] = float("-inf")
    return head, hist, mask, scene, t


def lower_unplanned(exported) -> bytes:
    """Stock XNNPACK lowering with the graph inputs left out of the memory plan: the runtime binds the caller's
    buffers instead of copying N-float inputs into planned arenas."""
    from metarec.export.lower import lower

    return lower(exported, "xnnpack", plan_inputs=False)


def build_fused(n_items: int, k: int = 10, quant: str = "int4", seed: int = 0, stage: str = "full"):
    """(pte bytes, inputs, eager module) of the fused large-catalog scorer."""
    import torch

    model = synthetic_model(n_items, seed)
    mod = fused_module(model, k, quant, stage)
    ex = fused_inputs(model, n_items, seed)
    with torch.no_grad():
        ep = torch.export.export(mod, ex)
    return lower_unplanned(ep), ex, mod


def user_vec(model, head, hist, mask, scene):
    """The eager model's user vector (d,) from a flat head, as the fused programs take it."""
    from metarec.sdk import kernel

    return model.user_vector(kernel.unflatten_head(head, kernel.head_shapes(model.cfg)), hist, mask, scene)


def build_fused_rank(n_items: int, k: int = 10, quant: str = "int8", seed: int = 0):
    """(pte bytes, rank inputs, fused eager module, fused inputs) of the fused scorer's warm call, what the runtime
    runs with score.pte's rank method: the user vector and the per-item offset gate(scene) * t were kept from the
    user's last full call (they change only with the head, history, scene hour or trend pack), so one call is the
    table GEMV (bias in its output stage), one add of the offset, and the max-tree top-k."""
    import torch
    from torch import nn

    model = synthetic_model(n_items, seed)
    full = fused_module(model, k, quant)
    ex = fused_inputs(model, n_items, seed)
    head, hist, mask, scene, t = ex
    with torch.no_grad():
        z = user_vec(model, head, hist, mask, scene)[None].contiguous()
        off = (full.gate(scene, mask) * t[None])[0].contiguous()  # excluded items: gate > 0 times -inf = -inf

    class FusedRank(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = full.table  # the same quantized Linear (bias inside)

        def forward(self, user_vec, offset):
            return tree_topk((self.table(user_vec) + offset[None])[0], k)

    rank = FusedRank().eval()
    with torch.no_grad():
        ep = torch.export.export(rank, (z, off))
    return lower_unplanned(ep), (z, off), full, ex


def chunked_module(model, k: int, quant: str = "int8", chunk: int = DEFAULT_CHUNK, warm: bool = False,
                   stage: str = "full"):
    """The large-catalog scorer in chunks, as export ships it (export/large.py `build_chunked`).

    Full call (`warm=False`): export's ChunkedScoreModule, inputs head, hist_vecs, hist_mask, scene, then t split in
    chunks, each (1, n_c) (views of the caller's one t buffer: trend with -inf at excluded items). Warm call
    (`warm=True`, a variant export does not ship): the kept user vector (1, d), then the kept offset gate * t in the
    same chunks, over the same quantized tables. Returns (values, ids) of the top-k. The eager unchunked
    `fused_module` is kept as `.full` (reference check, eager comparison)."""
    import torch
    from torch import nn

    from metarec.export.large import build_chunked

    fwd, _, edges, _ = build_chunked(model, k, quant, chunk, stage)
    if warm:
        class WarmChunked(nn.Module):
            def __init__(self):
                super().__init__()
                self.chunks = fwd.chunks

            def forward(self, u, *offsets):
                return chained_topk(self.chunks.tables, self.chunks.rowbase(), u, offsets, k, stage=stage)

        mod = WarmChunked().eval()
    else:
        mod = fwd
    object.__setattr__(mod, "full", fused_module(model, k, quant))
    return mod, edges


def build_fused_chunked(n_items: int, k: int = 10, quant: str = "int8", chunk: int = DEFAULT_CHUNK,
                        warm: bool = False, seed: int = 0, stage: str = "full"):
    """(pte bytes, program inputs, unchunked eager fused module, its inputs) of the chunked scorer."""
    import torch

    model = synthetic_model(n_items, seed)
    mod, edges = chunked_module(model, k, quant, chunk, warm, stage)
    ex = fused_inputs(model, n_items, seed)
    head, hist, mask, scene, t = ex
    spans = list(zip(edges[:-1], edges[1:]))
    if warm:
        with torch.no_grad():
            z = user_vec(model, head, hist, mask, scene)[None].contiguous()
            off = (mod.full.gate(scene, mask) * t[None])[0].contiguous()
        prog_in = (z, *(off[None, a:e] for a, e in spans))
    else:
        prog_in = (head, hist, mask, scene, *(t[None, a:e] for a, e in spans))
    with torch.no_grad():
        ep = torch.export.export(mod, prog_in)
    return lower_unplanned(ep), prog_in, mod.full, ex


def reference_check(mod, ex: tuple, got_v, got_i, k: int) -> dict:
    """Top-k of the program vs a numpy reference from the DEQUANTIZED table (fp64): z and gate from the eager
    model, s = W_dq z + bias + gate * trend, excluded = -inf. The program also quantizes z to int8 per call
    (dynamic activations), which moves each score by at most tol = max_i |w_i|_1 * scale_z / 2, scale_z =
    (max z - min z) / 255 (+ fp32 slack). Passes when every returned id is not excluded, its reference score is
    within 2 tol of the reference k-th score, and the returned value is within tol of its reference score."""
    import torch

    head, hist, mask, scene, t = ex
    m = mod.model
    with torch.no_grad():
        z = user_vec(m, head, hist, mask, scene).double().numpy().reshape(-1)
        g = float(mod.gate(scene, mask).reshape(-1)[0])
        w = mod.table.weight
        w = (w.dequantize() if hasattr(w, "dequantize") else w).double().numpy()
        b = mod.table.bias.double().numpy()
    tt = t.double().numpy()
    excl = np.isneginf(tt)
    s = w @ z + b + g * np.where(excl, 0.0, tt)
    s[excl] = -np.inf
    ref = np.argsort(-s, kind="stable")[:k]
    ids, vals = got_i.numpy().astype(np.int64), got_v.double().numpy()
    zr = float(z.max() - min(z.min(), 0.0))  # torchao's asymmetric int8 range includes 0
    tol = float(np.abs(w).sum(1).max()) * zr / 255 / 2 + 1e-4 * (1 + float(np.abs(s[ref]).max()))
    kth = s[ref[-1]]
    ok = bool(len(set(ids.tolist())) == k and not excl[ids].any() and (s[ids] >= kth - 2 * tol).all()
              and (np.abs(vals - s[ids]) <= tol).all())
    return {"ok": ok, "id_overlap": len(set(ids.tolist()) & set(ref.tolist())) / k, "tol": tol,
            "max_value_err": float(np.abs(vals - s[ids]).max())}


def quantize_table(mod, quant: str, prefix: str = "table") -> None:
    """export's table quantization (export/large.py: int8 per row, int4 in groups of 32) of the Linear(s) whose
    name starts with `prefix`."""
    from metarec.export.large import quantize_table as _quantize, table_format

    first = next(m for n, m in mod.named_modules() if n.startswith(prefix) and hasattr(m, "in_features"))
    _quantize(mod, table_format(quant, first.in_features)[0], prefix=prefix)


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

    model = synthetic_model(n_items, seed)
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

    model = synthetic_model(n_items, seed)
    table = model.export_item_table()
    mod = ScoreModule(model, model.export_item_bias(), k).eval()
    if topk_mode == "blocked":
        if n_items % 1000 or n_items < 1000 * k:
            raise ValueError("blocked top-k needs N a multiple of 1000 and N >= 1000 * k")

        def forward(*a):
            return blocked_topk(mod.scores(*a), k, 1000)

        mod.forward = forward
    ex = score_example_inputs(model, table)
    with torch.no_grad():
        ep = torch.export.export(mod, ex, strict=False)
    from metarec.export.lower import lower

    # lowered as export lowers score.pte: its partitioner (the table product delegated as a dynamic
    # fully-connected) and unplanned inputs
    return lower(ep, "score", plan_inputs=False), ex, mod
