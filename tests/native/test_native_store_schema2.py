"""Store schema 2 in the native runtime (runtime_native/src/store.cpp, store_chk.cpp): a state file moves both
ways between the runtimes. Native reads a Python-written file and checks every row it reads against its `chk`
(store.py `_chk`: a CRC-32 of the row's repr), writes every row with its chk, migrates a schema-1 file (what native
wrote before) as store.py does, and refuses a file holding catalog deltas for the bundle it opens."""
import shutil
import sqlite3

import numpy as np
import pytest

from metarec.runtime import Recommender, TrendingPack
from metarec.runtime.errors import StateError
from metarec.runtime.native import NativeRecommender
from metarec.runtime.store import _CHECKED, _SCHEMA, Store, _chk

from native_helpers import T0
from test_native_neighbor_store import NOW, pack, term_bundle  # noqa: F401 (fixtures)

# ids that exercise repr's quoting and escapes: a quote of each kind, both, a backslash, a tab, non-ASCII text Python
# prints as is (é, CJK, an emoji) and code points it escapes (zero-width space \u200b, NBSP \xa0, U+E000 private use,
# U+E0001 language tag \U000e0001)
USERS = ["plain", "o'neil", 'say "hi"', "both'\"q", "back\\slash", "tab\there", "usér-東京-😀", "zw\u200bsp",
         "nb\xa0sp", "pua\ue000", "tag\U000e0001"]


def _events(item_ids, seed=0, n=4):
    rng = np.random.default_rng(seed)
    out = {}
    for j, u in enumerate(USERS):
        items = rng.choice(len(item_ids), n, replace=False)
        ts = T0 + np.sort(rng.uniform(0, 3e5, n))
        ts[0] = T0 + 0.1 * (j + 1)  # non-integral timestamps: float repr in the checksum
        out[u] = [(item_ids[i], float(t)) for i, t in zip(items, ts)]
    return out


def _record(rec, events, start=0, stop=None):
    for u, evs in events.items():
        for j, (item, ts) in list(enumerate(evs))[start:stop]:
            rec.record(u, item, ts, event_id=f"{u}:ev'{j}")


def _answers(rec):
    return {u: [(r.item_id, r.score) for r in rec.recommend(u, NOW, k=10)] for u in USERS}


def _same(a, b):
    assert {u: [i for i, _ in v] for u, v in a.items()} == {u: [i for i, _ in v] for u, v in b.items()}
    for u in a:
        np.testing.assert_allclose([s for _, s in a[u]], [s for _, s in b[u]], rtol=1e-6, atol=1e-7)


def _py(bundle, state, keys):
    return Recommender.open(bundle, state, trusted_key=keys / "public.pem")


def _nat(bundle, state, keys, lib):
    return NativeRecommender.open(bundle, state, keys / "public.pem", lib=lib)


def _verify_every_row(state):
    """Every row of every checked table (and the neighbour pack) carries store.py's checksum; the schema is 2."""
    db = sqlite3.connect(state)
    try:
        n = 0
        for table, cols in {**_CHECKED, "neighbor_pack": ("id", "pack")}.items():
            for row in db.execute(f"SELECT {', '.join(cols)}, chk FROM {table}"):
                assert _chk(*row[:-1]) == row[-1], (table, row)
                n += 1
        assert db.execute("SELECT value FROM meta WHERE key='store_schema'").fetchone() == (2,)
        return n
    finally:
        db.close()


def _dump(state):
    db = sqlite3.connect(state)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def _raw(state):
    """The database file's bytes (and the WAL's, if any): a refused open must not even rewrite a row as it was."""
    wal = state.with_name(state.name + "-wal")
    return state.read_bytes(), wal.read_bytes() if wal.exists() else b""


def _python_file(bundle, state, keys, item_ids, pack, events):  # noqa: F811
    with _py(bundle, state, keys) as py:
        _record(py, events, stop=3)
        py.set_neighbors(pack, now=NOW)
        counts = {item_ids[i]: 1 + i % 3 for i in range(0, len(item_ids), 2)}
        py.set_trending(TrendingPack.from_counts(NOW - 60.0, counts), now=NOW)
        return _answers(py)  # heads are written too


