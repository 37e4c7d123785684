// runtime_py/recommender.py in C++: lazy adaptation (on new events, a newer bundle serial or, with adapt_scene
// "query", a new scene hour), heads deferred to the next durable write, forward's user vector and offset kept so
// a repeat call in the same scene runs only the rank method.
#include "recommender.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>

namespace mr {
namespace {
constexpr size_t kMaxCachedUsers = 32;  // as the Python runtime: each holds (N,) exclude and offset arrays

std::string new_event_id() {
  static std::random_device rd;  // uuid4().hex's shape: 32 random hex digits
  static const char *hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 8; i++) {
    uint32_t v = rd();
    for (int j = 0; j < 4; j++) s += hex[(v >> (8 * j)) & 15], s += hex[(v >> (8 * j + 4)) & 15];
  }
  return s;
}

int slot_of(const std::vector<std::string> &names, const std::string &n) {
  for (size_t i = 0; i < names.size(); i++) if (names[i] == n) return int(i);
  return -1;
}

bool finite(const std::vector<float> &v) {
  for (float x : v) if (!std::isfinite(x)) return false;
  return true;
}

// The calendar the scene is computed on (Python's datetime) spans years 1..9999: a time outside it (e.g. in
// milliseconds) has no scene, so it is refused up front instead of failing at a later recommend.
void check_time(double t, const char *what) {
  if (!std::isfinite(t)) throw InputError(std::string(what) + " must be finite");
  if (t < -62135596800.0 || t > 253402300799.0)
    throw InputError(std::string(what) + " is outside years 1..9999 (seconds since the epoch expected, not ms)");
}

void check_id(const std::string &v, const char *what) {
  if (v.empty()) throw InputError(std::string(what) + " must be a non-empty string");
  if (!valid_utf8(v))  // the store keeps text as Python does (a str), and checksums its repr
    throw InputError(std::string(what) + " is not valid UTF-8 text");
}

// numpy's float64 sum (pairwise, 8 accumulators, blocks of 128): the term's std is the Python runtime's to the bit
double pairwise_sum(const double *a, size_t n) {
  if (n < 8) {
    double res = 0.;
    for (size_t i = 0; i < n; i++) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; j++) r[j] = a[j];
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; j++) r[j] += a[i + size_t(j)];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}
}  // namespace

