"""Export's choices on validation users (export/select.py): serving steps, compression, the bundle's floor."""
import json

import numpy as np
import pytest
import torch

from metarec.export import export_bundle, generate_keypair
from metarec.export.errors import ExportError
from metarec.export.bundle import onboarding_pack_path, selection_report_path
from metarec.export.select import CANDIDATES
from metarec.export.select_report import manifest_record, selection_summary


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
    from metarec_tiny import tiny_dataset
    from test_train import SMALL

    from metarec.sdk.data import save_csv
    from metarec.sdk.train import TrainConfig, train

    d = tmp_path_factory.mktemp("select")
    csv = d / "tiny.csv"
    save_csv(tiny_dataset(n_users=120, n_items=40), csv)
    ck = d / "prior.pt"
    train(TrainConfig(model=SMALL, dataset=str(csv), steps=20, batch_size=16, n_targets=3, progress=False), ck)
    return ck, generate_keypair(d / "keys")


def test_auto_export_chooses_on_validation_users_and_records_why(prior, tmp_path):
    ck, keys = prior
    saved = torch.load(ck, weights_only=False)
    assert {"blocks", "train_config", "baseline"} <= set(saved["validation"])
    out = export_bundle(ck, tmp_path / "b", key_path=keys / "private.pem", export_config=None)
    man = json.loads((out / "manifest.json").read_bytes())
    sel = json.loads(selection_report_path(out).read_text())  # the whole report, grids included
    # the manifest keeps the choices and their figures, not the grids (bytes of the bundle)
    assert man["configs"]["selection"] == json.loads(json.dumps(manifest_record(sel)))
    assert "grid" not in man["configs"]["selection"]["neighbors"]
    assert not {"pop_extras", "term_weights"} & set(man["configs"]["selection"].get("by_history", {}))

    def floats(o):
        return [o] if isinstance(o, float) else [f for v in (o.values() if isinstance(o, dict) else o) for f in
                                                  floats(v)] if isinstance(o, (dict, list)) else []
    assert all(f == round(f, 4) for f in floats(man["configs"]["selection"]))  # 4 decimals in the manifest
    assert any(f != round(f, 4) for f in floats(sel))  # and the full figures beside it, so the check can fail
    names = [r["name"] for r in sel["compression"]]
    assert sel["chosen"] in names and set(names) <= {c[0] for c in CANDIDATES}
    # smallest first; the chosen one is the first within the budget (or the most accurate when none is)
    sizes = [r["table_bytes"] for r in sel["compression"]]
    assert sizes == sorted(sizes)
    for r in sel["compression"]:  # refused only when beyond the budget and measurably below the uncompressed prior
        h = r["headline"]  # over K = 1..10 or on the first three queries
        assert r["within_budget"] == ((r["rel_loss"] <= sel["budget"] or r["paired"]["ci"][1] >= 0)
                                      and (h["rel_loss"] <= sel["budget"] or h["paired"]["ci"][1] >= 0))
    ok = [r for r in sel["compression"] if r["within_budget"]]
    # 3b: checked on the shipped prior from the first within the budget up; the first that keeps its point
    # estimates within the budget there ships
    checked = [r for r in ok if "shipped" in r]
    assert checked and checked[0] is ok[0] and sel["shipped_check"]
    assert [r["shipped"]["ok"] for r in checked] == [False] * (len(checked) - 1) + [True]
    for r in checked:
        assert r["shipped"]["ok"] == (r["shipped"]["rel_loss"] <= sel["budget"]
                                      and r["shipped"]["headline_rel_loss"] <= sel["budget"])
    assert sel["chosen"] == checked[-1]["name"]
    chosen = next(r for r in sel["compression"] if r["name"] == sel["chosen"])
    assert man["configs"]["compress"]["quant"] == chosen["compress"]["quant"]
    # the steps ship only when they measurably pay on the validation users
    steps = sel["steps"]
    assert steps["kept"] == (steps["paired"]["ci"][0] > 0)
    want = steps["trained"] if steps["kept"] else 0
    if want:
        assert man["programs"]["adapt"]["inner_steps"] == want
    else:  # a bundle that never adapts carries no adapt program
        assert "adapt" not in man["programs"] and not (out / "adapt.pte").exists()
    assert sel["bundle_floor"]["verdict"] in ("below", "tie", "above")
    assert "validation" not in man["configs"]  # the validation prior stays in the checkpoint
    # the item-item term: chosen among the candidates that do not cost the first three queries
    grid = sel["neighbors"]["grid"]
    ok = [g for g in grid if g["headline_ok"]]
    if ok:  # the best of the candidates that keep the first three queries, never one that costs them
        top = max(ok, key=lambda g: g["hr10"])
        best = sel["neighbors"]["best"]
        assert (best["kind"], best["m"], best["weight"]) == (top["kind"], top["m"], top["weight"])
    else:
        assert sel["neighbors"]["best"] is None and not sel["neighbors"]["shipped"]
    # the popularity weight: raised only by a delta whose headline gain is measurable, the largest such gain
    pop = sel["popularity"]
    for g in pop["grid"]:
        assert g["pays"] == (g["headline"]["ci"][0] > 0)
    pays = [g for g in pop["grid"] if g["pays"]]
    assert pop["delta"] == (max(pays, key=lambda g: g["headline"]["diff"])["delta"] if pays else 0.0)
    # weights by history length: a bucket moves only with a paired interval above 0, and the manifest ships them
    bh, shipped = sel["by_history"], sel["shipped_by_history"]
    for b in bh.get("buckets", []):  # unmoved: no extra popularity; moved: measurably better on its queries
        assert b["popularity"] == 0.0 if b["paired"] is None else b["paired"]["ci"][0] > 0
    assert man.get("by_history") == (None if shipped is None else
                                     {"term": shipped["term"], "popularity": shipped["popularity"],
                                      "file": "popularity.bin" if shipped["popularity"] else ""})
    # the onboarding term: per bucket a weight whose gain is measurable, or off; the manifest ships the choice, and a
    # first signed pack lies beside the bundle exactly when it does
    ob, shipped = sel["onboarding"], sel["shipped_onboarding"]
    for b in ob["buckets"]:
        w = b["weight"]
        assert w == 0.0 or b["grid"][str(w)]["paired"]["ci"][0] > 0
        assert (w == 0.0) == all(g["paired"]["ci"][0] <= 0 for g in b["grid"].values())
    assert man.get("onboarding") == shipped
    pack = onboarding_pack_path(out)
    assert pack.exists() == (shipped is not None)
    if shipped is not None:
        from metarec.runtime import OnboardingPack

        assert len(OnboardingPack.load(pack, keys / "public.pem").rows) == 11
    # an export that chooses nothing (a given --quant) leaves no report of choices it did not make
    export_bundle(ck, tmp_path / "b", quant="int8", prune="none", key_path=keys / "private.pem")
    assert not selection_report_path(out).exists()


