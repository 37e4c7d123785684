import numpy as np
import pytest

from metarec.sdk.data import build_dataset
from metarec.sdk.protocol import (EventLog, bootstrap_ci, learning_curve, make_query, rank_metrics, recall_at,
                                  retention_ci, scene_slices, split_users, withheld_items)


def test_rank_metrics_hand_computed():
    # target ties with 2 others, 1 above: ranks uniform over 2..4
    s = np.array([5.0, 4.0, 4.0, 4.0, 1.0])
    hr, nd = rank_metrics(s, 2, np.array([], int), n=2)
    assert hr == pytest.approx(1 / 3)
    assert nd == pytest.approx((1 / np.log2(3)) / 3)
    hr, nd = rank_metrics(s, 2, np.array([], int), n=10)
    assert hr == 1.0
    assert nd == pytest.approx((1 / np.log2(3) + 1 / np.log2(4) + 1 / np.log2(5)) / 3)
    # excluding the top item moves the target up
    hr, nd = rank_metrics(np.array([5.0, 4.0, 1.0]), 1, np.array([0]), n=1)
    assert (hr, nd) == (1.0, 1.0)
    assert rank_metrics(np.array([3.0, 2.0, 1.0]), 2, np.array([], int), n=2) == (0.0, 0.0)


def test_recall_shares_tie_block():
    s = np.array([9.0, 8.0, 5.0, 5.0, 5.0, 5.0, 1.0])
    # top 3: 9, 8, then one slot shared by four items scoring 5
    r = recall_at(s, np.array([0, 2, 6]), np.array([], int), n=3)
    assert r == pytest.approx((1 + 1 / 4) / 3)
    r = recall_at(s, np.array([2, 3]), np.array([0]), n=3)  # 0 excluded: two slots over four tied
    assert r == pytest.approx((2 / 4 + 2 / 4) / 2)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    v = np.random.default_rng(1).random(200)
    a, b = bootstrap_ci(v), bootstrap_ci(v)
    assert a == b and a[0] < v.mean() < a[1]


def _toy():
    # users a (arrives first), b, c; item ids numeric
    users = ["a", "a", "b", "b", "c", "c", "a"]
    items = ["1", "2", "1", "3", "2", "3", "3"]
    ts = [0.0, 10.0, 20.0, 30.0, 30.0, 40.0, 50.0]
    return build_dataset("toy", users, items, ts)


def test_retention_interval_brackets_the_ratio_and_resamples_users_not_queries():
    rng = np.random.default_rng(1)
    n = 200  # users with 4 same-scene queries (HR 0.6) and 2 changed-scene ones (HR 0.3)
    user = np.repeat(np.arange(n), 6)
    changed = np.tile([False] * 4 + [True] * 2, n)
    hr = np.where(changed, rng.random(6 * n) < 0.3, rng.random(6 * n) < 0.6).astype(float)
    res = {"user": user, "k": np.tile([1, 2, 3, 1, 2, 3], n), "hr": hr, "scene_changed": changed,
           "target_scene": [np.zeros(15)] * (6 * n)}
    sc = scene_slices(res)
    lo, hi = sc["retention_ci"]
    assert lo < sc["retention"] < hi and hi < 0.9 and lo > 0.2  # ~0.5, and clearly below 0.9 with 400 changed queries
    assert retention_ci(hr, user, changed, ~changed) == [lo, hi]  # seeded
    # every changed query from one user of 200: most resamples lack it (or it is all there is) -> no interval, where a
    # bootstrap over queries would give a narrow one
    one = user == 0
    assert np.isnan(retention_ci(hr, user, changed & one, ~changed)).all()


def test_time_rule_only_other_users_strictly_before():
    ds = _toy()
    log = EventLog(ds)
    b = int(np.where(ds.user_ids == "b")[0][0])
    rows = np.where(ds.user == b)[0]
    q = make_query(ds, log, b, rows, 1, t=30.0)
    idx = ds.item_index()
    # before t=30, other users did: a:1 (t0), a:2 (t10). b's own event and everything at t>=30 are invisible.
    assert q.popularity[idx["1"]] == 1 and q.popularity[idx["2"]] == 1 and q.popularity[idx["3"]] == 0
    # breaking the rule (counting t <= 30, or b's own events) would give item 3 a count, item 1 two
    assert q.trending.sum() == 2
    assert log.visible(30.0, b).tolist() == [0, 1]


