"""A hostile bundle folder, bad input and a second process: typed errors, no hang, no read outside the folder,
nothing changed (issue 17; docs/reliability.md)."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import zlib

import pytest

from metarec.runtime import BundleError, InputError, Recommender, StateError, TrendingPack
from metarec.runtime.bundle_codecs import catalog_digest, sign_manifest
from metarec.runtime.store import Store, _chk

from tiny_bundle import ITEM_IDS

T0 = 8.8e8


@pytest.fixture(autouse=True)
def no_hang():
    """Any test here that blocks (a FIFO opened without O_NONBLOCK) fails after 60 s instead of hanging."""
    def boom(*_):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _resign(bundle, d, priv):
    raw = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sig").write_bytes(sign_manifest(raw, priv))


def _refused_without_state(bundle, tmp_path, key, match=None):
    state = tmp_path / "fresh" / "state.db"
    state.parent.mkdir(exist_ok=True)
    with pytest.raises(BundleError, match=match):
        Recommender.open(bundle, state, trusted_key=key)
    assert sorted(p.name for p in state.parent.iterdir()) == []  # a refused bundle creates no state file


# ---------------------------------------------------------------------------------------------- the folder
@pytest.mark.parametrize("name", ["manifest.json", "manifest.sig", "items.bin", "score.pte"])
@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "dev_null", "symlink_outside", "symlink_inside", "dir"])
def test_special_files_are_refused_fast(make_bundle, tmp_path, keys, name, kind):
    b = make_bundle()
    path = b / name
    outside = tmp_path / "outside.bin"
    outside.write_bytes(path.read_bytes())  # the same bytes: only where they live is wrong
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        target = {"dev_zero": "/dev/zero", "dev_null": "/dev/null", "symlink_outside": str(outside),
                  "symlink_inside": str(b / "head_init.bin")}[kind]
        os.symlink(target, path)
    t = time.monotonic()
    _refused_without_state(b, tmp_path, keys[1])
    assert time.monotonic() - t < 20


def test_resigned_manifest_listing_a_symlink_to_etc_passwd_is_refused(make_bundle, tmp_path, keys):
    import hashlib

    b = make_bundle()
    data = open("/etc/passwd", "rb").read()
    os.symlink("/etc/passwd", b / "passwd")
    d = json.loads((b / "manifest.json").read_bytes())
    d["files"]["passwd"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _resign(b, d, keys[0])
    _refused_without_state(b, tmp_path, keys[1], match="symlink")


# ---------------------------------------------------------------------------------------------- key-holder mistakes
def _edit(d, path, value):
    *parents, last = path
    for p in parents:
        d = d[p]
    d[last] = value


@pytest.mark.parametrize("path, value, match", [
    (("shapes", "S"), 10 ** 9, "shapes.S"),
    (("shapes", "N"), 10 ** 9, "shapes.N"),
    (("serial",), 2 ** 63 - 1, "serial"),
    (("serial",), int(time.time()) + 2 * 366 * 86400, "serial"),
    (("schema_version",), True, "schema_version"),
    (("scene_spec", "version"), True, "version"),
    (("scene_spec", "holiday_window_days"), 10 ** 9, "holiday"),
    (("programs", "adapt", "lr"), True, "lr"),
    (("programs", "adapt", "inner_steps"), True, "inner_steps"),
    (("negatives",), "123456", "negatives"),
    (("configs",), json.loads("[" * 50 + "]" * 50), "configs"),
])
def test_resigned_lax_or_implausible_fields_are_refused(make_bundle, tmp_path, keys, path, value, match):
    b = make_bundle()
    d = json.loads((b / "manifest.json").read_bytes())
    _edit(d, path, value)
    _resign(b, d, keys[0])
    tracemalloc.start()
    try:
        _refused_without_state(b, tmp_path, keys[1], match=match)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # refused before anything of the claimed size is allocated


def test_deeply_nested_manifest_is_a_bundle_error(make_bundle, tmp_path, keys):
    b = make_bundle()
    raw = b"[" * 200_000 + b"]" * 200_000
    (b / "manifest.json").write_bytes(raw)
    (b / "manifest.sig").write_bytes(sign_manifest(raw, keys[0]))
    _refused_without_state(b, tmp_path, keys[1])


def test_zlib_bomb_is_refused_within_bounded_memory(make_bundle, tmp_path, keys):
    import hashlib

    b = make_bundle(codec="zlib")
    bomb = zlib.compress(b"\0" * (300 << 20), 9)  # 300 MB of zeros in ~300 KB
    (b / "adapt.pte").write_bytes(bomb)
    d = json.loads((b / "manifest.json").read_bytes())
    d["files"]["adapt.pte"] = {"sha256": hashlib.sha256(bomb).hexdigest(), "bytes": len(bomb)}
    _resign(b, d, keys[0])
    tracemalloc.start()
    try:
        _refused_without_state(b, tmp_path, keys[1], match="inflate")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20, peak


# ---------------------------------------------------------------------------------------------- bad calls
BAD_CALLS = {
    "ts_millis": lambda r: r.record("u", ITEM_IDS[0], 1e12),
    "ts_huge_int": lambda r: r.record("u", ITEM_IDS[0], 10 ** 400),
    "ts_year_9999": lambda r: r.record("u", ITEM_IDS[0], 253402300000.0),
    "ts_negative": lambda r: r.record("u", ITEM_IDS[0], -1.0),
    "ts_inf": lambda r: r.record("u", ITEM_IDS[0], float("inf")),
    "ts_str": lambda r: r.record("u", ITEM_IDS[0], "881250949"),
    "user_surrogate": lambda r: r.record("\ud800", ITEM_IDS[0], T0),
    "user_nul": lambda r: r.record("a\0b", ITEM_IDS[0], T0),
    "user_blank": lambda r: r.record(" \t\n", ITEM_IDS[0], T0),
    "user_1mb": lambda r: r.record("x" * (1 << 20), ITEM_IDS[0], T0),
    "user_bytes": lambda r: r.record(b"u", ITEM_IDS[0], T0),
    "item_surrogate": lambda r: r.record("u", "\udfff", T0),
    "event_nul": lambda r: r.record("u", ITEM_IDS[0], T0, event_id="e\0"),
    "event_blank": lambda r: r.record("u", ITEM_IDS[0], T0, event_id="   "),
    "event_other_content": lambda r: r.record("u", ITEM_IDS[2], T0, event_id="e1"),
    "now_millis": lambda r: r.recommend("u", 1e12),
    "now_year_9999": lambda r: r.recommend("u", 253402300000.0),
    "now_huge_int": lambda r: r.recommend("u", 10 ** 400),
    "now_none": lambda r: r.recommend("u", None),
    "recommend_surrogate": lambda r: r.recommend("\ud800", T0),
    "history_nul": lambda r: r.history("a\0"),
    "forget_surrogate": lambda r: r.forget("\ud800"),
    "forget_1mb": lambda r: r.forget("y" * (1 << 20)),
    "k_huge": lambda r: r.recommend("u", T0, k=10 ** 400),
    "k_float": lambda r: r.recommend("u", T0, k=float("inf")),
    "pack_other_catalog": lambda r: r.set_trending(TrendingPack.from_counts(T0, {}, catalog="0" * 64), now=T0),
    "pack_at_zero": lambda r: r.set_trending(TrendingPack.from_counts(0, {}), now=T0),
    "pack_year_9000": lambda r: r.set_trending(TrendingPack.from_counts(2e11, {}), now=T0),
    "pack_replay": lambda r: r.set_trending(TrendingPack.from_counts(T0 - 60, {}), now=T0),
    "pack_now_millis": lambda r: r.set_trending(TrendingPack.from_counts(T0, {}), now=T0 * 1000),
}


def _snapshot(rec, state):
    db = sqlite3.connect(state)
    try:
        tables = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("events", "heads", "trending")}
    finally:
        db.close()
    return tables, rec.history("u"), [x.item_id for x in rec.recommend("u", T0 + 10)]


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_every_bad_call_is_an_input_error_and_changes_nothing(make_bundle, tmp_path, keys, name):
    state = tmp_path / "state.db"
    with Recommender.open(make_bundle(), state, trusted_key=keys[1]) as rec:
        rec.record("u", ITEM_IDS[1], T0, event_id="e1")
        rec.set_trending(TrendingPack.from_counts(T0, {ITEM_IDS[3]: 2}), now=T0)
        rec.record("w", ITEM_IDS[2], T0)  # flushes u's head
        before = _snapshot(rec, state)
        with pytest.raises(InputError) as e:
            BAD_CALLS[name](rec)
        if "millis" in name and "pack" not in name:
            assert "milliseconds" in str(e.value)
        assert _snapshot(rec, state) == before


def test_one_bad_event_from_an_older_runtime_never_breaks_the_user(make_bundle, tmp_path, keys):
    """A millisecond timestamp stored before validation existed: the user still gets answers, also after reopening
    (with adapt_scene="last_event" it used to raise OverflowError on every recommend)."""
    b, state = make_bundle(adapt_scene="last_event"), tmp_path / "state.db"
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:
        rec.record("u", ITEM_IDS[1], T0)
    db = sqlite3.connect(state)
    db.execute("INSERT INTO events (event_id, user_id, item_id, ts, chk) VALUES (?, ?, ?, ?, ?)",
               ("old", "u", ITEM_IDS[2], 1e12, _chk("old", "u", ITEM_IDS[2], 1e12)))
    db.commit()
    db.close()
    for _ in range(2):
        with Recommender.open(b, state, trusted_key=keys[1]) as rec:
            got = rec.recommend("u", T0 + 100, k=5)
            assert len(got) == 5 and ITEM_IDS[1] not in [x.item_id for x in got]


# ---------------------------------------------------------------------------------------------- forget, one writer
def test_forget_leaves_no_trace_in_the_raw_database_and_wal(make_bundle, tmp_path, keys):
    b, state = make_bundle(adapt_scene="last_event"), tmp_path / "state.db"
    secret = "secret-user-5e1f"
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:
        for j in range(30):
            rec.record(secret, ITEM_IDS[j], T0 + j, event_id=f"secret-ev-{j:03d}")
        rec.recommend(secret, T0 + 100)
        rec.record("other", ITEM_IDS[1], T0)  # writes the secret user's head with this event
    db = sqlite3.connect(state)
    assert db.execute("SELECT COUNT(*) FROM heads WHERE user_id=?", (secret,)).fetchone() == (1,)
    db.close()
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:
        rec.recommend(secret, T0 + 200)  # the head is cached in memory again
        rec.forget(secret)
        assert rec.history(secret) == []
        assert rec.recommend(secret, T0 + 300) == rec.recommend("never-seen", T0 + 300)
    files = [f for f in tmp_path.iterdir() if f.name.startswith("state.db")]
    assert any(f.name == "state.db" for f in files)
    for f in files:
        raw = f.read_bytes()
        assert secret.encode() not in raw and b"secret-ev-" not in raw, f.name


def test_a_second_writer_gets_state_error(make_bundle, tmp_path, keys):
    b, state = make_bundle(), tmp_path / "state.db"
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:
        with pytest.raises(StateError, match="one writer"):
            Recommender.open(b, state, trusted_key=keys[1])
        rec.record("u", ITEM_IDS[1], T0)  # the first is unaffected
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom metarec.runtime.store import Store\n"
                              "s = Store(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(state)],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"
        with pytest.raises(StateError, match="one writer"):
            Recommender.open(b, state, trusted_key=keys[1])
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:  # the lock dies with its process
        assert len(rec.history("u")) == 1


# ---------------------------------------------------------------------------------------------- rollback mark
@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_deleting_or_truncating_the_state_file_does_not_reset_the_rollback_mark(make_bundle, tmp_path, keys, how):
    state = tmp_path / "state.db"
    with Recommender.open(make_bundle("new", serial=5), state, trusted_key=keys[1]):
        pass
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / f"state.db{suffix}"
        if p.exists():
            p.unlink() if how == "delete" else p.write_bytes(b"")
    old = make_bundle("old", serial=4)
    with pytest.raises(BundleError, match="rollback"):
        Recommender.open(old, state, trusted_key=keys[1])
    (tmp_path / "state.db.mark").unlink()  # the explicit reset
    with Recommender.open(old, state, trusted_key=keys[1]) as rec:
        assert rec.serial == 4


def test_a_corrupt_mark_is_a_state_error(make_bundle, tmp_path, keys):
    (tmp_path / "state.db.mark").write_bytes(b"12x")
    with pytest.raises(StateError, match="mark"):
        Recommender.open(make_bundle(), tmp_path / "state.db", trusted_key=keys[1])


# ---------------------------------------------------------------------------------------------- corrupt state
def test_random_corruptions_are_state_errors_or_identical(tmp_path):
    base = tmp_path / "base.db"
    s = Store(base)
    for i in range(200):
        s.add_event(f"e{i}", f"user{i % 7}", f"item{i % 13}", T0 + i)
    s.put_head("user1", 1, 5, b"scene", b"\0" * 64)
    s.accept_serial(5)
    s.close()
    os.unlink(f"{base}.mark")  # the corrupted database alone must carry the serial

    def read(p):
        st = Store(p)
        try:
            return [st.events(f"user{u}") for u in range(7)], st.max_serial(), st.get_head("user1"), st.get_trending()
        finally:
            st.close()
    want, raw, rng = read(base), base.read_bytes(), random.Random(0)
    outcomes = {"same": 0, "StateError": 0}
    for t in range(300):
        data = bytearray(raw)
        for _ in range(rng.choice([1, 2, 8])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        p = tmp_path / f"c{t}.db"
        p.write_bytes(bytes(data))
        try:
            assert read(p) == want, f"corruption {t} opened with a different history"
            outcomes["same"] += 1
        except StateError:
            outcomes["StateError"] += 1
    assert outcomes["StateError"] >= 60  # the corruptions did hit live data


def test_schema_1_state_is_migrated(tmp_path):
    db = sqlite3.connect(tmp_path / "s.db")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
                             user_id TEXT NOT NULL, item_id TEXT NOT NULL, ts REAL NOT NULL);
        CREATE TABLE heads (user_id TEXT PRIMARY KEY, serial INTEGER NOT NULL, event_seq INTEGER NOT NULL,
                            scene BLOB NOT NULL, head BLOB NOT NULL);
        CREATE TABLE trending (id INTEGER PRIMARY KEY CHECK (id = 1), pack BLOB NOT NULL);
        INSERT INTO meta VALUES ('store_schema', 1), ('max_serial', 7);
        INSERT INTO events (event_id, user_id, item_id, ts) VALUES ('e', 'u', 'i', 880000000.0);""")
    db.commit()
    db.close()
    s = Store(tmp_path / "s.db")
    try:
        assert s.events("u") == [("e", "i", 880000000.0, 1)] and s.max_serial() == 7
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------- trending packs
@pytest.mark.parametrize("raw", [
    b'{"at":880000000,"catalog":"' + b"a" * 64 + b'","counts":{"1":-1},"version":2}',
    b'{"at":880000000,"catalog":"' + b"a" * 64 + b'","counts":{"1":Infinity},"version":2}',
    b'{"at":NaN,"catalog":"' + b"a" * 64 + b'","counts":{},"version":2}',
    b'{"at":880000000,"counts":{},"version":1}',  # unbound: only inside a bundle
    b'{"at":880000000,"catalog":"' + b"a" * 64 + b'","counts":{},"version":true}',
    b"[" * 100_000 + b"]" * 100_000,
])
def test_malformed_signed_packs_are_bundle_errors(tmp_path, keys, raw):
    (tmp_path / "p.json").write_bytes(raw)
    (tmp_path / "p.json.sig").write_bytes(sign_manifest(raw, keys[0]))
    with pytest.raises(BundleError):
        TrendingPack.load(tmp_path / "p.json", keys[1])


