// The C API (include/metarec.h): argument checks, one lock per recommender, exceptions to return codes. Nothing
// throws across the boundary: a C++ exception unwinding into Kotlin/Swift frames would abort the app.
#include <cmath>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "metarec.h"
#include "recommender.h"

struct mr_recommender {
  std::unique_ptr<mr::Recommender> rec;
  std::string error;
  std::vector<int64_t> ids;
  std::vector<float> scores;
  std::mutex lock;
};

namespace {
template <class F>
int guarded(mr_recommender *r, F &&f, int fallback = MR_STATE_ERROR) {
  std::lock_guard<std::mutex> g(r->lock);
  r->error.clear();
  try {
    f();
    return MR_OK;
  } catch (const mr::Error &e) {
    r->error = e.what();
    return e.code;
  } catch (const nlohmann::json::exception &e) {
    r->error = std::string("invalid bundle JSON: ") + e.what();
    return MR_BUNDLE_ERROR;
  } catch (const std::bad_alloc &) {
    r->error = "out of memory";
    return fallback;
  } catch (const std::exception &e) {
    r->error = e.what();
    return fallback;
  }
}

int input_error(mr_recommender *r, const char *msg) {
  if (r) {
    std::lock_guard<std::mutex> g(r->lock);
    r->error = msg;
  }
  return MR_INPUT_ERROR;
}

bool ready(mr_recommender *r) { return r && r->rec; }
}  // namespace

extern "C" {

int mr_open(const char *bundle_dir, const char *state_path, const char *pem, mr_recommender **out) {
  if (!out) return MR_INPUT_ERROR;
  *out = nullptr;
  auto *r = new (std::nothrow) mr_recommender();
  if (!r) return MR_STATE_ERROR;
  *out = r;
  if (!bundle_dir || !state_path || !pem) return input_error(r, "bundle_dir, state_path and the key must not be NULL");
  // anything unexpected while opening broke while reading the bundle (as Recommender.open in Python)
  return guarded(r, [&] { r->rec = std::make_unique<mr::Recommender>(bundle_dir, state_path, pem); },
                 MR_BUNDLE_ERROR);
}

int mr_record(mr_recommender *r, const char *user_id, const char *item_id, double timestamp, const char *event_id) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  if (!user_id || !item_id) return input_error(r, "user_id and item_id must not be NULL");
  return guarded(r, [&] { r->rec->record(user_id, item_id, timestamp, event_id); });
}

int mr_set_trending(mr_recommender *r, double at, size_t n, const char *const *item_ids, const double *counts) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  if (n > 0 && (!item_ids || !counts)) return input_error(r, "item_ids and counts must not be NULL");
  if (n > (size_t(1) << 26)) return input_error(r, "too many trending items");
  if (!std::isfinite(at)) return input_error(r, "trending pack time must be finite");
  mr::TrendPack pack;
  pack.at = at;
  for (size_t i = 0; i < n; i++) {
    if (!item_ids[i] || !*item_ids[i]) return input_error(r, "trending item ids must be non-empty strings");
    if (!std::isfinite(counts[i]) || counts[i] < 0) return input_error(r, "trending counts must be finite and >= 0");
    pack.counts[item_ids[i]] = counts[i];
  }
  return guarded(r, [&] { r->rec->set_trending(pack); });
}

int mr_set_neighbors(mr_recommender *r, double at, const char *kind, int m, long long n_rows, const int32_t *ids,
                     const float *weights) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  if (!kind || !ids || !weights) return input_error(r, "kind, ids and weights must not be NULL");
  // kind, m and n_rows are checked against the bundle's term before ids / weights are read
  return guarded(r, [&] { r->rec->set_neighbors(at, kind, m, n_rows, ids, weights); });
}

int mr_neighbor_spec(const mr_recommender *r, char *kind_out, size_t kind_cap, int *m_out, int *last_out,
                     double *decay_out, double *weight_out, int *has_table_out) {
  if (!r || !r->rec || !kind_out || kind_cap < 16) return MR_INPUT_ERROR;
  std::lock_guard<std::mutex> g(const_cast<mr_recommender *>(r)->lock);  // the table may be replaced meanwhile
  const auto &nb = r->rec->bundle().neighbors;
  std::string kind = nb ? nb->kind : "";
  std::memcpy(kind_out, kind.c_str(), kind.size() + 1);  // "transition" | "cooc" | "": fits 16 bytes
  if (m_out) *m_out = nb ? int(nb->m) : 0;
  if (last_out) *last_out = nb ? int(nb->last) : 0;
  if (decay_out) *decay_out = nb ? nb->decay : 0.0;
  if (weight_out) *weight_out = nb ? nb->weight : 0.0;
  if (has_table_out) *has_table_out = r->rec->has_neighbor_table() ? 1 : 0;
  return MR_OK;
}

