import json
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metarec.sdk.model import ModelConfig
from metarec.sdk.train import TaskBank, TrainConfig, fit_model, load_checkpoint
from metarec_tiny import tiny_dataset

SMALL = ModelConfig(dim=8, n_prototypes=2, head_hidden=4, hist_len=4, n_negatives=4, inner_steps=2)
# 2 ranks vs 1 process: the same global batches, gradients summed in another order -> float32 round-off only
DIST_TOL = dict(rtol=1e-4, atol=1e-5)


def _cfg(**kw):
    return TrainConfig(model=SMALL, dataset="tiny", steps=4, batch_size=8, n_targets=3, progress=False, **kw)


def _users(ds):
    return np.arange(ds.n_users)


def test_config_json_round_trip_and_validation():
    cfg = _cfg(learner="reptile", seed=3)
    back = TrainConfig.from_json(cfg.to_json())
    assert back == cfg and isinstance(back.model, ModelConfig)
    with pytest.raises(ValueError, match="known"):
        TrainConfig(learner="protonet")
    with pytest.raises(ValueError, match="known"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError):
        TrainConfig(batch_size=0)


def test_tasks_are_time_honest(monkeypatch):
    ds = tiny_dataset()
    bank = TaskBank(ds, _users(ds), 4)
    b = bank.sample(np.random.default_rng(0), 16, 0.5, 3)
    assert b["trend"].shape == (16, ds.n_items) and b["exclude"].shape == (16, ds.n_items)
    # trend counts only other users' events strictly before the query time
    t = np.array([ds.ts[5]])
    u = np.array([ds.user[5]])
    want = np.bincount(ds.item[(ds.ts < t[0]) & (ds.ts >= t[0] - 7 * 86400) & (ds.user != u[0])],
                       minlength=ds.n_items)
    np.testing.assert_array_equal(bank.trend(t, u)[0], want)
    # a batch, from stored sums every 7 events (the stride ML-1M's log would use is 4,096): only other FIT users'
    # events in the week before each query count
    from metarec.sdk.protocol import EventLog

    monkeypatch.setattr(EventLog, "_stride", 7)
    fit = _users(ds)[::2]
    half = TaskBank(ds, fit, 4)
    rows = np.random.default_rng(2).integers(0, ds.n_events, 40)
    tb, ub = ds.ts[rows], ds.user[rows]
    got = half.trend(tb, ub)
    for i in range(len(rows)):
        m = (ds.ts < tb[i]) & (ds.ts >= tb[i] - 7 * 86400) & (ds.user != ub[i]) & np.isin(ds.user, fit)
        np.testing.assert_array_equal(got[i], np.bincount(ds.item[m], minlength=ds.n_items))
    assert got.dtype == np.float32 and got.sum() > 0 and half.trend(tb[:0], ub[:0]).shape == (0, ds.n_items)
    # the support items are excluded, the next item is not
    hm = b["hist_mask"] > 0
    assert all(b["exclude"][i, b["hist"][i, hm[i]]].all() for i in range(16))
    assert not b["exclude"][np.arange(16), b["targets"][:, 0]].any()
    # an item without any fit event (a new item) is kept out of every training softmax
    fit = np.unique(ds.user[ds.item != 0])
    fit = fit[~np.isin(fit, ds.user[ds.item == 0])]
    b2 = TaskBank(ds, fit, 4).sample(np.random.default_rng(1), 8, 0.5, 3)
    assert b2["exclude"][:, 0].all() and not b2["exclude"][:, 1].all()


@pytest.mark.parametrize("learner", ["metasgd", "fomaml", "reptile", "metric"])
def test_training_lowers_loss_and_is_deterministic(learner):
    ds = tiny_dataset()
    cfg = TrainConfig(model=SMALL, dataset="tiny", steps=30, batch_size=16, n_targets=3, progress=False,
                      learner=learner, lr=0.05)
    m1, s1 = fit_model(cfg, ds, _users(ds))
    m2, s2 = fit_model(cfg, ds, _users(ds))
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # the planted even/odd tastes are learnable: the task loss falls
    assert s1["final_loss"] < s1["first_loss"] - 0.2, s1


