"""Options of the adaptation / outer loss (wt-ml3): legacy config loading, the inner item bias, catalog negatives,
curve-aligned later targets and the top-10 outer term."""
import numpy as np
import pytest
import torch

from metarec.sdk.meta import MetaLearner, batch_scores, inner_adapt
from metarec.sdk.model import MetaRecModel, ModelConfig
from metarec.sdk.train import TaskBank, TrainConfig, build_model, task_loss
from metarec_tiny import tiny_dataset

SMALL = ModelConfig(dim=8, n_prototypes=2, head_hidden=4, hist_len=4, n_negatives=4, inner_steps=2)


def _cfg(**kw):
    return TrainConfig(**{"model": SMALL, "dataset": "tiny", "steps": 4, "batch_size": 8, "n_targets": 3,
                          "progress": False, **kw})


def test_configs_saved_before_a_field_existed_load_with_its_legacy_value():
    # an old checkpoint's config dict lacks the new fields: it must get the behaviour it was trained with,
    # whatever the current defaults are
    d = ModelConfig().to_dict()
    for k in ModelConfig.LEGACY:
        d.pop(k)
    assert all(getattr(ModelConfig.from_dict(d), k) == v for k, v in ModelConfig.LEGACY.items())
    t = TrainConfig().to_dict()
    for k in TrainConfig.LEGACY:
        t.pop(k)
    t["model"] = d
    back = TrainConfig.from_dict(t)
    assert all(getattr(back, k) == v for k, v in TrainConfig.LEGACY.items())
    assert back.model.inner_bias == ModelConfig.LEGACY["inner_bias"]
    # an explicit value always wins over the legacy one
    assert ModelConfig.from_dict({**d, "inner_bias": True}).inner_bias
    with pytest.raises(ValueError):
        TrainConfig(topk_temp=0.0)
    with pytest.raises(ValueError):
        TrainConfig(later_start=-1)


def test_a_hand_written_config_keeps_the_model_defaults_it_leaves_out(tmp_path):
    """`metarec train --config` naming one model field: the model's later terms stay on (the nested dict took
    version 1's LEGACY values, and the popularity prior was off)."""
    (tmp_path / "c.json").write_text('{"model": {"inner_steps": 0}, "seed": 3}')
    cfg = TrainConfig.load(tmp_path / "c.json")
    assert cfg.model == ModelConfig(inner_steps=0) and cfg.model.pop_prior and cfg.seed == 3
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # and a saved one reads back the same


def _model(**kw):
    torch.manual_seed(0)
    n = 40
    attrs = np.random.default_rng(0).random((n, 6)).astype(np.float32)
    m = MetaRecModel(ModelConfig(dim=8, head_hidden=4, hist_len=5, **kw), n, attrs, np.arange(n))
    with torch.no_grad():
        m.item_emb.normal_(0, 0.5)
        m.item_bias_id.normal_(0, 1.0)
    return m


def test_inner_bias_needs_biases_and_is_the_catalog_softmax_likelihood():
    m = _model(inner_bias=True)
    table, bias = m.item_table(), m.item_bias()
    hist, mask, scene = torch.tensor([0, 0, 3, 7, 11]), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]), torch.rand(15)
    hv = table[hist]
    h0 = m.head_init()
    with pytest.raises(ValueError, match="inner_bias"):
        m.support_loss(h0, hv, mask, scene, hv, mask, table[m.negatives])
    loss = m.support_loss(h0, hv, mask, scene, hv, mask, table[m.negatives], bias[hist], bias[m.negatives])
    # negatives = the whole catalog: the loss is the model's own softmax CE of each support item (the target
    # also sits among the negatives: the phone's step program adds it once more, log(1 + p) at most)
    z = m.user_vector(h0, hv, mask, scene)
    logits = table @ z + bias
    ce = -(torch.log_softmax(logits, 0)[hist[2:]]).mean()
    dup = torch.log1p(torch.softmax(logits, 0)[hist[2:]]).mean()
    torch.testing.assert_close(loss, ce + dup)
    # adapting (eager helper = the phone program) lowers it, and the bias changes the step
    a = m.adapt(h0, hv, mask, scene, table.detach(), 2, bias=bias.detach(), hist_items=hist)
    after = m.support_loss(a, hv, mask, scene, hv, mask, table[m.negatives], bias[hist], bias[m.negatives])
    assert float(after.detach()) < float(loss.detach()) - 1e-4
    m0 = _model(inner_bias=False)
    a0 = m0.adapt(h0, hv, mask, scene, table.detach(), 2)
    assert not torch.allclose(a["u"], a0["u"])
    with pytest.raises(ValueError, match="inner_bias"):
        m.adapt(h0, hv, mask, scene, table.detach(), 2)


