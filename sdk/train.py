"""Meta-training of `MetaRecModel` over user tasks: one process or `torchrun --nproc_per_node=N` (gloo).

A task is a train user's history cut at a position c: support = the last L events before c (the phone keeps L),
query = events c .. c+Q-1, scene and trend at event c's time. Trend = log1p of the 7-day counts of OTHER fit users'
events in [t - 7d, t), so training sees exactly what a query sees at evaluation (time-honest).
Tasks are sampled as whole tensors per step from a generator seeded by (seed, step): resuming from a checkpoint and
sharding over ranks both replay the very same global batches. Each rank takes a contiguous slice of the global
batch, sums its loss / global batch size, and gradients are all-reduced (sum), so N ranks == 1 process up to
floating-point summation order.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from metarec.runtime.config import VersionedConfig
from metarec.runtime.scene import scene_features
from metarec.sdk.meta import LEARNERS, MetaLearner, batch_scores, reptile_pull
from metarec.sdk.model import MetaRecModel, ModelConfig, item_attributes
from metarec.sdk.neighbors import cooc_vectors, log_popularity
from metarec.sdk.protocol import EventLog
from metarec.sdk.weight_average import WeightAverage

TRAIN_CONFIG_VERSION = 1
NEUTRAL_IF_MISSING = {"item_known", "new_bias", "trend_gate_new.weight", "trend_gate_new.bias"}
CHECKPOINT_VERSION = 1
WEEK = 7 * 86400.0
NEGATIVES = ("popular", "spread", "catalog")


@dataclasses.dataclass
class TrainConfig(VersionedConfig):
    """Meta-training stage (versioned; serialised into checkpoints and the bundle manifest)."""

    VERSION = TRAIN_CONFIG_VERSION
    JSON_INDENT = 1
    version: int = TRAIN_CONFIG_VERSION
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    learner: str = "metasgd"  # (str) one of sdk.meta.LEARNERS
    dataset: str = "ml-100k"  # (str) sdk.data.load_dataset name or path
    fit_users: str = "train+val"  # (str) "train" (choices on validation users) or "train+val" (the test run)
    val_blocks: int = 3  # (int) forward blocks of users the floor and export's choices judge (sdk/floor.py)
    withhold_new_items: bool = False  # (bool) PROTOCOL v1 new-item run: the seeded 10% of items get no events
    steps: int = 600  # (int) optimizer steps (docs/decisions/outer-loss.md)
    batch_size: int = 256  # (int) global tasks per step (split over ranks)
    lr: float = 0.001  # (float) Adam rate of the outer loop (low: stays near the co-occurrence init; val users)
    dense_lr_mult: float = 1.0  # (float) rate multiplier of every parameter but the item id embeddings / biases
    new_item_lr: float = 0.03  # (float) Adam rate of the new-item bias / trend weight (docs/decisions/rate-lr-mult.md)
    weight_decay: float = 0.0  # (float) L2 on id embeddings only (keeps rare items near their attribute vector)
    early_frac: float = 0.9  # (float) share of tasks cut at K in 0..hist_len (cold start), rest anywhere
    n_targets: int = 10  # (int) query length Q: the next item plus Q-1 later ones
    future_weight: float = 0.3  # (float) weight of the later query items' mean CE next to the next item's CE
    finetune_lr: float = 0.3  # (float) fixed rate of maml / reptile / finetune inner steps
    negatives: str = "popular"  # (str) inner negatives: "popular" | "spread" | "catalog" (docs/decisions/inner-loss.md)
    topk_weight: float = 0.0  # (float) weight of a top-10 boundary term beside the CE (docs/decisions/outer-loss.md)
    topk_temp: float = 1.0  # (float) temperature of the top-10 term
    later_start: int = 0  # (int) earliest 0-based event index of the later query items (docs/decisions/outer-loss.md)
    meta_holdout_frac: float = 0.0  # (float) fit users that train only adaptation (docs/decisions/meta-holdout.md)
    holdout_trend: bool = False  # (bool) trend weights learn on held-out users only (docs/decisions/meta-holdout.md)
    rate_lr_mult: float = 1.0  # (float) rate multiplier of the Meta-SGD step sizes (docs/decisions/rate-lr-mult.md)
    scene_lr_mult: float = 1.0  # (float) Adam rate multiplier of the scene pathway (docs/decisions/scene-lr-mult.md)
    average_last: float = 0.0  # (float) share of the last steps whose weights are averaged (0: the last step's)

    # fields added after version 1 shipped, with the value that reproduces a model trained before them
    LEGACY: ClassVar[dict] = {"topk_weight": 0.0, "topk_temp": 1.0, "later_start": 0, "rate_lr_mult": 1.0,
                              "meta_holdout_frac": 0.0, "scene_lr_mult": 1.0, "holdout_trend": False,
                              "average_last": 0.0}
    cooc_init: bool = True  # (bool) start item ids from the top eigenvectors of fit users' item co-occurrence
    seed: int = 0  # (int) everything random derives from it
    ckpt_every: int = 200  # (int) steps between checkpoints (0: only at the end)
    progress: bool = True  # (bool) tqdm bar on rank 0

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        super().__post_init__()
        if self.learner not in LEARNERS:
            raise ValueError(f"unknown learner {self.learner!r}; known: {list(LEARNERS)}")
        if self.fit_users not in ("train", "train+val"):
            raise ValueError(f"fit_users must be 'train' or 'train+val', got {self.fit_users!r}")
        for name in ("steps", "batch_size", "n_targets", "val_blocks"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1")
        if not self.dense_lr_mult > 0:
            raise ValueError("dense_lr_mult must be > 0")
        if not self.new_item_lr > 0:
            raise ValueError("new_item_lr must be > 0")
        if not (self.lr > 0 and self.finetune_lr > 0 and self.weight_decay >= 0 and self.future_weight >= 0):
            raise ValueError("lr and finetune_lr must be > 0; weight_decay and future_weight >= 0")
        if not 0 <= self.early_frac <= 1:
            raise ValueError("early_frac must be in [0, 1]")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        if not 0 <= self.meta_holdout_frac < 1:
            raise ValueError("meta_holdout_frac must be in [0, 1)")
        if not self.rate_lr_mult > 0:
            raise ValueError("rate_lr_mult must be > 0")
        if not self.scene_lr_mult > 0:
            raise ValueError("scene_lr_mult must be > 0")
        if not (self.topk_weight >= 0 and self.topk_temp > 0 and self.later_start >= 0):
            raise ValueError("need topk_weight >= 0, topk_temp > 0 and later_start >= 0")
        if self.ckpt_every < 0:
            raise ValueError("ckpt_every must be >= 0")
        if not 0 <= self.average_last < 1:
            raise ValueError("average_last must be in [0, 1)")

    def learner_obj(self) -> MetaLearner:
        return MetaLearner(self.learner, self.model.inner_steps, self.finetune_lr)


# ---------------------------------------------------------------------------------------------- tasks
class TaskBank:
    """Fit users' histories as padded arrays + the fit users' log for time-honest trend counts."""

    def __init__(self, ds, fit_users: np.ndarray, hist_len: int):
        self.n_items, self.hist_len = ds.n_items, hist_len
        keep = np.isin(ds.user, fit_users)
        self._log = EventLog(ds, keep)  # the fit users' events, time-ordered: trend counts and unseen items
        per_user = ds.user_events()
        rows = [per_user[u] for u in fit_users if len(per_user[u]) >= 2]
        if not rows:
            raise ValueError("no fit user has 2 or more events: nothing to learn from")
        self.users = np.asarray([ds.user[r[0]] for r in rows], np.int64)
        self.lens = np.asarray([len(r) for r in rows], np.int64)
        tmax = int(self.lens.max())
        self.items = np.zeros((len(rows), tmax), np.int64)
        self.ts = np.zeros((len(rows), tmax), np.float64)
        self.scene = np.zeros((len(rows), tmax, 15), np.float32)
        # items without a single fit event (new items) stay out of the training softmax: pushed down as
        # negatives they would learn "never chosen" and score last once they have trending counts
        self.unseen = np.bincount(self._log.item, minlength=self.n_items) == 0
        sc_all = scene_features(ds.ts)  # once for every event: the scene of a task is its query's
        for j, r in enumerate(rows):
            self.items[j, :len(r)], self.ts[j, :len(r)], self.scene[j, :len(r)] = ds.item[r], ds.ts[r], sc_all[r]

    def trend(self, t: np.ndarray, user: np.ndarray) -> np.ndarray:
        """(B, N) counts of other fit users' events in [t - 7d, t): EventLog.counts over the fit users' log (its
        stored sums; a pass over each week's events took 62% of ML-1M's `metarec train`, 0.24 s a batch)."""
        return np.stack([self._log.counts(float(x), int(u), WEEK) for x, u in zip(t, user)]).astype(np.float32) \
            if len(t) else np.zeros((0, self.n_items), np.float32)

    def sample(self, rng: np.random.Generator, batch: int, early_frac: float, n_targets: int,
               later_start: int = 0) -> dict:
        """A batch of tasks as arrays: hist (B, L), hist_mask, scene (B, F), trend (B, N) log1p, targets (B, Q),
        target_mask, exclude (B, N) bool = every support item (the evaluator excludes them too). targets[:, 0] is
        the next event c; the later ones start at event max(c + 1, later_start)."""
        j = rng.integers(0, len(self.users), batch)
        n = self.lens[j]
        early = rng.random(batch) < early_frac
        c_early = rng.integers(0, np.minimum(self.hist_len, n - 1) + 1)
        c_any = rng.integers(0, n)
        c = np.where(early, c_early, c_any)  # query starts at event c (0-based): support = events < c
        L, Q = self.hist_len, n_targets
        pos = c[:, None] - L + np.arange(L)[None, :]
        hist_mask = pos >= 0
        hist = np.where(hist_mask, self.items[j[:, None], np.clip(pos, 0, None)], 0)
        qpos = c[:, None] + np.arange(Q)[None, :]
        if later_start:
            qpos[:, 1:] = np.maximum(c + 1, later_start)[:, None] + np.arange(Q - 1)[None, :]
        tmask = qpos < n[:, None]
        targets = np.where(tmask, self.items[j[:, None], np.clip(qpos, None, self.items.shape[1] - 1)], 0)
        t = self.ts[j, c]
        tmax = self.items.shape[1]
        sup = np.arange(tmax)[None, :] < c[:, None]
        exclude = np.repeat(self.unseen[None, :], batch, 0)
        bi, pi = np.nonzero(sup)
        exclude[bi, self.items[j[bi], pi]] = True
        return {"user": self.users[j], "hist": hist, "hist_mask": hist_mask.astype(np.float32),
                "scene": self.scene[j, c],
                "trend": np.log1p(self.trend(t, self.users[j])), "targets": targets,
                "target_mask": tmask.astype(np.float32), "exclude": exclude}


def task_loss(model: MetaRecModel, learner: MetaLearner, b: dict, id_keep, denom: int, future_weight: float,
              steps: int | None = None, topk_weight: float = 0.0, topk_temp: float = 1.0) -> torch.Tensor:
    """Sum over the batch's tasks of CE(next) + future_weight * mean CE(later items) (+ topk_weight * the same
    mix of the top-10 term, see TrainConfig.topk_weight), divided by `denom` (the GLOBAL batch size, so shards
    add up to the 1-process loss)."""
    steps = learner.train_steps if steps is None else steps
    table, bias = model.item_table(id_keep), model.item_bias(id_keep)
    scores = batch_scores(model, learner, table, bias, b["hist"], b["hist_mask"], b["scene"], b["trend"], steps,
                          id_keep)
    masked = scores.masked_fill(b["exclude"], -1e9)
    logp = F.log_softmax(masked, -1)
    tm = b["target_mask"]

    def mix(per_target):  # (B, Q) log-likelihood-like terms -> the next + future_weight * mean(later) sum
        lp = per_target * tm
        later = lp[:, 1:].sum(1) / tm[:, 1:].sum(1).clamp(min=1.0)
        return (lp[:, 0] + future_weight * later).sum()

    loss = -mix(logp.gather(1, b["targets"])) / denom
    if topk_weight > 0:
        cut = masked.topk(min(10, masked.shape[1]), dim=1).values[:, -1:]  # the 10th-highest candidate score
        loss = loss - topk_weight * mix(F.logsigmoid((masked.gather(1, b["targets"]) - cut) / topk_temp)) / denom
    if learner.name == "reptile":
        loss = loss + reptile_pull(model, learner, table, b["hist"], b["hist_mask"], b["scene"], b["targets"],
                                   b["target_mask"]) * b["hist"].shape[0] / denom
    return loss


def _split_backward(model: MetaRecModel, learner: MetaLearner, bt: dict, held: np.ndarray, id_keep,
                    cfg: "TrainConfig") -> torch.Tensor:
    """TrainConfig.meta_holdout_frac: the item memory (ids) learns from the other users' tasks only, the
    adaptation's init and step sizes from the held-out users' tasks only (whose events the ids never saw, as on a
    new user), everything else from both. Sets .grad; returns the (detached) total loss."""
    total = torch.zeros(())
    named = list(model.named_parameters())
    for _, p in named:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for part, mask in (("fit", ~held), ("held", held)):
        if not mask.any():
            continue
        idx = torch.from_numpy(np.flatnonzero(mask))
        sub = {k: v[idx] for k, v in bt.items()}
        loss = task_loss(model, learner, sub, id_keep, cfg.batch_size, cfg.future_weight,
                         topk_weight=cfg.topk_weight, topk_temp=cfg.topk_temp)
        skip = (META_PREFIXES + (TREND_PREFIXES if cfg.holdout_trend else ())) if part == "fit" else ID_PARAMS
        ps = [(n, p) for n, p in named if not n.startswith(skip)]
        grads = torch.autograd.grad(loss, [p for _, p in ps], allow_unused=True)
        for (_, p), g in zip(ps, grads):
            if g is not None:
                p.grad.add_(g)
        total = total + loss.detach()
    return total


def batch_to_torch(b: dict, lo: int, hi: int) -> dict:
    """Rows lo:hi of a TaskBank batch (numpy arrays) as torch tensors."""
    return {k: torch.from_numpy(np.ascontiguousarray(v[lo:hi])) for k, v in b.items()}


# ---------------------------------------------------------------------------------------------- training
def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def meta_holdout_users(cfg: TrainConfig, fit_users: np.ndarray) -> np.ndarray:
    """The fit users whose tasks train only the meta parameters (TrainConfig.meta_holdout_frac), seeded."""
    fit_users = np.asarray(fit_users, np.int64)
    if cfg.meta_holdout_frac <= 0:
        return fit_users[:0]
    pick = np.random.default_rng([cfg.seed, 7919]).random(len(fit_users)) < cfg.meta_holdout_frac
    return np.sort(fit_users[pick])


META_PREFIXES = ("head0.", "log_lr.", "lr_gate.")  # the adaptation's init and step sizes
ID_PARAMS = ("item_emb", "item_bias_id", "trend_item_w")  # per-item memory of the fit users' events
TREND_SCALARS = ("trend_knot_w", "trend_k_off", "trend_aff")  # ModelConfig trend mechanisms' few scalars
TREND_PREFIXES = ("trend_gate.", "trend_gate_new.") + TREND_SCALARS  # how much the trend counts (holdout_trend)


def build_model(cfg: TrainConfig, ds, fit_users: np.ndarray) -> MetaRecModel:
    """A fresh model whose negatives are the fit users' most popular items (stored on the model for the phone)."""
    torch.manual_seed(cfg.seed)
    counts = np.bincount(ds.item[np.isin(ds.user, fit_users)], minlength=ds.n_items)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]  # never an item without a fit event (new items stay out of training)
    r = min(cfg.model.n_negatives, len(order))
    if cfg.negatives == "popular":
        neg = order[:r]
    elif cfg.negatives == "catalog":  # every item with a fit event, most popular first
        neg = order
    else:  # evenly spaced ranks: the inner gradient pushes away from typical items, not only from the hits
        neg = order[np.linspace(0, len(order) - 1, r).round().astype(np.int64)]
    model = MetaRecModel(cfg.model, ds.n_items, item_attributes(ds.item_genres, ds.item_year), neg)
    with torch.no_grad():  # items without a fit event are new items: scored id-less, with the new-item terms
        model.item_known.copy_(torch.from_numpy((counts > 0).astype(np.float32)))
        if cfg.model.pop_prior:
            model.log_pop.copy_(torch.from_numpy(log_popularity(counts)))
    if cfg.cooc_init:
        with torch.no_grad():
            held = meta_holdout_users(cfg, fit_users)  # their events stay out of the item memory
            model.item_emb.copy_(torch.from_numpy(cooc_vectors(ds, np.setdiff1d(fit_users, held), cfg.model.dim)))
    return model