def _validation(prior):
    """(the checkpoint's validation priors, its TrainConfig, dataset, judged users, EventLog)."""
    from metarec.export.select_blocks import ValidationPriors
    from metarec.sdk.data import load_dataset
    from metarec.sdk.protocol import EventLog
    from metarec.sdk.train import TrainConfig

    v = torch.load(prior[0], weights_only=False)["validation"]
    tcfg = TrainConfig.from_dict(v["train_config"])
    ds = load_dataset(tcfg.dataset)
    priors = ValidationPriors.from_checkpoint(v, tcfg, ds)
    return priors, tcfg, ds, priors.judged, EventLog(ds)


def test_the_length_grid_ranks_as_the_served_scorer(prior):
    """2c's grid re-ranks cached scores; what it measures must be what the bundle serves (the sdk's scorer with
    the term and popularity set by history length, as the runtimes read them)."""
    from metarec.export.select import LENGTH_BUCKETS, SELECT_KS, _evaluate, _Memo, _Queries, _recommender, \
        popularity_feature
    from metarec.sdk.neighbors import DECAY, LAST, LiveNeighbors

    priors, tcfg, ds, users, log = _validation(prior)
    nb = (LiveNeighbors("transition", 5), LAST, DECAY, 2.0)
    feature = priors.per_user(popularity_feature)  # each block's own prior's
    qs = _Queries(_Memo(_recommender(priors, tcfg)), nb, ds, users, log, feature)
    term, pop = [0.0, 4.0, 1.0, 0.5], [8.0, 0.0, -8.0, 4.0]
    served = _evaluate(priors, tcfg, ds, users, log, nb=nb, bh={"term": term, "popularity": pop})
    assert np.ptp(feature(users[0])) > 0.3  # the feature is there to move rankings
    moved = 0
    for ks, t, p in zip(LENGTH_BUCKETS, term, pop):
        got = qs.results(ks, p, t)
        sel = np.isin(served["k"], ks)
        assert np.array_equal(got["user"], served["user"][sel]) and np.array_equal(got["k"], served["k"][sel])
        assert np.allclose(got["hr"], served["hr"][sel])
        moved += not np.allclose(qs.results(ks, 0.0, 0.0)["hr"], got["hr"])
    assert moved >= 2 and set(np.unique(served["k"])) <= set(SELECT_KS)


