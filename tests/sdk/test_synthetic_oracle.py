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
