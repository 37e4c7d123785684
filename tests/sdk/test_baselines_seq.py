"""Sequential baselines (sdk/baselines_seq.py): they learn order that popularity cannot, rank only unseen items,
are seeded, choose their epoch on the inner validation users with the protocol's own metric, and see fit users only."""
import numpy as np
import pytest

from metarec.sdk.baselines import BASELINES, SEEDED, Popularity, make_baseline, run_baselines
from metarec.sdk.baselines_seq import INNER_VAL_SHARE, SeqRec, _sequences
from metarec.sdk.data import build_dataset
from metarec.sdk.floor import FLOOR_BASELINES
from metarec.sdk.floor import INNER_VAL_SHARE as FLOOR_SHARE
from metarec.sdk.protocol import (HEADLINE_KS, EventLog, evaluate_users, make_query, split_users,
                                  summarize_next_item)

N_ITEMS = 40
TINY = dict(dim=16, blocks=1, max_len=8, lr=1e-2, batch=16, max_epochs=25, patience=25, progress=False)


def _chain_world(n_users=150, length=8, seed=0):
    """Every item a is always followed by succ(a) (a fixed random cycle over the catalog); each user starts at a
    uniform random item, so every item is about equally popular: only the order predicts the next item."""
    rng = np.random.default_rng(seed)
    cyc = rng.permutation(N_ITEMS)
    succ = np.empty(N_ITEMS, np.int64)
    succ[cyc] = np.roll(cyc, -1)
    ev = []
    for u in range(n_users):
        a = int(rng.integers(N_ITEMS))
        for j in range(length):
            ev.append((f"u{u:03d}", str(a), u * 86400.0 + j * 60.0))
            a = int(succ[a])
    us, its, ts = zip(*ev)
    ds = build_dataset("chain", us, its, ts, item_ids=[str(i) for i in range(N_ITEMS)])
    idx = ds.item_index()
    succ_idx = np.empty(N_ITEMS, np.int64)  # the cycle in item indices
    for raw in range(N_ITEMS):
        succ_idx[idx[str(raw)]] = idx[str(int(succ[raw]))]
    return ds, succ_idx


@pytest.fixture(scope="module")
def chain():
    ds, succ = _chain_world()
    split = split_users(ds)
    fit = np.r_[split.train, split.val]
    return ds, succ, split, fit, SeqRec("sasrec", **TINY).fit(ds, fit)


def _headline(model, ds, users):
    return summarize_next_item(evaluate_users(model, ds, users, EventLog(ds), ks=HEADLINE_KS),
                               ks=HEADLINE_KS)["headline"]["hr10"]


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec"])
def test_learns_a_planted_order_popularity_cannot(chain, arch):
    ds, succ, split, fit, sas = chain
    m = sas if arch == "sasrec" else SeqRec(arch, **TINY).fit(ds, fit)
    log = EventLog(ds)
    hits = []
    for u in split.test:
        rows = ds.user_events()[u]
        for k in HEADLINE_KS:
            q = make_query(ds, log, int(u), rows, k, ds.ts[rows[k]])
            hits.append(int(np.argmax(m.score(q))) == succ[q.support_items[-1]])
    assert np.mean(hits) >= 0.8  # top-1 is the successor of the last support item (chance: 1 in 37-39)
    assert _headline(m, ds, split.test) >= 0.95
    assert _headline(Popularity(), ds, split.test) < 0.6  # ~10 of 37-39 items: order is the only signal


def test_scores_finite_and_support_sinks(chain):
    ds, _, split, _, m = chain
    log = EventLog(ds)
    u = int(split.test[0])
    rows = ds.user_events()[u]
    q = make_query(ds, log, u, rows, 3, ds.ts[rows[3]])
    s = m.score(q)
    assert s.shape == (ds.n_items,) and np.isfinite(s).all()
    others = np.setdiff1d(np.arange(ds.n_items), q.support_items)
    assert s[q.support_items].max() < s[others].min()
    q0 = make_query(ds, log, u, rows, 0, ds.ts[rows[0]])
    assert np.array_equal(m.score(q0), q0.popularity)  # K=0: popularity, as the other baselines


