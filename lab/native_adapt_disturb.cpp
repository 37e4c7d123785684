// Is the slow adaptation after a durable record our work or the machine's? Times (mr_stats: all of adapt_user)
// a new-scene-hour re-adaptation of a cached user right after each of: nothing, usleep(1 ms), a write + fsync of
// an unrelated file, a record of ANOTHER user (SQLite + fsync, this user untouched), a record of THIS user, and a
// read of 8 MiB (cache pollution without blocking). Prints the p50 of each over USERS users.
// Build and run (from the repository root, after `make native` and `make demo`):
//   g++ -O2 -Iruntime_native/include lab/native_adapt_disturb.cpp -o /tmp/disturb -Lbuild/native -lmetarec \
//       -Wl,-rpath,$PWD/build/native
//   /tmp/disturb artifacts/bundle artifacts/keys/public.pem 300
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>
#include "metarec.h"
static double med(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }
int main(int argc, char **argv) {
  int users = argc > 3 ? atoi(argv[3]) : 300;
  std::ifstream f(argv[2]); std::stringstream s; s << f.rdbuf(); std::string pem = s.str();
  std::string st = "/tmp/metarec-disturb-" + std::to_string(getpid()) + ".db";
  mr_recommender *r = nullptr;
  if (mr_open(argv[1], st.c_str(), pem.c_str(), &r)) return 1;
  const char *ids[20]; float sc[20]; int n = 0; double now = 893000000.0;
  mr_recommend(r, "cold", now, 20, ids, sc, &n);
  std::vector<std::string> items(ids, ids + n);
  int fd = open("/tmp/metarec-disturb-junk.bin", O_CREAT | O_WRONLY | O_TRUNC, 0644);
  std::map<std::string, std::vector<double>> t;
  const char *modes[] = {"none", "usleep1ms", "fsync_other_file", "record_other_user", "record_same_user", "spin_other_work"};
  std::vector<char> big(8 << 20, 1);
  long long a, ns;
  for (int u = 0; u < users; u++) {
    std::string user = "u" + std::to_string(u);
    mr_record(r, user.c_str(), items[u % items.size()].c_str(), now - 3600.0, nullptr);
    mr_recommend(r, user.c_str(), now, 10, ids, sc, &n);
    int h = 1;
    for (const char *m : modes) {
      if (!strcmp(m, "usleep1ms")) usleep(1000);
      else if (!strcmp(m, "fsync_other_file")) { (void)!write(fd, "x", 1); fsync(fd); }
      else if (!strcmp(m, "record_other_user")) mr_record(r, ("o" + std::to_string(u)).c_str(), items[0].c_str(), now - 10, nullptr);
      else if (!strcmp(m, "record_same_user")) mr_record(r, user.c_str(), items[(u + 3) % items.size()].c_str(), now - 5.0 * h, nullptr);
      else if (!strcmp(m, "spin_other_work")) { volatile long x = 0; for (size_t i = 0; i < big.size(); i += 64) x += big[i]; }
      mr_recommend(r, user.c_str(), now + 3600.0 * h, 10, ids, sc, &n);  // new hour: re-adapts
      mr_stats(r, &a, &ns);
      t[m].push_back(ns / 1000.0);
      h++;
    }
  }
  for (const char *m : modes) printf("%-20s adapt p50 %.1f us\n", m, med(t[m]));
  mr_close(r);
  for (const char *sfx : {"", "-wal", "-shm"}) std::remove((st + sfx).c_str());
}
