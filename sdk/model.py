"""The meta-learned cold-start model: its parameters, item table and configuration (docs/architecture.md).

The item vector v_i = id embedding + attribute encoder(genres, year), so a new item has a vector; the scoring
math (user vector, trend term, support loss, step sizes) is sdk/kernel.py's, bound here to the parameters. The
head {u, W1, b1, W2} is the only part the phone trains.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from metarec.runtime.config import VersionedConfig
from metarec.sdk import kernel
from metarec.sdk.kernel import HEAD_PARAM_NAMES

MODEL_CONFIG_VERSION = 1
SCENE_DIM = 15  # runtime_py.scene.SceneSpec().dim
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
    pop_prior: bool = True  # (bool) seen items' bias adds w * centred log1p(fit count), w learned (docs/decisions/pop-prior.md)

    # fields added after version 1 shipped, with the value that reproduces a model saved before them
    LEGACY: ClassVar[dict] = {"inner_bias": False, "trend_knots": 0, "trend_item": False, "trend_attr": False,
                              "trend_by_k": False, "trend_by_k_new": True, "trend_affinity": False,
                              "trend_hist_scale": 1.0, "pop_prior": False}

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


def year_stats(item_year: np.ndarray | None) -> tuple[float, float] | None:
    """(mean, sd + 1e-6) of a catalog's known release years, float32 as `item_attributes` uses them; None if none."""
    if item_year is None:
        return None
    year = np.asarray(item_year, np.float32)
    known = np.isfinite(year)
    if not known.any():
        return None
    return float(year[known].mean()), float(year[known].std() + 1e-6)


