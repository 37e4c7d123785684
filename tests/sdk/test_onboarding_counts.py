"""The onboarding counts (sdk.protocol EventLog.position / onboarding_counts), the `onboarding` baseline and the
server's pack rows (sdk/onboarding.py): what users took at each history length lately."""
import numpy as np

from metarec.runtime.manifest import ONBOARDING_ROWS, OnboardingSpec
from metarec.sdk.baselines import make_baseline
from metarec.sdk.data import build_dataset
from metarec.sdk.onboarding import onboarding_feature, pack_rows
from metarec.sdk.protocol import WEEK, EventLog, make_query

DAY = 86400.0


def _ds():
    # u1: items 10, 11, 12 (positions 0, 1, 2); u2: 10, 13 (interleaved in time with u1); u3 much later: 14, 10
    rows = [("u1", 10, 0), ("u2", 10, 1), ("u1", 11, 2), ("u2", 13, 3), ("u1", 12, 4), ("u3", 14, 20 * DAY),
            ("u3", 10, 20 * DAY + 1)]
    u, i, t = zip(*rows)
    return build_dataset("toy", list(u), list(i), list(t))


def _index(ds, raw):
    return int(np.flatnonzero(ds.item_ids == raw)[0]) if not isinstance(ds.item_ids[0], str) else \
        int(np.flatnonzero(ds.item_ids == str(raw))[0])


def test_positions_count_each_users_events_in_time_order():
    ds = _ds()
    log = EventLog(ds)
    by_user = {ds.user_ids[u]: log.position[log.user_rows(u)].tolist() for u in range(ds.n_users)}
    assert by_user == {"u1": [0, 1, 2], "u2": [0, 1], "u3": [0, 1]}


def test_counts_take_the_history_position_window_and_other_users_only():
    ds = _ds()
    log = EventLog(ds)
    u1 = int(np.flatnonzero(ds.user_ids == "u1")[0])
    c0 = log.onboarding_counts(5.0, u1, 0, span=0)  # first events of others before t=5: u2's item 10
    assert c0.sum() == 1 and c0[_index(ds, 10)] == 1
    c1 = log.onboarding_counts(5.0, -1, 1, span=0)  # everyone's second events: 11 (u1) and 13 (u2)
    assert c1[_index(ds, 11)] == 1 and c1[_index(ds, 13)] == 1 and c1.sum() == 2
    assert log.onboarding_counts(5.0, -1, 1, span=1).sum() == 5  # positions 0..2: every event before t=5
    assert log.onboarding_counts(4.0, -1, 2, span=0).sum() == 0  # strictly before t: u1's third event is at 4
    late = log.onboarding_counts(20 * DAY + 2, -1, 0, span=0, window=WEEK)  # the first week's events are too old
    assert late.sum() == 1 and late[_index(ds, 14)] == 1


def test_the_baseline_ranks_what_users_at_this_length_took():
    ds = _ds()
    log = EventLog(ds)
    b = make_baseline("onboarding").fit(ds, np.arange(ds.n_users), log)
    u2, u3 = (int(np.flatnonzero(ds.user_ids == x)[0]) for x in ("u2", "u3"))
    s = b.score(make_query(ds, log, u2, log.user_rows(u2), 1, 3.0))  # others' events before t=3: u1's 10 and 11
    s[_index(ds, 10)] = -np.inf  # the support, as the evaluator excludes it
    assert int(np.argmax(s)) == _index(ds, 11)
    s = b.score(make_query(ds, log, u3, log.user_rows(u3), 1, 20 * DAY + 1))  # nothing in the week but its own event
    assert s[_index(ds, 14)] == 0 and int(np.argmax(s)) == _index(ds, 10)  # ties: popularity (2 other users)


def test_pack_rows_are_the_features_the_sdk_scorer_reads():
    ds = _ds()
    log = EventLog(ds)
    spec = OnboardingSpec(weight=(1.0,), span=1, window_days=7.0)
    rows = pack_rows(log, 5.0, -1, spec, ds.item_ids)
    assert len(rows) == ONBOARDING_ROWS
    for k in (0, 1, 2, 3, 10, 40):
        f = onboarding_feature(log, 5.0, -1, k, spec)
        row = rows[min(k, ONBOARDING_ROWS - 1)]
        want = np.zeros(ds.n_items)
        for item, c in row.items():
            want[_index(ds, int(item) if not isinstance(ds.item_ids[0], str) else item)] = c
        assert np.allclose(f, np.log1p(want)), k
    assert rows[0] == {str(ds.item_ids[_index(ds, 10)]): 2, str(ds.item_ids[_index(ds, 11)]): 1,
                       str(ds.item_ids[_index(ds, 13)]): 1}
