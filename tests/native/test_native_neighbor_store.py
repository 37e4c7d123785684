"""The neighbour pack persists in the native state file as in the Python runtime's (store.py's `neighbor_pack` table:
NeighborPack.to_bytes() and its row checksum), is reloaded and re-checked at open, and a state file written by one
runtime serves the same pack in the other."""
import json
import shutil
import sqlite3

import numpy as np
import pytest

from metarec.runtime import Recommender
from metarec.runtime.bundle_codecs import catalog_digest
from metarec.runtime.errors import InputError, StateError
from metarec.runtime.native import NativeRecommender
from metarec.runtime.neighbors import NeighborPack
from metarec.runtime.store import _chk

from native_helpers import T0
from test_native_neighbors import M, _table, _users, _with_term

NOW = T0 + 4e5


@pytest.fixture
def term_bundle(exported, keys, tmp_path):
    """The test bundle with an item-item term whose table comes in packs only (off until one is set)."""
    return _with_term(exported[0], tmp_path / "nb", keys / "private.pem", file="")


@pytest.fixture
def pack(item_ids):
    ids, w = _table(len(item_ids), seed=11)
    return NeighborPack(T0 + 3e5, catalog_digest(item_ids), "transition", ids, w)


def _nat(bundle, state, keys, lib):
    return NativeRecommender.open(bundle, state, keys / "public.pem", lib=lib)


def _py(bundle, state, keys):
    return Recommender.open(bundle, state, trusted_key=keys / "public.pem")


def _top10(rec, users):
    return {u: [r.item_id for r in rec.recommend(u, NOW, k=10)] for u in users}


def _record(rec, users):
    for u, events in users.items():
        for j, (item, ts) in enumerate(events):
            rec.record(u, item, ts, event_id=f"{u}:{j}")


def _row(state):
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT id, pack, chk FROM neighbor_pack").fetchall()
    finally:
        db.close()


def _has_table(rec):
    import ctypes as C

    h, kind = C.c_int(), C.create_string_buffer(16)
    assert rec._lib.mr_neighbor_spec(rec._h, kind, 16, None, None, None, None, C.byref(h)) == 0
    return h.value == 1


def test_a_reopened_native_recommender_keeps_the_pack_and_answers_as_python(term_bundle, keys, lib, tmp_path,
                                                                           item_ids, pack):
    users = _users(item_ids, 12, seed=21)
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
        off = _top10(nat, users)
        nat.set_neighbors(pack, now=NOW)
        before = _top10(nat, users)
    assert sum(before[u] != off[u] for u in users) >= 3  # the pack moves the ranking
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        assert _has_table(nat)
        after = _top10(nat, users)
    with _py(term_bundle, tmp_path / "p.db", keys) as py:
        _record(py, users)
        py.set_neighbors(pack, now=NOW)
    with _py(term_bundle, tmp_path / "p.db", keys) as py:  # Python persists it too
        want = _top10(py, users)
    assert before == after == want


@pytest.mark.parametrize("at", [T0 + 3e5, 1.5, 0.0001, 1e-5, 123456789.123, 1e16, 1e15, 2.5e22, 1234.5678e-9])
def test_the_stored_row_is_the_python_runtimes_byte_for_byte(term_bundle, keys, lib, tmp_path, item_ids, at):
    n = len(item_ids)
    rng = np.random.default_rng(int(at * 1000) % 2**32)
    ids, _ = _table(n, seed=3)
    w = (rng.random((n, M)) * rng.choice([1e-6, 1e-3, 1.0, 100.0, 6e4], (n, M))).astype(np.float32)  # not f16-exact
    w.flat[:4] = [2.0 ** -25, 3 * 2.0 ** -26, 65504.0, 65519.0]  # ties to even at 0 and around the subnormal edge
    pack = NeighborPack(at, catalog_digest(item_ids), "transition", ids, w)
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        nat._check(nat._lib.mr_set_neighbors(nat._h, at, b"transition", M, n,
                                             np.ascontiguousarray(ids, np.int32).ctypes.data,
                                             np.ascontiguousarray(w, np.float32).ctypes.data))
    want = pack.to_bytes()
    assert _row(tmp_path / "n.db") == [(1, want, _chk(1, want))]


