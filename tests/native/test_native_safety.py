"""The Python runtime's tamper, bad-input and crash guarantees, asserted against the native library (ctypes)."""
import ctypes as C
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metarec.runtime import BundleError, InputError, StateError
from metarec.runtime.bundle_codecs import generate_keypair
from metarec.runtime.native import MR_BUNDLE_ERROR, MR_INPUT_ERROR, NativeRecommender

from native_helpers import T0, resign

FILES = ["manifest.json", "manifest.sig", "score.pte", "adapt.pte", "items.bin", "head0.bin", "item_ids.bin"]


def _rows(db: Path):
    with sqlite3.connect(db) as c:
        return [sorted(c.execute(f"SELECT * FROM {t}").fetchall()) for t in ("events", "heads", "meta", "trending")]


def _open(bundle, state, keys, lib):
    return NativeRecommender.open(bundle, state, keys / "public.pem", lib=lib)


def _serial_seen(db: Path) -> int:
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT value FROM meta WHERE key='max_serial'").fetchone()
    return row[0] if row else 0


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_tampered_bundle_file_is_a_bundle_error_and_changes_no_state(bundle, keys, lib, tmp_path, name, how):
    state = tmp_path / "s.db"
    _open(bundle, state, keys, lib).close()
    path = bundle / name
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    before = _rows(state)
    with pytest.raises(BundleError):
        _open(bundle, state, keys, lib)
    assert _rows(state) == before


def test_wrong_key_non_canonical_manifest_and_rollback_are_refused(bundle, keys, lib, tmp_path):
    other_pub = generate_keypair()[1]
    with pytest.raises(BundleError, match="signature"):
        NativeRecommender.open(bundle, tmp_path / "a.db", other_pub, lib=lib)
    with pytest.raises(BundleError):
        NativeRecommender.open(bundle, tmp_path / "a.db", b"-----BEGIN PUBLIC KEY-----\nnot a key\n", lib=lib)
    state = tmp_path / "s.db"
    _open(bundle, state, keys, lib).close()
    assert _serial_seen(state) == 10
    resign(bundle, keys / "private.pem", serial=9)  # validly signed, older: a rollback
    with pytest.raises(BundleError, match="rollback"):
        _open(bundle, state, keys, lib)
    assert _serial_seen(state) == 10
    resign(bundle, keys / "private.pem", serial=11, schema_version=3)
    with pytest.raises(BundleError, match="schema"):
        _open(bundle, state, keys, lib)
    raw = json.loads((bundle / "manifest.json").read_bytes())
    raw["schema_version"] = 2
    pretty = json.dumps(raw, sort_keys=True, indent=1).encode()  # signed, but not canonical: not our writer
    from metarec.runtime.bundle_codecs import sign_manifest
    (bundle / "manifest.json").write_bytes(pretty)
    (bundle / "manifest.sig").write_bytes(sign_manifest(pretty, keys / "private.pem"))
    with pytest.raises(BundleError, match="canonical"):
        _open(bundle, state, keys, lib)
    resign(bundle, keys / "private.pem", serial=11, schema_version=2)
    with _open(bundle, state, keys, lib) as rec:
        assert rec.serial == 11 and len(rec.recommend("u", T0, 5)) == 5
    assert _serial_seen(state) == 11


