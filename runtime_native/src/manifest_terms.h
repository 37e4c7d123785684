// What bundle.cpp and manifest_terms.cpp share: the manifest's field checks, str fields and term blocks.
#pragma once

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "internal.h"

namespace mr {
using json = nlohmann::json;

using Fields = std::set<std::string>;
// manifest.py `_no_unknown`: BundleError for a field outside required + optional, or a required one missing
void check_fields(const json &o, const std::string &where, const Fields &required, const Fields &optional);
// the term blocks' field sets, defined with the others in bundle.cpp (test_native_manifest_fields.py reads them there)
extern const Fields kNeighborsRequired, kHistoryOptional, kOnboardingRequired;
// o[k] as a str, dflt when absent; BundleError for another type
std::string str(const json &o, const char *k, const std::string &dflt = "");

// manifest_terms.py's NeighborSpec, HistoryWeights and OnboardingSpec blocks; BundleError if one is invalid
NeighborSpec neighbor_spec(const json &o);
HistoryWeights history_weights(const json &o);
OnboardingSpec onboarding_spec(const json &o);
}  // namespace mr