def test_resume_equals_uninterrupted(tmp_path):
    ds = tiny_dataset()
    cfg = _cfg(ckpt_every=2)
    full, _ = fit_model(cfg, ds, _users(ds))
    ck = tmp_path / "m.pt"
    # a run killed after step 2 leaves its checkpoint at step 2; the rerun resumes there
    half = TrainConfig.from_dict({**cfg.to_dict()})
    fit_model(half, ds, _users(ds), ck)
    state = torch.load(ck, weights_only=False)
    state["step"] = 2
    partial, _ = fit_model(TrainConfig.from_dict({**cfg.to_dict(), "steps": 2}), ds, _users(ds), tmp_path / "p.pt")
    state["state_dict"], state["optimizer"] = partial.state_dict(), torch.load(tmp_path / "p.pt",
                                                                                weights_only=False)["optimizer"]
    torch.save(state, ck)
    resumed, st = fit_model(cfg, ds, _users(ds), ck)
    assert st["steps_run"] == 2
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    model, cfg2, _ = load_checkpoint(ck)
    assert cfg2 == cfg
    torch.testing.assert_close(model.export_item_table(), resumed.export_item_table())


def _rank_main(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        ds = tiny_dataset()
        model, _ = fit_model(_cfg(), ds, _users(ds))
        if rank == 0:
            torch.save(model.state_dict(), out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one_process(tmp_path):
    ds = tiny_dataset()
    one, _ = fit_model(_cfg(), ds, _users(ds))
    out = tmp_path / "two.pt"
    mp.start_processes(_rank_main, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, start_method="spawn")
    two = torch.load(out)
    moved = 0.0
    init, _ = fit_model(TrainConfig.from_dict({**_cfg().to_dict(), "steps": 1}), ds, _users(ds))
    for k, a in one.state_dict().items():
        torch.testing.assert_close(two[k], a, **DIST_TOL, msg=k)
        moved += float((a - init.state_dict()[k]).abs().sum())
    assert moved > 0  # training did move the parameters, so the match is not trivial


def test_spread_negatives_span_the_popularity_ranking():
    from metarec.sdk.train import build_model

    ds = tiny_dataset()
    users = _users(ds)
    counts = np.bincount(ds.item, minlength=ds.n_items)
    pop = build_model(_cfg(), ds, users).negatives.numpy()
    spread = build_model(_cfg(negatives="spread"), ds, users).negatives.numpy()
    assert len(set(spread.tolist())) == len(spread) == SMALL.n_negatives
    assert counts[spread].min() > 0  # never an item without a fit event
    assert counts[spread].max() == counts.max()  # the ranking's head ...
    assert counts[spread].min() < counts[pop].min()  # ... down to its tail, past the popular block
    with pytest.raises(ValueError, match="negatives"):
        TrainConfig(negatives="hard")


def test_config_is_versioned(tmp_path):
    cfg = TrainConfig(model=ModelConfig(dim=16), steps=7)
    (tmp_path / "t.json").write_text(cfg.to_json())
    assert TrainConfig.load(tmp_path / "t.json") == cfg and TrainConfig.from_dict(cfg.to_dict()) == cfg
    text = cfg.to_json()  # indent 1, sorted: the form checkpoints were written in
    assert text.startswith('{\n "') and list(json.loads(text)) == sorted(json.loads(text))
    with pytest.raises(ValueError, match="TrainConfig version 0 unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "version": 0})
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['step'\]; known"):
        TrainConfig.from_dict({"step": 3})


def test_the_tail_weight_average_is_the_mean_of_the_last_steps_iterates():
    """TrainConfig.average_last: the parameters after training are the mean of the iterates of the last steps."""
    import torch

    from metarec.sdk.weight_average import WeightAverage

    m = torch.nn.Linear(2, 1)
    avg = WeightAverage(m, first=2)
    for step, v in enumerate((1.0, 2.0, 3.0, 4.0)):
        with torch.no_grad():
            m.weight.fill_(v)
        avg.update(m, step)
    avg.apply(m)
    assert torch.allclose(m.weight, torch.full_like(m.weight, 3.5))  # steps 2 and 3 only
    st = avg.state()
    other = WeightAverage(m, first=3)
    with pytest.raises(ValueError, match="weight average"):
        other.load(st)  # a checkpoint averaged from another step is not resumed into this run
    with pytest.raises(ValueError, match="average_last"):
        TrainConfig(average_last=1.0)
