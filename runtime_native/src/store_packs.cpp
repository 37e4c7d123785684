// The pack rows of runtime_py/store.py: the trending, neighbour and onboarding packs, one (1, pack, chk) row each.
#include <sqlite3.h>

#include "store_rows.h"

namespace mr {

std::optional<std::string> Store::get_trending() {
  Stmt s{prep("SELECT id, pack, chk FROM trending WHERE id=1")};
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  check_types(s.s, "ibi");
  Bytes b = s.col_blob(1);
  verify(Repr().i(sqlite3_column_int64(s.s, 0)).b(b).crc(), sqlite3_column_int64(s.s, 2), "(1, <trending pack>)");
  return std::string(b.begin(), b.end());
}

void Store::put_trending(const std::string &pack) {
  put_pack_row("INSERT OR REPLACE INTO trending (id, pack, chk) VALUES (1, ?, ?)", Bytes(pack.begin(), pack.end()));
}

// one (1, pack, chk) row in its own durable transaction: the trending, neighbour and onboarding pack tables share it
void Store::put_pack_row(const char *sql, const Bytes &pack) {
  begin();
  try {
    Stmt s{prep(sql)};
    s.blob(1, pack);
    sqlite3_bind_int64(s.s, 2, pack_chk(pack));
    if (sqlite3_step(s.s) != SQLITE_DONE) throw StateError(std::string("state write failed: ") + sqlite3_errmsg(db_));
    commit();
  } catch (...) {
    rollback();
    throw;
  }
}

std::optional<Bytes> Store::get_pack_row(const char *sql, const char *what) {
  Stmt s{prep(sql)};
  int rc = sqlite3_step(s.s);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) throw StateError(std::string("state read failed: ") + sqlite3_errmsg(db_));
  if (sqlite3_column_type(s.s, 0) != SQLITE_INTEGER || sqlite3_column_type(s.s, 1) != SQLITE_BLOB ||
      sqlite3_column_type(s.s, 2) != SQLITE_INTEGER)
    throw StateError(std::string("state database holds a malformed ") + what + " row (corrupt)");
  Bytes pack = s.col_blob(1);
  if (sqlite3_column_int64(s.s, 0) != 1 || sqlite3_column_int64(s.s, 2) != pack_chk(pack))
    throw StateError(std::string("state database row (1, <") + what + ">) fails its checksum (corrupt)");
  return pack;
}

std::optional<Bytes> Store::get_neighbor_pack() {
  return get_pack_row("SELECT id, pack, chk FROM neighbor_pack WHERE id=1", "neighbour pack");
}

void Store::put_neighbor_pack(const Bytes &pack) {
  put_pack_row("INSERT OR REPLACE INTO neighbor_pack VALUES (1, ?, ?)", pack);
}

std::optional<Bytes> Store::get_onboarding_pack() {
  return get_pack_row("SELECT id, pack, chk FROM onboarding_pack WHERE id=1", "onboarding pack");
}

void Store::put_onboarding_pack(const Bytes &pack) {
  put_pack_row("INSERT OR REPLACE INTO onboarding_pack VALUES (1, ?, ?)", pack);
}
}  // namespace mr
