"""The onboarding term (manifest OnboardingSpec, runtime_py/onboarding.py OnboardingPack): weight(K) * log1p(count)
of the pack's row for the user's history length joins the score, as the eager model computes it; the pack's and
the block's refusals."""
import json

import numpy as np
import pytest
from test_neighbors import T0
from tiny_bundle import ITEM_IDS, N, write_bundle

from metarec.runtime import OnboardingPack, Recommender, TrendingPack
from metarec.runtime.bundle_codecs import catalog_digest, generate_keypair
from metarec.runtime.errors import BundleError, InputError
from metarec.runtime.manifest import ONBOARDING_ROWS, Manifest, OnboardingSpec, onboarding_row, onboarding_weight

SPEC = OnboardingSpec(weight=(3.0, 0.0, 1.5, 6.0), span=3, window_days=7.0)  # K = 1: off; K >= 3: 6
CATALOG = catalog_digest(ITEM_IDS)
NOW = T0 + 4e5


def _rows(seed=0) -> np.ndarray:
    """(11, N) counts, a different sparse pattern per history length."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((ONBOARDING_ROWS, N)) < 0.3, rng.integers(1, 40, (ONBOARDING_ROWS, N)), 0)


def _pack(counts: np.ndarray, at=NOW, catalog=CATALOG) -> OnboardingPack:
    return OnboardingPack.from_rows(at, [{ITEM_IDS[i]: int(c[i]) for i in np.flatnonzero(c)} for c in counts], catalog)


def test_the_row_and_weight_of_a_history_length():
    assert [onboarding_row(k) for k in (0, 1, 10, 11, 500)] == [0, 1, 10, 10, 10]
    assert [onboarding_weight(SPEC.weight, k) for k in (0, 1, 2, 3, 4, 50)] == [3.0, 0.0, 1.5, 6.0, 6.0, 6.0]


def test_runtime_top_k_equals_the_eager_model_at_every_history_length(tmp_path, tiny, keys, tiny_rank_programs):
    model, counts = tiny[0], _rows()
    b = write_bundle(tmp_path / "b", model, tiny_rank_programs, keys[0], rank=True, onboarding=SPEC)
    rng = np.random.default_rng(2)
    moved = set()
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        assert rec.onboarding_spec == SPEC
        rec.set_trending(TrendingPack.from_counts(NOW, {}), now=NOW)
        for u in range(8):
            events = []
            for item in rng.choice(N, size=12, replace=False):  # K = 0..11: every weight entry and row, and past both
                k = len(events)
                assert [r.item_id for r in rec.recommend(f"u{u}", NOW, k=10)] == model.topk(events, NOW, {}, k=10)
                rec.set_onboarding(_pack(counts), now=NOW, allow_older=True)
                for now in (NOW, NOW + 60):  # forward + rank, then rank alone
                    got = [r.item_id for r in rec.recommend(f"u{u}", now, k=10)]
                    assert got == model.topk(events, now, {}, k=10, onboarding=(SPEC.weight, counts)), (u, k)
                if got != model.topk(events, NOW + 60, {}, k=10):
                    moved.add(k)
                rec.set_onboarding(_pack(np.zeros_like(counts)), now=NOW, allow_older=True)  # no counts: no term
                events.append((ITEM_IDS[item], T0 + float(rng.uniform(0, 3e5))))
                rec.record(f"u{u}", *events[-1])
    assert 1 not in moved and {0, 2, 3, 11} <= moved  # off where the weight is 0, on elsewhere


def test_the_pack_is_refused_without_the_term_for_another_catalog_stale_or_replayed(tmp_path, tiny, keys,
                                                                                     tiny_rank_programs):
    plain = write_bundle(tmp_path / "p", tiny[0], tiny_rank_programs, keys[0], rank=True)
    with Recommender.open(plain, tmp_path / "p.db", trusted_key=keys[1]) as rec:
        assert rec.onboarding_spec is None
        with pytest.raises(InputError, match="no onboarding term"):
            rec.set_onboarding(_pack(_rows()), now=NOW)
    b = write_bundle(tmp_path / "b", tiny[0], tiny_rank_programs, keys[0], rank=True, onboarding=SPEC)
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        rec.record("u", ITEM_IDS[1], T0)
        rec.record("u", ITEM_IDS[2], T0 + 1)  # K = 2: weight 1.5
        before = [r.item_id for r in rec.recommend("u", NOW, k=10)]
        with pytest.raises(InputError, match="another catalog"):
            rec.set_onboarding(_pack(_rows(), catalog="f" * 64), now=NOW)
        with pytest.raises(InputError, match="stale"):
            rec.set_onboarding(_pack(_rows(), at=NOW - 30 * 86400), now=NOW)
        with pytest.raises(InputError, match="future"):
            rec.set_onboarding(_pack(_rows(), at=NOW + 5 * 86400), now=NOW)
        with pytest.raises(InputError, match="OnboardingPack"):
            rec.set_onboarding({"rows": []}, now=NOW)
        with pytest.raises(InputError, match="finite"):  # built directly, past from_rows' checks
            rec.set_onboarding(OnboardingPack(NOW, ({ITEM_IDS[0]: float("nan")},) + ({},) * 10, CATALOG), now=NOW)
        assert [r.item_id for r in rec.recommend("u", NOW, k=10)] == before  # nothing changed
        rec.set_onboarding(_pack(_rows()), now=NOW)
        with pytest.raises(InputError, match="replay"):
            rec.set_onboarding(_pack(_rows(1), at=NOW - 10), now=NOW)
        after = [r.item_id for r in rec.recommend("u", NOW, k=10)]
        assert after != before
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:  # persisted: the last pack set
        assert [r.item_id for r in rec.recommend("u", NOW, k=10)] == after


@pytest.mark.parametrize("rows, match", [
    ([{}] * 10, "exactly 11 rows"), ([{"a": -1}] + [{}] * 10, ">= 0"), ([{"a": float("nan")}] + [{}] * 10, "finite"),
    ([{"": 1}] + [{}] * 10, "non-empty"), ("x" * 11, "exactly 11 rows"), ([{"a": True}] + [{}] * 10, "number")])
def test_bad_packs_are_refused(rows, match):
    with pytest.raises(InputError, match=match):
        OnboardingPack.from_rows(NOW, rows, CATALOG)
    with pytest.raises(InputError, match="bound to a catalog"):
        OnboardingPack.from_rows(NOW, [{}] * 11, "")


def test_pack_bytes_round_trip_and_tampering_is_refused(tmp_path, keys):
    pack = _pack(_rows())
    assert OnboardingPack.from_json(pack.to_json()) == pack
    d = json.loads(pack.to_json())
    for bad in ({**d, "rows": d["rows"][:10]}, {**d, "version": 2}, {**d, "kind": "trending"}, {**d, "x": 1},
                {k: v for k, v in d.items() if k != "catalog"}, {**d, "rows": [[]] * 11}):
        with pytest.raises(BundleError, match="invalid onboarding pack"):
            OnboardingPack.from_json(json.dumps(bad).encode())
    pack.save(tmp_path / "p", keys[0])
    assert OnboardingPack.load(tmp_path / "p", keys[1]) == pack
    (tmp_path / "p").write_bytes(pack.to_json().replace(b'"at":', b'"at": '))  # one byte more: the signature fails
    with pytest.raises(BundleError):
        OnboardingPack.load(tmp_path / "p", keys[1])
    other = tmp_path / "other.pem"
    other.write_bytes(generate_keypair()[1])
    pack.save(tmp_path / "q", keys[0])
    with pytest.raises(BundleError):
        OnboardingPack.load(tmp_path / "q", other)


@pytest.mark.parametrize("kw, match", [
    ({"weight": ()}, "1..16"), ({"weight": (0.0, 0.0)}, "0 at every length"), ({"weight": (65.0,)}, "in \\[0, 64\\]"),
    ({"weight": (-1.0,)}, "in \\[0, 64\\]"), ({"weight": (np.nan,)}, "finite"), ({"weight": (1.0,) * 17}, "1..16"),
    ({"span": 65}, "span"), ({"span": 1.5}, "span"), ({"window_days": 0}, "window_days"),
    ({"window_days": float("inf")}, "window_days"), ({"weight": (True,)}, "finite")])
def test_bad_blocks_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        OnboardingSpec(**{"weight": (1.0,), "span": 3, "window_days": 7.0, **kw})


def test_the_manifest_block_round_trips_and_is_left_out_when_unused(tmp_path, tiny, keys, tiny_rank_programs):
    b = write_bundle(tmp_path / "b", tiny[0], tiny_rank_programs, keys[0], rank=True, onboarding=SPEC)
    d = json.loads((b / "manifest.json").read_bytes())
    assert d["onboarding"] == {"weight": [3.0, 0.0, 1.5, 6.0], "span": 3, "window_days": 7.0}
    assert Manifest.from_dict(d).onboarding == SPEC
    for bad in ({**d["onboarding"], "extra": 1}, {"weight": [1.0], "span": 3}, None):
        with pytest.raises(BundleError):
            Manifest.from_dict({**d, "onboarding": bad})
    plain = write_bundle(tmp_path / "p", tiny[0], tiny_rank_programs, keys[0], rank=True)
    assert "onboarding" not in json.loads((plain / "manifest.json").read_bytes())


def test_the_term_without_the_rank_method_is_refused(tmp_path, tiny, keys):
    b = write_bundle(tmp_path / "b", tiny[0], tiny[1], keys[0], rank=False, onboarding=SPEC)
    with pytest.raises(BundleError, match="rank method"):
        Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1])


def test_the_onboarding_cli_writes_a_pack_the_device_takes(tmp_path, tiny, keys, tiny_rank_programs):
    from metarec.bench.cli import main

    b = write_bundle(tmp_path / "b", tiny[0], tiny_rank_programs, keys[0], rank=True, onboarding=SPEC)
    (tmp_path / "private.pem").write_bytes(keys[0])
    events = tmp_path / "events.csv"
    seq = [ITEM_IDS[i] for i in (1, 2, 3, 4)]  # six users take 1, 2, 3, 4 in order; one more after the pack time
    rows = ["user_id,item_id,timestamp"] + [f"u{j},{it},{int(T0) + 10 * j + k}" for j in range(6)
                                            for k, it in enumerate(seq)]
    rows += [f"late,{ITEM_IDS[7]},{int(T0) + 1000}"]
    events.write_text("\n".join(rows) + "\n")
    out = tmp_path / "ob.pack"
    assert main(["onboarding", str(events), "--bundle", str(b), "--at", str(int(T0) + 500),
                 "--key", str(tmp_path / "private.pem"), "--out", str(out)]) == 0
    pack = OnboardingPack.load(out, keys[1])
    assert pack.at == T0 + 500 and pack.catalog == CATALOG
    # span 3: row 0 (positions 0..3) holds all four items, 6 users each; row 6 (3..9) the fourth only; row 7 none
    assert pack.rows[0] == {ITEM_IDS[i]: 6.0 for i in (1, 2, 3, 4)}
    assert pack.rows[6] == {ITEM_IDS[4]: 6.0} and pack.rows[7] == {} and ITEM_IDS[7] not in pack.rows[0]
    with Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        rec.set_onboarding(pack, now=T0 + 600)
    plain = write_bundle(tmp_path / "plain", tiny[0], tiny_rank_programs, keys[0], rank=True)
    assert main(["onboarding", str(events), "--bundle", str(plain), "--at", str(int(T0) + 500),
                 "--key", str(tmp_path / "private.pem"), "--out", str(tmp_path / "x.pack")]) == 2  # no term


def test_log_rows_place_each_count_at_its_catalog_row():
    counts = _rows(3)
    rows = [{ITEM_IDS[i]: int(c[i]) for i in np.flatnonzero(c)} for c in counts]
    rows[2]["not-in-catalog"] = 9
    pack = OnboardingPack.from_rows(NOW, rows, CATALOG)
    index = {s: i for i, s in enumerate(ITEM_IDS)}
    np.testing.assert_array_equal(pack.log_rows(index, N), np.log1p(counts).astype(np.float32))
    # a catalog cut to its first N - 1 rows: the last item's counts are left out, the others stay
    np.testing.assert_array_equal(pack.log_rows(index, N - 1), np.log1p(counts[:, :N - 1]).astype(np.float32))
