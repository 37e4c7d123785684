"""The meta-learned cold-start model (shared/ARCHITECTURE.md, "The model").

score_i = v_i . z + b_i + g(scene) * log1p(trend_i), where
- v_i (the item table) = id embedding + attribute encoder(genres, year), so a new item has a vector;
- z = u0 + seq + head.u + W2 tanh(W1 [u0; s; seq] + b1): u0 is a soft mixture of M interest prototypes picked by
  the history (K=0: a scene-conditioned prior mixture), seq a recency-weighted, transition-mapped summary of the
  last L items, s the scene encoding;
- the head {u, W1, b1, W2} (~1.7K floats) is the only part the phone trains.

Everything the phone computes is a function of (table rows, bias, frozen scene/prototype/sequence nets, head), so
export can bake it: see `score_from_vectors`, `support_loss`, `step_sizes`, `head_init`.
History layout (binding for export/runtime): `hist_vecs` is (L, d), right-aligned: row L-1 is the most recent
support item, padding rows come first and have hist_mask 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarec.runtime.config import VersionedConfig

MODEL_CONFIG_VERSION = 1
SCENE_DIM = 15  # runtime_py.scene.SceneSpec().dim
HEAD_PARAM_NAMES = ("u", "W1", "b1", "W2")
SUPPORT_TARGETS = ("all", "next")


@dataclasses.dataclass
class ModelConfig(VersionedConfig):
    """Shape and switches of `MetaRecModel` (the switches are the ablations of the issue)."""

    VERSION = MODEL_CONFIG_VERSION
    version: int = MODEL_CONFIG_VERSION
    dim: int = 32  # (int) item / user vector size d; export prunes it to the phone's 16 (docs/decisions/prior-shape.md)
    n_prototypes: int = 8  # (int) interest prototypes M; export prunes to 4 (docs/decisions/prior-shape.md)
    scene_hidden: int = 8  # (int) scene encoding size
    head_hidden: int = 16  # (int) hidden units of the adaptation head; P = d + h*(2d+s) + h + d*h
    hist_len: int = 10  # (int) L, history slots the phone keeps
    n_negatives: int = 20  # (int) fixed inner-loop negatives (most popular train items)
    inner_steps: int = 1  # (int) Meta-SGD steps on the phone, 0..3 (docs/decisions/inner-steps.md)
    init_lr: float = 0.05  # (float) initial per-parameter inner step size (small: meta-training grows it if it pays)
    id_dropout: float = 0.25  # (float) share of items whose id embedding is hidden in training: attributes must carry
    new_item_terms: bool = True  # (bool) id-less items get their own learned bias and trend weight (see item_bias)
    new_trend_offset: float = 0.5  # (float) serving: + new-item trend weight (docs/decisions/new-trend-offset.md)
    use_prototypes: bool = True  # (bool) ablation: u0 = scene prior only, no prototype mixture
    use_scene: bool = True  # (bool) ablation: scene vector zeroed everywhere
    use_trend: bool = True  # (bool) ablation: trend term off
    use_seq: bool = True  # (bool) ablation: no sequential summary
    support_target: str = "all"  # (str) inner loss target: "all" or "next" (docs/decisions/inner-loss.md)
    inner_bias: bool = False  # (bool) inner logits add the item bias (docs/decisions/inner-loss.md)

    # trend mechanisms over the same 7-day counts pack, off by default, each starting as the plain term
    # (docs/decisions/trend-mechanisms.md); x = log1p(count)
    trend_knots: int = 0  # (int) n knots of a learned piecewise-linear response f(x); 0 = the plain log1p term
    trend_item: bool = False  # (bool) per-item learned trend sensitivity (seen items only: it is id memory)
    trend_attr: bool = False  # (bool) trend sensitivity from genres / release year, new items too
    trend_by_k: bool = False  # (bool) the trend gate's logit adds a learned offset per support size K
    trend_by_k_new: bool = True  # (bool) the per-K offset moves the new-item trend weight too (False: seen items only)
    trend_affinity: bool = False  # (bool) score += beta * f(x_i) * (v_i . z): trending and close lifts more
    trend_hist_scale: float = 1.0  # (float) serving: trend x this once K >= 1 (docs/decisions/trend-hist-scale.md)

    # fields added after version 1 shipped, with the value that reproduces a model saved before them
    LEGACY: ClassVar[dict] = {"inner_bias": False, "trend_knots": 0, "trend_item": False, "trend_attr": False,
                              "trend_by_k": False, "trend_by_k_new": True, "trend_affinity": False,
                              "trend_hist_scale": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dim", "n_prototypes", "scene_hidden", "head_hidden", "hist_len", "n_negatives"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.inner_steps <= 3:
            raise ValueError(f"inner_steps must be in 0..3 (the phone budget), got {self.inner_steps}")
        if not self.init_lr > 0:
            raise ValueError("init_lr must be > 0")
        if not self.new_trend_offset >= 0:
            raise ValueError("new_trend_offset must be >= 0")
        if not 0 <= self.id_dropout < 1:
            raise ValueError("id_dropout must be in [0, 1)")
        if not (math.isfinite(self.trend_hist_scale) and self.trend_hist_scale > 0):
            raise ValueError(f"trend_hist_scale must be finite and > 0, got {self.trend_hist_scale}")
        if not 0 <= int(self.trend_knots) <= 8:
            raise ValueError(f"trend_knots must be in 0..8, got {self.trend_knots}")
        if self.support_target not in SUPPORT_TARGETS:
            raise ValueError(f"support_target must be one of {SUPPORT_TARGETS}, got {self.support_target!r}")


def item_attributes(item_genres: np.ndarray, item_year: np.ndarray | None) -> np.ndarray:
    """(N, G+2) float32 item features: genre flags, standardised release year, year-unknown flag."""
    n = item_genres.shape[0]
    year = np.full(n, np.nan, np.float32) if item_year is None else np.asarray(item_year, np.float32)
    known = np.isfinite(year)
    yz = np.zeros(n, np.float32)
    if known.any():
        mu, sd = year[known].mean(), year[known].std() + 1e-6
        yz[known] = (year[known] - mu) / sd
    return np.concatenate([np.asarray(item_genres, np.float32), yz[:, None], (~known)[:, None].astype(np.float32)], 1)


class MetaRecModel(nn.Module):
    """Item table + prototypes + scene encoder + sequence summary + the small adaptation head."""

    head_param_names = HEAD_PARAM_NAMES

    def __init__(self, cfg: ModelConfig, n_items: int, item_attrs: np.ndarray | torch.Tensor,
                 negatives: np.ndarray | torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        d, h, s, m = cfg.dim, cfg.head_hidden, cfg.scene_hidden, cfg.n_prototypes
        attrs = torch.as_tensor(np.asarray(item_attrs, np.float32))
        if attrs.shape[0] != n_items:
            raise ValueError(f"item_attrs has {attrs.shape[0]} rows for {n_items} items")
        self.n_items = n_items
        self.register_buffer("item_attrs", attrs)
        neg = torch.arange(min(cfg.n_negatives, n_items)) if negatives is None else torch.as_tensor(negatives)
        self.register_buffer("negatives", neg.long())
        # ids start at zero: an item never seen in training (new item) keeps a pure attribute vector
        self.item_emb = nn.Parameter(torch.zeros(n_items, d))
        self.item_bias_id = nn.Parameter(torch.zeros(n_items))
        self.attr_enc = nn.Linear(attrs.shape[1], d)
        self.attr_bias = nn.Linear(attrs.shape[1], 1, bias=False)  # a shared shift is invisible to a softmax
        self.prototypes = nn.Parameter(torch.randn(m, d) * 0.1)
        self.proto_temp = nn.Parameter(torch.tensor(math.log(4.0)))
        self.scene_enc = nn.Sequential(nn.Linear(SCENE_DIM, s), nn.Tanh())
        self.proto_prior = nn.Linear(s, m)  # K=0: the scene picks the prior mixture
        self.trend_gate = nn.Linear(s, 1)
        nn.init.constant_(self.trend_gate.bias, 0.5)
        # New items (no id: no training event). A seen item's id bias already holds its popularity, so the trend
        # only corrects it; for an id-less item the trend is the only popularity evidence, and its attribute bias
        # knows nothing of how often id-less items are picked. Both are learned on id-dropped items in training
        # (which keep their real trend), and both start neutral (old checkpoints load unchanged).
        # item_known (N,): 1 = the item had a fit event (set by training; a catalog constant export bakes in).
        self.register_buffer("item_known", torch.ones(n_items))
        self.new_bias = nn.Parameter(torch.zeros(()))
        self.trend_gate_new = nn.Linear(s, 1)  # added to trend_gate's logit for id-less items
        nn.init.zeros_(self.trend_gate_new.weight)
        nn.init.zeros_(self.trend_gate_new.bias)
        # trend mechanisms (ModelConfig.trend_*): created only when on, so old checkpoints keep their state_dict
        if cfg.trend_knots:
            self.trend_knot_w = nn.Parameter(torch.ones(cfg.trend_knots + 1))
        if cfg.trend_item:
            self.trend_item_w = nn.Parameter(torch.zeros(n_items))
        if cfg.trend_attr:
            self.trend_attr_w = nn.Linear(attrs.shape[1], 1, bias=False)
            nn.init.zeros_(self.trend_attr_w.weight)
        if cfg.trend_by_k:
            self.trend_k_off = nn.Parameter(torch.zeros(cfg.hist_len + 1))
        if cfg.trend_affinity:
            self.trend_aff = nn.Parameter(torch.zeros(()))
        self.recency = nn.Parameter(torch.linspace(-1.0, 1.0, cfg.hist_len))  # slot L-1 = newest
        self.transition = nn.Linear(d, d, bias=False)  # last items -> next item direction
        nn.init.eye_(self.transition.weight)
        # phi0: the head's meta-learned init, and Meta-SGD's per-parameter log step sizes
        self.head0 = nn.ParameterDict({
            "u": nn.Parameter(torch.zeros(d)),
            "W1": nn.Parameter(torch.randn(h, 2 * d + s) / math.sqrt(2 * d + s)),
            "b1": nn.Parameter(torch.zeros(h)),
            "W2": nn.Parameter(torch.zeros(d, h)),
        })
        self.log_lr = nn.ParameterDict({k: nn.Parameter(torch.full_like(v, math.log(cfg.init_lr)))
                                        for k, v in self.head0.items()})
        self.lr_gate = nn.Linear(s, len(HEAD_PARAM_NAMES))  # scene scales each tensor's rates (x in (0, 2))
        nn.init.zeros_(self.lr_gate.weight)
        nn.init.zeros_(self.lr_gate.bias)

    # ------------------------------------------------------------------ export surface
    @property
    def inner_steps(self) -> int:
        return self.cfg.inner_steps

    def id_mask(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) 1 = the item is scored with its id, 0 = id-less (new item, or id dropped in training)."""
        return self.item_known if id_keep is None else id_keep * self.item_known

    def item_table(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N, d) item vectors; `id_keep` (N,) in {0,1} hides id embeddings (training-time id dropout)."""
        return self.item_emb * self.id_mask(id_keep)[:, None] + self.attr_enc(self.item_attrs)

    def item_bias(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) id bias + attribute bias; an id-less item gets the learned new-item bias instead of an id bias."""
        keep = self.id_mask(id_keep)
        b = self.item_bias_id * keep + self.attr_bias(self.item_attrs)[:, 0]
        if self.cfg.new_item_terms:
            b = b + self.new_bias * (1.0 - keep)
        return b

    @torch.no_grad()
    def export_item_table(self) -> torch.Tensor:
        return self.item_table().detach().clone()

    @torch.no_grad()
    def export_item_bias(self) -> torch.Tensor:
        return self.item_bias().detach().clone()

    def head_init(self) -> dict[str, torch.Tensor]:
        """phi0 as plain tensors, in `head_param_names` order (differentiable: meta-gradients reach it)."""
        return {k: self.head0[k] for k in HEAD_PARAM_NAMES}

    def head_size(self) -> int:
        return sum(v.numel() for v in self.head0.values())

    # ------------------------------------------------------------------ pure functions of plain tensors
    def encode_scene(self, scene: torch.Tensor) -> torch.Tensor:
        if not self.cfg.use_scene:
            scene = torch.zeros_like(scene)
        return self.scene_enc(scene)

    def step_sizes(self, scene: torch.Tensor) -> dict[str, torch.Tensor]:
        """Meta-SGD per-parameter rates for this scene: exp(log_lr) * 2 sigmoid(gate(s)) (gate starts at 1)."""
        gate = 2.0 * torch.sigmoid(self.lr_gate(self.encode_scene(scene)))
        return {k: torch.exp(self.log_lr[k]) * gate[j] for j, k in enumerate(HEAD_PARAM_NAMES)}

    def user_vector(self, head: dict, hist_vecs: torch.Tensor, hist_mask: torch.Tensor,
                    scene: torch.Tensor) -> torch.Tensor:
        """z (d,) from the history (L, d) right-aligned with mask (L,), the scene (F,) and the head.

        Leading batch dims are allowed on the history ((..., L, d) / (..., L) -> (..., d), one scene): the
        "next" support loss scores every prefix of the support in one call.
        """
        s = self.encode_scene(scene)
        cnt = hist_mask.sum(-1)
        mean = (hist_vecs * hist_mask[..., None]).sum(-2) / cnt.clamp(min=1.0)[..., None]
        has = (cnt > 0).to(hist_vecs.dtype)[..., None]
        logits = self.proto_prior(s)
        if self.cfg.use_prototypes:
            # attention of the history's mean on the prototypes; K=0 leaves only the scene prior
            logits = logits + has * torch.exp(self.proto_temp) * \
                F.normalize(mean, dim=-1, eps=1e-6) @ F.normalize(self.prototypes, dim=-1).T
        u0 = torch.softmax(logits, -1) @ self.prototypes
        if self.cfg.use_seq:
            w = torch.softmax(self.recency.masked_fill(hist_mask <= 0, -1e4), -1) * has
            seq = self.transition((w[..., None] * hist_vecs).sum(-2))
        else:
            seq = torch.zeros_like(u0)
        x = torch.cat([u0, s.expand(u0.shape[:-1] + s.shape), seq], -1)
        return u0 + seq + head["u"] + torch.tanh(x @ head["W1"].T + head["b1"]) @ head["W2"].T

    def score_from_vectors(self, head: dict, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, scene: torch.Tensor,
                           trend: torch.Tensor, table: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of every item; `trend` is log1p of 7-day counts."""
        z = self.user_vector(head, hist_vecs, hist_mask, scene)
        dots = F.linear(z, table)
        out = dots + bias + self.trend_term(scene, trend, hist_mask)
        if self.cfg.trend_affinity and self.cfg.use_trend:
            out = out + self.trend_aff * self.trend_feature(trend) * dots
        return out

    def trend_feature(self, trend: torch.Tensor) -> torch.Tensor:
        """f(x) of x = log1p(count) (ModelConfig.trend_knots); x itself when the knots are off."""
        if not self.cfg.trend_knots:
            return trend
        a, n = self.trend_knot_w, self.cfg.trend_knots
        f = a[0] * trend.clamp(max=1.0)  # a_j = the slope on [j, j + 1), the last one beyond n
        for j in range(1, n):
            f = f + a[j] * (trend - float(j)).clamp(0.0, 1.0)
        return f + a[n] * torch.relu(trend - float(n))

    def trend_weights(self, scene: torch.Tensor, hist_mask: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_seen, w_new - w_seen), scalars (or (B,) for a batch of scenes (B, F)): the trend weight of items
        with an id, and what an id-less item adds to it. `hist_mask` ((L,) or (B, L)) is needed under
        ModelConfig.trend_by_k (the support size K picks a learned gate offset)."""
        g = g_new = self.trend_gate(self.encode_scene(scene))[..., 0]
        if self.cfg.trend_by_k:
            if hist_mask is None:
                raise ValueError("ModelConfig.trend_by_k: trend_weights needs hist_mask")
            k = hist_mask.sum(-1).round().long().clamp(0, self.cfg.hist_len)
            g = g + self.trend_k_off[k]
            g_new = g if self.cfg.trend_by_k_new else g_new
        w = F.softplus(g)
        if not self.cfg.new_item_terms:
            return w, torch.zeros_like(w)
        return w, F.softplus(g_new + self.trend_gate_new(self.encode_scene(scene))[..., 0]) - w

    def trend_term(self, scene: torch.Tensor, trend: torch.Tensor, hist_mask: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """(N,) the trend part of the score: w(scene) * f(trend), with the new-item weight for items without a fit
        event (`item_known` = 0). Export calls this (score.pte bakes the (N,) `item_known`). In eval mode, times
        ModelConfig.trend_hist_scale when `hist_mask` has an event (None: a user without history)."""
        if not self.cfg.use_trend:
            return torch.zeros_like(trend)
        w, dw = self.trend_weights(scene, hist_mask)
        if self.cfg.new_item_terms:
            dw = dw + self.cfg.new_trend_offset
        f = self.trend_feature(trend)
        if self.cfg.trend_attr:  # an item-level factor on both weights: new items have attributes too
            f = f * (1.0 + self.trend_attr_w(self.item_attrs)[:, 0])
        if self.cfg.trend_item:  # id memory: only items with a fit event carry a sensitivity
            out = (w * (1.0 + self.trend_item_w * self.item_known) + dw * (1.0 - self.item_known)) * f
        else:
            out = (w + dw * (1.0 - self.item_known)) * f
        if self.training or self.cfg.trend_hist_scale == 1.0 or hist_mask is None:  # None: no history (K = 0)
            return out
        if hist_mask.dim() != 1:
            raise ValueError(f"ModelConfig.trend_hist_scale: one user's hist_mask (L,) expected, got "
                             f"{tuple(hist_mask.shape)}")
        # 1 + (scale - 1) [K >= 1] as tensor ops, so that torch.export traces it without a data-dependent branch
        return out * (1.0 + (self.cfg.trend_hist_scale - 1.0) * hist_mask.sum().clamp(0.0, 1.0))

    def support_loss(self, head: dict, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, scene: torch.Tensor,
                     target_vecs: torch.Tensor, target_mask: torch.Tensor, neg_vecs: torch.Tensor,
                     target_bias: torch.Tensor | None = None, neg_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Inner-loop loss: each target item against the fixed negatives (softmax CE), mean over valid targets.

        support_target "all": every target is scored by the user vector of the whole history. "next": target row j
        (same right-aligned layout as the history; the phone passes its history as targets) is scored by the user
        vector of the history rows before j only, re-aligned to the right; rows j >= L (extra targets after the
        history, Reptile's query) see the whole history. Bias and trend are constant in the head, so the loss
        needs only dot products; 0 when there is no target. With `inner_bias` the logits add the rows' item biases
        `target_bias` (S,) and `neg_bias` (R,) (required then: a silent bias-free loss would not be the model's).
        """
        if self.cfg.inner_bias and (target_bias is None or neg_bias is None):
            raise ValueError("ModelConfig.inner_bias: support_loss needs target_bias and neg_bias")
        if self.cfg.support_target == "next":
            L, S = hist_vecs.shape[0], target_vecs.shape[0]
            # context of target j = history rows i - (L - min(j, L)), right-aligned; indices < 0 are padding
            src = torch.arange(L)[None, :] - L + torch.arange(S).clamp(max=L)[:, None]
            valid = (src >= 0).to(hist_vecs.dtype)
            src = src.clamp(min=0)
            z = self.user_vector(head, hist_vecs[src] * valid[..., None], hist_mask[src] * valid, scene)  # (S, d)
            pos = (target_vecs * z).sum(-1)
            neg = z @ neg_vecs.T  # (S, R)
        else:
            z = self.user_vector(head, hist_vecs, hist_mask, scene)
            pos = target_vecs @ z  # (S,)
            neg = (neg_vecs @ z)[None, :].expand(pos.shape[0], -1)  # (S, R)
        if self.cfg.inner_bias:
            pos, neg = pos + target_bias, neg + neg_bias
        lse = torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1)
        return ((lse - pos) * target_mask).sum() / target_mask.sum().clamp(min=1.0)

    # ------------------------------------------------------------------ convenience for the host
    def adapt(self, head: dict, hist_vecs, hist_mask, scene, table: torch.Tensor, steps: int | None = None,
              rates: dict | None = None, bias: torch.Tensor | None = None, hist_items: torch.Tensor | None = None
              ) -> dict:
        """Meta-SGD adaptation of one user's head on its support (the phone's program, in eager torch)."""
        from metarec.sdk.meta import inner_adapt  # meta imports model; keep the cycle lazy

        steps = self.inner_steps if steps is None else steps
        rates = self.step_sizes(scene) if rates is None else rates
        neg_vecs = table[self.negatives]
        tb = nb = None
        if self.cfg.inner_bias:  # the support rows' biases: bias (N,) gathered at the history's item indices
            if bias is None or hist_items is None:
                raise ValueError("ModelConfig.inner_bias: adapt needs bias and hist_items")
            tb, nb = bias[hist_items], bias[self.negatives]

        def loss(h):
            return self.support_loss(h, hist_vecs, hist_mask, scene, hist_vecs, hist_mask, neg_vecs, tb, nb)

        return inner_adapt(loss, head, rates, steps, first_order=True)
