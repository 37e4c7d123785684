import json

import numpy as np
import pytest

from metarec.sdk.coldstart import (FULL, TWIN, load_ablations, mean_over_seeds, run_variant,
                                   variant_config)
from metarec.sdk.coldstart_report import write_coldstart
from metarec.sdk.model import ModelConfig
from metarec.sdk.protocol import EventLog, make_query, split_users
from metarec.sdk.recommender import MetaRecRecommender
from metarec.sdk.train import TrainConfig
from metarec_tiny import tiny_dataset

BASE = TrainConfig(model=ModelConfig(dim=8, n_prototypes=2, head_hidden=4, hist_len=4, n_negatives=4),
                   dataset="tiny", steps=15, batch_size=16, n_targets=3, progress=False, lr=0.05,
                   fit_users="train")


def test_variants_apply_their_switches():
    assert variant_config(BASE, "no scene encoder", 1).model.use_scene is False
    assert variant_config(BASE, "reptile", 0, {"reptile": ({"learner": "reptile"}, {})}).learner == "reptile"
    assert variant_config(BASE, TWIN, 0).model.inner_steps == 0
    assert variant_config(BASE, FULL, 2).seed == 2
    with pytest.raises(ValueError, match="known"):
        variant_config(BASE, "no dropout", 0)


def test_ablations_file_py_or_json(tmp_path):
    (tmp_path / "a.py").write_text('ABLATIONS = {"reptile": ({"learner": "reptile"}, {})}\n')
    (tmp_path / "a.json").write_text('{"reptile": [{"learner": "reptile"}, {}]}')
    assert load_ablations(tmp_path / "a.py") == load_ablations(tmp_path / "a.json") == {
        "reptile": ({"learner": "reptile"}, {})}
    (tmp_path / "bad.json").write_text('{"reptile": [{"learner": "reptile"}]}')
    with pytest.raises(ValueError, match="reptile"):
        load_ablations(tmp_path / "bad.json")


def test_recommender_scores_catalog_and_adapts():
    ds = tiny_dataset()
    sp, log = split_users(ds), EventLog(ds)
    rec = MetaRecRecommender(BASE).fit(ds, sp.train, log)
    u = int(sp.val[0])
    rows = ds.user_events()[u]
    q0 = make_query(ds, log, u, rows, 0, ds.ts[rows[3]])
    q3 = make_query(ds, log, u, rows, 3, ds.ts[rows[3]])
    s0, s3 = rec.score(q0), rec.score(q3)
    assert s0.shape == (ds.n_items,) and np.isfinite(s3).all()
    assert not np.allclose(s0, s3)  # the support moves the scores
    head = rec.adapted_head(q3.support_items, q3.scene)
    assert any(not np.allclose(head[k].numpy(), rec.head0[k].numpy()) for k in head)  # 3 steps moved the head


def test_report_files_name_their_command(tmp_path):
    ds = tiny_dataset()
    r = run_variant(ds, variant_config(BASE, FULL, 0), users="val")
    assert 0.0 <= r["headline"]["hr10"] <= 1.0 and "learning_curve" in r
    m = mean_over_seeds([r])
    report = {"dataset": "tiny", "users": "val", "seeds": [0], "ablation_seeds": "0",
              "full": {"mean": m}, "ablations": {FULL: {"mean": m}}}
    write_coldstart(report, "python -m metarec.sdk.coldstart --users val", tmp_path)  # no baselines.json there
    data = json.loads((tmp_path / "coldstart.json").read_text())
    assert data["provenance"]["command"].endswith("--users val")
    assert "--users val" in (tmp_path / "coldstart.md").read_text()
    assert (tmp_path / "coldstart.png").stat().st_size > 1000


def test_prototype_recovery_on_planted_data():
    from metarec.sdk.coldstart_diagnostics import prototype_recovery
    from metarec.sdk.synthetic import SyntheticConfig, generate

    ds = generate(SyntheticConfig(n_users=80, n_items=60, events_min=6, events_max=10, scene_items_per_factor=2))
    sp, log = split_users(ds), EventLog(ds)
    rec = MetaRecRecommender(BASE).fit(ds, sp.train, log)
    r = prototype_recovery(rec.model, ds, sp.train, sp.test)
    assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 < r["chance"] <= 1.0
    assert r["n_users"] == sum(len(ds.user_events()[u]) > 3 for u in sp.test)


def test_paired_difference_pairs_queries_and_bootstraps_users():
    from metarec.sdk.coldstart_diagnostics import paired_difference

    user, k = np.repeat(np.arange(50), 3), np.tile([1, 2, 3], 50)
    a = {"user": user, "k": k, "hr": (user % 2).astype(float)}  # half the users hit everything
    assert paired_difference(a, a) == {"hr10_diff": 0.0, "hr10_diff_ci": [0.0, 0.0], "n_users": 50,
                                       "n_queries": 150, "n_seeds": 1, "measurable": False}
    b = {**a, "hr": np.zeros(150)}
    d = paired_difference([a, a], [b, b])
    assert d["hr10_diff"] == pytest.approx(0.5) and d["measurable"] and d["n_seeds"] == 2
    assert 0.3 < d["hr10_diff_ci"][0] < 0.5 < d["hr10_diff_ci"][1] < 0.7
    with pytest.raises(ValueError, match="same queries"):
        paired_difference(a, {**b, "user": user[::-1].copy()})
    with pytest.raises(ValueError, match="same number"):
        paired_difference([a], [b, b])


