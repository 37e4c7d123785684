"""Step 2 of export: the two ExecuTorch programs the phone runs, and the eager modules they are traced from.

## Where the item table lives (measured on this machine, ML-100K 1,682 x 32, 1 thread, p50 of Method.execute)
The table exists once in the bundle: `items.bin`, in the runtime's table layout (quantized by torchao). The
runtime dequantizes it once when the bundle opens, because it needs float rows anyway: history, support and
negative vectors for both programs, and every row for `because` similarity. score.pte takes that float table as
its input `table` (a zero-copy view of the runtime's array), so no program carries a second copy.
Measured on the real scorer (trained ML-100K prior, d=32, int4; `python -m metarec.export.measure CKPT`):
- table as an input (this design): 37 KB program before zlib (incl. the item bias), p50 98 us;
- int4 table as a torchao 8da4w constant inside score.pte: 69 KB program, p50 45 us; ONNX Runtime on the input
  scorer: 60 us. The constant is ~2x faster because XNNPACK only delegates a Linear with a constant weight: with
  the table as an input the product is a portable mm (~25 us) and the graph splits into more delegate calls.
  But with the table inside score.pte the runtime has no rows: it must rebuild them by probing score.pte
  (d * ceil(N / k_max) calls at open) or ship a second copy, and the probed int4 rows differed from torchao's
  dequantized table by up to 6.4e-3 (XNNPACK's own int4 path), so the phone's rows would not be the program's.
- the table part alone (linear + top-k): int4 constant 17.7 us / 40.6 KB, int8 16.3 us / 70.9 KB, fp32
  constant 19.1 us / 225 KB; fp32 input 34 us with unplanned inputs (49 us when the input is copied in).
Chosen: one exact copy (size budget, exact parity, a simple runtime); the constant + probe variant is the
known faster alternative (see measure.py) if score latency must beat ONNX Runtime.

## adapt.pte
An ExecuTorch training program (contracts.md): one parameter `delta` (P,), theta = theta0 + scale * delta with
scale = sqrt(step_sizes(scene)) baked from the learned Meta-SGD rates and the scene gate; each forward_backward
+ SGD(lr=1) on delta is then exactly one Meta-SGD step on theta. Outputs (loss, scale): the runtime reads the
adapted head as theta0 + scale * delta.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

SCORE_INPUTS = ("head", "hist_vecs", "hist_mask", "scene", "trend", "exclude", "table")
SCORE_OUTPUTS = ("topk_scores", "topk_ids")
ADAPT_INPUTS = ("theta0", "hist_vecs", "hist_mask", "scene", "target_vecs", "target_mask", "neg_vecs")
ADAPT_OUTPUTS = ("loss", "scale")
ADAPT_PARAMETER = "delta"


def head_layout(model) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """(names, shapes) of the head in flattening order."""
    h = model.head_init()
    names = tuple(model.head_param_names)
    return names, tuple(tuple(h[k].shape) for k in names)


def flatten_head(model, head: dict) -> torch.Tensor:
    return torch.cat([head[k].reshape(-1) for k in model.head_param_names])


def unflatten_head(flat: torch.Tensor, names, shapes) -> dict:
    out, o = {}, 0
    for k, s in zip(names, shapes):
        n = math.prod(s)
        out[k] = flat[o:o + n].reshape(s)
        o += n
    return out


def frozen_copy(model):
    """The model without its catalog-sized tensors (they would be baked into every program) and frozen."""
    m = copy.deepcopy(model).eval()
    for name in ("item_emb", "item_bias_id"):
        delattr(m, name)
        m.register_buffer(name, torch.empty(0))
    m.item_attrs = torch.empty(0)
    m.negatives = torch.empty(0, dtype=torch.long)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class ScoreModule(nn.Module):
    """score.pte: the model's own `score_from_vectors` on the input table, excluded items to -inf, then top-k."""

    def __init__(self, model, bias: torch.Tensor, k_max: int, bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.names, self.shapes = head_layout(model)
        self.model = frozen_copy(model)
        # quantized bundles keep the (N,) item bias in float16: half its bytes, error ~5e-4 x |bias|
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32).to(bias_dtype).clone())
        if not 1 <= k_max <= self.bias.shape[0]:
            raise ValueError(f"k_max={k_max} must be in [1, N={self.bias.shape[0]}]")
        self.k_max = k_max

    def scores(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        # = model.score_from_vectors (test_programs checks it) with z as a (1, d) row. XNNPACK takes a Linear
        # only with a constant weight, so this product runs as a portable mm (~25 us of the call on ML-100K; a
        # delegated bmm of (1, N, d) x (1, d, 1) measured slower, 65 vs 34 us in isolation).
        m = self.model
        z = m.user_vector(unflatten_head(head, self.names, self.shapes), hist_vecs, hist_mask, scene)
        s = F.linear(z[None], table)[0] + self.bias.float()
        s = s + m.trend_term(scene, trend)  # new items (item_known = 0, a baked (N,) constant) weigh trend more
        return torch.where(exclude > 0.5, torch.full_like(s, float("-inf")), s)

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        v, i = torch.topk(self.scores(head, hist_vecs, hist_mask, scene, trend, exclude, table), self.k_max)
        return v, i


def score_example_inputs(model, k_table: torch.Tensor) -> tuple:
    """Contract-shaped example inputs (a typical user: 3 history items, nothing excluded but those)."""
    L, d = model.cfg.hist_len, k_table.shape[1]
    from metarec.sdk.model import SCENE_DIM

    g = torch.Generator().manual_seed(0)
    n = k_table.shape[0]
    hist_mask = torch.zeros(L)
    hist_mask[-3:] = 1.0
    ids = torch.randint(0, n, (L,), generator=g)
    hist_vecs = k_table[ids] * hist_mask[:, None]
    exclude = torch.zeros(n)
    exclude[ids[-3:]] = 1.0
    scene = torch.zeros(SCENE_DIM)
    scene[0], scene[1], scene[3], scene[8] = 0.5, -0.86, 1.0, 1.0
    trend = torch.log1p(torch.randint(0, 20, (n,), generator=g).float())
    head = flatten_head(model, model.head_init()).detach().clone()
    return head, hist_vecs, hist_mask, scene, trend, exclude, k_table.clone()


class AdaptModule(nn.Module):
    """adapt.pte's forward: support loss at theta0 + scale * delta; delta is the only trainable tensor."""

    def __init__(self, model):
        super().__init__()
        self.names, self.shapes = head_layout(model)
        self.model = frozen_copy(model)
        self.negatives = None
        P = sum(math.prod(s) for s in self.shapes)
        self.delta = nn.Parameter(torch.zeros(P))

    def scale(self, scene):
        rates = self.model.step_sizes(scene)
        return torch.cat([torch.sqrt(rates[k]).reshape(-1) for k in self.names])

    def forward(self, theta0, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs):
        scale = self.scale(scene).detach()
        theta = theta0 + scale * self.delta
        head = unflatten_head(theta, self.names, self.shapes)
        loss = self.model.support_loss(head, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs)
        return loss, scale


def adapt_example_inputs(model, table: torch.Tensor) -> tuple:
    head, hist_vecs, hist_mask, scene, *_ = score_example_inputs(model, table)
    neg = table[model.negatives]
    return head, hist_vecs, hist_mask, scene, hist_vecs.clone(), hist_mask.clone(), neg


def _unplanned_inputs():
    """Inputs are not memory-planned: the method binds the caller's buffers instead of copying them in on every
    execute (the (N, d) table is 215 KB on ML-100K: 49 -> 34 us for linear + top-k alone)."""
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass

    return ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False))


def export_score_program(model, bias: torch.Tensor, table: torch.Tensor, k_max: int,
                         bias_dtype: torch.dtype = torch.float32) -> bytes:
    """score.pte bytes: torch.export -> XNNPACK partitioner -> ExecuTorch."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    mod = ScoreModule(model, bias, k_max, bias_dtype).eval()
    ep = torch.export.export(mod, score_example_inputs(model, table), strict=False)
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch(_unplanned_inputs()).buffer


def export_adapt_program(model, table: torch.Tensor) -> bytes:
    """adapt.pte bytes: a joint forward-backward graph (executorch.extension.training) with `delta` inside."""
    from executorch.exir import to_edge
    from torch.export.experimental import _export_forward_backward

    mod = AdaptModule(model)
    ep = torch.export.export(mod, adapt_example_inputs(model, table), strict=False)
    ep = _export_forward_backward(ep)
    return to_edge(ep).to_executorch().buffer
