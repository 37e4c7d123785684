"""Compression of the prior: structured pruning (dimensions, prototypes) and torchao quantization of the item table.

Pruning really shrinks what ships: a pruned model is a new, smaller `MetaRecModel` (every d-sized axis sliced),
so the item table file, the head file and both programs shrink with it. Importance is measured, not guessed:
- dimension j: its share of the score variance, E_items[v_ij^2] * E_users[z_uj^2], with z the user vectors of
  real (or sampled) histories under phi0;
- prototype m: its mean mixture weight over those histories (a prototype nobody picks costs nothing to drop).

Quantization uses torchao's `Int8DynamicActivationIntxWeightConfig` weight quantizer on a Linear that holds the
table (symmetric, one scale per `group_size` columns), then stores the integers and scales in the runtime's table
layout (runtime_py/table_codec.py pack_table), so what the phone dequantizes is exactly torchao's dequantized table.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
from torch import nn

from metarec.runtime.table_codec import MIXED, decode_table, encode_table, pack_mixed, pack_table, table_nbytes

from .config import CompressConfig


# ---------------------------------------------------------------------------------------------- quantization
@dataclasses.dataclass(frozen=True)
class QuantizedTable:
    """An item table as shipped: the file bytes and the float32 table the phone decodes from them."""

    fmt: str  # runtime table format: float32 | int8 | int4 | mixed
    group_size: int
    data: bytes
    dequantized: np.ndarray  # (N, d) float32, == decode_table(data, ...)
    scale_dtype: str = "float32"


def _torchao_quantize(table: torch.Tensor, bits: int, group_size: int, scale_dtype: str = "float32"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (N, d) in the `bits` range, scale float32 (N, d / group_size), its values `scale_dtype` ones) from
    torchao's weight quantizer."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerGroup, quantize_

    n, d = table.shape
    lin = nn.Linear(d, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(table)
    cfg = Int8DynamicActivationIntxWeightConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                                weight_granularity=PerGroup(group_size),
                                                weight_scale_dtype=getattr(torch, scale_dtype))
    quantize_(lin, cfg)
    w = lin.weight
    q = w.qdata.detach().to(torch.int8).reshape(n, d)
    scale = w.scale.detach().to(torch.float32).reshape(n, d // group_size)
    if getattr(w, "zero_point", None) is not None and bool((w.zero_point != 0).any()):
        raise RuntimeError("torchao returned non-zero zero points for a symmetric config")  # our bug, not input
    return q, scale


def quantize_table(table: torch.Tensor | np.ndarray, quant: str, group_size: int = 32,
                   scale_dtype: str = "float32", wide: np.ndarray | None = None) -> QuantizedTable:
    """The item table as a runtime table file: float32 (`quant="none"`), or torchao int8 / int4 per group with
    `scale_dtype` scales (float16: 2 bytes a group instead of 4; torchao picks q against the half scale), or
    `mixed`: int8 for the rows where `wide` (N,) bool is set, int4 for the others."""
    t = torch.as_tensor(np.asarray(table, np.float32))
    n, d = t.shape
    if quant == "none":
        data = encode_table(t.numpy(), "float32")
        return QuantizedTable("float32", 0, data, decode_table(data, n, d, "float32"), "float32")
    if quant not in ("int8", "int4", MIXED):
        raise ValueError(f"quant {quant!r} unknown; known: none, int8, int4, {MIXED}")
    if (quant == MIXED) != (wide is not None):
        raise ValueError("a row mask goes with the mixed table, and only with it")
    g = group_size or d
    if d % g:
        raise ValueError(f"group_size {g} does not divide d={d}")

    def packed(rows: torch.Tensor, fmt: str) -> bytes:
        if not len(rows):  # torchao needs a row; an empty part is empty bytes
            return b""
        q, scale = _torchao_quantize(rows, 8 if fmt == "int8" else 4, g, scale_dtype)
        return pack_table(q.numpy(), scale.numpy(), fmt, scale_dtype)

    if quant == MIXED:
        wide = np.asarray(wide, bool)
        data = pack_mixed(wide, packed(t[torch.from_numpy(wide)], "int8"), packed(t[torch.from_numpy(~wide)], "int4"))
        assert len(data) == table_nbytes(n, d, quant, g, scale_dtype, int(wide.sum()))
    else:
        data = packed(t, quant)
        assert len(data) == table_nbytes(n, d, quant, g, scale_dtype)
    return QuantizedTable(quant, g, data, decode_table(data, n, d, quant, g, scale_dtype), scale_dtype)


def wide_rows(model, share: float) -> np.ndarray:
    """(N,) bool: the `share` of items whose rows a mixed table stores as int8, the ones fit users used most (the
    model's log_pop; without it, the item bias): they are in most top-10 lists, so their rounding costs most."""
    use = model.log_pop if getattr(model.cfg, "pop_prior", False) else model.export_item_bias()
    use = np.asarray(use.detach().float().numpy(), np.float64)
    k = int(round(share * len(use)))
    out = np.zeros(len(use), bool)
    out[np.argsort(-use, kind="stable")[:k]] = True
    return out


def table_of(model, ccfg: CompressConfig) -> QuantizedTable:
    """The item table file `ccfg` makes of `model` (its group size, scale dtype and, when mixed, row mask)."""
    wide = wide_rows(model, ccfg.int8_share) if ccfg.quant == MIXED else None
    return quantize_table(model.export_item_table(), ccfg.quant, ccfg.table_group_size(model.cfg.dim),
                          ccfg.scale_dtype, wide)


# ---------------------------------------------------------------------------------------------- fidelity metrics
def snr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-noise ratio of `approx` against `ref`, in dB (inf when identical)."""
    ref = np.asarray(ref, np.float64)
    err = np.asarray(approx, np.float64) - ref
    noise = float((err ** 2).sum())
    return math.inf if noise == 0 else 10.0 * math.log10(float((ref ** 2).sum()) / noise)


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """|top-k(a) & top-k(b)| / k for two score vectors (or the mean over rows of two score matrices)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    ta = np.argpartition(-a, k - 1, axis=1)[:, :k]
    tb = np.argpartition(-b, k - 1, axis=1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))


