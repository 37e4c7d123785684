"""Weights by history length (manifest `by_history`, runtime_py/manifest.py HistoryWeights) in the native runtime:
the item-item term's weight and the popularity feature's weight per history length K give the Python runtime's
top-10 at every K (forward + rank, then rank alone), with a shipped table or a pack; every refusal is Python's."""
import hashlib
import json
import shutil

import numpy as np
import pytest

from metarec.runtime import Recommender
from metarec.runtime.bundle_codecs import catalog_digest, encode_neighbors, encode_popularity
from metarec.runtime.errors import BundleError
from metarec.runtime.native import NativeRecommender
from metarec.runtime.neighbors import NeighborPack

from native_helpers import T0, resign
from test_native_neighbors import M, SPEC, _table

TERM = [0.0, 1.5, 6.0, 2.0]  # K = 1: off; 2: weak; 3: strong; >= 4: the spec's weight (2.0)
POP = [2.5, 0.0, -1.0, 0.5]  # K = 0 and 1: up; 2: none; 3: down; >= 4: a little up
KMAX = 6  # users are asked at K = 0 .. 6: every entry and past the last


def _feature(n, seed=3):
    """An (N,) popularity feature as popularity.bin stores it (float16 values)."""
    return np.random.default_rng(seed).normal(0, 1, n).astype(np.float16).astype(np.float32)


