// Bundle verification and decoding, runtime_py/bundle.py + manifest.py in C++ (the codecs: bundle_codecs.cpp, the
// term blocks: manifest_terms.cpp): the signature over the raw manifest bytes first, then the schema, then every
// listed file's size and sha256 from the same bytes that are decoded (nothing re-read). Crypto is libsodium's (no
// hand-written crypto): OpenSSL's libcrypto did the same but kept 3.6 MiB resident once initialised, a quarter of
// the 16 MiB budget; libsodium ~0.1 MiB.
#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "internal.h"
#include "manifest_terms.h"

namespace mr {

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
}  // namespace

std::string sha256_hex(const Bytes &b) {
  unsigned char md[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(md, b.data(), b.size());
  static const char *hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : md) s += hex[c >> 4], s += hex[c & 15];
  return s;
}

// The field sets of manifest.py's dataclasses (required, then those with a default); tests/native/
// test_native_manifest_fields.py compares them with Python's, reading this file (the term blocks': manifest_terms.h).
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

std::string str(const json &o, const char *k, const std::string &dflt) {
  auto it = o.find(k);
  if (it == o.end()) return dflt;
  if (!it->is_string()) throw BundleError(std::string("invalid manifest: ") + k + " must be a str");
  return it->get<std::string>();
}

namespace {
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