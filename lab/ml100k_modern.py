"""Rewrite the cached ML-100K (RecBole atomic files) in MovieLens's current layout: ratings.csv + movies.csv.

Question: does `--dataset DIR` on MovieLens's own layout give the built-in loader's figures? ratings.csv keeps
the source's row order (ties in time are ordered by file position, PROTOCOL v1); movies.csv puts the release
year in the title, as MovieLens does (where ML-100K's year field is empty the year stays unknown: one title
that carries "(1995)" anyway loses it), and writes ML-100K's "unknown" genre as "(no genres listed)".

    python lab/ml100k_modern.py OUT_DIR
    metarec eval --model popularity --dataset OUT_DIR      # == metarec eval --model popularity
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from metarec.sdk.data import fetch_ml100k
from metarec.sdk.tables import _TITLE_YEAR, NO_GENRE


def convert(src: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with open(src / "ml-100k.inter", encoding="utf-8") as f, open(out / "ratings.csv", "w", newline="") as g:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        w = csv.writer(g)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for user, item, rating, ts in rows:
            w.writerow([user, item, rating, ts])
    with open(src / "ml-100k.item", encoding="utf-8") as f, open(out / "movies.csv", "w", newline="") as g:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        w = csv.writer(g)
        w.writerow(["movieId", "title", "genres"])
        for item, title, year, genres in rows:
            names = [NO_GENRE if x == "unknown" else x for x in genres.split()]
            title = f"{title} ({year})" if year.isdigit() else _TITLE_YEAR.sub("", title).rstrip()
            w.writerow([item, title, "|".join(names) or NO_GENRE])
    return out


if __name__ == "__main__":
    print(convert(fetch_ml100k(), Path(sys.argv[1])))