def _variant(src, dst, pem, by_history, table=None, nb_file=None, pop=None, pop_data=None, **changes):
    """A copy of bundle `src` at `dst` with `by_history` (None: left out), the item-item term when `nb_file` is not
    None ("" = no table shipped) and popularity.bin (`pop` encoded, or raw `pop_data`), signed again."""
    shutil.copytree(src, dst)
    files = dict(json.loads((dst / "manifest.json").read_bytes())["files"])

    def put(name, data):
        (dst / name).write_bytes(data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    if nb_file is not None:
        if nb_file:
            put(nb_file, encode_neighbors(*table))
        changes["neighbors"] = {**SPEC, "file": nb_file, "m": M}
    if pop is not None:
        pop_data = encode_popularity(pop)
    if pop_data is not None:
        put("popularity.bin", pop_data)
    if by_history is not None:
        changes["by_history"] = by_history
    resign(dst, pem, files=files, **changes)
    return dst


def _users(item_ids, n, seed):
    """n users of KMAX events each; every third one's events arrive newest first (late events)."""
    rng = np.random.default_rng(seed)
    users = {}
    for u in range(n):
        ts = T0 + np.sort(rng.uniform(0, 3e5, KMAX))
        if u % 3 == 2:
            ts = ts[::-1].copy()
        users[f"u{u}"] = [(item_ids[i], float(t)) for i, t in zip(rng.choice(len(item_ids), KMAX, replace=False), ts)]
    return users


def _drive(rec, users, pack=None):
    """Top-10 (ids, scores) per (user, K) at K = 0 .. KMAX, each asked twice (forward + rank, then rank alone). Pairs
    of K share a scene hour, so an event alone (K changes, the scene does not) must rebuild the user's cached offset.
    Scores are compared exactly: both runtimes run the same rank method on offsets that must match to the bit."""
    out = {}
    for u, events in users.items():
        for k in range(KMAX + 1):
            if k:
                rec.record(u, *events[k - 1], event_id=f"{u}:{k}")
            now = T0 + 4e5 + 3600.0 * (k // 2)
            if pack is not None:
                rec.set_neighbors(pack, now=now, allow_older=True)
            first = [(r.item_id, r.score) for r in rec.recommend(u, now, k=10)]
            assert [(r.item_id, r.score) for r in rec.recommend(u, now, k=10)] == first, (u, k)
            out[(u, k)] = (tuple(i for i, _ in first), tuple(v for _, v in first))
    return out


def _python(bundle, keys, tmp_path, users, tag, pack=None):
    with Recommender.open(bundle, tmp_path / f"py-{tag}.db", trusted_key=keys / "public.pem") as py:
        return _drive(py, users, pack)


def _native(bundle, keys, lib, tmp_path, users, tag, pack=None):
    with NativeRecommender.open(bundle, tmp_path / f"nat-{tag}.db", keys / "public.pem", lib=lib) as nat:
        return _drive(nat, users, pack)


def _moved(a, b, k=None):
    """How many users' top-10 ids differ between two runs (at K = k, or at any K)."""
    return sum(a[key][0] != b[key][0] for key in a if k is None or key[1] == k)


def test_term_and_popularity_by_length_give_the_python_top10_at_every_k(exported, keys, item_ids, lib, tmp_path):
    n, pem = len(item_ids), keys / "private.pem"
    table = _table(n)
    bh = {"term": TERM, "popularity": POP, "file": "popularity.bin"}
    b = _variant(exported[0], tmp_path / "bh", pem, bh, table=table, nb_file="neighbors.bin", pop=_feature(n))
    spec_only = _variant(exported[0], tmp_path / "nb", pem, None, table=table, nb_file="neighbors.bin")
    users = _users(item_ids, 12, seed=3)
    want = _python(b, keys, tmp_path, users, "bh")
    assert _native(b, keys, lib, tmp_path, users, "bh") == want
    plain = _python(spec_only, keys, tmp_path, users, "nb")
    # where the weights differ from the spec's (K = 0, 1, 3 and past the table's end), the ranking moves: a runtime
    # ignoring by_history, or indexing it off by one, fails the equality above
    for k in (0, 1, 3, 5):
        assert _moved(want, plain, k) >= len(users) // 2, k


def test_popularity_alone_needs_no_item_item_term(exported, keys, item_ids, lib, tmp_path):
    n = len(item_ids)
    bh = {"popularity": [3.0, 0.0, -2.0], "file": "popularity.bin"}  # no `term` key: Python's default, ()
    b = _variant(exported[0], tmp_path / "pop", keys / "private.pem", bh, pop=_feature(n, seed=5))
    users = _users(item_ids, 8, seed=7)
    want = _python(b, keys, tmp_path, users, "pop")
    assert _native(b, keys, lib, tmp_path, users, "pop") == want
    plain = _python(exported[0], keys, tmp_path, users, "plain")
    assert _moved(want, plain, 0) >= 6 and _moved(want, plain, 4) >= 6  # up at K <= 1, down from K = 3
    assert _moved(want, plain, 2) == 0  # weight 0 at K = 2: the plain ranking


def test_weights_by_length_with_neighbour_packs(exported, keys, item_ids, lib, tmp_path):
    """A bundle without a table: popularity alone until the app sets a pack, then the term by length too."""
    n = len(item_ids)
    bh = {"term": TERM, "popularity": POP, "file": "popularity.bin"}
    b = _variant(exported[0], tmp_path / "bh", keys / "private.pem", bh, nb_file="", pop=_feature(n, seed=9))
    users = _users(item_ids, 8, seed=11)
    off = _python(b, keys, tmp_path, users, "off")
    assert _native(b, keys, lib, tmp_path, users, "off") == off
    pack = NeighborPack(T0 + 3e5, catalog_digest(item_ids), "transition", *_table(n, seed=13))
    on = _python(b, keys, tmp_path, users, "on", pack=pack)
    assert _native(b, keys, lib, tmp_path, users, "on", pack=pack) == on
    assert _moved(on, off, 1) == 0  # term weight 0 at K = 1: the pack changes nothing there
    assert _moved(on, off, 3) >= 4 and _moved(on, off, 6) >= 4


@pytest.mark.parametrize("lo, hi, weight", [(1, 0x0400, 64.0), (0x7000, 0x7C00, 1e-4)])
def test_half_float_popularity_decodes_as_numpy_reads_it(exported, keys, item_ids, lib, tmp_path, lo, hi, weight):
    """Subnormal halves (a decoder flushing them to 0 adds nothing) and normals up to 65504, both signs."""
    n = len(item_ids)
    rng = np.random.default_rng(lo)
    raw = rng.integers(lo, hi, n).astype(np.uint16) | np.where(rng.random(n) < 0.5, 0x8000, 0).astype(np.uint16)
    bh = {"popularity": [weight], "file": "popularity.bin"}
    b = _variant(exported[0], tmp_path / "h", keys / "private.pem", bh, pop_data=raw.astype("<u2").tobytes())
    users = _users(item_ids, 8, seed=21)
    want = _python(b, keys, tmp_path, users, "h")
    assert _native(b, keys, lib, tmp_path, users, "h") == want
    plain = _python(exported[0], keys, tmp_path, users, "plain")
    assert sum(want[key][1] != plain[key][1] for key in want) == len(want)  # every score moved, not only ranks
    # subnormals x 64 add at most 0.004: too little to reorder this bundle's top-10s (float16 table scales since
    # session 11); the exact score equality above is what catches a decoder flushing them to 0
    if lo != 1:
        assert _moved(want, plain) >= 20


GOOD = {"term": [1.0, 2.0], "popularity": [1.0], "file": "popularity.bin"}


@pytest.mark.parametrize("by_history, match", [
    ({**GOOD, "term": [float("nan")]}, "JSON"), ({**GOOD, "term": [10**400]}, "overflow"),
    ({**GOOD, "term": [-1.0]}, "finite"),
    ({**GOOD, "term": [64.5]}, "finite"), ({**GOOD, "popularity": [-64.5]}, "finite"),
    ({**GOOD, "popularity": [65]}, "finite"), ({**GOOD, "term": [1.0] * 17}, "at most"),
    ({**GOOD, "popularity": [1.0] * 17}, "at most"), ({**GOOD, "term": 1.0}, "list"), ({**GOOD, "term": "1"}, "list"),
    ({**GOOD, "term": [True]}, "finite"), ({**GOOD, "popularity": [False]}, "finite"),
    ({**GOOD, "term": ["1"]}, "finite"), ({**GOOD, "term": [None]}, "finite"),
    ({**GOOD, "popularity": [], "file": "popularity.bin"}, "file"), ({**GOOD, "file": ""}, "file"),
    ({"popularity": [1.0]}, "file"), ({"term": [], "popularity": [], "file": ""}, "holds"), ({}, "holds"),
    ({**GOOD, "extra": 1}, "unknown"), ({**GOOD, "file": "other.bin"}, "not listed"), ({**GOOD, "file": 3}, "str"),
    (None, "by_history"), ([1.0], "by_history"),
])
def test_a_malformed_block_is_a_bundle_error_in_both_runtimes(exported, keys, item_ids, lib, tmp_path, by_history,
                                                               match):
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", GOOD, nb_file="", pop=_feature(len(item_ids)))
    resign(b, keys / "private.pem", by_history=by_history)  # None: "by_history": null, which is not canonical
    with pytest.raises(BundleError, match=match):
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError):
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")


def test_the_boundaries_and_python_defaults_open(exported, keys, item_ids, lib, tmp_path):
    """What HistoryWeights accepts opens natively too: ints, 0 and +-64, 16 entries, a missing `term`."""
    pem, feature = keys / "private.pem", _feature(len(item_ids))
    for i, bh in enumerate([{"term": [0, 64, 1], "popularity": [-64, 64.0] + [0.0] * 14, "file": "popularity.bin"},
                            {"popularity": [1], "file": "popularity.bin"}, {"term": [0.0] * 16}]):
        b = _variant(exported[0], tmp_path / f"b{i}", pem, bh, nb_file="", pop=feature if "file" in bh else None)
        NativeRecommender.open(b, tmp_path / f"s{i}.db", keys / "public.pem", lib=lib).close()
        Recommender.open(b, tmp_path / f"py{i}.db", trusted_key=keys / "public.pem").close()


def _expect_refusal(b, keys, lib, tmp_path, match, py_match=None):
    with pytest.raises(BundleError, match=match):
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError, match=py_match or match):
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")