def test_a_python_state_file_opens_natively_and_both_runtimes_keep_writing_it(term_bundle, keys, lib, tmp_path,
                                                                              item_ids, pack):
    """Python writes events (ids with quotes, escapes and non-ASCII text), heads, a trending and a neighbour pack;
    native opens the file and answers as Python (ids and scores: the events were read, not dropped); native then
    records more, every row it wrote carries Python's checksum, and Python reopening the file answers as native."""
    events = _events(item_ids)
    state = tmp_path / "s.db"
    want = _python_file(term_bundle, state, keys, item_ids, pack, events)
    with _nat(term_bundle, state, keys, lib) as nat:
        assert {u: nat.count_events(u) for u in USERS} == {u: 3 for u in USERS}
        _same(_answers(nat), want)
        _record(nat, events, start=3)  # one more event each (and the heads riding along)
        _record(nat, events, start=0, stop=1)  # retried ids: no-ops
        got = _answers(nat)
    assert _verify_every_row(state) > 3 * len(USERS)
    with _py(term_bundle, state, keys) as py:
        assert {u: len(py.history(u)) for u in USERS} == {u: 4 for u in USERS}
        _same(_answers(py), got)
    with _py(term_bundle, tmp_path / "ref.db", keys) as ref:  # the same history from scratch: not stale heads
        ref.set_neighbors(pack, now=NOW)
        ref.set_trending(TrendingPack.from_counts(NOW - 60.0, {item_ids[i]: 1 + i % 3
                                                               for i in range(0, len(item_ids), 2)}), now=NOW)
        _record(ref, events)
        _same(_answers(ref), got)


def test_every_row_native_writes_carries_pythons_checksum(exported, keys, lib, tmp_path, item_ids):
    """A new native file is schema 2 with Python's table definitions, and each of its rows verifies."""
    state = tmp_path / "n.db"
    events = _events(item_ids, seed=3)
    with _nat(exported[0], state, keys, lib) as nat:
        _record(nat, events)
        nat.set_trending(TrendingPack.from_counts(NOW, {item_ids[0]: 3, item_ids[5]: 1}), now=NOW)
        got = _answers(nat)
    assert _verify_every_row(state) == 2 + 4 * len(USERS) + len(USERS) + 1  # meta 2, events, heads, trending
    Store(tmp_path / "p.db").close()
    assert _tables(state) == _tables(tmp_path / "p.db")
    with _py(exported[0], state, keys) as py:
        _same(_answers(py), got)


def _tables(state):
    db = sqlite3.connect(state)
    try:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex%'"))
    finally:
        db.close()


def _strip_to_schema_1(src, dst):
    """The schema-1 file the native runtime wrote before (store_schema.sql's tables, no chk, store_schema 1, and the
    neighbour pack table it created with chk), holding `src`'s rows: a Python-written file with its chk dropped."""
    old = sqlite3.connect(src)
    new = sqlite3.connect(dst)
    try:
        new.executescript(_SCHEMA)
        new.execute("CREATE TABLE neighbor_pack (id INTEGER PRIMARY KEY CHECK (id = 1), pack BLOB NOT NULL, "
                    "chk INTEGER NOT NULL)")
        for table, cols in {"events": ("seq",) + _CHECKED["events"], **{t: _CHECKED[t] for t in
                                                                        ("meta", "heads", "trending")}}.items():
            rows = old.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
            new.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)
        new.execute("UPDATE meta SET value=1 WHERE key='store_schema'")
        new.executemany("INSERT INTO neighbor_pack VALUES (?, ?, ?)", old.execute("SELECT * FROM neighbor_pack"))
        new.commit()
        assert all("chk" not in r[1] for r in new.execute("PRAGMA table_info(events)"))
    finally:
        old.close()
        new.close()


def test_a_schema_1_file_is_migrated_natively_and_then_opens_in_python(term_bundle, keys, lib, tmp_path, item_ids,
                                                                       pack):
    events = _events(item_ids, seed=5)
    want = _python_file(term_bundle, tmp_path / "py.db", keys, item_ids, pack, events)
    state = tmp_path / "v1.db"
    _strip_to_schema_1(tmp_path / "py.db", state)
    with _nat(term_bundle, state, keys, lib) as nat:
        _same(_answers(nat), want)
    assert _verify_every_row(state) == _verify_every_row(tmp_path / "py.db")
    assert _tables(state) == _tables(tmp_path / "py.db")  # the same definitions store.py's migration leaves
    with _py(term_bundle, state, keys) as py:
        _same(_answers(py), want)


