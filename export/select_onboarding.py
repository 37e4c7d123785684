"""Export selection step 2d (export/select.py; docs/decisions/onboarding.md): the onboarding term's weight per
history-length bucket, on the validation users, on top of everything 1-2c chose.

Per bucket (ONBOARDING_BUCKETS) each weight of the grid is added to the shipped scorer's scores; the weights
whose paired gain over none lies above 0 are candidates, and the smallest candidate within one standard error of the
best one ships (the one-standard-error rule; the error of the paired difference best minus it, from its 95%
bootstrap interval): a flat top is common (ML-100K, K = 1..3: weights 1 to 8 within 0.004 of each other on
validation users) and the smallest weight on it moves the prior least. A whole 95% interval instead (not below the
best) took 0.25 there, worth a third of weight 1's gain.
"""
from __future__ import annotations

import numpy as np

ONBOARDING_WEIGHTS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # of log1p(count), beside the prior's raw scores
# a new user (K = 0) apart: no choice is made on queries it was not measured on; the first three lengths together:
# one length of ~94 validation users is too few queries to measure a weight (ML-100K, K = 3 alone: none
# measurable); later lengths apart, where a sign-up flow no longer leads
ONBOARDING_BUCKETS = ((0,), (1, 2, 3), tuple(range(4, 11)))
ONBOARDING_WINDOW_DAYS = 7.0  # the trending pack's window: what users at that step took this week
HEADLINE = (1, 2, 3)  # the bucket the bundle's floor reads (select.py HEADLINE_KS)


class _OnboardingQueries:
    """The validation queries with K in `ks`: the shipped scorer's scores and the onboarding feature, once."""

    def __init__(self, scorer, ds, users, log, ks, spec):
        from metarec.sdk.onboarding import onboarding_feature
        from metarec.sdk.protocol import next_item_queries

        self.user, self.k, self.rows = [], [], []
        for u, k, q, target in next_item_queries(ds, log, users, ks):
            if target in set(q.support_items.tolist()):
                continue  # as evaluate_users: a repeat of a support item is not a query
            self.user.append(u)
            self.k.append(k)
            f = onboarding_feature(log, q.t, q.user, k, spec)
            nz = np.flatnonzero(f)  # a week of other users' counts at one step: a few items of the catalog
            self.rows.append((scorer.score(q), (nz, f[nz]), target, np.asarray(q.support_items)))
        self.user, self.k = np.asarray(self.user), np.asarray(self.k)

    def results(self, ks, w: float) -> dict:
        from metarec.sdk.protocol import rank_metrics

        sel = np.flatnonzero(np.isin(self.k, ks))
        hr = np.empty(len(sel))
        for j, i in enumerate(sel):
            s, (nz, f), target, support = self.rows[i]
            if w:  # s + w * feature, item by item as the dense sum (feature 0 elsewhere adds nothing)
                s = s.copy()
                s[nz] += w * f
            hr[j] = rank_metrics(s, target, support)[0]
        return {"user": self.user[sel], "k": self.k[sel], "hr": hr}


def _floor_note(r: dict | None) -> str:
    """The console's tail for a bucket `_toward_floor` looked at (empty when it was not below the floor)."""
    if r is None:
        return ""
    if r["to"] == r["from"]:
        return f"; below the floor's baseline ({r['gap_before']:+.3f}) and no larger weight closer to it"
    return (f"; x{r['from']:g} was below the floor's baseline ({r['gap_before']:+.3f}): raised to x{r['to']:g} "
            f"({r['gap_after']:+.3f})")


def _within_one_se(p: dict) -> bool:
    """The paired difference best minus a weight is at most one standard error (its 95% interval / 3.92)."""
    return p["diff"] <= (p["ci"][1] - p["ci"][0]) / 3.92


