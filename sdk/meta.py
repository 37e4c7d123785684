"""Meta-learners over user tasks, one interface (after learn2learn's MAML; docs/architecture.md, "The model").

A learner turns the model's head init phi0 into a task's adapted head from the task's support, with at most 3
steps of `torch.func.grad` over a parameter dict (the same pure step export traces), and says how the outer loss
reaches phi0:
- `metasgd`: learned per-parameter, scene-gated step sizes (`model.step_sizes`), second order so the rates learn;
- `maml` / `fomaml`: one fixed rate, second / first order;
- `reptile`: first-order steps on the whole task, phi0 pulled toward the adapted head;
- `metric`: no gradient step and no head: prototype + attention scoring of the history only;
- `finetune`: no meta-learning; the head is pretrained without inner steps, fine-tuned with fixed-rate SGD at test.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch.func import grad, vmap

LEARNERS = ("metasgd", "maml", "fomaml", "reptile", "metric", "finetune")


def inner_adapt(loss_fn: Callable[[dict], torch.Tensor], head: dict, rates: dict, steps: int,
                first_order: bool = False) -> dict:
    """`steps` gradient steps head <- head - rates * grad(loss_fn)(head); second order unless `first_order`.

    Second order comes for free: `torch.func.grad` composes with the outer autograd, so the returned head stays
    a differentiable function of phi0 and of the rates.
    """
    for _ in range(steps):
        g = grad(loss_fn)(head)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        head = {k: head[k] - rates[k] * g[k] for k in head}
    return head


@dataclasses.dataclass
class MetaLearner:
    """How phi0 becomes a task's head, and how the outer loss reaches phi0 (see the module docstring)."""

    name: str = "metasgd"
    steps: int = 3  # inner steps used in training and on the phone
    fixed_lr: float = 0.3  # rate of maml / fomaml / reptile / finetune

    def __post_init__(self) -> None:
        if self.name not in LEARNERS:
            raise ValueError(f"unknown meta-learner {self.name!r}; known: {list(LEARNERS)}")
        if not 0 <= self.steps <= 3:
            raise ValueError(f"inner steps must be in 0..3, got {self.steps}")

    @property
    def first_order(self) -> bool:
        return self.name in ("fomaml", "reptile")

    @property
    def train_steps(self) -> int:
        """Inner steps inside meta-training (finetune / metric train without any)."""
        return 0 if self.name in ("metric", "finetune") else self.steps

    @property
    def eval_steps(self) -> int:
        return 0 if self.name == "metric" else self.steps

    def head0(self, model) -> dict:
        if self.name == "metric":  # no head: z = u0 + seq
            return {k: torch.zeros_like(v) for k, v in model.head_init().items()}
        return model.head_init()

    def rates(self, model, scene: torch.Tensor) -> dict:
        if self.name == "metasgd":
            return model.step_sizes(scene)
        return {k: torch.full_like(v, self.fixed_lr) for k, v in model.head_init().items()}

    def adapt_one(self, model, head0: dict, hist_vecs, hist_mask, scene, neg_vecs, steps: int,
                  extra_targets=None, extra_mask=None, hist_bias=None, neg_bias=None, extra_bias=None) -> dict:
        """One task's adapted head (vmap this over users). Reptile's inner task may include the query items.
        The biases are used only under `ModelConfig.inner_bias` (rows' item biases: history, negatives, extra)."""
        if steps == 0:
            return head0
        tv, tm, tb = hist_vecs, hist_mask, hist_bias
        if extra_targets is not None:
            tv, tm = torch.cat([tv, extra_targets]), torch.cat([tm, extra_mask])
            tb = None if hist_bias is None else torch.cat([hist_bias, extra_bias])

        def loss(h):
            return model.support_loss(h, hist_vecs, hist_mask, scene, tv, tm, neg_vecs, tb, neg_bias)

        return inner_adapt(loss, head0, self.rates(model, scene), steps,
                           first_order=self.first_order or not torch.is_grad_enabled())


def batch_scores(model, learner: MetaLearner, table, bias, hist, hist_mask, scene, trend, steps: int,
                 id_keep=None):
    """Adapted scores (B, N) for a batch of tasks: vmap over users of (adapt, score); `id_keep` as in
    `MetaRecModel.item_table` (training's id dropout: those items are scored as new items)."""
    head0 = learner.head0(model)
    neg_vecs = table[model.negatives]
    hist_vecs = table[hist]  # (B, L, d)
    neg_bias = bias[model.negatives] if model.cfg.inner_bias else None
    hist_bias = bias[hist] if model.cfg.inner_bias else torch.zeros(hist.shape)

    def one(hv, hm, sc, tr, hb):
        h = learner.adapt_one(model, head0, hv, hm, sc, neg_vecs, steps, hist_bias=hb, neg_bias=neg_bias)
        return model.score_from_vectors(h, hv, hm, sc, tr, table, bias, id_keep)

    return vmap(one)(hist_vecs, hist_mask, scene, trend, hist_bias)


def reptile_pull(model, learner: MetaLearner, table, hist, hist_mask, scene, tgt, tgt_mask) -> torch.Tensor:
    """Reptile's phi0 update as a loss: 0.5 ||phi0 - stopgrad(phi_T)||^2 averaged over tasks, whose gradient
    is phi0 - mean(phi_T), with phi_T the head after `steps` first-order steps on support + query items."""
    head0 = model.head_init()
    neg_vecs = table[model.negatives].detach()
    hist_vecs = table[hist].detach()
    tgt_vecs = table[tgt].detach()
    h0 = {k: v.detach() for k, v in head0.items()}
    ib = model.cfg.inner_bias
    bias = model.item_bias().detach() if ib else None
    neg_bias = bias[model.negatives] if ib else None
    hb, tb = (bias[hist], bias[tgt]) if ib else (torch.zeros(hist.shape), torch.zeros(tgt.shape))

    def one(hv, hm, sc, tv, tm, hbi, tbi):
        return learner.adapt_one(model, h0, hv, hm, sc.detach(), neg_vecs, learner.steps, tv, tm, hbi, neg_bias, tbi)

    with torch.no_grad():
        hT = vmap(one)(hist_vecs, hist_mask, scene, tgt_vecs, tgt_mask, hb, tb)
    return sum(0.5 * ((head0[k] - hT[k].mean(0)) ** 2).sum() for k in head0)