int mr_set_onboarding(mr_recommender *r, double at, size_t n_rows, const size_t *row_lengths,
                      const char *const *item_ids, const double *counts) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  // the bundle's term and the row count first: no other argument is read for a pack that cannot be used
  if (!r->rec->bundle().onboarding)
    return input_error(r, "this bundle has no onboarding term (its export chose none on validation users)");
  if (n_rows != size_t(mr::kOnboardingRows))
    return input_error(r, "an onboarding pack has exactly 11 rows (history lengths 0..10)");
  if (!row_lengths) return input_error(r, "row_lengths must not be NULL");
  size_t total = 0;
  for (size_t i = 0; i < n_rows; i++)
    if (row_lengths[i] > (size_t(1) << 26) || (total += row_lengths[i]) > (size_t(1) << 26))
      return input_error(r, "too many onboarding entries");
  if (total > 0 && (!item_ids || !counts)) return input_error(r, "item_ids and counts must not be NULL");
  return guarded(r, [&] { r->rec->set_onboarding(at, n_rows, row_lengths, item_ids, counts); });
}

int mr_onboarding_spec(const mr_recommender *r, double *weights_out, size_t cap, size_t *n_weights_out,
                       int *span_out, double *window_days_out) {
  if (!r || !r->rec || !n_weights_out || (cap > 0 && !weights_out)) return MR_INPUT_ERROR;
  const auto &ob = r->rec->bundle().onboarding;  // fixed at open: no lock needed
  size_t n = ob ? ob->weight.size() : 0;
  for (size_t i = 0; i < n && i < cap; i++) weights_out[i] = ob->weight[i];
  *n_weights_out = n;
  if (span_out) *span_out = ob ? int(ob->span) : 0;
  if (window_days_out) *window_days_out = ob ? ob->window_days : 0.0;
  return MR_OK;
}

int mr_catalog(const mr_recommender *r, char *out, size_t cap) {
  if (!r || !r->rec || !out || cap < 65) return MR_INPUT_ERROR;
  std::string d = mr::catalog_digest(r->rec->bundle().item_ids);
  std::memcpy(out, d.c_str(), 65);
  return MR_OK;
}

int mr_recommend(mr_recommender *r, const char *user_id, double now, int k, const char **item_ids_out,
                 float *scores_out, int *n_out) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  if (!user_id || !item_ids_out || !scores_out || !n_out) return input_error(r, "NULL argument");
  *n_out = 0;
  return guarded(r, [&] {
    r->rec->recommend(user_id, now, k, r->ids, r->scores);
    const auto &names = r->rec->bundle().item_ids;  // live as long as the recommender: valid past the next call
    for (size_t i = 0; i < r->ids.size(); i++) item_ids_out[i] = names[size_t(r->ids[i])].c_str(),
                                               scores_out[i] = r->scores[i];
    *n_out = int(r->ids.size());
  });
}

int mr_forget(mr_recommender *r, const char *user_id) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  if (!user_id) return input_error(r, "user_id must not be NULL");
  return guarded(r, [&] { r->rec->forget(user_id); });
}

int mr_info(const mr_recommender *r, int *k_max_out, int *n_items_out, long long *serial_out) {
  if (!r || !r->rec || !k_max_out || !n_items_out || !serial_out) return MR_INPUT_ERROR;
  const auto &b = r->rec->bundle();
  *k_max_out = int(b.sh.k_max), *n_items_out = int(b.sh.N), *serial_out = b.serial;
  return MR_OK;
}

int mr_count_events(mr_recommender *r, const char *user_id, long long *n_out) {
  if (!ready(r)) return r ? (r->error = "recommender is not open", MR_STATE_ERROR) : MR_INPUT_ERROR;
  if (!user_id || !n_out) return input_error(r, "NULL argument");
  return guarded(r, [&] { *n_out = r->rec->count_events(user_id); });
}

int mr_stats(const mr_recommender *r, long long *adaptations_out, long long *last_adapt_ns_out) {
  if (!r || !r->rec || !adaptations_out || !last_adapt_ns_out) return MR_INPUT_ERROR;
  *adaptations_out = r->rec->adaptations, *last_adapt_ns_out = r->rec->last_adapt_ns;
  return MR_OK;
}

const char *mr_last_error(const mr_recommender *r) { return r ? r->error.c_str() : "recommender is NULL"; }

void mr_close(mr_recommender *r) {
  if (!r) return;
  try {
    if (r->rec) r->rec->close();
  } catch (...) {  // heads are a cache: losing the deferred ones costs one re-adaptation, never an event
  }
  delete r;
}
}
