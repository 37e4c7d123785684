"""The scoring kernel: the math of one request, written once, in the ops the exporter lowers.

score_i = z . v_i + b_i + trend_i, with
- z = u0 + seq + u + W2 tanh(W1 [u0; s; seq] + b1) (`user_vector`): s the scene encoding, u0 the prototype mixture
  the history picks (K = 0: a scene prior), seq a recency-weighted, transition-mapped summary of the history;
- trend_i = w(s) f(x_i), x = log1p(7-day count), with the new-item weight for items without an id (`trend_term`);
- the head {u, W1, b1, W2} is adapted by Meta-SGD on the support loss (`support_loss`, `step_gate`).

Every caller runs these functions: the sdk model (training and eager evaluation, under `torch.func`/`vmap`),
export's programs (score.pte, adapt.pte's `prepare`), the benchmarks' scorers. So the phone computes what the sdk
computes by construction; tests/export checks it for every `ModelConfig` switch.

The forms are the ones XNNPACK delegates (docs/decisions/delegable-kernel.md): sums as a Linear with a ones row,
products with runtime values as `F.linear(x, value)`, softplus as relu(x) + log(1 + exp(-|x|)), masks as
arithmetic. Each is exact for the contract's inputs (hist_mask in {0, 1}). Leading batch dims are allowed on the
history ((..., L, d) / (..., L)): the "next" support loss scores every prefix of the support in one call.
History layout: `hist_vecs` (L, d) is right-aligned, row L-1 the newest item, padding rows first with mask 0.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

EXCLUDED = -1e30  # score offset of an excluded item: it sinks below every real score and stays finite
HEAD_PARAM_NAMES = ("u", "W1", "b1", "W2")
MASK_FILL = 1e4  # recency logit of an empty history slot: exp(-1e4) is an exact 0 in float32


@dataclasses.dataclass
class Weights:
    """Every frozen tensor the kernel reads, in the form it reads them (a view of the model's parameters in the
    sdk, so gradients flow; baked buffers in export). Optional tensors are None when their switch is off."""

    scene_w: torch.Tensor  # (s, F) scene encoder
    scene_b: torch.Tensor
    prior_w: torch.Tensor  # (M, s) K = 0 prototype prior
    prior_b: torch.Tensor
    proto_att: torch.Tensor  # (M, d) exp(temperature) * unit prototypes: the history's attention keys
    proto_t: torch.Tensor  # (d, M) prototypes transposed: u0 = F.linear(mixture, proto_t)
    recency: torch.Tensor  # (L,) recency logits of the history slots
    transition: torch.Tensor  # (d, d) last items -> next item direction
    gate_w: torch.Tensor  # (1, s) trend gate
    gate_b: torch.Tensor
    lr_w: torch.Tensor  # (4, s) scene gate of the Meta-SGD step sizes
    lr_b: torch.Tensor
    ones_d: torch.Tensor  # (1, d): a sum over d as a delegable Linear
    ones_l: torch.Tensor  # (1, L): a sum over the history slots
    gate_new_w: torch.Tensor | None = None  # (1, s) new-item trend gate (ModelConfig.new_item_terms)
    gate_new_b: torch.Tensor | None = None
    knot_w: torch.Tensor | None = None  # (n + 1,) ModelConfig.trend_knots slopes
    k_off: torch.Tensor | None = None  # (1, L + 1) ModelConfig.trend_by_k gate offsets
    k_grid: torch.Tensor | None = None  # (L + 1,) 0..L
    trend_factor: torch.Tensor | None = None  # (N,) ModelConfig.trend_attr: 1 + c . attrs_i
    trend_sens: torch.Tensor | None = None  # (N,) ModelConfig.trend_item: per-item sensitivity a_i
    trend_aff: torch.Tensor | None = None  # () ModelConfig.trend_affinity beta

    @classmethod
    def of(cls, model) -> "Weights":
        """The kernel's view of a `MetaRecModel` (differentiable: the tensors are functions of its parameters)."""
        cfg = model.cfg
        d, L = cfg.dim, cfg.hist_len
        ones = model.prototypes.new_ones
        opt = {}
        if cfg.new_item_terms:
            opt.update(gate_new_w=model.trend_gate_new.weight, gate_new_b=model.trend_gate_new.bias)
        if cfg.trend_knots:
            opt["knot_w"] = model.trend_knot_w
        if cfg.trend_by_k:
            opt.update(k_off=model.trend_k_off.reshape(1, -1),
                       k_grid=torch.arange(L + 1, dtype=torch.float32))
        if cfg.trend_attr:
            opt["trend_factor"] = 1.0 + model.trend_attr_w(model.item_attrs)[:, 0]
        if cfg.trend_item:
            opt["trend_sens"] = model.trend_item_w
        if cfg.trend_affinity:
            opt["trend_aff"] = model.trend_aff
        return cls(scene_w=model.scene_enc[0].weight, scene_b=model.scene_enc[0].bias,
                   prior_w=model.proto_prior.weight, prior_b=model.proto_prior.bias,
                   proto_att=prototype_keys(model.prototypes, model.proto_temp), proto_t=model.prototypes.T,
                   recency=model.recency, transition=model.transition.weight,
                   gate_w=model.trend_gate.weight, gate_b=model.trend_gate.bias,
                   lr_w=model.lr_gate.weight, lr_b=model.lr_gate.bias, ones_d=ones(1, d), ones_l=ones(1, L), **opt)

    def tensors(self) -> dict:
        """name -> tensor of the fields that are set (what export bakes as buffers)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def prototype_keys(prototypes: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """(M, d) exp(temperature) * prototypes / |prototypes|: the history's unit mean dotted with them is the
    prototype mixture's logit."""
    return torch.exp(temperature) * F.normalize(prototypes, dim=-1, eps=1e-6)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus as relu(x) + log(1 + exp(-|x|)): torch's softplus decomposes into ops XNNPACK does not take."""
    return torch.relu(x) + torch.log(1.0 + torch.exp(-torch.abs(x)))