Recommender::Recommender(const std::string &dir, const std::string &state, const std::string &pem) {
  store_ = std::make_unique<Store>(state);
  b_ = open_bundle(dir, pem);
  if (int64_t n = store_->count_deltas(b_.serial))  // rows of older serials: deleted by accept_serial, as store.py
    throw StateError("state database holds catalog deltas (" + std::to_string(n) + ") for bundle serial " +
                     std::to_string(b_.serial) + ", which the native runtime does not serve; open it with the "
                     "Python runtime or export a new bundle");
  if (b_.serial < store_->max_serial())
    throw BundleError("bundle serial " + std::to_string(b_.serial) + " is older than " +
                      std::to_string(store_->max_serial()) + ", already seen by this state (rollback)");
  const Shapes &sh = b_.sh;
  score_prog_ = std::make_unique<EtProgram>(b_.score_pte, "score");
  fwd_ = std::make_unique<EtMethod>(*score_prog_, b_.score.method);
  if (!b_.score.rank_method.empty()) rank_ = std::make_unique<EtMethod>(*score_prog_, b_.score.rank_method);
  if (b_.has_adapt) {  // no adapt program: nothing loaded, adapt_user serves phi0 as with inner_steps 0
    adapt_prog_ = std::make_unique<EtProgram>(b_.adapt_pte, "adapt");
    prepare_ = std::make_unique<EtMethod>(*adapt_prog_, b_.adapt.prepare_method);
    unrolled_ = std::make_unique<EtMethod>(*adapt_prog_, b_.adapt.unrolled_method);
  }
  check_programs();
  for (size_t i = 0; i < b_.item_ids.size(); i++) index_[b_.item_ids[i]] = int64_t(i);
  for (int64_t j : b_.negatives)
    neg_.insert(neg_.end(), b_.table.begin() + j * sh.d, b_.table.begin() + (j + 1) * sh.d);
  scene_.assign(size_t(sh.F), 0.f), adapt_scene_.assign(size_t(sh.F), 0.f);
  std::optional<TrendPack> pack;
  if (auto stored = store_->get_trending()) {
    try {
      pack = parse_trending(*stored);
      if (!pack->catalog.empty() && pack->catalog != catalog_digest(b_.item_ids))
        pack.reset();  // as recommender.py _initial_pack: a pack for an older catalog is dropped
    } catch (const BundleError &) {  // a pack we wrote cannot be malformed unless the disk lied: drop it
    }
  }
  if (!pack && b_.trending_json) pack = parse_trending(*b_.trending_json);
  set_trend(pack);
  if (b_.neighbors) {  // the bundle's table, if shipped, unless a stored pack (mr_set_neighbors) replaces it
    nb_ = std::move(b_.neighbor_table), b_.neighbor_table.reset();
    nb_acc_.assign(size_t(sh.N), 0.0), nb_seen_.assign(size_t(sh.N), 0);
    if (auto stored = store_->get_neighbor_pack()) {  // a row failing its checksum: StateError, as store.py
      try {  // as recommender.py: a pack for another catalog, kind or m (another bundle's term) is dropped
        NeighborPackHead h;
        NeighborTable t = decode_neighbor_pack(*stored, &h);
        if (h.catalog == catalog_digest(b_.item_ids) && h.n == sh.N && h.kind == b_.neighbors->kind &&
            h.m == b_.neighbors->m)
          nb_ = std::move(t);
      } catch (const BundleError &) {  // malformed (the disk lied): dropped, the bundle's table stays
      }
    }
  }
  if (b_.onboarding)  // the stored onboarding pack likewise (recommender.py / packs.py _restore_onboarding)
    if (auto stored = store_->get_onboarding_pack()) {  // a row failing its checksum: StateError, as store.py
      try {  // one for another catalog is dropped, as a malformed one: the term stays off until a pack is set
        OnboardingPack p = decode_onboarding(*stored);
        if (p.catalog == catalog_digest(b_.item_ids)) ob_rows_ = onboarding_rows(p);
      } catch (const BundleError &) {
      }
    }
  store_->accept_serial(b_.serial);  // only once the bundle has proven usable
}

Recommender::~Recommender() {
  try {
    close();
  } catch (...) {  // a destructor must not throw; mr_close reports through its caller only
  }
}