def test_a_bound_pack_is_used_and_survives_reopening(make_bundle, tmp_path, keys):
    b, state = make_bundle(), tmp_path / "state.db"
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:
        assert rec.catalog == catalog_digest(ITEM_IDS)
        pack = TrendingPack.from_counts(T0, {ITEM_IDS[2]: 500}, catalog=rec.catalog)
        pack.save(tmp_path / "p.json", keys[0])
        rec.set_trending(TrendingPack.load(tmp_path / "p.json", keys[1]), now=T0 + 3600)
        assert rec.recommend("u", T0 + 3600, k=1)[0].item_id == ITEM_IDS[2]
    with Recommender.open(b, state, trusted_key=keys[1]) as rec:
        assert rec.recommend("u", T0 + 3600, k=1)[0].item_id == ITEM_IDS[2]
        with pytest.raises(InputError, match="replay"):
            rec.set_trending(TrendingPack.from_counts(T0 - 1, {}), now=T0)


BAD_IDS = [None, 7, 1.5, b"u", "", " ", "\t\n", "\0", "a\0b", "\ud800", "x\udfff", "x" * (1 << 20), ["u"], object()]
BAD_TIMES = [None, "881250949", b"1", float("nan"), float("inf"), float("-inf"), -1, 1e12, 1.7e12, 253402300000.0,
             10 ** 400, 10 ** 30, True, [1], complex(1, 1), 8.8e8 + 0j]
