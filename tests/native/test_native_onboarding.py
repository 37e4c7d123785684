"""The onboarding term (manifest `onboarding`, runtime_py/manifest_terms.py OnboardingSpec, runtime_py/onboarding.py)
in the native runtime: with the same pack set, weight(K) * log1p(row K's count) joins forward's offset and both
runtimes give the same top-10 (ids, scores) at K = 0, 1, 2, 5, 12; without a pack the term is off; the pack set is
kept across open; every malformed block and every bad pack is refused by both."""
import ctypes as C
import dataclasses
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from metarec.runtime import Recommender, manifest as M
from metarec.runtime.bundle_codecs import catalog_digest
from metarec.runtime.errors import BundleError, InputError
from metarec.runtime.native import NativeRecommender
from metarec.runtime.onboarding import OnboardingPack

from native_helpers import T0, resign

BLOCK = {"weight": [2.0, 1.0, 0.5], "span": 3, "window_days": 7}  # K <= 1: 2.0; K = 2: 1.0; K >= 3: 0.5
KS = (0, 1, 2, 5, 12)  # history lengths asked: every weight entry, past its end and past the pack's last row
AT = T0 + 3e5  # the packs' time; `now` is given to Python's freshness check (native does not check it)
NOW = T0 + 4e5


def _variant(src, dst, pem, block=BLOCK, **changes):
    """A copy of bundle `src` at `dst` with `onboarding` = block (None: "onboarding": null), signed again."""
    shutil.copytree(src, dst)
    resign(dst, pem, onboarding=block, **changes)
    return dst


