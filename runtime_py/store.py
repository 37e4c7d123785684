"""On-device state: one SQLite database (WAL, synchronous=FULL) holding the event log, adapted heads and the
highest bundle serial this install has accepted.

Why these settings: in WAL mode with synchronous=FULL, a COMMIT returns only after the WAL is fsynced, so an
event is durable when `add_event` returns, and a crash (process or power) at any instant leaves the database
consistent; an interrupted transaction is simply absent. Events are append-only and idempotent by event_id
(INSERT OR IGNORE), so a client that retries after a crash cannot double-count. Heads are a cache: each carries
the bundle serial and the last event seq it was adapted on, and is rebuilt from the events when either is stale.
`secure_delete` makes `forget` overwrite the erased rows instead of leaving them in free pages, and `forget`
truncates the WAL, so the raw files hold nothing of a forgotten user once it returns.

Two files live beside the database (docs/reliability.md):
- `<state>.lock`: one writer per state file. `Store` holds an exclusive flock on it for its lifetime; a second
  `Store` on the same path (another process or the same one) gets `StateError` instead of sharing the file.
- `<state>.mark`: the rollback mark (highest accepted bundle serial), mirrored outside the database, so deleting
  or truncating the state file does not silently reset it; deleting the mark too is the explicit reset.
Every value read back is validated (types, finiteness), and the database is `integrity_check`ed on open: a
corrupt file is a `StateError`, never a bare exception or a silently different history.
"""
from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import zlib
from pathlib import Path

from .errors import BundleError, InputError, StateError

# v2: every row carries `chk`, a CRC-32 of its other columns, so a flipped byte in a value no index covers (an item
# id, a timestamp, a head) is a StateError instead of a silently different history
STORE_SCHEMA = 2
# the schema-1 tables (runtime_native writes them too); every file, a new one included, is then migrated to 2
_SCHEMA = (Path(__file__).with_name("store_schema.sql")).read_text()
# the columns each table's chk covers, in order (schema 1 -> 2 adds chk and fills it from these)
_CHECKED = {"meta": ("key", "value"), "events": ("event_id", "user_id", "item_id", "ts"),
            "heads": ("user_id", "serial", "event_seq", "scene", "head"), "trending": ("id", "pack")}


def _chk(*values) -> int:
    """CRC-32 of a row's values (repr is exact for str, int, float and bytes)."""
    return zlib.crc32(repr(values).encode("utf-8", "surrogatepass"))


def _verify(row, n: int) -> tuple:
    """The first `n` values of `row` if its last value is their checksum; StateError (corrupt row) otherwise."""
    if _chk(*row[:n]) != row[n]:
        raise StateError(f"state database row {tuple(row[:n])!r:.120} fails its checksum (corrupt)")
    return tuple(row[:n])
# Python-only (a file that has it is schema 2, which the native runtime refuses: docs/native.md): the catalog deltas
# this install accepted, raw signed bytes, re-verified on every open (runtime_py/catalog.py)
_DELTA_TABLE = ("CREATE TABLE IF NOT EXISTS catalog_deltas (serial INTEGER NOT NULL, seq INTEGER NOT NULL, "
                "delta BLOB NOT NULL, sig BLOB NOT NULL, chk INTEGER NOT NULL, PRIMARY KEY (serial, seq))")
# the newest neighbour pack set (runtime_py/neighbors.py), its bytes as verified; runtime_native/src/store.cpp creates
# (store_packs.cpp writes) the same table with the same `chk` in its schema-1 files, so the migration leaves it as it is
_NEIGHBOR_TABLE = ("CREATE TABLE IF NOT EXISTS neighbor_pack (id INTEGER PRIMARY KEY CHECK (id = 1), "
                   "pack BLOB NOT NULL, chk INTEGER NOT NULL)")
# the onboarding pack in use (runtime_py/onboarding.py): OnboardingPack.to_json bytes, the same row layout and `chk`
# (native: runtime_native/src/store_packs.cpp writes the same table and bytes)
_ONBOARDING_TABLE = ("CREATE TABLE IF NOT EXISTS onboarding_pack (id INTEGER PRIMARY KEY CHECK (id = 1), "
                     "pack BLOB NOT NULL, chk INTEGER NOT NULL)")
