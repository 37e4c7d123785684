"""On-device state: one SQLite database (WAL, synchronous=FULL) holding the event log, adapted heads and the
highest bundle serial this install has accepted.

Why these settings: in WAL mode with synchronous=FULL, a COMMIT returns only after the WAL is fsynced, so an
event is durable when `add_event` returns, and a crash (process or power) at any instant leaves the database
consistent; an interrupted transaction is simply absent. Events are append-only and idempotent by event_id
(INSERT OR IGNORE), so a client that retries after a crash cannot double-count. Heads are a cache: each carries
the bundle serial and the last event seq it was adapted on, and is rebuilt from the events when either is stale.
`secure_delete` makes `forget` overwrite the erased rows instead of leaving them in free pages.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import BundleError, StateError

STORE_SCHEMA = 1
_SCHEMA = (Path(__file__).with_name("store_schema.sql")).read_text()  # also runtime_native's, verbatim


class Store:
    """The SQLite state of one app install. Not shared across threads without the caller's lock."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        except sqlite3.Error as e:
            raise StateError(f"cannot open state database {self.path}: {e}") from e
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"state database refuses WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA foreign_keys=ON")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StateError(f"state database is corrupt: {check}")
            # executescript commits on its own; every statement is IF NOT EXISTS, so a crash between them is fine
            self._db.executescript(_SCHEMA)
            with self._tx():
                row = self._db.execute("SELECT value FROM meta WHERE key='store_schema'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('store_schema', ?)", (STORE_SCHEMA,))
                elif row[0] != STORE_SCHEMA:
                    raise StateError(f"state database schema {row[0]} is not {STORE_SCHEMA}")
        except sqlite3.Error as e:
            self._db.close()
            raise StateError(f"cannot initialise state database {self.path}: {e}") from e
        except StateError:
            self._db.close()
            raise

    # -- plumbing -------------------------------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db)

    def _query(self, sql: str, args: tuple = ()) -> list:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StateError(f"state read failed: {e}") from e

    def _write(self, fn):
        try:
            with self._tx():
                return fn(self._db)
        except sqlite3.Error as e:
            raise StateError(f"state write failed (nothing was changed): {e}") from e

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as e:
            raise StateError(f"closing state database failed: {e}") from e

    # -- events ---------------------------------------------------------------------------------------------
    def add_event(self, event_id: str, user_id: str, item_id: str, ts: float, heads=()) -> bool:
        """Append an event durably; False (and no change to the events) if event_id is already stored.
        `heads`: (user_id, serial, event_seq, scene, head) rows written in the same transaction (a cache riding
        along with a commit that is fsynced anyway)."""
        def fn(db):
            cur = db.execute("INSERT OR IGNORE INTO events (event_id, user_id, item_id, ts) VALUES (?, ?, ?, ?)",
                             (event_id, user_id, item_id, ts))
            added = cur.rowcount == 1
            if heads:
                db.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?)", list(heads))
            return added
        return self._write(fn)

    def events(self, user_id: str) -> list[tuple[str, str, float, int]]:
        """(event_id, item_id, ts, seq) of a user, ordered by timestamp, ties by arrival."""
        return self._query("SELECT event_id, item_id, ts, seq FROM events WHERE user_id=? ORDER BY ts, seq",
                           (user_id,))

    def last_seq(self, user_id: str) -> int:
        """The highest arrival seq among a user's events (0 if none): heads adapted before it are stale."""
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE user_id=?", (user_id,))[0][0]

    def count_events(self) -> int:
        return self._query("SELECT COUNT(*) FROM events")[0][0]

    def forget(self, user_id: str) -> None:
        """Erase every event and head of a user in one transaction."""
        def fn(db):
            db.execute("DELETE FROM events WHERE user_id=?", (user_id,))
            db.execute("DELETE FROM heads WHERE user_id=?", (user_id,))
        self._write(fn)
        try:  # move the erased pages out of the WAL too (best effort: a reader may hold it)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass

    # -- heads ----------------------------------------------------------------------------------------------
    def get_head(self, user_id: str) -> tuple[int, int, bytes, bytes] | None:
        """(serial, event_seq, scene bytes, head bytes) or None."""
        rows = self._query("SELECT serial, event_seq, scene, head FROM heads WHERE user_id=?", (user_id,))
        return (rows[0][0], rows[0][1], bytes(rows[0][2]), bytes(rows[0][3])) if rows else None

    def put_head(self, user_id: str, serial: int, event_seq: int, scene: bytes, head: bytes) -> None:
        """Store an adapted head. Heads are a cache (rebuilt by replay), so this commit is not fsynced
        (synchronous=NORMAL: still atomic and consistent in WAL mode); the next event commit, which is FULL,
        makes it durable too. That keeps an fsync off `recommend`."""
        self.put_heads([(user_id, serial, event_seq, scene, head)])

    def put_heads(self, rows) -> None:
        """Several (user_id, serial, event_seq, scene, head) rows in one unfsynced transaction (see put_head)."""
        rows = list(rows)
        try:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._write(lambda db: db.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?)", rows))
        finally:
            try:
                self._db.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise StateError(f"cannot restore synchronous=FULL: {e}") from e

    # -- bundle serial high-water mark ----------------------------------------------------------------------
    def max_serial(self) -> int:
        rows = self._query("SELECT value FROM meta WHERE key='max_serial'")
        return rows[0][0] if rows else 0

    def accept_serial(self, serial: int) -> None:
        """Record `serial` as seen; `BundleError` (and no change) if a newer one was seen before (rollback)."""
        def fn(db):
            row = db.execute("SELECT value FROM meta WHERE key='max_serial'").fetchone()
            seen = row[0] if row else 0
            if serial < seen:
                raise BundleError(f"bundle serial {serial} is older than {seen}, already seen here (rollback)")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('max_serial', ?)", (serial,))
        self._write(fn)

    # -- trending pack ----------------------------------------------------------------------------------------
    def get_trending(self) -> bytes | None:
        rows = self._query("SELECT pack FROM trending WHERE id=1")
        return bytes(rows[0][0]) if rows else None

    def put_trending(self, pack: bytes) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO trending VALUES (1, ?)", (pack,)))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception, so a refused write changes nothing."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return False
