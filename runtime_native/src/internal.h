// Shared declarations of the native runtime: errors, the verified bundle, the state store, the scene clock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace mr {

// The Python runtime's error hierarchy (runtime_py/errors.py), mapped to the C API's return codes.
struct Error : std::runtime_error {
  int code;
  Error(int c, const std::string &m) : std::runtime_error(m), code(c) {}
};
struct BundleError : Error { explicit BundleError(const std::string &m) : Error(1, m) {} };
struct InputError : Error { explicit InputError(const std::string &m) : Error(2, m) {} };
struct StateError : Error { explicit StateError(const std::string &m) : Error(3, m) {} };

using Bytes = std::vector<uint8_t>;

struct Shapes { int64_t N, d, L, F, P, k_max, S, R; };

struct ProgramIO {
  std::string file, method, codec, prepare_method, unrolled_method, rank_method;
  std::vector<std::string> inputs, outputs, prepare_outputs, step_inputs, rank_inputs;
  int64_t inner_steps = 0;
  double lr = 0;
};

// The item-item term (runtime_py/manifest.py NeighborSpec): `file` "" = no table shipped, the app sets one.
struct NeighborSpec { std::string file, kind; int64_t m = 0, last = 0; double decay = 0, weight = 0; };
// Each item's m neighbours, row-major (N, m): ids in [-1, N) (-1 = none), weights finite and >= 0.
struct NeighborTable { std::vector<int32_t> ids; std::vector<float> weights; };
// Weights by history length (manifest.py HistoryWeights): entry at_length(K) of each; `file` "" iff no popularity.
struct HistoryWeights { std::vector<double> term, popularity; std::string file; };
// manifest.py at_length: the entry for a user with k known events (the last covers longer histories), else dflt.
inline double at_length(const std::vector<double> &v, size_t k, double dflt) {
  return v.empty() ? dflt : v[std::min(std::max<size_t>(k, 1), v.size()) - 1];
}

// The onboarding term (manifest.py OnboardingSpec): weight by history length (at_length; 1..16 entries in [0, 64],
// one > 0), span and window_days (how the server counts its packs: informational here). The counts come in packs
// (mr_set_onboarding), persisted in the state file and restored at open: until one is set the term is off.
struct OnboardingSpec { std::vector<double> weight; int64_t span = 0; double window_days = 0; };
constexpr int64_t kOnboardingRows = 11;  // a pack's rows: history lengths K = 0..10, the last also for longer ones
// manifest.py onboarding_row: the pack row a user with k known events reads
inline size_t onboarding_row(size_t k) { return std::min<size_t>(k, size_t(kOnboardingRows - 1)); }
// manifest_terms.py onboarding_weight: entry min(k, len - 1) of the weights, K = 0 first (0 when empty)
inline double onboarding_weight(const std::vector<double> &v, size_t k) {
  return v.empty() ? 0.0 : v[std::min<size_t>(k, v.size() - 1)];
}

struct SceneSpec { double utc_offset_hours = -6.0; int64_t holiday_window_days = 3, hour_resolution_minutes = 60; };

// A verified, decoded bundle (runtime_py/bundle.py's Bundle): nothing is read from disk after open.
struct Bundle {
  int64_t serial = 0;
  Shapes sh{};
  ProgramIO score, adapt;  // adapt: default (inner_steps 0) when the bundle has no adapt program
  bool has_adapt = true;  // false: manifest programs = {"score"}, no adapt.pte (every head is phi0)
  SceneSpec scene;
  std::vector<int64_t> negatives;
  std::vector<std::string> item_ids;
  std::vector<float> table;  // (N, d) dequantized once
  std::vector<float> head0;  // (P,)
  Bytes score_pte, adapt_pte;  // inflated program bytes (ExecuTorch reads constants from them: keep alive);
                               // adapt_pte empty without an adapt program
  bool query_scene = true, right_aligned = true;
  std::optional<std::string> trending_json;  // the pack shipped with the bundle, if any
  std::optional<NeighborSpec> neighbors;     // the item-item term, if the export chose one
  std::optional<NeighborTable> neighbor_table;  // its neighbors.bin, when shipped (padding: id 0, weight 0)
  std::optional<HistoryWeights> by_history;     // weights by history length, if the export chose them
  std::vector<float> popularity;                // (N,) popularity.bin when by_history.popularity is set, else empty
  std::optional<OnboardingSpec> onboarding;     // the onboarding term, if the export chose one (its counts: packs)
};

// Verify and decode (signature over the raw manifest, canonical form, schema, every file's size + sha256).
Bundle open_bundle(const std::string &dir, const std::string &public_key_pem);

// The codecs of runtime_py/bundle_codecs.py.
// fmt float32 / int8 / int4 / mixed (row mask, int8 rows, int4 rows); half_scales: the int formats' scales are IEEE
// half (item_table.scale_dtype "float16"), else float32
std::vector<float> decode_table(const Bytes &data, int64_t n, int64_t d, const std::string &fmt, int64_t group,
                                bool half_scales = false);
