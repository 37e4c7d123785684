"""The item-item term in the native runtime (runtime_py/neighbors.py): a bundle's neighbors.bin or a pack set by the
app joins forward's offset and `rank` ranks, with the Python runtime's answers; bad packs and bad specs are refused."""
import ctypes as C
import hashlib
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from metarec.runtime import Recommender
from metarec.runtime.bundle_codecs import catalog_digest, encode_neighbors
from metarec.runtime.errors import BundleError, InputError
from metarec.runtime.native import NativeRecommender
from metarec.runtime.neighbors import NeighborPack

from native_helpers import T0, resign

SPEC = {"last": 3, "decay": 0.5, "weight": 2.0, "kind": "transition"}
M = 6


def _table(n, m=M, seed=0):
    """Random (N, m) neighbours with some padding (-1), weights as float16 stores them."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.choice(n, m, replace=False) for _ in range(n)]).astype(np.int32)
    ids[rng.random((n, m)) < 0.15] = -1
    return ids, rng.random((n, m)).astype(np.float16).astype(np.float32)


def _with_term(src, dst, pem, spec=SPEC, table=None, data=None, file="neighbors.bin", m=M):
    """A copy of bundle `src` at `dst` whose manifest adds `neighbors` (file "" = no table), signed again."""
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_bytes())
    files = dict(man["files"])
    if file:
        if data is None:
            data = encode_neighbors(*table)
        (dst / file).write_bytes(data)
        files[file] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    resign(dst, pem, neighbors={**spec, "file": file, "m": m}, files=files)
    return dst


def _users(item_ids, n, seed):
    rng = np.random.default_rng(seed)
    return {f"u{u}": [(item_ids[i], T0 + float(t)) for i, t in
                      zip(rng.choice(len(item_ids), 5, replace=False), np.sort(rng.uniform(0, 3e5, 5)))]
            for u in range(n)}


def _drive(rec, users, pack=None, ks=(1, 2, 3, 4, 5)):
    """Top-10 per (user, K) after the user's first K events, each asked twice (forward + rank, then rank alone)."""
    out = {}
    for u, events in users.items():
        for k in ks:
            rec.record(u, *events[k - 1], event_id=f"{u}:{k}")
            now = T0 + 4e5 + 3600.0 * k
            if pack is not None:
                rec.set_neighbors(pack, now=now, allow_older=True)
            first = [r.item_id for r in rec.recommend(u, now, k=10)]
            again = [r.item_id for r in rec.recommend(u, now, k=10)]
            assert again == first, (u, k)
            out[(u, k)] = first
    return out


def _both(bundle, keys, lib, tmp_path, users, pack=None, tag=""):
    with Recommender.open(bundle, tmp_path / f"py{tag}.db", trusted_key=keys / "public.pem") as py:
        want = _drive(py, users, pack)
    with NativeRecommender.open(bundle, tmp_path / f"nat{tag}.db", keys / "public.pem", lib=lib) as nat:
        got = _drive(nat, users, pack)
    return want, got


def test_a_shipped_table_gives_the_python_runtimes_top10_and_moves_the_ranking(exported, keys, item_ids, lib,
                                                                               tmp_path):
    n = len(item_ids)
    b = _with_term(exported[0], tmp_path / "nb", keys / "private.pem", table=_table(n))
    users = _users(item_ids, 24, seed=3)
    want, got = _both(b, keys, lib, tmp_path, users)
    assert got == want and len(want) == 24 * 5
    plain = _both(exported[0], keys, lib, tmp_path, users, tag="plain")[1]
    moved = sum(want[key] != plain[key] for key in want)
    assert moved >= 10  # the term changes the ranking: a runtime ignoring it fails the equality above
    with NativeRecommender.open(b, tmp_path / "spec.db", keys / "public.pem", lib=lib) as nat, \
            Recommender.open(b, tmp_path / "spec-py.db", trusted_key=keys / "public.pem") as py:
        s, p = nat.neighbor_spec, py.neighbor_spec
        assert (s.kind, s.m, s.last, s.decay, s.weight) == (p.kind, p.m, p.last, p.decay, p.weight)
        assert nat.catalog == py.catalog == catalog_digest(item_ids)
    with NativeRecommender.open(exported[0], tmp_path / "none.db", keys / "public.pem", lib=lib) as nat:
        assert nat.neighbor_spec is None


