"""A user's own data: an events table (CSV or Parquet) under common header names, an optional items table with
multi-valued attributes, and MovieLens's current folder layout (ratings.csv + movies.csv).

Events: a header naming user, item and timestamp columns (any of the aliases below, case and `_` ignored) and
optionally rating; `,`, `;`, tab or `|` separated (detected from the header line); a UTF-8 BOM is ignored.
Items: an item column plus any of title, genres (several values split on `|`, as MovieLens writes them) and
year (else taken from a trailing "(1995)" in the title). Item attributes feed the item encoder, so items that
have no events yet (PROTOCOL's new-item run, a new catalog entry) still get a vector.
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
import re
from pathlib import Path

import numpy as np

from metarec.sdk.data import Dataset, DataError, _id_order, build_dataset

ALIASES = {  # canonical column -> header names accepted (lower case, '_' and ' ' removed)
    "user": ("user", "userid", "uid", "customerid", "visitorid"),
    "item": ("item", "itemid", "iid", "movieid", "productid", "trackid"),
    "timestamp": ("timestamp", "ts", "time", "datetime", "date", "eventtime"),
    "rating": ("rating", "score", "value"),
    "title": ("title", "name", "movietitle"),
    "genres": ("genres", "genre", "categories", "category", "tags", "class"),
    "year": ("year", "releaseyear"),
}
EVENT_COLUMNS = ("user", "item", "timestamp")
EVENTS_HINT = "a header with user (or user_id/userId), item (or item_id/itemId/movieId), timestamp (or ts/time)"
NO_GENRE = "(no genres listed)"  # MovieLens's value for an item without genres: kept as its own attribute value
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
EVENT_FILES = ("ratings.csv", "ratings.parquet", "events.csv", "events.parquet", "interactions.csv")
ITEM_FILES = ("movies.csv", "movies.parquet", "items.csv", "items.parquet")


def _norm(h: str) -> str:
    return h.strip().lstrip("\ufeff").lower().replace("_", "").replace(" ", "")


def _columns(path: Path, header: list[str], want: tuple[str, ...], required: tuple[str, ...]) -> dict[str, int]:
    """canonical name -> column index for every wanted column present; DataError naming what is missing."""
    normed = [_norm(h) for h in header]
    found = {}
    for c in want:
        for alias in ALIASES[c]:
            if alias in normed:
                found[c] = normed.index(alias)
                break
    missing = [c for c in required if c not in found]
    if missing:
        raise DataError(f"{path}:1: no {'/'.join(missing)} column in header {header}; need {EVENTS_HINT}"
                        if required == EVENT_COLUMNS else
                        f"{path}:1: no {'/'.join(missing)} column in header {header}; need an item column "
                        f"(item, item_id, itemId or movieId)")
    return found


def _delimiter(path: Path, line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise DataError(f"{path}:1: header {line!r} has one column; separate columns with ',', ';' or tabs")
    return best


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a delimited text file or a Parquet file (line = row + 1)."""
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or save it as CSV") from None
        t = pq.read_table(path).to_pydict()
        header = list(t)
        cols = [["" if v is None else str(v) for v in t[h]] for h in header]
        return header, [(n + 2, list(r)) for n, r in enumerate(zip(*cols))]
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM never reaches the header
        first = f.readline()
        if not first.strip():
            raise DataError(f"{path}: empty file; the first line must be {EVENTS_HINT}")
        delim = _delimiter(path, first)
        header = next(csv.reader([first], delimiter=delim))
        rows = [(n, r) for n, r in enumerate(csv.reader(f, delimiter=delim), 2) if r]
    return [h.strip() for h in header], rows


