"""The onboarding pack persists in the state file as the neighbour pack does (store.py's `onboarding_pack` row:
OnboardingPack.to_json() bytes and `_chk(1, pack)`): restored at open on a bundle with the term, a row failing its
checksum is a StateError, a consistent row that does not fit is dropped, a bundle without the term ignores it, and a
refused or failed set leaves the row (and the term in use) as it was."""
import json
import sqlite3

import numpy as np
import pytest
from test_neighbors import T0
from test_onboarding import CATALOG, NOW, SPEC, _pack, _rows
from tiny_bundle import ITEM_IDS, write_bundle

from metarec.runtime import OnboardingPack, Recommender
from metarec.runtime.errors import InputError, StateError
from metarec.runtime.store import Store, _chk

USERS = {"k0": [], "k2": [1, 2], "k3": [4, 5, 6], "k12": list(range(7, 19))}  # history lengths with weight > 0


@pytest.fixture
def ob_bundle(tmp_path, tiny, keys, tiny_rank_programs):
    return write_bundle(tmp_path / "ob", tiny[0], tiny_rank_programs, keys[0], rank=True, onboarding=SPEC)


@pytest.fixture
def plain_bundle(tmp_path, tiny, keys, tiny_rank_programs):
    return write_bundle(tmp_path / "plain", tiny[0], tiny_rank_programs, keys[0], rank=True)


def _open(bundle, state, keys):
    return Recommender.open(bundle, state, trusted_key=keys[1])


def _record(rec):
    for u, items in USERS.items():
        for j, i in enumerate(items):
            rec.record(u, ITEM_IDS[i], T0 + 60 * j, event_id=f"{u}:{j}")


def _scores(rec):
    """Every user's top-10 as (ids, scores): asked twice (forward + rank, then rank alone), both must agree."""
    out = {}
    for u in USERS:
        first = [(r.item_id, r.score) for r in rec.recommend(u, NOW, k=10)]
        assert [(r.item_id, r.score) for r in rec.recommend(u, NOW, k=10)] == first
        out[u] = first
    return out


def _row(state):
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT id, pack, chk FROM onboarding_pack").fetchall()
    finally:
        db.close()


def _set_row(state, pack: bytes, chk: int):
    db = sqlite3.connect(state)
    db.execute("UPDATE onboarding_pack SET pack=?, chk=?", (pack, chk))
    db.commit()
    db.close()


def test_the_store_keeps_the_bytes_with_the_neighbour_packs_checksum(tmp_path):
    store = Store(tmp_path / "s.db")
    try:
        assert store.get_onboarding_pack() is None
        data = _pack(_rows()).to_json()
        store.put_onboarding_pack(data)
        assert store.get_onboarding_pack() == data
    finally:
        store.close()
    assert _row(tmp_path / "s.db") == [(1, data, _chk(1, data))]


def test_a_reopened_recommender_serves_the_pack_it_was_given(tmp_path, ob_bundle, keys):
    with _open(ob_bundle, tmp_path / "off.db", keys) as rec:
        _record(rec)
        off = _scores(rec)
    pack = _pack(_rows())
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        _record(rec)
        rec.set_onboarding(pack, now=NOW)
        on = _scores(rec)
    assert sum(on[u] != off[u] for u in USERS) == len(USERS)  # the term moves every user (else this proves little)
    assert _row(tmp_path / "s.db") == [(1, pack.to_json(), _chk(1, pack.to_json()))]
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        assert rec._ob_pack == pack
        assert _scores(rec) == on
        with pytest.raises(InputError, match="replay"):  # the restored pack is the one in use: older ones are replays
            rec.set_onboarding(_pack(_rows(1), at=pack.at - 10), now=NOW)


