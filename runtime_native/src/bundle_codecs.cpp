// The codecs of runtime_py/bundle_codecs.py (and table_codec.py's item tables) that the bundle and the packs use.
#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "internal.h"

namespace mr {
using json = nlohmann::json;

// IEEE binary16 -> float, exact for every value (normals, subnormals, zeros, inf, NaN)
float half_to_float(uint16_t h) {
  int exp = (h >> 10) & 31, man = h & 1023;
  float v = exp == 0    ? std::ldexp(float(man), -24)  // zero or subnormal: man * 2^-24
            : exp == 31 ? (man ? NAN : INFINITY)
                        : std::ldexp(float(man | 1024), exp - 25);  // (1024 + man) * 2^(exp - 15 - 10)
  return (h & 0x8000) ? -v : v;
}

NeighborTable decode_neighbors(const Bytes &data, int64_t n, int64_t m, const std::string &name) {
  if (int64_t(data.size()) != n * m * 6)
    throw BundleError(name + " has " + std::to_string(data.size()) + " bytes, expected " + std::to_string(n * m * 6) +
                      " for (N=" + std::to_string(n) + ", m=" + std::to_string(m) + ")");
  NeighborTable t;
  t.ids.resize(size_t(n * m)), t.weights.resize(size_t(n * m));
  std::memcpy(t.ids.data(), data.data(), size_t(n * m) * 4);  // int32 little-endian: every phone and x86
  for (size_t i = 0; i < t.ids.size(); i++) {
    uint16_t h;
    std::memcpy(&h, data.data() + size_t(n * m) * 4 + 2 * i, 2);
    float w = half_to_float(h);
    if (t.ids[i] < -1 || t.ids[i] >= n) throw BundleError(name + " holds an item index outside [-1, " + std::to_string(n) + ")");
    if (!std::isfinite(w) || w < 0) throw BundleError(name + " holds a non-finite or negative weight");
    t.weights[i] = w;
  }
  for (size_t i = 0; i < t.ids.size(); i++)
    if (t.ids[i] < 0) t.ids[i] = 0, t.weights[i] = 0.f;  // padding, as decode_neighbors: id 0 with no weight
  return t;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint16_t sign = uint16_t((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));  // inf, NaN
  if (ax >= 0x47800000u) return uint16_t(sign | 0x7c00);                                // >= 65536: inf
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (or 0), |f| * 2^24 rounded half to even
    float a;
    std::memcpy(&a, &ax, 4);
    return uint16_t(sign | uint16_t(std::nearbyint(std::ldexp(a, 24))));  // 1024 is the smallest normal's bits
  }
  uint32_t mant = ax & 0x7fffffu, r = mant >> 13, rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
  uint32_t e = (ax >> 23) - 127 + 15;
  return uint16_t(sign | ((e << 10) + r));  // a carry out of the mantissa bumps the exponent (to inf past 65504)
}

std::string py_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);  // shortest round-trip
  std::string s(buf, res.ptr), sign;
  if (s[0] == '-') sign = "-", s = s.substr(1);
  size_t epos = s.find('e');
  int e = std::stoi(s.substr(epos + 1));
  std::string digits;
  for (size_t i = 0; i < epos; i++) if (s[i] != '.') digits += s[i];
  if (e < -4 || e >= 16) {  // float_repr_style 'short': exponent form outside 1e-4 <= |v| < 1e16
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    std::string ex = std::to_string(e < 0 ? -e : e);
    if (ex.size() < 2) ex = "0" + ex;
    return out + "e" + (e < 0 ? "-" : "+") + ex;
  }
  if (e < 0) return sign + "0." + std::string(size_t(-e - 1), '0') + digits;
  size_t ip = size_t(e) + 1;
  if (digits.size() <= ip) return sign + digits + std::string(ip - digits.size(), '0') + ".0";
  return sign + digits.substr(0, ip) + "." + digits.substr(ip);
}

Bytes encode_neighbor_pack(const NeighborPackHead &h, const int32_t *ids, const uint16_t *half_weights) {
  // json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True): catalog (hex) and kind need no escapes
  std::string head = "{\"at\":" + py_float_repr(h.at) + ",\"catalog\":" + json(h.catalog).dump(-1, ' ', true) +
                     ",\"kind\":" + json(h.kind).dump(-1, ' ', true) + ",\"m\":" + std::to_string(h.m) +
                     ",\"n\":" + std::to_string(h.n) + ",\"version\":1}\n";
  size_t cells = size_t(h.n * h.m);
  Bytes out(head.begin(), head.end());
  size_t at = out.size();
  out.resize(at + cells * 6);
  std::memcpy(out.data() + at, ids, cells * 4);  // little-endian: every phone and x86
  std::memcpy(out.data() + at + cells * 4, half_weights, cells * 2);
  return out;
}