_TABLES = {"meta", "events", "heads", "trending", "sqlite_sequence", "catalog_deltas", "neighbor_pack",
           "onboarding_pack"}
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError, ValueError, TypeError, OverflowError, IndexError)  # corrupt bytes


class Store:
    """The SQLite state of one app install. Not shared across threads without the caller's lock."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.created = not os.path.exists(self.path)  # so a caller that fails right after can leave no file behind
        self._lock_fd = _lock(self.path + ".lock")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        except sqlite3.Error as e:
            _unlock(self._lock_fd)
            raise StateError(f"cannot open state database {self.path}: {e}") from e
        try:
            self._init_db()
        except (StateError, *_DB_ERRORS) as e:
            self._db.close()
            _unlock(self._lock_fd)
            if isinstance(e, StateError):
                raise
            raise StateError(f"state database {self.path} is unusable (corrupt?): {type(e).__name__}: {e}") from e

    def _init_db(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateError(f"state database refuses WAL mode (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA foreign_keys=ON")
        # integrity_check, not quick_check: it also compares every index with its table, which catches most
        # flipped bytes in keys (quick_check let 18 of 300 random corruptions open with a different history)
        check = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall()]
        if check != ["ok"]:
            raise StateError(f"state database is corrupt: {'; '.join(map(str, check[:3]))}")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables - _TABLES:
            raise StateError(f"state database has unknown tables {sorted(tables - _TABLES)}")
        with self._tx():  # schema, migration and version in one transaction: a crash leaves the old or the new
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(stmt)
            self._db.execute(_DELTA_TABLE)
            self._db.execute(_NEIGHBOR_TABLE)
            self._db.execute(_ONBOARDING_TABLE)
            row = self._db.execute("SELECT value FROM meta WHERE key='store_schema'").fetchone()
            if row is None or row[0] == 1:
                self._migrate_1_to_2()
            elif row is not None and row[0] != STORE_SCHEMA:
                raise StateError(f"state database schema {row[0]!r} is not {STORE_SCHEMA}")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('store_schema', ?, ?)",
                             (STORE_SCHEMA, _chk("store_schema", STORE_SCHEMA)))
        self.max_serial()  # a corrupt mark (in the database or beside it) is refused now, not at the first bundle

    def _migrate_1_to_2(self) -> None:
        """Add `chk` to every table of a schema-1 database and fill it (inside the caller's transaction)."""
        for table, cols in _CHECKED.items():
            have = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]
            if "chk" not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN chk INTEGER NOT NULL DEFAULT 0")
            rows = self._db.execute(f"SELECT rowid, {', '.join(cols)} FROM {table}").fetchall()
            self._db.executemany(f"UPDATE {table} SET chk=? WHERE rowid=?", [(_chk(*r[1:]), r[0]) for r in rows])

    # -- plumbing -------------------------------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db)

    def _query(self, sql: str, args: tuple = (), types: tuple = ()) -> list:
        """Rows of `sql`; with `types`, every row must hold exactly those Python types (else the file is corrupt)."""
        try:
            rows = self._db.execute(sql, args).fetchall()
        except _DB_ERRORS as e:
            raise StateError(f"state read failed (corrupt?): {type(e).__name__}: {e}") from e
        for row in rows if types else ():
            if len(row) != len(types) or not all(isinstance(v, t) for v, t in zip(row, types)):
                raise StateError(f"state database holds a malformed row {row!r:.120} (corrupt)")
        return rows

    def _write(self, fn):
        try:
            with self._tx():
                return fn(self._db)
        except InputError:  # a refused argument (rolled back), not a broken database
            raise
        except _DB_ERRORS as e:
            raise StateError(f"state write failed (nothing was changed): {e}") from e

    def close(self, discard: bool = False) -> None:
        """Close; with `discard`, also delete the files if this Store created them (a refused open leaves none)."""
        try:
            self._db.close()
        except sqlite3.Error as e:
            raise StateError(f"closing state database failed: {e}") from e
        finally:
            if discard and self.created:
                for suffix in ("", "-wal", "-shm", ".lock"):
                    try:
                        os.unlink(self.path + suffix)
                    except OSError:
                        pass
            fd, self._lock_fd = self._lock_fd, -1  # a second close must not close a descriptor reused since
            if fd >= 0:
                _unlock(fd)

    # -- events ---------------------------------------------------------------------------------------------
    def add_event(self, event_id: str, user_id: str, item_id: str, ts: float, heads=()) -> bool:
        """Append an event durably; False (and no change) if the same event is already stored; `InputError` (and
        no change) if event_id is stored with other content. `heads`: (user_id, serial, event_seq, scene, head)
        rows written in the same transaction (a cache riding along with a commit that is fsynced anyway)."""
        def fn(db):
            cur = db.execute("INSERT OR IGNORE INTO events (event_id, user_id, item_id, ts, chk) VALUES (?, ?, ?, ?, ?)",
                             (event_id, user_id, item_id, float(ts), _chk(event_id, user_id, item_id, float(ts))))
            added = cur.rowcount == 1
            if not added:
                old = db.execute("SELECT user_id, item_id, ts FROM events WHERE event_id=?", (event_id,)).fetchone()
                if old is not None and tuple(old) != (user_id, item_id, float(ts)):
                    raise InputError(f"event_id {event_id!r} is already stored with other content {tuple(old)!r}")
            if heads:
                db.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?, ?)", _with_chk(heads))
            return added
        return self._write(fn)

    def events(self, user_id: str) -> list[tuple[str, str, float, int]]:
        """(event_id, item_id, ts, seq) of a user, ordered by timestamp, ties by arrival."""
        rows = self._query("SELECT event_id, user_id, item_id, ts, chk, seq FROM events WHERE user_id=? "
                           "ORDER BY ts, seq", (user_id,), (str, str, str, float, int, int))
        out = []
        for r in rows:
            eid, _, item, ts = _verify(r, 4)
            if not math.isfinite(ts):
                raise StateError(f"state database holds a non-finite timestamp for user {user_id!r} (corrupt)")
            out.append((eid, item, ts, r[5]))
        return out

    def last_seq(self, user_id: str) -> int:
        """The highest arrival seq among a user's events (0 if none): heads adapted before it are stale."""
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE user_id=?", (user_id,), (int,))[0][0]

    def count_events(self) -> int:
        return self._query("SELECT COUNT(*) FROM events", (), (int,))[0][0]

    def forget(self, user_id: str) -> None:
        """Erase every event and head of a user in one transaction, then out of the WAL: the checkpoint copies the
        (zeroed, secure_delete) pages into the database and truncates the WAL, so no older page image of the user
        survives in either file. `StateError` if the checkpoint cannot complete (the rows are gone either way)."""
        def fn(db):
            db.execute("DELETE FROM events WHERE user_id=?", (user_id,))
            db.execute("DELETE FROM heads WHERE user_id=?", (user_id,))
        self._write(fn)
        try:  # this Store is the only one on the file (lock), so nothing can hold the WAL open
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as e:
            raise StateError(f"forget: rows erased but the WAL could not be truncated: {e}") from e
        if busy:
            raise StateError("forget: rows erased but the WAL is busy; call forget again")

    # -- heads ----------------------------------------------------------------------------------------------
    def get_head(self, user_id: str) -> tuple[int, int, bytes, bytes] | None:
        """(serial, event_seq, scene bytes, head bytes) or None."""
        rows = self._query("SELECT user_id, serial, event_seq, scene, head, chk FROM heads WHERE user_id=?",
                           (user_id,), (str, int, int, bytes, bytes, int))
        return _verify(rows[0], 5)[1:] if rows else None

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
            self._write(lambda db: db.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?, ?)",
                                                  _with_chk(rows)))
        finally:
            try:
                self._db.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise StateError(f"cannot restore synchronous=FULL: {e}") from e

    # -- bundle serial high-water mark ----------------------------------------------------------------------
    def max_serial(self) -> int:
        """The highest accepted serial: of the database and the mark file beside it, whichever is higher."""
        rows = self._query("SELECT key, value, chk FROM meta WHERE key='max_serial'", (), (str, int, int))
        return max(_verify(rows[0], 2)[1] if rows else 0, self._read_mark())

    def accept_serial(self, serial: int) -> None:
        """Record `serial` as seen; `BundleError` (and no change) if a newer one was seen before (rollback)."""
        seen_mark = self._read_mark()

        def fn(db):
            seen = max(self.max_serial(), seen_mark)
            if serial < seen:
                raise BundleError(f"bundle serial {serial} is older than {seen}, already seen here (rollback)")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('max_serial', ?, ?)", (serial, _chk("max_serial", serial)))
            db.execute("DELETE FROM catalog_deltas WHERE serial < ?", (serial,))  # a newer bundle folds them in
        self._write(fn)
        if serial > seen_mark:
            self._write_mark(serial)

    def _read_mark(self) -> int:
        try:
            with open(self.path + ".mark", "rb") as f:
                raw = f.read(32)
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise StateError(f"cannot read the rollback mark {self.path}.mark: {e}") from e
        if not raw.isdigit() or len(raw) > 20:
            raise StateError(f"rollback mark {self.path}.mark is corrupt; delete it to reset the mark explicitly")
        return int(raw)

    def _write_mark(self, serial: int) -> None:
        """Atomic and durable: temp file, fsync, rename, fsync of the folder."""
        tmp = self.path + ".mark.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(str(int(serial)).encode("ascii"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path + ".mark")
            dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise StateError(f"cannot write the rollback mark {self.path}.mark: {e}") from e

    # -- catalog deltas -------------------------------------------------------------------------------------
    def deltas(self, serial: int) -> list[tuple[int, bytes, bytes]]:
        """(seq, delta bytes, signature) of the deltas accepted for bundle `serial`, in seq order."""
        rows = self._query("SELECT serial, seq, delta, sig, chk FROM catalog_deltas WHERE serial=? ORDER BY seq",
                           (serial,), (int, int, bytes, bytes, int))
        return [_verify(r, 4)[1:] for r in rows]

    def add_delta(self, serial: int, seq: int, delta: bytes, sig: bytes) -> None:
        """Store an accepted delta durably (a FULL commit); a stored (serial, seq) is a StateError, nothing changed."""
        self._write(lambda db: db.execute("INSERT INTO catalog_deltas VALUES (?, ?, ?, ?, ?)",
                                          (serial, seq, delta, sig, _chk(serial, seq, delta, sig))))

    # -- trending pack ----------------------------------------------------------------------------------------
    def get_trending(self) -> bytes | None:
        rows = self._query("SELECT id, pack, chk FROM trending WHERE id=1", (), (int, bytes, int))
        return _verify(rows[0], 2)[1] if rows else None

    def put_trending(self, pack: bytes) -> None:
        self._write(lambda db: db.execute("INSERT OR REPLACE INTO trending VALUES (1, ?, ?)", (pack, _chk(1, pack))))


    # -- neighbour and onboarding packs: one (1, pack, chk) row each -------------------------------------------
    def get_neighbor_pack(self) -> bytes | None:
        return self._get_pack_row("neighbor_pack")

    def put_neighbor_pack(self, pack: bytes) -> None:
        self._put_pack_row("neighbor_pack", pack)

    def get_onboarding_pack(self) -> bytes | None:
        """The stored OnboardingPack bytes (`to_json`), or None; StateError if the row fails its checksum."""
        return self._get_pack_row("onboarding_pack")

    def put_onboarding_pack(self, pack: bytes) -> None:
        self._put_pack_row("onboarding_pack", pack)

    def _get_pack_row(self, table: str) -> bytes | None:
        rows = self._query(f"SELECT id, pack, chk FROM {table} WHERE id=1", (), (int, bytes, int))
        return _verify(rows[0], 2)[1] if rows else None

    def _put_pack_row(self, table: str, pack: bytes) -> None:
        self._write(lambda db: db.execute(f"INSERT OR REPLACE INTO {table} VALUES (1, ?, ?)", (pack, _chk(1, pack))))


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


def _with_chk(rows) -> list:
    """(user_id, serial, event_seq, scene, head) rows with their checksum appended (blobs as bytes)."""
    out = []
    for u, serial, seq, scene, head in rows:
        scene, head = bytes(scene), bytes(head)
        out.append((u, serial, seq, scene, head, _chk(u, serial, seq, scene, head)))
    return out


def _lock(path: str) -> int:
    """An exclusive, non-blocking flock on `path` (created), held until `_unlock`; `StateError` if taken."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        raise StateError(f"cannot create the state lock {path}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise StateError(f"state file is in use by another Recommender/Store (lock {path} is held): one writer "
                         "per state file") from e
    return fd


def _unlock(fd: int) -> None:
    try:
        os.close(fd)  # closing the only descriptor releases the flock
    except OSError:
        pass
