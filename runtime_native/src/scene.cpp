// runtime_py/scene.py's scene_features for one timestamp, and the trending and onboarding packs' JSON: the same
// float64 arithmetic as numpy, so the scene vector (and the head cache keyed by its bytes) is bit-identical.
#include <cmath>
#include <nlohmann/json.hpp>

#include "internal.h"

namespace mr {
namespace {
// days since 1970-01-01 <-> civil date (proleptic Gregorian), H. Hinnant's algorithms
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1, doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}
int64_t year_of(int64_t z) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097, doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365, doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153, m = mp + (mp < 10 ? 3 : -9);
  return yoe + era * 400 + (m <= 2);
}
int64_t pymod(int64_t a, int64_t b) { return ((a % b) + b) % b; }
int64_t weekday(int64_t days) { return pymod(days + 3, 7); }  // Mon=0 (1970-01-01 was a Thursday)

int64_t nth_weekday(int64_t y, int64_t month, int64_t wd, int n) {
  if (n > 0) {
    int64_t d = days_from_civil(y, month, 1);
    return d + pymod(wd - weekday(d), 7) + 7 * (n - 1);
  }
  int64_t d = days_from_civil(y + (month == 12), month % 12 + 1, 1) - 1;
  return d - pymod(weekday(d) - wd, 7);
}

bool is_holiday(int64_t day, int64_t window) {
  int64_t year = year_of(day);
  for (int64_t y = year - 1; y <= year + 1; y++) {
    int64_t hol[] = {days_from_civil(y, 1, 1), nth_weekday(y, 1, 0, 3), nth_weekday(y, 2, 0, 3),
                     nth_weekday(y, 5, 0, -1), days_from_civil(y, 7, 4), nth_weekday(y, 9, 0, 1),
                     nth_weekday(y, 10, 0, 2), days_from_civil(y, 11, 11), nth_weekday(y, 11, 3, 4),
                     days_from_civil(y, 12, 25), y >= 2021 ? days_from_civil(y, 6, 19) : INT64_MIN / 2};
    for (int64_t h : hol) if (std::llabs(day - h) <= window) return true;
  }
  return false;
}

double local_hour(const SceneSpec &s, double local) {
  double sec = std::fmod(local, 86400.0);
  if (sec < 0) sec += 86400.0;  // Python's % takes the divisor's sign
  if (s.hour_resolution_minutes) {
    double step = 60.0 * double(s.hour_resolution_minutes);
    sec = std::floor(sec / step) * step;
  }
  return sec / 3600.0;
}
}  // namespace

int64_t scene_slot(const SceneSpec &s, double ts, int64_t *day) {
  double local = ts + s.utc_offset_hours * 3600.0;
  *day = int64_t(std::floor(local / 86400.0));
  double sec = std::fmod(local, 86400.0);
  if (sec < 0) sec += 86400.0;
  if (s.hour_resolution_minutes) return int64_t(sec / (60.0 * double(s.hour_resolution_minutes)));
  return -1;  // exact time: no slot shares a scene
}

void scene_features(const SceneSpec &s, double ts, float *out) {
  double local = ts + s.utc_offset_hours * 3600.0;
  double hour = local_hour(s, local);
  int64_t days = int64_t(std::floor(local / 86400.0)), wd = weekday(days);
  int64_t part = std::min<int64_t>(int64_t(std::floor(hour / 6.0)), 3);
  for (int i = 0; i < 15; i++) out[i] = 0.0f;
  out[0] = float(std::sin(2 * M_PI * hour / 24.0));
  out[1] = float(std::cos(2 * M_PI * hour / 24.0));
  out[2 + part] = 1.0f;
  out[6 + wd] = 1.0f;
  out[13] = wd >= 5 ? 1.0f : 0.0f;
  out[14] = is_holiday(days, s.holiday_window_days) ? 1.0f : 0.0f;
}

