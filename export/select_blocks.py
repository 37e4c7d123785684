"""The validation priors export's choices score with (export/select.py): one per forward block of the checkpoint's
validation run (sdk/floor.py `forward_blocks`), each scoring only the users of its own block, their queries pooled.

A checkpoint written before the blocks holds one prior (its `state_dict`), judged on the validation users.
"""
from __future__ import annotations

import numpy as np


class ValidationPriors:
    """Per block: the prior, the users it was fit on and the users it judges. `map` builds a candidate (another
    popularity weight, no steps, a compressed form) the same way from every block's prior."""

    def __init__(self, models: list, fits: list, users: list):
        self.models, self.fits, self.users = list(models), list(fits), list(users)

    @classmethod
    def from_checkpoint(cls, validation: dict, tcfg, ds) -> "ValidationPriors":
        from metarec.sdk.protocol import split_users
        from metarec.sdk.train import model_from_state

        n = int(validation["n_items"])
        if "blocks" not in validation:  # one prior fit on the train users (checkpoints before the blocks)
            split = split_users(ds)
            return cls([model_from_state(tcfg, n, validation["state_dict"], "validation prior")], [split.train],
                       [split.val])
        bl = validation["blocks"]
        models = [model_from_state(tcfg, n, b["state_dict"], f"validation prior, block {i + 1}")
                  for i, b in enumerate(bl)]
        return cls(models, [np.asarray(b["fit"]) for b in bl], [np.asarray(b["users"]) for b in bl])

    def map(self, fn) -> "ValidationPriors":
        """fn(model) per block."""
        return ValidationPriors([fn(m) for m in self.models], self.fits, self.users)

    def map_fit(self, fn) -> "ValidationPriors":
        """fn(model, its fit users) per block (a pruned form is re-fine-tuned on them)."""
        return ValidationPriors([fn(m, f) for m, f in zip(self.models, self.fits)], self.fits, self.users)

    @property
    def cfg(self):
        return self.models[-1].cfg  # the same ModelConfig in every block

    @property
    def judged(self) -> np.ndarray:
        """Every block's users, earliest block first."""
        return np.concatenate(self.users)

    def per_user(self, fn):
        """A function user -> fn(the model of the user's block), computed once per block."""
        cache: dict = {}
        owner = self.owner()

        def of(user):
            i = owner[int(user)]
            if i not in cache:
                cache[i] = fn(self.models[i])
            return cache[i]
        return of

    def owner(self) -> dict:
        return {int(u): i for i, us in enumerate(self.users) for u in us}


class ByBlock:
    """One scorer per block; a query goes to the scorer of its user's block."""

    def __init__(self, recs: list, priors: ValidationPriors):
        self.recs, self.name, self._owner = recs, recs[-1].name, priors.owner()

    def score(self, q) -> np.ndarray:
        return self.recs[self._owner[int(q.user)]].score(q)


def validation_state(validation: dict) -> dict:
    """The state dict of the prior fit on the train users, which judges the validation users (the last block)."""
    return validation["blocks"][-1]["state_dict"] if "blocks" in validation else validation["state_dict"]
