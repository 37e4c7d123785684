// The Recommender's packs (runtime_py/packs.py): trending, neighbour and onboarding, and the item-item term.
#include "recommender.h"

#include <algorithm>
#include <cmath>

namespace mr {
namespace {
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
}  // namespace mr
