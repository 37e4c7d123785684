// The field checks every manifest block uses and the optional term blocks, runtime_py/manifest_terms.py in C++.
#include <cmath>
#include <tuple>

#include "manifest_terms.h"

namespace mr {

namespace {
std::string joined(const std::vector<std::string> &v) {
  std::string s;
  for (auto &x : v) s += (s.empty() ? "'" : ", '") + x + "'";
  return "[" + s + "]";
}
}  // namespace

// manifest.py `_no_unknown`: an object's keys must be among the dataclass's fields and hold every required one
// (a field the reader does not know would otherwise be ignored here while the Python runtime refuses the bundle)
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

}  // namespace mr
