// Bundle verification and decoding, runtime_py/bundle.py + manifest.py + bundle_codecs.py in C++: the signature
// over the raw manifest bytes first, then the schema, then every listed file's size and sha256 from the same
// bytes that are decoded (nothing re-read). Crypto is libsodium's (no hand-written crypto): OpenSSL's libcrypto
// did the same but kept 3.6 MiB resident once initialised, a quarter of the 16 MiB budget; libsodium ~0.1 MiB.
#include <sodium.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <tuple>

#include "internal.h"

namespace mr {
using json = nlohmann::json;

namespace {
constexpr int64_t kSchemaVersion = 2;
constexpr size_t kMaxManifest = 64u << 20;     // as _MAX_MANIFEST_BYTES
constexpr size_t kMaxProgram = size_t(1) << 30;  // as MAX_PROGRAM_BYTES: a bigger program is a zip bomb

Bytes read_file(const std::string &path, size_t limit) {
  struct stat st{};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) throw BundleError("cannot read " + path);
  if (size_t(st.st_size) > limit) throw BundleError(path + " is larger than " + std::to_string(limit) + " bytes");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BundleError("cannot read " + path);
  Bytes b(size_t(st.st_size));
  if (!b.empty() && !f.read(reinterpret_cast<char *>(b.data()), std::streamsize(b.size())))
    throw BundleError("cannot read " + path);
  return b;
}

std::string sha256_hex(const Bytes &b) {
  unsigned char md[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(md, b.data(), b.size());
  static const char *hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : md) s += hex[c >> 4], s += hex[c & 15];
  return s;
}

// The raw 32-byte key of an Ed25519 SubjectPublicKeyInfo PEM: the DER is a fixed 12-byte header + the key (RFC 8410)
std::vector<unsigned char> ed25519_key(const std::string &pem) {
  static const std::string begin = "-----BEGIN PUBLIC KEY-----", end = "-----END PUBLIC KEY-----";
  static const unsigned char spki[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
  size_t a = pem.find(begin), z = pem.find(end);
  if (a == std::string::npos || z == std::string::npos || z < a) throw BundleError("trusted key is not a readable PEM public key");
  std::string b64 = pem.substr(a + begin.size(), z - a - begin.size());
  unsigned char der[256];
  size_t n = 0;
  if (sodium_base642bin(der, sizeof der, b64.data(), b64.size(), " \t\r\n", &n, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0)
    throw BundleError("trusted key is not a readable PEM public key");
  if (n != 44 || std::memcmp(der, spki, sizeof spki) != 0) throw BundleError("trusted key is not an Ed25519 public key");
  return {der + 12, der + 44};
}

void verify_signature(const Bytes &data, const Bytes &sig, const std::string &pem) {
  if (sodium_init() < 0) throw BundleError("libsodium cannot initialise");
  std::vector<unsigned char> key = ed25519_key(pem);
  if (sig.size() != crypto_sign_BYTES) throw BundleError("signature has " + std::to_string(sig.size()) + " bytes, expected 64");
  if (crypto_sign_verify_detached(sig.data(), data.data(), data.size(), key.data()) != 0)
    throw BundleError("signature does not verify with the trusted key");
}

// manifest.py `_no_unknown`: an object's keys must be among the dataclass's fields and hold every required one
// (a field the reader does not know would otherwise be ignored here while the Python runtime refuses the bundle)
using Fields = std::set<std::string>;
std::string joined(const std::vector<std::string> &v) {
  std::string s;
  for (auto &x : v) s += (s.empty() ? "'" : ", '") + x + "'";
  return "[" + s + "]";
}
void check_fields(const json &o, const std::string &where, const Fields &required, const Fields &optional) {
  if (!o.is_object()) throw BundleError("invalid manifest: " + where + " must be an object");
  std::vector<std::string> unknown, missing;
  for (auto it = o.begin(); it != o.end(); ++it)
    if (!required.count(it.key()) && !optional.count(it.key())) unknown.push_back(it.key());
  if (!unknown.empty()) throw BundleError("invalid manifest: unknown " + where + " fields " + joined(unknown));
  for (auto &k : required)
    if (!o.contains(k)) missing.push_back(k);
  if (!missing.empty()) throw BundleError("invalid manifest: missing " + where + " fields " + joined(missing));
}
// The field sets of manifest.py's dataclasses (required, then those with a default); tests/native/
// test_native_manifest_fields.py compares them with Python's.
const Fields kManifestRequired = {"model_version", "serial", "created_at", "shapes", "negatives", "scene_spec",
                                  "files", "programs", "item_table", "head"};
const Fields kManifestOptional = {"item_ids", "item_ids_file", "prototype_labels", "prototypes_file", "trending_file",
                                  "neighbors", "by_history", "onboarding", "dtypes", "configs", "adapt_scene", "history_align",
                                  "schema_version"};
const Fields kShapesRequired = {"N", "d", "L", "F", "P", "k_max", "S", "R"};
const Fields kTableRequired = {"file", "format"}, kTableOptional = {"group_size", "program", "scale_dtype"};
const Fields kHeadRequired = {"file", "param_names", "param_shapes"}, kHeadOptional = {"dtype"};
const Fields kNeighborsRequired = {"file", "m", "last", "decay", "weight", "kind"};
const Fields kHistoryOptional = {"term", "popularity", "file"};
const Fields kOnboardingRequired = {"weight", "span", "window_days"};
const Fields kProgramRequired = {"file", "method", "inputs", "outputs", "codec"};
const Fields kProgramOptional = {"parameters", "inner_steps", "lr", "prepare_method", "prepare_outputs",
                                 "step_inputs", "unrolled_method", "rank_method", "rank_inputs", "chunks",
                                 "columns_method"};
const Fields kFileRequired = {"sha256", "bytes"};

const json &field(const json &o, const char *k) {
  auto it = o.find(k);
  if (it == o.end()) throw BundleError(std::string("invalid manifest: missing field ") + k);
  return *it;
}

int64_t pos_int(const json &o, const char *k) {
  const json &v = field(o, k);
  if (!v.is_number_integer() || v.get<int64_t>() < 1) throw BundleError(std::string("invalid manifest: ") + k);
  return v.get<int64_t>();
}

std::vector<std::string> names(const json &o, const char *k) {
  std::vector<std::string> out;
  auto it = o.find(k);
  if (it == o.end()) return out;
  if (!it->is_array()) throw BundleError(std::string("invalid manifest: ") + k + " must be a list");
  for (auto &v : *it) {
    if (!v.is_string() || v.get<std::string>().empty()) throw BundleError("invalid manifest: bad program I/O name");
    out.push_back(v.get<std::string>());
  }
  if (std::set<std::string>(out.begin(), out.end()).size() != out.size())
    throw BundleError(std::string("invalid manifest: duplicate names in ") + k);
  return out;
}

std::string str(const json &o, const char *k, const std::string &dflt = "") {
  auto it = o.find(k);
  if (it == o.end()) return dflt;
  if (!it->is_string()) throw BundleError(std::string("invalid manifest: ") + k + " must be a str");
  return it->get<std::string>();
}

ProgramIO program(const json &o, const std::string &where, const std::set<std::string> &need_in,
                  const std::set<std::string> &optional_in) {
  check_fields(o, where, kProgramRequired, kProgramOptional);
  ProgramIO p;
  p.file = str(o, "file"), p.method = str(o, "method"), p.codec = str(o, "codec", "?");
  if (p.codec != "none" && p.codec != "zlib") throw BundleError("invalid manifest: program codec " + p.codec);
  p.inputs = names(o, "inputs"), p.outputs = names(o, "outputs");
  p.prepare_method = str(o, "prepare_method"), p.unrolled_method = str(o, "unrolled_method");
  p.rank_method = str(o, "rank_method");
  p.prepare_outputs = names(o, "prepare_outputs"), p.step_inputs = names(o, "step_inputs");
  p.rank_inputs = names(o, "rank_inputs");
  if (o.contains("inner_steps")) p.inner_steps = o["inner_steps"].is_number_integer() ? o["inner_steps"].get<int64_t>() : -1;
  if (p.inner_steps < 0 || p.inner_steps > 3) throw BundleError("invalid manifest: inner_steps must be in [0, 3]");
  if (o.contains("lr")) p.lr = o["lr"].is_number() ? o["lr"].get<double>() : -1;
  if (!(p.lr >= 0) || !std::isfinite(p.lr)) throw BundleError("invalid manifest: lr must be >= 0");
  std::set<std::string> req;
  for (auto &n : p.inputs) if (!optional_in.count(n)) req.insert(n);
  if (req != need_in || req.size() + (p.inputs.size() - req.size()) != p.inputs.size())
    throw BundleError("invalid manifest: program inputs are not the contract's");
  if (p.method.empty()) throw BundleError("invalid manifest: program method must be a non-empty str");
  return p;
}

// manifest.py's NeighborSpec: exactly its six fields, each in its range (an unknown field is refused, as in Python)
NeighborSpec neighbor_spec(const json &o) {
  check_fields(o, "neighbors", kNeighborsRequired, {});
  NeighborSpec s;
  if (!o["file"].is_string() || !o["kind"].is_string()) throw BundleError("invalid manifest: neighbors.file and kind must be str");
  s.file = o["file"].get<std::string>(), s.kind = o["kind"].get<std::string>();
  auto int_in = [&](const char *k, int64_t lo, int64_t hi) {
    const json &v = o[k];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      throw BundleError(std::string("invalid manifest: neighbors.") + k + " must be an int in [" + std::to_string(lo) +
                        ", " + std::to_string(hi) + "]");
    return v.get<int64_t>();
  };
  s.m = int_in("m", 1, 256), s.last = int_in("last", 1, 64);
  for (auto [k, out] : {std::pair<const char *, double *>{"decay", &s.decay}, {"weight", &s.weight}}) {
    const json &v = o[k];
    *out = v.is_number() ? v.get<double>() : NAN;
    if (!std::isfinite(*out) || !(*out > 0))
      throw BundleError(std::string("invalid manifest: neighbors.") + k + " must be a finite number > 0");
  }
  if (s.decay > 1) throw BundleError("invalid manifest: neighbors.decay must be <= 1");
  if (s.kind != "transition" && s.kind != "cooc") throw BundleError("invalid manifest: neighbors.kind " + s.kind + " unknown");
  return s;
}

// manifest.py's HistoryWeights: its three fields, each optional (Python's defaults), unknown ones refused
HistoryWeights history_weights(const json &o) {
  check_fields(o, "by_history", {}, kHistoryOptional);
  HistoryWeights w;
  for (auto [k, lo, out] : {std::tuple<const char *, double, std::vector<double> *>{"term", 0.0, &w.term},
                            {"popularity", -64.0, &w.popularity}}) {
    auto it = o.find(k);
    if (it == o.end()) continue;
    if (!it->is_array() || it->size() > 16)
      throw BundleError(std::string("invalid manifest: by_history.") + k + " must be a list of at most 16 numbers");
    for (const json &v : *it) {
      double x = v.is_number() ? v.get<double>() : NAN;  // a bool is not a number here, as in Python
      if (!std::isfinite(x) || x < lo || x > 64.0)
        throw BundleError(std::string("invalid manifest: by_history.") + k + " values must be finite, in [" +
                          (lo < 0 ? "-64" : "0") + ", 64]");
      out->push_back(x);
    }
  }
  w.file = str(o, "file");
  if (w.file.empty() != w.popularity.empty())
    throw BundleError("invalid manifest: by_history.file is set exactly when popularity is");
  if (w.term.empty() && w.popularity.empty())
    throw BundleError("invalid manifest: by_history holds term or popularity weights (else leave it out)");
  return w;
}
// manifest_terms.py's OnboardingSpec: exactly its three fields, all required, each in its range, at least one
// weight > 0 (an all-zero term is left out by the exporter, never shipped), unknown ones refused
OnboardingSpec onboarding_spec(const json &o) {
  check_fields(o, "onboarding", kOnboardingRequired, {});
  OnboardingSpec s;
  const json &w = o["weight"];
  if (!w.is_array() || w.empty() || w.size() > 16)
    throw BundleError("invalid manifest: onboarding.weight must be a list of 1..16 numbers");
  bool any = false;
  for (const json &v : w) {
    double x = v.is_number() ? v.get<double>() : NAN;  // a bool is not a number here, as in Python
    if (!std::isfinite(x) || x < 0.0 || x > 64.0)
      throw BundleError("invalid manifest: onboarding.weight values must be finite, in [0, 64]");
    any = any || x > 0;
    s.weight.push_back(x);
  }
  if (!any) throw BundleError("invalid manifest: onboarding.weight is 0 at every length (leave the block out)");
  const json &span = o["span"];
  if (!span.is_number_integer() || span.get<int64_t>() < 0 || span.get<int64_t>() > 64 ||
      (span.is_number_unsigned() && span.get<uint64_t>() > 64))
    throw BundleError("invalid manifest: onboarding.span must be an int in [0, 64]");
  s.span = span.get<int64_t>();
  const json &wd = o["window_days"];
  s.window_days = wd.is_number() ? wd.get<double>() : NAN;
  if (!std::isfinite(s.window_days) || !(s.window_days > 0) || s.window_days > 366)
    throw BundleError("invalid manifest: onboarding.window_days must be a number in (0, 366]");
  return s;
}

// manifest.py TableSpec.scale_dtype: absent or "float32" (float32 scales), or "float16" (IEEE half scales) for an
// int table file only; true for half scales. Anything else is refused, as Python refuses it.
bool table_scale_dtype(const json &t) {
  auto it = t.find("scale_dtype");
  if (it == t.end()) return false;
  if (!it->is_string() || (*it != "float32" && *it != "float16"))
    throw BundleError("invalid manifest: item_table.scale_dtype " + it->dump() + " unknown; known: float32, float16");
  if (*it == "float32") return false;
  auto fmt = t.find("format"), prog = t.find("program");
  if ((fmt != t.end() && *fmt == "float32") || (prog != t.end() && !(prog->is_string() && prog->get<std::string>().empty())))
    throw BundleError("invalid manifest: item_table.scale_dtype applies to an int table file only");
  return true;
}
// manifest.py HeadSpec.dtype: absent or "float32" (a float32 head0.bin), or "float16" (IEEE halves widened on
// read); true for halves. Anything else is refused, as Python refuses it.
bool head_dtype_half(const json &h) {
  auto it = h.find("dtype");
  if (it == h.end()) return false;
  if (!it->is_string() || (*it != "float32" && *it != "float16"))
    throw BundleError("invalid manifest: head.dtype " + it->dump() + " unknown; known: float32, float16");
  return *it == "float16";
}
}  // namespace

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
static std::vector<float> decode_floats(const Bytes &b, size_t n, const std::string &name, bool half = false) {
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

static Bytes decode_program(const Bytes &stored, const std::string &codec, const std::string &name) {
  Bytes data = codec == "zlib" ? inflate(stored.data(), stored.size(), kMaxProgram, name) : stored;
  if (data.size() < 8 || data[4] != 'E' || data[5] != 'T') throw BundleError(name + " is not an ExecuTorch program");
  return data;
}

Bundle open_bundle(const std::string &dir, const std::string &pem) {
  struct stat st{};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw BundleError("bundle directory " + dir + " does not exist");
  Bytes raw = read_file(dir + "/manifest.json", kMaxManifest);
  verify_signature(raw, read_file(dir + "/manifest.sig", 1024), pem);
  json m;
  try {
    m = json::parse(raw.begin(), raw.end());
  } catch (const std::exception &e) {
    throw BundleError(std::string("manifest is not valid JSON: ") + e.what());
  }
  if (!m.is_object()) throw BundleError("invalid manifest: must be a JSON object");
  if (!m.contains("schema_version") || m["schema_version"] != kSchemaVersion)
    throw BundleError("manifest schema_version unsupported; this runtime reads 2");
  std::string canon = m.dump(-1, ' ', true);  // sorted keys (std::map), compact, ASCII: Python's canonical form
  if (canon.size() != raw.size() || std::memcmp(canon.data(), raw.data(), raw.size()) != 0)
    throw BundleError("manifest.json is not in canonical form (sorted keys, compact, ASCII)");
  // every object's fields, as manifest.py from_dict does before reading any of them
  check_fields(m, "manifest", kManifestRequired, kManifestOptional);
  check_fields(m["shapes"], "shapes", kShapesRequired, {});
  check_fields(m["item_table"], "item_table", kTableRequired, kTableOptional);
  bool half_scales = table_scale_dtype(m["item_table"]);
  if (str(m["item_table"], "format") == "mixed" && !str(m["item_table"], "program").empty())  // TableSpec's check
    throw BundleError("invalid manifest: a mixed table is a file, never a program's constant");
  check_fields(m["head"], "head", kHeadRequired, kHeadOptional);
  bool half_head = head_dtype_half(m["head"]);
  if (!m["programs"].is_object()) throw BundleError("invalid manifest: programs must be an object");
  // manifest.py: {"score"} or {"score", "adapt"} (export leaves adapt out when the bundle never adapts)
  for (auto it = m["programs"].begin(); it != m["programs"].end(); ++it) {
    if (it.key() != "score" && it.key() != "adapt")
      throw BundleError("invalid manifest: programs must be 'score' and optionally 'adapt', not '" + it.key() + "'");
    check_fields(*it, "programs." + it.key(), kProgramRequired, kProgramOptional);
  }
  if (!m["programs"].contains("score"))
    throw BundleError("invalid manifest: programs must be 'score' and optionally 'adapt'");
  if (!m["files"].is_object()) throw BundleError("invalid manifest: files must be an object");
  for (auto it = m["files"].begin(); it != m["files"].end(); ++it)
    check_fields(*it, "files." + it.key(), kFileRequired, {});
  for (const char *k : {"scene_spec", "dtypes", "configs"})
    if (m.contains(k) && !m[k].is_object()) throw BundleError(std::string("invalid manifest: ") + k + " must be an object");
  Bundle b;
  b.serial = pos_int(m, "serial");
  const json &s = field(m, "shapes");
  b.sh = {pos_int(s, "N"), pos_int(s, "d"), pos_int(s, "L"), pos_int(s, "F"), pos_int(s, "P"), pos_int(s, "k_max"),
          pos_int(s, "S"), pos_int(s, "R")};
  if (b.sh.k_max > b.sh.N || b.sh.F != 15) throw BundleError("invalid manifest: shapes");
  const json &progs = field(m, "programs");
  const json &score_io = field(progs, "score");
  bool has_nb = m.contains("neighbors") && !m["neighbors"].is_null(), has_bh = m.contains("by_history");
  bool has_ob = m.contains("onboarding");  // present means used: null is refused (not an object), as manifest.py
  bool chunked = score_io.is_object() && score_io.contains("chunks") && score_io["chunks"].is_array() &&
                 !score_io["chunks"].empty();
  if (chunked && (has_nb || has_bh || has_ob))  // Python's manifest refusal, named before the large-catalog one
    throw BundleError("invalid manifest: a chunked score program has no rank method to add the item-item term "
                      "(neighbors), weights by history length (by_history) or the onboarding term to");
  if (chunked)
    throw BundleError("large-catalog bundle (chunked score program, table inside score.pte): the native runtime "
                      "does not serve it yet; use the Python runtime or export with --large-catalog-items above N");
  b.score = program(field(progs, "score"), "programs.score",
                    {"head", "hist_vecs", "hist_mask", "scene", "trend", "exclude"}, {"table"});
  b.has_adapt = progs.contains("adapt");  // absent: no adapt.pte, every user's head is phi0 (inner_steps 0)
  if (b.has_adapt) {
    b.adapt = program(field(progs, "adapt"), "programs.adapt",
                      {"theta0", "hist_vecs", "hist_mask", "scene", "target_vecs",
                       "target_mask", "neg_vecs"}, {});
    if (b.adapt.prepare_method.empty() || b.adapt.unrolled_method.empty() || b.adapt.step_inputs.size() != 1)
      throw BundleError("adapt program has no stateless unrolled method (re-export the bundle: the native runtime "
                        "has no training extension)");
    if (b.adapt.step_inputs[0] != "packed" || b.adapt.prepare_outputs.size() != 2)
      throw BundleError("adapt program's prepare must output (packed, scale) feeding the step");
  }
  for (auto &n : {"topk_scores", "topk_ids"})
    if (std::find(b.score.outputs.begin(), b.score.outputs.end(), n) == b.score.outputs.end())
      throw BundleError(std::string("score program must output ") + n);
  b.query_scene = str(m, "adapt_scene", "query") == "query";
  b.right_aligned = str(m, "history_align", "right") == "right";
  const json &neg = field(m, "negatives");
  if (!neg.is_array() || int64_t(neg.size()) != b.sh.R) throw BundleError("invalid manifest: negatives");
  for (auto &v : neg) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= b.sh.N)
      throw BundleError("invalid manifest: negatives must be item indices");
    b.negatives.push_back(v.get<int64_t>());
  }
  const json &sc = field(m, "scene_spec");
  b.scene.utc_offset_hours = field(sc, "utc_offset_hours").get<double>();
  b.scene.holiday_window_days = field(sc, "holiday_window_days").get<int64_t>();
  b.scene.hour_resolution_minutes = sc.value("hour_resolution_minutes", int64_t(0));  // LEGACY: exact time
  if (sc.value("version", 0) != 1) throw BundleError("scene_spec version unsupported");
  // every listed file is verified (size before reading, then sha256), used or not
  static const std::regex plain("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$");
  std::map<std::string, Bytes> data;
  const json &files = field(m, "files");
  if (!files.is_object()) throw BundleError("invalid manifest: files must be an object");
  for (auto it = files.begin(); it != files.end(); ++it) {
    const std::string &name = it.key();
    if (!std::regex_match(name, plain) || name == "manifest.json" || name == "manifest.sig")
      throw BundleError("invalid manifest: bad file name " + name);
    int64_t size = field(*it, "bytes").get<int64_t>();
    std::string hash = field(*it, "sha256").get<std::string>();
    std::string path = dir + "/" + name;
    struct stat fs{};
    if (stat(path.c_str(), &fs) != 0) throw BundleError("bundle file " + name + " is missing");
    if (fs.st_size != size) throw BundleError("bundle file " + name + " has " + std::to_string(fs.st_size) +
                                              " bytes, manifest says " + std::to_string(size));
    Bytes blob = read_file(path, size_t(size));
    if (int64_t(blob.size()) != size || sha256_hex(blob) != hash)
      throw BundleError("bundle file " + name + " does not match its sha256 in the manifest");
    data[name] = std::move(blob);
  }
  auto need = [&](const std::string &name) -> Bytes & {
    auto it = data.find(name);
    if (it == data.end()) throw BundleError("invalid manifest: " + name + " is referenced but not listed in files");
    return it->second;
  };
  const json &ts = field(m, "item_table");
  b.table = decode_table(need(str(ts, "file")), b.sh.N, b.sh.d, str(ts, "format"), ts.value("group_size", int64_t(0)),
                         half_scales);
  const json &hs = field(m, "head");
  b.head0 = decode_floats(need(str(hs, "file")), size_t(b.sh.P), str(hs, "file"), half_head);
  if (m.contains("item_ids_file") && !m["item_ids_file"].is_null()) {
    const Bytes &z = need(m["item_ids_file"].get<std::string>());
    Bytes raw_ids = inflate(z.data(), z.size(), size_t(64 * (b.sh.N + 1) + 1024), "item_ids_file");
    std::string all(raw_ids.begin(), raw_ids.end());
    size_t start = 0;
    for (;;) {
      size_t nl = all.find('\n', start);
      b.item_ids.push_back(all.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  } else {
    for (auto &v : field(m, "item_ids")) b.item_ids.push_back(v.get<std::string>());
  }
  std::set<std::string> uniq(b.item_ids.begin(), b.item_ids.end());
  if (int64_t(b.item_ids.size()) != b.sh.N || int64_t(uniq.size()) != b.sh.N || uniq.count(""))
    throw BundleError("item ids are not N unique non-empty ids");
  // the item-item term (runtime_py/neighbors.py): added to forward's offset, then `rank` ranks (recommender.cpp)
  if (has_nb) {
    b.neighbors = neighbor_spec(m["neighbors"]);
    if (b.score.rank_method.empty())
      throw BundleError("the bundle's item-item term (neighbors) needs score.pte's rank method");
    if (!b.neighbors->file.empty())
      b.neighbor_table = decode_neighbors(need(b.neighbors->file), b.sh.N, b.neighbors->m, b.neighbors->file);
  }
  // weights by history length (null is refused: present means used, as manifest.py)
  if (has_bh) {
    b.by_history = history_weights(m["by_history"]);
    if (!b.by_history->term.empty() && !has_nb)
      throw BundleError("invalid manifest: by_history.term needs the item-item term (neighbors)");
    if (b.score.rank_method.empty())
      throw BundleError("the bundle's weights by history length (by_history) need score.pte's rank method");
    if (!b.by_history->file.empty())
      b.popularity = decode_popularity(need(b.by_history->file), b.sh.N, b.by_history->file);
  }
  // the onboarding term (runtime_py/onboarding.py): weight(K) * log1p(a pack's row K count) joins forward's offset
  if (has_ob) {
    b.onboarding = onboarding_spec(m["onboarding"]);
    if (b.score.rank_method.empty())
      throw BundleError("the bundle's onboarding term needs score.pte's rank method");
  }
  if (m.contains("trending_file") && !m["trending_file"].is_null()) {
    const Bytes &t = need(m["trending_file"].get<std::string>());
    b.trending_json = std::string(t.begin(), t.end());
    parse_trending(*b.trending_json);  // malformed: BundleError now, not at first use
  }
  b.score_pte = decode_program(need(b.score.file), b.score.codec, b.score.file);
  if (b.has_adapt) b.adapt_pte = decode_program(need(b.adapt.file), b.adapt.codec, b.adapt.file);
  return b;
}

}  // namespace mr
