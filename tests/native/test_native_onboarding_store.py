"""The onboarding pack persists in the native state file as in the Python runtime's (store.py's `onboarding_pack`
table: OnboardingPack.to_json() bytes and the row checksum `_chk(1, pack)`), is restored at open, and a state file
where one runtime set the pack serves it in the other with the same top-10."""
import ctypes as C
import sqlite3

import numpy as np
import pytest

from metarec.runtime import Recommender
from metarec.runtime.bundle_codecs import catalog_digest
from metarec.runtime.errors import InputError, StateError
from metarec.runtime.native import NativeRecommender
from metarec.runtime.onboarding import OnboardingPack
from metarec.runtime.store import _chk

from native_helpers import T0
from test_native_onboarding import AT, NOW, _pack, _same, _top, _users, _variant


@pytest.fixture
def ob_bundle(exported, keys, tmp_path):
    return _variant(exported[0], tmp_path / "ob", keys / "private.pem")


def _nat(bundle, state, keys, lib):
    return NativeRecommender.open(bundle, state, keys / "public.pem", lib=lib)


def _py(bundle, state, keys):
    return Recommender.open(bundle, state, trusted_key=keys / "public.pem")


def _record(rec, users):
    for u, events in users.items():
        for j, (item, ts) in enumerate(events):
            rec.record(u, item, ts, event_id=f"{u}:{j}")


def _tops(rec, users):
    return {u: _top(rec, u, NOW) for u in users}


def _row(state):
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT id, pack, chk FROM onboarding_pack").fetchall()
    finally:
        db.close()


def _set_row(state, data, chk):
    db = sqlite3.connect(state)
    db.execute("UPDATE onboarding_pack SET pack=?, chk=?", (data, chk))
    db.commit()
    db.close()