def test_split_by_arrival_time():
    rng = np.random.default_rng(0)
    n = 50
    users = [str(u) for u in range(n) for _ in range(3)]
    first = rng.permutation(n) * 100.0
    ts = [first[u] + j for u in range(n) for j in range(3)]
    ds = build_dataset("s", users, ["1"] * len(users), ts)
    sp = split_users(ds)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (35, 5, 10)
    firsts = {int(ds.user_ids[u]): first[int(ds.user_ids[u])] for u in range(n)}
    assert max(firsts[int(ds.user_ids[u])] for u in sp.train) < min(firsts[int(ds.user_ids[u])] for u in sp.val)
    assert max(firsts[int(ds.user_ids[u])] for u in sp.val) < min(firsts[int(ds.user_ids[u])] for u in sp.test)


def test_withheld_items_follow_the_protocol_definition():
    ds = build_dataset("w", ["u"] * 30, [str(i) for i in range(1, 31)], np.arange(30.0))
    want = np.random.default_rng(0).choice(np.arange(1, 31), size=3, replace=False)
    got = ds.item_ids[withheld_items(ds)].astype(int)
    assert sorted(got.tolist()) == sorted(want.tolist())


class _Oracle:
    """Scores the user's own future (what the time rule forbids); the curve must use support only."""
    name = "support-echo"

    def fit(self, ds, users, log):
        return self

    def score(self, q):
        s = np.zeros(q.trending.shape)
        s[q.support_items] = 1.0  # excluded by the evaluator, so this carries no signal
        return s + q.popularity * 1e-3


def test_learning_curve_fixed_targets():
    rng = np.random.default_rng(0)
    users, items, ts = [], [], []
    for u in range(4):  # distinct items per user: repeated pairs are dropped by build_dataset
        for j, i in enumerate(rng.choice(np.arange(1, 60), 25, replace=False)):
            users.append(str(u)); items.append(str(int(i) + 100 * u)); ts.append(u * 1000.0 + j)
    ds = build_dataset("lc", users, items, ts)
    res = learning_curve(_Oracle(), ds, range(ds.n_users), EventLog(ds), ks=(0, 1, 10))
    assert set(res["recall10"]) == {"0", "1", "10"}
    assert all(v["n"] == 4 for v in res["recall10"].values())
    assert 0.0 <= res["recall10"]["10"]["recall10"] <= 1.0


def test_split_config_is_versioned():
    from metarec.sdk.protocol import SplitConfig

    cfg = SplitConfig(train_frac=0.6)
    assert SplitConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="version"):
        SplitConfig.from_dict({"version": 2})
    with pytest.raises(ValueError, match="known"):
        SplitConfig.from_dict({"test_frac": 0.2})


def test_counts_from_stored_sums_equal_a_pass_over_the_log(monkeypatch):
    """EventLog.counts adds a partial pass to a stored sum every `_stride` events: the same counts as one pass over
    the log, at every cut, window and excluded user (a stride of 7 puts cuts on, before and after each sum)."""
    rng = np.random.default_rng(0)
    n = 500
    ts = np.sort(rng.integers(0, 200, n)).astype(float) * 3600.0
    ds = build_dataset("c", rng.integers(0, 9, n).astype(str), rng.integers(0, 40, n).astype(str), ts)
    log = EventLog(ds)
    monkeypatch.setattr(EventLog, "_stride", 7)
    for t in np.r_[ts[[0, 6, 7, 8, 13, 14, 250, n - 1]], ts[-1] + 1.0, rng.uniform(0, ts[-1], 20)]:
        for u in (0, 4):
            for window in (None, 86400.0, 7 * 86400.0):
                lo = 0 if window is None else np.searchsorted(log.ts, t - window, side="left")
                hi = np.searchsorted(log.ts, t, side="left")
                m = (np.arange(len(log.ts)) >= lo) & (np.arange(len(log.ts)) < hi) & (log.user != u)
                want = np.bincount(log.item[m], minlength=log.n_items).astype(np.float64)
                np.testing.assert_array_equal(log.counts(t, u, window), want)
    assert log._sums.shape == (len(log.item) // 7 + 1, log.n_items)