@pytest.mark.parametrize("where", ["pack", "chk"])
def test_a_row_failing_its_checksum_is_a_state_error_at_open(tmp_path, ob_bundle, keys, where):
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        rec.set_onboarding(_pack(_rows()), now=NOW)
    (_, data, chk), = _row(tmp_path / "s.db")
    if where == "pack":
        data = bytearray(data)
        data[len(data) // 2] ^= 1
        _set_row(tmp_path / "s.db", bytes(data), chk)
    else:
        _set_row(tmp_path / "s.db", data, chk ^ 1)
    with pytest.raises(StateError, match="checksum"):
        _open(ob_bundle, tmp_path / "s.db", keys)


def _other_catalog(data):
    d = json.loads(data)
    d["catalog"] = "f" * 64
    return OnboardingPack.from_rows(d["at"], d["rows"], d["catalog"]).to_json()


@pytest.mark.parametrize("how", ["other_catalog", "malformed"])
def test_a_consistent_row_that_does_not_fit_is_dropped_as_a_neighbour_pack_is(tmp_path, ob_bundle, keys, how):
    """A row with a valid checksum holding a pack of another catalog, or bytes that are no pack: the term stays off
    (as before any pack), the row is left as it is."""
    with _open(ob_bundle, tmp_path / "off.db", keys) as rec:
        _record(rec)
        off = _scores(rec)
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        _record(rec)
        rec.set_onboarding(_pack(_rows()), now=NOW)
    (_, data, _), = _row(tmp_path / "s.db")
    data = _other_catalog(data) if how == "other_catalog" else data[:-2]
    _set_row(tmp_path / "s.db", data, _chk(1, data))
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        assert rec._ob_pack is None
        assert _scores(rec) == off
    assert _row(tmp_path / "s.db") == [(1, data, _chk(1, data))]


def test_a_bundle_without_the_term_ignores_the_row(tmp_path, ob_bundle, plain_bundle, keys):
    with _open(plain_bundle, tmp_path / "plain.db", keys) as rec:
        _record(rec)
        plain = _scores(rec)
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        _record(rec)
        rec.set_onboarding(_pack(_rows()), now=NOW)
        on = _scores(rec)
    row = _row(tmp_path / "s.db")
    with _open(plain_bundle, tmp_path / "s.db", keys) as rec:
        assert rec._ob_pack is None
        assert _scores(rec) == plain
    assert _row(tmp_path / "s.db") == row
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:  # kept for a later bundle with the term
        assert _scores(rec) == on


def test_a_refused_or_failed_set_changes_neither_the_row_nor_the_term(tmp_path, ob_bundle, keys, monkeypatch):
    pack = _pack(_rows())
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        _record(rec)
        rec.set_onboarding(pack, now=NOW)
        on, row = _scores(rec), _row(tmp_path / "s.db")
        bad = [_pack(_rows(1), catalog="f" * 64), _pack(_rows(1), at=NOW - 30 * 86400),
               _pack(_rows(1), at=NOW + 5 * 86400), _pack(_rows(1), at=pack.at - 1),  # replay
               OnboardingPack(NOW, ({ITEM_IDS[0]: float("nan")},) + ({},) * 10, CATALOG), {"rows": []}]
        for p in bad:
            with pytest.raises(InputError):
                rec.set_onboarding(p, now=NOW)
            assert _row(tmp_path / "s.db") == row
            assert _scores(rec) == on

        def fail(data):
            raise StateError("state write failed (nothing was changed): disk full")

        monkeypatch.setattr(rec._store, "put_onboarding_pack", fail)
        with pytest.raises(StateError, match="disk full"):  # the write comes first: the term in use stays
            rec.set_onboarding(_pack(_rows(2), at=NOW + 60), now=NOW)
        assert rec._ob_pack == pack and _scores(rec) == on
        monkeypatch.undo()
    assert _row(tmp_path / "s.db") == row
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        assert _scores(rec) == on


def test_the_newest_pack_set_is_the_one_restored(tmp_path, ob_bundle, keys):
    first, second = _pack(_rows(), at=NOW - 120), _pack(np.roll(_rows(3), 1, axis=1), at=NOW - 60)
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        _record(rec)
        rec.set_onboarding(first, now=NOW)
        rec.set_onboarding(second, now=NOW)
        want = _scores(rec)
    with _open(ob_bundle, tmp_path / "s.db", keys) as rec:
        assert rec._ob_pack == second
        assert _scores(rec) == want