NeighborTable decode_neighbor_pack(const Bytes &data, NeighborPackHead *head) {
  auto nl = std::find(data.begin(), data.end(), uint8_t('\n'));
  // Python reads the header's first 4096 bytes as ASCII JSON
  std::string line(data.begin(), data.begin() + std::min<ptrdiff_t>(nl - data.begin(), 4096));
  for (unsigned char c : line)
    if (c > 127) throw BundleError("invalid neighbour pack: header is not ASCII");
  json d;
  try {
    d = json::parse(line);
  } catch (const std::exception &e) {
    throw BundleError(std::string("invalid neighbour pack: ") + e.what());
  }
  static const std::set<std::string> keys = {"at", "catalog", "kind", "m", "n", "version"};
  std::set<std::string> have;
  if (d.is_object())
    for (auto it = d.begin(); it != d.end(); ++it) have.insert(it.key());
  if (have != keys) throw BundleError("invalid neighbour pack: header fields");
  if (!d["version"].is_number_integer() || d["version"].get<int64_t>() != 1)
    throw BundleError("invalid neighbour pack: version unsupported (this runtime reads 1)");
  for (const char *k : {"n", "m"})
    if (!d[k].is_number_integer() || d[k].get<int64_t>() < 1) throw BundleError("invalid neighbour pack: n, m out of range");
  NeighborPackHead h;
  h.n = d["n"].get<int64_t>(), h.m = d["m"].get<int64_t>();
  if (h.m > 256 || h.n > (int64_t(1) << 31)) throw BundleError("invalid neighbour pack: n, m out of range");
  if (!d["catalog"].is_string() || d["catalog"].get<std::string>().empty() || !d["kind"].is_string())
    throw BundleError("invalid neighbour pack: catalog and kind must be str, the catalog not empty");
  if (!d["at"].is_number() || !std::isfinite(d["at"].get<double>()))
    throw BundleError("invalid neighbour pack: time is not a finite number");
  h.at = d["at"].get<double>(), h.catalog = d["catalog"].get<std::string>(), h.kind = d["kind"].get<std::string>();
  Bytes body(nl == data.end() ? data.end() : nl + 1, data.end());
  NeighborTable t = decode_neighbors(body, h.n, h.m, "neighbour pack");
  if (head) *head = h;
  return t;
}

// bundle_codecs.decode_floats: n float32, or n IEEE halves (head.dtype "float16") widened exactly to float32
std::vector<float> decode_floats(const Bytes &b, size_t n, const std::string &name, bool half) {
  size_t want = n * (half ? 2 : 4);
  if (b.size() != want)
    throw BundleError(name + " has " + std::to_string(b.size()) + " bytes, expected " + std::to_string(want) +
                      " for " + (half ? "float16" : "float32") + " (" + std::to_string(n) + ",)");
  std::vector<float> v(n);
  if (half) {
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      std::memcpy(&h, b.data() + 2 * i, 2);  // little-endian: every phone and x86
      v[i] = half_to_float(h);
    }
  } else if (n) {
    std::memcpy(v.data(), b.data(), b.size());
  }
  for (float x : v) if (!std::isfinite(x)) throw BundleError(name + " holds non-finite values");
  return v;
}

std::vector<float> decode_popularity(const Bytes &data, int64_t n, const std::string &name) {
  return decode_floats(data, size_t(n), name, true);  // popularity.bin: (N,) float16, as a half head0.bin
}

std::string catalog_digest(const std::vector<std::string> &item_ids) {
  std::string all;
  for (size_t i = 0; i < item_ids.size(); i++) all += (i ? "\n" : "") + item_ids[i];
  return sha256_hex(Bytes(all.begin(), all.end()));
}

Bytes inflate(const uint8_t *data, size_t n, size_t limit, const std::string &what) {
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) throw BundleError(what + ": zlib init failed");
  Bytes out;
  zs.next_in = const_cast<uint8_t *>(data);
  zs.avail_in = uInt(n);
  int rc = Z_OK;
  uint8_t buf[1 << 16];
  while (rc == Z_OK) {
    zs.next_out = buf, zs.avail_out = sizeof buf;
    rc = ::inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.insert(out.end(), buf, buf + (sizeof buf - zs.avail_out));
    if (out.size() > limit) rc = Z_MEM_ERROR;
  }
  bool ok = rc == Z_STREAM_END && zs.avail_in == 0;
  inflateEnd(&zs);
  if (!ok) throw BundleError(what + " does not inflate to a complete stream under " + std::to_string(limit) + " bytes");
  return out;
}

