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
}  // namespace

Recommender::~Recommender() {
  try {
    close();
  } catch (...) {  // a destructor must not throw; mr_close reports through its caller only
  }
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
