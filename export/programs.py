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
known faster alternative (see measure.py). (The figures above predate ScoreModule's delegable rewrite; its
docstring has the current split: on the default d=16 bundle score.pte now beats ONNX Runtime on the same module.)

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
EXCLUDED = -1e30  # score offset of an excluded item (score.pte sinks them arithmetically; the runtime drops them)


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
    """score.pte: `MetaRecModel.score_from_vectors` re-expressed in ops XNNPACK delegates, excluded items sunk, top-k.

    Same function as the model (tests/export/test_score_module.py checks it against `score_from_vectors` on every
    ablation switch, K=0..L), written so that the whole user-vector graph is ONE XNNPACK partition. Measured on
    the default ML-100K bundle (N=1,682, d=16, 1 thread, p50 of Method.execute over 2,000 interleaved calls,
    load ~2): the straight trace of `user_vector` lowered to 10 partitions + 35 portable kernels, 59.7 us; this
    form lowers to 2 partitions + 2 portable kernels (the table mm and topk), 43.3 us (load ~9; with a float16
    bias cast as a third portable kernel 47.0). Where the remaining time goes (variants of this module, same
    run): ~8 us is Method.execute's floor with 7 inputs, the user vector (one delegate call) ~7 us, the portable
    table mm ~9 us, bias/trend/exclusion ~3 us, and topk with k_max=100 ~12-15 us (topk with k=10 is ~5 us: the
    portable kernel's cost grows with k). ONNX Runtime on this same module (model.onnx): 42.4-43.4 us.
    Rewrites (each exact for the contract's inputs, hist_mask in {0, 1}):
    - F.normalize(x, eps) -> x / clamp(sqrt(sum(x*x)), eps), the sum as a Linear with a constant ones row;
      F.normalize(prototypes) * exp(proto_temp) is folded into one constant;
    - masked_fill(mask <= 0, -1e4) -> recency * mask + (mask - 1) * 1e4; has = (count > 0) -> clamp(count, max=1);
    - products with the head (an input, so not a constant weight XNNPACK would take as a Linear) and with the
      history -> broadcast multiply + Linear with a constant ones row (XNNPACK takes both; a dynamic bmm split the
      graph into 8 partitions and was slower, 49.5 vs 46.5 us);
    - softplus (decomposed into where/gt/log1p, portable) -> relu(x) + log(1 + exp(-|x|));
    - exclusions: score + exclude * -1e30 instead of where(exclude, -inf): delegable; an excluded item sorts below
      every real score and the runtime drops excluded ids from the top-k anyway (Recommender._results).
    Not taken (measured): the table product stays a portable mm on the (N, d) input `table` (XNNPACK takes a Linear
    only with a constant weight; a delegated bmm was slower, 33.5 vs 14.6 us for the product alone); the table
    transposed ((d, N) input, (1, d) @ (d, N) portable mm) measured 43.3 vs 46.4 us but ONNX Runtime
    got the same gain (42.6 vs 43.4), at the price of a second runtime copy of the table and a contract change.
    """

    def __init__(self, model, bias: torch.Tensor, k_max: int, bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.names, self.shapes = head_layout(model)
        cfg = model.cfg
        self.cfg = cfg
        # Quantized bundles round the (N,) item bias to float16 (error ~5e-4 x |bias|) but store those values as
        # float32: the float16 -> float32 cast was a portable op costing ~3.7 us per call (43.3 vs 47.0 us p50 on
        # ML-100K), and a float32 copy of float16 values has 13 zero mantissa bits that zlib removes (+1.0 KB
        # stored, vs +3.0 KB for an unrounded float32 bias). Same values, same scores.
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32).to(bias_dtype).to(torch.float32))
        if not 1 <= k_max <= self.bias.shape[0]:
            raise ValueError(f"k_max={k_max} must be in [1, N={self.bias.shape[0]}]")
        self.k_max = k_max
        d, h, sh, L = cfg.dim, cfg.head_hidden, cfg.scene_hidden, cfg.hist_len
        sizes = [math.prod(s) for s in self.shapes]
        if tuple(self.names) != ("u", "W1", "b1", "W2") or sizes != [d, h * (2 * d + sh), h, d * h]:
            raise ValueError(f"ScoreModule knows the head (u, W1, b1, W2); got {self.names} {self.shapes}")

        def const(name, t):
            self.register_buffer(name, t.detach().to(torch.float32).clone().contiguous())

        with torch.no_grad():
            const("scene_w", model.scene_enc[0].weight)
            const("scene_b", model.scene_enc[0].bias)
            const("prior_w", model.proto_prior.weight)
            const("prior_b", model.proto_prior.bias)
            const("proto_t", model.prototypes.T)  # u0 = softmax @ prototypes as a Linear
            const("proto_att", torch.exp(model.proto_temp) * F.normalize(model.prototypes, dim=-1))
            const("recency", model.recency.reshape(1, L))
            const("transition", model.transition.weight)
            const("gate_w", model.trend_gate.weight)
            const("gate_b", model.trend_gate.bias)
            for n, width in (("ones_d", d), ("ones_l", L), ("ones_x", 2 * d + sh), ("ones_h", h)):
                const(n, torch.ones(1, width))

    @staticmethod
    def _rowdot(w, x, ones):
        """(w * x).sum(-1) as a (1, rows) row: w (rows, c), x (1, c); the sum is a Linear with constant ones."""
        return F.linear(w * x, ones).reshape(1, -1)

    def user_vector(self, head, hist_vecs, hist_mask, scene):
        """(z (1, d), scene encoding (1, s)) = the model's user_vector, in delegable ops (class docstring)."""
        cfg = self.cfg
        d, h, sh, L = cfg.dim, cfg.head_hidden, cfg.scene_hidden, cfg.hist_len
        sc = scene.reshape(1, -1)
        if not cfg.use_scene:
            sc = sc * 0.0
        s = torch.tanh(F.linear(sc, self.scene_w, self.scene_b))
        m = hist_mask.reshape(1, L)
        cnt = F.linear(m, self.ones_l)  # (1, 1)
        has = torch.clamp(cnt, max=1.0)  # = (cnt > 0) for a {0, 1} mask
        hist_t = hist_vecs.permute(1, 0)  # (d, L)
        logits = F.linear(s, self.prior_w, self.prior_b)
        if cfg.use_prototypes:
            mean = self._rowdot(hist_t, m, self.ones_l) / torch.clamp(cnt, min=1.0)
            unit = mean / torch.clamp(torch.sqrt(F.linear(mean * mean, self.ones_d)), min=1e-6)
            logits = logits + has * F.linear(unit, self.proto_att)
        u0 = F.linear(torch.softmax(logits, -1), self.proto_t)
        if cfg.use_seq:
            w = torch.softmax(self.recency * m + (m - 1.0) * 1e4, -1) * has
            seq = F.linear(self._rowdot(hist_t, w, self.ones_l), self.transition)
        else:
            seq = torch.zeros_like(u0)
        x = torch.cat([u0, s, seq], -1)
        o = 0
        u = head[o:o + d].reshape(1, d)
        o += d
        w1 = head[o:o + h * (2 * d + sh)].reshape(h, 2 * d + sh)
        o += h * (2 * d + sh)
        b1 = head[o:o + h].reshape(1, h)
        o += h
        w2 = head[o:o + d * h].reshape(d, h)
        hid = torch.tanh(self._rowdot(w1, x, self.ones_x) + b1)
        return u0 + seq + u + self._rowdot(w2, hid, self.ones_h), s

    def trend_weight(self, s):
        """softplus(trend_gate(s)) as relu(x) + log(1 + exp(-|x|)), shape (1,)."""
        g = F.linear(s, self.gate_w, self.gate_b)
        return (torch.relu(g) + torch.log(1.0 + torch.exp(-torch.abs(g)))).reshape(1)

    def scores(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        """(N,) = model.score_from_vectors + exclude * -1e30 (excluded items sink below every real score)."""
        z, s = self.user_vector(head, hist_vecs, hist_mask, scene)
        out = F.linear(z, table).reshape(-1) + self.bias
        if self.cfg.use_trend:
            out = out + self.trend_weight(s) * trend
        return out + exclude * EXCLUDED

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
