"""The floor: before a prior ships, it must not lose to a simple baseline on validation users.

`validation_floor` fits the prior and the simple baselines on the train users only and scores them on the
validation users (docs/protocol.md: choices are made there; test users stay unseen), paired over the same
next-item queries (K = 1..3). Validation runs in forward blocks (`forward_blocks`): the validation users, and as
many earlier blocks of train users, each judged by fits on the users before it; their queries are pooled. The
verdict against the best baseline: "below" when the paired 95% interval lies under 0 (measurably worse), "above"
when it lies over 0, else "tie". `metarec train` prints it and stores it in the
checkpoint; `metarec export` refuses a "below" prior unless forced (docs/decisions/floor.md).

`validation_run` also keeps what export needs to make its own choices on the same users (export/select.py): the
priors fit per block, their config, and the best baseline's per-query results, so a compressed form or a
prior without its steps is compared with the baseline paired, on exactly the queries the floor used.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from metarec.sdk.baselines import Blend, make_baseline
from metarec.sdk.coldstart_diagnostics import paired_difference
from metarec.sdk.protocol import HEADLINE_KS, EventLog, evaluate_users, split_users, summarize_next_item

FLOOR_BASELINES = ("popularity", "trending", "item_knn", "transition3", "item_knn+trending", "transition3+trending",
                   "onboarding", "item_knn+onboarding", "transition3+onboarding")
INNER_VAL_SHARE = 1 / 6  # of the train users: where a blend picks its weight, so validation users only judge


def verdict(diff_ci) -> str:
    """"below" / "above" when the paired interval excludes 0 on that side, else "tie"."""
    lo, hi = float(diff_ci[0]), float(diff_ci[1])
    return "below" if hi < 0 else "above" if lo > 0 else "tie"


def baseline_on(name: str, ds, train: np.ndarray, log: EventLog):
    """A baseline fit on `train`; a blend picks its weight on a seeded sixth of them first."""
    m = make_baseline(name)
    if isinstance(m, Blend) and not m.fixed:
        perm = np.random.default_rng(0).permutation(train)
        n = max(1, int(len(perm) * INNER_VAL_SHARE))
        w = m.select_weights(ds, np.sort(perm[n:]), np.sort(perm[:n]), log)
        m = Blend(m.name, m.make_components, weights=w)
    return m.fit(ds, train, log)


MIN_FIT_SHARE = 0.5  # a block is judged only by a prior fit on at least half as many users as the train users


def forward_blocks(ds, n_blocks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit users, judged users) per block, earliest first. The last block is the validation users, fit on the train
    users; each earlier block the same number of train users just before it, fit on every user before them. Nothing
    fit on later users judges earlier ones (the time rule), and 3 blocks give 3x the queries of one (Instacart's 59
    validation users could not show a 0.03 loss; docs/decisions/floor.md). Blocks whose fit users would be fewer than
    MIN_FIT_SHARE of the train users are left out."""
    split = split_users(ds)
    order, size = np.r_[split.train, split.val], len(split.val)  # arrival order
    out = []
    for i in range(int(n_blocks) - 1, -1, -1):
        start = len(split.train) - i * size
        if start >= max(1, MIN_FIT_SHARE * len(split.train)):
            out.append((order[:start], order[start:start + size]))
    return out


def pooled(parts: list[dict]) -> dict:
    """Per-query results of several blocks as one (users differ between blocks, so pairing by user still holds)."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclasses.dataclass
class ValidationRun:
    """The floor's report (JSON: checkpoint and manifest) and what export's choices reuse (the checkpoint only)."""

    report: dict
    models: list  # per block, the MetaRecModel fit on its fit users
    config: object  # their TrainConfig (fit_users="train")
    baseline: dict  # the best baseline's per-query results on every block's users ({"user", "k", "hr", ...})
    blocks: list  # per block, (fit users, judged users)

    def to_checkpoint(self) -> dict:
        return {"train_config": self.config.to_dict(), "n_items": int(self.models[-1].n_items),
                "blocks": [{"fit": np.asarray(f), "users": np.asarray(u),
                            "state_dict": {k: v.detach().clone() for k, v in m.state_dict().items()}}
                           for m, (f, u) in zip(self.models, self.blocks)],
                "baseline": {k: np.asarray(v) for k, v in self.baseline.items()}}


def validation_run(cfg, ds, baselines=FLOOR_BASELINES) -> ValidationRun:
    """The prior (`cfg`, fit per block on the users before it) against `baselines` (fit the same way), on the users
    of `cfg.val_blocks` forward blocks of `ds`, pooled."""
    from metarec.sdk.recommender import MetaRecRecommender

    split, log = split_users(ds), EventLog(ds)
    if not len(split.train) or not len(split.val):
        raise ValueError("the floor needs train and validation users (SplitConfig)")
    vcfg = dataclasses.replace(cfg, fit_users="train")
    blocks = forward_blocks(ds, cfg.val_blocks)
    models, parts = [], {n: [] for n in ("metarec", *baselines)}
    for fit, users in blocks:
        rec = MetaRecRecommender(vcfg).fit(ds, fit, log)
        models.append(rec.model)
        parts["metarec"].append(evaluate_users(rec, ds, users, log, ks=HEADLINE_KS))
        for name in baselines:
            parts[name].append(evaluate_users(baseline_on(name, ds, fit, log), ds, users, log, ks=HEADLINE_KS))
    res = {n: pooled(p) for n, p in parts.items()}
    headline = {n: summarize_next_item(r, ks=HEADLINE_KS)["headline"]["hr10"] for n, r in res.items()}
    best = max(baselines, key=lambda n: headline[n])
    paired = paired_difference(res["metarec"], res[best], HEADLINE_KS)
    report = {"users": "validation", "n_users": int(sum(len(u) for _, u in blocks)),
              "blocks": [{"fit_users": int(len(f)), "users": int(len(u))} for f, u in blocks],
              "headline_hr10": headline, "best_baseline": best, "paired_hr10_diff": paired["hr10_diff"],
              "paired_hr10_diff_ci": paired["hr10_diff_ci"], "verdict": verdict(paired["hr10_diff_ci"])}
    return ValidationRun(report, models, vcfg, res[best], blocks)


def validation_floor(cfg, ds, baselines=FLOOR_BASELINES) -> dict:
    """The floor's report alone (see `validation_run`)."""
    return validation_run(cfg, ds, baselines).report


def floor_summary(report: dict) -> str:
    """One line for the console: the prior, the best baseline, the paired difference and the verdict."""
    h = report["headline_hr10"]
    lo, hi = report["paired_hr10_diff_ci"]
    blocks = len(report.get("blocks", [None]))
    where = f"validation users, n={report['n_users']}" + (f" in {blocks} forward blocks" if blocks > 1 else "")
    return (f"floor ({where}): the prior alone HR@10 {h['metarec']:.3f} vs best "
            f"baseline {report['best_baseline']} {h[report['best_baseline']]:.3f}: paired "
            f"{report['paired_hr10_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] -> {report['verdict']}")
