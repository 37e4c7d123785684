"""Recommender behaviour: parity with the eager model, exclusion, `because`, typed input errors that change
nothing, idempotent and out-of-order events, forget, and heads stored with the bundle serial."""
import math
import sqlite3

import numpy as np
import pytest

from metarec.runtime import BundleError, InputError, Recommender, StateError, TrendingPack
from metarec.runtime.programs import AdaptProgram

from tiny_bundle import ITEM_IDS, K_MAX, N

T0 = 8.8e8  # 1997-11-19, inside the ML-100K span


@pytest.fixture
def rec(bundle_dir, tmp_path, keys):
    r = Recommender.open(bundle_dir, tmp_path / "state.db", trusted_key=keys[1])
    yield r
    r.close()


@pytest.fixture
def adapt_calls(monkeypatch):
    calls = []
    original = AdaptProgram.adapt

    def counting(self, inputs):
        calls.append(1)
        return original(self, inputs)
    monkeypatch.setattr(AdaptProgram, "adapt", counting)
    return calls


def _db_rows(path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        count = lambda table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: E731
        return count("events"), count("heads")
    finally:
        db.close()


def test_top_k_equals_eager_adapted_model(rec, tiny):
    """Parity on random users, support sizes and times, with and without a trending pack."""
    model = tiny[0]
    rng = np.random.default_rng(0)
    agree = total = 0
    for u in range(12):
        user = f"user-{u}"
        n = int(rng.integers(0, 9))
        items = rng.choice(N, size=n, replace=False)
        events = [(ITEM_IDS[i], T0 + float(rng.uniform(0, 3e5))) for i in items]
        for item, ts in events:
            rec.record(user, item, ts)
        counts = {ITEM_IDS[i]: int(rng.integers(0, 30)) for i in rng.choice(N, 10, replace=False)} if u % 2 else {}
        if counts:
            rec.set_trending(TrendingPack.from_counts(T0 + 4e5, counts), now=T0 + 4e5)
        else:
            rec.set_trending(TrendingPack.from_counts(T0 + 4e5, {}), now=T0 + 4e5)
        # two scenes (the head is re-adapted for the second), each asked twice: the second call in the same hour
        # reuses the user vector (rank method) when the bundle has one
        for now in (T0 + 4e5, T0 + 4e5 + 60, T0 + 4e5 + 9 * 3600, T0 + 4e5 + 9 * 3600 + 60):
            got = [r.item_id for r in rec.recommend(user, now, k=10)]
            want = model.topk(events, now, counts, k=10)
            agree += got == want
            total += 1
    assert agree == total


def test_recommend_excludes_recorded_items_and_explains(rec):
    recorded = [ITEM_IDS[i] for i in (3, 7, 11, 20)]
    for j, item in enumerate(recorded):
        rec.record("alice", item, T0 + j)
    out = rec.recommend("alice", T0 + 100, k=K_MAX)
    assert len(out) == K_MAX and not set(recorded) & {r.item_id for r in out}
    assert all(r.because in recorded for r in out)
    assert [r.score for r in out] == sorted((r.score for r in out), reverse=True)
    assert all(isinstance(r.score, float) and math.isfinite(r.score) for r in out)
    cold = rec.recommend("nobody", T0, k=5)  # no history: the prototype label explains
    assert all(r.because in ("action fan", "drama fan", "comedy fan") for r in cold)


def test_user_who_recorded_almost_everything_gets_the_rest(rec):
    for j, item in enumerate(ITEM_IDS[:-3]):
        rec.record("heavy", item, T0 + j)
    out = rec.recommend("heavy", T0 + 1e3, k=10)
    assert sorted(r.item_id for r in out) == sorted(ITEM_IDS[-3:])


@pytest.mark.parametrize("call", [
    lambda r: r.record("u", "not-an-item", T0),
    lambda r: r.record("u", ITEM_IDS[0], float("nan")),
    lambda r: r.record("u", ITEM_IDS[0], float("inf")),
    lambda r: r.record("u", ITEM_IDS[0], -float("inf")),
    lambda r: r.record("u", ITEM_IDS[0], "yesterday"),
    lambda r: r.record("", ITEM_IDS[0], T0),
    lambda r: r.record("u", "", T0),
    lambda r: r.record("u", ITEM_IDS[0], T0, event_id=""),
    lambda r: r.record(7, ITEM_IDS[0], T0),
    lambda r: r.recommend("u", T0, k=0),
    lambda r: r.recommend("u", T0, k=-1),
    lambda r: r.recommend("u", T0, k=N + 1),
    lambda r: r.recommend("u", T0, k=K_MAX + 1),
    lambda r: r.recommend("u", T0, k=True),
    lambda r: r.recommend("u", T0, k=2.5),
    lambda r: r.recommend("u", float("nan")),
    lambda r: r.recommend("", T0),
    lambda r: r.history(""),
    lambda r: r.forget(""),
    lambda r: r.set_trending({"1": 2}),
])
def test_bad_input_is_a_typed_error_and_changes_no_state(rec, tmp_path, call):
    rec.record("u", ITEM_IDS[1], T0, event_id="e1")
    rec.recommend("u", T0 + 5, k=3)
    before = (_db_rows(tmp_path / "state.db"), rec.history("u"))
    with pytest.raises(InputError):
        call(rec)
    assert (_db_rows(tmp_path / "state.db"), rec.history("u")) == before


def test_duplicate_event_id_is_a_no_op_and_other_content_is_refused(rec):
    rec.record("u", ITEM_IDS[1], T0, event_id="e1")
    rec.record("u", ITEM_IDS[1], T0, event_id="e1")  # a retry: no-op
    for other in (("u", ITEM_IDS[2], T0), ("u", ITEM_IDS[1], T0 + 1), ("v", ITEM_IDS[1], T0)):
        with pytest.raises(InputError, match="other content"):
            rec.record(*other, event_id="e1")
    assert rec.history("u") == [("e1", ITEM_IDS[1], T0)] and rec.history("v") == []


def test_out_of_order_events_are_accepted_ordered_and_readapted(rec, tiny, adapt_calls):
    rec.record("u", ITEM_IDS[5], T0 + 10, event_id="b")
    rec.record("u", ITEM_IDS[6], T0 + 20, event_id="c")
    rec.recommend("u", T0 + 100)
    rec.record("u", ITEM_IDS[4], T0 + 5, event_id="a")  # arrives late
    assert [e.event_id for e in rec.history("u")] == ["a", "b", "c"]
    got = [r.item_id for r in rec.recommend("u", T0 + 100)]
    events = [(ITEM_IDS[5], T0 + 10), (ITEM_IDS[6], T0 + 20), (ITEM_IDS[4], T0 + 5)]
    assert got == tiny[0].topk(events, T0 + 100)
    assert len(adapt_calls) == 2  # once per new event batch, not per call


def test_head_is_adapted_once_stored_with_serial_and_reused_after_reopen(bundle_dir, make_bundle, tmp_path, keys,
                                                                         adapt_calls):
    state = tmp_path / "state.db"
    with Recommender.open(bundle_dir, state, trusted_key=keys[1]) as rec:
        rec.record("u", ITEM_IDS[8], T0)
        first = rec.recommend("u", T0 + 60)
        assert rec.recommend("u", T0 + 60) == first
        assert len(adapt_calls) == 1
    with Recommender.open(bundle_dir, state, trusted_key=keys[1]) as rec:  # stored head, same serial: no adapt
        assert rec.recommend("u", T0 + 60) == first
        assert len(adapt_calls) == 1
    db = sqlite3.connect(state)
    assert db.execute("SELECT serial FROM heads WHERE user_id='u'").fetchone() == (1,)
    db.close()
    with Recommender.open(bundle_dir, tmp_path / "probe.db", trusted_key=keys[1]) as probe:
        rank = probe._score.has_rank
    with Recommender.open(make_bundle("v2", serial=2, rank=rank), state, trusted_key=keys[1]) as rec:  # rebuilt
        assert rec.recommend("u", T0 + 60) == first  # same model, same events: same answer by replay
        assert len(adapt_calls) == 2
    db = sqlite3.connect(state)
    assert db.execute("SELECT serial FROM heads WHERE user_id='u'").fetchone() == (2,)
    db.close()


def test_last_event_scene_mode_adapts_once_per_event_batch(make_bundle, tmp_path, keys, tiny, adapt_calls):
    bundle = make_bundle("last-event", adapt_scene="last_event")
    events = [(ITEM_IDS[2], T0 + 50), (ITEM_IDS[9], T0 + 10)]
    with Recommender.open(bundle, tmp_path / "s.db", trusted_key=keys[1]) as rec:
        for item, ts in events:
            rec.record("u", item, ts)
        for now in (T0 + 3600, T0 + 12 * 3600, T0 + 3 * 86400):  # other scenes, same head
            got = [r.item_id for r in rec.recommend("u", now)]
            assert got == tiny[0].topk(events, now, adapt_at=T0 + 50)
        assert len(adapt_calls) == 1


def test_forget_erases_the_user_and_only_the_user(rec, tmp_path):
    rec.record("secret-user-7f3a", ITEM_IDS[1], T0, event_id="secret-event-9c1d")
    rec.record("v", ITEM_IDS[2], T0)
    rec.recommend("secret-user-7f3a", T0 + 1)
    rec.forget("secret-user-7f3a")
    assert rec.history("secret-user-7f3a") == [] and len(rec.history("v")) == 1
    assert _db_rows(tmp_path / "state.db") == (1, 0)
    assert rec.recommend("secret-user-7f3a", T0 + 1) == rec.recommend("never-seen", T0 + 1)
    # secure_delete + a WAL checkpoint: the erased ids are gone from the files, not just unlinked from the tree
    for f in tmp_path.glob("state.db*"):
        raw = f.read_bytes()
        assert b"secret-user-7f3a" not in raw and b"secret-event-9c1d" not in raw, f.name


def test_trending_pack_is_persisted_and_unknown_items_ignored(bundle_dir, tmp_path, keys):
    state = tmp_path / "state.db"
    pack = TrendingPack.from_counts(T0, {ITEM_IDS[2]: 500, "not-in-catalog": 9})
    with Recommender.open(bundle_dir, state, trusted_key=keys[1]) as rec:
        rec.set_trending(pack, now=T0)
        boosted = rec.recommend("u", T0, k=1)[0]
    assert boosted.item_id == ITEM_IDS[2]
    with Recommender.open(bundle_dir, state, trusted_key=keys[1]) as rec:
        assert rec.recommend("u", T0, k=1)[0] == boosted


def test_closed_recommender_raises_state_error(rec):
    rec.close()
    with pytest.raises(StateError):
        rec.recommend("u", T0)
    with pytest.raises(StateError):
        rec.record("u", ITEM_IDS[0], T0)
    rec.close()  # idempotent


def test_unusable_state_path_is_a_state_error(bundle_dir, tmp_path, keys):
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        Recommender.open(bundle_dir, bad, trusted_key=keys[1])
    with pytest.raises(StateError):
        Recommender.open(bundle_dir, tmp_path / "missing-dir" / "s.db", trusted_key=keys[1])


def test_missing_bundle_dir_is_a_bundle_error(tmp_path, keys):
    with pytest.raises(BundleError):
        Recommender.open(tmp_path / "nope", tmp_path / "s.db", trusted_key=keys[1])


def test_heads_are_written_with_the_next_event_not_inside_recommend(bundle_dir, tmp_path, keys):
    """recommend leaves the store untouched; the head rides along with the next event's transaction; a user
    forgotten before that is never written back (close flushes only live users)."""
    state = tmp_path / "state.db"
    with Recommender.open(bundle_dir, state, trusted_key=keys[1]) as rec:
        rec.record("a", ITEM_IDS[3], T0)
        rec.record("gone", ITEM_IDS[4], T0)
        rec.recommend("a", T0 + 60)
        rec.recommend("gone", T0 + 60)
        assert _db_rows(state) == (2, 0)  # no write inside recommend
        rec.forget("gone")
        rec.record("b", ITEM_IDS[5], T0)  # carries a's head
        db = sqlite3.connect(state)
        assert db.execute("SELECT user_id, event_seq FROM heads").fetchall() == [("a", 1)]
        db.close()
        rec.recommend("b", T0 + 60)
        rec.record("b", ITEM_IDS[5], T0, event_id="dup")
        rec.record("b", ITEM_IDS[5], T0, event_id="dup")  # a duplicate event: b's head stays current
    db = sqlite3.connect(state)
    assert sorted(r[0] for r in db.execute("SELECT user_id FROM heads")) == ["a"]
    db.close()


@pytest.mark.parametrize("planned", [False, True])
def test_scene_updates_reach_the_bound_score_program(planned, tiny, keys, tmp_path):
    """score.pte's inputs stay bound between calls and the scene tensor is rewritten in place. A cold user (no head
    to re-adapt, so the same input list every call) at several times must match eager each time: for a program
    with unplanned inputs (bound once: in-place updates are seen) and one with planned inputs (copied in at
    binding, so the runtime re-binds per call)."""
    from tiny_bundle import export_programs, write_bundle

    m = tiny[0]
    programs = export_programs(m, planned_inputs=True) if planned else tiny[1]
    d = write_bundle(tmp_path / "b", m, programs, keys[0], serial=1)
    with Recommender.open(d, tmp_path / "state.db", trusted_key=keys[1]) as r:
        assert r._score.binds_inputs is (not planned)
        r.set_trending(TrendingPack.from_counts(T0, {ITEM_IDS[3]: 5, ITEM_IDS[7]: 2}), now=T0)
        answers = set()
        for hour in range(0, 48, 5):
            now = T0 + hour * 3600.0
            got = [x.item_id for x in r.recommend("cold", now, k=10)]
            assert got == m.topk([], now, {ITEM_IDS[3]: 5, ITEM_IDS[7]: 2}, k=10), hour
            answers.add(tuple(got))
        assert len(answers) > 1  # the scene changes the answer, so a frozen scene input would be caught


def test_rank_method_reuses_the_user_vector_only_while_nothing_changed(make_bundle, tiny, tmp_path, keys,
                                                                      monkeypatch):
    """With score.pte's rank method, a repeat recommend in the same hour runs `rank` alone; a new event, a new
    trending pack and a new hour each run forward again, and every answer equals the eager model's."""
    from metarec.runtime.programs import ScoreProgram

    calls = []
    for name in ("execute_bound", "rank_bound"):
        original = getattr(ScoreProgram, name)
        monkeypatch.setattr(ScoreProgram, name, lambda self, args, _o=original, _n=name: (calls.append(_n),
                                                                                          _o(self, args))[1])
    m = tiny[0]
    t = T0 - T0 % 3600  # a whole hour (the offset is whole hours)
    events, counts = [(ITEM_IDS[4], t - 500), (ITEM_IDS[9], t - 400)], {ITEM_IDS[3]: 5}

    def ask(now):
        calls.clear()
        got = [x.item_id for x in r.recommend("u", now, k=10)]
        assert got == m.topk(events, now, counts, k=10)
        return calls[:]

    with Recommender.open(make_bundle(rank=True), tmp_path / "s.db", trusted_key=keys[1]) as r:
        assert r._score.has_rank
        r.set_trending(TrendingPack.from_counts(t, counts), now=t)
        for item, ts in events:
            r.record("u", item, ts)
        assert ask(t + 10) == ["execute_bound"]
        assert ask(t + 1800) == ["rank_bound"]  # same hour, same scene
        counts = {ITEM_IDS[3]: 5, ITEM_IDS[20]: 40}
        r.set_trending(TrendingPack.from_counts(t + 1900, counts), now=t + 1900)
        assert ask(t + 2000) == ["execute_bound"]
        assert ask(t + 2100) == ["rank_bound"]
        first = r.recommend("u", t + 2200, k=1)[0].item_id
        events.append((first, t + 2300))
        r.record("u", first, t + 2300)
        assert ask(t + 2400) == ["execute_bound"]  # the new event: new history, exclusions and head
        assert first not in [x.item_id for x in r.recommend("u", t + 2500, k=10)]
        assert ask(t + 3600) == ["execute_bound"]  # a new hour: a new scene
        assert ask(t + 3700) == ["rank_bound"]
    with Recommender.open(make_bundle("plain"), tmp_path / "s2.db", trusted_key=keys[1]) as r:
        r.set_trending(TrendingPack.from_counts(t + 1900, counts), now=t + 1900)
        for item, ts in events:
            r.record("u", item, ts)
        assert not r._score.has_rank
        assert ask(t + 3700) == ["execute_bound"] and ask(t + 3800) == ["execute_bound"]
