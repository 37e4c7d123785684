"""Crash safety of the state database: a child recording events is SIGKILLed at random instants, 50 times.

Every event acknowledged before a kill must be present afterwards, the database must open clean (quick_check
and integrity_check) every time, and retried event ids must not duplicate. The child uses the Store alone (no
programs): this tests durability, and keeps the 50 kills to a few seconds.
Counts for the report: `.venv/bin/python tests/runtime/test_crash.py`.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from metarec.runtime.store import Store

CHILD = Path(__file__).with_name("crash_child.py")


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
        Store(db).close()  # opens clean: WAL recovery + quick_check inside, else StateError
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = {r[0] for r in conn.execute("SELECT event_id FROM events")}
            n_rows = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            conn.close()
        missing = acked - stored
        assert not missing, f"run {run}: {len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
        assert n_rows == len(stored)
    return {"kills": kills, "killed_while_writing": killed_while_writing, "acknowledged": len(acked),
            "present": len(acked & stored), "lost": len(acked - stored), "rows": n_rows}


def test_sigkill_at_random_instants_loses_no_acknowledged_event(tmp_path):
    counts = run_crash_trials(tmp_path / "state.db", kills=50, seed=0)
    assert counts["lost"] == 0 and counts["present"] == counts["acknowledged"]
    assert counts["acknowledged"] >= 50 and counts["killed_while_writing"] >= 30  # the kills hit real writes


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
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run_crash_trials(Path(d) / "state.db")))
