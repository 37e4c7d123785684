"""TrainConfig.average_last: the parameters after meta-training are the mean of the last steps' iterates
(sdk/train.py fit_model; lab/weight_average.py measured it: no gain on ML-100K or world-a, so it is off by default)."""
from __future__ import annotations

import torch


class WeightAverage:
    """Uniform average of the parameters over steps `first`.. (Polyak tail averaging): the last Adam iterate
    wanders around the optimum by the step noise; the tail mean sits nearer it at no serving cost."""

    def __init__(self, model: torch.nn.Module, first: int):
        self.first = int(first)
        self.n = 0
        self.sum = {n: torch.zeros_like(p) for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        if step >= self.first:
            for n, p in model.named_parameters():
                self.sum[n].add_(p.detach())
            self.n += 1

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> None:
        if self.n:
            for n, p in model.named_parameters():
                p.copy_(self.sum[n] / self.n)

    def state(self) -> dict:
        return {"first": self.first, "n": self.n, "sum": {k: v.clone() for k, v in self.sum.items()}}

    def load(self, st: dict | None) -> None:
        if st is None or st["first"] != self.first or set(st["sum"]) != set(self.sum):
            raise ValueError("the checkpoint's weight average does not match this config; delete it to restart")
        self.n, self.sum = int(st["n"]), st["sum"]