def test_the_item_item_grid_measures_what_the_bundle_serves(prior):
    """2b re-ranks each query's rows once per weight; each grid cell must be the served scorer's HR@10 with the
    term at that kind, m and weight (add_neighbor_term, as the runtimes add it)."""
    from metarec.export.select import _choose_neighbors, _evaluate, _hr, _Memo, _recommender
    from metarec.sdk.neighbors import DECAY, LAST, LiveNeighbors

    priors, tcfg, ds, users, log = _validation(prior)
    full = _evaluate(priors, tcfg, ds, users, log)
    rep, _, _ = _choose_neighbors(_Memo(_recommender(priors, tcfg)), ds, users, log, full, 0.02, lambda m: None)
    cells = {(g["kind"], g["m"], g["weight"]): g["hr10"] for g in rep["grid"]}
    assert len(cells) == 36 and len(set(cells.values())) > 2  # the weights move the ranking
    for kind, m, w in (("transition", 20, 0.0625), ("transition", 50, 16.0), ("cooc", 20, 1.0), ("cooc", 50, 4.0)):
        served = _evaluate(priors, tcfg, ds, users, log, nb=(LiveNeighbors(kind, m), LAST, DECAY, w))
        assert cells[(kind, m, w)] == _hr(served)


def test_a_bundle_below_the_best_baseline_is_refused_unless_forced(prior, tmp_path):
    ck, keys = prior
    saved = torch.load(ck, weights_only=False)
    base = saved["validation"]["baseline"]
    base["hr"] = np.ones_like(base["hr"])  # a baseline that hits every validation query
    bad = tmp_path / "bad.pt"
    torch.save(saved, bad)
    with pytest.raises(ExportError, match="loses to a simple baseline"):
        export_bundle(bad, tmp_path / "b", key_path=keys / "private.pem")
    assert not (tmp_path / "b" / "manifest.sig").exists()
    out = export_bundle(bad, tmp_path / "b", key_path=keys / "private.pem", force=True)
    assert json.loads((out / "manifest.json").read_bytes())["configs"]["selection"]["bundle_floor"]["verdict"] == "below"


def test_explicit_compression_skips_the_choice(prior, tmp_path):
    ck, keys = prior
    out = export_bundle(ck, tmp_path / "b", quant="int8", prune="none", key_path=keys / "private.pem")
    man = json.loads((out / "manifest.json").read_bytes())
    assert "selection" not in man["configs"] and man["configs"]["compress"]["quant"] == "int8"


