"""Synthetic scene data with planted truth (PROTOCOL v1, "Synthetic scene data").

Each event is a draw from softmax(logits) over the items already released and not yet seen by the user, with
    logit_i = base_i + drift_i * (t - t0) / (t1 - t0) + proto_strength * [proto(i) == proto(u)]
              + taste_strength * V_i . w_u + scene_boost * scene(t) . A[:, i] + burst_boost * [i is bursting at t].
scene(t) is the phone's own scene (`metarec.runtime.scene.scene_features`): day part one-hot, weekend, holiday;
A (6, n_items) marks `scene_items_per_factor` items per scene factor (the holiday factor's items are the holiday
window's own items). V (n_items, taste_dim) are unit item vectors and w_u ~ N(0, I) the user's own taste beyond
the prototype, so the taste term is N(0, taste_strength^2) for every item before the user is known. Bursts fall on
items drawn from the `burst_tail_frac` least appealing items (1: any item). Users come back in sessions of
1..session_max events `session_gap_min_s`..`session_gap_max_s` seconds apart, at random hours of days about
`session_gap_days` apart, so a user's next event often falls in another scene than the last one. New items are
released over time; before release they have attributes only (multi-hot "genres" correlated with their prototype).
Everything planted is kept in `ds.extras` for the tests, the mechanism checks and the oracle (sdk/synthetic_oracle.py).

The fields added after version 1 shipped (taste, drift, tail bursts, session gaps) default to the values that
reproduce the version-1 worlds bit for bit (`LEGACY`); the named worlds (`WORLDS`, `--dataset synthetic:world-a`)
turn them on at the scale of issue 20 (3,000 users, 2,000 items).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import ClassVar

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
    # fields added after version 1 shipped: the values that reproduce the version-1 worlds exactly (also the defaults)
    LEGACY: ClassVar[dict] = {"taste_strength": 0.0, "taste_dim": 8, "drift_sd": 0.0, "burst_tail_frac": 1.0,
                              "session_gap_min_s": 60.0, "session_gap_max_s": 900.0}
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
    taste_strength: float = 0.0  # (float) sd of the user's own taste logit V_i . w_u beyond the prototype (0: none)
    taste_dim: int = 8  # (int) width of the taste space (unit item vectors V_i, user vectors w_u ~ N(0, I))
    drift_sd: float = 0.0  # (float) popularity drift: sd of each item's base-appeal change over the calendar
    burst_tail_frac: float = 1.0  # (float) bursts fall on the items of this lowest share of base appeal (1: any)
    session_gap_min_s: float = 60.0  # (float) fewest seconds between two events of a session
    session_gap_max_s: float = 900.0  # (float) most seconds between two events of a session (uniform between)

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
        if min(self.taste_strength, self.drift_sd) < 0 or self.taste_dim < 1:
            raise ValueError("need taste_strength >= 0, drift_sd >= 0, taste_dim >= 1")
        if not 0 < self.burst_tail_frac <= 1:
            raise ValueError("need 0 < burst_tail_frac <= 1")
        if not 0 <= self.session_gap_min_s <= self.session_gap_max_s:
            raise ValueError("need 0 <= session_gap_min_s <= session_gap_max_s")
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



# Named worlds at issue 20's scale (3,000 users, 2,000 items), with different seeds AND effect strengths so that
# nothing is tuned to one world: `--dataset synthetic:<name>` (sdk.data.load_dataset). Each is SyntheticConfig()
# with these fields changed; a change here moves every figure measured on the world, so add a name instead.
_SCALE = dict(n_users=3000, n_items=2000, events_min=20, events_max=60, n_genres=16, days=180, start="2023-10-01",
              session_max=5, session_gap_min_s=10.0, session_gap_max_s=600.0, session_gap_days=2.0,
              new_item_frac=0.15, burst_days=5.0)
WORLDS: dict[str, dict] = {
    # strong prototypes, mild scenes and trends, a little personal taste (oracle truth 0.434, world terms 0.145)
    "world-a": dict(_SCALE, seed=101, n_prototypes=16, proto_strength=3.5, taste_strength=0.75, taste_dim=8,
                    scene_boost=1.5, scene_items_per_factor=20, n_bursts=20, burst_boost=2.5, burst_tail_frac=0.5,
                    drift_sd=0.5, base_sd=1.8),
    # weaker prototypes, strong personal taste, strong scenes and trending bursts on tail items (truth 0.477, world
    # terms 0.293: most of what is reachable about the user is taste, not prototype)
    "world-b": dict(_SCALE, seed=202, n_prototypes=16, proto_strength=1.5, taste_strength=2.0, taste_dim=8,
                    scene_boost=3.0, scene_items_per_factor=15, n_bursts=30, burst_boost=4.0, burst_tail_frac=0.3,
                    drift_sd=1.0, base_sd=1.8),
}


def world_config(name: str, **overrides) -> SyntheticConfig:
    """The SyntheticConfig of a named world (`WORLDS`), with any field overridden."""
    if name not in WORLDS:
        raise ValueError(f"unknown synthetic world {name!r}; known: {', '.join(WORLDS)}")
    return SyntheticConfig(**{**WORLDS[name], **overrides})


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
    b_pool = old if len(old) >= cfg.n_bursts else np.arange(n)
    if cfg.burst_tail_frac < 1:  # trending bursts on tail items: the least appealing share of the pool
        tail = b_pool[np.argsort(base[b_pool], kind="stable")][:int(np.ceil(cfg.burst_tail_frac * len(b_pool)))]
        b_pool = tail if len(tail) >= cfg.n_bursts else b_pool
    b_items = rng.choice(b_pool, size=cfg.n_bursts, replace=False)
    b_start = np.quantile(event_ts, rng.uniform(0.1, 0.8, cfg.n_bursts)) if cfg.n_bursts else np.zeros(0)
    bursts = [{"item": int(i), "start": float(s), "end": float(s + cfg.burst_days * 86400.0)}
              for i, s in zip(b_items, b_start)]
    return dict(proto=proto, genres=genres, base=base, release=release, affinity=affinity, bursts=bursts,
                core_genres=core)


def _session_times(cfg: SyntheticConfig, rng: np.random.Generator, n_events: int, t0: float, t1: float) -> np.ndarray:
    """Event times of one user: sessions of events seconds to minutes apart, at random local hours of days apart."""
    out, t = [], t0 + rng.uniform(0, cfg.arrival_frac * (t1 - t0))
    while len(out) < n_events:
        k = int(rng.integers(1, cfg.session_max + 1))
        out.extend(t + np.cumsum(rng.uniform(cfg.session_gap_min_s, cfg.session_gap_max_s, k)))
        t += rng.exponential(cfg.session_gap_days * 86400.0) + rng.uniform(0, 86400.0)  # a new hour of a later day
    return np.asarray(out[:n_events])


def _taste(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item vectors V (n_items, taste_dim), unit rows; user tastes w (n_users, taste_dim) ~ N(0, I); item drift
    (n_items,) ~ N(0, drift_sd)) from their own stream, so the version-1 draws of `generate` stay as they were."""
    aux = np.random.default_rng([cfg.seed, 20])
    v = aux.normal(size=(cfg.n_items, cfg.taste_dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w = aux.normal(size=(cfg.n_users, cfg.taste_dim))
    drift = aux.normal(0.0, 1.0, cfg.n_items) * cfg.drift_sd
    return v, w, drift


def _pick(rng: np.random.Generator, logit: np.ndarray) -> int:
    """`rng.choice(len(logit), p=softmax(logit))` without its validation pass: the same uniform draw and the same
    cdf search as numpy's Generator.choice (tests/sdk/test_synthetic.py pins the version-1 worlds to it)."""
    pr = np.exp(logit - logit.max())
    pr /= pr.sum()
    cdf = pr.cumsum()
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


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
    taste_v, taste_w, drift = _taste(cfg)
    scene = scene_features(all_t, cfg.scene_spec)[:, SCENE_COLUMNS]  # (n_events, 6) active scene factors
    b_item = np.asarray([b["item"] for b in it["bursts"]], np.int64)
    b_start = np.asarray([b["start"] for b in it["bursts"]])
    b_end = np.asarray([b["end"] for b in it["bursts"]])
    users, items, ts = [], [], []
    order = np.argsort(it["release"], kind="stable")  # items by release time: unblocked in this order
    rel_sorted = it["release"][order]
    pos = 0
    for u in range(cfg.n_users):
        tu = times[u]
        own = it["base"] + cfg.proto_strength * (it["proto"] == user_proto[u])
        if cfg.taste_strength > 0:
            own = own + cfg.taste_strength * (taste_v @ taste_w[u])
        # (events, n_items) every logit term of the user's events: the same float operations, in the same order,
        # as version 1's per-event sum (scene lifts are exact 0/1 sums, a burst is one += per item)
        logits = own[None, :] + cfg.scene_boost * (scene[pos:pos + len(tu)] @ it["affinity"])
        if cfg.drift_sd > 0:
            logits += drift[None, :] * ((tu[:, None] - t0) / (t1 - t0))
        for b in range(len(b_item)):
            logits[(b_start[b] <= tu) & (tu < b_end[b]), b_item[b]] += cfg.burst_boost
        blocked = np.zeros(cfg.n_items)  # -inf: not released yet, or already seen
        blocked[it["release"] > tu[0]] = -np.inf
        n_rel = int(np.searchsorted(rel_sorted, tu[0], side="right"))
        for j, t in enumerate(tu):
            hi = int(np.searchsorted(rel_sorted, t, side="right"))
            if hi > n_rel:  # released since the last event (so never seen): unblocked
                blocked[order[n_rel:hi]] = 0.0
                n_rel = hi
            if n_rel <= j:
                break  # the user has seen every released item (j items seen so far)
            logit = logits[j] + blocked
            i = _pick(rng, logit)
            blocked[i] = -np.inf
            users.append(u)
            items.append(i)
            ts.append(t)
        pos += len(tu)
    uid = np.asarray([f"{u + 1}" for u in range(cfg.n_users)])
    iid = np.asarray([f"{i + 1}" for i in range(cfg.n_items)])
    ds = build_dataset("synthetic", uid[users], iid[items], ts, item_ids=iid, item_genres=it["genres"],
                       genre_names=tuple(f"g{g}" for g in range(cfg.n_genres)))
    rows = np.asarray(ds.user_ids, dtype=np.int64) - 1  # the generator's user of each dataset user
    ds.extras = {
        "config": cfg.to_dict(),
        "user_prototype": user_proto[rows],
        "item_prototype": it["proto"],
        "prototype_core_genres": it["core_genres"],
        "scene_factors": SCENE_FACTORS,
        "scene_item_affinity": it["affinity"],
        "bursts": it["bursts"],
        "item_release": it["release"],
        "item_base": it["base"],
        "new_items": np.flatnonzero(np.isfinite(it["release"])),
        "scene_spec": cfg.scene_spec.to_dict(),
        # the taste and drift truth (all zero effect in a version-1 world: taste_strength = drift_sd = 0)
        "item_taste": taste_v,
        "user_taste": taste_w[rows],
        "item_drift": drift,
        "calendar": (t0, t1),
    }
    return ds