def _pack(item_ids, seed, at=AT):
    """11 rows of random counts over a random third of the catalog (different items and counts per row), a few
    fractional, zeros among them, and ids the catalog does not know (ignored by both runtimes)."""
    rng = np.random.default_rng(seed)
    n, rows = len(item_ids), []
    for k in range(11):
        items = rng.choice(n, n // 3, replace=False)
        counts = rng.integers(0, 400, len(items)).astype(float)
        counts[::5] += 0.25
        row = {item_ids[i]: float(c) for i, c in zip(items, counts)}
        row[f"unknown-{k}"] = 1e6
        rows.append(row)
    return OnboardingPack.from_rows(at, rows, catalog_digest(item_ids))


def _users(item_ids, seed):
    """One user per K in KS, each with K distinct items (then one more, recorded last); every other user's events
    arrive newest first."""
    rng = np.random.default_rng(seed)
    users = {}
    for j, k in enumerate(KS):
        ts = T0 + np.sort(rng.uniform(0, 2e5, k + 1))
        if j % 2:
            ts = ts[::-1].copy()
        users[f"u{k}"] = [(item_ids[i], float(t)) for i, t in
                          zip(rng.choice(len(item_ids), k + 1, replace=False), ts)]
    return users


def _top(rec, u, now):
    """Top-10 (ids, scores), asked twice (forward + rank, then rank alone): both must agree."""
    first = [(r.item_id, r.score) for r in rec.recommend(u, now, k=10)]
    assert [(r.item_id, r.score) for r in rec.recommend(u, now, k=10)] == first, u
    return tuple(i for i, _ in first), np.array([s for _, s in first], dtype=np.float64)


def _drive(rec, users, packs=()):
    """Each user's first K events recorded, then top-10 per user with each pack of `packs` set in turn (none: the
    term off), then the user's last event (K + 1: another weight entry and pack row) under the last pack. All in
    one scene hour: a new pack or event alone must drop the user's cached offset (else `rank` reuses it)."""
    for u, events in users.items():
        for j, (item, ts) in enumerate(events[:-1]):
            rec.record(u, item, ts, event_id=f"{u}:{j}")
    out = {}
    for p, pack in enumerate(packs or [None]):
        if pack is not None:
            rec.set_onboarding(pack, now=NOW, allow_older=True)
        for u in users:
            out[(u, p)] = _top(rec, u, NOW)
    for u, events in users.items():
        rec.record(u, *events[-1], event_id=f"{u}:last")
        out[(u, "last")] = _top(rec, u, NOW)
    return out


def _python(bundle, keys, tmp_path, users, tag, packs=()):
    with Recommender.open(bundle, tmp_path / f"py-{tag}.db", trusted_key=keys / "public.pem") as py:
        return _drive(py, users, packs)


def _native(bundle, keys, lib, tmp_path, users, tag, packs=()):
    with NativeRecommender.open(bundle, tmp_path / f"nat-{tag}.db", keys / "public.pem", lib=lib) as nat:
        return _drive(nat, users, packs)


def _same(a, b):
    """Equal top-10 ids and scores within float32 rounding, for every (user, step)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0], key
        np.testing.assert_allclose(a[key][1], b[key][1], rtol=1e-6, atol=1e-6, err_msg=str(key))


def _moved(a, b):
    return sum(a[key][0] != b[key][0] for key in a)


@pytest.fixture
def ids(item_ids):
    return item_ids


@pytest.fixture
def ob_bundle(exported, keys, tmp_path):
    return _variant(exported[0], tmp_path / "ob", keys / "private.pem")


def test_the_spec_reads_as_python_reads_it(ob_bundle, exported, keys, lib, tmp_path):
    with NativeRecommender.open(ob_bundle, tmp_path / "n.db", keys / "public.pem", lib=lib) as nat, \
            Recommender.open(ob_bundle, tmp_path / "p.db", trusted_key=keys / "public.pem") as py:
        spec = py.onboarding_spec
        assert (nat.onboarding_spec.weight, nat.onboarding_spec.span, nat.onboarding_spec.window_days) == \
            (spec.weight, spec.span, spec.window_days) == ((2.0, 1.0, 0.5), 3, 7.0)
    with NativeRecommender.open(exported[0], tmp_path / "n2.db", keys / "public.pem", lib=lib) as nat:
        assert nat.onboarding_spec is None
        n, span, wd = C.c_size_t(99), C.c_int(5), C.c_double(5.0)  # cap 0, no buffer: the count alone
        assert lib.mr_onboarding_spec(nat._h, None, 0, C.byref(n), C.byref(span), C.byref(wd)) == 0
        assert (n.value, span.value, wd.value) == (0, 0, 0.0)
    with NativeRecommender.open(ob_bundle, tmp_path / "n3.db", keys / "public.pem", lib=lib) as nat:
        buf, n = (C.c_double * 2)(), C.c_size_t()
        assert lib.mr_onboarding_spec(nat._h, buf, 2, C.byref(n), None, None) == 0  # truncated to cap, full count
        assert (n.value, list(buf)) == (3, [2.0, 1.0])
        assert lib.mr_onboarding_spec(nat._h, None, 2, C.byref(n), None, None) == 2  # a buffer is needed for cap > 0
        assert lib.mr_onboarding_spec(nat._h, buf, 2, None, None, None) == 2


def test_the_native_field_set_is_the_python_dataclass():
    src = (Path(__file__).parents[2] / "runtime_native" / "src" / "bundle.cpp").read_text()
    fields = dataclasses.fields(M.OnboardingSpec)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    m = re.search(r"\bkOnboardingRequired = \{([^}]*)\}", src)
    assert m and set(re.findall(r'"([^"]+)"', m.group(1))) == {f.name for f in fields}
    assert re.search(r'kManifestOptional = \{[^}]*"onboarding"', src)


def test_a_pack_gives_the_python_top10_at_every_k(ob_bundle, ids, keys, lib, tmp_path):
    users = _users(ids, seed=3)
    packs = [_pack(ids, seed=5), _pack(ids, seed=6, at=AT + 60)]  # the second replaces the first: caches dropped
    want = _python(ob_bundle, keys, tmp_path, users, "on", packs)
    got = _native(ob_bundle, keys, lib, tmp_path, users, "on", packs)
    _same(want, got)
    off = _python(ob_bundle, keys, tmp_path, users, "off")
    # the term moves every user's top-10 (else the comparison above proves little), and so does the second pack
    assert _moved({k: v for k, v in want.items() if k[1] == 0}, {(u, 0): off[(u, 0)] for u in users}) == len(users)
    assert sum(want[(u, 0)][0] != want[(u, 1)][0] for u in users) == len(users)


def test_each_k_reads_its_weight_and_row(ob_bundle, ids, keys, lib, tmp_path):
    """One pack whose rows each favour other items, and weights that differ at every entry: a runtime reading a
    neighbouring row or weight entry, or adding the raw count, ranks otherwise."""
    n = len(ids)
    rows = [{ids[(7 * k + j) % n]: float(50 * (j + 1)) for j in range(12)} for k in range(11)]
    pack = OnboardingPack.from_rows(AT, rows, catalog_digest(ids))
    b = _variant(Path(ob_bundle), tmp_path / "w", keys / "private.pem", {**BLOCK, "weight": [0.3, 0.9, 0.6, 0.45]})
    users = _users(ids, seed=8)
    want = _python(b, keys, tmp_path, users, "w", [pack])
    _same(want, _native(b, keys, lib, tmp_path, users, "w", [pack]))


def test_no_pack_is_the_bundle_without_the_term(ob_bundle, exported, ids, keys, lib, tmp_path):
    users = _users(ids, seed=11)
    plain = _python(exported[0], keys, tmp_path, users, "plain")
    _same(plain, _python(ob_bundle, keys, tmp_path, users, "py-off"))
    _same(plain, _native(ob_bundle, keys, lib, tmp_path, users, "nat-off"))
    _same(plain, _native(exported[0], keys, lib, tmp_path, users, "nat-plain"))


def test_the_pack_is_kept_across_open(ob_bundle, ids, keys, lib, tmp_path):
    """Persisted, as the Python runtime: after open the last pack set is in use again (tests/native/
    test_native_onboarding_store.py: the row, cross-runtime files, tampering)."""
    users = _users(ids, seed=13)
    off = _native(ob_bundle, keys, lib, tmp_path, users, "off")
    state = tmp_path / "keep.db"
    with NativeRecommender.open(ob_bundle, state, keys / "public.pem", lib=lib) as nat:
        nat.set_onboarding(_pack(ids, seed=5))
        on = _top(nat, "u0", NOW)
    with NativeRecommender.open(ob_bundle, state, keys / "public.pem", lib=lib) as nat:
        again = _top(nat, "u0", NOW)
    assert again[0] == on[0] != off[("u0", 0)][0]
    assert np.array_equal(again[1], on[1])


BAD_BLOCKS = [
    ({**BLOCK, "extra": 1}, "unknown"), ({k: v for k, v in BLOCK.items() if k != "span"}, "missing"),
    ({k: v for k, v in BLOCK.items() if k != "weight"}, "missing"),
    ({k: v for k, v in BLOCK.items() if k != "window_days"}, "missing"),
    ({**BLOCK, "weight": [0.0, 0, 0.0]}, "0 at every length"), ({**BLOCK, "weight": [1.0, 64.5]}, "finite"),
    ({**BLOCK, "weight": [-0.5, 1.0]}, "finite"), ({**BLOCK, "weight": [1.0] * 17}, "1..16"),
    ({**BLOCK, "weight": []}, "1..16"), ({**BLOCK, "weight": 1.0}, "1..16"), ({**BLOCK, "weight": [True]}, "finite"),
    ({**BLOCK, "weight": ["1"]}, "finite"), ({**BLOCK, "weight": [None, 1.0]}, "finite"),
    ({**BLOCK, "weight": [10**400]}, None),
    ({**BLOCK, "span": 65}, "span"), ({**BLOCK, "span": -1}, "span"), ({**BLOCK, "span": 3.0}, "span"),
    ({**BLOCK, "span": True}, "span"), ({**BLOCK, "span": "3"}, "span"),
    ({**BLOCK, "window_days": 0}, "window_days"), ({**BLOCK, "window_days": -1.0}, "window_days"),
    ({**BLOCK, "window_days": 366.5}, "window_days"), ({**BLOCK, "window_days": "7"}, "window_days"),
    ({**BLOCK, "window_days": False}, "window_days"),
    (None, "onboarding"), ([1.0], "onboarding"), ({}, "missing"),
]


@pytest.mark.parametrize("block, match", BAD_BLOCKS)
def test_a_malformed_block_is_a_bundle_error_in_both_runtimes(exported, keys, lib, tmp_path, block, match):
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", block)
    with pytest.raises(BundleError, match=match) as nat:
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError, match=match) as py:
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")
    if match not in (None, "onboarding"):  # where the value is wrong, both runtimes name the block
        assert "onboarding" in str(nat.value) and "onboarding" in str(py.value)


def test_the_boundaries_open_in_both(exported, keys, lib, tmp_path):
    """What OnboardingSpec accepts opens natively too: ints, 0 and 64, 16 entries, span 0 and 64, 366 days."""
    for i, block in enumerate([{"weight": [0, 64], "span": 0, "window_days": 366},
                               {"weight": [0.0] * 15 + [1e-9], "span": 64, "window_days": 1e-3},
                               {"weight": [64.0], "span": 1, "window_days": 1}]):
        b = _variant(exported[0], tmp_path / f"b{i}", keys / "private.pem", block)
        NativeRecommender.open(b, tmp_path / f"s{i}.db", keys / "public.pem", lib=lib).close()
        Recommender.open(b, tmp_path / f"py{i}.db", trusted_key=keys / "public.pem").close()


def test_the_term_without_the_rank_method_is_refused(exported, keys, lib, tmp_path):
    man = json.loads((exported[0] / "manifest.json").read_bytes())
    score = {**man["programs"]["score"], "rank_method": "", "rank_inputs": []}
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", programs={**man["programs"], "score": score})
    with pytest.raises(BundleError, match="rank method"):
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError, match="rank method"):
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")


def test_a_chunked_score_program_refuses_it(exported, keys, item_ids, lib, tmp_path):
    """A large-catalog manifest (rank method left out, table in score.pte) with the term: refused for the term by
    both runtimes (manifest.py's message), not as a large bundle."""
    n, man = len(item_ids), json.loads((exported[0] / "manifest.json").read_bytes())
    score = {**man["programs"]["score"], "rank_method": "", "rank_inputs": [], "chunks": [0, n],
             "columns_method": "columns", "inputs": ["head", "hist_vecs", "hist_mask", "scene", "t0"]}
    table = {k: v for k, v in man["item_table"].items() if k != "scale_dtype"}
    b = _variant(exported[0], tmp_path / "b", keys / "private.pem", programs={**man["programs"], "score": score},
                 item_table={**table, "file": "", "program": "score"})
    match = "chunked score program has no rank method to add.*onboarding term"
    with pytest.raises(BundleError, match=match):
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError, match=match):
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")


def _raw(at, rows, catalog):
    """A pack as OnboardingPack holds one, without from_rows' checks (what a caller of the C API may pass)."""
    return SimpleNamespace(at=at, rows=tuple(rows), catalog=catalog)


def test_a_bad_pack_is_an_input_error_and_changes_nothing(ob_bundle, ids, keys, lib, tmp_path):
    good = _pack(ids, seed=5)
    rows, cat = [dict(r) for r in good.rows], catalog_digest(ids)
    nan, neg, inf = ([dict(r) for r in rows] for _ in range(3))
    nan[4][ids[0]], neg[10][ids[1]], inf[0][ids[2]] = float("nan"), -1.0, float("inf")
    bad = {"10 rows": _raw(AT, rows[:10], cat), "12 rows": _raw(AT, rows + [{}], cat), "0 rows": _raw(AT, [], cat),
           "nan count": _raw(AT, nan, cat), "negative count": _raw(AT, neg, cat), "inf count": _raw(AT, inf, cat),
           "nan time": _raw(float("nan"), rows, cat), "empty id": _raw(AT, rows[:5] + [{"": 1.0}] + rows[6:], cat),
           "other catalog": _raw(AT, rows, "0" * 64), "str count": _raw(AT, rows[:10] + [{ids[0]: "x"}], cat)}
    users = {"u": [(ids[3], T0), (ids[9], T0 + 60)], "v": []}
    with NativeRecommender.open(ob_bundle, tmp_path / "n.db", keys / "public.pem", lib=lib) as nat:
        for u, ev in users.items():
            for item, ts in ev:
                nat.record(u, item, ts)
        before = {u: _top(nat, u, NOW) for u in users}  # no pack yet: a refused one does not switch the term on
        for name, pack in bad.items():
            with pytest.raises(InputError):
                nat.set_onboarding(pack)
            for u in users:
                got = _top(nat, u, NOW)
                assert got[0] == before[u][0] and np.array_equal(got[1], before[u][1]), name
        nat.set_onboarding(good)
        on = {u: _top(nat, u, NOW) for u in users}
        assert all(on[u][0] != before[u][0] for u in users)
        for name, pack in bad.items():  # nor replaces the pack in use
            with pytest.raises(InputError):
                nat.set_onboarding(pack)
            for u in users:
                got = _top(nat, u, NOW)
                assert got[0] == on[u][0] and np.array_equal(got[1], on[u][1]), name
    # the Python runtime refuses the same packs (from_rows' checks or set_onboarding's catalog binding)
    with Recommender.open(ob_bundle, tmp_path / "p.db", trusted_key=keys / "public.pem") as py:
        for name, pack in bad.items():
            with pytest.raises(InputError):
                py.set_onboarding(OnboardingPack.from_rows(pack.at, pack.rows, pack.catalog), now=NOW)


def test_the_c_api_refuses_bad_arguments(ob_bundle, ids, keys, lib, tmp_path):
    with NativeRecommender.open(ob_bundle, tmp_path / "n.db", keys / "public.pem", lib=lib) as nat:
        lengths = (C.c_size_t * 11)(*([1] + [0] * 10))
        names, counts = (C.c_char_p * 1)(ids[0].encode()), (C.c_double * 1)(3.0)
        assert lib.mr_set_onboarding(nat._h, AT, 11, lengths, names, counts) == 0
        assert lib.mr_set_onboarding(nat._h, AT, 10, lengths, names, counts) == 2
        assert "11 rows" in lib.mr_last_error(nat._h).decode()
        assert lib.mr_set_onboarding(nat._h, AT, 11, None, names, counts) == 2
        assert lib.mr_set_onboarding(nat._h, AT, 11, lengths, None, counts) == 2
        assert lib.mr_set_onboarding(nat._h, AT, 11, lengths, names, None) == 2
        empty = (C.c_size_t * 11)()
        assert lib.mr_set_onboarding(nat._h, AT, 11, empty, None, None) == 0  # no entries: every count 0
        huge = (C.c_size_t * 11)(*([1 << 40] + [0] * 10))
        assert lib.mr_set_onboarding(nat._h, AT, 11, huge, names, counts) == 2
        assert lib.mr_set_onboarding(None, AT, 11, lengths, names, counts) == 2


def test_a_bundle_without_the_term_refuses_a_pack_in_both(exported, ids, keys, lib, tmp_path):
    pack = _pack(ids, seed=5)
    with NativeRecommender.open(exported[0], tmp_path / "n.db", keys / "public.pem", lib=lib) as nat:
        with pytest.raises(InputError, match="no onboarding term"):
            nat.set_onboarding(pack)
    with Recommender.open(exported[0], tmp_path / "p.db", trusted_key=keys / "public.pem") as py:
        with pytest.raises(InputError, match="no onboarding term"):
            py.set_onboarding(pack, now=NOW)