# ---------------------------------------------------------------------------------------------- pruning
def sdk_finetune(ds, fit_users, train_cfg, lr_scale: float = 0.5):
    """finetune(model, steps): a brief meta-training run of the pruned model with sdk.train's task loss."""
    def finetune(model, steps: int):
        from metarec.sdk.train import TaskBank, batch_to_torch, task_loss

        model.train()
        bank = TaskBank(ds, fit_users, model.cfg.hist_len)
        learner = train_cfg.learner_obj()
        opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr * lr_scale)
        B = train_cfg.batch_size
        for step in range(steps):
            rng = np.random.default_rng([train_cfg.seed, 1_000_003, step])
            b = bank.sample(rng, B, train_cfg.early_frac, train_cfg.n_targets, train_cfg.later_start)
            keep = torch.from_numpy((rng.random(ds.n_items) >= model.cfg.id_dropout).astype(np.float32))
            # the prior's own outer loss (top-10 term included): the re-fine-tune must not train another objective
            loss = task_loss(model, learner, batch_to_torch(b, 0, B), keep, B, train_cfg.future_weight,
                             topk_weight=train_cfg.topk_weight, topk_temp=train_cfg.topk_temp)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()
    return finetune


def early_histories(ds, users, L: int, n: int = 512, seed: int = 0) -> np.ndarray:
    """(n, L) right-aligned early histories of fit users (-1 = pad): what importance is measured on."""
    rng = np.random.default_rng(seed)
    per_user = ds.user_events()
    out = np.full((n, L), -1, np.int64)
    for j, u in enumerate(rng.choice(users, n)):
        rows = per_user[u]
        k = int(rng.integers(1, min(L, len(rows)) + 1))
        out[j, L - k:] = ds.item[rows[:k]]
    return out


def _sample_histories(model, n: int, hist_samples: np.ndarray | None, seed: int = 0):
    """(hist_vecs (n, L, d), hist_mask (n, L)) from given item-index histories (n, L; -1 = pad) or random items."""
    L = model.cfg.hist_len
    rng = np.random.default_rng(seed)
    if hist_samples is None:
        idx = rng.integers(0, model.n_items, size=(n, L))
        lens = rng.integers(1, L + 1, size=n)
        idx = np.where(np.arange(L)[None, :] >= L - lens[:, None], idx, -1)
    else:
        idx = np.asarray(hist_samples, np.int64)[:n]
    table = model.export_item_table()
    mask = torch.from_numpy((idx >= 0).astype(np.float32))
    vecs = table[torch.from_numpy(np.maximum(idx, 0))] * mask[..., None]
    return vecs, mask


