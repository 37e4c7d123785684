"""The item-item term (runtime_py/neighbors.py): its math, its file, and the runtime adding it (rank method)."""
import numpy as np
import pytest
from tiny_bundle import ITEM_IDS, N, write_bundle

from metarec.runtime import Recommender, TrendingPack
from metarec.runtime.bundle_codecs import decode_neighbors, encode_neighbors
from metarec.runtime.errors import BundleError, InputError
from metarec.runtime.manifest import NeighborSpec
from metarec.runtime.neighbors import NeighborPack, add_neighbor_term, neighbor_term

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


def test_a_padding_neighbour_counts_nowhere_whatever_its_weight():
    ids, w = _table()
    ids[:, -1] = -1  # a pack made in memory keeps -1 (decode_neighbors turns it into id 0, weight 0)
    zero = w.copy()
    zero[:, -1] = 0
    hist = np.array([4, 9, 13])
    (i, v), (i0, v0) = (neighbor_term(ids, x, hist, 3, 0.5, 3.0, N) for x in (w, zero))
    assert (i >= 0).all() and np.array_equal(i, i0) and np.array_equal(v, v0)  # not added at -1, the last item


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


# ---------------------------------------------------------------------------------------------- neighbour packs
def _pack_bundle(tmp_path, tiny, keys, programs, m=5):
    return write_bundle(tmp_path / "b", tiny[0], programs, keys[0], rank=True, neighbors=(None, m, SPEC))


def _user(rec, rng, u):
    items = rng.choice(N, size=int(rng.integers(2, 6)), replace=False)
    events = [(ITEM_IDS[i], T0 + float(rng.uniform(0, 3e5))) for i in items]
    for item, ts in events:
        rec.record(u, item, ts)
    return events


def test_a_neighbour_pack_sets_the_table_and_survives_a_restart(tmp_path, tiny, keys, tiny_rank_programs):
    model = tiny[0]
    ids, w = _table()
    b = _pack_bundle(tmp_path, tiny, keys, tiny_rank_programs)
    now = T0 + 4e5
    rng = np.random.default_rng(2)
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        assert rec.neighbor_spec.file == "" and rec.neighbor_spec.m == 5
        rec.set_trending(TrendingPack.from_counts(now, {}), now=now)
        users = {f"u{u}": _user(rec, rng, f"u{u}") for u in range(8)}
        for u, ev in users.items():  # no pack yet: the term is off
            assert [r.item_id for r in rec.recommend(u, now, k=10)] == model.topk(ev, now, {}, k=10)
        pack = NeighborPack(now - 60, rec.catalog, "transition", ids, w)
        pack.save(tmp_path / "p.nb", keys[0])
        rec.set_neighbors(NeighborPack.load(tmp_path / "p.nb", keys[1]), now=now)
        with_term = {u: [r.item_id for r in rec.recommend(u, now, k=10)] for u in users}
    want = {u: model.topk(ev, now, {}, k=10, neighbors=(ids, w, SPEC)) for u, ev in users.items()}
    assert with_term == want
    assert sum(want[u] != model.topk(ev, now, {}, k=10) for u, ev in users.items()) >= 4  # the pack moved them
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:  # persisted: the same after a restart
        assert {u: [r.item_id for r in rec.recommend(u, now, k=10)] for u in users} == want


def test_bad_neighbour_packs_are_refused_and_change_nothing(tmp_path, tiny, keys, tiny_rank_programs):
    ids, w = _table()
    b = _pack_bundle(tmp_path, tiny, keys, tiny_rank_programs)
    now = T0 + 4e5
    rng = np.random.default_rng(3)
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        rec.set_trending(TrendingPack.from_counts(now, {}), now=now)
        ev = _user(rec, rng, "a")
        rec.set_neighbors(NeighborPack(now - 60, rec.catalog, "transition", ids, w), now=now)
        before = [r.item_id for r in rec.recommend("a", now, k=10)]
        other_ids, other_w = _table(seed=9)
        bad = [NeighborPack(now, "0" * 64, "transition", other_ids, other_w),  # another catalog
               NeighborPack(now, rec.catalog, "cooc", other_ids, other_w),  # another kind
               NeighborPack(now, rec.catalog, "transition", *_table(m=4, seed=9)),  # another m
               NeighborPack(now - 15 * 86400, rec.catalog, "transition", other_ids, other_w),  # stale
               NeighborPack(now + 2 * 86400, rec.catalog, "transition", other_ids, other_w),  # from the future
               NeighborPack(now - 120, rec.catalog, "transition", other_ids, other_w)]  # older than the one in use
        for p in bad:
            with pytest.raises(InputError):
                rec.set_neighbors(p, now=now)
            assert [r.item_id for r in rec.recommend("a", now, k=10)] == before
        with pytest.raises(InputError):
            rec.set_neighbors("not a pack", now=now)
        assert len(ev) >= 2
    # tampered, unsigned or signed by another key: BundleError from load
    NeighborPack(now, "c" * 64, "transition", ids, w).save(tmp_path / "p.nb", keys[0])
    data = bytearray((tmp_path / "p.nb").read_bytes())
    data[-3] ^= 1
    (tmp_path / "t.nb").write_bytes(bytes(data))
    (tmp_path / "t.nb.sig").write_bytes((tmp_path / "p.nb.sig").read_bytes())
    with pytest.raises(BundleError, match="signature"):
        NeighborPack.load(tmp_path / "t.nb", keys[1])
    (tmp_path / "p.nb.sig").unlink()
    with pytest.raises(BundleError):
        NeighborPack.load(tmp_path / "p.nb", keys[1])
    for bad_bytes in (b"", b"{}\n", b'{"at":1}\n' + bytes(10), (tmp_path / "p.nb").read_bytes()[:-2]):
        with pytest.raises(BundleError):
            NeighborPack.from_bytes(bad_bytes)
    with pytest.raises(InputError):  # ids outside the catalog, NaN weights, bad shapes
        NeighborPack(now, "c", "transition", ids + N, w)
    with pytest.raises(InputError):
        NeighborPack(now, "c", "transition", ids, w * np.nan)
    with pytest.raises(InputError):
        NeighborPack(now, "c", "transition", ids[:, :2], w)


