/* MetaRec Edge native runtime: a C API over ExecuTorch's C++ runtime (docs/native.md).
 *
 * Same bundle, same state file and same answers as the Python runtime (runtime_py/). Every function returns
 * one of the MR_* codes below; on failure mr_last_error(r) says why (for mr_open failures the message is in
 * *out when it is non-NULL, else in mr_open_error()). One recommender is not for concurrent use from several
 * threads without the caller's lock; one state file is not for two processes at once. */
#ifndef METAREC_H
#define METAREC_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define MR_API __attribute__((visibility("default")))
#else
#define MR_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MR_OK 0
#define MR_BUNDLE_ERROR 1 /* the bundle cannot be trusted or used: hash, signature, schema, rollback, programs */
#define MR_INPUT_ERROR 2  /* a caller-supplied argument is invalid; nothing was changed */
#define MR_STATE_ERROR 3  /* the state database cannot be opened, read or written (or the recommender is closed) */

typedef struct mr_recommender mr_recommender;

/* Verify bundle_dir with the Ed25519 public key (PEM text), open/create the SQLite state at state_path and load
 * the programs. On MR_BUNDLE_ERROR / MR_STATE_ERROR *out is a recommender holding only the error message
 * (read it with mr_last_error, then mr_close it), or NULL if even that could not be allocated. */
MR_API int mr_open(const char *bundle_dir, const char *state_path, const char *trusted_public_key_pem,
            mr_recommender **out);
/* Append one interaction; returns MR_OK only once it is durable. event_id NULL: a fresh one is generated; a
 * duplicate event_id is a no-op. Out-of-order timestamps are accepted and ordered by (timestamp, arrival). */
MR_API int mr_record(mr_recommender *r, const char *user_id, const char *item_id, double timestamp, const char *event_id);
/* Replace the trending pack: n (item id, 7-day count) pairs at time `at`; unknown items are ignored. Persisted. */
MR_API int mr_set_trending(mr_recommender *r, double at, size_t n, const char *const *item_ids, const double *counts);
/* Replace the item-item term's table (runtime_py/neighbors.py; a NeighborPack's content): n_rows = the catalog
 * size rows of m neighbours each, row-major: ids[i * m + j] an item index in [-1, N) (-1 = none), weights[i * m + j]
 * finite and >= 0, of `kind` ("transition" | "cooc") at time `at` (finite; freshness is the app's to check).
 * MR_INPUT_ERROR, nothing changed, when the bundle has no term or kind / m / n_rows differ from it (mr_neighbor_spec).
 * Weights are stored as float16 (as a NeighborPack): one above 65504 is MR_INPUT_ERROR. Every user's next recommend
 * uses it. Persisted in the state file as the Python runtime does (its `neighbor_pack` row: NeighborPack bytes
 * bound to this catalog, mr_catalog), durable when it returns, and reloaded at mr_open instead of the bundle's
 * neighbors.bin (a stored pack of another catalog, kind or m is ignored there). */
MR_API int mr_set_neighbors(mr_recommender *r, double at, const char *kind, int m, long long n_rows, const int32_t *ids,
                            const float *weights);
/* The bundle's item-item term: kind into kind_out (kind_cap >= 16 bytes; "" when the bundle has none, then
 * *m_out = 0), m, last, decay, weight (the spec's: a manifest `by_history.term` replaces it per history length),
 * and *has_table_out = 1 while a table is in use (0: the term is off until mr_set_neighbors). Out pointers other
 * than kind_out may be NULL. MR_OK, or MR_INPUT_ERROR for a bad argument. */
MR_API int mr_neighbor_spec(const mr_recommender *r, char *kind_out, size_t kind_cap, int *m_out, int *last_out,
                            double *decay_out, double *weight_out, int *has_table_out);
/* Set the onboarding term's counts (runtime_py/onboarding.py, an OnboardingPack's content): n_rows rows, one per
 * history length K = 0..10 (n_rows must be 11; the last row also serves longer histories), row r holding
 * row_lengths[r] (item id, count) entries; the entries of all rows are concatenated in item_ids / counts. Unknown
 * ids are ignored (a repeated id within a row: its last count). For a user with K known events,
 * weight(K) * log1p(count in row min(K, 10)) joins each item's score (weight: mr_onboarding_spec, indexed as
 * by_history). Persisted in the state file as the Python runtime does (its `onboarding_pack` row: OnboardingPack
 * JSON bound to this catalog, every id given kept), durable when it returns, and restored at mr_open (a stored pack
 * of another catalog is ignored there; until a pack is set the term is off).
 * MR_INPUT_ERROR, nothing changed, when the bundle has no onboarding term, n_rows is not 11, `at` is not finite, an
 * id is NULL, empty or not UTF-8, or a count is negative or not finite. Neither freshness nor the pack's catalog is
 * checked here (as for mr_set_trending: the app's to check, NativeRecommender.set_onboarding checks the catalog).
 * Every user's next recommend uses it. */
MR_API int mr_set_onboarding(mr_recommender *r, double at, size_t n_rows, const size_t *row_lengths,
                             const char *const *item_ids, const double *counts);
/* The bundle's onboarding term: *n_weights_out = its weights' count (0: the bundle has none; at most 16), the first
 * min(count, cap) weights into weights_out (NULL allowed when cap is 0), span and window_days (0 without a term).
 * span_out / window_days_out may be NULL. MR_OK, or MR_INPUT_ERROR for a bad argument. */
MR_API int mr_onboarding_spec(const mr_recommender *r, double *weights_out, size_t cap, size_t *n_weights_out,
                              int *span_out, double *window_days_out);
/* The catalog digest packs are bound to: sha256 hex of the item ids joined by "\n" (64 chars + NUL, cap >= 65). */
MR_API int mr_catalog(const mr_recommender *r, char *out, size_t cap);
/* Top-k (1 <= k <= k_max) items for user_id in the scene at `now`, best first, excluding what the user recorded.
 * item_ids_out / scores_out hold k slots; *n_out gets how many were filled. The strings stay valid until the next
 * call on this recommender. */
MR_API int mr_recommend(mr_recommender *r, const char *user_id, double now, int k, const char **item_ids_out,
                 float *scores_out, int *n_out);
/* Erase the user's events and head. */
MR_API int mr_forget(mr_recommender *r, const char *user_id);
/* The message of the last failed call on r ("" after a success); valid until the next call on r. */
MR_API const char *mr_last_error(const mr_recommender *r);
/* Write deferred heads, close the state database and free r (NULL is a no-op). */
MR_API void mr_close(mr_recommender *r);

/* Extras: the bundle's top-k capacity and catalog size, the accepted bundle serial, and the number of events a
 * user has (for tests and apps). Each returns MR_OK or MR_INPUT_ERROR / MR_STATE_ERROR. */
MR_API int mr_info(const mr_recommender *r, int *k_max_out, int *n_items_out, long long *serial_out);
MR_API int mr_count_events(mr_recommender *r, const char *user_id, long long *n_out);
/* How many adaptations ran since open and the wall time of the last one in ns (for benchmarks). */
MR_API int mr_stats(const mr_recommender *r, long long *adaptations_out, long long *last_adapt_ns_out);

#ifdef __cplusplus
}
#endif
#endif