TrendPack parse_trending(const std::string &text) {
  using json = nlohmann::json;
  TrendPack p;
  try {
    json d = json::parse(text);
    // bundle_codecs.py decode_pack: version 1 has exactly at, counts, version; version 2 adds catalog (a digest)
    if (!d.is_object() || !d.contains("version") || !d["version"].is_number_integer() ||
        (d["version"] != 1 && d["version"] != 2))
      throw BundleError("trending pack version unsupported (this runtime reads 1 and 2)");
    size_t fields = d["version"] == 2 ? 4 : 3;
    if (d.size() != fields || !d.contains("at") || !d.contains("counts") || (fields == 4 && !d.contains("catalog")))
      throw BundleError("a trending pack has exactly the fields at, counts, version (and catalog in version 2)");
    if (fields == 4) {
      if (!d["catalog"].is_string()) throw BundleError("trending pack catalog must be a string");
      p.catalog = d["catalog"].get<std::string>();
      if (!p.catalog.empty() && p.catalog.size() != 64) throw BundleError("trending pack catalog is not a digest");
    }
    if (!d["at"].is_number() || !std::isfinite(d["at"].get<double>())) throw BundleError("trending pack time");
    p.at = d["at"].get<double>();
    if (!d["counts"].is_object()) throw BundleError("trending counts must be an object");
    for (auto it = d["counts"].begin(); it != d["counts"].end(); ++it) {
      if (it.key().empty() || !it->is_number()) throw BundleError("trending count is not a number");
      double c = it->get<double>();
      if (!std::isfinite(c) || c < 0) throw BundleError("trending count must be finite and >= 0");
      p.counts[it.key()] = c;
    }
  } catch (const nlohmann::json::exception &e) {
    throw BundleError(std::string("invalid trending pack: ") + e.what());
  }
  return p;
}

std::string trending_to_json(const TrendPack &p) {
  nlohmann::json d = {{"at", p.at}, {"counts", p.counts}, {"version", 1}};
  return d.dump(-1, ' ', true);
}

// bundle_codecs.encode_onboarding: json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True) of
// {"at", "catalog", "kind": "onboarding", "rows", "version": 1}; floats as Python's repr, each row's ids in code point
// order (std::map's byte order on UTF-8), escaped as Python escapes them (nlohmann's ensure_ascii: \u00xx for control
// characters and DEL, lowercase \uxxxx and surrogate pairs past ASCII)
std::string encode_onboarding(const OnboardingPack &p) {
  auto str = [](const std::string &v) {
    if (!valid_utf8(v)) throw InputError("onboarding item ids must be UTF-8 text");
    return nlohmann::json(v).dump(-1, ' ', true);
  };
  std::string out = "{\"at\":" + py_float_repr(p.at) + ",\"catalog\":" + str(p.catalog);
  out += ",\"kind\":\"onboarding\",\"rows\":[";
  for (size_t r = 0; r < p.rows.size(); r++) {
    out += r ? ",{" : "{";
    bool first = true;
    for (auto &[id, c] : p.rows[r]) {
      out += (first ? "" : ",") + str(id) + ":" + py_float_repr(c);
      first = false;
    }
    out += "}";
  }
  return out + "],\"version\":1}";
}

// bundle_codecs.decode_onboarding + OnboardingPack.from_rows' checks: exactly the five fields, version 1, kind
// "onboarding", a 64-char catalog, kOnboardingRows objects of non-empty id -> finite count >= 0, a finite time
OnboardingPack decode_onboarding(const Bytes &data) {
  using json = nlohmann::json;
  OnboardingPack p;
  try {
    json d = json::parse(data.begin(), data.end());
    if (!d.is_object() || d.size() != 5 || !d.contains("at") || !d.contains("catalog") || !d.contains("kind") ||
        !d.contains("rows") || !d.contains("version"))
      throw BundleError("invalid onboarding pack: exactly the fields at, catalog, kind, rows, version");
    if (!d["version"].is_number_integer() || d["version"] != 1 || d["kind"] != "onboarding")
      throw BundleError("invalid onboarding pack: version / kind unsupported (this runtime reads 1, onboarding)");
    if (!d["catalog"].is_string() || d["catalog"].get<std::string>().size() != 64)
      throw BundleError("invalid onboarding pack: not bound to a catalog");
    if (!d["at"].is_number() || !std::isfinite(d["at"].get<double>()))
      throw BundleError("invalid onboarding pack: time is not a finite number");
    if (!d["rows"].is_array() || d["rows"].size() != size_t(kOnboardingRows))
      throw BundleError("invalid onboarding pack: rows must be a list of 11 objects");
    p.at = d["at"].get<double>(), p.catalog = d["catalog"].get<std::string>();
    for (auto &row : d["rows"]) {
      if (!row.is_object()) throw BundleError("invalid onboarding pack: rows must be a list of 11 objects");
      auto &out = p.rows.emplace_back();
      for (auto it = row.begin(); it != row.end(); ++it) {
        if (it.key().empty() || !it->is_number()) throw BundleError("invalid onboarding pack: a count is not a number");
        double c = it->get<double>();
        if (!std::isfinite(c) || c < 0) throw BundleError("invalid onboarding pack: counts must be finite and >= 0");
        out[it.key()] = c;
      }
    }
  } catch (const json::exception &e) {
    throw BundleError(std::string("invalid onboarding pack: ") + e.what());
  }
  return p;
}
}  // namespace mr