def fit_model(cfg: TrainConfig, ds, fit_users: np.ndarray, ckpt_path: str | os.PathLike | None = None,
              resume: bool = True, ckpt_extra: dict | None = None) -> tuple[MetaRecModel, dict]:
    """Meta-train on `fit_users` of `ds`; checkpoints (and resumes from) `ckpt_path`, the final one with
    `ckpt_extra` (e.g. the validation floor). Returns (model, stats)."""
    rank, world = _dist_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must divide evenly over {world} ranks")
    fit_users = np.asarray(fit_users, np.int64)
    model = build_model(cfg, ds, fit_users)
    learner = cfg.learner_obj()
    ids = [model.item_emb]
    # a few scalars each: at `lr` they could move < 0.6 in 600 steps. The trend mechanisms' scalars
    # (ModelConfig.trend_knots / trend_by_k / trend_affinity) share the new-item rate for the same reason
    new = [p for n, p in model.named_parameters()
           if n in ("new_bias", "pop_w") + TREND_SCALARS or n.startswith("trend_gate_new.")]
    rates = [p for n, p in model.named_parameters() if n.startswith(("log_lr.", "lr_gate."))] \
        if cfg.rate_lr_mult != 1.0 else []
    scene = [p for n, p in model.named_parameters() if n.startswith(("scene_enc.", "head0.W1", "head0.W2"))] \
        if cfg.scene_lr_mult != 1.0 else []
    rest = [p for n, p in model.named_parameters()
            if n not in ("item_emb", "item_bias_id", "new_bias", "pop_w") + TREND_SCALARS
            and not n.startswith("trend_gate_new.")
            and not any(p is q for q in rates + scene)]
    # ids move slowly (they start at the co-occurrence vectors); the small nets may learn faster
    groups = [{"params": ids, "weight_decay": cfg.weight_decay}, {"params": [model.item_bias_id]},
              {"params": rest, "lr": cfg.lr * cfg.dense_lr_mult}, {"params": new, "lr": cfg.new_item_lr}]
    if rates:
        groups.append({"params": rates, "lr": cfg.lr * cfg.dense_lr_mult * cfg.rate_lr_mult})
    if scene:
        groups.append({"params": scene, "lr": cfg.lr * cfg.dense_lr_mult * cfg.scene_lr_mult})
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    start = 0
    avg = WeightAverage(model, cfg.steps - int(round(cfg.average_last * cfg.steps))) if cfg.average_last else None
    if ckpt_path is not None and resume and Path(ckpt_path).is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["train_config"] == cfg.to_dict() and ck["step"] < cfg.steps:
            model.load_state_dict(ck["state_dict"])
            opt.load_state_dict(ck["optimizer"])
            start = ck["step"]
            if avg is not None:
                avg.load(ck.get("weight_average"))
    bank = TaskBank(ds, fit_users, cfg.model.hist_len)
    held_users = meta_holdout_users(cfg, fit_users) if cfg.meta_holdout_frac > 0 else None
    per = cfg.batch_size // world
    lo, hi = rank * per, (rank + 1) * per
    t0 = time.perf_counter()
    losses = []
    bar = tqdm(range(start, cfg.steps), disable=not (cfg.progress and rank == 0), desc=f"meta-train {cfg.learner}")
    for step in bar:
        rng = np.random.default_rng([cfg.seed, step])
        b = bank.sample(rng, cfg.batch_size, cfg.early_frac, cfg.n_targets, cfg.later_start)
        id_keep = torch.from_numpy((rng.random(ds.n_items) >= cfg.model.id_dropout).astype(np.float32))
        bt = batch_to_torch(b, lo, hi)
        opt.zero_grad(set_to_none=False)
        if held_users is None:
            loss = task_loss(model, learner, bt, id_keep, cfg.batch_size, cfg.future_weight,
                             topk_weight=cfg.topk_weight, topk_temp=cfg.topk_temp)
            loss.backward()
        else:
            loss = _split_backward(model, learner, bt, np.isin(b["user"][lo:hi], held_users), id_keep, cfg)
        if world > 1:
            for p in model.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            lt = loss.detach().clone()
            dist.all_reduce(lt)
            loss = lt
        opt.step()
        if avg is not None:
            avg.update(model, step)
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if ckpt_path is not None and rank == 0 and cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 \
                and step + 1 < cfg.steps:
            save_checkpoint(ckpt_path, model, cfg, opt, step + 1, ds, fit_users,
                            extra=None if avg is None else {"weight_average": avg.state()})
    if avg is not None:
        avg.apply(model)
    stats = {"train_seconds": time.perf_counter() - t0, "steps_run": cfg.steps - start, "world_size": world,
             "first_loss": float(np.mean(losses[:5])) if losses else float("nan"),
             "final_loss": float(np.mean(losses[-5:])) if losses else float("nan")}
    if ckpt_path is not None and rank == 0:
        save_checkpoint(ckpt_path, model, cfg, opt, cfg.steps, ds, fit_users, stats, ckpt_extra)
    return model, stats