void Recommender::check_programs() {
  const Shapes &sh = b_.sh;
  std::map<std::string, std::vector<int32_t>> want = {
      {"head", {int32_t(sh.P)}}, {"hist_vecs", {int32_t(sh.L), int32_t(sh.d)}}, {"hist_mask", {int32_t(sh.L)}},
      {"scene", {int32_t(sh.F)}}, {"trend", {int32_t(sh.N)}}, {"exclude", {int32_t(sh.N)}},
      {"table", {int32_t(sh.N), int32_t(sh.d)}}, {"theta0", {int32_t(sh.P)}},
      {"target_vecs", {int32_t(sh.S), int32_t(sh.d)}}, {"target_mask", {int32_t(sh.S)}},
      {"neg_vecs", {int32_t(sh.R), int32_t(sh.d)}}, {"user_vec", {1, int32_t(sh.d)}}, {"offset", {int32_t(sh.N)}}};
  auto check = [&](EtMethod &m, const std::vector<std::string> &names, const char *what,
                   std::vector<std::pair<std::string, int>> &slots) {
    if (m.num_inputs() != names.size())
      throw BundleError(std::string(what) + " program takes " + std::to_string(m.num_inputs()) +
                        " inputs, manifest lists " + std::to_string(names.size()));
    for (size_t i = 0; i < names.size(); i++) {
      if (m.input_sizes(i) != want.at(names[i]) || !m.input_is_float(i))
        throw BundleError(std::string(what) + " input " + names[i] + " does not have the contract's shape");
      slots.emplace_back(names[i], int(i));
    }
  };
  check(*fwd_, b_.score.inputs, "score", fwd_in_);
  if (fwd_->num_outputs() != b_.score.outputs.size()) throw BundleError("score program's outputs differ from manifest");
  o_scores_ = slot_of(b_.score.outputs, "topk_scores"), o_ids_ = slot_of(b_.score.outputs, "topk_ids");
  if (fwd_->output_sizes(size_t(o_ids_)) != std::vector<int32_t>{int32_t(sh.k_max)})
    throw BundleError("score program's top-k size differs from k_max");
  if (rank_) {
    o_vec_ = slot_of(b_.score.outputs, "user_vec"), o_off_ = slot_of(b_.score.outputs, "offset");
    if (o_vec_ < 0 || o_off_ < 0) throw BundleError("a rank method needs outputs user_vec and offset");
    check(*rank_, b_.score.rank_inputs, "rank", rank_in_);
    if (rank_->num_outputs() != 2 || rank_->output_sizes(1) != std::vector<int32_t>{int32_t(sh.k_max)})
      throw BundleError("rank method must return (topk_scores, topk_ids) of size k_max");
  }
  if (!prepare_) return;  // the bundle has no adapt program
  check(*prepare_, b_.adapt.inputs, "adapt", adapt_in_);
  o_packed_ = slot_of(b_.adapt.prepare_outputs, "packed");
  if (o_packed_ < 0 || prepare_->num_outputs() != b_.adapt.prepare_outputs.size() || unrolled_->num_inputs() != 1 ||
      unrolled_->output_sizes(0) != std::vector<int32_t>{int32_t(sh.P)} ||
      unrolled_->input_sizes(0) != prepare_->output_sizes(size_t(o_packed_)))
    throw BundleError("adapt program's prepare / unrolled methods do not fit the contract");
}

void Recommender::set_trend(const std::optional<TrendPack> &pack) {
  std::vector<double> counts(size_t(b_.sh.N), 0.0);
  if (pack)
    for (auto &[item, c] : pack->counts) {
      auto it = index_.find(item);
      if (it != index_.end()) counts[size_t(it->second)] = c;  // items not in the catalog are ignored
    }
  trend_.resize(counts.size());
  for (size_t i = 0; i < counts.size(); i++) trend_[i] = float(std::log1p(counts[i]));
  args_version_++;
}

void Recommender::fill_scene(double now) {
  int64_t day, slot = scene_slot(b_.scene, now, &day);
  if (slot >= 0 && day == scene_day_ && slot == scene_slot_) return;  // whole hours: the scene is cached per slot
  scene_features(b_.scene, now, scene_.data());
  scene_day_ = day, scene_slot_ = slot >= 0 ? slot : INT64_MIN;
}

void Recommender::slots(const std::vector<int64_t> &idx, int64_t size, std::vector<float> &vecs,
                        std::vector<float> &mask) {
  const int64_t d = b_.sh.d, n = std::min<int64_t>(size, int64_t(idx.size()));
  vecs.assign(size_t(size * d), 0.f), mask.assign(size_t(size), 0.f);
  int64_t first = b_.right_aligned ? size - n : 0;
  for (int64_t r = 0; r < n; r++) {
    int64_t item = idx[idx.size() - size_t(n) + size_t(r)];
    std::memcpy(&vecs[size_t((first + r) * d)], &b_.table[size_t(item * d)], size_t(d) * 4);
    mask[size_t(first + r)] = 1.f;
  }
}

void Recommender::drop_user(const std::string &user) {
  for (auto it = lru_.begin(); it != lru_.end(); ++it)
    if (it->first == user) {
      lru_.erase(it);
      return;
    }
}

