// The row checks of runtime_py/store.py: the column types (`_query`) and `_chk`, Python's repr of the values CRC'd.
#include <sqlite3.h>
#include <zlib.h>

#include "py_printable.h"
#include "store_rows.h"

namespace mr {
namespace {
bool non_printable(uint32_t c) {  // Python's not str.isprintable(), for c >= 0x80 (py_printable.h)
  size_t lo = 0, hi = sizeof kPyNonPrintable / sizeof kPyNonPrintable[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kPyNonPrintable[mid][1] < c) lo = mid + 1;
    else hi = mid;
  }
  return lo < sizeof kPyNonPrintable / sizeof kPyNonPrintable[0] && kPyNonPrintable[lo][0] <= c;
}

// Decodes strict UTF-8 (no overlong forms, surrogates or code points past 0x10FFFF, as Python's decoder); false if
// `v` is not valid UTF-8 (Python cannot read such a text column either)
bool utf8_decode(const std::string &v, std::vector<uint32_t> *out) {
  const auto *p = reinterpret_cast<const uint8_t *>(v.data());
  size_t n = v.size();
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i];
    uint32_t cp;
    size_t len;
    if (c < 0x80) cp = c, len = 1;
    else if (c >= 0xc2 && c <= 0xdf) cp = c & 0x1fu, len = 2;
    else if (c >= 0xe0 && c <= 0xef) cp = c & 0x0fu, len = 3;
    else if (c >= 0xf0 && c <= 0xf4) cp = c & 0x07u, len = 4;
    else return false;
    if (i + len > n) return false;
    for (size_t j = 1; j < len; j++) {
      if ((p[i + j] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + j] & 0x3fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    out->push_back(cp);
    i += len;
  }
  return true;
}

void put_utf8(std::string &r, uint32_t c) {
  if (c < 0x80) r += char(c);
  else if (c < 0x800) r += char(0xc0 | (c >> 6)), r += char(0x80 | (c & 0x3f));
  else if (c < 0x10000)
    r += char(0xe0 | (c >> 12)), r += char(0x80 | ((c >> 6) & 0x3f)), r += char(0x80 | (c & 0x3f));
  else
    r += char(0xf0 | (c >> 18)), r += char(0x80 | ((c >> 12) & 0x3f)), r += char(0x80 | ((c >> 6) & 0x3f)),
        r += char(0x80 | (c & 0x3f));
}

const char *kHex = "0123456789abcdef";
}  // namespace

// store.py `_chk(*values)`: CRC-32 of repr(values) in UTF-8. Python's repr of a tuple of at least two values is
// "(" + ", ".join(repr(v)) + ")"; of an int its decimal digits; of a float its shortest round-trip form
// (py_float_repr); of a str and of bytes, the quoted and escaped forms below, byte for byte.
void Repr::sep() {
  if (r.size() > 1) r += ", ";
}
Repr &Repr::i(int64_t v) {
  sep(), r += std::to_string(v);
  return *this;
}
Repr &Repr::f(double v) {
  sep(), r += py_float_repr(v);
  return *this;
}
// str: quote ' unless the text holds ' and no "; escapes for the quote, \\, \t, \n, \r, \xhh below 0x20 and 0x7f,
// and, above, \xhh / \uhhhh / \Uhhhhhhhh for what str.isprintable() rejects; everything else as is (UTF-8).
// StateError if `v` is not UTF-8 (a row Python cannot read either)
Repr &Repr::s(const std::string &v) {
  std::vector<uint32_t> cps;
  if (!utf8_decode(v, &cps)) throw StateError("state database holds a text value that is not UTF-8 (corrupt)");
  sep();
  bool sq = v.find('\'') != std::string::npos, dq = v.find('"') != std::string::npos;
  char quote = sq && !dq ? '"' : '\'';
  r += quote;
  for (uint32_t c : cps) {
    if (c == uint32_t(quote) || c == '\\') r += '\\', r += char(c);
    else if (c == '\t') r += "\\t";
    else if (c == '\n') r += "\\n";
    else if (c == '\r') r += "\\r";
    else if (c < 0x20 || c == 0x7f || (c >= 0x80 && non_printable(c))) {
      int digits = c < 0x100 ? 2 : c < 0x10000 ? 4 : 8;
      r += digits == 2 ? "\\x" : digits == 4 ? "\\u" : "\\U";
      for (int k = digits - 1; k >= 0; k--) r += kHex[(c >> (4 * k)) & 15];
    } else put_utf8(r, c);
  }
  r += quote;
  return *this;
}
// bytes: b + the same quoting; escapes for the quote, \\, \t, \n, \r, \xhh outside printable ASCII
Repr &Repr::b(const uint8_t *p, size_t n) {
  sep();
  bool sq = std::find(p, p + n, uint8_t('\'')) != p + n, dq = std::find(p, p + n, uint8_t('"')) != p + n;
  char quote = sq && !dq ? '"' : '\'';
  r.reserve(r.size() + n * 4 + 8);
  r += 'b', r += quote;
  for (size_t k = 0; k < n; k++) {
    uint8_t c = p[k];
    if (c == uint8_t(quote) || c == '\\') r += '\\', r += char(c);
    else if (c == '\t') r += "\\t";
    else if (c == '\n') r += "\\n";
    else if (c == '\r') r += "\\r";
    else if (c < 0x20 || c >= 0x7f) r += "\\x", r += kHex[c >> 4], r += kHex[c & 15];
    else r += char(c);
  }
  r += quote;
  return *this;
}
Repr &Repr::b(const Bytes &v) { return b(v.data(), v.size()); }
Repr &Repr::none() {
  sep(), r += "None";
  return *this;
}
int64_t Repr::crc() {
  r += ')';
  uLong c = crc32(0L, Z_NULL, 0);
  const Bytef *p = reinterpret_cast<const Bytef *>(r.data());
  for (size_t off = 0; off < r.size();) {  // crc32 takes a uInt length
    uInt n = uInt(std::min<size_t>(r.size() - off, 1u << 30));
    c = crc32(c, p + off, n);
    off += n;
  }
  return int64_t(c & 0xffffffffu);
}

// store.py `_chk(1, pack)`: the trending, neighbour and onboarding pack rows
int64_t pack_chk(const Bytes &pack) { return Repr().i(1).b(pack).crc(); }

// store.py `_query(..., types)`: every column of a row read back holds the type store.py writes (i: INTEGER,
// f: REAL, t: TEXT, b: BLOB), else the file is corrupt
void check_types(sqlite3_stmt *s, const char *types) {
  for (int i = 0; types[i]; i++) {
    char t = types[i];
    int kind = t == 'b' ? SQLITE_BLOB : t == 'f' ? SQLITE_FLOAT : t == 'i' ? SQLITE_INTEGER : SQLITE_TEXT;
    if (sqlite3_column_type(s, i) != kind)
      throw StateError("state database holds a malformed row (corrupt)");
  }
}

// store.py `_verify`: the row's last checked column is followed by its chk
void verify(int64_t want, int64_t got, const std::string &what) {
  if (want != got) throw StateError("state database row " + what + " fails its checksum (corrupt)");
}

bool valid_utf8(const std::string &v) {
  std::vector<uint32_t> cps;
  return utf8_decode(v, &cps);
}
}  // namespace mr