def save_checkpoint(path, model: MetaRecModel, cfg: TrainConfig, opt, step: int, ds, fit_users, stats=None,
                    extra: dict | None = None):
    """Atomic write (tmp + rename): a kill mid-save never leaves a torn checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck = {"checkpoint_version": CHECKPOINT_VERSION, "train_config": cfg.to_dict(), "step": step,
          "state_dict": model.state_dict(), "optimizer": opt.state_dict(), "n_items": model.n_items,
          "item_ids": [str(x) for x in ds.item_ids], "fit_users": np.asarray(fit_users).tolist(),
          "data_fingerprint": data_fingerprint(ds, fit_users),
          "stats": stats or {}, **(extra or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ck, tmp)
    os.replace(tmp, path)


def data_fingerprint(ds, fit_users) -> str:
    """sha256 of the fit users' events: a checkpoint is reused only for exactly the data it was trained on
    (the new-item run withholds events, so a full-data checkpoint must not serve it)."""
    import hashlib

    keep = np.isin(ds.user, np.asarray(fit_users))
    h = hashlib.sha256()
    for a in (ds.user[keep], ds.item[keep], ds.ts[keep], np.sort(np.asarray(fit_users, np.int64))):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(str(ds.n_items).encode())
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> tuple[MetaRecModel, TrainConfig, dict]:
    """(model in eval mode, its TrainConfig, the raw checkpoint dict)."""
    ck = torch.load(path, weights_only=False)
    if ck.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ck.get('checkpoint_version')} unknown; "
                         f"known: {CHECKPOINT_VERSION}")
    cfg = TrainConfig.from_dict(ck["train_config"])
    return model_from_state(cfg, ck["n_items"], ck["state_dict"], str(path)), cfg, ck


def model_from_state(cfg: TrainConfig, n_items: int, sd: dict, where: str = "checkpoint") -> MetaRecModel:
    """A MetaRecModel (eval mode) from a saved state_dict (a checkpoint's, or its validation prior's)."""
    model = MetaRecModel(cfg.model, n_items, sd["item_attrs"].numpy(), sd["negatives"].numpy())
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # checkpoints from before the new-item terms lack them; their neutral init reproduces the old model exactly
    if unexpected or set(missing) - NEUTRAL_IF_MISSING:
        raise ValueError(f"{where}: state_dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return model.eval()


def fit_users_for(cfg: TrainConfig, ds) -> np.ndarray:
    from metarec.sdk.protocol import split_users

    sp = split_users(ds)
    return sp.train if cfg.fit_users == "train" else np.r_[sp.train, sp.val]


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A TrainConfig from a JSON file (the `--config FILE` of `metarec train`)."""
    return TrainConfig.load(path)