def _parse_time(path: Path, n: int, s: str) -> float:
    try:
        return float(s)
    except ValueError:
        pass
    try:  # ISO 8601 dates / datetimes; naive ones are taken as UTC
        t = _dt.datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{path}:{n}: timestamp {s!r} is neither unix seconds nor an ISO 8601 date") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def load_table(path: str | os.PathLike, items: str | os.PathLike | None = None) -> Dataset:
    """Events from a CSV/Parquet file (header names: module docstring), with item attributes from `items`."""
    path = Path(path)
    header, rows = _rows(path)
    col = _columns(path, header, EVENT_COLUMNS + ("rating",), EVENT_COLUMNS)
    iu, ii, it, ir = col["user"], col["item"], col["timestamp"], col.get("rating")
    users, itemv, ts, ratings = [], [], [], []
    for n, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: expected {len(header)} fields like the header, got {len(row)}")
        t = _parse_time(path, n, row[it])
        if not np.isfinite(t):
            raise DataError(f"{path}:{n}: timestamp {row[it]!r} is not finite")
        try:
            r = float(row[ir]) if ir is not None and row[ir] != "" else float("nan")
        except ValueError:
            raise DataError(f"{path}:{n}: rating {row[ir]!r} is not a number (leave it empty if unknown)") from None
        users.append(row[iu])
        itemv.append(row[ii])
        ts.append(t)
        ratings.append(r)
    if not ts:
        raise DataError(f"{path}: header only, no events")
    ids, attrs = None, {}
    if items is not None:  # the catalog: every item of the items file, plus items that only have events
        attrs = load_items(items)
        ids = _id_order(np.asarray(sorted(set(attrs["item_ids"]) | set(itemv))))
        attrs = _align(attrs, ids)
    return build_dataset(path.parent.name if path.name in EVENT_FILES else path.stem, users, itemv, ts, ratings,
                         item_ids=ids, **attrs)


def load_items(path: str | os.PathLike) -> dict:
    """{item_ids, genre_names, item_genres (multi-hot, genres sorted), item_year, item_titles} from an items file."""
    path = Path(path)
    header, rows = _rows(path)
    col = _columns(path, header, ("item", "title", "genres", "year"), ("item",))
    ids, titles, years, genres = [], [], [], []
    for n, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: expected {len(header)} fields like the header, got {len(row)}")
        ids.append(row[col["item"]])
        title = row[col["title"]] if "title" in col else ""
        titles.append(title)
        y = row[col["year"]].strip() if "year" in col else ""
        m = _TITLE_YEAR.search(title)
        years.append(float(y) if y.isdigit() else float(m.group(1)) if m and not y else float("nan"))
        g = row[col["genres"]] if "genres" in col else ""
        genres.append([v.strip() for v in g.split("|") if v.strip()])
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: item {dup!r} listed twice; keep one row per item")
    names = tuple(sorted({v for gs in genres for v in gs}))
    gi = {g: j for j, g in enumerate(names)}
    hot = np.zeros((len(ids), len(names)), np.float32)
    for r, gs in enumerate(genres):
        hot[r, [gi[g] for g in gs]] = 1.0
    return {"item_ids": ids, "genre_names": names, "item_genres": hot, "item_year": np.asarray(years, np.float32),
            "item_titles": np.asarray(titles, dtype=object)}


def _align(attrs: dict, ids: np.ndarray) -> dict:
    """The items file's rows in catalog order; an item without a row gets no genres and an unknown year."""
    row = {s: r for r, s in enumerate(attrs["item_ids"])}
    pos = np.asarray([row.get(s, -1) for s in ids.tolist()], np.int64)
    have = pos >= 0
    genres = np.zeros((len(ids), attrs["item_genres"].shape[1]), np.float32)
    genres[have] = attrs["item_genres"][pos[have]]
    year = np.full(len(ids), np.nan, np.float32)
    year[have] = attrs["item_year"][pos[have]]
    titles = np.full(len(ids), "", dtype=object)
    titles[have] = attrs["item_titles"][pos[have]]
    return {"genre_names": attrs["genre_names"], "item_genres": genres, "item_year": year, "item_titles": titles}


def find_events(folder: Path) -> tuple[Path, Path | None] | None:
    """(events file, items file or None) of a MovieLens-style folder, or None."""
    ev = next((folder / f for f in EVENT_FILES if (folder / f).is_file()), None)
    if ev is None:
        return None
    return ev, next((folder / f for f in ITEM_FILES if (folder / f).is_file()), None)
