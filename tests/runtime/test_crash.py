"""Crash safety of the state database: a child recording events is SIGKILLed at random instants, 50 times; and
several processes taking turns as the one writer of one state file are SIGKILLed at random.

Every event acknowledged before a kill must be present afterwards, the database must open clean (integrity_check
and row checksums) every time, and retried event ids must not duplicate. The children use the Store alone (no
programs): this tests durability, and keeps the kills to seconds.
Counts for the report: `.venv/bin/python tests/runtime/test_crash.py [--kills 200] [--processes 4 --users 2500]`.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from metarec.runtime.store import Store

CHILD = Path(__file__).with_name("crash_child.py")


def _check_db(db: Path, acked: set[str]) -> tuple[set[str], int]:
    Store(db).close()  # opens clean: WAL recovery + integrity_check inside, else StateError
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {r[0] for r in conn.execute("SELECT event_id FROM events")}
        n_rows = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
    assert n_rows == len(stored)
    return stored, n_rows


def run_crash_trials(db: Path, kills: int = 50, seed: int = 0) -> dict:
    """Kill a recording child `kills` times; check the database after each; return the counts."""
    rng = random.Random(seed)
    acked: set[str] = set()
    killed_while_writing = 0
    for run in range(kills):
        child = subprocess.Popen([sys.executable, str(CHILD), str(db), str(run)], stdout=subprocess.PIPE)
        if run % 10 == 0:  # some kills land during start-up and schema creation
            time.sleep(rng.uniform(0.0, 0.1))
        else:
            assert child.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.1))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        lines = child.stdout.read().decode().split("\n")
        child.stdout.close()
        run_acked = {ln.split()[1] for ln in lines if ln.startswith("ack ")}
        killed_while_writing += bool(run_acked)
        acked |= run_acked
        stored, n_rows = _check_db(db, acked)
    return {"kills": kills, "killed_while_writing": killed_while_writing, "acknowledged": len(acked),
            "present": len(acked & stored), "lost": len(acked - stored), "rows": n_rows}


def run_contended_crash(db: Path, processes: int = 4, users: int = 2500, kills: int = 200, seed: int = 0,
                        batch: int = 20, max_sleep: float = 0.05) -> dict:
    """`processes` children write their own `users` into one state file, taking turns as its one writer (the lock);
    one random child is SIGKILLed at a random instant and restarted, `kills` times; then all are killed."""
    rng = random.Random(seed)
    acked: set[str] = set()
    users_seen: set[str] = set()
    runs = [0] * processes

    def start(p: int) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, str(CHILD), str(db), str(runs[p]), str(p), str(users), str(batch)],
                                 stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        return child

    def wait_for_turns(kids: list[subprocess.Popen], timeout: float = 60.0) -> list[bytes]:
        """Read every child's output (draining all pipes, so no writer blocks holding the lock) until each has
        acknowledged an event, i.e. got the writer lock; the bytes read from each."""
        got, deadline = {k.stdout.fileno(): b"" for k in kids}, time.monotonic() + timeout
        while any(b"ack " not in g for g in got.values()) and time.monotonic() < deadline:
            for fd in select.select(list(got), [], [], 0.1)[0]:
                got[fd] += os.read(fd, 65536)
        return [got[k.stdout.fileno()] for k in kids]

    def reap(child: subprocess.Popen, already: bytes = b"") -> None:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for ln in (already + child.stdout.read()).decode().split("\n"):
            if ln.startswith("ack "):
                acked.add(ln.split()[1])
                users_seen.add(ln.split()[2])
        child.stdout.close()

    children = [start(p) for p in range(processes)]
    for _ in range(kills):
        time.sleep(rng.uniform(0.0, max_sleep))
        p = rng.randrange(processes)
        reap(children[p])
        runs[p] += 1
        children[p] = start(p)
    # every process must get a turn while the others contend: a lock held past its holder's close/death would
    # starve it (random kills alone may end before a slow process's first turn, so wait for it here)
    turns = wait_for_turns(children)
    for child, got in zip(children, turns):
        reap(child, got)
    stored, n_rows = _check_db(db, acked)
    return {"processes": processes, "users_per_process": users, "kills": kills, "acknowledged": len(acked),
            "present": len(acked & stored), "lost": len(acked - stored), "rows": n_rows,
            "writers_that_acknowledged": len({e.split("-r")[0] for e in acked}), "users_with_events": len(users_seen)}


def test_sigkill_at_random_instants_loses_no_acknowledged_event(tmp_path):
    counts = run_crash_trials(tmp_path / "state.db", kills=50, seed=0)
    assert counts["lost"] == 0 and counts["present"] == counts["acknowledged"]
    assert counts["acknowledged"] >= 50 and counts["killed_while_writing"] >= 30  # the kills hit real writes


def test_processes_taking_turns_as_the_writer_lose_nothing_under_sigkill(tmp_path):
    counts = run_contended_crash(tmp_path / "state.db", processes=4, users=50, kills=20, seed=1)
    assert counts["lost"] == 0 and counts["acknowledged"] >= 100
    assert counts["writers_that_acknowledged"] == 4  # every process got turns: the lock is released on close/death


def test_state_database_settings(tmp_path):
    s = Store(tmp_path / "s.db")
    try:
        assert s._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert s._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert s.add_event("e", "u", "i", 1.0) and not s.add_event("e", "u", "i", 1.0)
        s.put_head("u", 1, 1, b"", b"\0" * 8)
        assert s._db.execute("PRAGMA synchronous").fetchone() == (2,)  # heads' NORMAL write is undone
    finally:
        s.close()


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--processes", type=int, default=0, help="> 0: the contended case (run_contended_crash)")
    ap.add_argument("--users", type=int, default=2500)
    ap.add_argument("--max-sleep", type=float, default=0.05, help="seconds between kills, at most (contended case)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if a.processes:
            print(json.dumps(run_contended_crash(Path(d) / "state.db", a.processes, a.users, a.kills,
                                                 max_sleep=a.max_sleep)))
        else:
            print(json.dumps(run_crash_trials(Path(d) / "state.db", kills=a.kills)))