def test_inner_bias_meta_gradients_reach_the_bias_and_step_sizes():
    ds = tiny_dataset()
    cfg = _cfg(negatives="catalog", model=ModelConfig(**{**SMALL.to_dict(), "inner_bias": True}))
    users = np.arange(ds.n_users)
    m = build_model(cfg, ds, users)
    counts = np.bincount(ds.item, minlength=ds.n_items)
    assert sorted(m.negatives.tolist()) == np.flatnonzero(counts).tolist()  # every item with a fit event
    b = TaskBank(ds, users, 4).sample(np.random.default_rng(0), 8, 1.0, 3)
    bt = {k: torch.from_numpy(v) for k, v in b.items()}
    loss = task_loss(m, cfg.learner_obj(), bt, None, 8, 0.3)
    loss.backward()
    assert float(m.log_lr["u"].grad.abs().sum()) > 0 and float(m.item_bias_id.grad.abs().sum()) > 0


def test_later_targets_start_at_the_curve_position():
    ds = tiny_dataset(n_items=40, per_user=16)
    bank = TaskBank(ds, np.arange(ds.n_users), 4)
    bank.items = np.tile(np.arange(bank.items.shape[1]), (bank.items.shape[0], 1))  # item = its 0-based position
    a = bank.sample(np.random.default_rng(3), 64, 1.0, 4)
    b = bank.sample(np.random.default_rng(3), 64, 1.0, 4, later_start=10)
    c = a["targets"][:, 0]  # the next item (= the cut c) is unchanged, so is the support
    np.testing.assert_array_equal(b["targets"][:, 0], c)
    np.testing.assert_array_equal(a["hist"], b["hist"])
    np.testing.assert_array_equal(a["targets"][:, 1:], c[:, None] + np.arange(1, 4))
    want = np.maximum(c + 1, 10)[:, None] + np.arange(3)
    m = b["target_mask"][:, 1:] > 0
    np.testing.assert_array_equal(b["targets"][:, 1:][m], want[m])
    np.testing.assert_array_equal(m, want < 16)  # past the end of the history: masked
    assert (c < 9).any()  # some tasks do skip ahead


def test_topk_term_adds_a_positive_loss_with_gradients():
    ds = tiny_dataset()
    cfg = _cfg()
    users = np.arange(ds.n_users)
    m = build_model(cfg, ds, users)
    b = TaskBank(ds, users, 4).sample(np.random.default_rng(0), 8, 1.0, 3)
    bt = {k: torch.from_numpy(v) for k, v in b.items()}
    base = task_loss(m, cfg.learner_obj(), bt, None, 8, 0.3)
    top = task_loss(m, cfg.learner_obj(), bt, None, 8, 0.3, topk_weight=1.0)
    assert float(top.detach()) > float(base.detach())
    top.backward()
    assert float(m.log_lr["u"].grad.abs().sum()) > 0


