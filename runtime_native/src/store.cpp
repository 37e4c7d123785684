// runtime_py/store.py against the system SQLite: the same schema and settings (WAL, synchronous=FULL,
// secure_delete), so one state file opens in both runtimes; a file of another store schema is a StateError.
#include <sqlite3.h>
#include <zlib.h>

#include "internal.h"
#include "store_schema.h"

namespace mr {
namespace {
constexpr int64_t kStoreSchema = 1;
const char *kSchema = kStoreSchemaSql;  // runtime_py/store_schema.sql, embedded by CMake (store_schema.h)

// One prepared statement: finalized on scope exit (a throw mid-step must not leak it), or, for one of the store's
// cached statements, reset with its bindings cleared (so it holds no read transaction open and no stale value).
struct Stmt {
  sqlite3_stmt *s;
  bool cached = false;
  ~Stmt() {
    if (cached) sqlite3_reset(s), sqlite3_clear_bindings(s);
    else sqlite3_finalize(s);
  }
  void text(int i, const std::string &v) { sqlite3_bind_text(s, i, v.data(), int(v.size()), SQLITE_TRANSIENT); }
  void blob(int i, const Bytes &v) { sqlite3_bind_blob(s, i, v.data(), int(v.size()), SQLITE_TRANSIENT); }
  Bytes col_blob(int i) {
    auto *p = static_cast<const uint8_t *>(sqlite3_column_blob(s, i));
    return Bytes(p, p + sqlite3_column_bytes(s, i));
  }
};
// store.py's neighbour pack table (created there too; schema 1 has no table for it, store.py does not migrate it:
// its rows carry their `chk` from the start, so the same table serves a file of either schema)
const char *kNeighborTable = "CREATE TABLE IF NOT EXISTS neighbor_pack (id INTEGER PRIMARY KEY CHECK (id = 1), "
                             "pack BLOB NOT NULL, chk INTEGER NOT NULL)";

// store.py `_chk(1, pack)`: CRC-32 of repr((1, pack)) in UTF-8, Python's bytes repr byte for byte (quote ' unless
// the bytes hold ' and no ", backslash escapes for the quote, \\, \t, \n, \r, \xhh outside printable ASCII)
int64_t pack_chk(const Bytes &pack) {
  bool sq = std::find(pack.begin(), pack.end(), uint8_t('\'')) != pack.end();
  bool dq = std::find(pack.begin(), pack.end(), uint8_t('"')) != pack.end();
  char quote = sq && !dq ? '"' : '\'';
  static const char *hex = "0123456789abcdef";
  std::string r = "(1, b";
  r.reserve(pack.size() * 4 + 8);
  r += quote;
  for (uint8_t c : pack) {
    if (c == uint8_t(quote) || c == '\\') r += '\\', r += char(c);
    else if (c == '\t') r += "\\t";
    else if (c == '\n') r += "\\n";
    else if (c == '\r') r += "\\r";
    else if (c < 0x20 || c >= 0x7f) r += "\\x", r += hex[c >> 4], r += hex[c & 15];
    else r += char(c);
  }
  r += quote;
  r += ')';
  uLong crc = crc32(0L, Z_NULL, 0);
  const Bytef *p = reinterpret_cast<const Bytef *>(r.data());
  for (size_t off = 0; off < r.size();) {  // crc32 takes a uInt length
    uInt n = uInt(std::min<size_t>(r.size() - off, 1u << 30));
    crc = crc32(crc, p + off, n);
    off += n;
  }
  return int64_t(crc & 0xffffffffu);
}
}  // namespace

void Store::exec(const char *sql) {
  char *err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown";
    sqlite3_free(err);
    throw StateError(std::string("state database: ") + m);
  }
}

sqlite3_stmt *Store::prep(const char *sql) {
  sqlite3_stmt *s = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &s, nullptr) != SQLITE_OK)
    throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  return s;
}

sqlite3_stmt *Store::cached(const char *sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return it->second;
  sqlite3_stmt *s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  cache_[sql] = s;
  return s;
}