def _scalar(x: torch.Tensor) -> torch.Tensor:
    """Drop the last dim of a (..., 1) result: a scalar for one user in the sdk, (1,) in the (1, .) export rows."""
    return x.reshape(x.shape[:-1])


def _rowdot(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w @ x over the last dims, w (..., r, c) a runtime value: one delegable Linear with a non-constant weight
    when w is a matrix (XNNPACK's dynamic fully-connected), a batched matmul otherwise."""
    if w.dim() == 2:
        return F.linear(x, w)
    return torch.matmul(w, x[..., None])[..., 0]


def scene_encoding(cfg, w: Weights, scene: torch.Tensor) -> torch.Tensor:
    """s = tanh(W scene + b); the no-scene ablation zeroes the clock features first."""
    if not cfg.use_scene:
        scene = scene * 0.0
    return torch.tanh(F.linear(scene, w.scene_w, w.scene_b))


def _mixture(cfg, w: Weights, hist_t, hist_mask, s) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax over prototypes, [K > 0]): attention of the history's unit mean on the prototypes plus the scene
    prior; with no history the scene prior alone."""
    cnt = F.linear(hist_mask, w.ones_l)  # (..., 1)
    has = torch.clamp(cnt, max=1.0)  # = [K > 0] for a {0, 1} mask
    logits = F.linear(s, w.prior_w, w.prior_b)
    if cfg.use_prototypes:
        mean = _rowdot(hist_t, hist_mask) / torch.clamp(cnt, min=1.0)
        # clamp before the sqrt: the same value as F.normalize's, and no infinite gradient at an empty history
        unit = mean / torch.sqrt(torch.clamp(F.linear(mean * mean, w.ones_d), min=1e-12))
        logits = logits + has * F.linear(unit, w.proto_att)
    return torch.softmax(logits, -1), has


def prototype_mixture(cfg, w: Weights, hist_vecs, hist_mask, s) -> torch.Tensor:
    """(..., M) the prototype weights a history gets (u0 = weights @ prototypes)."""
    return _mixture(cfg, w, hist_vecs.transpose(-1, -2), hist_mask, s)[0]


def history_parts(cfg, w: Weights, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, s: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(u0, seq): the prototype mixture the history (or, with none, the scene) picks, and the sequence summary."""
    hist_t = hist_vecs.transpose(-1, -2)  # (..., d, L)
    mix, has = _mixture(cfg, w, hist_t, hist_mask, s)
    u0 = F.linear(mix, w.proto_t)
    if cfg.use_seq:
        att = torch.softmax(w.recency * hist_mask + (hist_mask - 1.0) * MASK_FILL, -1) * has
        seq = F.linear(_rowdot(hist_t, att), w.transition)
    else:
        seq = torch.zeros_like(u0)
    return u0, seq


def head_input(u0: torch.Tensor, s: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """x = [u0; s; seq], the adaptation head's input (the scene broadcast over the history's batch dims)."""
    if s.shape[:-1] != u0.shape[:-1]:  # no expand op when the shapes agree (it would be a portable copy)
        s = s.expand(u0.shape[:-1] + s.shape[-1:])
    return torch.cat([u0, s, seq], -1)


def apply_head(head: dict, base: torch.Tensor, x: torch.Tensor, columns: bool = False) -> torch.Tensor:
    """z = base + u + W2 tanh(W1 x + b1), base = u0 + seq. `columns`: x is one (X, 1) column and base (d,), the
    form of adapt.pte's joint graph, where mm without transposes runs ~1/3 fewer portable ops per step than F.linear
    (docs/decisions/delegable-kernel.md); otherwise rows (..., X), the form XNNPACK delegates."""
    if columns:
        hidden = torch.tanh(torch.mm(head["W1"], x).view(-1) + head["b1"])
        return base + head["u"] + torch.mm(head["W2"], hidden.view(-1, 1)).view(-1)
    return base + head["u"] + F.linear(torch.tanh(F.linear(x, head["W1"]) + head["b1"]), head["W2"])


def user_vector(cfg, w: Weights, head: dict, hist_vecs, hist_mask, scene) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, s): the user vector and the scene encoding it was computed with."""
    s = scene_encoding(cfg, w, scene)
    u0, seq = history_parts(cfg, w, hist_vecs, hist_mask, s)
    return apply_head(head, u0 + seq, head_input(u0, s, seq)), s


def trend_feature(cfg, w: Weights, trend: torch.Tensor) -> torch.Tensor:
    """f(x) of x = log1p(count): x itself, or the learned piecewise-linear response (ModelConfig.trend_knots)."""
    if not cfg.trend_knots:
        return trend
    a, n = w.knot_w, cfg.trend_knots
    f = a[0] * torch.clamp(trend, max=1.0)  # a_j = the slope on [j, j + 1), the last one beyond n
    for j in range(1, n):
        f = f + a[j] * torch.clamp(trend - float(j), 0.0, 1.0)
    return f + a[n] * torch.relu(trend - float(n))


def trend_weights(cfg, w: Weights, s: torch.Tensor, hist_mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_seen, w_new - w_seen): the trend weight of items with an id and what an id-less item adds to it."""
    g = g_new = F.linear(s, w.gate_w, w.gate_b)
    if cfg.trend_by_k:
        if hist_mask is None:
            raise ValueError("ModelConfig.trend_by_k: the trend weight needs hist_mask")
        k = F.linear(hist_mask, w.ones_l)
        g = g + F.linear(torch.relu(1.0 - torch.abs(k - w.k_grid)), w.k_off)  # k_off[K], exact at integer K
        g_new = g if cfg.trend_by_k_new else g_new
    ws = softplus(g)
    if not cfg.new_item_terms:
        return _scalar(ws), _scalar(torch.zeros_like(ws))
    return _scalar(ws), _scalar(softplus(g_new + F.linear(s, w.gate_new_w, w.gate_new_b)) - ws)


def history_scale(cfg, w: Weights, hist_mask, serving: bool) -> torch.Tensor | None:
    """1 + (trend_hist_scale - 1) [K >= 1], the serving calibration of the trend for a user with history; None when
    it does not apply (training, a scale of 1, or no hist_mask: a user without history)."""
    if not serving or cfg.trend_hist_scale == 1.0 or hist_mask is None:
        return None
    k = _scalar(F.linear(hist_mask, w.ones_l))
    return 1.0 + (cfg.trend_hist_scale - 1.0) * torch.clamp(k, 0.0, 1.0)


def trend_gain(cfg, w: Weights, s, hist_mask=None, serving: bool = False) -> torch.Tensor:
    """The trend weight of an item with an id, with the serving calibration: what a large-catalog scorer without
    new items multiplies the trend by (positive: 0 only by float underflow)."""
    ws, _ = trend_weights(cfg, w, s, hist_mask)
    sc = history_scale(cfg, w, hist_mask, serving)
    return ws if sc is None else ws * sc


def trend_gains(cfg, w: Weights, s, hist_mask=None, new_offset: float = 0.0, serving: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(gain of an item with an id, gain of an id-less item): `trend_term` = gain * trend for a model without
    per-item trend terms (no knots, item sensitivity or attribute factor; `per_item_trend` says which have them).
    The large-catalog scorer multiplies its one per-item input by these (export/large.py)."""
    if not cfg.use_trend:
        z = torch.zeros_like(F.linear(s, w.gate_w, w.gate_b))
        return _scalar(z), _scalar(z)
    ws, dw = _served_weights(cfg, w, s, hist_mask, new_offset, serving)
    return ws, ws + dw


def _served_weights(cfg, w: Weights, s, hist_mask, new_offset: float, serving: bool):
    """(w_seen, w_new - w_seen) with the new-item offset and the serving calibration applied."""
    ws, dw = trend_weights(cfg, w, s, hist_mask)
    if cfg.new_item_terms:
        dw = dw + new_offset
    sc = history_scale(cfg, w, hist_mask, serving)
    if sc is not None:
        ws, dw = ws * sc, dw * sc
    return ws, dw


def per_item_trend(cfg) -> list[str]:
    """The switches that make the trend term more than a gain times the trend (what `trend_gains` cannot say)."""
    names = ("trend_knots", "trend_item", "trend_attr", "trend_affinity")
    return [n for n in names if getattr(cfg, n)] if cfg.use_trend else []


def trend_term(cfg, w: Weights, s, trend, hist_mask=None, item_new=None, new_offset: float = 0.0,
               serving: bool = False) -> torch.Tensor:
    """(N,) the trend part of the score. `item_new` (N,) is 1 for items scored without an id (new items, or ids
    dropped in training; None: no such item), which take the new-item weight plus `new_offset`. `serving` applies
    ModelConfig.trend_hist_scale (needs hist_mask; None means a user without history)."""
    if not cfg.use_trend:
        return torch.zeros_like(trend)
    ws, dw = _served_weights(cfg, w, s, hist_mask, new_offset, serving)
    f = trend_feature(cfg, w, trend)
    if w.trend_factor is not None:  # an item-level factor on both weights: new items have attributes too
        f = f * w.trend_factor
    if w.trend_sens is not None:  # id memory: an item scored without its id has no sensitivity
        sens = w.trend_sens if item_new is None else w.trend_sens * (1.0 - item_new)
        per = ws * (1.0 + sens)
    else:
        per = ws
    if item_new is None or not cfg.new_item_terms:
        return per * f
    return (per + dw * item_new) * f


def scores(cfg, w: Weights, head: dict, hist_vecs, hist_mask, scene, trend, table, bias, item_new=None,
           new_offset: float = 0.0, serving: bool = False, exclude=None) -> torch.Tensor:
    """(N,) scores of every item (`exclude` (N,) in {0, 1}: those items sink by EXCLUDED)."""
    z, s = user_vector(cfg, w, head, hist_vecs, hist_mask, scene)
    dots = F.linear(z, table)
    out = dots + offset(cfg, w, s, trend, bias, hist_mask, item_new, new_offset, serving, exclude)
    if cfg.trend_affinity and cfg.use_trend:
        out = out + w.trend_aff * trend_feature(cfg, w, trend) * dots
    return out


def offset(cfg, w: Weights, s, trend, bias, hist_mask=None, item_new=None, new_offset: float = 0.0,
           serving: bool = False, exclude=None) -> torch.Tensor:
    """(N,) every score term but the table product: item bias + trend term (+ exclude * EXCLUDED)."""
    out = bias
    if cfg.use_trend:
        out = out + trend_term(cfg, w, s, trend, hist_mask, item_new, new_offset, serving)
    return out if exclude is None else out + exclude * EXCLUDED


def step_gate(w: Weights, s: torch.Tensor) -> torch.Tensor:
    """(..., 4) the scene's factor on each head tensor's step sizes, in (0, 2) (1 at init)."""
    return 2.0 * torch.sigmoid(F.linear(s, w.lr_w, w.lr_b))


def step_sizes(log_lr: dict, gate: torch.Tensor) -> dict:
    """Meta-SGD per-parameter rates: exp(log_lr[k]) times the scene gate of head tensor k."""
    return {k: torch.exp(log_lr[k]) * gate[..., j] for j, k in enumerate(HEAD_PARAM_NAMES)}


def sqrt_step_expansion(log_lr: dict) -> torch.Tensor:
    """(P, 4) E with E[p, j] = sqrt(exp(log_lr[p])) if p is in head tensor j: sqrt(step sizes) = F.linear(sqrt(gate),
    E) in the flattened head's order, one delegable Linear (the per-parameter factor is a baked constant)."""
    sizes = [log_lr[k].numel() for k in HEAD_PARAM_NAMES]
    sqrt_lr = torch.cat([torch.exp(0.5 * log_lr[k]).reshape(-1) for k in HEAD_PARAM_NAMES])
    group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    expand = torch.zeros(sum(sizes), len(sizes))
    expand[torch.arange(sum(sizes)), group] = sqrt_lr
    return expand


def target_weights(w: Weights, target_mask: torch.Tensor) -> torch.Tensor:
    """mask / max(1, #targets): the support loss is the mean over valid targets (the manifest's S = L targets)."""
    return target_mask / torch.clamp(F.linear(target_mask, w.ones_l), min=1.0)


def support_ce(pos: torch.Tensor, neg: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_j weight_j (logsumexp([pos_j, neg_j]) - pos_j), written as softplus(logsumexp(neg) - pos_j): no
    (S, R + 1) matrix, and a joint graph ExecuTorch's training runtime runs. neg is (R,) or one row per target."""
    if neg.dim() == 1:  # one negative row for every target: scalar reductions, the fewest ops in a joint graph
        top = neg.detach().amax()  # a stable shift; its gradient cancels
        lse_neg = torch.log(torch.exp(neg - top).sum()) + top
    else:
        top = neg.detach().amax(-1, keepdim=True)
        lse_neg = torch.log(torch.exp(neg - top).sum(-1)) + _scalar(top)
    return (weight * F.softplus(lse_neg - pos)).sum(-1)


def support_loss(cfg, w: Weights, head: dict, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs,
                 target_bias=None, neg_bias=None) -> torch.Tensor:
    """The inner loss: each target item against the fixed negatives (softmax CE), mean over valid targets.

    support_target "all": every target is scored by the user vector of the whole history. "next": target row j
    (right-aligned like the history) is scored by the user vector of the history rows before j only; rows j >= L
    see the whole history. With `inner_bias` the logits add the rows' item biases (required then)."""
    if cfg.inner_bias and (target_bias is None or neg_bias is None):
        raise ValueError("ModelConfig.inner_bias: support_loss needs target_bias and neg_bias")
    if cfg.support_target == "next":
        L, S = hist_vecs.shape[0], target_vecs.shape[0]
        # context of target j = history rows i - (L - min(j, L)), right-aligned; indices < 0 are padding
        src = torch.arange(L)[None, :] - L + torch.arange(S).clamp(max=L)[:, None]
        valid = (src >= 0).to(hist_vecs.dtype)
        src = src.clamp(min=0)
        z, _ = user_vector(cfg, w, head, hist_vecs[src] * valid[..., None], hist_mask[src] * valid, scene)
        pos, neg = (target_vecs * z).sum(-1), z @ neg_vecs.T  # (S,), (S, R)
    else:
        z, _ = user_vector(cfg, w, head, hist_vecs, hist_mask, scene)
        pos, neg = target_vecs @ z, neg_vecs @ z  # (S,), (R,)
    if cfg.inner_bias:
        pos, neg = pos + target_bias, neg + neg_bias
    # the mean over valid targets; not target_weights (its ones row is L wide, Reptile's targets may be more)
    weight = target_mask / target_mask.sum().clamp(min=1.0)
    return support_ce(pos, neg, weight)


def head_shapes(cfg) -> dict:
    """Shapes of the head tensors, in flattening order: P = d + h (2d + s) + h + d h."""
    d, h, s = cfg.dim, cfg.head_hidden, cfg.scene_hidden
    return {"u": (d,), "W1": (h, 2 * d + s), "b1": (h,), "W2": (d, h)}


def unflatten_head(flat: torch.Tensor, shapes: dict) -> dict:
    """The flat (P,) head as the dict `apply_head` takes (views, in HEAD_PARAM_NAMES order)."""
    out, o = {}, 0
    for k in HEAD_PARAM_NAMES:
        n = math.prod(shapes[k])
        out[k] = flat[..., o:o + n].reshape(flat.shape[:-1] + tuple(shapes[k]))
        o += n
    return out
