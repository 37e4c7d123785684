"""The generator's own scorers on a synthetic world: what is reachable, and where a model loses it.

References (docs/protocol.md, "More than one dataset"), each the `Recommender` contract:
- `truth`: the generator's logit at the target time with the user's TRUE prototype and TRUE taste (no support
  needed): the oracle;
- `prototype`: the same with the true prototype but not the user's taste ("truth without taste"; equal to `truth`
  in a world without taste);
- `posterior`: the Bayes posterior over the prototypes given the support events (the same generator, each support
  pick scored against what was released and unseen at its time; in a world with taste the taste is marginalized
  out, see `taste_posterior`), mixed into the predictive distribution: what an ideal reader of 1-3 events reaches
  when it reads the prototype only;
- `posterior_taste`: the Bayes posterior over the prototype AND the user's taste vector from the support (Laplace
  approximation of the taste per prototype): what an ideal reader of every planted user term reaches;
- `world`: the same with a uniform prior, no support: every planted world term (base appeal, popularity drift,
  scene lifts, bursts, releases) but nothing about the user.

The taste term V_i . w_u has the same N(0, taste_strength^2) prior for every item (unit V_i), so a scorer that does
not know w_u adds nothing for it: `world`, `prototype` and `posterior` use the ratio of expectations
E[exp(logit_i)] / E[sum_j exp(logit_j)], under which the unknown taste cancels (the exact expectation of the
softmax is a little flatter).
"""
from __future__ import annotations

import numpy as np

from metarec.runtime.scene import scene_features