def test_a_reopened_native_recommender_keeps_the_pack_and_answers_as_python(ob_bundle, item_ids, keys, lib,
                                                                           tmp_path):
    users, pack = _users(item_ids, seed=31), _pack(item_ids, seed=5)
    with _nat(ob_bundle, tmp_path / "off.db", keys, lib) as nat:
        _record(nat, users)
        off = _tops(nat, users)
    with _nat(ob_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
        nat.set_onboarding(pack)
        before = _tops(nat, users)
    assert all(before[u][0] != off[u][0] for u in users)  # the pack moves every user's top-10
    with _nat(ob_bundle, tmp_path / "n.db", keys, lib) as nat:
        after = _tops(nat, users)
    _same(before, after)
    with _py(ob_bundle, tmp_path / "p.db", keys) as py:
        _record(py, users)
        py.set_onboarding(pack, now=NOW)
    with _py(ob_bundle, tmp_path / "p.db", keys) as py:
        _same(_tops(py, users), after)


TRICKY = ["plain", "caf\u00e9", "\u65e5\u672c", "emoji-\U0001f600", 'quote"d', "back\\slash", "tab\tnl\ncr\r",
          "bell\x07", "del\x7f", "nbsp\u00a0", "line\u2028sep", "slash/ok", "z", "A", "\U0010fffd"]


@pytest.mark.parametrize("at", [AT, 1.5, 0.0001, 1e-5, 123456789.123, 1e16, 2.5e22, 1234.5678e-9])
def test_the_stored_row_is_the_python_runtimes_byte_for_byte(ob_bundle, item_ids, keys, lib, tmp_path, at):
    """ids the catalog knows and ids it does not (kept, as Python keeps them) with every JSON escape, counts of every
    float form, repeated ids (the last count), empty rows."""
    rng = np.random.default_rng(int(at * 1000) % 2**32)
    counts = [0.0, -0.0, 1.0, 0.5, 1e-7, 3e16, 123456.789, 1e300, 7.0, 2.0 ** -30]
    entries = []  # (row, id, count) as passed to the C API, with repeats
    for r in range(11):
        if r == 4:
            continue  # an empty row
        for i in rng.choice(len(item_ids), 5, replace=False):
            entries.append((r, item_ids[i], float(rng.choice(counts))))
        entries.append((r, TRICKY[r % len(TRICKY)], float(rng.choice(counts))))
        entries.append((r, TRICKY[(r + 7) % len(TRICKY)], float(rng.integers(0, 1000))))
    entries.append((3, item_ids[0], 5.0))
    entries.append((3, item_ids[0], 6.0))  # repeated: its last count
    rows = [{} for _ in range(11)]
    for r, i, c in entries:
        rows[r][i] = c
    want = OnboardingPack.from_rows(at, rows, catalog_digest(item_ids)).to_json()
    entries.sort(key=lambda e: e[0])  # stable: the repeat stays last
    lengths = (C.c_size_t * 11)(*[sum(e[0] == r for e in entries) for r in range(11)])
    ids = (C.c_char_p * len(entries))(*[e[1].encode() for e in entries])
    vals = (C.c_double * len(entries))(*[e[2] for e in entries])
    with _nat(ob_bundle, tmp_path / "n.db", keys, lib) as nat:
        nat._check(lib.mr_set_onboarding(nat._h, at, 11, lengths, ids, vals))
    assert _row(tmp_path / "n.db") == [(1, want, _chk(1, want))]
    assert b"\\u00e9" in want and b"\\ud83d\\ude00" in want and b"\\u007f" in want  # the escapes were exercised


def test_a_python_state_file_serves_its_pack_natively(ob_bundle, item_ids, keys, lib, tmp_path):
    users, pack = _users(item_ids, seed=32), _pack(item_ids, seed=6)
    with _py(ob_bundle, tmp_path / "p.db", keys) as py:
        _record(py, users)
        py.set_onboarding(pack, now=NOW)
        want = _tops(py, users)
    with _nat(ob_bundle, tmp_path / "p.db", keys, lib) as nat:
        _same(_tops(nat, users), want)
    assert _row(tmp_path / "p.db")[0][1] == pack.to_json()


def test_a_native_state_file_serves_its_pack_in_python(ob_bundle, item_ids, keys, lib, tmp_path):
    users, pack = _users(item_ids, seed=33), _pack(item_ids, seed=7)
    with _nat(ob_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
        nat.set_onboarding(pack)
        want = _tops(nat, users)
    assert _row(tmp_path / "n.db")[0][1] == pack.to_json()
    with _py(ob_bundle, tmp_path / "n.db", keys) as py:
        assert py._ob_pack == pack
        _same(_tops(py, users), want)


def _flip(data, chk):
    data = bytearray(data)
    data[len(data) // 2] ^= 1
    return bytes(data), chk


def _bad_chk(data, chk):
    return data, chk ^ 1


def _other_catalog(data, chk):
    p = OnboardingPack.from_json(data)
    data = OnboardingPack.from_rows(p.at, p.rows, "f" * 64).to_json()
    return data, _chk(1, data)


def _malformed(data, chk):
    data = data[:-2]
    return data, _chk(1, data)


@pytest.mark.parametrize("how", ["flip", "bad_chk", "other_catalog", "malformed"])
def test_a_tampered_row_is_handled_as_python_handles_it(ob_bundle, item_ids, keys, lib, tmp_path, how):
    """A row failing its checksum: StateError in both; a consistent row holding a pack for another catalog or bytes
    that are no pack: dropped in both (the term off, as before any pack)."""
    fn = {"flip": _flip, "bad_chk": _bad_chk, "other_catalog": _other_catalog, "malformed": _malformed}[how]
    users, pack = _users(item_ids, seed=34), _pack(item_ids, seed=8)
    for name, opener in (("n", lambda s: _nat(ob_bundle, s, keys, lib)), ("p", lambda s: _py(ob_bundle, s, keys))):
        state = tmp_path / f"{name}.db"
        with opener(state) as rec:
            _record(rec, users)
            off = _tops(rec, users)
            rec.set_onboarding(pack, now=NOW)
        _set_row(state, *fn(*_row(state)[0][1:]))
        if how in ("flip", "bad_chk"):
            with pytest.raises(StateError, match="checksum"):
                opener(state)
        else:
            with opener(state) as rec:
                _same(_tops(rec, users), off)


def test_a_bundle_without_the_term_ignores_the_row(ob_bundle, exported, item_ids, keys, lib, tmp_path):
    users, pack = _users(item_ids, seed=35), _pack(item_ids, seed=9)
    with _nat(exported[0], tmp_path / "plain.db", keys, lib) as nat:
        _record(nat, users)
        plain = _tops(nat, users)
    with _py(ob_bundle, tmp_path / "s.db", keys) as py:
        _record(py, users)
        py.set_onboarding(pack, now=NOW)
        on = _tops(py, users)
    row = _row(tmp_path / "s.db")
    with _nat(exported[0], tmp_path / "s.db", keys, lib) as nat:
        _same(_tops(nat, users), plain)
    assert _row(tmp_path / "s.db") == row
    with _nat(ob_bundle, tmp_path / "s.db", keys, lib) as nat:  # kept for a bundle with the term
        _same(_tops(nat, users), on)


def test_a_refused_set_changes_nothing_stored(ob_bundle, item_ids, keys, lib, tmp_path):
    users, pack = _users(item_ids, seed=36), _pack(item_ids, seed=10)
    state = tmp_path / "n.db"
    with _nat(ob_bundle, state, keys, lib) as nat:
        _record(nat, users)
        nat.set_onboarding(pack)
        on, row = _tops(nat, users), _row(state)
        lengths = (C.c_size_t * 11)(*([2] + [0] * 10))
        two = [item_ids[0], item_ids[1]]
        for names, counts, at, n_rows in [(two, [1.0, -1.0], AT, 11), (two, [1.0, float("nan")], AT, 11),
                                          ([item_ids[0], ""], [1.0, 2.0], AT, 11), (two, [1.0, 2.0], float("inf"), 11),
                                          (two, [1.0, 2.0], AT, 10)]:
            ids = (C.c_char_p * 2)(*[n.encode() for n in names])
            with pytest.raises(InputError):
                nat._check(lib.mr_set_onboarding(nat._h, at, n_rows, lengths, ids, (C.c_double * 2)(*counts)))
            assert _row(state) == row
        bad_utf8 = (C.c_char_p * 2)(item_ids[0].encode(), b"\xff\xfe")  # JSON cannot hold it: refused, not stored
        with pytest.raises(InputError, match="UTF-8"):
            nat._check(lib.mr_set_onboarding(nat._h, AT, 11, lengths, bad_utf8, (C.c_double * 2)(1.0, 2.0)))
        assert _row(state) == row
        with pytest.raises(InputError, match="another catalog"):
            nat.set_onboarding(OnboardingPack.from_rows(AT, pack.rows, "0" * 64))
        assert _row(state) == row
        _same(_tops(nat, users), on)
        nat.forget(next(iter(users)))
        assert _row(state) == row
    with _nat(ob_bundle, state, keys, lib) as nat:
        got = _tops(nat, users)
    rest = list(users)[1:]
    _same({u: got[u] for u in rest}, {u: on[u] for u in rest})


def test_a_python_row_moved_into_a_native_file_serves_the_same_pack(ob_bundle, item_ids, keys, lib, tmp_path):
    """The row moved as is into a native state file is read natively with the same answers (the same table)."""
    users, pack = _users(item_ids, seed=37), _pack(item_ids, seed=11, at=T0 + 3.5e5)
    with _py(ob_bundle, tmp_path / "p.db", keys) as py:
        _record(py, users)
        py.set_onboarding(pack, now=NOW)
        want = _tops(py, users)
    with _nat(ob_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
    db = sqlite3.connect(tmp_path / "n.db")
    db.executemany("INSERT INTO onboarding_pack VALUES (?, ?, ?)", _row(tmp_path / "p.db"))
    db.commit()
    db.close()
    with _nat(ob_bundle, tmp_path / "n.db", keys, lib) as nat:
        _same(_tops(nat, users), want)