def test_a_bundle_without_a_table_has_no_term_until_a_pack_is_set(exported, keys, item_ids, lib, tmp_path):
    n = len(item_ids)
    b = _with_term(exported[0], tmp_path / "nb", keys / "private.pem", file="")
    users = _users(item_ids, 16, seed=5)
    want, got = _both(b, keys, lib, tmp_path, users, tag="off")
    assert got == want
    ids, w = _table(n, seed=7)
    pack = NeighborPack(T0 + 3e5, catalog_digest(item_ids), "transition", ids, w)
    want_on, got_on = _both(b, keys, lib, tmp_path, users, pack=pack, tag="on")
    assert got_on == want_on
    assert sum(want_on[key] != want[key] for key in want) >= 10  # the pack switched the term on
    h = C.c_int()
    with NativeRecommender.open(b, tmp_path / "t.db", keys / "public.pem", lib=lib) as nat:
        kind = C.create_string_buffer(16)
        assert nat._lib.mr_neighbor_spec(nat._h, kind, 16, None, None, None, None, C.byref(h)) == 0
        assert kind.value == b"transition" and h.value == 0
        nat.set_neighbors(pack, now=T0 + 4e5)
        nat._lib.mr_neighbor_spec(nat._h, kind, 16, None, None, None, None, C.byref(h))
        assert h.value == 1
    with NativeRecommender.open(b, tmp_path / "t.db", keys / "public.pem", lib=lib) as nat:  # persisted
        nat._lib.mr_neighbor_spec(nat._h, kind, 16, None, None, None, None, C.byref(h))
        assert h.value == 1  # tests/native/test_native_neighbor_store.py: the same answers after reopen


def test_a_new_pack_invalidates_every_cached_user(exported, keys, item_ids, lib, tmp_path):
    n = len(item_ids)
    b = _with_term(exported[0], tmp_path / "nb", keys / "private.pem", table=_table(n, seed=1))
    users = _users(item_ids, 8, seed=9)
    packs = [NeighborPack(T0, catalog_digest(item_ids), "transition", *_table(n, seed=s)) for s in (11, 12)]
    out = []
    for tag, opener in (("py", lambda p: Recommender.open(b, p, trusted_key=keys / "public.pem")),
                        ("nat", lambda p: NativeRecommender.open(b, p, keys / "public.pem", lib=lib))):
        with opener(tmp_path / f"{tag}.db") as rec:
            got = []
            for u, events in users.items():
                for e in events:
                    rec.record(u, *e)
            for pack in [None, *packs]:  # every user cached (rank path) before each new pack
                if pack is not None:
                    rec.set_neighbors(pack, now=T0 + 4e5, allow_older=True)
                got.append({u: [r.item_id for r in rec.recommend(u, T0 + 4e5, k=10)] for u in users})
            out.append(got)
    assert out[0] == out[1]
    assert out[1][0] != out[1][1] != out[1][2]


def _bad_packs(catalog, n):
    ids, w = _table(n, seed=2)
    nan, neg, out_of_range = w.copy(), w.copy(), ids.copy()
    nan[3, 1], neg[4, 0], out_of_range[5, 2] = np.nan, -1.0, n

    def raw(i, x, **kw):  # past NeighborPack's own checks: what reaches the C API
        return SimpleNamespace(**{"at": T0, "catalog": catalog, "kind": "transition", "ids": i, "weights": x, **kw})

    small_ids = np.where(ids[:-1] >= n - 1, -1, ids[:-1])
    return [
        NeighborPack(T0, catalog, "cooc", ids, w),  # another kind
        NeighborPack(T0, catalog, "transition", ids[:, :M - 1], w[:, :M - 1]),  # another m
        NeighborPack(T0, catalog, "transition", small_ids, w[:-1]),  # another N
        NeighborPack(T0, "0" * 64, "transition", ids, w),  # another catalog
        raw(ids, nan), raw(ids, neg), raw(out_of_range, w),
        raw(ids, w, at=float("nan")),
    ]


def test_bad_packs_are_input_errors_and_change_nothing(exported, keys, item_ids, lib, tmp_path):
    n = len(item_ids)
    b = _with_term(exported[0], tmp_path / "nb", keys / "private.pem", table=_table(n))
    users = _users(item_ids, 4, seed=13)
    with NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib) as nat:
        for u, events in users.items():
            for e in events:
                nat.record(u, *e)
        before = {u: nat.recommend(u, T0 + 4e5, k=10) for u in users}
        for pack in _bad_packs(nat.catalog, n):
            with pytest.raises(InputError):
                nat.set_neighbors(pack, now=T0)
            assert {u: nat.recommend(u, T0 + 4e5, k=10) for u in users} == before
        ids, w = (np.ascontiguousarray(a) for a in _table(n))
        for args in [(None, M, n, ids.ctypes.data, w.ctypes.data), (b"transition", M, n, None, w.ctypes.data),
                     (b"transition", M, n, ids.ctypes.data, None), (b"transition", M, -1, ids.ctypes.data,
                                                                    w.ctypes.data)]:
            with pytest.raises(InputError):
                nat._check(nat._lib.mr_set_neighbors(nat._h, T0, *args))
        assert {u: nat.recommend(u, T0 + 4e5, k=10) for u in users} == before
    pack = NeighborPack(T0, catalog_digest(item_ids), "transition", *_table(n))
    with NativeRecommender.open(exported[0], tmp_path / "plain.db", keys / "public.pem", lib=lib) as nat:
        with pytest.raises(InputError, match="no item-item term"):
            nat.set_neighbors(pack, now=T0)