def _flip(state, sql):
    db = sqlite3.connect(state)
    try:
        db.execute(sql)
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("what,sql", [
    ("item id", "UPDATE events SET item_id=item_id || 'x' WHERE seq=(SELECT MIN(seq) FROM events WHERE user_id='o''neil')"),
    ("timestamp", "UPDATE events SET ts=ts+1 WHERE seq=(SELECT MAX(seq) FROM events WHERE user_id='o''neil')"),
    ("event id", "UPDATE events SET event_id=event_id || '.' WHERE user_id='o''neil' AND seq=(SELECT MIN(seq) "
                 "FROM events WHERE user_id='o''neil')"),
    ("head", "UPDATE heads SET head=CAST(zeroblob(length(head)) AS BLOB) WHERE user_id='o''neil'"),
])
def test_a_changed_row_is_a_state_error_natively_as_in_python_and_nothing_is_written(term_bundle, keys, lib, tmp_path,
                                                                                     item_ids, pack, what, sql):
    state = tmp_path / "s.db"
    _python_file(term_bundle, state, keys, item_ids, pack, _events(item_ids))
    _flip(state, sql)
    before = _dump(state)
    with _nat(term_bundle, state, keys, lib) as nat:
        with pytest.raises(StateError, match="checksum"):
            nat.recommend("o'neil", NOW, k=10)
        assert [r.item_id for r in nat.recommend("plain", NOW, k=10)]  # other users' rows are fine
    assert _dump(state) == before
    with _py(term_bundle, state, keys) as py:
        with pytest.raises(StateError, match="checksum"):
            py.recommend("o'neil", NOW, k=10)


def test_a_changed_meta_row_is_refused_at_native_open(exported, keys, lib, tmp_path):
    state = tmp_path / "s.db"
    _py(exported[0], state, keys).close()
    _flip(state, "UPDATE meta SET value=9 WHERE key='max_serial'")  # below the bundle's 10: a rollback if believed
    before = _raw(state)
    with pytest.raises(StateError, match="checksum"):
        _nat(exported[0], state, keys, lib)
    assert _raw(state) == before


def test_catalog_deltas_for_the_open_serial_are_refused_and_older_ones_dropped(exported, keys, lib, tmp_path):
    """A delta row as store.py stores one (Store.add_delta; tests/export/test_catalog_delta.py opens a file with a
    real signed delta natively): for the bundle's serial the open is refused and nothing changes; for an older
    serial it is ignored and deleted when the serial is accepted, as store.py does."""
    state = tmp_path / "s.db"
    _py(exported[0], state, keys).close()
    s = Store(state)
    s.add_delta(10, 1, b'{"items": []}', b"\x00sig")
    s.close()
    before = _raw(state)
    with pytest.raises(StateError, match="holds catalog deltas .* which the native runtime does not serve; open it "
                                         "with the Python runtime or export a new bundle"):
        _nat(exported[0], state, keys, lib)
    assert _raw(state) == before
    shutil.copy(state, tmp_path / "old.db")
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("UPDATE catalog_deltas SET serial=9, chk=?", (_chk(9, 1, b'{"items": []}', b"\x00sig"),))
    db.commit()
    db.close()
    _nat(exported[0], tmp_path / "old.db", keys, lib).close()
    db = sqlite3.connect(tmp_path / "old.db")
    assert db.execute("SELECT COUNT(*) FROM catalog_deltas").fetchone() == (0,)
    db.close()


@pytest.mark.parametrize("bad", [b"bad\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"cut\xe6\x9d"])
def test_an_id_that_is_not_utf8_is_an_input_error_natively_and_nothing_is_stored(exported, keys, lib, tmp_path,
                                                                                  item_ids, bad):
    """Python keeps ids as str (and checksums their repr): bytes that are not strict UTF-8 (invalid, overlong, a
    surrogate, past U+10FFFF, truncated) cannot be stored natively either."""
    from metarec.runtime.errors import InputError

    with _nat(exported[0], tmp_path / "s.db", keys, lib) as nat:
        for args in ((bad, item_ids[0].encode(), T0, None), (b"u", item_ids[0].encode(), T0, bad)):
            with pytest.raises(InputError, match="UTF-8"):
                nat._check(nat._lib.mr_record(nat._h, *args))
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    db.close()
