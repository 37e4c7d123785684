-- Store schema 1: the tables runtime_native/src/store.cpp writes (embedded at build time). runtime_py/store.py
-- opens such a file by migrating it to schema 2 (a CRC-32 per row), and the native runtime refuses schema 2 with a
-- state error (docs/native.md, "State files").
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_id, ts, seq);
CREATE TABLE IF NOT EXISTS heads (
    user_id TEXT PRIMARY KEY,
    serial INTEGER NOT NULL,
    event_seq INTEGER NOT NULL,
    scene BLOB NOT NULL,
    head BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS trending (id INTEGER PRIMARY KEY CHECK (id = 1), pack BLOB NOT NULL);