// A new durable event of a cached user, applied in place: the same state load_user would read back from the store
// (events ordered by (ts, seq); seq grows, so a late event goes after those with its timestamp), minus the query.
void Recommender::add_to_user(User &u, int64_t item, double ts, int64_t seq) {
  auto key = std::make_pair(ts, seq);
  size_t pos = size_t(std::upper_bound(u.at.begin(), u.at.end(), key) - u.at.begin());
  u.at.insert(u.at.begin() + long(pos), key);
  u.idx.insert(u.idx.begin() + long(pos), item);
  u.excluded.insert(item);
  u.exclude[size_t(item)] = 1.f;
  u.seq = std::max(u.seq, seq);
  u.last_ts = u.has_last ? std::max(u.last_ts, ts) : ts, u.has_last = true;
  slots(u.idx, b_.sh.L, u.hist, u.mask);
  u.has_head = false, u.any_scene = false, u.head_scene.clear();  // stale: the next recommend adapts
  u.rank_valid = false, u.args_version = ~0ull, u.nb_version = ~0ull;
}

User &Recommender::load_user(const std::string &user) {
  for (auto it = lru_.begin(); it != lru_.end(); ++it)
    if (it->first == user) {
      if (it != lru_.begin()) lru_.splice(lru_.begin(), lru_, it);
      return *lru_.front().second;
    }
  auto u = std::make_unique<User>();
  for (const Event &e : store_->events(user)) {
    u->seq = std::max(u->seq, e.seq);
    auto it = index_.find(e.item_id);
    if (it == index_.end()) continue;  // dropped by a newer bundle: kept in the log, not scored
    u->idx.push_back(it->second);
    u->at.emplace_back(e.ts, e.seq);
    u->excluded.insert(it->second);
    u->last_ts = u->has_last ? std::max(u->last_ts, e.ts) : e.ts, u->has_last = true;
  }
  slots(u->idx, b_.sh.L, u->hist, u->mask);
  u->exclude.assign(size_t(b_.sh.N), 0.f);
  for (int64_t i : u->idx) u->exclude[size_t(i)] = 1.f;
  if (u->idx.empty()) {  // nothing to adapt on: phi0 in every scene
    u->head = b_.head0, u->has_head = true, u->any_scene = true;
  } else if (auto row = store_->get_head(user)) {
    if (row->serial == b_.serial && row->event_seq == u->seq && int64_t(row->head.size()) == b_.sh.P * 4) {
      std::vector<float> head(size_t(b_.sh.P));
      std::memcpy(head.data(), row->head.data(), row->head.size());
      if (finite(head)) u->head = head, u->has_head = true, u->head_scene = row->scene, u->stored_seq = u->seq,
                        u->any_scene = row->scene.empty();
    }
  }
  lru_.emplace_front(user, std::move(u));
  if (lru_.size() > kMaxCachedUsers) lru_.pop_back();
  return *lru_.front().second;
}