void Store::step_done(const char *sql) {
  Stmt s{cached(sql), true};
  if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state database: ") + sqlite3_errmsg(db_));
}

void Store::begin() { step_done("BEGIN IMMEDIATE"); }
void Store::commit() { step_done("COMMIT"); }
void Store::rollback() { sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }

Store::Store(const std::string &path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string m = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw StateError("cannot open state database " + path + ": " + m);
  }
  try {
    sqlite3_busy_timeout(db_, 10000);  // as Python's sqlite3 timeout=10.0
    {
      Stmt s{prep("PRAGMA journal_mode=WAL")};
      std::string mode = sqlite3_step(s.s) == SQLITE_ROW ? (const char *)sqlite3_column_text(s.s, 0) : "";
      if (mode != "wal") throw StateError("state database refuses WAL mode (got " + mode + ")");
    }
    exec("PRAGMA synchronous=FULL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON");
    {
      Stmt s{prep("PRAGMA quick_check")};
      std::string ok = sqlite3_step(s.s) == SQLITE_ROW ? (const char *)sqlite3_column_text(s.s, 0) : "";
      if (ok != "ok") throw StateError("state database is corrupt: " + ok);
    }
    exec(kSchema);
    exec(kNeighborTable);
    begin();
    try {
      Stmt s{prep("SELECT value FROM meta WHERE key='store_schema'")};
      if (sqlite3_step(s.s) == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(s.s, 0);
        if (v != kStoreSchema) throw StateError("state database schema " + std::to_string(v) + " is not 1");
      } else {
        exec("INSERT INTO meta VALUES ('store_schema', 1)");
      }
      commit();
    } catch (...) {
      rollback();
      throw;
    }
  } catch (...) {
    for (auto &[sql, st] : cache_) sqlite3_finalize(st);  // else sqlite3_close refuses (SQLITE_BUSY), leaking the db
    cache_.clear();
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

Store::~Store() {
  for (auto &[sql, s] : cache_) sqlite3_finalize(s);  // sqlite3_close refuses a connection with live statements
  sqlite3_close(db_);
}

void Store::write_heads(const std::map<std::string, PendingHead> &heads) {
  if (heads.empty()) return;
  Stmt s{cached("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?)"), true};
  for (auto &[user, h] : heads) {
    sqlite3_reset(s.s);
    s.text(1, user);
    sqlite3_bind_int64(s.s, 2, h.serial);
    sqlite3_bind_int64(s.s, 3, h.event_seq);
    s.blob(4, h.scene);
    s.blob(5, h.head);
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
  }
}

bool Store::add_event(const std::string &eid, const std::string &user, const std::string &item, double ts,
                      const std::map<std::string, PendingHead> &heads, int64_t *seq_out) {
  begin();
  try {
    bool added;
    {
      Stmt s{cached("INSERT OR IGNORE INTO events (event_id, user_id, item_id, ts) VALUES (?, ?, ?, ?)"), true};
      s.text(1, eid), s.text(2, user), s.text(3, item);
      sqlite3_bind_double(s.s, 4, ts);
      if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
      added = sqlite3_changes(db_) == 1;
      if (added && seq_out) *seq_out = sqlite3_last_insert_rowid(db_);  // seq is the INTEGER PRIMARY KEY
    }
    write_heads(heads);
    commit();  // synchronous=FULL in WAL mode: returns once the WAL is fsynced, i.e. the event is durable
    return added;
  } catch (...) {
    rollback();
    throw;
  }
}

std::vector<Event> Store::events(const std::string &user) {
  Stmt s{cached("SELECT event_id, item_id, ts, seq FROM events WHERE user_id=? ORDER BY ts, seq"), true};
  s.text(1, user);
  std::vector<Event> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW)
    out.push_back({(const char *)sqlite3_column_text(s.s, 0), (const char *)sqlite3_column_text(s.s, 1),
                   sqlite3_column_double(s.s, 2), sqlite3_column_int64(s.s, 3)});
  if (rc != SQLITE_DONE) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  return out;
}

