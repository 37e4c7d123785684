"""`MetaRecRecommender`: the meta-learned prior behind PROTOCOL v1's `Recommender` contract (fit / score), so
`metarec eval` treats it like any baseline. Scoring runs exactly the functions export bakes: the exported item
table and bias, `adapt` (the phone's <= 3 Meta-SGD steps) and `score_from_vectors`.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from metarec.runtime.manifest import at_length, onboarding_weight
from metarec.runtime.neighbors import add_neighbor_term
from metarec.sdk.train import TrainConfig, data_fingerprint, fit_model, load_checkpoint


class CheckpointMismatch(ValueError):
    """The checkpoint cannot serve this data (another catalog, or missing): refused, never silently retrained."""


class MetaRecRecommender:
    """fit: load `checkpoint` when it was trained on exactly this data (same fit users and events), else meta-train
    with `config` (default: the checkpoint's config), so the new-item run never reuses a full-data prior."""

    def __init__(self, config: TrainConfig | None = None, checkpoint: str | os.PathLike | None = None,
                 name: str = "metarec", save_to: str | os.PathLike | None = None):
        if config is None:
            config = load_checkpoint(checkpoint)[1] if checkpoint is not None else TrainConfig()
        self.config, self.checkpoint, self.name, self.save_to = config, checkpoint, name, save_to
        self.model = None
        self.stats: dict = {}
        self.neighbors = None  # (LiveNeighbors, last, decay, weight): the item-item term, from the pack of q.t
        self.by_history = None  # (term weights, popularity weights, (N,) popularity feature): manifest HistoryWeights
        self.onboarding = None  # manifest OnboardingSpec: the onboarding term, its counts those of the pack of q.t

    def fit(self, ds, fit_users: np.ndarray, log=None) -> "MetaRecRecommender":
        fit_users = np.asarray(fit_users, np.int64)
        if self.checkpoint is not None:
            if not os.path.isfile(self.checkpoint):
                raise CheckpointMismatch(f"checkpoint {self.checkpoint} does not exist")
            model, cfg, ck = load_checkpoint(self.checkpoint)
            ids = [str(x) for x in ds.item_ids]
            if ck.get("item_ids") is not None and ck["item_ids"] != ids:
                raise CheckpointMismatch(
                    f"checkpoint {self.checkpoint} was trained on another catalog ({ck['n_items']} items, this data "
                    f"{ds.n_items}; dataset {cfg.dataset!r}): pass its --dataset or train on this data")
            # same catalog, other fit users or withheld events (the new-item run): meta-train anew below
            if ck.get("data_fingerprint") == data_fingerprint(ds, fit_users):
                self.set_model(model, cfg)
                self.stats = ck.get("stats", {})
                return self
        model, self.stats = fit_model(self.config, ds, fit_users, self.save_to)
        self.set_model(model, self.config)
        return self

    def set_model(self, model, cfg: TrainConfig, table: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> "MetaRecRecommender":
        """Score with a given model (no fit); `table` / `bias` replace its own, e.g. the table as a phone decodes it."""
        self.model, self.config = model.eval(), cfg
        self.learner = cfg.learner_obj()
        self.table = model.export_item_table() if table is None else table
        self.bias = model.export_item_bias() if bias is None else bias
        self.L = cfg.model.hist_len
        with torch.no_grad():
            self.head0 = {k: v.detach().clone() for k, v in self.learner.head0(model).items()}
        return self

    def set_neighbors(self, live, last: int, decay: float, weight: float) -> "MetaRecRecommender":
        """Add the item-item term (runtime_py/neighbors.py) to every score, its rows those of the server's
        neighbour pack at the query's time (`live`: sdk.neighbors.LiveNeighbors), as the runtimes add it with the
        newest pack; weight 0 removes it."""
        self.neighbors = (live, last, decay, weight) if weight > 0 else None
        return self

    def set_by_history(self, term: tuple, popularity: tuple, feature: np.ndarray | None) -> "MetaRecRecommender":
        """Weights by history length, as the runtimes read a manifest's `by_history` (HistoryWeights): `term`
        replaces the item-item term's weight (needs `set_neighbors`, whose weight > 0 names the kind), and
        `popularity` times `feature` joins the score; both empty removes them."""
        self.by_history = (tuple(term), tuple(popularity), feature) if term or popularity else None
        return self

    def set_onboarding(self, spec) -> "MetaRecRecommender":
        """Add the onboarding term (manifest OnboardingSpec) to every score, its counts those of the server's
        onboarding pack at the query's time (sdk/onboarding.py), as the runtimes add it; None removes it."""
        self.onboarding = spec
        return self

    def history_items(self, support_items: np.ndarray) -> torch.Tensor:
        """(L,) item indices of the right-aligned last-L history (padding rows: item 0, masked)."""
        items = np.asarray(support_items, np.int64)[-self.L:]
        idx = np.zeros(self.L, np.int64)
        if len(items):
            idx[self.L - len(items):] = items
        return torch.from_numpy(idx)

    def history(self, support_items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-aligned last-L history: (L, d) vectors and (L,) mask (row L-1 = newest)."""
        n = min(len(support_items), self.L)
        mask = np.zeros(self.L, np.float32)
        if n:
            mask[self.L - n:] = 1.0
        return self.table[self.history_items(support_items)], torch.from_numpy(mask)

    def adapted_head(self, support_items: np.ndarray, scene: np.ndarray) -> dict:
        hv, hm = self.history(support_items)
        sc = torch.as_tensor(np.asarray(scene, np.float32))
        with torch.no_grad():
            steps = self.learner.eval_steps
            if steps == 0 or hm.sum() == 0:
                return self.head0
            rates = self.learner.rates(self.model, sc)
            items = self.history_items(support_items)
            return self.model.adapt(self.head0, hv, hm, sc, self.table, steps, rates, self.bias, items)

    def score(self, q) -> np.ndarray:
        hv, hm = self.history(q.support_items)
        sc = torch.as_tensor(np.asarray(q.scene, np.float32))
        trend = torch.from_numpy(np.log1p(np.asarray(q.trending, np.float32)))
        head = self.adapted_head(q.support_items, q.scene)
        with torch.no_grad():
            s = self.model.score_from_vectors(head, hv, hm, sc, trend, self.table, self.bias)
        s = s.numpy().astype(np.float64)
        k = len(q.support_items)
        term, pop, feature = self.by_history if self.by_history is not None else ((), (), None)
        if self.neighbors is not None and k:
            live, last, decay, weight = self.neighbors
            weight = at_length(term, k, weight)
            if weight > 0:
                ids, w, local = live.rows(q.log, q.support_items, q.t, q.user, last)
                add_neighbor_term(s, ids, w, local, last, decay, weight)
        if pop:
            s[:len(feature)] += at_length(pop, k, 0.0) * feature
        if self.onboarding is not None:
            from metarec.sdk.onboarding import onboarding_feature

            w = onboarding_weight(self.onboarding.weight, k)
            if w:
                s += w * onboarding_feature(q.log, q.t, q.user, k, self.onboarding)
        return s