MODES = ("truth", "prototype", "posterior", "posterior_taste", "world")
NEWTON_STEPS = 6  # Laplace fit of the taste per prototype: Newton from w = 0 (converged to 1e-6 on world-b)


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _cov(pi: np.ndarray, V: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(P, d, d) covariance of the item vector under each row of pi (P, N): sum_n pi V V^T - m m^T."""
    return np.matmul((pi[:, :, None] * V[None]).transpose(0, 2, 1), V) - m[:, :, None] * m[:, None, :]


def _softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0.0))
    return e / e.sum(-1, keepdims=True)


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
        self.taste_s = float(self.cfg.taste_strength)
        self.item_taste = np.asarray(ex["item_taste"], np.float64) if self.taste_s > 0 else None
        self.user_taste = np.asarray(ex["user_taste"], np.float64) if self.taste_s > 0 else None
        self.drift = np.asarray(ex["item_drift"], np.float64) if self.cfg.drift_sd > 0 else None
        self.calendar = tuple(ex.get("calendar", (0.0, 1.0)))
        return self

    def world(self, t: float) -> np.ndarray:
        """(N,) every planted term at time t but the user's; -inf for items not yet released."""
        scene = scene_features([t], self.cfg.scene_spec)[0, list(self.columns)]
        out = self.base + self.cfg.scene_boost * (scene @ self.affinity)
        if self.drift is not None:
            t0, t1 = self.calendar
            out = out + self.drift * ((t - t0) / (t1 - t0))
        for b in self.bursts:
            if b["start"] <= t < b["end"]:
                out[b["item"]] += self.cfg.burst_boost
        out[self.release > t] = -np.inf
        return out

    def _support_worlds(self, support_items, support_ts) -> list[np.ndarray]:
        """The world logits each support pick was drawn from (released and not yet picked at its time)."""
        out, seen = [], np.zeros(self.lift.shape[1], bool)
        for i, t in zip(np.asarray(support_items, np.int64), support_ts):
            w = self.world(float(t))
            w[seen] = -np.inf
            out.append(w)
            seen[i] = True
        return out

    def posterior(self, support_items, support_ts) -> np.ndarray:
        """(P,) P(prototype | support): each pick's probability among what was released and unseen then."""
        logpost = np.zeros(self.lift.shape[0])
        for i, w in zip(np.asarray(support_items, np.int64), self._support_worlds(support_items, support_ts)):
            logits = w[None, :] + self.lift
            logpost += logits[:, i] - _logsumexp(logits)
        return np.exp(logpost - _logsumexp(logpost))

    def taste_posterior(self, support_items, support_ts):
        """Per prototype p, the Laplace posterior N(mu_p, S_p) of the user's taste w given the support and the log
        evidence of the support; returns (P,) prototype posterior, (P, d) mu, (P, d, d) S."""
        V, s = self.item_taste, self.taste_s
        P, d = self.lift.shape[0], V.shape[1]
        items = np.asarray(support_items, np.int64)
        base = [w[None, :] + self.lift for w in self._support_worlds(items, support_ts)]  # each (P, N)
        mu = np.zeros((P, d))
        for _ in range(NEWTON_STEPS if len(items) else 0):
            grad, hess = -mu, np.broadcast_to(-np.eye(d), (P, d, d)).copy()
            for i, b in zip(items, base):
                pi = _softmax(b + s * (mu @ V.T))  # (P, N)
                m = pi @ V  # (P, d) the expected item vector
                grad += s * (V[i][None, :] - m)
                hess -= s * s * _cov(pi, V, m)
            mu = mu - np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        # Laplace evidence: log lik(mu) + log N(mu; 0, I) + 0.5 log det S (the 2 pi terms cancel over p)
        hess = np.broadcast_to(-np.eye(d), (P, d, d)).copy()
        loglik = -0.5 * np.sum(mu * mu, 1)
        for i, b in zip(items, base):
            logits = b + s * (mu @ V.T)
            loglik += logits[:, i] - _logsumexp(logits)
            pi = _softmax(logits)
            hess -= s * s * _cov(pi, V, pi @ V)
        cov = np.linalg.inv(-hess)
        logev = loglik + 0.5 * np.linalg.slogdet(cov)[1]
        return np.exp(logev - _logsumexp(logev)), mu, cov

    def score(self, q) -> np.ndarray:
        w = self.world(q.t)
        if self.mode in ("truth", "prototype"):
            out = w + self.lift[self.user_proto[q.user]]
            if self.mode == "truth" and self.taste_s > 0:
                out = out + self.taste_s * (self.item_taste @ self.user_taste[q.user])
            return out
        P = self.lift.shape[0]
        extra = 0.0
        if self.mode in ("posterior", "posterior_taste") and self.taste_s > 0:
            # the support's picks are explained by prototype AND taste: the prototype posterior marginalizes the
            # taste (Laplace evidence); read as taste-blind likelihoods they over-commit to a prototype (on
            # tests/sdk/test_synthetic_oracle.py's taste world that reference fell below the world without the user)
            post, mu, cov = self.taste_posterior(q.support_items, q.support_ts)
            if self.mode == "posterior_taste":  # E[exp(s V_i . w)] under N(mu_p, S_p)
                V, s = self.item_taste, self.taste_s
                extra = s * (mu @ V.T) + 0.5 * s * s * np.einsum("pnd,nd->pn", np.matmul(V, cov), V)
        elif self.mode in ("posterior", "posterior_taste"):
            post = self.posterior(q.support_items, q.support_ts)
        else:
            post = np.full(P, 1.0 / P)
        w[np.asarray(q.support_items, np.int64)] = -np.inf  # what the user picked is not picked again
        logits = w[None, :] + self.lift + extra
        logp = logits - _logsumexp(logits)[:, None]
        with np.errstate(divide="ignore"):
            return _logsumexp(np.log(post)[:, None] + logp, axis=0)  # log of the posterior predictive


def oracle_results(ds, modes=MODES, progress: bool = False) -> dict[str, dict]:
    """{"oracle (<mode>)": PROTOCOL v1 result} for each reference on `ds`'s test users (next-item queries and the
    learning curve; no new-item run: the generator knows every item). A dataset without planted truth gives {}."""
    from metarec.sdk.protocol import PROTOCOL_VERSION, EventLog, evaluate_users, learning_curve, scene_slices
    from metarec.sdk.protocol import split_users, summarize_next_item

    if "item_base" not in getattr(ds, "extras", {}):
        return {}
    split, log = split_users(ds), EventLog(ds)
    out = {}
    for mode in modes:
        o = WorldOracle(mode).fit(ds)
        res = evaluate_users(o, ds, split.test, log, progress=progress)
        out[o.name] = {"model": o.name, "protocol": PROTOCOL_VERSION, "dataset": ds.name,
                       **summarize_next_item(res), "scene": scene_slices(res),
                       "learning_curve": learning_curve(o, ds, split.test, log, progress=progress),
                       "seeds": "deterministic", "reference": True}
    return out
