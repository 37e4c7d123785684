"""The generator's reference scorers (sdk/synthetic_oracle.py) on a small seeded world."""
import numpy as np
import pytest

from metarec.sdk.protocol import EventLog, evaluate_users, split_users, summarize_next_item
from metarec.sdk.synthetic import SyntheticConfig, generate
from metarec.sdk.synthetic_oracle import WorldOracle

CFG = SyntheticConfig(n_users=300, n_items=200, seed=3)


@pytest.fixture(scope="module")
def world():
    ds = generate(CFG)
    return ds, split_users(ds), EventLog(ds)


def test_the_posterior_finds_the_true_prototype_from_the_support(world):
    ds, sp, _ = world
    o = WorldOracle("posterior").fit(ds)
    P = CFG.n_prototypes
    np.testing.assert_allclose(o.posterior([], []), np.full(P, 1 / P))
    hits = {1: [], 3: []}
    for u in sp.test[:80]:
        rows = np.flatnonzero(ds.user == u)
        for k in hits:
            post = o.posterior(ds.item[rows[:k]], ds.ts[rows[:k]])
            assert post.sum() == pytest.approx(1.0)
            hits[k].append(int(np.argmax(post)) == ds.extras["user_prototype"][u])
    assert np.mean(hits[3]) > np.mean(hits[1]) - 0.05 and np.mean(hits[3]) > 2.5 / P  # chance is 1 / P


def test_truth_beats_posterior_beats_the_world_without_the_user(world):
    ds, sp, log = world
    hr = {m: summarize_next_item(evaluate_users(WorldOracle(m).fit(ds), ds, sp.test, log, ks=(1, 2, 3)),
                                 ks=(1, 2, 3))["headline"]["hr10"] for m in ("truth", "posterior", "world")}
    assert hr["truth"] > hr["world"] + 0.05 and hr["posterior"] > hr["world"], hr


def test_a_dataset_without_planted_truth_is_refused():
    from metarec_tiny import tiny_dataset

    with pytest.raises(ValueError, match="synthetic"):
        WorldOracle("truth").fit(tiny_dataset())
    with pytest.raises(ValueError, match="unknown oracle mode"):
        WorldOracle("bayes")


# ---------------------------------------------------------------------------------------------- a world with taste
TASTE = SyntheticConfig(n_users=300, n_items=200, seed=3, proto_strength=1.5, taste_strength=2.0, taste_dim=8,
                        drift_sd=0.5, burst_tail_frac=0.3)


@pytest.fixture(scope="module")
def taste_world():
    ds = generate(TASTE)
    return ds, split_users(ds), EventLog(ds)


def _headline(ds, sp, log, modes):
    return {m: summarize_next_item(evaluate_users(WorldOracle(m).fit(ds), ds, sp.test, log, ks=(1, 2, 3)),
                                   ks=(1, 2, 3))["headline"]["hr10"] for m in modes}


def test_the_oracle_reads_the_users_taste_and_beats_the_world_without_the_user(taste_world):
    ds, sp, log = taste_world
    hr = _headline(ds, sp, log, ("truth", "prototype", "posterior", "posterior_taste", "world"))
    # measured: truth 0.711, prototype 0.350, posterior 0.317, posterior_taste 0.439, world 0.339 (540 queries).
    # The prototypes are weak here (1.5 logits, taste 2.0): knowing the true one is worth +0.01 over the world, so
    # the prototype posterior is not asserted against the world (the default world's test above does that).
    assert hr["truth"] > hr["world"] + 0.25, hr
    assert hr["truth"] > hr["prototype"] + 0.2, hr  # the taste is worth more than the prototype
    assert hr["posterior_taste"] > hr["posterior"] + 0.06, hr  # 1-3 events carry some of the taste
    assert hr["posterior_taste"] > hr["world"] + 0.05, hr


def test_without_taste_the_taste_references_are_the_prototype_ones(world):
    ds, sp, log = world
    rows = np.flatnonzero(ds.user == sp.test[0])
    from metarec.sdk.protocol import make_query

    q = make_query(ds, log, sp.test[0], rows, 2, ds.ts[rows[2]])
    for a, b in (("truth", "prototype"), ("posterior", "posterior_taste")):
        np.testing.assert_array_equal(WorldOracle(a).fit(ds).score(q), WorldOracle(b).fit(ds).score(q))


def test_the_taste_posterior_starts_at_the_prior_and_moves_towards_the_support(taste_world):
    ds, sp, _ = taste_world
    o = WorldOracle("posterior_taste").fit(ds)
    post, mu, cov = o.taste_posterior([], [])
    np.testing.assert_allclose(post, 1 / TASTE.n_prototypes)
    np.testing.assert_allclose(mu, 0.0)
    np.testing.assert_allclose(cov, np.broadcast_to(np.eye(TASTE.taste_dim), cov.shape))
    v, cos = ds.extras["item_taste"], []
    for u in sp.test[:40]:
        rows = np.flatnonzero(ds.user == u)[:3]
        post, mu, cov = o.taste_posterior(ds.item[rows], ds.ts[rows])
        assert post.sum() == pytest.approx(1.0) and np.all(np.linalg.eigvalsh(cov) <= 1.0 + 1e-9)  # narrower
        m = post @ mu
        cos.append(m @ ds.extras["user_taste"][u] / (np.linalg.norm(m) * np.linalg.norm(ds.extras["user_taste"][u])))
        assert m @ v[ds.item[rows]].sum(0) > 0  # towards the items it saw
    assert np.mean(cos) > 0.3, np.mean(cos)  # and towards the user's true taste


def test_oracle_results_are_protocol_rows_on_synthetic_data_only(world):
    from metarec_tiny import tiny_dataset

    from metarec.sdk.synthetic_oracle import MODES, oracle_results

    ds = generate(SyntheticConfig(n_users=120, n_items=80, seed=1, scene_items_per_factor=6))
    out = oracle_results(ds, modes=("truth", "world"))
    assert list(out) == ["oracle (truth)", "oracle (world)"] and "posterior_taste" in MODES
    for r in out.values():
        assert r["reference"] and "1" in r["per_k"] and "learning_curve" in r and r["dataset"] == "synthetic"
    assert out["oracle (truth)"]["headline"]["hr10"] > out["oracle (world)"]["headline"]["hr10"]
    assert oracle_results(tiny_dataset()) == {}