Bytes inflate(const uint8_t *data, size_t n, size_t limit, const std::string &what);
NeighborTable decode_neighbors(const Bytes &data, int64_t n, int64_t m, const std::string &name);
std::vector<float> decode_popularity(const Bytes &data, int64_t n, const std::string &name);
// bundle_codecs.decode_floats: n float32, or n IEEE halves (half) widened exactly to float32
std::vector<float> decode_floats(const Bytes &b, size_t n, const std::string &name, bool half = false);
float half_to_float(uint16_t h);
// What packs are bound to (bundle_codecs.catalog_digest): sha256 hex of the ids joined by "\n".
std::string catalog_digest(const std::vector<std::string> &item_ids);
std::string sha256_hex(const Bytes &b);  // lowercase hex (libsodium): a bundle file's, a catalog digest
// float -> IEEE binary16 bits, round to nearest even (numpy's astype(float16): overflow is inf)
uint16_t float_to_half(float f);
// Python's repr of a float (shortest round-trip digits, '1e+16' / '0.0001' / '881250949.0'), as json.dumps writes it
std::string py_float_repr(double v);
// strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), as Python decodes a str
bool valid_utf8(const std::string &v);

// A neighbour pack's bytes (runtime_py/neighbors.py NeighborPack.to_bytes / from_bytes): one line of canonical JSON
// {"at", "catalog", "kind", "m", "n", "version": 1}, a newline, then neighbors.bin's bytes (int32 ids, float16 weights).
struct NeighborPackHead { double at = 0; std::string catalog, kind; int64_t m = 0, n = 0; };
Bytes encode_neighbor_pack(const NeighborPackHead &h, const int32_t *ids, const uint16_t *half_weights);
NeighborTable decode_neighbor_pack(const Bytes &data, NeighborPackHead *head);  // BundleError if malformed

// Trending pack JSON (runtime_py/trending.py): {"at", "counts", "version": 1}; log1p counts per item index.
// `catalog`: version 2 packs (what the Python runtime stores) are bound to a catalog digest; "" for version 1
struct TrendPack { double at = 0; std::map<std::string, double> counts; std::string catalog; };
TrendPack parse_trending(const std::string &json);  // BundleError if malformed
std::string trending_to_json(const TrendPack &p);   // canonical bytes as Python writes them

// Onboarding pack (runtime_py/onboarding.py OnboardingPack): kOnboardingRows rows of item id -> count, bound to a
// catalog. encode_onboarding: bundle_codecs.encode_onboarding's canonical JSON byte for byte (what store.py keeps in
// its `onboarding_pack` row); ids must be valid UTF-8 (InputError). decode_onboarding: BundleError if malformed.
struct OnboardingPack { double at = 0; std::string catalog; std::vector<std::map<std::string, double>> rows; };
std::string encode_onboarding(const OnboardingPack &p);
OnboardingPack decode_onboarding(const Bytes &data);

// runtime_py/scene.py: scene_features for one timestamp (15 floats).
void scene_features(const SceneSpec &spec, double ts, float *out);
int64_t scene_slot(const SceneSpec &spec, double ts, int64_t *day);

struct Event { std::string event_id, item_id; double ts; int64_t seq; };
struct HeadRow { int64_t serial, event_seq; Bytes scene, head; };
struct PendingHead { int64_t serial, event_seq; Bytes scene, head; };

// runtime_py/store.py's database, same schema (STORE_SCHEMA 2), WAL + synchronous=FULL.
class Store {
 public:
  explicit Store(const std::string &path);
  ~Store();
  // true if added (its seq in *seq_out), false for a known event id; durable when it returns
  bool add_event(const std::string &eid, const std::string &user, const std::string &item, double ts,
                 const std::map<std::string, PendingHead> &heads, int64_t *seq_out = nullptr);
  std::vector<Event> events(const std::string &user);
  int64_t count_events(const std::string &user);
  void forget(const std::string &user);
  std::optional<HeadRow> get_head(const std::string &user);
  void put_heads(const std::map<std::string, PendingHead> &heads);
  int64_t max_serial();
  void accept_serial(int64_t serial);
  std::optional<std::string> get_trending();
  void put_trending(const std::string &pack);
  int64_t count_deltas(int64_t serial);  // catalog delta rows stored for bundle `serial` (Python-only, store.py)
  // the neighbour pack in use (store.py's `neighbor_pack` table, the same bytes and row checksum as the Python
  // runtime's): StateError if the row fails its checksum or is malformed (corrupt)
  std::optional<Bytes> get_neighbor_pack();
  void put_neighbor_pack(const Bytes &pack);  // durable (synchronous=FULL) when it returns
  // the onboarding pack in use (store.py's `onboarding_pack` table: OnboardingPack.to_json bytes, the same chk)
  std::optional<Bytes> get_onboarding_pack();
  void put_onboarding_pack(const Bytes &pack);

 private:
  sqlite3 *db_ = nullptr;
  // the hot statements (record, user load, begin / commit), prepared once: re-parsing SQL on every record cost
  // instructions and evicted the adaptation's code from the caches (docs/native.md, "Adaptation after a record")
  std::map<const char *, sqlite3_stmt *> cache_;
  void exec(const char *sql);
  sqlite3_stmt *prep(const char *sql);
  sqlite3_stmt *cached(const char *sql);  // `sql` must be a string literal (the key is its address)
  void step_done(const char *sql);
  void put_pack_row(const char *sql, const Bytes &pack);  // (1, pack, chk) in its own transaction
  std::optional<Bytes> get_pack_row(const char *sql, const char *what);  // StateError if malformed or corrupt
  void begin();
  void commit();
  void rollback();
  void write_heads(const std::map<std::string, PendingHead> &heads);
  void migrate_1_to_2();
};

}  // namespace mr