def test_deterministic_under_seed(chain):
    ds, _, split, fit, m = chain
    log = EventLog(ds)
    u = int(split.test[1])
    rows = ds.user_events()[u]
    q = make_query(ds, log, u, rows, 2, ds.ts[rows[2]])
    again = SeqRec("sasrec", **TINY).fit(ds, fit)
    assert np.array_equal(m.score(q), again.score(q))
    other = SeqRec("sasrec", **{**TINY, "seed": 1}).fit(ds, fit)
    assert not np.allclose(m.score(q), other.score(q))


def test_epoch_chosen_on_inner_users_with_the_protocol_metric(chain):
    ds, _, split, fit, m = chain
    tr, va = m.inner_split(fit)
    assert len(np.intersect1d(tr, va)) == 0 and np.array_equal(np.sort(np.r_[tr, va]), np.sort(fit))
    assert len(va) == int(len(fit) * INNER_VAL_SHARE) and INNER_VAL_SHARE == FLOOR_SHARE
    p = m.params
    assert p["n_train_users"] == len(tr) and p["n_inner_val_users"] == len(va)
    curve = p["inner_val_curve"]
    assert 1 <= p["best_epoch"] <= p["epochs_run"] and p["inner_val_hr10"] == max(curve) == curve[p["best_epoch"] - 1]
    # the kept weights are the best epoch's, and the selection metric is the protocol's headline on those users
    hr, nd = m.inner_headline(_sequences(ds, va, 4), ds.n_items)
    assert (hr, nd) == pytest.approx((p["inner_val_hr10"], p["inner_val_ndcg10"]))
    res = summarize_next_item(evaluate_users(m, ds, va, EventLog(ds), ks=HEADLINE_KS), ks=HEADLINE_KS)["headline"]
    assert (res["hr10"], res["ndcg10"]) == pytest.approx((hr, nd))


def test_early_stopping_stops_after_patience():
    ds, _ = _chain_world(n_users=60)
    split = split_users(ds)
    m = SeqRec("sasrec", **{**TINY, "lr": 0.0, "max_epochs": 10, "patience": 2}).fit(ds, split.train)
    assert m.params["best_epoch"] == 1 and m.params["epochs_run"] == 3  # nothing learns: stop 2 epochs after 1


def test_sees_fit_users_only(chain):
    ds, _, split, fit, m = chain
    log = EventLog(ds)
    # rewrite a test user's history (not a fit user): the fitted weights must not move
    t = int(split.test[-1])
    item = ds.item.copy()
    item[ds.user == t] = 0
    ds2 = type(ds)(**{**ds.__dict__, "item": item})
    m2 = SeqRec("sasrec", **TINY).fit(ds2, fit)
    u = int(split.test[0])
    rows = ds.user_events()[u]
    q = make_query(ds, log, u, rows, 3, ds.ts[rows[3]])
    assert np.array_equal(m.score(q), m2.score(q))
    # control: rewriting a fit user's history does move them
    item2 = ds.item.copy()
    item2[ds.user == int(m.inner_split(fit)[0][0])] = 0
    m3 = SeqRec("sasrec", **TINY).fit(type(ds)(**{**ds.__dict__, "item": item2}), fit)
    assert not np.array_equal(m.score(q), m3.score(q))


def test_bad_arguments():
    with pytest.raises(ValueError, match="known"):
        SeqRec("bert4rec")
    with pytest.raises(ValueError, match="max_len"):
        SeqRec(max_len=2)
    with pytest.raises(RuntimeError, match="fit"):
        ds, _ = _chain_world(n_users=5)
        log = EventLog(ds)
        rows = ds.user_events()[0]
        SeqRec().score(make_query(ds, log, 0, rows, 1, ds.ts[rows[1]]))


def test_registry_seeds_and_blend_with_trending():
    assert {"sasrec", "gru4rec", "sasrec+trending"} <= set(BASELINES) and "sasrec" in SEEDED
    assert make_baseline("sasrec", seed=3).hp["seed"] == 3
    assert not {"sasrec", "gru4rec", "sasrec+trending"} & set(FLOOR_BASELINES)  # the lead decides (fit time)
    ds, _ = _chain_world(n_users=60)
    r = run_baselines(ds, names=["sasrec+trending"], progress=False, seeds=(0,))["sasrec+trending"]
    assert r["params"]["components"] == ["sasrec", "trending"] and r["params"]["weights"] is not None
    assert np.isfinite(r["headline"]["hr10"])
