"""Synthetic scene data with planted truth (PROTOCOL v1, "Synthetic scene data").

Each event is a draw from softmax(logits) over the items already released and not yet seen by the user, with
    logit_i = base_i + proto_strength * [proto(i) == proto(u)] + scene_boost * scene(t) . A[:, i]
              + burst_boost * [i is bursting at t].
scene(t) is the phone's own scene (`metarec.runtime.scene.scene_features`): day part one-hot, weekend, holiday;
A (6, n_items) marks `scene_items_per_factor` items per scene factor. Users come back in short sessions at random
hours of random days, so a user's next event often falls in another scene than the last one. New items are released
over time; before release they have attributes only (multi-hot "genres" correlated with their prototype).
Everything planted is kept in `ds.extras` for the tests and the mechanism checks.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt

import numpy as np

from metarec.runtime.config import VersionedConfig
from metarec.runtime.scene import SceneSpec, scene_features
from metarec.sdk.data import Dataset, build_dataset

SYNTHETIC_CONFIG_VERSION = 1
SCENE_FACTORS = ("night", "morning", "afternoon", "evening", "weekend", "holiday")
SCENE_COLUMNS = (2, 3, 4, 5, 13, 14)  # their columns in scene_features


@dataclasses.dataclass(frozen=True)
class SyntheticConfig(VersionedConfig):
    """Size, calendar and effect strengths of the generator; the defaults build in well under a second."""

    VERSION = SYNTHETIC_CONFIG_VERSION
    version: int = SYNTHETIC_CONFIG_VERSION
    n_users: int = 600  # (int) users
    n_items: int = 400  # (int) catalog size, new items included
    n_prototypes: int = 5  # (int) latent interest prototypes
    n_genres: int = 12  # (int) attribute width (multi-hot)
    events_min: int = 20  # (int) fewest events per user
    events_max: int = 40  # (int) most events per user (<= n_items: a user never repeats an item)
    session_max: int = 3  # (int) most events per session (sessions are 1..session_max events, minutes apart)
    session_gap_days: float = 1.5  # (float) mean gap between a user's sessions, exponential
    start: str = "1997-11-01"  # (str) first day, ISO date (UTC)
    days: int = 120  # (int) calendar length; users arrive in the first `arrival_frac` of it
    arrival_frac: float = 0.6  # (float) users' first sessions fall in [start, start + arrival_frac * days)
    holiday_window_days: int = 3  # (int) scene holiday = within this many days of a US federal holiday
    utc_offset_hours: float = -6.0  # (float) the users' local time zone, as the phone's SceneSpec
    proto_strength: float = 2.5  # (float) logit lift of the user's prototype items
    scene_boost: float = 2.5  # (float) logit lift of an active scene factor's items
    scene_items_per_factor: int = 20  # (int) items each scene factor lifts (docs/decisions/synthetic-scene-items.md)
    n_bursts: int = 8  # (int) trending bursts (one item each)
    burst_days: float = 4.0  # (float) burst length
    burst_boost: float = 3.0  # (float) logit lift of a bursting item
    new_item_frac: float = 0.15  # (float) share of items released after the start (attributes only before)
    base_sd: float = 0.7  # (float) spread of the items' base appeal
    genre_core_p: float = 0.8  # (float) chance an item carries each of its prototype's core genres
    genre_noise_p: float = 0.08  # (float) chance of each other genre
    seed: int = 0  # (int) everything is a function of the config

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_users < 1 or self.n_prototypes < 1:
            raise ValueError("need n_users >= 1 and n_prototypes >= 1")
        if self.n_items < 2 * self.n_prototypes:
            raise ValueError(f"n_items={self.n_items} must be >= 2 * n_prototypes={2 * self.n_prototypes}")
        if not 1 <= self.events_min <= self.events_max <= self.n_items:
            raise ValueError("need 1 <= events_min <= events_max <= n_items")
        if self.n_genres < 2 or self.session_max < 1 or self.days < 1:
            raise ValueError("need n_genres >= 2, session_max >= 1, days >= 1")
        if self.session_gap_days <= 0 or self.burst_days <= 0 or not 0 < self.arrival_frac <= 1:
            raise ValueError("need session_gap_days > 0, burst_days > 0, 0 < arrival_frac <= 1")
        if not 0 <= self.new_item_frac < 1 or round(self.new_item_frac * self.n_items) >= self.n_items:
            raise ValueError("need 0 <= new_item_frac < 1 and at least one item released from the start")
        if min(self.proto_strength, self.scene_boost, self.burst_boost, self.base_sd) < 0:
            raise ValueError("effect strengths must be >= 0")
        if not (0 <= self.genre_core_p <= 1 and 0 <= self.genre_noise_p <= 1):
            raise ValueError("genre probabilities must be in [0, 1]")
        if self.n_bursts < 0 or self.scene_items_per_factor < 0 or self.holiday_window_days < 0:
            raise ValueError("n_bursts, scene_items_per_factor, holiday_window_days must be >= 0")
        if len(SCENE_FACTORS) * self.scene_items_per_factor > self.n_items:
            raise ValueError(f"scene items do not fit in the catalog: {len(SCENE_FACTORS)} factors x "
                             f"scene_items_per_factor={self.scene_items_per_factor} > n_items={self.n_items}")
        try:
            _dt.date.fromisoformat(self.start)
        except (TypeError, ValueError) as e:
            raise ValueError(f"start={self.start!r} is not an ISO date (YYYY-MM-DD)") from e
        SceneSpec(utc_offset_hours=self.utc_offset_hours, holiday_window_days=self.holiday_window_days)

    @property
    def scene_spec(self) -> SceneSpec:
        return SceneSpec(utc_offset_hours=self.utc_offset_hours, holiday_window_days=self.holiday_window_days)



def _items(cfg: SyntheticConfig, rng: np.random.Generator, event_ts: np.ndarray) -> dict:
    """Item truth: prototype, genres, base appeal, release time, scene affinities, bursts.

    Releases and bursts are placed at quantiles of the event times, so that they fall where users are active."""
    n, p = cfg.n_items, cfg.n_prototypes
    proto = rng.permutation(np.arange(n) % p)
    core = np.stack([rng.choice(cfg.n_genres, size=2, replace=False) for _ in range(p)])  # 2 core genres each
    is_core = np.zeros((p, cfg.n_genres), bool)
    is_core[np.arange(p)[:, None], core] = True
    pr = np.where(is_core[proto], cfg.genre_core_p, cfg.genre_noise_p)
    genres = (rng.random((n, cfg.n_genres)) < pr).astype(np.float32)
    base = rng.normal(0.0, cfg.base_sd, n)
    release = np.full(n, -np.inf)
    new = rng.choice(n, size=int(round(cfg.new_item_frac * n)), replace=False)
    release[new] = np.quantile(event_ts, rng.uniform(0.2, 0.9, len(new)))
    affinity = np.zeros((len(SCENE_FACTORS), n), np.float32)
    old = np.setdiff1d(np.arange(n), new)  # scene items are released from the start, so their lift is visible
    pool = rng.permutation(old if len(old) >= len(SCENE_FACTORS) * cfg.scene_items_per_factor else np.arange(n))
    for f in range(len(SCENE_FACTORS)):
        affinity[f, pool[f * cfg.scene_items_per_factor:(f + 1) * cfg.scene_items_per_factor]] = 1.0
    b_items = rng.choice(old if len(old) >= cfg.n_bursts else np.arange(n), size=cfg.n_bursts, replace=False)
    b_start = np.quantile(event_ts, rng.uniform(0.1, 0.8, cfg.n_bursts)) if cfg.n_bursts else np.zeros(0)
    bursts = [{"item": int(i), "start": float(s), "end": float(s + cfg.burst_days * 86400.0)}
              for i, s in zip(b_items, b_start)]
    return dict(proto=proto, genres=genres, base=base, release=release, affinity=affinity, bursts=bursts,
                core_genres=core)


def _session_times(cfg: SyntheticConfig, rng: np.random.Generator, n_events: int, t0: float, t1: float) -> np.ndarray:
    """Event times of one user: short sessions at random local hours of random days, in time order."""
    out, t = [], t0 + rng.uniform(0, cfg.arrival_frac * (t1 - t0))
    while len(out) < n_events:
        k = int(rng.integers(1, cfg.session_max + 1))
        out.extend(t + np.cumsum(rng.uniform(60, 900, k)))
        t += rng.exponential(cfg.session_gap_days * 86400.0) + rng.uniform(0, 86400.0)  # a new hour of a later day
    return np.asarray(out[:n_events])


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> Dataset:
    """A seeded scene dataset; `ds.extras` holds the planted truth (see the module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    start = _dt.datetime.fromisoformat(cfg.start).replace(tzinfo=_dt.timezone.utc).timestamp()
    t0, t1 = float(start), float(start + cfg.days * 86400.0)
    user_proto = rng.integers(0, cfg.n_prototypes, cfg.n_users)
    n_ev = rng.integers(cfg.events_min, cfg.events_max + 1, cfg.n_users)
    times = [_session_times(cfg, rng, int(k), t0, t1) for k in n_ev]
    all_t = np.concatenate(times)
    it = _items(cfg, rng, all_t)
    scene = scene_features(all_t, cfg.scene_spec)[:, SCENE_COLUMNS]  # (n_events, 6) active scene factors
    users, items, ts = [], [], []
    pos = 0
    for u in range(cfg.n_users):
        own = it["base"] + cfg.proto_strength * (it["proto"] == user_proto[u])
        seen = np.zeros(cfg.n_items, bool)
        for j, t in enumerate(times[u]):
            logit = own + cfg.scene_boost * (scene[pos + j] @ it["affinity"])
            for b in it["bursts"]:
                if b["start"] <= t < b["end"]:
                    logit[b["item"]] += cfg.burst_boost
            logit[seen | (it["release"] > t)] = -np.inf
            if not np.isfinite(logit).any():
                break  # the user has seen every released item
            pr = np.exp(logit - logit.max())
            i = int(rng.choice(cfg.n_items, p=pr / pr.sum()))
            seen[i] = True
            users.append(u)
            items.append(i)
            ts.append(t)
        pos += len(times[u])
    uid = np.asarray([f"{u + 1}" for u in range(cfg.n_users)])
    iid = np.asarray([f"{i + 1}" for i in range(cfg.n_items)])
    ds = build_dataset("synthetic", uid[users], iid[items], ts, item_ids=iid, item_genres=it["genres"],
                       genre_names=tuple(f"g{g}" for g in range(cfg.n_genres)))
    ds.extras = {
        "config": cfg.to_dict(),
        "user_prototype": user_proto[np.asarray(ds.user_ids, dtype=np.int64) - 1],
        "item_prototype": it["proto"],
        "prototype_core_genres": it["core_genres"],
        "scene_factors": SCENE_FACTORS,
        "scene_item_affinity": it["affinity"],
        "bursts": it["bursts"],
        "item_release": it["release"],
        "item_base": it["base"],
        "new_items": np.flatnonzero(np.isfinite(it["release"])),
        "scene_spec": cfg.scene_spec.to_dict(),
    }
    return ds
