// What the store's files share: the statement guard, and the checks every row read back passes (store_chk.cpp).
#pragma once

#include <sqlite3.h>

#include "internal.h"

namespace mr {
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

// store.py `_chk(*values)`: CRC-32 of repr(values) in UTF-8, the repr built value by value as Python writes it
struct Repr {
  std::string r = "(";
  void sep();
  Repr &i(int64_t v);
  Repr &f(double v);
  Repr &s(const std::string &v);  // StateError if `v` is not UTF-8
  Repr &b(const uint8_t *p, size_t n);
  Repr &b(const Bytes &v);
  Repr &none();
  int64_t crc();
};
// store.py `_chk(1, pack)`: the trending, neighbour and onboarding pack rows
int64_t pack_chk(const Bytes &pack);
// store.py `_query(..., types)`: every column of a row read back holds the type store.py writes (i: INTEGER,
// f: REAL, t: TEXT, b: BLOB), else the file is corrupt
void check_types(sqlite3_stmt *s, const char *types);
// store.py `_verify`: the row's last checked column is followed by its chk
void verify(int64_t want, int64_t got, const std::string &what);
}  // namespace mr