def metarec_factory(checkpoint: str | os.PathLike | None = None, config: TrainConfig | None = None):
    """Factory for `run_protocol`: a MetaRecRecommender that loads `checkpoint` when it fits the run's users and
    meta-trains with `config` (default: the checkpoint's own config) when it does not (the new-item run)."""
    from metarec.sdk.recommender import MetaRecRecommender

    if config is None and checkpoint is not None:
        config = load_checkpoint(checkpoint)[1]
    return lambda: MetaRecRecommender(config=config, checkpoint=checkpoint)


def train(config: TrainConfig | str | os.PathLike | None, out_path: str | os.PathLike, floor: bool = True) -> str:
    """`metarec train --config FILE --out CKPT`: load the data, check the floor on validation users (sdk/floor.py;
    stored in the checkpoint, export refuses a prior below it), meta-train, write the checkpoint. Under torchrun
    (WORLD_SIZE > 1) it joins the gloo group itself and shards tasks over ranks."""
    cfg = TrainConfig() if config is None else config if isinstance(config, TrainConfig) else TrainConfig.load(config)
    from metarec.sdk.data import load_dataset
    from metarec.sdk.protocol import subset_events, withheld_items

    world = int(os.environ.get("WORLD_SIZE", "1"))
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo")
    try:
        # One intra-op thread per rank: the model's tensors are small, so a second thread buys nothing (ML-100K,
        # 600 steps: 22.4 s on 1 thread) and costs everything when the other core is busy -- 2 threads beside
        # another process ran at 2.2 s/step, 55x slower (OpenMP waits for the thread on the busy core).
        # Scale out with ranks (torchrun) instead.
        torch.set_num_threads(1)
        ds = load_dataset(cfg.dataset)
        users = fit_users_for(cfg, ds)  # the split is always taken on the full data
        if cfg.withhold_new_items:
            held = np.zeros(ds.n_items, bool)
            held[withheld_items(ds)] = True
            ds = subset_events(ds, ~held[ds.item])
        extra = None
        if floor:
            from metarec.sdk.floor import floor_summary, validation_run

            run = validation_run(cfg, ds)
            # the report goes into the manifest; the validation prior stays in the checkpoint for export's choices
            extra = {"floor": run.report, "validation": run.to_checkpoint()}
            if int(os.environ.get("RANK", "0")) == 0:
                print(floor_summary(extra["floor"]) + " (before export's popularity, item-item and onboarding terms:"
                      " export checks the bundle against the same baseline)", flush=True)
        _, stats = fit_model(cfg, ds, users, out_path, ckpt_extra=extra)
    finally:
        if own_group:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(stats))
    return str(out_path)