void Recommender::adapt_user(const std::string &user, User &u) {
  auto t0 = std::chrono::steady_clock::now();
  const Shapes &sh = b_.sh;
  Bytes key;
  if (b_.query_scene) {
    adapt_scene_ = scene_;
    key.assign(reinterpret_cast<const uint8_t *>(scene_.data()), reinterpret_cast<const uint8_t *>(scene_.data()) + sh.F * 4);
  } else {
    scene_features(b_.scene, u.last_ts, adapt_scene_.data());
    const char *tag = "last_event";
    key.assign(tag, tag + std::strlen(tag));
  }
  std::vector<float> &head = u.head;  // written in place: no allocation per adaptation
  if (!prepare_ || b_.adapt.inner_steps == 0) {  // no adapt program, or one that runs no step: phi0
    head = b_.head0;
  } else {
    std::vector<float> tv, tm;
    float *target = u.hist.data(), *tmask = u.mask.data();
    if (sh.S != sh.L) slots(u.idx, sh.S, tv, tm), target = tv.data(), tmask = tm.data();
    for (auto &[name, i] : adapt_in_) {
      float *p = name == "theta0" ? const_cast<float *>(b_.head0.data()) : name == "hist_vecs" ? u.hist.data()
               : name == "hist_mask" ? u.mask.data() : name == "scene" ? adapt_scene_.data()
               : name == "target_vecs" ? target : name == "target_mask" ? tmask : neg_.data();
      prepare_->bind(size_t(i), p);  // planned inputs: copied in by run(), so temporaries are fine
    }
    prepare_->run();
    unrolled_->bind(0, const_cast<float *>(prepare_->out_f(size_t(o_packed_))));
    unrolled_->run();
    const float *theta = unrolled_->out_f(0);
    head.assign(theta, theta + sh.P);
  }
  if (!finite(head)) head = b_.head0;  // a diverged step must not poison the store; phi0 is a safe answer
  if (u.stored_seq != u.seq) {  // a re-adaptation for a new scene alone stays in memory: no write per query
    Bytes raw(reinterpret_cast<const uint8_t *>(head.data()), reinterpret_cast<const uint8_t *>(head.data()) + head.size() * 4);
    pending_[user] = PendingHead{b_.serial, u.seq, key, raw};
    u.stored_seq = u.seq;
  }
  u.has_head = true, u.head_scene = std::move(key), u.any_scene = false;
  u.args_version = ~0ull;
  adaptations++;
  last_adapt_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
}

// runtime_py/neighbors.py neighbor_term, same float64 operations in the same order (bincount's per-item sums in
// history order, numpy's pairwise sums over the sorted touched items), so the float32 values are Python's.
void Recommender::neighbor_term(User &u) {
  const NeighborSpec &s = *b_.neighbors;
  u.nb_idx.clear(), u.nb_val.clear(), u.nb_version = nb_version_;
  // by_history.term replaces the spec's weight at this history length; 0 switches the term off there
  double weight = b_.by_history ? at_length(b_.by_history->term, u.idx.size(), s.weight) : s.weight;
  if (!nb_ || u.idx.empty() || !(weight > 0)) return;
  const NeighborTable &t = *nb_;
  size_t n = std::min(size_t(s.last), u.idx.size());
  std::vector<int32_t> &touched = nb_touched_;
  touched.clear();
  for (size_t a = 0; a < n; a++) {  // newest first, age a
    int64_t h = u.idx[u.idx.size() - 1 - a];
    double age = std::pow(s.decay, double(a));
    for (int64_t j = 0; j < s.m; j++) {
      int32_t id = t.ids[size_t(h * s.m + j)];
      if (id < 0) continue;  // a pack's "no neighbour": its weight counts nowhere (as neighbors.py)
      size_t slot = size_t(id);
      if (!nb_seen_[slot]) nb_seen_[slot] = 1, touched.push_back(id);
      nb_acc_[slot] += double(t.weights[size_t(h * s.m + j)]) * age;
    }
  }
  std::sort(touched.begin(), touched.end());
  std::vector<double> c(touched.size()), c2(touched.size());
  for (size_t i = 0; i < touched.size(); i++) {
    size_t slot = size_t(touched[i]);
    c[i] = nb_acc_[slot], c2[i] = c[i] * c[i];
    nb_acc_[slot] = 0.0, nb_seen_[slot] = 0;  // the scratch is clean for the next user
  }
  double mean = pairwise_sum(c.data(), c.size()) / double(b_.sh.N);
  double var = pairwise_sum(c2.data(), c2.size()) / double(b_.sh.N) - mean * mean;
  if (!(var > 0)) return;  // no history or no weight: no term
  double sd = std::sqrt(var);
  for (size_t i = 0; i < touched.size(); i++)
    u.nb_idx.push_back(touched[i]), u.nb_val.push_back(float(weight * c[i] / sd));
}

void Recommender::run_rank(User &u) {
  float *table = const_cast<float *>(b_.table.data());  // score programs only read their inputs
  for (auto &[name, i] : rank_in_)
    rank_->bind(size_t(i), name == "user_vec" ? u.vec.data() : name == "offset" ? u.offset.data() : table);
  rank_->run();
}

