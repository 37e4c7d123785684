"""The floor (sdk/floor.py): the prior against simple baselines on validation users, stored and enforced."""
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
