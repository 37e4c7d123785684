"""The floor: before a prior ships, it must not lose to a simple baseline on validation users.

`validation_floor` fits the prior and the simple baselines on the train users only and scores them on the
validation users (docs/protocol.md: choices are made there; test users stay unseen), paired over the same
next-item queries (K = 1..3). The verdict against the best baseline: "below" when the paired 95% interval lies
under 0 (measurably worse), "above" when it lies over 0, else "tie". `metarec train` prints it and stores it in the
checkpoint; `metarec export` refuses a "below" prior unless forced (docs/decisions/floor.md).

`validation_run` also keeps what export needs to make its own choices on the same users (export/select.py): the
prior fit on the train users, its config, and the best baseline's per-query results, so a compressed form or a
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


@dataclasses.dataclass
class ValidationRun:
    """The floor's report (JSON: checkpoint and manifest) and what export's choices reuse (the checkpoint only)."""

    report: dict
    model: object  # MetaRecModel fit on the train users
    config: object  # its TrainConfig (fit_users="train")
    baseline: dict  # the best baseline's per-query results on the validation users ({"user", "k", "hr", ...})

    def to_checkpoint(self) -> dict:
        sd = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"train_config": self.config.to_dict(), "n_items": int(self.model.n_items), "state_dict": sd,
                "baseline": {k: np.asarray(v) for k, v in self.baseline.items()}}


def validation_run(cfg, ds, baselines=FLOOR_BASELINES) -> ValidationRun:
    """The prior (`cfg`, fit on train users) against `baselines` on the validation users of `ds`."""
    from metarec.sdk.recommender import MetaRecRecommender

    split, log = split_users(ds), EventLog(ds)
    if not len(split.train) or not len(split.val):
        raise ValueError("the floor needs train and validation users (SplitConfig)")
    vcfg = dataclasses.replace(cfg, fit_users="train")
    rec = MetaRecRecommender(vcfg).fit(ds, split.train, log)
    res = {"metarec": evaluate_users(rec, ds, split.val, log, ks=HEADLINE_KS)}
    for name in baselines:
        res[name] = evaluate_users(baseline_on(name, ds, split.train, log), ds, split.val, log, ks=HEADLINE_KS)
    headline = {n: summarize_next_item(r, ks=HEADLINE_KS)["headline"]["hr10"] for n, r in res.items()}
    best = max(baselines, key=lambda n: headline[n])
    paired = paired_difference(res["metarec"], res[best], HEADLINE_KS)
    report = {"users": "validation", "n_users": int(len(split.val)), "headline_hr10": headline,
              "best_baseline": best, "paired_hr10_diff": paired["hr10_diff"],
              "paired_hr10_diff_ci": paired["hr10_diff_ci"], "verdict": verdict(paired["hr10_diff_ci"])}
    return ValidationRun(report, rec.model, vcfg, res[best])


def validation_floor(cfg, ds, baselines=FLOOR_BASELINES) -> dict:
    """The floor's report alone (see `validation_run`)."""
    return validation_run(cfg, ds, baselines).report


def floor_summary(report: dict) -> str:
    """One line for the console: the prior, the best baseline, the paired difference and the verdict."""
    h = report["headline_hr10"]
    lo, hi = report["paired_hr10_diff_ci"]
    return (f"floor (validation users, n={report['n_users']}): the prior alone HR@10 {h['metarec']:.3f} vs best "
            f"baseline {report['best_baseline']} {h[report['best_baseline']]:.3f}: paired "
            f"{report['paired_hr10_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] -> {report['verdict']}")