void Recommender::recommend(const std::string &user, double now, int k, std::vector<int64_t> &ids,
                            std::vector<float> &scores) {
  if (closed_) throw StateError("this Recommender is closed");
  check_id(user, "user_id");
  check_time(now, "now");
  if (k < 1 || k > b_.sh.N) throw InputError("k must be an int in [1, " + std::to_string(b_.sh.N) + "]");
  if (k > b_.sh.k_max) throw InputError("k exceeds this bundle's top-k capacity k_max=" + std::to_string(b_.sh.k_max));
  User &u = load_user(user);
  fill_scene(now);
  const uint8_t *sk = reinterpret_cast<const uint8_t *>(scene_.data());
  bool same_scene = u.head_scene.size() == size_t(b_.sh.F * 4) && std::memcmp(u.head_scene.data(), sk, u.head_scene.size()) == 0;
  if (!u.any_scene && (!u.has_head || (b_.query_scene && !same_scene))) adapt_user(user, u);
  uint64_t version = args_version_;  // forward's cache is per (head, trend, neighbour table); adapt_user resets it
  bool rank_ok = rank_ && u.args_version == version && u.rank_valid && u.rank_key.size() == size_t(b_.sh.F * 4) &&
                 std::memcmp(u.rank_key.data(), sk, u.rank_key.size()) == 0;
  EtMethod *m;
  int oi = o_ids_, os = o_scores_;
  float *table = const_cast<float *>(b_.table.data());  // score programs only read their inputs
  if (rank_ok) {
    run_rank(u);
    m = rank_.get(), oi = 1, os = 0;
  } else {
    for (auto &[name, i] : fwd_in_) {
      float *p = name == "head" ? u.head.data() : name == "hist_vecs" ? u.hist.data() : name == "hist_mask"
               ? u.mask.data() : name == "scene" ? scene_.data() : name == "trend" ? trend_.data()
               : name == "exclude" ? u.exclude.data() : table;
      fwd_->bind(size_t(i), p);
    }
    fwd_->run();
    m = fwd_.get();
    if (rank_) {  // keep forward's user vector and offset: the next call in this scene runs only `rank`
      const float *v = fwd_->out_f(size_t(o_vec_)), *o = fwd_->out_f(size_t(o_off_));
      u.vec.assign(v, v + b_.sh.d), u.offset.assign(o, o + b_.sh.N);
      u.rank_key.assign(sk, sk + b_.sh.F * 4), u.rank_valid = true, u.args_version = version;
      // forward's top-k lacks these: they join the offset (the onboarding term only once a pack is set)
      if (b_.neighbors || b_.by_history || !ob_rows_.empty()) {
        if (b_.neighbors) {  // cached per (table, history): a new event resets nb_version (add_to_user)
          if (u.nb_version != nb_version_) neighbor_term(u);
          for (size_t j = 0; j < u.nb_idx.size(); j++) u.offset[size_t(u.nb_idx[j])] += u.nb_val[j];
        }
        if (!b_.popularity.empty()) {
          // numpy's offset[:N] += pop_w * pop: the float64 weight rounded to float32, one float32 product, one add
          float w = float(at_length(b_.by_history->popularity, u.idx.size(), 0.0));
          if (w != 0.f)  // no fused multiply-add here: CMakeLists builds with -ffp-contract=off
            for (size_t j = 0; j < b_.popularity.size(); j++) u.offset[j] += w * b_.popularity[j];
        }
        if (!ob_rows_.empty()) {  // the onboarding term, once a pack is set: as numpy, weight rounded to float32
          float w = float(onboarding_weight(b_.onboarding->weight, u.idx.size()));
          const float *row = &ob_rows_[onboarding_row(u.idx.size()) * size_t(b_.sh.N)];
          if (w != 0.f)
            for (size_t j = 0; j < size_t(b_.sh.N); j++) u.offset[j] += w * row[j];
        }
        run_rank(u);
        m = rank_.get(), oi = 1, os = 0;
      }
    }
  }
  const int64_t *top = m->out_l(size_t(oi));
  const float *val = m->out_f(size_t(os));
  ids.clear(), scores.clear();
  for (int64_t j = 0; j < b_.sh.k_max && int(ids.size()) < k; j++) {
    if (top[j] < 0 || top[j] >= b_.sh.N || u.excluded.count(top[j])) continue;  // excluded items sink, rarely reach
    ids.push_back(top[j]), scores.push_back(val[j]);
  }
}