def test_a_pack_with_quotes_and_escapes_in_its_bytes_gets_pythons_checksum(term_bundle, keys, lib, tmp_path, item_ids):
    """ids whose int32 bytes are ', ", \\, \\t, \\n, \\r and non-ASCII: the checksum covers Python's bytes repr."""
    n = len(item_ids)
    ids = np.full((n, M), -1, np.int32)
    for j, code in enumerate([ord("'"), ord('"'), ord("\\"), 9, 10, 13]):
        ids[j % n, j % M] = code % n
    w = np.ones((n, M), np.float32)
    for only_single in (True, False):
        if only_single:
            ids[ids == ord('"') % n] = -1
        pack = NeighborPack(T0, catalog_digest(item_ids), "transition", ids, w)
        with _nat(term_bundle, tmp_path / f"q{only_single}.db", keys, lib) as nat:
            nat.set_neighbors(pack)
        want = pack.to_bytes()
        assert _row(tmp_path / f"q{only_single}.db") == [(1, want, _chk(1, want))]


def test_a_native_state_file_serves_its_pack_in_python(term_bundle, keys, lib, tmp_path, item_ids, pack):
    users = _users(item_ids, 10, seed=22)
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
        nat.set_neighbors(pack, now=NOW)
        want = _top10(nat, users)
    assert _row(tmp_path / "n.db")[0][1] == pack.to_bytes()
    with _py(term_bundle, tmp_path / "n.db", keys) as py:  # migrated to schema 2, the pack row as it was
        assert py._nb_pack is not None and py._nb_pack.at == pack.at
        assert _row(tmp_path / "n.db")[0][1] == pack.to_bytes()
        assert _top10(py, users) == want


def test_a_python_stored_pack_row_serves_the_same_pack_natively(term_bundle, keys, lib, tmp_path, item_ids, pack):
    """A Python state file (store schema 2) serves its pack natively (docs/native.md "State files"); its neighbour
    pack row, moved as is into a native file, is read natively with the same answers."""
    users = _users(item_ids, 10, seed=23)
    with _py(term_bundle, tmp_path / "p.db", keys) as py:
        _record(py, users)
        py.set_neighbors(pack, now=NOW)
        want = _top10(py, users)
    shutil.copy(tmp_path / "p.db", tmp_path / "p2.db")
    with _nat(term_bundle, tmp_path / "p2.db", keys, lib) as nat:
        assert _has_table(nat)
        assert _top10(nat, users) == want
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
    db = sqlite3.connect(tmp_path / "n.db")
    db.executemany("INSERT INTO neighbor_pack VALUES (?, ?, ?)", _row(tmp_path / "p.db"))
    db.commit()
    db.close()
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        assert _has_table(nat)
        assert _top10(nat, users) == want


def _tamper(state, fn):
    db = sqlite3.connect(state)
    (rid, data, chk), = db.execute("SELECT id, pack, chk FROM neighbor_pack").fetchall()
    db.execute("UPDATE neighbor_pack SET pack=?, chk=?", fn(bytearray(data), chk))
    db.commit()
    db.close()