def _no_rank(man):
    man["programs"]["score"]["rank_method"] = ""


@pytest.mark.parametrize("change", [
    {"m": 0}, {"m": 257}, {"m": True}, {"last": 0}, {"last": 65}, {"decay": 0}, {"decay": 1.5}, {"weight": 0},
    {"weight": -1.0}, {"weight": "1"}, {"kind": "magic"}, {"extra": 1}, {"file": "missing.bin"}, {"file": 3},
])
def test_a_malformed_neighbors_spec_is_a_bundle_error(exported, keys, lib, tmp_path, change):
    b = _with_term(exported[0], tmp_path / "nb", keys / "private.pem", file="")
    man = json.loads((b / "manifest.json").read_bytes())
    resign(b, keys / "private.pem", neighbors={**man["neighbors"], **change})
    with pytest.raises(BundleError):
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError):  # as the Python runtime
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")


def test_a_missing_field_or_a_bad_table_is_a_bundle_error(exported, keys, item_ids, lib, tmp_path):
    n = len(item_ids)
    ids, w = _table(n)
    good = encode_neighbors(ids, w)
    bad_id, bad_w = ids.copy(), w.copy()
    bad_id[7, 0], bad_w[8, 1] = n, np.inf
    cases = {"truncated": good[:-2], "long": good + b"\0" * 6, "id": encode_neighbors(bad_id, w),
             "weight": encode_neighbors(ids, bad_w), "negative": encode_neighbors(ids, -w)}
    for name, data in cases.items():
        b = _with_term(exported[0], tmp_path / name, keys / "private.pem", data=data)
        with pytest.raises(BundleError, match="neighbors.bin"):
            NativeRecommender.open(b, tmp_path / f"{name}.db", keys / "public.pem", lib=lib)
        with pytest.raises(BundleError):
            Recommender.open(b, tmp_path / f"{name}-py.db", trusted_key=keys / "public.pem")
    b = _with_term(exported[0], tmp_path / "missing", keys / "private.pem", file="")
    man = json.loads((b / "manifest.json").read_bytes())
    resign(b, keys / "private.pem", neighbors={k: v for k, v in man["neighbors"].items() if k != "decay"})
    with pytest.raises(BundleError, match="decay"):
        NativeRecommender.open(b, tmp_path / "m.db", keys / "public.pem", lib=lib)
    b = _with_term(exported[0], tmp_path / "norank", keys / "private.pem", table=(ids, w))
    man = json.loads((b / "manifest.json").read_bytes())
    _no_rank(man)
    resign(b, keys / "private.pem", programs=man["programs"])
    with pytest.raises(BundleError, match="rank method"):
        NativeRecommender.open(b, tmp_path / "r.db", keys / "public.pem", lib=lib)


@pytest.mark.parametrize("lo, hi", [(1, 0x0400), (0x7000, 0x7C00)])  # subnormal halves; normals up to 65504
def test_half_float_weights_decode_as_numpy_reads_them(exported, keys, item_ids, lib, tmp_path, lo, hi):
    """The term is scale-free (c / std(c)), so weights all subnormal or all huge rank as weights in [0, 1) would:
    a decoder flushing subnormals to 0 (no term) or misreading the exponent differs from the Python runtime."""
    n = len(item_ids)
    rng = np.random.default_rng(lo)
    ids = np.stack([rng.choice(n, M, replace=False) for _ in range(n)]).astype(np.int32)
    w = rng.integers(lo, hi, (n, M)).astype(np.uint16).view(np.float16).astype(np.float32)
    b = _with_term(exported[0], tmp_path / "h", keys / "private.pem", table=(ids, w))
    users = _users(item_ids, 8, seed=21)
    want, got = _both(b, keys, lib, tmp_path, users, tag="h")
    assert got == want
    plain = _both(exported[0], keys, lib, tmp_path, users, tag="plain")[0]
    assert sum(want[key] != plain[key] for key in want) >= 5