namespace {
// table_nbytes's int8 / int4 case: the q bytes, then n * (d / gs) scales of 2 (half) or 4 bytes
int64_t int_table_bytes(int64_t n, int64_t d, bool int8, int64_t gs, bool half_scales) {
  return (int8 ? n * d : n * d / 2) + n * (d / gs) * (half_scales ? 2 : 4);
}

// The one int8 / int4 decoder: an (n, d) table in its file layout at `p` (int_table_bytes long, checked by the
// caller); its row i becomes out's row rows[i] (rows nullptr: row i), so a mixed table's parts land in place.
void decode_int_rows(const uint8_t *p, int64_t n, int64_t d, bool int8, int64_t gs, bool half_scales,
                     const int64_t *rows, float *out) {
  int64_t g = d / gs, split = int8 ? n * d : n * d / 2;
  std::vector<float> sc(size_t(n * g));
  if (half_scales) {  // IEEE half, little-endian: float32(half) is exact, then one float32 multiply, as numpy
    for (size_t i = 0; i < sc.size(); i++) {
      uint16_t h;
      std::memcpy(&h, p + split + 2 * int64_t(i), 2);
      sc[i] = half_to_float(h);
    }
  } else if (!sc.empty()) {
    std::memcpy(sc.data(), p + split, sc.size() * 4);  // float32 little-endian
  }
  for (int64_t i = 0; i < n; i++) {
    float *row = out + (rows ? rows[i] : i) * d;
    for (int64_t j = 0; j < d; j++) {
      float q;
      if (int8) {
        q = float(int8_t(p[i * d + j]));
      } else {
        uint8_t u = p[(i * d + j) / 2];
        q = float(int((j % 2) ? (u >> 4) : (u & 15)) - 8);
      }
      row[j] = q * sc[size_t(i * g + j / gs)];
    }
  }
}

std::string table_size_error(size_t got, int64_t want, int64_t n, int64_t d, const std::string &what) {
  return "item table has " + std::to_string(got) + " bytes, expected " + std::to_string(want) + " for (" +
         std::to_string(n) + ", " + std::to_string(d) + ") " + what;
}
}  // namespace

std::vector<float> decode_table(const Bytes &data, int64_t n, int64_t d, const std::string &fmt, int64_t gs,
                                bool half_scales) {
  std::vector<float> out(size_t(n * d));
  bool mixed = fmt == "mixed";
  if (fmt == "float32") {
    if (int64_t(data.size()) != n * d * 4) throw BundleError(table_size_error(data.size(), n * d * 4, n, d, fmt));
    std::memcpy(out.data(), data.data(), data.size());  // little-endian hosts only (every phone and x86)
  } else if (fmt == "int8" || fmt == "int4" || mixed) {
    if (gs < 1 || d % gs) throw BundleError("item table spec invalid: group_size " + std::to_string(gs) +
                                            " must divide d=" + std::to_string(d));
    if (fmt != "int8" && d % 2) throw BundleError("item table spec invalid: int4 rows need an even d");  // mixed too
    if (!mixed) {
      int64_t want = int_table_bytes(n, d, fmt == "int8", gs, half_scales);
      if (int64_t(data.size()) != want) throw BundleError(table_size_error(data.size(), want, n, d, fmt));
      decode_int_rows(data.data(), n, d, fmt == "int8", gs, half_scales, nullptr, out.data());
    } else {  // table_codec._decode_mixed: row mask (LSB first), the int8 rows' table, the int4 rows' table
      int64_t mb = (n + 7) / 8;
      if (int64_t(data.size()) < mb)
        throw BundleError("item table has " + std::to_string(data.size()) + " bytes, shorter than the " +
                          std::to_string(mb) + "-byte row mask of " + std::to_string(n) + " rows");
      auto bit = [&](int64_t i) { return (data[size_t(i / 8)] >> (i % 8)) & 1; };
      for (int64_t i = n; i < 8 * mb; i++)
        if (bit(i)) throw BundleError("item table row mask sets padding bits past the last row");
      std::vector<int64_t> wide, narrow;  // each part's rows, in index order
      for (int64_t i = 0; i < n; i++) (bit(i) ? wide : narrow).push_back(i);
      int64_t r = int64_t(wide.size()), a = int_table_bytes(r, d, true, gs, half_scales);
      int64_t want = mb + a + int_table_bytes(n - r, d, false, gs, half_scales);
      if (int64_t(data.size()) != want)
        throw BundleError(table_size_error(data.size(), want, n, d, "mixed with " + std::to_string(r) + " int8 rows"));
      decode_int_rows(data.data() + mb, r, d, true, gs, half_scales, wide.data(), out.data());
      decode_int_rows(data.data() + mb + a, n - r, d, false, gs, half_scales, narrow.data(), out.data());
    }
  } else {
    throw BundleError("table format " + fmt + " unknown");
  }
  for (float v : out) if (!std::isfinite(v)) throw BundleError("item table holds non-finite values");
  return out;
}

}  // namespace mr
