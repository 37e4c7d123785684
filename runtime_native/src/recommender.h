// The native Recommender: runtime_py/recommender.py's semantics over the verified bundle, the store and the
// ExecuTorch methods (score forward / rank, adapt prepare + the stateless unrolled steps).
#pragma once

#include <list>
#include <memory>
#include <unordered_set>

#include "et.h"

namespace mr {

struct User {
  int64_t seq = 0, stored_seq = -1;
  std::vector<int64_t> idx;  // recorded catalog items, in time order
  std::vector<std::pair<double, int64_t>> at;  // (ts, seq) of each idx entry: where a late event goes
  std::unordered_set<int64_t> excluded;
  bool has_last = false;
  double last_ts = 0;
  std::vector<float> hist, mask, exclude, head;  // (L, d), (L,), (N,), (P,)
  bool has_head = false, any_scene = false;      // any_scene: phi0 for a user without items, valid in every scene
  Bytes head_scene;
  uint64_t args_version = ~0ull;  // (head, trend) version forward's cached outputs belong to
  bool rank_valid = false;
  Bytes rank_key;
  std::vector<float> vec, offset;  // forward's user_vec (d,) and offset (N,), for the rank method
  uint64_t nb_version = ~0ull;     // the neighbour table nb_idx / nb_val were computed from
  std::vector<int64_t> nb_idx;     // the item-item term for this history: item indices and values
  std::vector<float> nb_val;
};

class Recommender {
 public:
  Recommender(const std::string &bundle_dir, const std::string &state_path, const std::string &pem);
  ~Recommender();
  void record(const std::string &user, const std::string &item, double ts, const char *event_id);
  void set_trending(const TrendPack &pack);
  // replace the item-item term's table ((n_rows, m) ids + weights); InputError, nothing changed, if it does not fit
  void set_neighbors(double at, const std::string &kind, int64_t m, int64_t n_rows, const int32_t *ids,
                     const float *weights);
  bool has_neighbor_table() const { return nb_.has_value(); }
  // the onboarding term's counts (runtime_py/onboarding.py OnboardingPack): n_rows (must be kOnboardingRows) rows
  // of row_lengths[r] (item id, count) entries, concatenated; unknown ids ignored (a repeated id: the last count).
  // Persisted (store.py's `onboarding_pack` row, the Python runtime's bytes) and restored at open. InputError, nothing
  // changed, without a term, for another row count, a bad count or an id that is not UTF-8.
  void set_onboarding(double at, size_t n_rows, const size_t *row_lengths, const char *const *item_ids,
                      const double *counts);
  bool has_onboarding_pack() const { return !ob_rows_.empty(); }
  // top-k (indices, scores) into out vectors
  void recommend(const std::string &user, double now, int k, std::vector<int64_t> &ids, std::vector<float> &scores);
  void forget(const std::string &user);
  void close();
  int64_t count_events(const std::string &user);
  const Bundle &bundle() const { return b_; }
  // for the bench: count and wall time of the last adaptation (all of adapt_user: inputs, both methods, the head)
  int64_t adaptations = 0, last_adapt_ns = 0;

 private:
  Bundle b_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<EtProgram> score_prog_, adapt_prog_;
  std::unique_ptr<EtMethod> fwd_, rank_, prepare_, unrolled_;
  std::unordered_map<std::string, int64_t> index_;
  std::vector<float> neg_, trend_, scene_, adapt_scene_, rank_user_vec_, rank_offset_;
  std::vector<std::pair<std::string, int>> fwd_in_, rank_in_, adapt_in_;  // (name, input slot)
  int o_scores_ = 0, o_ids_ = 1, o_vec_ = -1, o_off_ = -1, o_packed_ = 0;
  uint64_t args_version_ = 0;  // bumped by a new trend pack or neighbour table: every cached forward output is stale
  std::optional<NeighborTable> nb_;  // the item-item term's table in use (the bundle's, or set by the app)
  uint64_t nb_version_ = 0;
  std::vector<double> nb_acc_;  // (N,) scratch of neighbor_term, zero between calls
  std::vector<uint8_t> nb_seen_;
  std::vector<int32_t> nb_touched_;
  std::vector<float> ob_rows_;  // (kOnboardingRows, N) float32 log1p(count) of the onboarding pack; empty: none set
  int64_t scene_day_ = INT64_MIN, scene_slot_ = INT64_MIN;
  std::map<std::string, PendingHead> pending_;
  std::list<std::pair<std::string, std::unique_ptr<User>>> lru_;  // most recent first
  bool closed_ = false;

  void check_programs();
  void set_trend(const std::optional<TrendPack> &pack);
  User &load_user(const std::string &user);
  void drop_user(const std::string &user);
  void add_to_user(User &u, int64_t item, double ts, int64_t seq);
  void adapt_user(const std::string &user, User &u);
  void slots(const std::vector<int64_t> &idx, int64_t size, std::vector<float> &vecs, std::vector<float> &mask);
  void fill_scene(double now);
  void neighbor_term(User &u);
  std::vector<float> onboarding_rows(const OnboardingPack &p) const;
  void run_rank(User &u);
};
}  // namespace mr