@torch.no_grad()
def measure_importance(model, hist_samples: np.ndarray | None = None, n: int = 512, seed: int = 0) -> dict:
    """{"dim": (d,) score-variance share per dimension, "prototypes": (M,) mean mixture weight per prototype}."""
    vecs, mask = _sample_histories(model, n, hist_samples, seed)
    head = model.head_init()
    from metarec.sdk.model import SCENE_DIM

    scene = torch.zeros(vecs.shape[0], SCENE_DIM)  # the neutral scene: importance is about the catalog
    zs, mix = [], []
    for i in range(vecs.shape[0]):
        zs.append(model.user_vector(head, vecs[i], mask[i], scene[i]))
        mix.append(model.prototype_mixture(vecs[i], mask[i], scene[i]))
    z = torch.stack(zs)
    table = model.export_item_table()
    dim_imp = (table ** 2).mean(0) * (z ** 2).mean(0)
    return {"dim": (dim_imp / dim_imp.sum()).numpy(), "prototypes": torch.stack(mix).mean(0).numpy()}


def _keep(scores: np.ndarray, k: int | None) -> np.ndarray:
    if k is None or k >= len(scores):
        return np.arange(len(scores))
    return np.sort(np.argsort(-scores, kind="stable")[:k])


@torch.no_grad()
def prune_model(model, keep_dims: np.ndarray, keep_protos: np.ndarray):
    """A new, smaller `MetaRecModel` holding only dimensions `keep_dims` and prototypes `keep_protos`.

    Every tensor with a d-sized (or M-sized) axis is sliced; the head's W1 sees [u0; s; seq], so its columns are
    sliced in the u0 and seq blocks and kept in the scene block.
    """
    from metarec.sdk.model import MetaRecModel

    cfg = model.cfg
    d, s = cfg.dim, cfg.scene_hidden
    D = torch.as_tensor(np.asarray(keep_dims, np.int64))
    M = torch.as_tensor(np.asarray(keep_protos, np.int64))
    new_cfg = dataclasses.replace(cfg, dim=len(D), n_prototypes=len(M))
    new = MetaRecModel(new_cfg, model.n_items, model.item_attrs.numpy(), model.negatives.numpy())
    w1_cols = torch.cat([D, torch.arange(d, d + s), d + s + D])
    sliced = {
        "item_emb": lambda t: t[:, D],
        "attr_enc.weight": lambda t: t[D], "attr_enc.bias": lambda t: t[D],
        "prototypes": lambda t: t[M][:, D],
        "proto_prior.weight": lambda t: t[M], "proto_prior.bias": lambda t: t[M],
        "transition.weight": lambda t: t[D][:, D],
    }
    for pre in ("head0.", "log_lr."):
        sliced[pre + "u"] = lambda t: t[D]
        sliced[pre + "W1"] = lambda t, c=w1_cols: t[:, c]
        sliced[pre + "W2"] = lambda t: t[D]
    src = model.state_dict()
    out = {}
    for name, t in new.state_dict().items():
        v = sliced[name](src[name]) if name in sliced else src[name]
        if tuple(v.shape) != tuple(t.shape):
            raise RuntimeError(f"pruning does not know how to slice {name}: {tuple(src[name].shape)} -> "
                               f"{tuple(t.shape)}; sdk/model.py changed, update export/compress.py")
        out[name] = v.clone()
    new.load_state_dict(out)
    return new.eval()


@torch.no_grad()
def round_head(model, dtype: str):
    """`model` with phi0 (its head0 parameters) rounded to `dtype`, as head0.bin stores it (a copy; float32: as is)."""
    if dtype == "float32":
        return model
    out = copy.deepcopy(model)
    for p in out.head0.parameters():
        p.copy_(p.to(getattr(torch, dtype)).float())
    return out


def compress_model(model, cfg: CompressConfig, hist_samples: np.ndarray | None = None, finetune=None):
    """Step 1 of export: prune by measured importance (then `finetune(model, steps)` if given) and round phi0 to
    `cfg.head_dtype`; return (model, report dict). Quantization of the table happens when the bundle is written
    (`table_of`)."""
    model = copy.deepcopy(model).eval()
    report: dict = {"d_before": model.cfg.dim, "prototypes_before": model.cfg.n_prototypes}
    if cfg.prunes:
        imp = measure_importance(model, hist_samples, cfg.importance_samples)
        keep_d = _keep(imp["dim"], cfg.prune_dim)
        keep_m = _keep(imp["prototypes"], cfg.prune_prototypes)
        report.update(kept_dims=keep_d.tolist(), kept_prototypes=keep_m.tolist(),
                      dim_importance_kept=float(imp["dim"][keep_d].sum()),
                      prototype_usage_kept=float(imp["prototypes"][keep_m].sum()))
        model = prune_model(model, keep_d, keep_m)
        if cfg.finetune_steps and finetune is not None:
            model = finetune(model, cfg.finetune_steps).eval()
            report["finetune_steps"] = cfg.finetune_steps
    report.update(d_after=model.cfg.dim, prototypes_after=model.cfg.n_prototypes)
    return round_head(model, cfg.head_dtype), report