def _flip(data, chk):
    data[len(data) // 2] ^= 1
    return bytes(data), chk  # the old checksum: the row is corrupt


def _bad_body(data, chk):
    data = bytes(data[:-3])  # truncated, with its checksum recomputed: a consistent row holding a malformed pack
    return data, _chk(1, data)


def _other_catalog(data, chk):
    head, _, body = bytes(data).partition(b"\n")
    d = json.loads(head)
    d["catalog"] = "f" * 64  # a well-formed pack of another catalog, its checksum consistent
    data = json.dumps(d, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body
    return data, _chk(1, data)


@pytest.mark.parametrize("how", ["flip", "bad_body", "other_catalog"])
def test_a_tampered_stored_pack_is_handled_as_python_handles_it(term_bundle, keys, lib, tmp_path, item_ids, pack,
                                                               how):
    """A row failing its checksum: StateError in both; a consistent row holding a malformed pack or one for another
    catalog: dropped in both (the term is off again, as before any pack)."""
    fn = {"flip": _flip, "bad_body": _bad_body, "other_catalog": _other_catalog}[how]
    users = _users(item_ids, 8, seed=24)
    for name, opener in (("n", lambda s: _nat(term_bundle, s, keys, lib)), ("p", lambda s: _py(term_bundle, s, keys))):
        state = tmp_path / f"{name}.db"
        with opener(state) as rec:
            _record(rec, users)
            off = _top10(rec, users)
            rec.set_neighbors(pack, now=NOW)
            assert _top10(rec, users) != off
        _tamper(state, fn)
        if how == "flip":
            with pytest.raises(StateError):
                opener(state)
        else:
            with opener(state) as rec:
                assert _top10(rec, users) == off, (name, how)
                if name == "n":
                    assert not _has_table(rec)


def test_a_stored_pack_for_another_kind_or_m_is_dropped_at_open(exported, keys, lib, tmp_path, item_ids, pack):
    """The same state file under a bundle whose term reads another m (or kind): the stored pack does not fit and is
    dropped, in both runtimes; the row stays (a later bundle of the old term would use it again)."""
    b1 = _with_term(exported[0], tmp_path / "b1", keys / "private.pem", file="")
    b2 = _with_term(exported[0], tmp_path / "b2", keys / "private.pem", file="", m=M + 1)
    users = _users(item_ids, 6, seed=25)
    for name, opener in (("n", lambda b, s: _nat(b, s, keys, lib)), ("p", lambda b, s: _py(b, s, keys))):
        state = tmp_path / f"{name}.db"
        with opener(b2, state) as rec:
            _record(rec, users)
            off = _top10(rec, users)
        with opener(b1, state) as rec:
            rec.set_neighbors(pack, now=NOW)
        row = _row(state)
        with opener(b2, state) as rec:
            assert _top10(rec, users) == off, name
        assert _row(state) == row


def test_refused_packs_change_nothing_stored_and_forget_keeps_the_pack(term_bundle, keys, lib, tmp_path, item_ids,
                                                                      pack):
    n = len(item_ids)
    users = _users(item_ids, 6, seed=26)
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        _record(nat, users)
        nat.set_neighbors(pack, now=NOW)
        want = _top10(nat, users)
        row = _row(tmp_path / "n.db")
        ids = np.ascontiguousarray(pack.ids, np.int32)
        w = np.ascontiguousarray(pack.weights, np.float32)
        bad_ids, neg_w, big_w = ids.copy(), w.copy(), w.copy()
        bad_ids[0, 0], neg_w[1, 1], big_w[2, 2] = n, -1.0, 1e6
        for args in [(NOW, b"transition", M + 1, n, ids, w), (NOW, b"cooc", M, n, ids, w),
                     (NOW, b"transition", M, n - 1, ids, w), (float("nan"), b"transition", M, n, ids, w),
                     (NOW, b"transition", M, n, bad_ids, w), (NOW, b"transition", M, n, ids, neg_w),
                     (NOW, b"transition", M, n, ids, big_w)]:
            at, kind, m, rows, i, ww = args
            with pytest.raises(InputError):
                nat._check(nat._lib.mr_set_neighbors(nat._h, at, kind, m, rows, i.ctypes.data, ww.ctypes.data))
            assert _row(tmp_path / "n.db") == row
        assert _top10(nat, users) == want
        nat.forget(next(iter(users)))
        assert _row(tmp_path / "n.db") == row
    with _nat(term_bundle, tmp_path / "n.db", keys, lib) as nat:
        got = _top10(nat, users)
    first = next(iter(users))
    assert {u: v for u, v in got.items() if u != first} == {u: v for u, v in want.items() if u != first}
    assert _row(tmp_path / "n.db") == row