BAD = [
    lambda r, ids: r.record("u", ids[0], float("nan")),
    lambda r, ids: r.record("u", ids[0], float("inf")),
    lambda r, ids: r.record("u", ids[0], -float("inf")),
    lambda r, ids: r.record("u", ids[0], 1.7e12),  # milliseconds: no calendar scene (years 1..9999 only)
    lambda r, ids: r.recommend("u", 1.7e12),
    lambda r, ids: r.recommend("u", -1e300),
    lambda r, ids: r.record("", ids[0], T0),
    lambda r, ids: r.record("u", "", T0),
    lambda r, ids: r.record("u", "no-such-item", T0),
    lambda r, ids: r.record("u", ids[0], T0, event_id=""),
    lambda r, ids: r.recommend("u", T0, k=0),
    lambda r, ids: r.recommend("u", T0, k=-1),
    lambda r, ids: r.recommend("u", T0, k=len(ids) + 1),
    lambda r, ids: r.recommend("u", T0, k=r.k_max + 1),
    lambda r, ids: r.recommend("u", float("nan")),
    lambda r, ids: r.recommend("", T0),
    lambda r, ids: r.forget(""),
    lambda r, ids: r._check(r._lib.mr_record(r._h, None, ids[0].encode(), T0, None)),
    lambda r, ids: r._check(r._lib.mr_record(r._h, b"u", None, T0, None)),
    lambda r, ids: r._check(r._lib.mr_recommend(r._h, b"u", T0, 3, None, None, None)),
    lambda r, ids: r._check(r._lib.mr_recommend(r._h, None, T0, 3, (C.c_char_p * 3)(), (C.c_float * 3)(),
                                                C.byref(C.c_int()))),
    lambda r, ids: r._check(r._lib.mr_forget(r._h, None)),
    lambda r, ids: r._check(r._lib.mr_set_trending(r._h, T0, 2, None, None)),
    lambda r, ids: r._check(r._lib.mr_set_trending(r._h, float("nan"), 0, None, None)),
    lambda r, ids: r._check(r._lib.mr_set_trending(r._h, T0, 1, (C.c_char_p * 1)(b""), (C.c_double * 1)(1.0))),
    lambda r, ids: r._check(r._lib.mr_set_trending(r._h, T0, 1, (C.c_char_p * 1)(ids[0].encode()),
                                                   (C.c_double * 1)(-1.0))),
    lambda r, ids: r._check(r._lib.mr_set_trending(r._h, T0, 1, (C.c_char_p * 1)(None), (C.c_double * 1)(1.0))),
]


@pytest.mark.parametrize("call", BAD)
def test_bad_input_is_an_input_error_and_changes_nothing(exported, keys, item_ids, lib, tmp_path, call):
    state = tmp_path / "s.db"
    with _open(exported[0], state, keys, lib) as rec:
        rec.record("u", item_ids[1], T0, event_id="e1")
        first = rec.recommend("u", T0 + 5, k=3)
        rec.close()  # flush the deferred head, so the rows compared are the final ones
    with _open(exported[0], state, keys, lib) as rec:
        before = _rows(state)
        with pytest.raises(InputError):
            call(rec, item_ids)
        assert _rows(state) == before and rec.recommend("u", T0 + 5, k=3) == first


def test_null_handles_and_closed_recommender(lib, exported, keys, tmp_path):
    assert lib.mr_open(None, None, None, None) == MR_INPUT_ERROR
    h = C.c_void_p()
    assert lib.mr_open(None, b"x", b"y", C.byref(h)) == MR_INPUT_ERROR
    assert b"NULL" in lib.mr_last_error(h)
    lib.mr_close(h)
    assert lib.mr_record(None, b"u", b"i", T0, None) == MR_INPUT_ERROR
    assert lib.mr_recommend(None, b"u", T0, 1, None, None, None) == MR_INPUT_ERROR
    lib.mr_close(None)
    h = C.c_void_p()
    assert lib.mr_open(str(tmp_path / "missing").encode(), str(tmp_path / "s.db").encode(), b"k", C.byref(h)) \
        == MR_BUNDLE_ERROR
    lib.mr_close(h)
    rec = _open(exported[0], tmp_path / "s.db", keys, lib)
    rec.close()
    with pytest.raises(StateError):
        rec.recommend("u", T0)
    with pytest.raises(StateError):  # an unusable state path
        _open(exported[0], tmp_path / "no-dir" / "s.db", keys, lib)