BAD_KS = [0, -1, 10 ** 400, True, 2.5, "3", None, float("inf"), [3]]


def _bad_calls():
    ok_item = ITEM_IDS[0]
    for v in BAD_IDS:
        yield lambda r, v=v: r.record(v, ok_item, T0)
        yield lambda r, v=v: r.record("u", v, T0)
        yield lambda r, v=v: r.record("u", ok_item, T0, event_id=v) if v is not None else r.record("u", 1, T0)
        yield lambda r, v=v: r.recommend(v, T0)
        yield lambda r, v=v: r.history(v)
        yield lambda r, v=v: r.forget(v)
    for v in BAD_TIMES:
        yield lambda r, v=v: r.record("u", ok_item, v)
        yield lambda r, v=v: r.recommend("u", v)
        yield lambda r, v=v: r.set_trending(TrendingPack.from_counts(T0, {}), now=v) if v is not None else r.recommend("u", T0, k=0)
        yield lambda r, v=v: r.set_trending(TrendingPack.from_counts(v, {}), now=T0)
    for v in BAD_KS:
        yield lambda r, v=v: r.recommend("u", T0, k=v)


def test_the_whole_bad_call_sweep_is_typed_and_changes_nothing(make_bundle, tmp_path, keys):
    """Every bad value in every argument of every public method (the hostile tester's 138 calls and more)."""
    state = tmp_path / "state.db"
    calls = list(_bad_calls())
    with Recommender.open(make_bundle(adapt_scene="last_event"), state, trusted_key=keys[1]) as rec:
        rec.record("u", ITEM_IDS[1], T0, event_id="e1")
        rec.set_trending(TrendingPack.from_counts(T0, {ITEM_IDS[3]: 2}), now=T0)
        rec.record("w", ITEM_IDS[2], T0)
        before = _snapshot(rec, state)
        untyped = []
        for call in calls:
            try:
                call(rec)
                untyped.append("accepted")
            except InputError:
                pass
            except Exception as e:  # noqa: BLE001 - what the sweep counts
                untyped.append(type(e).__name__)
        assert untyped == [] and _snapshot(rec, state) == before
    assert len(calls) >= 138


@pytest.mark.parametrize("state", [None, "", "a\0b", 123, b"state.db"])
def test_bad_paths_are_input_errors_and_create_nothing(make_bundle, tmp_path, keys, state, monkeypatch):
    b = make_bundle()
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError):
        Recommender.open(b, state, trusted_key=keys[1])
    with pytest.raises(InputError):
        Recommender.open(state if state is not None else 7, tmp_path / "s.db", trusted_key=keys[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