def item_attributes(item_genres: np.ndarray, item_year: np.ndarray | None,
                    stats: tuple[float, float] | None | str = "own") -> np.ndarray:
    """(N, G+2) float32 item features: genre flags, standardised release year, year-unknown flag. The year is
    standardised with `stats` (mean, sd): by default the catalog's own (`year_stats`); items added later pass the
    training catalog's (sdk/catalog.py), and None means the model never saw a year (every year unknown)."""
    n = item_genres.shape[0]
    stats = year_stats(item_year) if isinstance(stats, str) else stats
    year = np.full(n, np.nan, np.float32) if item_year is None or stats is None else np.asarray(item_year, np.float32)
    known = np.isfinite(year)
    yz = np.zeros(n, np.float32)
    if known.any():
        mu, sd = np.float32(stats[0]), np.float32(stats[1])
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
        if cfg.pop_prior:  # log_pop is set by training (a catalog constant, like item_known); w starts neutral
            self.register_buffer("log_pop", torch.zeros(n_items))
            self.pop_w = nn.Parameter(torch.zeros(()))
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
        bid = self.item_bias_id + self.pop_w * self.log_pop if self.cfg.pop_prior else self.item_bias_id
        b = bid * keep + self.attr_bias(self.item_attrs)[:, 0]
        if self.cfg.new_item_terms:
            b = b + self.new_bias * (1.0 - keep)
        return b

    # the per-item (N-sized) state: a new items' model gets its own; a catalog-sized tensor added to the model
    # belongs here too (new_items_model refuses to copy one it does not know: shapes differ)
    _CATALOG_STATE = ("item_attrs", "item_emb", "item_bias_id", "item_known", "trend_item_w", "log_pop")

    @torch.no_grad()
    def new_items_model(self, item_attrs: np.ndarray) -> "MetaRecModel":
        """This model with a catalog of only `item_attrs`' items, every one id-less (a new item): its vector is the
        attribute encoder's, its bias and trend term the new-item ones. What a catalog delta scores
        (export/catalog.py); everything that is not catalog-sized is this model's."""
        with torch.random.fork_rng():  # the constructor's random init must not move the caller's generator
            m = MetaRecModel(self.cfg, int(np.asarray(item_attrs).shape[0]), item_attrs, self.negatives)
        keep = {k: v for k, v in self.state_dict().items() if k not in self._CATALOG_STATE + ("negatives",)}
        missing, unexpected = m.load_state_dict(keep, strict=False)
        if unexpected or set(missing) - set(self._CATALOG_STATE + ("negatives",)):
            raise ValueError(f"new_items_model: state mismatch {sorted(missing)} / {sorted(unexpected)}")
        m.item_known.zero_()
        return m.eval()

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

    # ------------------------------------------------------------------ the kernel on this model's weights
    def kernel_weights(self) -> kernel.Weights:
        """The scoring kernel's view of the parameters (sdk/kernel.py owns the math; these methods bind it)."""
        return kernel.Weights.of(self)

    def encode_scene(self, scene: torch.Tensor) -> torch.Tensor:
        return kernel.scene_encoding(self.cfg, self.kernel_weights(), scene)

    def step_sizes(self, scene: torch.Tensor) -> dict[str, torch.Tensor]:
        """Meta-SGD per-parameter rates for this scene: exp(log_lr) * 2 sigmoid(gate(s)) (gate starts at 1)."""
        w = self.kernel_weights()
        return kernel.step_sizes(dict(self.log_lr), kernel.step_gate(w, kernel.scene_encoding(self.cfg, w, scene)))

    def user_vector(self, head: dict, hist_vecs: torch.Tensor, hist_mask: torch.Tensor,
                    scene: torch.Tensor) -> torch.Tensor:
        """z (d,) from the history (L, d) right-aligned with mask (L,), the scene (F,) and the head (leading batch
        dims allowed on the history)."""
        return kernel.user_vector(self.cfg, self.kernel_weights(), head, hist_vecs, hist_mask, scene)[0]

    def prototype_mixture(self, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        """(M,) the prototype weights of a history (u0 = weights @ prototypes)."""
        w = self.kernel_weights()
        return kernel.prototype_mixture(self.cfg, w, hist_vecs, hist_mask, kernel.scene_encoding(self.cfg, w, scene))

    def _new_items(self, id_keep: torch.Tensor | None) -> tuple[torch.Tensor, float]:
        """(item_new, its trend offset): at serving the new items (no fit event) with ModelConfig.new_trend_offset;
        in training also the id-dropped items, with the bare learned weight (new items are excluded there)."""
        if id_keep is None:
            return 1.0 - self.item_known, self.cfg.new_trend_offset
        return 1.0 - self.id_mask(id_keep), 0.0

    def score_from_vectors(self, head: dict, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, scene: torch.Tensor,
                           trend: torch.Tensor, table: torch.Tensor, bias: torch.Tensor,
                           id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (N,) of every item; `trend` is log1p of 7-day counts; `id_keep` as in `item_table`."""
        new, off = self._new_items(id_keep)
        return kernel.scores(self.cfg, self.kernel_weights(), head, hist_vecs, hist_mask, scene, trend, table, bias,
                             new, off, serving=not self.training)

    def trend_feature(self, trend: torch.Tensor) -> torch.Tensor:
        """f(x) of x = log1p(count) (ModelConfig.trend_knots); x itself when the knots are off."""
        return kernel.trend_feature(self.cfg, self.kernel_weights(), trend)

    def trend_weights(self, scene: torch.Tensor, hist_mask: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_seen, w_new - w_seen) for a scene (F,) or a batch of scenes (B, F)."""
        w = self.kernel_weights()
        return kernel.trend_weights(self.cfg, w, kernel.scene_encoding(self.cfg, w, scene), hist_mask)

    def trend_term(self, scene: torch.Tensor, trend: torch.Tensor, hist_mask: torch.Tensor | None = None
                   ) -> torch.Tensor:
        """(N,) the trend part of the score at serving weights (new items: `item_known` = 0); in eval mode times
        ModelConfig.trend_hist_scale when `hist_mask` has an event (None: a user without history)."""
        w = self.kernel_weights()
        new, off = self._new_items(None)
        return kernel.trend_term(self.cfg, w, kernel.scene_encoding(self.cfg, w, scene), trend, hist_mask, new, off,
                                 serving=not self.training)

    def support_loss(self, head: dict, hist_vecs: torch.Tensor, hist_mask: torch.Tensor, scene: torch.Tensor,
                     target_vecs: torch.Tensor, target_mask: torch.Tensor, neg_vecs: torch.Tensor,
                     target_bias: torch.Tensor | None = None, neg_bias: torch.Tensor | None = None) -> torch.Tensor:
        """Inner-loop loss (kernel.support_loss): each target against the fixed negatives, mean over targets."""
        return kernel.support_loss(self.cfg, self.kernel_weights(), head, hist_vecs, hist_mask, scene, target_vecs,
                                   target_mask, neg_vecs, target_bias, neg_bias)

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
