// metarec-native: the native runtime from the shell, through the C API only (what an app links).
//   metarec-native bench BUNDLE_DIR PUBLIC_KEY_PEM [--users N] [--recommends M] [--state PATH] [--from STATE]
//     --from: start from a copy of a prepared state file (e.g. one holding a neighbour pack, bench/bench_native.py)
//   metarec-native recommend BUNDLE_DIR PUBLIC_KEY_PEM STATE USER NOW K
// bench prints one JSON line: open_ms, first_recommend_us; adapt_after_record_p50_us: the adaptation a user's
// first recommend after its new events triggers (the headline adaptation figure); adapt_p50_us: re-adaptations on
// a new scene hour (no event between); adapt_after_pause_p50_us, the control: a new-hour re-adaptation after the
// thread slept as long as that user's records took (blocked, no I/O, no SQLite: what other processes do to the
// caches meanwhile); record_p50_us (durable: one fsync each); recommend_p50_us (warm: cached users, same hour,
// score's rank method); peak RSS (VmHWM). Adaptation times are the library's own (mr_stats: all of adapt_user).
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "metarec.h"

namespace {
using Clock = std::chrono::steady_clock;
double us_since(Clock::time_point t0) { return std::chrono::duration<double, std::micro>(Clock::now() - t0).count(); }

std::string read_text(const char *path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

long status_kib(const char *field) {  // VmHWM / VmRSS from /proc/self/status, in KiB
  std::ifstream f("/proc/self/status");
  std::string line;
  size_t n = std::strlen(field);
  while (std::getline(f, line))
    if (line.compare(0, n, field) == 0) return std::atol(line.c_str() + n + 1);
  return -1;
}

double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

int fail(mr_recommender *r, const char *what, int rc) {
  std::fprintf(stderr, "%s failed (%d): %s\n", what, rc, mr_last_error(r));
  mr_close(r);
  return 1;
}

int bench(const char *bundle, const char *key_path, long users, long recommends, std::string state,
          const std::string &from) {
  if (state.empty()) state = "/tmp/metarec-native-bench-" + std::to_string(getpid()) + ".db";
  for (const char *suffix : {"", "-wal", "-shm"}) std::remove((state + suffix).c_str());
  if (!from.empty()) {  // a closed state file (its WAL checkpointed into it): the bytes are the whole state
    std::ifstream src(from, std::ios::binary);
    std::ofstream dst(state, std::ios::binary);
    if (!src || !(dst << src.rdbuf())) return std::fprintf(stderr, "cannot copy state %s\n", from.c_str()), 1;
  }
  std::string pem = read_text(key_path);
  auto t0 = Clock::now();
  mr_recommender *r = nullptr;
  int rc = mr_open(bundle, state.c_str(), pem.c_str(), &r);
  double open_ms = us_since(t0) / 1000.0;
  if (rc) return fail(r, "open", rc);
  int has_table = 0;  // the item-item term's table in use (a stored pack or the bundle's neighbors.bin)
  char kind[16];
  mr_neighbor_spec(r, kind, sizeof kind, nullptr, nullptr, nullptr, nullptr, &has_table);
  int k_max, n_items;
  long long serial;
  mr_info(r, &k_max, &n_items, &serial);
  // the catalog's ids, from a cold user's answer is not enough: read them by asking for k_max of a fresh user
  const int k = std::min(10, k_max);
  std::vector<const char *> ids(static_cast<size_t>(k_max));
  std::vector<float> scores(static_cast<size_t>(k_max));
  int n = 0;
  const double now = 893000000.0;  // inside ML-100K's time range: a realistic scene
  t0 = Clock::now();
  if ((rc = mr_recommend(r, "cold-user", now, k_max, ids.data(), scores.data(), &n))) return fail(r, "recommend", rc);
  double first_us = us_since(t0);
  std::vector<std::string> items(ids.begin(), ids.begin() + n);  // k_max real item ids to record
  std::vector<double> adapt_us, after_record_us, after_pause_us, adapt_rec_us, rec_us, record_us;
  unsigned seed = 12345;
  for (long u = 0; u < users; u++) {
    std::string user = "u" + std::to_string(u);
    int events = 1 + int(u % 3);  // K = 1..3, the cold-start regime
    auto t_rec = Clock::now();
    for (int e = 0; e < events; e++) {
      seed = seed * 1103515245u + 12345u;
      const std::string &item = items[(seed >> 8) % items.size()];
      auto t2 = Clock::now();
      if ((rc = mr_record(r, user.c_str(), item.c_str(), now - 3600.0 * (events - e), nullptr)))
        return fail(r, "record", rc);
      record_us.push_back(us_since(t2));
    }
    double records_us = us_since(t_rec);
    long long before, ns;
    mr_stats(r, &before, &ns);
    auto t1 = Clock::now();
    if ((rc = mr_recommend(r, user.c_str(), now, k, ids.data(), scores.data(), &n))) return fail(r, "recommend", rc);
    adapt_rec_us.push_back(us_since(t1));
    long long after;
    mr_stats(r, &after, &ns);
    if (after == before + 1) after_record_us.push_back(double(ns) / 1000.0);
    for (int h = 1; h <= 2; h++) {  // a new scene hour re-adapts (adapt_scene "query"): adaptation without an fsync
      if ((rc = mr_recommend(r, user.c_str(), now + 3600.0 * h, k, ids.data(), scores.data(), &n)))
        return fail(r, "recommend", rc);
      mr_stats(r, &before, &ns);
      if (before == after + h) adapt_us.push_back(double(ns) / 1000.0);
    }
    // the control: block as long as the records did, without I/O, then re-adapt for a new hour
    struct timespec pause = {time_t(records_us / 1e6), long(std::fmod(records_us, 1e6) * 1000.0)};
    nanosleep(&pause, nullptr);
    if ((rc = mr_recommend(r, user.c_str(), now + 3600.0 * 3, k, ids.data(), scores.data(), &n)))
      return fail(r, "recommend", rc);
    mr_stats(r, &before, &ns);
    if (before == after + 3) after_pause_us.push_back(double(ns) / 1000.0);
  }
  long hot = std::max(1L, std::min(users, 16L));  // warm: cached users, same scene hour -> score's rank method
  for (long i = 0; i < recommends; i++) {
    std::string user = "u" + std::to_string(users - 1 - (i % hot));
    auto t1 = Clock::now();
    if ((rc = mr_recommend(r, user.c_str(), now + double(i % 60), k, ids.data(), scores.data(), &n)))
      return fail(r, "recommend", rc);
    rec_us.push_back(us_since(t1));
  }
  mr_close(r);
  for (const char *suffix : {"", "-wal", "-shm"}) std::remove((state + suffix).c_str());
  std::printf("{\"open_ms\": %.3f, \"first_recommend_us\": %.1f, \"users\": %ld, \"adaptations\": %zu, "
              "\"adapt_after_record_p50_us\": %.2f, \"adapt_after_record_p99_us\": %.2f, "
              "\"adapt_plus_recommend_after_record_p50_us\": %.2f, \"adapt_p50_us\": %.2f, \"adapt_p99_us\": %.2f, "
              "\"adapt_after_pause_p50_us\": %.2f, \"record_p50_us\": %.1f, "
              "\"recommends\": %ld, \"recommend_p50_us\": %.2f, \"recommend_p99_us\": %.2f, "
              "\"peak_rss_kib\": %ld, \"peak_rss_mib\": %.2f, \"neighbor_table\": %d}\n",
              open_ms, first_us, users, adapt_us.size() + after_record_us.size() + after_pause_us.size(),
              pct(after_record_us, 0.5), pct(after_record_us, 0.99), pct(adapt_rec_us, 0.5), pct(adapt_us, 0.5),
              pct(adapt_us, 0.99), pct(after_pause_us, 0.5), pct(record_us, 0.5), recommends, pct(rec_us, 0.5),
              pct(rec_us, 0.99), status_kib("VmHWM:"), double(status_kib("VmHWM:")) / 1024.0, has_table);
  return 0;
}

int recommend(char **a) {
  std::string pem = read_text(a[1]);
  mr_recommender *r = nullptr;
  int rc = mr_open(a[0], a[2], pem.c_str(), &r);
  if (rc) return fail(r, "open", rc);
  int k = std::atoi(a[5]);
  std::vector<const char *> ids(size_t(std::max(k, 1)));
  std::vector<float> scores(ids.size());
  int n = 0;
  if ((rc = mr_recommend(r, a[3], std::atof(a[4]), k, ids.data(), scores.data(), &n))) return fail(r, "recommend", rc);
  for (int i = 0; i < n; i++) std::printf("%s\t%.6f\n", ids[size_t(i)], double(scores[size_t(i)]));
  mr_close(r);
  return 0;
}
}  // namespace

int main(int argc, char **argv) {
  if (argc >= 4 && std::strcmp(argv[1], "bench") == 0) {
    long users = 1000, recommends = 10000;
    std::string state, from;
    for (int i = 4; i + 1 < argc; i += 2) {
      if (!std::strcmp(argv[i], "--users")) users = std::atol(argv[i + 1]);
      else if (!std::strcmp(argv[i], "--recommends")) recommends = std::atol(argv[i + 1]);
      else if (!std::strcmp(argv[i], "--state")) state = argv[i + 1];
      else if (!std::strcmp(argv[i], "--from")) from = argv[i + 1];
      else return std::fprintf(stderr, "unknown option %s\n", argv[i]), 2;
    }
    return bench(argv[2], argv[3], users, recommends, state, from);
  }
  if (argc == 8 && std::strcmp(argv[1], "recommend") == 0) return recommend(argv + 2);
  std::fprintf(stderr, "usage: metarec-native bench BUNDLE_DIR PUBLIC_KEY_PEM [--users N] [--recommends M] "
                       "[--state PATH] [--from STATE]\n"
                       "       metarec-native recommend BUNDLE_DIR PUBLIC_KEY_PEM STATE USER NOW K\n");
  return 2;
}
