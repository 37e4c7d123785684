"""The native library answers what the Python runtime answers: same bundle, same events, same top-k in order;
and one state file serves both runtimes."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from metarec.runtime import Recommender, StateError, TrendingPack
from metarec.runtime.native import NativeRecommender

from native_helpers import T0

KS = (0, 1, 2, 3, 5, 10)


def _drive(rec, item_ids, users, ks=KS, trend_seed=0):
    """Record each user's events in order (some out of order, one duplicate), set a trending pack per query and
    collect the top-10 ids per (user, K)."""
    rng = np.random.default_rng(trend_seed)
    out = {}
    for u, events in users.items():
        done = 0
        for k in ks:
            for j in range(done, k):
                item, ts = events[j]
                rec.record(u, item, ts, event_id=f"{u}:{j}")
            if k:
                rec.record(u, events[0][0], events[0][1], event_id=f"{u}:0")  # a retried event: no-op
            done = k
            now = T0 + 4e5 + 3600.0 * k
            counts = {item_ids[i]: int(c) for i, c in enumerate(rng.poisson(1.0, len(item_ids))) if c}
            rec.set_trending(TrendingPack.from_counts(now, counts), now=now, allow_older=True)  # users replayed in turn
            out[(u, k)] = [r.item_id for r in rec.recommend(u, now=now, k=10)]
    return out


def _users(item_ids, n=12, seed=0):
    rng = np.random.default_rng(seed)
    users = {}
    for u in range(n):
        items = rng.choice(len(item_ids), max(KS), replace=False)
        ts = T0 + np.sort(rng.uniform(0, 3e5, max(KS)))
        if u % 3 == 0:
            ts = ts[::-1].copy()  # events arriving newest first: both runtimes order them by time
        users[f"user{u}"] = [(item_ids[i], float(t)) for i, t in zip(items, ts)]
    return users


def test_native_top10_equals_python_for_every_k(exported, keys, item_ids, lib, tmp_path):
    users = _users(item_ids)
    with Recommender.open(exported[0], tmp_path / "py.db", trusted_key=keys / "public.pem") as py:
        want = _drive(py, item_ids, users)
    with NativeRecommender.open(exported[0], tmp_path / "native.db", keys / "public.pem", lib=lib) as nat:
        got = _drive(nat, item_ids, users)
        assert nat.stats()[0] > 0  # the native side really adapted (not phi0 for everyone)
    assert len(want) == len(users) * len(KS)
    assert got == want
    assert len({tuple(v) for v in want.values()}) > len(users)  # the answers differ by user and K: not trivial


def test_a_native_state_file_opens_in_python_and_back_natively(exported, keys, item_ids, lib, tmp_path):
    """Native writes store schema 2 (a CRC-32 per row, issue 17) as Python does; Python opens the file with the same
    answers, and the native runtime opens it again after Python wrote it (tests/native/test_native_store_schema2.py
    has the rest)."""
    users = _users(item_ids, n=4, seed=1)
    state = tmp_path / "state.db"
    now = T0 + 4e5 + 3600.0 * 3
    with NativeRecommender.open(exported[0], state, keys / "public.pem", lib=lib) as first:
        _drive(first, item_ids, users, ks=(3,))
        before = {u: [r.item_id for r in first.recommend(u, now=now, k=10)] for u in users}  # under the last pack
    with Recommender.open(exported[0], state, trusted_key=keys / "public.pem") as other:
        after = {u: [r.item_id for r in other.recommend(u, now=now, k=10)] for u in users}
        assert all(len(other.history(u)) == 3 for u in users)
    assert after == before  # events, heads and the trending pack all came across
    with NativeRecommender.open(exported[0], state, keys / "public.pem", lib=lib) as again:
        assert {u: [r.item_id for r in again.recommend(u, now=now, k=10)] for u in users} == before


def test_state_of_another_store_schema_is_a_state_error(exported, keys, lib, tmp_path):
    import sqlite3

    state = tmp_path / "state.db"
    NativeRecommender.open(exported[0], state, keys / "public.pem", lib=lib).close()
    with sqlite3.connect(state) as db:
        db.execute("UPDATE meta SET value=3 WHERE key='store_schema'")
    import os

    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):  # a refused state file is closed again: no connection (file descriptor) left behind
        with pytest.raises(StateError):
            NativeRecommender.open(exported[0], state, keys / "public.pem", lib=lib)
    assert len(os.listdir("/proc/self/fd")) < fds + 5
    with pytest.raises(StateError):  # the Python runtime refuses it the same way
        Recommender.open(exported[0], state, trusted_key=keys / "public.pem")


def test_bench_native_suite_runs_one_protocol_in_both_runtimes(exported, keys, tmp_path):
    """`metarec bench --only native` on a tiny bundle: the native CLI and the Python runtime run the same protocol
    (one adaptation per user after its events, two per new hour, one after the pause), the table is written with
    every row, and a bundle without model.onnx gets no ONNX Runtime column, with the reason."""
    from metarec.bench.bench_native import run_native

    users = 5
    d = run_native(exported[0], keys / "public.pem", "pytest native", tmp_path, runs=1, users=users, recommends=40)
    nat, py = d["per_run"]["native"][0], d["per_run"]["python"][0]
    assert nat["adaptations"] == py["adaptations"] == 4 * users
    for r in (nat, py):
        assert r["peak_rss_mib"] > 0 and r["recommends"] == 40
        assert r["adapt_after_record_p50_us"] > 0 and r["adapt_after_pause_p50_us"] > 0
    assert d["per_run"]["ort"] == [] and "no model.onnx" in d["ort_note"]
    assert set(d["targets"]) == {"peak_rss_mib", "recommend_p50_us", "adapt_after_record_p50_us", "first_recommend_us"}
    md = (tmp_path / "native.md").read_text()
    assert "pytest native" in md and md.count("\n| ") == 12  # header + 11 measures
    assert d["sizes_bytes"]["libmetarec.so"] > 0 and d["sizes_bytes"]["bundle/adapt.pte"] > 0


def test_bench_native_installs_the_bundles_first_neighbour_pack(exported, keys, item_ids, tmp_path):
    """A bundle whose item-item term ships only in packs: the suite installs `<bundle>.neighbors` (export's first
    pack) in both runtimes' state before timing, so the term is on, and says so; without the pack it says the term
    is off."""
    from metarec.bench.bench_native import run_native
    from metarec.export.bundle import neighbor_pack_path
    from metarec.runtime.bundle_codecs import catalog_digest
    from metarec.runtime.neighbors import NeighborPack

    from native_helpers import resign

    b = Path(shutil.copytree(exported[0], tmp_path / "nb" / "bundle"))
    resign(b, keys / "private.pem",
           neighbors={"file": "", "m": 4, "last": 3, "decay": 0.5, "weight": 1.0, "kind": "transition"})
    d = run_native(b, keys / "public.pem", "pytest native", tmp_path, runs=1, users=3, recommends=20, write=False)
    assert "OFF" in d["neighbor_note"] and d["per_run"]["native"][0]["neighbor_table"] == 0
    n = len(item_ids)
    rng = np.random.default_rng(0)
    ids = np.stack([rng.choice(n, 4, replace=False) for _ in range(n)])
    NeighborPack(T0, catalog_digest(item_ids), "transition", ids, rng.random((n, 4))).save(
        neighbor_pack_path(b), keys / "private.pem")
    d = run_native(b, keys / "public.pem", "pytest native", tmp_path, runs=1, users=3, recommends=20)
    assert "ON" in d["neighbor_note"] and d["neighbor_pack"] == str(neighbor_pack_path(b))
    assert d["per_run"]["native"][0]["neighbor_table"] == 1 and d["per_run"]["python"][0]["neighbor_table"] == 1
    assert "Item-item term: item-item term ON" in (tmp_path / "native.md").read_text()
