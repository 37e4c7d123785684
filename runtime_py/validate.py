"""Argument checks at the runtime's API edge: every public method calls these before touching any state, so a bad
argument is an `InputError` and nothing is stored or changed.

- ids (user, item, event): a str of 1..MAX_ID_BYTES UTF-8 bytes, not whitespace-only, no NUL, no lone surrogate
  (SQLite cannot store one; a NUL truncates in C APIs; a whitespace-only id is a client bug, not a user).
- times (event timestamps and `now`): unix seconds, finite, in [MIN_TIME, MAX_TIME] (1970-01-01 .. 2100-01-01 UTC):
  the scene featurizer's calendar works there, and a value in [MILLIS_FROM, ...) is refused as a millisecond
  timestamp with a message saying so (a millisecond "now" is year ~57,000).
"""
from __future__ import annotations

import math
import os

import numpy as np

from .bundle_codecs import check_pack_time
from .errors import InputError

MAX_ID_BYTES = 512  # long enough for any UUID/URL-ish id; a 1 MB id is an attack on the state file, not an id
MIN_TIME = 0.0
MAX_TIME = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MILLIS_FROM = 1e11  # year 5138 in seconds, but 1973 in milliseconds: everything from here is read as milliseconds


def check_id(value, what: str) -> str:
    """`value` if it is a valid id; `InputError` otherwise."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty str, got {_short(value)}")
    if "\0" in value:
        raise InputError(f"{what} must not contain a NUL character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InputError(f"{what} holds a lone surrogate (not valid Unicode text): {_short(value)}") from e
    if size > MAX_ID_BYTES:
        raise InputError(f"{what} is {size} UTF-8 bytes, at most {MAX_ID_BYTES}")
    if value.isspace():
        raise InputError(f"{what} must not be whitespace only, got {value!r}")
    return value


def check_time(value, what: str) -> float:
    """`value` as float unix seconds if plausible; `InputError` otherwise (milliseconds named as such)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number (unix seconds), got {_short(value)}")
    try:
        t = float(value)
    except OverflowError as e:  # an int beyond float range (10**400)
        raise InputError(f"{what} is out of range: {_short(value)}") from e
    if not math.isfinite(t):
        raise InputError(f"{what} must be finite, got {value!r}")
    if MILLIS_FROM <= t <= MAX_TIME * 1000:
        raise InputError(f"{what}={t!r} looks like a timestamp in milliseconds; pass unix seconds (divide by 1000)")
    if not MIN_TIME <= t <= MAX_TIME:
        raise InputError(f"{what}={t!r} is outside [{MIN_TIME:.0f}, {MAX_TIME:.0f}] unix seconds (1970..2100 UTC)")
    return t


def check_path(value, what: str) -> str:
    """A filesystem path argument as str: str or os.PathLike, non-empty, no NUL; `InputError` otherwise (str(None)
    would otherwise quietly become a file called "None")."""
    try:
        path = os.fspath(value)
    except TypeError as e:
        raise InputError(f"{what} must be a path (str or os.PathLike), got {_short(value)}") from e
    if not isinstance(path, str) or not path or "\0" in path:
        raise InputError(f"{what} must be a non-empty str path without NUL, got {_short(value)}")
    return path


def check_pack(pack, catalog: str, now: float, current_at: float | None, what: str = "trending pack") -> None:
    """`InputError` unless `pack` (a TrendingPack or OnboardingPack) counts this `catalog` (or is unbound: the app's
    own trending pack), is fresh at `now` and is not older than the pack in use (`current_at`; None: no replay
    check)."""
    if pack.catalog and pack.catalog != catalog:
        raise InputError(f"{what} was made for another catalog (its `catalog` differs from this bundle's)")
    try:
        check_pack_time(pack.at, now, current_at, what)
    except ValueError as e:
        raise InputError(str(e)) from e


def check_neighbor_pack(pack, spec, catalog: str, n_items: int, now: float, current_at: float | None) -> None:
    """`InputError` unless `pack` (a NeighborPack) fits the bundle's item-item term `spec` (kind, m) and `catalog`
    (n_items rows), is fresh at `now` and is not older than the pack in use (`current_at`; None: no replay check)."""
    if spec is None:
        raise InputError("this bundle has no item-item term (its export chose none on validation users): no "
                         "neighbour pack to set")
    if pack.catalog != catalog or len(pack.ids) != n_items:
        raise InputError("neighbour pack was made for another catalog (its `catalog` differs from this bundle's)")
    if pack.kind != spec.kind or pack.m != spec.m:
        raise InputError(f"neighbour pack holds {pack.kind} x{pack.m}, this bundle's term reads {spec.kind} x{spec.m}")
    try:
        check_pack_time(pack.at, now, current_at, "neighbour pack")
    except ValueError as e:
        raise InputError(str(e)) from e


def _short(value) -> str:
    try:  # repr itself can fail (an int of 10**5000 digits exceeds Python's str conversion limit)
        return (repr(value[:40]) if isinstance(value, (str, bytes)) else repr(value))[:80]
    except Exception:
        return f"<{type(value).__name__}>"