int64_t Store::count_events(const std::string &user) {
  Stmt s{prep("SELECT COUNT(*) FROM events WHERE user_id=?")};
  s.text(1, user);
  if (sqlite3_step(s.s) != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  return sqlite3_column_int64(s.s, 0);
}

void Store::forget(const std::string &user) {
  begin();
  try {
    for (const char *sql : {"DELETE FROM events WHERE user_id=?", "DELETE FROM heads WHERE user_id=?"}) {
      Stmt s{prep(sql)};
      s.text(1, user);
      if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    }
    commit();
  } catch (...) {
    rollback();
    throw;
  }
  sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);  // best effort, as Python
}

std::optional<HeadRow> Store::get_head(const std::string &user) {
  Stmt s{cached("SELECT serial, event_seq, scene, head FROM heads WHERE user_id=?"), true};
  s.text(1, user);
  if (sqlite3_step(s.s) != SQLITE_ROW) return std::nullopt;
  return HeadRow{sqlite3_column_int64(s.s, 0), sqlite3_column_int64(s.s, 1), s.col_blob(2), s.col_blob(3)};
}

void Store::put_heads(const std::map<std::string, PendingHead> &heads) {
  if (heads.empty()) return;
  exec("PRAGMA synchronous=NORMAL");  // heads are a cache rebuilt by replay: no fsync (store.py put_head)
  try {
    begin();
    try {
      write_heads(heads);
      commit();
    } catch (...) {
      rollback();
      throw;
    }
  } catch (...) {
    exec("PRAGMA synchronous=FULL");
    throw;
  }
  exec("PRAGMA synchronous=FULL");
}

int64_t Store::max_serial() {
  Stmt s{prep("SELECT value FROM meta WHERE key='max_serial'")};
  return sqlite3_step(s.s) == SQLITE_ROW ? sqlite3_column_int64(s.s, 0) : 0;
}

void Store::accept_serial(int64_t serial) {
  begin();
  try {
    int64_t seen = max_serial();
    if (serial < seen) throw BundleError("bundle serial " + std::to_string(serial) + " is older than " +
                                         std::to_string(seen) + ", already seen here (rollback)");
    Stmt s{prep("INSERT OR REPLACE INTO meta VALUES ('max_serial', ?)")};
    sqlite3_bind_int64(s.s, 1, serial);
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    commit();
  } catch (...) {
    rollback();
    throw;
  }
}

std::optional<std::string> Store::get_trending() {
  Stmt s{prep("SELECT pack FROM trending WHERE id=1")};
  if (sqlite3_step(s.s) != SQLITE_ROW) return std::nullopt;
  Bytes b = s.col_blob(0);
  return std::string(b.begin(), b.end());
}

void Store::put_trending(const std::string &pack) {
  begin();
  try {
    Stmt s{prep("INSERT OR REPLACE INTO trending VALUES (1, ?)")};
    s.blob(1, Bytes(pack.begin(), pack.end()));
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    commit();
  } catch (...) {
    rollback();
    throw;
  }
}

std::optional<Bytes> Store::get_neighbor_pack() {
  Stmt s{prep("SELECT id, pack, chk FROM neighbor_pack WHERE id=1")};
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  if (sqlite3_column_type(s.s, 0) != SQLITE_INTEGER || sqlite3_column_type(s.s, 1) != SQLITE_BLOB ||
      sqlite3_column_type(s.s, 2) != SQLITE_INTEGER)
    throw StateError("state database holds a malformed neighbour pack row (corrupt)");
  Bytes pack = s.col_blob(1);
  if (sqlite3_column_int64(s.s, 0) != 1 || sqlite3_column_int64(s.s, 2) != pack_chk(pack))
    throw StateError("state database row (1, <neighbour pack>) fails its checksum (corrupt)");
  return pack;
}

void Store::put_neighbor_pack(const Bytes &pack) {
  begin();
  try {
    Stmt s{prep("INSERT OR REPLACE INTO neighbor_pack VALUES (1, ?, ?)")};
    s.blob(1, pack);
    sqlite3_bind_int64(s.s, 2, pack_chk(pack));
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    commit();
  } catch (...) {
    rollback();
    throw;
  }
}
}  // namespace mr