def test_a_bundle_without_the_term_refuses_a_neighbour_pack(tmp_path, tiny, keys, tiny_rank_programs):
    b = write_bundle(tmp_path / "b", tiny[0], tiny_rank_programs, keys[0], rank=True)
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        assert rec.neighbor_spec is None
        with pytest.raises(InputError, match="no item-item term"):
            rec.set_neighbors(NeighborPack(T0, rec.catalog, "transition", *_table()), now=T0)


def test_the_neighbors_cli_writes_a_pack_the_device_takes(tmp_path, tiny, keys, tiny_rank_programs):
    from metarec.bench.cli import main

    b = _pack_bundle(tmp_path, tiny, keys, tiny_rank_programs, m=4)
    (tmp_path / "private.pem").write_bytes(keys[0])
    events = tmp_path / "events.csv"
    seq = [ITEM_IDS[i] for i in (1, 2, 3)]  # everyone moves 1 -> 2 -> 3; one user 1 -> 5 after the pack time
    rows = ["user_id,item_id,timestamp"] + [f"u{j},{it},{int(T0) + 10 * j + k}" for j in range(6)
                                            for k, it in enumerate(seq)]
    rows += [f"late,{ITEM_IDS[1]},{int(T0) + 1000}", f"late,{ITEM_IDS[5]},{int(T0) + 1001}"]
    events.write_text("\n".join(rows) + "\n")
    out = tmp_path / "nb.pack"
    assert main(["neighbors", str(events), "--bundle", str(b), "--at", str(int(T0) + 500),
                 "--key", str(tmp_path / "private.pem"), "--out", str(out)]) == 0
    pack = NeighborPack.load(out, keys[1])
    assert pack.kind == "transition" and pack.m == 4 and pack.at == T0 + 500
    # padding decodes as item 0 at weight 0 (decode_neighbors): only 1 -> 2, not the late 1 -> 5
    assert pack.ids[1, 0] == 2 and pack.weights[1, 0] == 1.0 and (pack.weights[1, 1:] == 0).all()
    assert pack.ids[2, 0] == 3 and (pack.weights[3] == 0).all()
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        assert pack.catalog == rec.catalog
        rec.set_neighbors(pack, now=T0 + 600)
    plain = write_bundle(tmp_path / "plain", tiny[0], tiny_rank_programs, keys[0], rank=True)
    assert main(["neighbors", str(events), "--bundle", str(plain), "--at", str(int(T0) + 500),
                 "--key", str(tmp_path / "private.pem"), "--out", str(tmp_path / "x.pack")]) == 2  # no term: refused


def test_mutated_neighbour_pack_bytes_are_a_bundle_error_or_a_valid_pack():
    """A pack's bytes come from outside (the signature is the first gate; this is the second): 2,000 random byte
    flips, truncations and insertions either parse into a pack whose table the term can read, or raise BundleError."""
    ids, w = _table()
    ids[0, -1] = -1
    good = NeighborPack(T0, "c" * 64, "transition", ids, w).to_bytes()
    rng = np.random.default_rng(7)
    parsed = refused = 0
    for _ in range(2000):
        data = bytearray(good)
        op = rng.integers(3)
        pos = int(rng.integers(len(data)))
        if op == 0:
            data[pos] = int(rng.integers(256))
        elif op == 1:
            del data[pos:pos + int(rng.integers(1, 40))]
        else:
            data[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8))
        try:
            p = NeighborPack.from_bytes(bytes(data))
        except BundleError:
            refused += 1
            continue
        parsed += 1
        n = len(p.ids)
        assert p.ids.shape == p.weights.shape and ((p.ids >= 0) & (p.ids < n)).all()
        assert np.isfinite(p.weights).all() and (p.weights >= 0).all()
        neighbor_term(p.ids, p.weights, np.arange(min(n, 4)), 3, 0.5, 1.0, n)  # the term reads it without error
    assert refused > 500 and parsed > 100  # both paths were exercised