def test_rate_lr_mult_moves_only_the_step_sizes_faster():
    from metarec.sdk.train import fit_model

    ds = tiny_dataset()
    users = np.arange(ds.n_users)
    slow, _ = fit_model(_cfg(), ds, users)
    fast, _ = fit_model(_cfg(rate_lr_mult=30.0), ds, users)
    init = float(np.log(SMALL.init_lr))
    moved = lambda m: float(sum((m.log_lr[k] - init).abs().max() for k in m.log_lr).detach())  # noqa: E731
    assert moved(fast) > 10 * moved(slow) > 0
    # everything else took the same first step (Adam's first update is lr * sign-like: equal groups, equal moves)
    one = lambda **kw: fit_model(_cfg(steps=1, **kw), ds, users)[0]  # noqa: E731
    a, b = one(), one(rate_lr_mult=30.0)
    torch.testing.assert_close(a.head0["W1"], b.head0["W1"])
    torch.testing.assert_close(a.item_emb, b.item_emb)


def test_scene_lr_mult_moves_only_the_scene_pathway_faster():
    from metarec.sdk.train import fit_model

    ds = tiny_dataset()
    users = np.arange(ds.n_users)
    one = lambda m: fit_model(_cfg(steps=1, scene_lr_mult=m), ds, users)[0]  # noqa: E731
    init, slow, fast = build_model(_cfg(), ds, users), one(1.0), one(10.0)
    step = lambda a, t: float((t(a) - t(init)).abs().max().detach())  # noqa: E731
    for t in (lambda m: m.scene_enc[0].weight, lambda m: m.head0["W1"], lambda m: m.head0["W2"]):
        assert step(fast, t) == pytest.approx(10 * step(slow, t), rel=1e-3) and step(slow, t) > 0
    # the rest took the same first step (Adam's first update is lr * sign-like)
    for name in ("prototypes", "item_emb", "trend_gate.weight", "log_lr.W1"):
        torch.testing.assert_close(fast.get_parameter(name), slow.get_parameter(name))
    with pytest.raises(ValueError, match="scene_lr_mult"):
        _cfg(scene_lr_mult=0.0)


def test_meta_holdout_splits_what_learns_from_whom():
    from metarec.sdk.train import fit_model, meta_holdout_users

    ds = tiny_dataset()
    users = np.arange(ds.n_users)
    cfg = _cfg(meta_holdout_frac=0.5, steps=1, batch_size=16)
    held = meta_holdout_users(cfg, users)
    assert 0 < len(held) < len(users) and np.array_equal(held, meta_holdout_users(cfg, users))
    # no held-out task in the batch: the adaptation's init does not move, the ids do
    only_fit = np.setdiff1d(users, held)
    m0 = build_model(cfg, ds, users)
    m, _ = fit_model(cfg, ds, users)
    assert not torch.allclose(m.item_emb, m0.item_emb)
    assert not torch.allclose(m.head0["W1"], m0.head0["W1"])  # held-out tasks in a 16-task batch move it
    cfg_fit = _cfg(meta_holdout_frac=0.5, steps=1, batch_size=16)
    bank = TaskBank(ds, users, 4)
    b = bank.sample(np.random.default_rng([cfg.seed, 0]), 16, cfg.early_frac, 3)
    assert np.isin(b["user"], held).any() and np.isin(b["user"], only_fit).any()
    # the split backward: ids get nothing from held-out tasks, head0 nothing from the others
    from metarec.sdk.train import _split_backward

    for keep_held in (True, False):
        mm = build_model(cfg_fit, ds, users)
        mm.zero_grad(set_to_none=True)
        sel = np.isin(b["user"], held) == keep_held
        sub = {k: torch.from_numpy(np.ascontiguousarray(v[sel])) for k, v in b.items()}
        _split_backward(mm, cfg_fit.learner_obj(), sub, np.full(sel.sum(), keep_held), None, cfg_fit)
        ids_moved = float(mm.item_emb.grad.abs().sum()) > 0
        head_moved = float(mm.head0["W1"].grad.abs().sum()) > 0
        assert (ids_moved, head_moved) == ((False, True) if keep_held else (True, False))
        assert float(mm.attr_enc.weight.grad.abs().sum()) > 0  # shared parts learn from both