def test_a_prior_below_the_floor_ships_when_the_chosen_bundle_is_not(prior, tmp_path):
    """The floor of `metarec train` judges the prior alone; with choices to make, export judges the bundle it
    chooses (an item-item term can lift a prior the floor calls below); without them the prior is refused."""
    ck, keys = prior
    saved = torch.load(ck, weights_only=False)
    saved["floor"]["verdict"] = "below"
    base = saved["validation"]["baseline"]
    base["hr"] = np.zeros_like(base["hr"])  # the chosen bundle cannot lose to this baseline
    mixed = tmp_path / "mixed.pt"
    torch.save(saved, mixed)
    out = export_bundle(mixed, tmp_path / "b", key_path=keys / "private.pem")
    assert json.loads((out / "manifest.json").read_bytes())["configs"]["selection"]["bundle_floor"]["verdict"] != "below"
    with pytest.raises(ExportError, match="this prior loses"):
        export_bundle(mixed, tmp_path / "c", quant="int8", prune="none", key_path=keys / "private.pem")


def test_no_offset_terms_are_tried_where_they_cannot_ship(prior):
    """A large catalog's score.pte (or one without the rank method) has no offset to add the term or the weights by
    history length to: selection does not spend a score vector per validation query on them."""
    from metarec.export.select import select

    sel = select(torch.load(prior[0], weights_only=False)["validation"], 0.02, offset_terms=False)
    assert sel.neighbors is None and sel.by_history is None and sel.onboarding is None
    assert sel.report["neighbors"]["grid"] == [] and "rank method" in sel.report["by_history"]["reason"]
    assert "onboarding" not in sel.report
    assert sel.report["bundle_floor"]["verdict"] in ("below", "tie", "above")


def test_the_shipped_prior_check_moves_to_the_next_form_that_keeps_the_budget(model, monkeypatch):
    """3b: a form within the budget on the validation prior but beyond it on the shipped prior is passed over for
    the next one up (by bytes) that keeps it; forms outside the validation budget are never checked."""
    import metarec.export.select as S
    from metarec.export.config import CompressConfig

    k = np.tile(np.arange(1, 11), 20)
    full = (np.arange(len(k)) % 2 == 0).astype(float)  # every other query a hit

    losing = {"int4"}

    def fake_evaluate(m, tcfg, ds, users, log, table=None, quant="none", nb=None, bh=None, ob=None):
        hr = full.copy()
        if quant in losing:  # a fifth of the hits lost: -20%
            hr[np.flatnonzero(full)[::5]] = 0.0
        return {"hr": hr, "k": k}

    monkeypatch.setattr(S, "_evaluate", fake_evaluate)
    rows = [{"name": n, "compress": CompressConfig(quant=q), "within_budget": w}
            for n, q, w in (("int4", "int4", True), ("pruned-ish", "int8", False), ("mixed 10%", "mixed", True),
                            ("int8", "int8", True))]
    users = np.arange(5, 10)
    monkeypatch.setattr("metarec.sdk.train.fit_users_for", lambda cfg, ds: np.arange(10))
    say = []
    pick = S._confirm_on_shipped((model, None), rows, rows[0], 0, 0.0, (None, None, None), None, users, None, 0.02,
                                 say.append)
    assert pick["name"] == "mixed 10%"
    assert rows[0]["shipped"]["ok"] is False and rows[2]["shipped"]["ok"] is True
    assert "shipped" not in rows[1] and "shipped" not in rows[3]  # outside the budget / above the pick
    assert len(say) == 2 and "next" in say[0] and "kept" in say[1]
    losing.update({"mixed", "int8"})  # none keeps it: the largest form checked ships
    pick = S._confirm_on_shipped((model, None), rows, rows[0], 0, 0.0, (None, None, None), None, users, None, 0.02,
                                 say.append)
    assert pick["name"] == "int8" and not any(r["shipped"]["ok"] for r in rows if "shipped" in r)