def test_curve_paired_difference_pairs_users_and_the_report_states_it():
    """The adaptation test: per-user learning-curve differences pooled over seeds; a real gap is "measurable", equal
    runs are not, and runs over different users are refused; the report pairs the twin's seeds with the full's."""
    from metarec.sdk.coldstart_diagnostics import adaptation_effect, curve_paired_difference

    users = list(range(40))

    def run(vals):
        return {"learning_curve": {"users": users, "recall10": {
            k: {"recall10": float(np.mean(vals)), "per_user": list(map(float, vals))} for k in ("3", "5")}}}
    hi = run((np.arange(40) % 4) / 10.0 + 0.1)
    lo = run((np.arange(40) % 4) / 10.0)
    same = curve_paired_difference([hi], [hi])
    assert same["3"]["recall10_diff"] == 0.0 and not same["3"]["measurable"]
    d = curve_paired_difference([hi, hi], [lo, lo])
    assert d["5"]["recall10_diff"] == pytest.approx(0.1) and d["5"]["measurable"] and d["n_seeds"] == 2
    assert d["3"]["per_seed"] == pytest.approx([0.1, 0.1])
    other = {"learning_curve": {**lo["learning_curve"], "users": users[::-1]}}
    with pytest.raises(ValueError, match="same users"):
        curve_paired_difference([hi], [other])
    with pytest.raises(ValueError, match="same number"):
        curve_paired_difference([hi], [lo, lo])
    report = {"full": {"seeds": {"0": hi, "1": hi}}, "twin": {"name": TWIN, "seeds": {"0": lo}, "seed_list": [0]}}
    eff = adaptation_effect(report)
    assert eff["n_seeds"] == 1 and eff["3"]["measurable"]
    assert adaptation_effect({"full": report["full"]}) is None


def test_synthetic_truth_reports_the_paired_scene_effect(tmp_path):
    import dataclasses

    from metarec.sdk.coldstart_diagnostics import synthetic_truth
    from metarec.sdk.coldstart_report import coldstart_markdown
    from metarec.sdk.synthetic import SyntheticConfig

    syn = SyntheticConfig(n_users=60, n_items=60, events_min=6, events_max=10, scene_items_per_factor=4)
    out = synthetic_truth(dataclasses.replace(BASE, fit_users="train+val"), seeds=(0, 1), syn_cfg=syn)
    assert out["synthetic_config"] == syn.to_dict() and out["seeds"] == [0, 1]
    full, blind = out["runs"][FULL], out["runs"]["no scene encoder"]
    assert [r["seed"] for r in full] == [0, 1] and all("prototypes" in r for r in full)
    eff = out["scene_effect"]
    # the per-user paired difference over the same queries is the difference of the headlines, seed by seed
    per_seed = [f["headline"]["hr10"] - b["headline"]["hr10"] for f, b in zip(full, blind)]
    assert eff["per_seed"] == pytest.approx(per_seed)
    assert eff["hr10_diff"] == pytest.approx(np.mean(per_seed))
    assert eff["hr10_diff_ci"][0] <= eff["hr10_diff"] <= eff["hr10_diff_ci"][1]
    assert eff["n_users"] == full[0]["headline"]["n_users"] and eff["n_seeds"] == 2
    assert 0 < out["planted_scene"]["catalog_share_active"] < out["planted_scene"]["events_on_active_scene_items"]
    m = full[0]["per_k"]
    md = coldstart_markdown({"dataset": "synthetic", "users": "test", "seeds": [0], "ablation_seeds": "0",
                             "full": {"mean": {"headline_hr10": None, "headline_ndcg10": None,
                                               "per_k_hr10": {k: None for k in m}}},
                             "ablations": {}, "synthetic": out}, None)
    assert "Scene effect, full - no scene encoder" in md and f"{eff['hr10_diff']:+.3f}" in md
    assert "Planted scene effect" in md and "| no scene encoder |" in md and "Day-part lift" in md
    lift = full[0]["day_part_lift"]
    assert lift["planted"] == 2 * syn.scene_boost and lift["n"] == 3 * eff["n_queries"]  # 3 clock moves per query
    assert np.isfinite(lift["learned"]) and lift["learned"] != 0.0


def test_no_scene_model_learns_no_day_part_lift():
    from metarec.sdk.coldstart_diagnostics import learned_day_part_lift
    from metarec.sdk.synthetic import SyntheticConfig, generate

    ds = generate(SyntheticConfig(n_users=40, n_items=60, events_min=5, events_max=8, scene_items_per_factor=4))
    sp, log = split_users(ds), EventLog(ds)
    rec = MetaRecRecommender(variant_config(BASE, "no scene encoder", 0)).fit(ds, sp.train, log)
    r = learned_day_part_lift(rec, ds, sp.test, log)
    assert r["n"] > 0 and r["learned"] == pytest.approx(0.0, abs=1e-6)


def test_checkpoint_reused_only_for_its_own_data(tmp_path):
    import dataclasses

    import torch

    from metarec.sdk.train import fit_model

    ds = tiny_dataset()
    sp = split_users(ds)
    ck = tmp_path / "m.pt"
    trained, _ = fit_model(BASE, ds, sp.train, ck)
    same = MetaRecRecommender(checkpoint=ck).fit(ds, sp.train)
    torch.testing.assert_close(same.table, trained.export_item_table())
    keep = ds.item != 0  # the new-item run: the same users with some events withheld
    sub = dataclasses.replace(ds, user=ds.user[keep], item=ds.item[keep], rating=ds.rating[keep], ts=ds.ts[keep])
    other = MetaRecRecommender(checkpoint=ck).fit(sub, sp.train)
    assert not torch.allclose(other.table, trained.export_item_table())  # retrained, not reused
