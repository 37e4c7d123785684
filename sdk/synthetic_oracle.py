"""The generator's own scorers on a synthetic world: what is reachable, and where a model loses it.

Three references (docs/protocol.md, "More than one dataset"), each the `Recommender` contract:
- `truth`: the generator's logit at the target time with the user's TRUE prototype (no support needed): the oracle;
- `posterior`: the Bayes posterior over the prototypes given the support events (the same generator, each support
  pick scored against what was released and unseen at its time), mixed into the predictive distribution: what an
  ideal reader of 1-3 events reaches;
- `world`: the same with a uniform prior, no support: every planted world term (base appeal, scene lifts, bursts,
  releases) but nothing about the user.
"""
from __future__ import annotations

import numpy as np

from metarec.runtime.scene import scene_features

MODES = ("truth", "posterior", "world")


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


class WorldOracle:
    """A generator reference scorer (`mode` in MODES); fit reads the planted truth from `ds.extras`."""

    def __init__(self, mode: str = "truth"):
        if mode not in MODES:
            raise ValueError(f"unknown oracle mode {mode!r}; known: {MODES}")
        self.mode, self.name = mode, f"oracle ({mode})"

    def fit(self, ds, fit_users=None, log=None) -> "WorldOracle":
        from metarec.sdk.synthetic import SCENE_COLUMNS, SyntheticConfig

        ex = ds.extras
        if "item_base" not in ex:
            raise ValueError("WorldOracle needs a dataset from sdk.synthetic.generate (planted truth in extras)")
        self.cfg = SyntheticConfig.from_dict(ex["config"])
        self.columns = SCENE_COLUMNS
        self.base = np.asarray(ex["item_base"], np.float64)
        self.affinity = np.asarray(ex["scene_item_affinity"], np.float64)
        self.release = np.asarray(ex["item_release"], np.float64)
        self.bursts = ex["bursts"]
        self.user_proto = np.asarray(ex["user_prototype"])
        P = self.cfg.n_prototypes
        self.lift = self.cfg.proto_strength * (np.asarray(ex["item_prototype"])[None, :] == np.arange(P)[:, None])
        return self

    def world(self, t: float) -> np.ndarray:
        """(N,) every planted term at time t but the user's prototype; -inf for items not yet released."""
        scene = scene_features([t], self.cfg.scene_spec)[0, list(self.columns)]
        out = self.base + self.cfg.scene_boost * (scene @ self.affinity)
        for b in self.bursts:
            if b["start"] <= t < b["end"]:
                out[b["item"]] += self.cfg.burst_boost
        out[self.release > t] = -np.inf
        return out

    def posterior(self, support_items, support_ts) -> np.ndarray:
        """(P,) P(prototype | support): each pick's probability among what was released and unseen then."""
        logpost = np.zeros(self.lift.shape[0])
        seen = np.zeros(self.lift.shape[1], bool)
        for i, t in zip(np.asarray(support_items, np.int64), support_ts):
            w = self.world(float(t))
            w[seen] = -np.inf
            logits = w[None, :] + self.lift
            logpost += logits[:, i] - _logsumexp(logits)
            seen[i] = True
        return np.exp(logpost - _logsumexp(logpost))

    def score(self, q) -> np.ndarray:
        w = self.world(q.t)
        if self.mode == "truth":
            return w + self.lift[self.user_proto[q.user]]
        P = self.lift.shape[0]
        post = self.posterior(q.support_items, q.support_ts) if self.mode == "posterior" else np.full(P, 1.0 / P)
        w[np.asarray(q.support_items, np.int64)] = -np.inf  # what the user picked is not picked again
        logits = w[None, :] + self.lift
        logp = logits - _logsumexp(logits)[:, None]
        with np.errstate(divide="ignore"):
            return _logsumexp(np.log(post)[:, None] + logp, axis=0)  # log of the posterior predictive
