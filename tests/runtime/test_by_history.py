"""Weights by history length (manifest HistoryWeights): the term's weight and a popularity weight per support size,
as the runtime serves them, and the contract's refusals."""
import dataclasses
import json

import numpy as np
import pytest
from test_neighbors import SPEC, T0, _table
from tiny_bundle import ITEM_IDS, N, write_bundle

from metarec.runtime import Recommender, TrendingPack
from metarec.runtime.bundle_codecs import decode_popularity, encode_popularity
from metarec.runtime.errors import BundleError
from metarec.runtime.manifest import HistoryWeights, Manifest, at_length

TERM = (0.0, 1.5, 6.0)  # K = 1: off; K = 2: weak; K >= 3: strong
POP = (2.5, 0.0, -1.0)


def _feature(seed=3):
    x = np.random.default_rng(seed).normal(0, 1, N).astype(np.float32)
    return x.astype(np.float16).astype(np.float32)  # what popularity.bin holds


def test_the_entry_for_a_history_length():
    assert [at_length((1.0, 2.0, 3.0), k, 9.0) for k in (0, 1, 2, 3, 4, 50)] == [1.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert at_length((), 5, 9.0) == 9.0


def test_runtime_top_k_equals_the_eager_model_at_every_history_length(tmp_path, tiny, keys, tiny_rank_programs):
    model = tiny[0]
    ids, w = _table()
    nb, bh = (ids, w, SPEC), (TERM, POP, _feature())
    b = write_bundle(tmp_path / "b", model, tiny_rank_programs, keys[0], rank=True, neighbors=nb, by_history=bh)
    rng = np.random.default_rng(2)
    moved = set()
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        rec.set_trending(TrendingPack.from_counts(T0 + 4e5, {}), now=T0 + 4e5)
        for u in range(12):
            events = []
            for item in rng.choice(N, size=5, replace=False):  # K = 0, 1, ..., 5: every entry and past the last
                for now in (T0 + 4e5, T0 + 4e5 + 60):  # forward + rank, then rank alone
                    got = [r.item_id for r in rec.recommend(f"u{u}", now, k=10)]
                    assert got == model.topk(events, now, {}, k=10, neighbors=nb, by_history=bh), (u, len(events))
                if got != model.topk(events, T0 + 4e5 + 60, {}, k=10, neighbors=nb):
                    moved.add(len(events))
                events.append((ITEM_IDS[item], T0 + float(rng.uniform(0, 3e5))))
                rec.record(f"u{u}", *events[-1])
    assert {0, 1, 3, 4} <= moved  # the weights move the ranking where they differ from the spec's: not ignored


def test_popularity_alone_needs_no_item_item_term(tmp_path, tiny, keys, tiny_rank_programs):
    model, bh = tiny[0], ((), (3.0, 0.0), _feature())
    b = write_bundle(tmp_path / "b", model, tiny_rank_programs, keys[0], rank=True, by_history=bh)
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        rec.set_trending(TrendingPack.from_counts(T0 + 4e5, {}), now=T0 + 4e5)
        got0 = [r.item_id for r in rec.recommend("new", T0 + 4e5, k=10)]
        assert got0 == model.topk([], T0 + 4e5, {}, k=10, by_history=bh) != model.topk([], T0 + 4e5, {}, k=10)
        events = [(ITEM_IDS[3], T0), (ITEM_IDS[7], T0 + 5)]
        for e in events:
            rec.record("u", *e)
        assert [r.item_id for r in rec.recommend("u", T0 + 4e5, k=10)] == model.topk(events, T0 + 4e5, {}, k=10)


def test_weights_by_history_without_the_rank_method_are_refused(tmp_path, tiny, keys):
    b = write_bundle(tmp_path / "b", tiny[0], tiny[1], keys[0], rank=False, by_history=((), (1.0,), _feature()))
    with pytest.raises(BundleError, match="rank method"):
        Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1])


@pytest.mark.parametrize("kw, match", [
    ({"term": (np.nan,)}, "finite"), ({"term": (-1.0,)}, "finite"), ({"popularity": (100.0,), "file": "p"}, "finite"),
    ({"term": (1.0,) * 17}, "at most"), ({"popularity": (1.0,)}, "file"), ({"term": (1.0,), "file": "p"}, "file"),
    ({}, "holds"), ({"term": "1"}, "list"), ({"popularity": (True,), "file": "p"}, "finite")])
def test_bad_weights_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        HistoryWeights(**kw)


def _manifest(tmp_path, tiny, keys, programs, **kw):
    b = write_bundle(tmp_path / "b", tiny[0], programs, keys[0], rank=True, **kw)
    return json.loads((b / "manifest.json").read_bytes())


def test_the_manifest_block_is_checked_and_left_out_when_unused(tmp_path, tiny, keys, tiny_rank_programs):
    plain = _manifest(tmp_path, tiny, keys, tiny_rank_programs)
    assert "by_history" not in plain  # older manifests stay byte-identical
    with pytest.raises(BundleError, match="by_history"):  # null is not canonical: present means used
        Manifest.from_dict({**plain, "by_history": None})
    with pytest.raises(BundleError, match="needs the item-item term"):
        Manifest.from_dict({**plain, "by_history": {"term": [1.0], "popularity": [], "file": ""}})
    d = _manifest(tmp_path, tiny, keys, tiny_rank_programs, by_history=((), (1.0,), _feature()))
    assert Manifest.from_dict(d).by_history == HistoryWeights(popularity=(1.0,), file="popularity.bin")
    with pytest.raises(BundleError, match="not listed"):
        Manifest.from_dict({**d, "by_history": {**d["by_history"], "file": "other.bin"}})
    with pytest.raises(BundleError, match="unknown"):
        Manifest.from_dict({**d, "by_history": {**d["by_history"], "extra": 1}})
    with pytest.raises(BundleError, match="invalid manifest"):  # an int too large for a float: not OverflowError
        Manifest.from_json(json.dumps({**d, "by_history": {**d["by_history"], "popularity": [10 ** 400]}}).encode())
    m = Manifest.from_dict(d)
    assert Manifest.from_json(m.to_json()) == m and dataclasses.asdict(m)["by_history"]["popularity"] == (1.0,)


def test_a_bad_popularity_file_is_a_bundle_error():
    x = _feature()
    assert np.array_equal(decode_popularity(encode_popularity(x), N, "p"), x)
    with pytest.raises(BundleError, match="bytes"):
        decode_popularity(encode_popularity(x)[:-2], N, "p")
    bad = x.copy()
    bad[4] = np.inf
    with pytest.raises(BundleError, match="non-finite"):
        decode_popularity(encode_popularity(bad), N, "p")