def test_the_onboarding_weight_is_the_smallest_within_one_standard_error_of_the_best(monkeypatch):
    """2d's rule on a flat top: weights 1..8 gain alike, 0.25 less; the smallest on the top ships, never one whose
    gain is not measurable, and a bucket where nothing gains stays off."""
    import metarec.export.select_onboarding as O

    gains = {0.125: 0.0, 0.25: 0.02, 0.5: 0.03, 1.0: 0.05, 2.0: 0.05, 4.0: 0.05, 8.0: 0.052}

    class FakeQueries:
        def __init__(self, *a):
            pass

        def results(self, ks, w):
            return {"w": w, "ks": ks, "hr": np.zeros(3)}

    def paired(a, b, ks):  # a minus b: the gain of a's weight over b's, +-0.01 (one error 0.0051) or +-0.03
        if ks[0] > 3 or ks[0] == 0:  # a new user and the later lengths: nothing gains
            return {"diff": -0.01, "ci": [-0.03, 0.01]}
        d = gains.get(a["w"], 0.0) - gains.get(b["w"], 0.0)
        half = 0.03 if b["w"] == 0.0 else 0.01
        return {"diff": d, "ci": [d - half, d + half]}

    monkeypatch.setattr(O, "_OnboardingQueries", FakeQueries)
    rep, spec = O.choose_onboarding(None, None, None, None, paired, lambda m: None)
    # measurable: 0.5 .. 8 (gain - 0.03 > 0); best 8; 0.5 is 0.022 below it (> one error), 1 is 0.002 below
    assert spec.weight == (0.0, 1.0, 1.0, 1.0, 0.0)  # entries K = 0, 1, 2, 3, then 4 and longer
    assert [b["weight"] for b in rep["buckets"]] == [0.0, 1.0, 0.0]
    gains.update({w: 0.0 for w in gains})
    assert O.choose_onboarding(None, None, None, None, paired, lambda m: None)[1] is None


def test_the_headline_weight_leans_to_the_count_when_it_leaves_the_bundle_below_the_floor(monkeypatch):
    """2d after the one-SE rule: K = 1..3's weight below the floor's baseline on the same queries is raised to the
    smallest larger weight that reaches it, else to the closest; not below, or no larger weight closer: unchanged."""
    import metarec.export.select_onboarding as O

    hr = {0.0: 0.40, 0.125: 0.41, 0.25: 0.43, 0.5: 0.45, 1.0: 0.46, 2.0: 0.461, 4.0: 0.462, 8.0: 0.464}
    floor = {"w": "floor", "hr": 0.4615}

    class FakeQueries:
        def __init__(self, *a):
            pass

        def results(self, ks, w):
            return {"w": w, "ks": ks, "hr": np.zeros(3)}

    def paired(a, b, ks):  # a minus b, +-0.01: one standard error is 0.0051
        if ks != (1, 2, 3):
            return {"diff": -0.01, "ci": [-0.03, 0.01]}
        d = hr[a["w"]] - (floor["hr"] if b["w"] == "floor" else hr[b["w"]])
        return {"diff": d, "ci": [d - 0.01, d + 0.01]}

    monkeypatch.setattr(O, "_OnboardingQueries", FakeQueries)

    def headline(floor_arg):
        rep, spec = O.choose_onboarding(None, None, None, None, paired, lambda m: None, floor=floor_arg)
        return spec.weight[1], rep["buckets"][1]["toward_floor"]

    assert headline(None) == (1.0, None)  # the one-SE rule alone: 1 is 0.004 below the best, 8
    w, why = headline(floor)  # 1 and 2 are below the floor: 4 is the first to reach it
    assert w == 4.0 and why["from"] == 1.0 and why["gap_after"] > 0
    floor["hr"] = 0.49  # none reaches it: the closest, 8
    assert headline(floor)[0] == 8.0
    floor["hr"] = 0.455  # 1 is above it: unchanged
    assert headline(floor) == (1.0, None)
    hr.update({4.0: 0.44, 8.0: 0.44, 2.0: 0.44})  # below, and every larger weight further below: unchanged, reported
    floor["hr"] = 0.47
    w, why = headline(floor)
    assert w == 1.0 and why["to"] == 1.0 and why["gap_before"] < 0


