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
scale = sqrt(step_sizes(scene)) from the learned Meta-SGD rates and the scene gate; each forward_backward + SGD(lr=1)
on delta is then exactly one Meta-SGD step on theta. Two methods:
- `prepare` (inference, stateless, one XNNPACK call: see export_adapt_program): everything of the support loss that
  the head does not change, once per adaptation: the scene encoding, the prototype mixture u0 and the sequence
  summary (x = [u0; s; seq] and base = u0 + seq, by score.pte's UserEncoder; AdaptPrepareModule derives the same
  values from the sdk's own `user_vector` and tests hold them equal), the step-size scale, the target weights; packed with
  theta0 and the target/negative rows into ONE tensor `packed`, because every input of a method call costs ~0.5 us
  of binding on top of a ~4 us call (measured: 1 / 4 / 7 inputs 4.4 / 6.0 / 7.4 us for a one-op program).
- `forward` (the training method): theta = theta0 + scale * delta; z = base + u + W2 tanh(W1 x + b1); support
  and negative dot products; softmax CE -- 63 portable instructions forward + backward (was 161 per step when the
  whole user vector was recomputed in every step). The model's constants live only in `prepare`.
The CE is re-expressed, numerically equivalently, as softplus(logsumexp(neg) - pos) per target (= logsumexp over
[pos, neg] - pos): no (S, R+1) matrix and no slicing in the joint graph. Measured on the phone profile bundle
(d=16, P=928, 1 thread, load 4; `metarec bench --only latency --runs 1000`): whole adaptation p50 244 -> 104 us
(prepare ~23 us, each step ~17 us of which ~4.4 us is the method call itself, SGD step ~1 us).
XNNPACK on the joint graph: delegating its elementwise ops kept parity (delta stays a runtime parameter) but was
slower (22.4 vs 19.5 us per step: 14 delegate calls for tiny tensors), so `forward` stays portable.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from metarec.runtime.manifest import ADAPT_PREPARE_METHOD, RANK_METHOD  # the bundle contract owns program names

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


def _rowdot(w, x):
    """w @ x as a (1, rows) row, w (rows, c) a runtime value, x (1, c): a Linear with a non-constant weight, which
    `score_partitioner` delegates (XNNPACK's dynamic fully-connected). Was (w * x) summed by a Linear with a
    constant ones row (2 ops each): 24.7 -> 23.8 us per score call (ML-100K, exec only, p50)."""
    return F.linear(x.reshape(1, -1), w)


class UserEncoder(nn.Module):
    """The head-free part of the model's user vector, (u0, s, seq), in ops XNNPACK delegates (the rewrites are listed
    in ScoreModule's docstring). Shared by score.pte and adapt.pte's `prepare`, so both compute it the same way."""

    def __init__(self, model):
        super().__init__()
        cfg = self.cfg = model.cfg
        d, L = cfg.dim, cfg.hist_len

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
            for n, width in (("ones_d", d), ("ones_l", L)):
                const(n, torch.ones(1, width))

    def forward(self, hist_vecs, hist_mask, scene):
        """(u0, s, seq), each (1, .): the prototype mixture, the scene encoding, the sequence summary."""
        cfg = self.cfg
        L = cfg.hist_len
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
            mean = _rowdot(hist_t, m) / torch.clamp(cnt, min=1.0)
            unit = mean / torch.clamp(torch.sqrt(F.linear(mean * mean, self.ones_d)), min=1e-6)
            logits = logits + has * F.linear(unit, self.proto_att)
        u0 = F.linear(torch.softmax(logits, -1), self.proto_t)
        if cfg.use_seq:
            w = torch.softmax(self.recency * m + (m - 1.0) * 1e4, -1) * has
            seq = F.linear(_rowdot(hist_t, w), self.transition)
        else:
            seq = torch.zeros_like(u0)
        return u0, s, seq


class ScoreModule(nn.Module):
    """score.pte: `MetaRecModel.score_from_vectors` re-expressed in ops XNNPACK delegates, excluded items sunk, top-k.

    Same function as the model (tests/export/test_score_module.py checks it against `score_from_vectors` on every
    ablation switch, K=0..L), written so that everything but top-k is ONE XNNPACK call. History, measured on
    the default ML-100K bundle (N=1,682, d=16, 1 thread): the straight trace of `user_vector` lowered to 10
    partitions + 35 portable kernels, 59.7 us (p50 of Method.execute, load ~2); the rewrite below with the stock
    partitioner to 2 partitions + a portable table mm and topk, 43.3 us; with `score_partitioner` (dynamic
    fully-connected for the table and head products) and k_max=20, 1 partition + topk. Where the time goes now
    (p50 of bound executes on an idle core, programs cut after each stage):
    call floor with 7 inputs 2.8 us, user vector ~8 us, table product + bias ~6 us, trend term ~3 us, exclusion
    0.3 us, topk ~4 us (k=10; k=100 ~6 us more: the portable kernel's cost grows with k). With a rank method
    (CachingScoreModule + RankModule, export's default) the runtime skips the user vector and the trend term on
    repeat calls: 14.2 us bound for `rank` vs 25.4 for forward (`metarec bench --only latency`, latency.md).
    Rewrites (each exact for the contract's inputs, hist_mask in {0, 1}):
    - F.normalize(x, eps) -> x / clamp(sqrt(sum(x*x)), eps), the sum as a Linear with a constant ones row;
      F.normalize(prototypes) * exp(proto_temp) is folded into one constant;
    - masked_fill(mask <= 0, -1e4) -> recency * mask + (mask - 1) * 1e4; has = (count > 0) -> clamp(count, max=1);
    - products with the head and with the history (runtime values, not constant weights) -> F.linear with the
      value as the weight, delegated as XNNPACK's dynamic fully-connected by `score_partitioner` (first written as a
      broadcast multiply + a Linear with a constant ones row, before that flag was used; a dynamic bmm split the
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
        d, h, sh = cfg.dim, cfg.head_hidden, cfg.scene_hidden
        sizes = [math.prod(s) for s in self.shapes]
        if tuple(self.names) != ("u", "W1", "b1", "W2") or sizes != [d, h * (2 * d + sh), h, d * h]:
            raise ValueError(f"ScoreModule knows the head (u, W1, b1, W2); got {self.names} {self.shapes}")

        self.enc = UserEncoder(model)
        on = [k for k in ("trend_knots", "trend_item", "trend_affinity") if getattr(cfg, k, 0)]
        if on:  # sdk-only experiments (wt-ml4): score.pte would silently drop them
            raise ValueError(f"ScoreModule does not implement ModelConfig {on} yet")

        def const(name, t):
            self.register_buffer(name, t.detach().to(torch.float32).clone().contiguous())

        with torch.no_grad():
            const("gate_w", model.trend_gate.weight)
            const("gate_b", model.trend_gate.bias)
            # new items (sdk: item_known = 0) weigh the trend by their own learned gate (model.trend_weights)
            self.register_buffer("item_new", None)
            self.new_offset = 0.0
            new = 1.0 - model.item_known
            if cfg.new_item_terms and bool((new > 0).any()):
                const("gate_new_w", model.trend_gate_new.weight)
                const("gate_new_b", model.trend_gate_new.bias)
                const("item_new", new)
                self.new_offset = float(cfg.new_trend_offset)
            # ModelConfig.trend_attr: the (N,) factor 1 + c . attrs_i is a catalog constant
            self.register_buffer("trend_factor", None)
            if cfg.trend_attr:
                const("trend_factor", 1.0 + model.trend_attr_w(model.item_attrs)[:, 0])
            # ModelConfig.trend_hist_scale: K = ones . hist_mask as a Linear (XNNPACK takes it; a sum would not be)
            self.register_buffer("k_ones", None)
            if cfg.trend_hist_scale != 1.0:
                const("k_ones", torch.ones(1, cfg.hist_len))
            # ModelConfig.trend_by_k: offset k_off[K], K = the history count, picked by a triangular indicator
            # relu(1 - |K - j|) (exact at integer K; no data-dependent indexing in the graph)
            self.register_buffer("k_off", None)
            if cfg.trend_by_k:
                const("k_off", model.trend_k_off.reshape(1, -1))
                const("k_grid", torch.arange(cfg.hist_len + 1, dtype=torch.float32).reshape(1, -1))

    def user_vector(self, head, hist_vecs, hist_mask, scene):
        """(z (1, d), scene encoding (1, s)) = the model's user_vector, in delegable ops (class docstring)."""
        cfg = self.cfg
        d, h, sh = cfg.dim, cfg.head_hidden, cfg.scene_hidden
        u0, s, seq = self.enc(hist_vecs, hist_mask, scene)
        x = torch.cat([u0, s, seq], -1)
        o = 0
        u = head[o:o + d].reshape(1, d)
        o += d
        w1 = head[o:o + h * (2 * d + sh)].reshape(h, 2 * d + sh)
        o += h * (2 * d + sh)
        b1 = head[o:o + h].reshape(1, h)
        o += h
        w2 = head[o:o + d * h].reshape(d, h)
        hid = torch.tanh(_rowdot(w1, x) + b1)
        return u0 + seq + u + _rowdot(w2, hid), s

    @staticmethod
    def _softplus(g):
        """softplus as relu(x) + log(1 + exp(-|x|)): delegable (torch's softplus decomposes into portable ops)."""
        return torch.relu(g) + torch.log(1.0 + torch.exp(-torch.abs(g)))

    def trend_term(self, s, trend, hist_mask=None):
        """(N,) = model.trend_term: w(s) * trend, plus (w_new(s) - w(s) + offset) * trend for new items (no fit
        event, `item_new` = 1, a baked catalog constant). A catalog with no new item skips the second pass.
        `hist_mask` is needed under ModelConfig.trend_by_k."""
        g = g_new = F.linear(s, self.gate_w, self.gate_b)
        if self.k_off is not None:
            k = hist_mask.sum().reshape(1, 1)
            g = g + (self.k_off * torch.relu(1.0 - torch.abs(k - self.k_grid))).sum(-1, keepdim=True)
            g_new = g if self.cfg.trend_by_k_new else g_new
        if self.trend_factor is not None:
            trend = trend * self.trend_factor
        w = self._softplus(g).reshape(1)
        # ModelConfig.trend_hist_scale (serving calibration): x scale once the user has history; folded into the
        # scalar weights, so it costs no pass over the catalog
        sc = None
        if self.cfg.trend_hist_scale != 1.0:
            if hist_mask is None:
                raise ValueError("ModelConfig.trend_hist_scale: the trend term needs hist_mask")
            k = F.linear(hist_mask.reshape(1, -1), self.k_ones).reshape(1)
            sc = 1.0 + (self.cfg.trend_hist_scale - 1.0) * torch.clamp(k, 0.0, 1.0)
        if self.item_new is None:
            return (w if sc is None else w * sc) * trend
        dw = self._softplus(g_new + F.linear(s, self.gate_new_w, self.gate_new_b)).reshape(1) - w + self.new_offset
        if sc is not None:
            w, dw = w * sc, dw * sc
        return (w + dw * self.item_new) * trend

    def offset(self, s, trend, exclude, hist_mask=None):
        """(N,): every score term but the table product: item bias + trend term + exclude * -1e30."""
        out = self.bias
        if self.cfg.use_trend:
            out = out + self.trend_term(s, trend, hist_mask)
        return out + exclude * EXCLUDED

    def scores(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        """(N,) = model.score_from_vectors + exclude * -1e30 (excluded items sink below every real score)."""
        z, s = self.user_vector(head, hist_vecs, hist_mask, scene)
        return F.linear(z, table).reshape(-1) + self.offset(s, trend, exclude, hist_mask)

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        v, i = torch.topk(self.scores(head, hist_vecs, hist_mask, scene, trend, exclude, table), self.k_max)
        return v, i


class CachingScoreModule(ScoreModule):
    """score.pte's forward when the program has a rank method: ScoreModule's top-k plus what `rank` needs to redo
    it without the user vector, (user_vec (1, d), offset (N,)). Same scores, computed as in ScoreModule."""

    def forward(self, head, hist_vecs, hist_mask, scene, trend, exclude, table):
        z, s = self.user_vector(head, hist_vecs, hist_mask, scene)
        off = self.offset(s, trend, exclude, hist_mask)
        v, i = torch.topk(F.linear(z, table).reshape(-1) + off, self.k_max)
        return v, i, z, off


class RankModule(nn.Module):
    """score.pte's `rank` method: top-k of table . user_vec + offset, from forward's cached outputs.

    Between two calls of one user nothing in the user vector changes unless the head, history, scene or trend pack
    did (the scene is constant for a whole hour, runtime_py/scene.py), so the runtime keeps forward's user_vec and
    offset per user and runs only this: the table product, one add and top-k, no constants (the user vector was
    ~8 us of the 25 us program, export/programs.py ScoreModule). The same ops as CachingScoreModule's last
    line, so the same kernels give the same scores (tests/export check equality)."""

    def __init__(self, k_max: int):
        super().__init__()
        self.k_max = k_max

    def forward(self, user_vec, offset, table):
        v, i = torch.topk(F.linear(user_vec, table).reshape(-1) + offset, self.k_max)
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


class _CaptureW1:
    """Stands in for head["W1"] in the sdk's `user_vector`: records the head's input x = [u0; s; seq] and returns
    zeros, so with u = 0 and W2 = 0 the call returns exactly base = u0 + seq. The head-free part of the user vector
    thus comes from the sdk's own code (no re-implementation to drift when the model changes)."""

    def __init__(self, hidden: int):
        self.hidden, self.x = hidden, None

    def __matmul__(self, x):  # W1 @ x
        self.x = x
        return x.new_zeros(x.shape[1:] + (self.hidden,)) if x.dim() > 1 else x.new_zeros(self.hidden)

    @property
    def T(self):  # x @ W1.T (the batched form)
        return self

    def __rmatmul__(self, x):
        self.x = x
        return x.new_zeros(x.shape[:-1] + (self.hidden,))


def _check_head_layout(names, shapes) -> None:
    """The step program hard-codes the head z = base + u + W2 tanh(W1 x + b1) (sdk/model.py)."""
    if tuple(names) != ("u", "W1", "b1", "W2") or len(shapes[1]) != 2 or shapes[3] != (shapes[0][0], shapes[1][0]) \
            or shapes[2] != (shapes[1][0],):
        raise ValueError(f"adapt program expects the head (u, W1, b1, W2) of sdk/model.py, got {names} {shapes}")


class AdaptPrepareModule(nn.Module):
    """adapt.pte's `prepare`: contract inputs -> (packed, scale), once per adaptation (see the module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.names, self.shapes = head_layout(model)
        _check_head_layout(self.names, self.shapes)
        self.model = frozen_copy(model)
        # step_sizes(scene)[k] = exp(log_lr[k]) * gate_k(scene), so sqrt of it = exp(log_lr[k] / 2) * sqrt(gate_k):
        # the (P,) factor is one baked constant (computing exp(log_lr) in the program stored it twice, once in the
        # XNNPACK blob: +2.5 KB), the scene part is 4 scalars. Equal to sqrt(step_sizes) up to float rounding.
        self.register_buffer("sqrt_lr", torch.cat([torch.exp(0.5 * model.log_lr[k].detach()).reshape(-1)
                                                   for k in self.names]).clone())
        self.sizes = [math.prod(s) for s in self.shapes]

    def scale(self, scene):
        gate = 2.0 * torch.sigmoid(self.model.lr_gate(self.model.encode_scene(scene)))  # = step_sizes' gate
        per = torch.cat([torch.sqrt(gate[j]).expand(n) for j, n in enumerate(self.sizes)])
        return self.sqrt_lr * per

    def forward(self, theta0, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs):
        m = self.model
        cap = _CaptureW1(self.shapes[1][0])
        zero = {k: torch.zeros(s) for k, s in zip(self.names, self.shapes)}
        zero["W1"] = cap
        base = m.user_vector(zero, hist_vecs, hist_mask, scene)  # u0 + seq (+ 0 + 0: exact)
        scale = self.scale(scene).detach()
        w = target_mask / target_mask.sum().clamp(min=1.0)  # mean over valid targets, as support_loss
        packed = torch.cat([theta0, scale, cap.x, base, w, target_vecs.reshape(-1), neg_vecs.reshape(-1)])
        return packed, scale


class AdaptPrepareXnn(nn.Module):
    """`prepare` as export writes it: AdaptPrepareModule's outputs (tests/export check them equal) computed by the
    delegable UserEncoder that score.pte uses, so the whole method is one XNNPACK call under `score_partitioner`.
    The sdk-traced AdaptPrepareModule ran 92 portable instructions (~24 us per adaptation on ML-100K); the scale
    expansion is one Linear: scale = sqrt(gate(s)) @ E.T, E[p, j] = sqrt(exp(log_lr[p])) if p is in head tensor j."""

    def __init__(self, model):
        super().__init__()
        self.names, self.shapes = head_layout(model)
        _check_head_layout(self.names, self.shapes)
        self.enc = UserEncoder(model)
        sizes = [math.prod(sh) for sh in self.shapes]
        with torch.no_grad():
            sqrt_lr = torch.cat([torch.exp(0.5 * model.log_lr[k].detach()).reshape(-1) for k in self.names])
            group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            expand = torch.zeros(sum(sizes), len(sizes))
            expand[torch.arange(sum(sizes)), group] = sqrt_lr
            self.register_buffer("expand", expand.contiguous())
            self.register_buffer("lr_w", model.lr_gate.weight.detach().clone())
            self.register_buffer("lr_b", model.lr_gate.bias.detach().clone())
            self.register_buffer("ones_s", torch.ones(1, model.cfg.hist_len))

    def forward(self, theta0, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs):
        u0, s, seq = self.enc(hist_vecs, hist_mask, scene)
        gate = 2.0 * torch.sigmoid(F.linear(s, self.lr_w, self.lr_b))
        scale = F.linear(torch.sqrt(gate), self.expand).reshape(-1)
        tm = target_mask.reshape(1, -1)
        w = tm / torch.clamp(F.linear(tm, self.ones_s), min=1.0)  # S = hist_len targets (the manifest's S)
        packed = torch.cat([theta0, scale, torch.cat([u0, s, seq], -1).reshape(-1), (u0 + seq).reshape(-1),
                            w.reshape(-1), target_vecs.reshape(-1), neg_vecs.reshape(-1)])
        return packed, scale


class AdaptStepModule(nn.Module):
    """adapt.pte's training `forward`: support loss at theta0 + scale * delta from `prepare`'s packed tensor."""

    def __init__(self, model):
        super().__init__()
        self.names, self.shapes = head_layout(model)
        _check_head_layout(self.names, self.shapes)
        self.sizes = [math.prod(s) for s in self.shapes]
        P = sum(self.sizes)
        d, (h, X) = self.shapes[0][0], self.shapes[1]
        S, R = model.cfg.hist_len, int(model.negatives.numel())
        self.dims = dict(P=P, d=d, h=h, X=X, S=S, R=R)
        self.delta = nn.Parameter(torch.zeros(P))

    def packed_size(self) -> int:
        k = self.dims
        return 2 * k["P"] + k["X"] + k["d"] + k["S"] + (k["S"] + k["R"]) * k["d"]

    def forward(self, packed):
        k = self.dims
        P, d, h, X, S, R = k["P"], k["d"], k["h"], k["X"], k["S"], k["R"]
        o = [0, P, 2 * P, 2 * P + X, 2 * P + X + d, 2 * P + X + d + S, 2 * P + X + d + S + S * d]
        theta0, scale = packed[o[0]:o[1]], packed[o[1]:o[2]]
        x, base, w = packed[o[2]:o[3]].view(X, 1), packed[o[3]:o[4]], packed[o[4]:o[5]]
        tv, nv = packed[o[5]:o[6]].view(S, d), packed[o[6]:o[6] + R * d].view(R, d)
        theta = theta0 + scale * self.delta
        u, W1, b1, W2 = torch.split(theta, self.sizes)  # one split op; its backward is one cat
        hidden = torch.tanh(torch.mm(W1.view(h, X), x).view(h) + b1)
        z = (base + u + torch.mm(W2.view(d, h), hidden.view(h, 1)).view(d)).view(d, 1)
        pos, neg = torch.mm(tv, z).view(S), torch.mm(nv, z).view(R)
        top = neg.detach().amax()  # a shift for a stable logsumexp; its gradient cancels, so it is detached
        lse_neg = torch.log(torch.exp(neg - top).sum()) + top
        # logsumexp([pos_i, neg]) - pos_i == softplus(logsumexp(neg) - pos_i)
        return ((w * F.softplus(lse_neg - pos)).sum(),)


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
                         bias_dtype: torch.dtype = torch.float32, rank_method: bool = False) -> bytes:
    """score.pte bytes: torch.export -> XNNPACK partitioner -> ExecuTorch. With `rank_method`, forward also returns
    SCORE_CACHE_OUTPUTS and the program has RANK_METHOD (RankModule): both methods one XNNPACK call + top-k."""
    from executorch.exir import to_edge_transform_and_lower

    example = score_example_inputs(model, table)
    if not rank_method:
        mod = ScoreModule(model, bias, k_max, bias_dtype).eval()
        ep = torch.export.export(mod, example, strict=False)
        return to_edge_transform_and_lower(ep, partitioner=[score_partitioner()]).to_executorch(_unplanned_inputs()).buffer
    mod = CachingScoreModule(model, bias, k_max, bias_dtype).eval()
    eps = {"forward": torch.export.export(mod, example, strict=False)}
    with torch.no_grad():
        _, _, z, off = mod(*example)
    eps[RANK_METHOD] = torch.export.export(RankModule(k_max).eval(), (z, off, example[-1]), strict=False)
    edge = to_edge_transform_and_lower(eps, partitioner={n: [score_partitioner()] for n in eps})
    return edge.to_executorch(_unplanned_inputs()).buffer


def score_partitioner():
    """XNNPACK, with fp32 Linears whose weight is a runtime input delegated too: the table product
    `F.linear(z, table)` then runs as XNNPACK's dynamic fully-connected instead of a portable permute + mm, and the
    whole score graph but top-k is ONE delegate call. Measured on the default ML-100K bundle (1 thread, p50 of
    3,000 bound executes on an idle core, this machine): 32.1 -> 29.7 us at k_max=100 (2 XNNPACK calls + portable
    mm -> 1 call), scores within 5e-7 of the portable product, same top-k."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)


def export_adapt_program(model, table: torch.Tensor, xnnpack_prepare: bool = True) -> bytes:
    """adapt.pte bytes: `prepare` + the joint forward-backward `forward` (executorch.extension.training) with `delta`
    inside. `prepare` is AdaptPrepareXnn lowered as ONE XNNPACK call (`score_partitioner`): on the default ML-100K
    bundle 16.8 vs 24.1 us per call and 13,577 vs 15,422 B after zlib against the sdk-traced AdaptPrepareModule
    run portable (`xnnpack_prepare=False`; 92 instructions). An earlier XNNPACK lowering of the sdk-traced module
    cut it into 7 partitions and was larger and no faster. The step stays portable (see the module docstring)."""
    from executorch.exir import to_edge_transform_and_lower
    from torch.export.experimental import _export_forward_backward

    example = adapt_example_inputs(model, table)
    prep = (AdaptPrepareXnn(model) if xnnpack_prepare else AdaptPrepareModule(model)).eval()
    prep_ep = torch.export.export(prep, example, strict=False)
    with torch.no_grad():
        packed, _ = prep(*example)
    step = AdaptStepModule(model)
    if packed.shape != (step.packed_size(),):
        raise ValueError(f"prepare packs {tuple(packed.shape)} floats, the step expects {step.packed_size()}")
    step_ep = _export_forward_backward(torch.export.export(step, (packed,), strict=False))
    edge = to_edge_transform_and_lower({"forward": step_ep, ADAPT_PREPARE_METHOD: prep_ep},
                                       partitioner={"forward": [], ADAPT_PREPARE_METHOD: [score_partitioner()] if xnnpack_prepare else []})
    edge._edge_programs["forward"] = _fold_step(edge.exported_program("forward"))
    return edge.to_executorch().buffer


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
