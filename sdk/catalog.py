"""Server-side catalog jobs on the sdk's data: the attribute rows of items added after training, in a trained
model's own encoding, and windowed item counts for trending packs.

A model's attribute encoder reads `item_attributes` rows: genre flags in the training catalog's genre order, the
release year standardised with the training catalog's mean and sd, and a year-unknown flag. Neither the genre
names nor the year statistics are in a checkpoint, so `attribute_schema` recovers them from the dataset named in
the checkpoint's TrainConfig and proves them by re-encoding the whole training catalog: the rows must equal the
model's `item_attrs` exactly (an edited or moved dataset is refused instead of silently encoding wrong).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from metarec.sdk.data import DataError, Dataset
from metarec.sdk.model import item_attributes, year_stats


@dataclasses.dataclass(frozen=True)
class AttributeSchema:
    """How a model encodes item attributes: the training catalog's genre names (column order) and year stats."""

    genre_names: tuple[str, ...]
    year: tuple[float, float] | None  # (mean, sd) of the training catalog's known years; None: it had none

    def encode(self, genres: list[list[str]], years) -> tuple[np.ndarray, list[str]]:
        """((n, G+2) attribute rows, genre values the model never saw: ignored, the item keeps its other ones)."""
        col = {g: j for j, g in enumerate(self.genre_names)}
        hot = np.zeros((len(genres), len(col)), np.float32)
        unknown: list[str] = []
        for r, gs in enumerate(genres):
            for g in gs:
                if g in col:
                    hot[r, col[g]] = 1.0
                elif g not in unknown:
                    unknown.append(g)
        return item_attributes(hot, np.asarray(years, np.float32), stats=self.year), unknown


def attribute_schema(ds: Dataset, item_attrs: np.ndarray) -> AttributeSchema:
    """The schema of a model trained on `ds`, checked against the model's own `item_attrs` (DataError if the
    dataset does not reproduce them: another or an edited dataset)."""
    want = np.asarray(item_attrs, np.float32)
    got = item_attributes(ds.item_genres, ds.item_year)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise DataError(f"dataset {ds.name} does not reproduce the model's item attributes ({got.shape} vs "
                        f"{want.shape}): the model was trained on other data")
    if len(ds.genre_names) != ds.item_genres.shape[1]:
        raise DataError(f"dataset {ds.name} has {ds.item_genres.shape[1]} genre columns but "
                        f"{len(ds.genre_names)} genre names")
    return AttributeSchema(tuple(ds.genre_names), year_stats(ds.item_year))


def window_counts(ds: Dataset, at: float, window: float) -> dict[str, float]:
    """{item id: events in [at - window, at)} over every user, items with no event left out: the counts a
    trending pack carries (the same half-open window as the protocol's `EventLog.counts` and training)."""
    if not (math.isfinite(at) and math.isfinite(window) and window > 0):
        raise ValueError(f"trending window needs a finite time and a window > 0, got at={at}, window={window}")
    lo = int(np.searchsorted(ds.ts, at - window, side="left"))
    hi = int(np.searchsorted(ds.ts, at, side="left"))
    return id_counts(ds.item_ids, np.bincount(ds.item[lo:hi], minlength=ds.n_items).astype(np.float64))


def id_counts(item_ids, counts: np.ndarray) -> dict:
    """{item id: count} for the items with a count, in index order: a pack row (one pass in numpy: eval-bundle
    builds 12 rows per query)."""
    nz = np.flatnonzero(counts)
    return dict(zip(np.asarray(item_ids)[nz].astype(str).tolist(), counts[nz].tolist()))