def test_a_tie_on_few_users_says_how_large_a_loss_it_could_hide():
    def line(ci, verdict, base=0.063):
        rep = {"n_users": 59, "chosen": "mixed 10%",
               "bundle_floor": {"hr10": 0.069, "baseline_hr10": base, "verdict": verdict,
                                "paired": {"diff": (ci[0] + ci[1]) / 2, "ci": list(ci)}}}
        return selection_summary(rep, "popularity")

    wide = line((-0.029, +0.046), "tie")  # the Instacart sample's seed-0 bundle floor
    assert wide.endswith("a loss under about 0.037 (60% of popularity's) would not show on these users")
    assert "about 0.005 (1% of popularity's)" in line((-0.005, +0.005), "tie", base=0.5)
    assert "would not show" not in line((+0.010, +0.046), "above")
    no_base = line((-0.01, +0.01), "tie", base=0.0)
    assert "would not show" in no_base and "% of" not in no_base



def test_each_block_is_scored_by_its_own_prior(prior):
    """Every choice scores a block's users with the prior fit on the users before that block; pooled results are
    the blocks' own, side by side."""
    from metarec.export.select import _evaluate
    from metarec.export.select_blocks import ValidationPriors
    from metarec.sdk.data import load_dataset
    from metarec.sdk.protocol import EventLog
    from metarec.sdk.train import TrainConfig

    v = torch.load(prior[0], weights_only=False)["validation"]
    tcfg = TrainConfig.from_dict(v["train_config"])
    ds = load_dataset(tcfg.dataset)
    log = EventLog(ds)
    priors = ValidationPriors.from_checkpoint(v, tcfg, ds)
    assert len(priors.models) == 3 and np.array_equal(priors.judged, np.concatenate(priors.users))
    pooled = _evaluate(priors, tcfg, ds, priors.judged, log)
    differ = 0
    for i, (m, users) in enumerate(zip(priors.models, priors.users)):
        own = _evaluate(m, tcfg, ds, users, log)
        sel = np.isin(pooled["user"], users)
        assert np.array_equal(pooled["hr"][sel], own["hr"]) and np.array_equal(pooled["k"][sel], own["k"])
        if i < len(priors.models) - 1:
            differ += not np.array_equal(_evaluate(priors.models[-1], tcfg, ds, users, log)["hr"], own["hr"])
    assert differ  # the routing matters: another block's prior ranks some of these queries otherwise


def test_a_checkpoint_before_the_blocks_is_judged_on_the_validation_users(prior):
    from metarec.export.select import select
    from metarec.export.select_blocks import ValidationPriors
    from metarec.sdk.data import load_dataset
    from metarec.sdk.protocol import split_users
    from metarec.sdk.train import TrainConfig

    v = torch.load(prior[0], weights_only=False)["validation"]
    last = v.pop("blocks")[-1]
    old = {**v, "state_dict": last["state_dict"]}
    tcfg = TrainConfig.from_dict(v["train_config"])
    ds = load_dataset(tcfg.dataset)
    split = split_users(ds)
    base = {k: a[np.isin(v["baseline"]["user"], split.val)] for k, a in v["baseline"].items()}
    priors = ValidationPriors.from_checkpoint(old, tcfg, ds)
    assert len(priors.models) == 1 and np.array_equal(priors.fits[0], split.train)
    assert np.array_equal(priors.judged, split.val)
    sel = select({**old, "baseline": base}, 0.02, offset_terms=False)
    assert sel.report["n_users"] == len(split.val) and len(sel.report["blocks"]) == 1


def test_a_prior_without_the_popularity_feature_serves_a_term_by_length(tiny):
    """A checkpoint saved before the popularity prior (pop_prior false: no log_pop) whose 2c moves only the term's
    weight: export serves it (it raised AttributeError reading the feature it does not use)."""
    from metarec.export.select import _recommender
    from metarec.sdk.train import TrainConfig

    rec = _recommender(tiny(pop_prior=False, inner_steps=1), TrainConfig(), bh={"term": [0.0625, 0.0, 0.0, 0.0],
                                                                              "popularity": []})
    assert rec.by_history == ((0.0625, 0.0, 0.0, 0.0), (), None)
