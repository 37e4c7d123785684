"""The floor (sdk/floor.py): the prior against simple baselines on validation users, stored and enforced."""
import numpy as np
import pytest
import torch
from metarec_tiny import tiny_dataset
from test_train import SMALL

from metarec.sdk.floor import FLOOR_BASELINES, floor_summary, validation_floor, verdict
from metarec.sdk.train import TrainConfig


def test_verdict_reads_the_paired_interval():
    assert verdict([-0.05, -0.01]) == "below"
    assert verdict([0.01, 0.05]) == "above"
    assert verdict([-0.01, 0.02]) == verdict([0.0, 0.0]) == "tie"


def _cfg(**kw):
    return TrainConfig(model=SMALL, dataset="tiny", steps=20, batch_size=16, n_targets=3, progress=False, **kw)


def test_validation_floor_compares_with_the_best_baseline_on_validation_users():
    ds = tiny_dataset(n_users=120, n_items=40)
    rep = validation_floor(_cfg(), ds, baselines=("popularity", "item_knn", "item_knn+trending"))
    h = rep["headline_hr10"]
    assert set(h) == {"metarec", "popularity", "item_knn", "item_knn+trending"}
    assert rep["best_baseline"] == max(("popularity", "item_knn", "item_knn+trending"), key=h.get)
    assert rep["verdict"] == verdict(rep["paired_hr10_diff_ci"])
    lo, hi = rep["paired_hr10_diff_ci"]
    assert lo <= rep["paired_hr10_diff"] <= hi
    assert rep["best_baseline"] in floor_summary(rep) and rep["verdict"] in floor_summary(rep)
    assert "item_knn+trending" in FLOOR_BASELINES


def test_train_stores_the_floor_and_export_refuses_a_prior_below_it(tmp_path):
    from metarec.export import export_bundle, generate_keypair
    from metarec.export.errors import ExportError
    from metarec.sdk.data import save_csv
    from metarec.sdk.train import train

    csv = tmp_path / "tiny.csv"
    save_csv(tiny_dataset(n_users=120, n_items=40), csv)
    ck = tmp_path / "prior.pt"
    cfg = TrainConfig(**{**_cfg().to_dict(), "dataset": str(csv)})
    train(cfg, ck)
    saved = torch.load(ck, weights_only=False)
    assert saved["floor"]["users"] == "validation" and saved["floor"]["verdict"] in ("below", "tie", "above")
    keys = generate_keypair(tmp_path / "keys")
    saved["floor"] = {**saved["floor"], "verdict": "below", "paired_hr10_diff": -0.1,
                      "paired_hr10_diff_ci": [-0.15, -0.05]}
    torch.save(saved, ck)
    with pytest.raises(ExportError, match="loses to a simple baseline"):
        export_bundle(ck, tmp_path / "b", quant="none", prune="none", key_path=keys / "private.pem")
    assert not (tmp_path / "b" / "manifest.sig").exists()
    out = export_bundle(ck, tmp_path / "b", quant="none", prune="none", key_path=keys / "private.pem", force=True)
    import json

    assert json.loads((out / "manifest.json").read_bytes())["configs"]["floor"]["verdict"] == "below"


def test_forward_blocks_judge_each_block_by_fits_on_the_users_before_it():
    from metarec.sdk.floor import MIN_FIT_SHARE, forward_blocks
    from metarec.sdk.protocol import split_users

    ds = tiny_dataset(n_users=120, n_items=40)
    split = split_users(ds)
    order = np.r_[split.train, split.val, split.test]  # arrival order
    first = np.full(ds.n_users, np.inf)
    np.minimum.at(first, ds.user, ds.ts)
    blocks = forward_blocks(ds, 3)
    assert len(blocks) == 3
    assert np.array_equal(blocks[-1][0], split.train) and np.array_equal(blocks[-1][1], split.val)
    for fit, users in blocks:
        assert len(users) == len(split.val)
        assert np.array_equal(fit, order[:len(fit)])  # every user who arrived before the block, no later one
        assert np.array_equal(users, order[len(fit):len(fit) + len(users)])
        assert first[fit].max() <= first[users].min()
    assert [len(f) for f, _ in blocks] == sorted({len(f) for f, _ in blocks})  # earliest first, disjoint
    assert len(forward_blocks(ds, 1)) == 1
    many = forward_blocks(ds, 20)  # blocks fit on fewer than half the train users are left out
    assert 3 < len(many) < 20 and min(len(f) for f, _ in many) >= MIN_FIT_SHARE * len(split.train)


def test_the_validation_run_pools_its_blocks_and_records_them():
    from metarec.sdk.floor import baseline_on, validation_run
    from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users

    ds = tiny_dataset(n_users=120, n_items=40)
    run = validation_run(_cfg(), ds, baselines=("popularity",))
    assert [b["users"] for b in run.report["blocks"]] == [len(u) for _, u in run.blocks]
    assert run.report["n_users"] == sum(len(u) for _, u in run.blocks) and len(run.blocks) == 3
    assert "in 3 forward blocks" in floor_summary(run.report)
    log = EventLog(ds)
    for fit, users in run.blocks:  # each block's baseline results are those of a fit on the users before it
        own = evaluate_users(baseline_on("popularity", ds, fit, log), ds, users, log, ks=HEADLINE_KS)
        sel = np.isin(run.baseline["user"], users)
        assert np.array_equal(run.baseline["hr"][sel], own["hr"]) and sel.sum() == len(own["hr"])
    ck = run.to_checkpoint()
    assert [len(b["fit"]) for b in ck["blocks"]] == [len(f) for f, _ in run.blocks]
    w = [b["state_dict"]["item_emb"] for b in ck["blocks"]]
    assert not torch.equal(w[0], w[-1])  # three priors, not one stored three times


def test_a_config_file_without_the_field_gets_the_blocks(tmp_path):
    """A hand-written config holds only what differs from the defaults: it must not fall back to one block."""
    (tmp_path / "c.json").write_text('{"seed": 1}')
    assert TrainConfig.load(tmp_path / "c.json").val_blocks == 3 == _cfg().val_blocks
    with pytest.raises(ValueError, match="val_blocks"):
        _cfg(val_blocks=0)
