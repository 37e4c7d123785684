"""The item-item term (runtime_py/neighbors.py): its math, its file, and the runtime adding it (rank method)."""
import numpy as np
import pytest
from tiny_bundle import ITEM_IDS, N, write_bundle

from metarec.runtime import Recommender, TrendingPack
from metarec.runtime.bundle_codecs import decode_neighbors, encode_neighbors
from metarec.runtime.errors import BundleError
from metarec.runtime.manifest import NeighborSpec
from metarec.runtime.neighbors import add_neighbor_term, neighbor_term

T0 = 881_000_000.0
SPEC = {"last": 3, "decay": 0.5, "weight": 3.0, "kind": "transition"}


def _table(m=5, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(N, m, replace=False) for _ in range(N)]).astype(np.int64)
    return ids, rng.random((N, m)).astype(np.float16).astype(np.float32)


def test_the_sparse_term_equals_its_dense_definition():
    ids, w = _table()
    hist = np.array([4, 9, 13, 2])  # oldest first: only the last three count, the newest at weight 1
    c = np.zeros(N)
    for age, h in enumerate([2, 13, 9]):
        np.add.at(c, ids[h], 0.5 ** age * w[h])
    s = np.zeros(N)
    add_neighbor_term(s, ids, w, hist, 3, 0.5, 3.0)
    assert np.allclose(s, 3.0 * c / c.std(), atol=1e-5)
    assert neighbor_term(ids, w, np.array([], np.int64), 3, 0.5, 3.0, N)[0].size == 0


def test_the_file_round_trips_and_bad_files_are_bundle_errors():
    ids, w = _table()
    ids[0, -1] = -1  # padding: no neighbour
    got_ids, got_w = decode_neighbors(encode_neighbors(ids, w), N, 5)
    assert np.array_equal(got_ids[1:], ids[1:]) and np.allclose(got_w[1:], w[1:]) and got_w[0, -1] == 0
    data = encode_neighbors(ids, w)
    with pytest.raises(BundleError, match="bytes"):
        decode_neighbors(data[:-2], N, 5)
    bad = ids.copy()
    bad[3, 0] = N
    with pytest.raises(BundleError, match="outside"):
        decode_neighbors(encode_neighbors(bad, w), N, 5)
    nan = w.copy()
    nan[2, 1] = np.nan
    with pytest.raises(BundleError, match="non-finite"):
        decode_neighbors(encode_neighbors(ids, nan), N, 5)
    with pytest.raises(ValueError, match="kind"):  # Manifest.from_dict turns it into a BundleError
        NeighborSpec(file="n.bin", m=5, last=3, decay=0.5, weight=1.0, kind="magic")


def test_runtime_top_k_equals_the_eager_model_with_the_term(tmp_path, tiny, keys, tiny_rank_programs):
    model = tiny[0]
    ids, w = _table()
    nb = (ids, w, SPEC)
    b = write_bundle(tmp_path / "b", model, tiny_rank_programs, keys[0], rank=True, neighbors=nb)
    rng = np.random.default_rng(1)
    changed = 0
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        rec.set_trending(TrendingPack.from_counts(T0 + 4e5, {}), now=T0 + 4e5)
        for u in range(10):
            items = rng.choice(N, size=int(rng.integers(1, 6)), replace=False)
            events = [(ITEM_IDS[i], T0 + float(rng.uniform(0, 3e5))) for i in items]
            for item, ts in events:
                rec.record(f"u{u}", item, ts)
            for now in (T0 + 4e5, T0 + 4e5 + 60):  # forward + rank, then rank alone
                got = [r.item_id for r in rec.recommend(f"u{u}", now, k=10)]
                assert got == model.topk(events, now, {}, k=10, neighbors=nb)
            changed += got != model.topk(events, T0 + 4e5 + 60, {}, k=10)
    assert changed >= 5  # the term moves the ranking: the test would see a runtime that ignored it


def test_a_term_without_the_rank_method_is_refused(tmp_path, tiny, keys):
    b = write_bundle(tmp_path / "b", tiny[0], tiny[1], keys[0], rank=False, neighbors=(*_table(), SPEC))
    with pytest.raises(BundleError, match="rank method"):
        Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1])
