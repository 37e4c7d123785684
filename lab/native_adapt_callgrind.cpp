// Where the native adaptation's time goes, counted by callgrind (instructions are reproducible on a shared
// machine; wall time is not). One callgrind dump per call: modes
//   adapt  - with --toggle-collect='mr::Recommender::adapt_user*': adapt_user alone, per recommend
//   call   - with --collect-atstart=no: each whole mr_recommend (reload + adapt + score)
//   rec    - with --collect-atstart=no: each user's 1..3 mr_record calls together
// Per user (12, 1..3 events each): records, then recommend at hour 0 (the adaptation after new events, dump
// "uN-h0"), hour 1 and hour 2 (re-adaptations for a new scene hour, no event between: "uN-h1", "uN-h2").
// Build and run (from the repository root, after `make native` and `make demo`):
//   g++ -O2 -Iruntime_native/include lab/native_adapt_callgrind.cpp -o /tmp/cg-drv -Lbuild/native -lmetarec \
//       -Wl,-rpath,$PWD/build/native
//   mkdir -p /tmp/cg && valgrind --tool=callgrind --callgrind-out-file=/tmp/cg/cg \
//       --toggle-collect='mr::Recommender::adapt_user*' /tmp/cg-drv artifacts/bundle artifacts/keys/public.pem adapt
//   for f in $(ls -v /tmp/cg/cg.*); do echo "$(grep '^desc: Trigger' $f | sed 's/.*Request: //') \
//       $(grep '^summary:' $f)"; done | grep -v before
#include <valgrind/callgrind.h>
#include <cstdio>
#include <unistd.h>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include "metarec.h"
int main(int argc, char **argv) {
  bool call = argc > 3 && !strcmp(argv[3], "call"), rec = argc > 3 && !strcmp(argv[3], "rec");
  std::ifstream f(argv[2]); std::stringstream s; s << f.rdbuf(); std::string pem = s.str();
  std::string st = "/tmp/metarec-cg-" + std::to_string(getpid()) + ".db";
  mr_recommender *r = nullptr;
  if (mr_open(argv[1], st.c_str(), pem.c_str(), &r)) return 1;
  const char *ids[20]; float sc[20]; int n = 0; double now = 893000000.0;
  mr_recommend(r, "cold", now, 20, ids, sc, &n);
  std::vector<std::string> items(ids, ids + n);
  for (int u = 0; u < 12; u++) {
    std::string user = "u" + std::to_string(u);
    int ev = 1 + u % 3;
    if (rec) CALLGRIND_DUMP_STATS_AT("before");
    if (rec) CALLGRIND_TOGGLE_COLLECT;
    for (int e = 0; e < ev; e++) mr_record(r, user.c_str(), items[(u * 7 + e * 3) % items.size()].c_str(), now - 3600.0 * (ev - e), nullptr);
    if (rec) { CALLGRIND_TOGGLE_COLLECT; char t[64]; snprintf(t, 64, "%s-rec%d", user.c_str(), ev); CALLGRIND_DUMP_STATS_AT(t); continue; }
    for (int h = 0; h <= 2; h++) {
      CALLGRIND_DUMP_STATS_AT("before");
      if (call) CALLGRIND_TOGGLE_COLLECT;
      mr_recommend(r, user.c_str(), now + 3600.0 * h, 10, ids, sc, &n);
      if (call) CALLGRIND_TOGGLE_COLLECT;
      char tag[64]; snprintf(tag, 64, "%s-h%d", user.c_str(), h);
      CALLGRIND_DUMP_STATS_AT(tag);
    }
  }
  mr_close(r);
  for (const char *sfx : {"", "-wal", "-shm"}) std::remove((st + sfx).c_str());
}
