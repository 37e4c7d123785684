"""Step 2 of export: the ExecuTorch programs the phone runs, as thin modules over the scoring kernel.

score.pte (`ScoreModule`, with `rank`: `CachingScoreModule` + `RankModule`) and adapt.pte's `prepare`
(`AdaptPrepareModule`) call sdk/kernel.py on the model's frozen weights (`KernelConstants`), so they compute what
the sdk computes by construction; adapt.pte's training `forward` (`AdaptStepModule`) takes `prepare`'s packed
tensor and evaluates the kernel's head and support loss. `check_lowerable` refuses a model whose adaptation or
scoring these programs would not reproduce. Why the table is an input, why one packed tensor, why the step runs
portable: docs/decisions/programs.md. Lowering is export/lower.py's.

adapt.pte holds one parameter `delta` (P,): theta = theta0 + scale * delta with scale = sqrt(step sizes), so each
forward_backward + SGD(lr=1) on delta is exactly one Meta-SGD step on theta.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from metarec.runtime.manifest import ADAPT_PREPARE_METHOD, ADAPT_UNROLLED_METHOD, RANK_METHOD  # contract names
from metarec.sdk import kernel
from metarec.sdk.kernel import EXCLUDED

from .errors import ExportError
from .lower import lower

LOWERABLE_LEARNERS = ("metasgd",)  # adapt.pte runs Meta-SGD's scene-gated per-parameter steps


def check_lowerable(cfg, learner: str | None = None) -> None:
    """ExportError when the programs would not reproduce the model: they implement Meta-SGD with the "all"
    support loss without item biases, and a score whose table product is one GEMV (the rank method's cache)."""
    bad = []
    if learner is not None and learner not in LOWERABLE_LEARNERS:
        bad.append(f"learner={learner!r} (adapt.pte runs {list(LOWERABLE_LEARNERS)})")
    if cfg.support_target != "all":
        bad.append(f"support_target={cfg.support_target!r} (adapt.pte scores every target from the whole support)")
    if cfg.inner_bias:
        bad.append("inner_bias=True (adapt.pte's support loss has no item biases)")
    if cfg.trend_affinity:
        bad.append("trend_affinity=True (score.pte's rank method caches one offset beside a single table product)")
    if bad:
        raise ExportError("this model cannot be exported without changing what it computes: " + "; ".join(bad))


def head_layout(model) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """(names, shapes) of the head in flattening order; ExportError unless it is the kernel's head."""
    h = model.head_init()
    names = tuple(model.head_param_names)
    shapes = tuple(tuple(h[k].shape) for k in names)
    want = kernel.head_shapes(model.cfg)
    if names != kernel.HEAD_PARAM_NAMES or shapes != tuple(want[k] for k in names):
        raise ExportError(f"the programs know the kernel's head {want}, got {dict(zip(names, shapes))}")
    return names, shapes


def flatten_head(model, head: dict) -> torch.Tensor:
    return torch.cat([head[k].reshape(-1) for k in model.head_param_names])


def frozen_copy(model):
    """The model without its catalog-sized tensors (they would be baked into every program) and frozen."""
    m = copy.deepcopy(model).eval()
    for name in ("item_emb", "item_bias_id") + (("log_pop",) if model.cfg.pop_prior else ()):
        delattr(m, name)
        m.register_buffer(name, torch.empty(0))
    m.item_attrs = torch.empty(0)
    m.negatives = torch.empty(0, dtype=torch.long)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class KernelConstants(nn.Module):
    """The kernel's weights of a model as baked buffers; `catalog=False` leaves out the (N,) ones."""

    CATALOG = ("trend_factor", "trend_sens")

    def __init__(self, model, catalog: bool = True):
        super().__init__()
        with torch.no_grad():
            tensors = kernel.Weights.of(model).tensors()
        self.names = [k for k in tensors if catalog or k not in self.CATALOG]
        for k in self.names:
            self.register_buffer(k, tensors[k].detach().to(torch.float32).clone().contiguous())

    def weights(self) -> kernel.Weights:
        return kernel.Weights(**{k: getattr(self, k) for k in self.names})


class ScoreModule(nn.Module):
    """score.pte: the kernel's scores, excluded items sunk by EXCLUDED, then top-k; everything but top-k is one
    XNNPACK call under `score_partitioner` (tests/export check the graph and the equality with the sdk)."""

    def __init__(self, model, bias: torch.Tensor, k_max: int, bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        check_lowerable(model.cfg)
        self.cfg = model.cfg
        self.shapes = dict(zip(*head_layout(model)))
        # quantized bundles round the item bias to float16 values kept as float32: a cast in the graph is a portable op
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32).to(bias_dtype).to(torch.float32))
        if not 1 <= k_max <= self.bias.shape[0]:
            raise ValueError(f"k_max={k_max} must be in [1, N={self.bias.shape[0]}]")
        self.k_max = k_max
        self.k = KernelConstants(model)
        new = (1.0 - model.item_known).detach().clone()
        has_new = self.cfg.new_item_terms and bool((new > 0).any())
        self.register_buffer("item_new", new if has_new else None)  # a catalog without new items skips their pass
        self.new_offset = float(self.cfg.new_trend_offset)

    def user_vector(self, head, hist_vecs, hist_mask, scene):
        """(z (1, d), scene encoding (1, s)) from the flat head and the contract's inputs."""
        return kernel.user_vector(self.cfg, self.k.weights(), kernel.unflatten_head(head, self.shapes), hist_vecs,
                                  hist_mask.reshape(1, -1), scene.reshape(1, -1))

    def offset(self, s, trend, exclude, hist_mask):
        """(N,): item bias + trend term + exclude * EXCLUDED."""
        return kernel.offset(self.cfg, self.k.weights(), s, trend, self.bias, hist_mask.reshape(1, -1),
                             self.item_new, self.new_offset, serving=True, exclude=exclude)

    def scores(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        z, s = self.user_vector(head, hist_vecs, hist_mask, scene)
        return F.linear(z, table).reshape(-1) + self.offset(s, trend, exclude, hist_mask)

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        v, i = torch.topk(self.scores(head, hist_vecs, hist_mask, scene, trend, exclude, table), self.k_max)
        return v, i


class CachingScoreModule(ScoreModule):
    """score.pte's forward when the program has a rank method: the top-k plus what `rank` needs to redo it without
    the user vector, (user_vec (1, d), offset (N,))."""

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        z, s = self.user_vector(head, hist_vecs, hist_mask, scene)
        off = self.offset(s, trend, exclude, hist_mask)
        v, i = torch.topk(F.linear(z, table).reshape(-1) + off, self.k_max)
        return v, i, z, off


class RankModule(nn.Module):
    """score.pte's `rank` method: top-k of table . user_vec + offset from forward's cached outputs (the user vector
    and the offset change only with the head, history, scene hour or trend pack). CachingScoreModule's last line."""

    def __init__(self, k_max: int):
        super().__init__()
        self.k_max = k_max

    def forward(self, user_vec, offset, table):
        v, i = torch.topk(F.linear(user_vec, table).reshape(-1) + offset, self.k_max)
        return v, i


def score_example_inputs(model, k_table: torch.Tensor) -> tuple:
    """Contract-shaped example inputs (a typical user: 3 history items, nothing excluded but those)."""
    L = model.cfg.hist_len
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
    """adapt.pte's forward without `prepare` (the benchmarks' eager reference): the kernel's support loss at
    theta0 + scale * delta; delta is the only trainable tensor."""

    def __init__(self, model):
        super().__init__()
        self.shapes = dict(zip(*head_layout(model)))
        self.model = frozen_copy(model)
        self.delta = nn.Parameter(torch.zeros(sum(math.prod(s) for s in self.shapes.values())))

    def scale(self, scene):
        rates = self.model.step_sizes(scene)
        return torch.cat([torch.sqrt(rates[k]).reshape(-1) for k in kernel.HEAD_PARAM_NAMES])

    def forward(self, theta0, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs):
        scale = self.scale(scene).detach()
        head = kernel.unflatten_head(theta0 + scale * self.delta, self.shapes)
        loss = self.model.support_loss(head, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs)
        return loss, scale


class AdaptPrepareModule(nn.Module):
    """adapt.pte's `prepare`, once per adaptation: everything of the support loss the head does not change (the
    head's input x = [u0; s; seq], base = u0 + seq, sqrt of the step sizes, the target weights), packed with theta0
    and the target / negative rows into ONE tensor (each method input costs ~0.5 us of binding)."""

    def __init__(self, model):
        super().__init__()
        check_lowerable(model.cfg)
        self.cfg = model.cfg
        head_layout(model)
        self.k = KernelConstants(model, catalog=False)
        with torch.no_grad():
            self.register_buffer("expand", kernel.sqrt_step_expansion(
                {k: v.detach() for k, v in model.log_lr.items()}).contiguous())

    def forward(self, theta0, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs):
        w = self.k.weights()
        s = kernel.scene_encoding(self.cfg, w, scene.reshape(1, -1))
        u0, seq = kernel.history_parts(self.cfg, w, hist_vecs, hist_mask.reshape(1, -1), s)
        scale = F.linear(torch.sqrt(kernel.step_gate(w, s)), self.expand).reshape(-1)
        tw = kernel.target_weights(w, target_mask.reshape(1, -1))
        packed = torch.cat([theta0, scale, kernel.head_input(u0, s, seq).reshape(-1), (u0 + seq).reshape(-1),
                            tw.reshape(-1), target_vecs.reshape(-1), neg_vecs.reshape(-1)])
        return packed, scale


class AdaptStepModule(nn.Module):
    """adapt.pte's training `forward`: the kernel's support loss at theta0 + scale * delta from `prepare`'s packed
    tensor (portable: delegating the tiny elementwise ops of the joint graph was slower)."""

    def __init__(self, model):
        super().__init__()
        names, shapes = head_layout(model)
        self.shapes = dict(zip(names, shapes))
        self.sizes = [math.prod(s) for s in shapes]
        P = sum(self.sizes)
        d, (h, X) = shapes[0][0], shapes[1]
        S, R = model.cfg.hist_len, int(model.negatives.numel())
        self.dims = dict(P=P, d=d, h=h, X=X, S=S, R=R)
        self.delta = nn.Parameter(torch.zeros(P))

    def packed_size(self) -> int:
        k = self.dims
        return 2 * k["P"] + k["X"] + k["d"] + k["S"] + (k["S"] + k["R"]) * k["d"]

    def forward(self, packed):
        k = self.dims
        P, d, X, S, R = k["P"], k["d"], k["X"], k["S"], k["R"]
        o = [0, P, 2 * P, 2 * P + X, 2 * P + X + d, 2 * P + X + d + S, 2 * P + X + d + S + S * d]
        theta0, scale = packed[o[0]:o[1]], packed[o[1]:o[2]]
        x, base, w = packed[o[2]:o[3]].view(X, 1), packed[o[3]:o[4]], packed[o[4]:o[5]]
        tv, nv = packed[o[5]:o[6]].view(S, d), packed[o[6]:o[6] + R * d].view(R, d)
        u, W1, b1, W2 = torch.split(theta0 + scale * self.delta, self.sizes)  # one split; its backward is one cat
        head = {"u": u, "W1": W1.view(self.shapes["W1"]), "b1": b1, "W2": W2.view(self.shapes["W2"])}
        z = kernel.apply_head(head, base, x, columns=True).view(d, 1)
        return (kernel.support_ce(torch.mm(tv, z).view(S), torch.mm(nv, z).view(R), w),)


def unrolled_adapt(model, steps: int, lr: float = 1.0):
    """packed -> theta (P,): `steps` Meta-SGD steps on AdaptStepModule's own loss, its gradient by torch.func.grad
    (the training program's math, not a second copy), delta starting at 0 and SGD(lr) as the training runtime does."""
    step = AdaptStepModule(model)
    P = step.dims["P"]

    def loss(delta, packed):
        return torch.func.functional_call(step, {"delta": delta}, (packed,))[0]

    grad = torch.func.grad(loss)

    def adapt(packed):
        delta = torch.zeros(P, dtype=packed.dtype)
        for _ in range(steps):
            delta = delta - lr * grad(delta, packed)
        return (packed[:P] + packed[P:2 * P] * delta,)  # theta0 + scale * delta (prepare's packing order)

    return adapt


def export_unrolled_adapt(model, packed: torch.Tensor, steps: int, lr: float = 1.0):
    """The unrolled adaptation as a torch.export program: make_fx traces the gradient into plain aten ops."""
    from torch.fx.experimental.proxy_tensor import make_fx

    gm = make_fx(unrolled_adapt(model, steps, lr))(packed)
    return torch.export.export(gm, (packed,), strict=False)


def adapt_example_inputs(model, table: torch.Tensor) -> tuple:
    head, hist_vecs, hist_mask, scene, *_ = score_example_inputs(model, table)
    neg = table[model.negatives]
    return head, hist_vecs, hist_mask, scene, hist_vecs.clone(), hist_mask.clone(), neg


def export_score_program(model, bias: torch.Tensor, table: torch.Tensor, k_max: int,
                         bias_dtype: torch.dtype = torch.float32, rank_method: bool = False) -> bytes:
    """score.pte bytes. With `rank_method`, forward also returns SCORE_CACHE_OUTPUTS and the program has
    RANK_METHOD (RankModule): both methods one XNNPACK call + top-k."""
    example = score_example_inputs(model, table)
    if not rank_method:
        mod = ScoreModule(model, bias, k_max, bias_dtype).eval()
        return lower(torch.export.export(mod, example, strict=False), "score", plan_inputs=False)
    mod = CachingScoreModule(model, bias, k_max, bias_dtype).eval()
    eps = {"forward": torch.export.export(mod, example, strict=False)}
    with torch.no_grad():
        _, _, z, off = mod(*example)
    eps[RANK_METHOD] = torch.export.export(RankModule(k_max).eval(), (z, off, example[-1]), strict=False)
    return lower(eps, "score", plan_inputs=False)


def export_adapt_program(model, table: torch.Tensor) -> bytes:
    """adapt.pte bytes: `prepare` (one XNNPACK call) + the joint forward-backward `forward`
    (executorch.extension.training) with `delta` inside, portable, + ADAPT_UNROLLED_METHOD, the same steps as one
    stateless method (portable) for runtimes with only the Module API (docs/decisions/native-adaptation.md)."""
    from torch.export.experimental import _export_forward_backward

    example = adapt_example_inputs(model, table)
    prep = AdaptPrepareModule(model).eval()
    prep_ep = torch.export.export(prep, example, strict=False)
    with torch.no_grad():
        packed, _ = prep(*example)
    step = AdaptStepModule(model)
    if packed.shape != (step.packed_size(),):
        raise ValueError(f"prepare packs {tuple(packed.shape)} floats, the step expects {step.packed_size()}")
    step_ep = _export_forward_backward(torch.export.export(step, (packed,), strict=False))

    def fold(edge):
        edge._edge_programs["forward"] = _fold_step(edge.exported_program("forward"))

    unrolled_ep = export_unrolled_adapt(model, packed, int(model.inner_steps))
    return lower({"forward": step_ep, ADAPT_PREPARE_METHOD: prep_ep, ADAPT_UNROLLED_METHOD: unrolled_ep},
                 {"forward": "portable", ADAPT_PREPARE_METHOD: "score", ADAPT_UNROLLED_METHOD: "portable"}, edit=fold)


def _fold_step(ep):
    """Drop the joint graph's alias_copy nodes (autograd's saved-tensor aliases: nothing mutates them, so the
    source serves) and fold constant-only nodes: 8 fewer instructions per step."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    gm = ep.graph_module
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and "alias_copy" in str(n.target):
            n.replace_all_uses_with(n.args[0])
            gm.graph.erase_node(n)
    gm.recompile()
    return constant_prop_pass(ep)
