// Opening a Recommender: the bundle against the state file, its programs against the contract, the stored packs.
#include "recommender.h"

namespace mr {
namespace {
int slot_of(const std::vector<std::string> &names, const std::string &n) {
  for (size_t i = 0; i < names.size(); i++) if (names[i] == n) return int(i);
  return -1;
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
}  // namespace mr