void Recommender::record(const std::string &user, const std::string &item, double ts, const char *event_id) {
  if (closed_) throw StateError("this Recommender is closed");
  check_id(user, "user_id");
  check_id(item, "item_id");
  if (!index_.count(item)) throw InputError("unknown item_id " + item + ": not in this bundle's catalog");
  check_time(ts, "timestamp");
  std::string eid = event_id ? std::string(event_id) : new_event_id();
  check_id(eid, "event_id");
  std::optional<PendingHead> mine;
  if (auto it = pending_.find(user); it != pending_.end()) mine = it->second, pending_.erase(it);
  bool added;
  int64_t seq = -1;
  try {
    added = store_->add_event(eid, user, item, ts, pending_, &seq);  // heads ride along with this durable commit
  } catch (...) {
    if (mine) pending_[user] = *mine;
    throw;
  }
  pending_.clear();
  if (!added && mine) store_->put_heads({{user, *mine}});  // a duplicate changes nothing: the head is current
  if (!added) return;
  // keep the user's events in memory: the next recommend adapts without querying the store again
  for (auto it = lru_.begin(); it != lru_.end(); ++it)
    if (it->first == user) {
      try {
        add_to_user(*it->second, index_.at(item), ts, seq);
      } catch (...) {  // the event is durable; a cache that cannot take it is rebuilt from the store instead
        lru_.erase(it);
      }
      return;
    }
  try {  // not cached: read it once now (with this event) rather than at the next recommend
    load_user(user);
  } catch (...) {  // the event is durable either way; the next recommend reads the store again
  }
}

void Recommender::set_trending(const TrendPack &pack) {
  if (closed_) throw StateError("this Recommender is closed");
  store_->put_trending(trending_to_json(pack));
  set_trend(pack);
}

void Recommender::set_neighbors(double at, const std::string &kind, int64_t m, int64_t n_rows, const int32_t *ids,
                                const float *weights) {
  if (closed_) throw StateError("this Recommender is closed");
  if (!b_.neighbors)
    throw InputError("this bundle has no item-item term (its export chose none on validation users): no neighbour "
                     "pack to set");
  const NeighborSpec &s = *b_.neighbors;
  if (n_rows != b_.sh.N)
    throw InputError("neighbour pack has " + std::to_string(n_rows) + " rows, this bundle's catalog " +
                     std::to_string(b_.sh.N));
  if (kind != s.kind || m != s.m)
    throw InputError("neighbour pack holds " + kind + " x" + std::to_string(m) + ", this bundle's term reads " +
                     s.kind + " x" + std::to_string(s.m));
  // freshness is the app's to check (as for trending packs): a time is only required to be finite
  if (!std::isfinite(at)) throw InputError("neighbour pack time must be finite");
  NeighborTable t;
  t.ids.assign(ids, ids + n_rows * m), t.weights.assign(weights, weights + n_rows * m);
  std::vector<uint16_t> half(t.weights.size());
  for (size_t i = 0; i < t.ids.size(); i++) {
    if (t.ids[i] < -1 || t.ids[i] >= n_rows)
      throw InputError("neighbour pack ids must be item indices in [-1, " + std::to_string(n_rows) + ")");
    if (!std::isfinite(t.weights[i]) || t.weights[i] < 0)
      throw InputError("neighbour pack weights must be finite and >= 0");
    half[i] = float_to_half(t.weights[i]);  // as a NeighborPack holds them: float16, the stored precision
    t.weights[i] = half_to_float(half[i]);
    if (!std::isfinite(t.weights[i]))
      throw InputError("neighbour pack weights must be at most 65504 (float16, the stored precision)");
  }
  // persisted first (store.py's table and bytes, bound to this catalog): a failed write changes nothing
  NeighborPackHead h{at, catalog_digest(b_.item_ids), kind, m, n_rows};
  store_->put_neighbor_pack(encode_neighbor_pack(h, ids, half.data()));
  nb_ = std::move(t);
  nb_version_++, args_version_++;  // every user's term and forward outputs came from the old table
}

