"""The server's neighbour pack at a query's time (sdk/neighbors.py LiveNeighbors, pack_table): the rows the item-item
term reads during evaluation and export's choices equal those of the full table the server would ship."""
import numpy as np
import pytest
from metarec_tiny import tiny_dataset

from metarec.runtime.neighbors import add_neighbor_term
from metarec.sdk.neighbors import DECAY, LAST, LiveNeighbors, build_neighbors, pack_table
from metarec.sdk.protocol import EventLog, subset_events


@pytest.mark.parametrize("kind", ["transition", "cooc"])
def test_live_rows_are_the_full_table_of_other_users_events_before_t(kind):
    ds = tiny_dataset(n_users=40, n_items=25)
    log = EventLog(ds)
    live = LiveNeighbors(kind, m=6)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(6):
        u = int(rng.integers(ds.n_users))
        t = float(np.quantile(ds.ts, rng.uniform(0.3, 0.9)))
        cut = subset_events(ds, (ds.ts < t) & (ds.user != u))  # what a pack at t holds, without the user asking
        ids, w = build_neighbors(cut, np.arange(ds.n_users), kind, 6)
        for s in range(ds.n_items):
            got_ids, got_w = live.row(log, s, t, u)
            assert np.array_equal(got_ids, ids[s]) and np.allclose(got_w, w[s], rtol=1e-6), (kind, s)
            checked += int((ids[s] >= 0).sum())
        hist = rng.choice(ds.n_items, 5, replace=False)
        full = np.zeros(ds.n_items)
        add_neighbor_term(full, ids, w, hist, LAST, DECAY, 1.0)
        part_ids, part_w = live.table(log, hist, t, u)  # only the rows the term reads
        part = np.zeros(ds.n_items)
        add_neighbor_term(part, part_ids, part_w, hist, LAST, DECAY, 1.0)
        r_ids, r_w, local = live.rows(log, hist, t, u)
        rows = np.zeros(ds.n_items)
        add_neighbor_term(rows, r_ids, r_w, local, LAST, DECAY, 1.0)
        assert np.allclose(part, full) and np.allclose(rows, full)
    assert checked > 100  # the tables were not empty


def test_pack_table_is_indexed_by_the_bundles_catalog_and_cut_at_at():
    ds = tiny_dataset(n_users=40, n_items=25)
    at = float(np.median(ds.ts))
    ids_ds, w_ds = build_neighbors(subset_events(ds, ds.ts < at), np.arange(ds.n_users), "transition", 5)
    catalog = [str(x) for x in ds.item_ids[::-1]][:-3] + ["not-in-the-data"]  # reversed, 3 dropped, 1 unknown
    ids, w = pack_table(ds, at, "transition", 5, catalog)
    pos = {x: i for i, x in enumerate(catalog)}
    assert ids.shape == (len(catalog), 5) and (ids[pos["not-in-the-data"]] == -1).all()
    for j, item in enumerate(ds.item_ids):
        if str(item) not in pos:
            continue
        want = [(pos[str(ds.item_ids[k])], x) for k, x in zip(ids_ds[j], w_ds[j]) if k >= 0 and str(ds.item_ids[k]) in pos]
        got = [(int(k), float(x)) for k, x in zip(ids[pos[str(item)]], w[pos[str(item)]]) if k >= 0]
        assert [k for k, _ in got] == [k for k, _ in want] and np.allclose([x for _, x in got], [x for _, x in want])
    later, _ = pack_table(ds, float(ds.ts.max()) + 1, "transition", 5, catalog)
    assert not np.array_equal(later, ids)  # events after `at` are not in the earlier pack
    with pytest.raises(ValueError):
        pack_table(ds, float("nan"), "transition", 5, catalog)


@pytest.mark.parametrize("kind", ["transition", "cooc"])
def test_truncated_rows_are_the_narrow_tables_rows(kind):
    ds = tiny_dataset(n_users=40, n_items=25)
    log = EventLog(ds)
    wide, narrow = LiveNeighbors(kind, m=8), LiveNeighbors(kind, m=3)
    cut = wide.truncated(3)
    assert cut.m == 3 and cut.kind == kind
    for u, q in ((1, 0.5), (7, 0.8), (1, 0.5)):
        t = float(np.quantile(ds.ts, q))
        for s in range(ds.n_items):
            a, b = cut.row(log, s, t, u), narrow.row(log, s, t, u)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError):
        wide.truncated(9)