def _toward_floor(res: dict, ks, w: float, floor: dict, paired) -> tuple[float, dict | None]:
    """(weight, report or None): `w` when the bucket's validation HR@10 at `w` is not below `floor`'s on the same
    queries; else the smallest larger grid weight that is not, or the larger one closest to it if it is closer than
    `w`. `res`: the bucket's results per weight, 0 included. The point estimate, not the interval: a flat top is where
    the interval cannot tell, so the side of the floor decides which end of it to lean to."""
    grid = (w,) + tuple(x for x in ONBOARDING_WEIGHTS if x > w)
    try:
        gap = {x: paired(res[x], floor, ks)["diff"] for x in grid}
    except ValueError:  # the floor's run did not score these queries (an older checkpoint): nothing to compare
        return w, None
    if gap[w] >= 0:
        return w, None
    up = [x for x in gap if x > w]
    new = next((x for x in up if gap[x] >= 0), max(up, key=lambda x: gap[x], default=w))
    new = new if gap[new] > gap[w] else w
    return new, {"from": w, "to": new, "gap_before": gap[w], "gap_after": gap[new],
                 "grid": {str(x): g for x, g in gap.items()}}


def choose_onboarding(scorer, ds, users, log, paired, say, buckets=ONBOARDING_BUCKETS, floor: dict | None = None
                      ) -> tuple[dict, object]:
    """(report, the manifest OnboardingSpec or None): per bucket, the smallest weight that gains measurably and lies
    within one standard error of the best; the bucket of K = 1..3 then moves toward `floor` (the best baseline's
    per-query validation results) when it is below it (`_toward_floor`). `scorer` scores as the bundle will without
    the term; `paired(a, b, ks)` is select.py's paired difference."""
    from metarec.runtime.manifest import OnboardingSpec
    from metarec.sdk.protocol import ONBOARDING_SPAN

    probe = OnboardingSpec(weight=(1.0,), span=ONBOARDING_SPAN, window_days=ONBOARDING_WINDOW_DAYS)
    qs = _OnboardingQueries(scorer, ds, users, log, tuple(k for b in buckets for k in b), probe)
    rows, weights = [], []
    for ks in buckets:
        base = qs.results(ks, 0.0)
        res = {w: qs.results(ks, w) for w in ONBOARDING_WEIGHTS}
        gains = {w: paired(r, base, ks) for w, r in res.items()}
        cands = [w for w in ONBOARDING_WEIGHTS if gains[w]["ci"][0] > 0]
        w = 0.0
        if cands:
            best = max(cands, key=lambda x: gains[x]["diff"])
            w = next(x for x in cands if x == best or _within_one_se(paired(res[best], res[x], ks)))
        raised = (_toward_floor({0.0: base, **res}, ks, w, floor, paired)[1]
                  if floor is not None and ks == HEADLINE else None)
        if raised is not None:
            w = raised["to"]
        weights += [w] * (1 if ks is buckets[-1] else len(ks))  # onboarding_weight: K = 0, 1, ... the last for longer
        rows.append({"ks": list(ks), "weight": w, "hr10_without": float(np.mean(base["hr"])),
                     "paired": gains[w] if w else None, "toward_floor": raised,
                     "grid": {str(x): {"hr10": float(np.mean(r["hr"])), "paired": gains[x]} for x, r in res.items()}})
        span = f"{ks[0]}{'..' + str(ks[-1]) if len(ks) > 1 else ''}"
        say(f"   onboarding term K = {span}: " + (
            f"x{w:g}: paired {gains[w]['diff']:+.3f} [{gains[w]['ci'][0]:+.3f}, {gains[w]['ci'][1]:+.3f}] over none"
            if w else "off (no weight gains measurably)") + _floor_note(raised))
    rep = {"buckets": rows, "weights": list(ONBOARDING_WEIGHTS), "span": probe.span,
           "window_days": probe.window_days}
    if not any(weights):
        return rep, None
    return rep, OnboardingSpec(weight=tuple(weights), span=probe.span, window_days=probe.window_days)