void Recommender::set_onboarding(double at, size_t n_rows, const size_t *row_lengths, const char *const *item_ids,
                                 const double *counts) {
  if (closed_) throw StateError("this Recommender is closed");
  if (!b_.onboarding)
    throw InputError("this bundle has no onboarding term (its export chose none on validation users)");
  if (n_rows != size_t(kOnboardingRows))
    throw InputError("an onboarding pack has exactly " + std::to_string(kOnboardingRows) + " rows (history lengths 0.." +
                     std::to_string(kOnboardingRows - 1) + "), got " + std::to_string(n_rows));
  // freshness is the app's to check (as for trending packs): a time is only required to be finite
  if (!std::isfinite(at)) throw InputError("onboarding pack time must be finite");
  OnboardingPack p{at, catalog_digest(b_.item_ids), std::vector<std::map<std::string, double>>(n_rows)};
  size_t e = 0;
  for (size_t r = 0; r < n_rows; r++)
    for (size_t j = 0; j < row_lengths[r]; j++, e++) {
      if (!item_ids[e] || !*item_ids[e]) throw InputError("onboarding item ids must be non-empty strings");
      if (!std::isfinite(counts[e]) || counts[e] < 0) throw InputError("onboarding counts must be finite and >= 0");
      p.rows[r][item_ids[e]] = counts[e];  // a repeated id: its last count (a dict, as OnboardingPack's rows)
    }
  std::vector<float> rows = onboarding_rows(p);  // built whole before anything changes
  // persisted first (store.py's table and bytes, bound to this catalog): a failed write changes nothing
  std::string bytes = encode_onboarding(p);  // InputError for an id that is not UTF-8 (JSON cannot hold it)
  store_->put_onboarding_pack(Bytes(bytes.begin(), bytes.end()));
  ob_rows_ = std::move(rows);
  args_version_++;  // every user's cached offset holds the old counts (or none): forward runs again
}

// (kOnboardingRows, N) float32 log1p(count) of a pack's rows; ids not in the catalog are ignored
std::vector<float> Recommender::onboarding_rows(const OnboardingPack &p) const {
  const size_t n = size_t(b_.sh.N);
  std::vector<double> raw(size_t(kOnboardingRows) * n, 0.0);
  for (size_t r = 0; r < p.rows.size() && r < size_t(kOnboardingRows); r++)
    for (auto &[id, c] : p.rows[r]) {
      auto it = index_.find(id);
      if (it != index_.end()) raw[r * n + size_t(it->second)] = c;
    }
  std::vector<float> rows(raw.size());
  for (size_t i = 0; i < raw.size(); i++) rows[i] = float(std::log1p(raw[i]));  // as numpy: float64 log1p, then f32
  return rows;
}

void Recommender::forget(const std::string &user) {
  if (closed_) throw StateError("this Recommender is closed");
  check_id(user, "user_id");
  pending_.erase(user);  // never write a forgotten user's head back
  store_->forget(user);
  drop_user(user);
}

int64_t Recommender::count_events(const std::string &user) {
  if (closed_) throw StateError("this Recommender is closed");
  check_id(user, "user_id");
  return store_->count_events(user);
}

void Recommender::close() {
  if (closed_) return;
  closed_ = true;
  lru_.clear();
  auto heads = std::move(pending_);
  pending_.clear();
  std::unique_ptr<Store> s = std::move(store_);
  if (s) s->put_heads(heads);
}
}  // namespace mr