def test_a_term_without_the_item_item_term_is_refused(exported, keys, item_ids, lib, tmp_path):
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", {**GOOD}, pop=_feature(len(item_ids)))
    _expect_refusal(b, keys, lib, tmp_path, "needs the item-item term")


def test_weights_without_the_rank_method_are_refused(exported, keys, item_ids, lib, tmp_path):
    man = json.loads((exported[0] / "manifest.json").read_bytes())
    score = {**man["programs"]["score"], "rank_method": "", "rank_inputs": []}
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", {"popularity": [1.0], "file": "popularity.bin"},
                 pop=_feature(len(item_ids)), programs={**man["programs"], "score": score})
    _expect_refusal(b, keys, lib, tmp_path, "rank method")


def test_a_chunked_score_program_refuses_them(exported, keys, item_ids, lib, tmp_path):
    """The manifest of a large-catalog bundle (rank method left out, table in score.pte) with by_history: refused
    for by_history by both, where without it the native runtime refuses the large bundle as such."""
    n, man = len(item_ids), json.loads((exported[0] / "manifest.json").read_bytes())
    score = {**man["programs"]["score"], "rank_method": "", "rank_inputs": [], "chunks": [0, n],
             "columns_method": "columns", "inputs": ["head", "hist_vecs", "hist_mask", "scene", "t0"]}
    table = {k: v for k, v in man["item_table"].items() if k != "scale_dtype"}  # scales apply to a table file only
    large = {"programs": {**man["programs"], "score": score}, "item_table": {**table, "file": "", "program": "score"}}
    bh = {"popularity": [1.0], "file": "popularity.bin"}
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", bh, pop=_feature(n), **large)
    _expect_refusal(b, keys, lib, tmp_path, "chunked score program has no rank method to add")
    c = _variant(exported[0], tmp_path / "c", keys / "private.pem", None, **large)
    with pytest.raises(BundleError, match="large-catalog"):
        NativeRecommender.open(c, tmp_path / "c.db", keys / "public.pem", lib=lib)


def test_a_bad_popularity_file_is_a_bundle_error(exported, keys, item_ids, lib, tmp_path):
    n = len(item_ids)
    good = encode_popularity(_feature(n))
    nan, inf = bytearray(good), bytearray(good)
    nan[8:10], inf[2 * n - 2:] = np.float16(np.nan).tobytes(), np.float16(-np.inf).tobytes()
    cases = {"truncated": good[:-2], "long": good + b"\0\0", "odd": good + b"\0", "nan": bytes(nan),
             "inf": bytes(inf), "empty": b""}
    bh = {"popularity": [1.0], "file": "popularity.bin"}
    for name, data in cases.items():
        b = _variant(exported[0], tmp_path / name, keys / "private.pem", bh, pop_data=data)
        with pytest.raises(BundleError, match="popularity.bin"):
            NativeRecommender.open(b, tmp_path / f"{name}.db", keys / "public.pem", lib=lib)
        with pytest.raises(BundleError, match="popularity.bin"):
            Recommender.open(b, tmp_path / f"{name}-py.db", trusted_key=keys / "public.pem")
