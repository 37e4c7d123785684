// runtime_py/store.py against the system SQLite: the same schema and settings (WAL, synchronous=FULL,
// secure_delete), so one state file opens in both runtimes; a file of another store schema is a StateError.
#include <sqlite3.h>

#include "internal.h"
#include "store_rows.h"
#include "store_schema.h"

#include <cmath>
#include <set>

namespace mr {
namespace {
constexpr int64_t kStoreSchema = 2;  // store.py STORE_SCHEMA
const char *kSchema = kStoreSchemaSql;  // runtime_py/store_schema.sql, embedded by CMake (store_schema.h)

// store.py's tables beside schema 1's (created there too): the neighbour pack (its rows carry `chk` from the start)
// and the catalog deltas, which only the Python runtime serves (a file holding deltas for the bundle being opened
// is refused: Recommender's constructor)
const char *kNeighborTable = "CREATE TABLE IF NOT EXISTS neighbor_pack (id INTEGER PRIMARY KEY CHECK (id = 1), "
                             "pack BLOB NOT NULL, chk INTEGER NOT NULL)";
const char *kDeltaTable = "CREATE TABLE IF NOT EXISTS catalog_deltas (serial INTEGER NOT NULL, seq INTEGER NOT NULL, "
                          "delta BLOB NOT NULL, sig BLOB NOT NULL, chk INTEGER NOT NULL, PRIMARY KEY (serial, seq))";
// the onboarding pack (store.py `_ONBOARDING_TABLE`): the neighbour pack's layout and chk
const char *kOnboardingTable = "CREATE TABLE IF NOT EXISTS onboarding_pack (id INTEGER PRIMARY KEY CHECK (id = 1), "
                               "pack BLOB NOT NULL, chk INTEGER NOT NULL)";
const std::set<std::string> kTables = {"meta",           "events",        "heads",          "trending",
                                       "sqlite_sequence", "catalog_deltas", "neighbor_pack", "onboarding_pack"};
// store.py `_CHECKED`: the columns each table's chk covers, in order (the schema 1 -> 2 migration fills them)
const std::pair<const char *, const char *> kChecked[] = {{"meta", "key, value"},
                                                          {"events", "event_id, user_id, item_id, ts"},
                                                          {"heads", "user_id, serial, event_seq, scene, head"},
                                                          {"trending", "id, pack"}};

std::string col_text(sqlite3_stmt *s, int i) {
  const auto *p = reinterpret_cast<const char *>(sqlite3_column_text(s, i));
  return p ? std::string(p, size_t(sqlite3_column_bytes(s, i))) : std::string();
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
    {  // store.py: a table of neither runtime is refused, not ignored
      Stmt s{prep("SELECT name FROM sqlite_master WHERE type='table'")};
      int rc;
      while ((rc = sqlite3_step(s.s)) == SQLITE_ROW)
        if (!kTables.count(col_text(s.s, 0)))
          throw StateError("state database has unknown table '" + col_text(s.s, 0) + "'");
      if (rc != SQLITE_DONE) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
    }
    begin();  // as store.py: schema, migration and version in one transaction (a crash leaves the old or the new)
    try {
      exec(kSchema);
      exec(kDeltaTable);
      exec(kNeighborTable);
      exec(kOnboardingTable);
      std::optional<int64_t> v;
      {
        Stmt s{prep("SELECT value FROM meta WHERE key='store_schema'")};
        if (sqlite3_step(s.s) == SQLITE_ROW) {
          if (sqlite3_column_type(s.s, 0) != SQLITE_INTEGER)
            throw StateError("state database schema is not " + std::to_string(kStoreSchema) + " (malformed)");
          v = sqlite3_column_int64(s.s, 0);
        }
      }
      if (!v || *v == 1) migrate_1_to_2();  // a new file too: schema 1's tables, then chk added, as store.py
      else if (*v != kStoreSchema)
        throw StateError("state database schema " + std::to_string(*v) + " is not " + std::to_string(kStoreSchema));
      // store.py writes ('store_schema', 2, chk) on every open; here only when it is not already that row, so an
      // open that is refused later (catalog deltas, rollback) leaves a schema-2 file byte for byte as it was
      int64_t chk = Repr().s("store_schema").i(kStoreSchema).crc();
      bool current = false;
      {
        Stmt s{prep("SELECT value, chk FROM meta WHERE key='store_schema'")};
        current = sqlite3_step(s.s) == SQLITE_ROW && sqlite3_column_type(s.s, 0) == SQLITE_INTEGER &&
                  sqlite3_column_type(s.s, 1) == SQLITE_INTEGER && sqlite3_column_int64(s.s, 0) == kStoreSchema &&
                  sqlite3_column_int64(s.s, 1) == chk;
      }
      if (!current) {
        Stmt s{prep("INSERT OR REPLACE INTO meta (key, value, chk) VALUES ('store_schema', ?, ?)")};
        sqlite3_bind_int64(s.s, 1, kStoreSchema);
        sqlite3_bind_int64(s.s, 2, chk);
        if (sqlite3_step(s.s) != SQLITE_DONE)
          throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
      }
      max_serial();  // as store.py, a corrupt mark row is refused at open; here before the commit: nothing written
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

// store.py `_migrate_1_to_2`, inside the caller's transaction: add `chk` to every checked table that lacks it and
// fill it from the row's values as SQLite holds them (a value's storage class picks its repr, as sqlite3 returns it)
void Store::migrate_1_to_2() {
  for (auto &[table, cols] : kChecked) {
    bool have = false;
    {
      Stmt s{prep((std::string("PRAGMA table_info(") + table + ")").c_str())};
      while (sqlite3_step(s.s) == SQLITE_ROW) have = have || col_text(s.s, 1) == "chk";
    }
    if (!have) exec((std::string("ALTER TABLE ") + table + " ADD COLUMN chk INTEGER NOT NULL DEFAULT 0").c_str());
    std::vector<std::pair<int64_t, int64_t>> chks;  // (rowid, chk)
    {
      Stmt s{prep((std::string("SELECT rowid, ") + cols + " FROM " + table).c_str())};
      int rc, n = sqlite3_column_count(s.s);
      while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
        Repr r;
        for (int i = 1; i < n; i++) switch (sqlite3_column_type(s.s, i)) {
            case SQLITE_INTEGER: r.i(sqlite3_column_int64(s.s, i)); break;
            case SQLITE_FLOAT: r.f(sqlite3_column_double(s.s, i)); break;
            case SQLITE_TEXT: r.s(col_text(s.s, i)); break;
            case SQLITE_BLOB: {
              const auto *p = static_cast<const uint8_t *>(sqlite3_column_blob(s.s, i));
              r.b(p, size_t(sqlite3_column_bytes(s.s, i)));
              break;
            }
            default: r.none();
          }
        chks.emplace_back(sqlite3_column_int64(s.s, 0), r.crc());
      }
      if (rc != SQLITE_DONE) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
    }
    Stmt u{prep((std::string("UPDATE ") + table + " SET chk=? WHERE rowid=?").c_str())};
    for (auto &[rowid, chk] : chks) {
      sqlite3_reset(u.s);
      sqlite3_bind_int64(u.s, 1, chk);
      sqlite3_bind_int64(u.s, 2, rowid);
      if (sqlite3_step(u.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    }
  }
}

Store::~Store() {
  for (auto &[sql, s] : cache_) sqlite3_finalize(s);  // sqlite3_close refuses a connection with live statements
  sqlite3_close(db_);
}

void Store::write_heads(const std::map<std::string, PendingHead> &heads) {
  if (heads.empty()) return;
  Stmt s{cached("INSERT OR REPLACE INTO heads (user_id, serial, event_seq, scene, head, chk) VALUES (?, ?, ?, ?, ?, ?)"),
         true};
  for (auto &[user, h] : heads) {
    sqlite3_reset(s.s);
    s.text(1, user);
    sqlite3_bind_int64(s.s, 2, h.serial);
    sqlite3_bind_int64(s.s, 3, h.event_seq);
    s.blob(4, h.scene);
    s.blob(5, h.head);
    sqlite3_bind_int64(s.s, 6, Repr().s(user).i(h.serial).i(h.event_seq).b(h.scene).b(h.head).crc());
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
  }
}

bool Store::add_event(const std::string &eid, const std::string &user, const std::string &item, double ts,
                      const std::map<std::string, PendingHead> &heads, int64_t *seq_out) {
  int64_t chk = Repr().s(eid).s(user).s(item).f(ts).crc();  // before BEGIN: a text that is not UTF-8 writes nothing
  begin();
  try {
    bool added;
    {
      Stmt s{cached("INSERT OR IGNORE INTO events (event_id, user_id, item_id, ts, chk) VALUES (?, ?, ?, ?, ?)"), true};
      s.text(1, eid), s.text(2, user), s.text(3, item);
      sqlite3_bind_double(s.s, 4, ts);
      sqlite3_bind_int64(s.s, 5, chk);
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
  Stmt s{cached("SELECT event_id, user_id, item_id, ts, chk, seq FROM events WHERE user_id=? ORDER BY ts, seq"), true};
  s.text(1, user);
  std::vector<Event> out;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
    check_types(s.s, "tttfii");
    std::string eid = col_text(s.s, 0), u = col_text(s.s, 1), item = col_text(s.s, 2);
    double ts = sqlite3_column_double(s.s, 3);
    verify(Repr().s(eid).s(u).s(item).f(ts).crc(), sqlite3_column_int64(s.s, 4), "(" + eid + ", <event>)");
    if (!std::isfinite(ts))
      throw StateError("state database holds a non-finite timestamp for user " + user + " (corrupt)");
    out.push_back({std::move(eid), std::move(item), ts, sqlite3_column_int64(s.s, 5)});
  }
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
  Stmt s{cached("SELECT user_id, serial, event_seq, scene, head, chk FROM heads WHERE user_id=?"), true};
  s.text(1, user);
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  check_types(s.s, "tiibbi");
  HeadRow h{sqlite3_column_int64(s.s, 1), sqlite3_column_int64(s.s, 2), s.col_blob(3), s.col_blob(4)};
  verify(Repr().s(col_text(s.s, 0)).i(h.serial).i(h.event_seq).b(h.scene).b(h.head).crc(),
         sqlite3_column_int64(s.s, 5), "(" + user + ", <head>)");
  return h;
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
  Stmt s{prep("SELECT key, value, chk FROM meta WHERE key='max_serial'")};
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return 0;
  if (rc != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  check_types(s.s, "tii");
  int64_t v = sqlite3_column_int64(s.s, 1);
  verify(Repr().s(col_text(s.s, 0)).i(v).crc(), sqlite3_column_int64(s.s, 2), "('max_serial', " + std::to_string(v) + ")");
  return v;
}

void Store::accept_serial(int64_t serial) {
  begin();
  try {
    int64_t seen = max_serial();
    if (serial < seen) throw BundleError("bundle serial " + std::to_string(serial) + " is older than " +
                                         std::to_string(seen) + ", already seen here (rollback)");
    Stmt s{prep("INSERT OR REPLACE INTO meta (key, value, chk) VALUES ('max_serial', ?, ?)")};
    sqlite3_bind_int64(s.s, 1, serial);
    sqlite3_bind_int64(s.s, 2, Repr().s("max_serial").i(serial).crc());
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    Stmt d{prep("DELETE FROM catalog_deltas WHERE serial < ?")};  // as store.py: a newer bundle folds them in
    sqlite3_bind_int64(d.s, 1, serial);
    if (sqlite3_step(d.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    commit();
  } catch (...) {
    rollback();
    throw;
  }
}

int64_t Store::count_deltas(int64_t serial) {
  Stmt s{prep("SELECT COUNT(*) FROM catalog_deltas WHERE serial=?")};
  sqlite3_bind_int64(s.s, 1, serial);
  if (sqlite3_step(s.s) != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  return sqlite3_column_int64(s.s, 0);
}
}  // namespace mr
