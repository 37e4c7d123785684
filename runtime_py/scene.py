"""Scene featurizer: what a phone can compute from its clock (PROTOCOL v1, "Scene").

Shared by the server (sdk imports it) and the phone, so both see exactly the same features.
The layout is versioned in `SceneSpec`; the bundle manifest records it and the runtime refuses a mismatch.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar
import datetime as _dt
import math
from functools import lru_cache

import numpy as np

from .config import VersionedConfig
from .errors import InputError

SCENE_SPEC_VERSION = 1
DAY_PARTS = ("night", "morning", "afternoon", "evening")  # 0-6, 6-12, 12-18, 18-24 local
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclasses.dataclass(frozen=True)
class SceneSpec(VersionedConfig):
    """How a timestamp becomes a scene vector. Recorded in the manifest."""

    VERSION = SCENE_SPEC_VERSION
    version: int = SCENE_SPEC_VERSION
    utc_offset_hours: float = -6.0  # the data's users are mostly in the US (PROTOCOL v1)
    holiday_window_days: int = 3  # "within 3 days of a US federal holiday"
    hour_resolution_minutes: int = 60  # hour rounded down to this (docs/decisions/scene-hour-resolution.md)

    # fields added after version 1 shipped, with the value a manifest written before them meant
    LEGACY: ClassVar[dict] = {"hour_resolution_minutes": 0}

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.utc_offset_hours, bool) or not isinstance(self.utc_offset_hours, (int, float)):
            raise ValueError(f"utc_offset_hours must be a number, got {self.utc_offset_hours!r}")
        if isinstance(self.holiday_window_days, bool) or not isinstance(self.holiday_window_days, int):
            raise ValueError(f"holiday_window_days must be an int, got {self.holiday_window_days!r}")
        if not -14 <= self.utc_offset_hours <= 14:
            raise ValueError(f"utc_offset_hours={self.utc_offset_hours} outside [-14, 14]")
        if not 0 <= self.holiday_window_days <= 31:  # a huge window overflows the date arithmetic
            raise ValueError("holiday_window_days must be in [0, 31]")
        m = self.hour_resolution_minutes
        if isinstance(m, bool) or not isinstance(m, int) or not (m == 0 or (0 < m <= 60 and 60 % m == 0)):
            raise ValueError(f"hour_resolution_minutes={m!r} must be 0 or a divisor of 60")

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in vector order."""
        return ("hour_sin", "hour_cos", *(f"part_{p}" for p in DAY_PARTS), *(f"wd_{d}" for d in WEEKDAYS),
                "weekend", "holiday")

    @property
    def dim(self) -> int:
        return len(self.names)

    def local_hour(self, local_seconds):
        """Hour of day (float, [0, 24)) of local seconds since the epoch, rounded down to the resolution."""
        sec = local_seconds % 86400.0
        if self.hour_resolution_minutes:
            step = 60.0 * self.hour_resolution_minutes
            sec = (sec // step) * step
        return sec / 3600.0


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> _dt.date:
    """n-th (1-based; -1 = last) given weekday (Mon=0) of a month."""
    if n > 0:
        d = _dt.date(year, month, 1)
        d += _dt.timedelta(days=(weekday - d.weekday()) % 7)
        return d + _dt.timedelta(weeks=n - 1)
    nxt = _dt.date(year + (month == 12), month % 12 + 1, 1)
    d = nxt - _dt.timedelta(days=1)
    return d - _dt.timedelta(days=(d.weekday() - weekday) % 7)


@lru_cache(maxsize=64)
def us_federal_holidays(year: int) -> tuple[_dt.date, ...]:
    """US federal holidays of a year (observed dates are not shifted: a scene is about the calendar day)."""
    hol = [
        _dt.date(year, 1, 1),  # New Year
        _nth_weekday(year, 1, 0, 3),  # MLK day
        _nth_weekday(year, 2, 0, 3),  # Presidents' day
        _nth_weekday(year, 5, 0, -1),  # Memorial day
        _dt.date(year, 7, 4),
        _nth_weekday(year, 9, 0, 1),  # Labor day
        _nth_weekday(year, 10, 0, 2),  # Columbus day
        _dt.date(year, 11, 11),  # Veterans day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _dt.date(year, 12, 25),
    ]
    if year >= 2021:
        hol.append(_dt.date(year, 6, 19))  # Juneteenth
    return tuple(sorted(hol))


def is_holiday(day: _dt.date, window_days: int = 3) -> bool:
    """True within `window_days` of a federal holiday (looks into neighbouring years at the edges)."""
    for y in (day.year - 1, day.year, day.year + 1):
        for h in us_federal_holidays(y):
            if abs((day - h).days) <= window_days:
                return True
    return False


def scene_features(timestamps, spec: SceneSpec = SceneSpec()) -> np.ndarray:
    """Scene vectors (n, spec.dim) float32 for unix timestamps (seconds, UTC).

    >>> scene_features([0.0]).shape
    (1, 15)
    """
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.size and not np.all(np.isfinite(ts)):
        raise ValueError("timestamps must be finite")
    local = ts + spec.utc_offset_hours * 3600.0
    hour = spec.local_hour(local)
    days = np.floor(local / 86400.0).astype(np.int64)  # days since 1970-01-01 (a Thursday)
    weekday = (days + 3) % 7  # Mon=0
    part = np.minimum((hour // 6).astype(np.int64), 3)
    out = np.zeros((ts.size, spec.dim), dtype=np.float32)
    out[:, 0] = np.sin(2 * np.pi * hour / 24.0)
    out[:, 1] = np.cos(2 * np.pi * hour / 24.0)
    out[np.arange(ts.size), 2 + part] = 1.0
    out[np.arange(ts.size), 6 + weekday] = 1.0
    out[:, 13] = weekday >= 5
    epoch = _dt.date(1970, 1, 1)
    hol_cache: dict[int, bool] = {}
    for i, d in enumerate(days.tolist()):
        if d not in hol_cache:
            hol_cache[d] = is_holiday(epoch + _dt.timedelta(days=d), spec.holiday_window_days)
        out[i, 14] = hol_cache[d]
    return out


def scene_labels(timestamps, spec: SceneSpec = SceneSpec()) -> np.ndarray:
    """Discrete scene label per timestamp: (day part, weekend, holiday) as a small int, for scene-retention slices."""
    f = scene_features(timestamps, spec)
    part = f[:, 2:6].argmax(1)
    return (part * 4 + f[:, 13].astype(np.int64) * 2 + f[:, 14].astype(np.int64)).astype(np.int64)


class SceneClock:
    """`scene_features` for one timestamp at a time, fast enough for the recommend hot path (added by runtime).

    With an hour resolution (the default spec) the whole vector depends only on the local day and time slot, so it
    is computed once per slot by `scene_features` itself and copied from a cache. With the exact time (resolution
    0, older bundles) everything but the hour sin/cos is cached per (day, day part) and sin/cos use the same
    float64 formula. Either way the result equals `scene_features([ts])[0]` exactly (tests/runtime check it).
    """

    _MAX_CACHED = 4096  # slots: ~170 days of whole hours, a few hundred KB

    def __init__(self, spec: SceneSpec = SceneSpec()):
        self.spec = spec
        self._offset = spec.utc_offset_hours * 3600.0
        self._step = 60.0 * spec.hour_resolution_minutes
        self._templates: dict[tuple[int, int], np.ndarray] = {}

    def slot(self, ts: float) -> tuple[int, int]:
        """The cache key of `ts`: (local day, slot within the day); equal keys give equal scenes."""
        local = ts + self._offset
        day = math.floor(local / 86400.0)
        if self._step:
            return day, int((local % 86400.0) // self._step)
        return day, min(int(((local % 86400.0) / 3600.0) // 6), 3)

    def fill(self, ts: float, out: np.ndarray) -> np.ndarray:
        """Write the scene of `ts` into `out` ((spec.dim,) float32) and return it. `ts` must be finite."""
        key = self.slot(ts)
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= self._MAX_CACHED:
                self._templates.clear()
            template = self._templates[key] = scene_features([ts], self.spec)[0]
        out[:] = template
        if not self._step:
            angle = 2 * np.pi * self.spec.local_hour(ts + self._offset) / 24.0
            out[0] = math.sin(angle)
            out[1] = math.cos(angle)
        return out


def shift_for(tz, ts: float, bundle_offset_hours: float) -> float:
    """Seconds to add to `ts` so that a scene computed with the bundle's fixed UTC offset is the scene in `tz` (a
    UTC offset in hours, or a zoneinfo name such as "Europe/Paris", whose offset at `ts` follows daylight saving)."""
    if isinstance(tz, str):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # stdlib; only a named zone needs it

        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"tz {tz!r} is not a known time zone name (e.g. 'Europe/Paris') nor hours") from None
        hours = zone.utcoffset(_dt.datetime.fromtimestamp(ts, _dt.timezone.utc)).total_seconds() / 3600.0
    elif isinstance(tz, (int, float)) and not isinstance(tz, bool) and math.isfinite(tz) and -14 <= tz <= 14:
        hours = float(tz)
    else:
        raise InputError(f"tz must be a UTC offset in hours within [-14, 14] or a zone name, got {tz!r}")
    return (hours - bundle_offset_hours) * 3600.0