def test_idempotent_ids_out_of_order_and_forget(exported, keys, item_ids, lib, tmp_path):
    with _open(exported[0], tmp_path / "a.db", keys, lib) as a, _open(exported[0], tmp_path / "b.db", keys, lib) as b:
        events = [(item_ids[i], T0 + 100.0 * i) for i in (3, 8, 13, 21)]
        for j, (item, ts) in enumerate(events):
            a.record("u", item, ts, event_id=f"e{j}")
        for j, (item, ts) in reversed(list(enumerate(events))):  # the same events arriving newest first
            b.record("u", item, ts, event_id=f"e{j}")
        b.record("u", item_ids[30], T0, event_id="e0")  # a duplicate id, other content: a no-op
        assert a.count_events("u") == b.count_events("u") == 4
        assert a.recommend("u", T0 + 1e4, 10) == b.recommend("u", T0 + 1e4, 10)
        recorded = {item for item, _ in events}
        assert not recorded & {r.item_id for r in a.recommend("u", T0 + 1e4, 20)}  # own items excluded
        a.record("v", item_ids[5], T0)  # event_id NULL: one is generated
        a.forget("u")
        assert a.count_events("u") == 0 and a.count_events("v") == 1


CHILD = Path(__file__).with_name("native_crash_child.py")


def test_sigkill_mid_record_loses_no_acknowledged_event(exported, keys, tmp_path):
    """A child records through the library and acknowledges each event after mr_record returned; it is
    SIGKILLed at random instants, 20 times: every acknowledged event is in the database afterwards."""
    db, rng, acked, hits = tmp_path / "state.db", random.Random(0), set(), 0
    env = dict(os.environ)
    for run in range(20):
        child = subprocess.Popen([sys.executable, str(CHILD), str(exported[0]), str(keys / "public.pem"), str(db),
                                  str(run)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        run_acked = {ln.split()[1] for ln in child.stdout.read().decode().split("\n") if ln.startswith("ack ")}
        child.stdout.close()
        hits += bool(run_acked)
        acked |= run_acked
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = {r[0] for r in c.execute("SELECT event_id FROM events")}
        assert not acked - stored, f"run {run}: acknowledged events lost"
    assert len(acked) >= 20 and hits >= 10  # the kills landed on real writes


def test_a_cached_user_updated_by_record_answers_as_a_fresh_load_from_the_store(exported, keys, item_ids, lib,
                                                                                  tmp_path):
    """mr_record keeps a cached user's events in memory (no store query before the next adaptation): after every
    event (late ones, a retried id, more events than the L history slots) its answer equals that of a recommender
    opened afresh on the same events, which reads them from the store."""
    rng = random.Random(3)
    items = rng.sample(range(len(item_ids)), 16)
    ts = [T0 + rng.uniform(0, 3e5) for _ in items]  # random arrival order: most events land between earlier ones
    now, fresh_db, answers = T0 + 4e5, tmp_path / "fresh.db", set()
    with _open(exported[0], tmp_path / "cached.db", keys, lib) as cached:
        for j, (i, t) in enumerate(zip(items, ts)):
            cached.record("u", item_ids[i], t, event_id=f"e{j}")
            if j == 5:
                cached.record("u", item_ids[items[0]], ts[0], event_id="e0")  # a retried id: a no-op
            before = cached.stats()[0]
            got = cached.recommend("u", now, 10)
            assert cached.stats()[0] == before + 1  # the new event made the head stale: re-adapted
            with _open(exported[0], fresh_db, keys, lib) as w:
                w.record("u", item_ids[i], t, event_id=f"e{j}")
            with _open(exported[0], fresh_db, keys, lib) as fresh:  # a new process: reads the events from the store
                want = fresh.recommend("u", now, 10)
            assert got == want, f"after event {j}"
            answers.add(tuple(r.item_id for r in got))
        assert cached.count_events("u") == 16
    assert len(answers) > 8  # the answer moves with the events: the comparison is not trivially equal
