"""Sequential baselines (issue 20, item 5): a small SASRec-style self-attention model and a GRU4Rec-style GRU,
behind the same `Recommender` contract as the others (sdk.protocol).

Fit: the fit users' item sequences in time order (the same events ALS / MF see), each user's first `max_len + 1`
events, learned positions counted from the user's first event, next-item objective with a full softmax over the
catalog (output embeddings tied to the input ones). The epoch count is chosen by the code, per dataset: a seeded
sixth of the fit users (`INNER_VAL_SHARE`, as sdk/floor.py's blends) is held out of training and scores the
PROTOCOL headline (HR@10 over K = 1..3, the same queries `evaluate_users` would make: support = the first K
events, support excluded, a target repeating a support item skipped; ties by NDCG@10) after every epoch; training
stops `patience` epochs after the best and keeps the best epoch's weights.

Score: the query's support items in time order (the cold user's first K events, positions 0..K-1) -> the
representation at the last position -> a logit per catalog item; support items sink below every other item
(finite, so z-score blends stay finite). K = 0: popularity, as item-kNN / transition / ALS. Like ALS and MF this is
the usual offline prior: weights come from the fit users' whole histories; a query reads nothing from `q.log`.

torch is imported inside `fit` / `score` only: `metarec --help` loads the registry without it.
"""
from __future__ import annotations

import time

import numpy as np

from metarec.sdk.data import Dataset
from metarec.sdk.protocol import HEADLINE_KS, EventLog, Query, rank_metrics

INNER_VAL_SHARE = 1 / 6  # the same share as sdk.floor.INNER_VAL_SHARE (floor imports the baselines: no import here)
ARCHS = ("sasrec", "gru4rec")


def _build_net(arch: str, n_items: int, dim: int, blocks: int, heads: int, max_len: int, dropout: float):
    """The torch module: items (pad = n_items) -> (B, L, n_items) next-item logits, causal."""
    import torch
    from torch import nn

    class SeqNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.arch, self.n_items = arch, n_items
            self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
            nn.init.normal_(self.item.weight, std=dim ** -0.5)
            with torch.no_grad():
                self.item.weight[n_items].zero_()
            self.drop = nn.Dropout(dropout)
            if arch == "sasrec":
                self.pos = nn.Embedding(max_len, dim)
                nn.init.normal_(self.pos.weight, std=dim ** -0.5)
                layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout,
                                                   activation="gelu", batch_first=True, norm_first=True)
                self.enc = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(dim)
                self.register_buffer("causal", torch.triu(torch.full((max_len, max_len), float("-inf")), 1),
                                     persistent=False)
            else:
                self.gru = nn.GRU(dim, dim, num_layers=blocks, batch_first=True,
                                  dropout=dropout if blocks > 1 else 0.0)
            self.out_bias = nn.Parameter(torch.zeros(n_items))

        def hidden(self, x):  # (B, L) -> (B, L, dim); padding sits to the right, so causality keeps it unseen
            h = self.item(x)
            if self.arch == "sasrec":
                L = x.shape[1]
                h = self.drop(h + self.pos.weight[:L])
                h = self.norm(self.enc(h, mask=self.causal[:L, :L], is_causal=True))
            else:
                h, _ = self.gru(self.drop(h))
            return self.drop(h)

        def forward(self, x):
            return self.hidden(x) @ self.item.weight[:self.n_items].T + self.out_bias

    return SeqNet()


def _sequences(ds: Dataset, users: np.ndarray, length: int) -> list[np.ndarray]:
    """Each user's first `length` items in time order (users with at least 2 events: one move to learn from)."""
    per_user = ds.user_events()
    return [ds.item[per_user[u][:length]] for u in users if len(per_user[u]) >= 2]


def _pad(seqs: list[np.ndarray], width: int, fill: int) -> np.ndarray:
    out = np.full((len(seqs), width), fill, np.int64)
    for r, s in enumerate(seqs):
        out[r, :len(s)] = s[:width]
    return out


class SeqRec:
    """SASRec-style (`arch="sasrec"`: `blocks` pre-norm causal self-attention blocks, `heads` heads, learned
    positions) or GRU4Rec-style (`arch="gru4rec"`: a `blocks`-layer GRU) next-item model; see the module doc.

    Defaults are the published small settings (SASRec: d 50-64, 2 blocks, dropout 0.2, Adam 1e-3), not tuned on a
    dataset; the epoch count is chosen per dataset on the inner validation slice of the fit users."""

    def __init__(self, arch: str = "sasrec", dim: int = 64, blocks: int = 2, heads: int = 1, max_len: int = 50,
                 dropout: float = 0.2, lr: float = 1e-3, weight_decay: float = 0.0, batch: int = 32,
                 max_epochs: int = 40, patience: int = 6, seed: int = 0, threads: int = 1, progress: bool = True,
                 name: str | None = None):
        if arch not in ARCHS:
            raise ValueError(f"arch {arch!r} unknown; known: {', '.join(ARCHS)}")
        if max_len < max(HEADLINE_KS) or max_epochs < 1 or patience < 1:
            raise ValueError(f"need max_len >= {max(HEADLINE_KS)}, max_epochs >= 1 and patience >= 1")
        self.name = name or arch
        self.arch = arch
        self.hp = dict(dim=dim, blocks=blocks, heads=heads, max_len=max_len, dropout=dropout, lr=lr,
                       weight_decay=weight_decay, batch=batch, max_epochs=max_epochs, patience=patience, seed=seed)
        self.threads, self.progress = threads, progress
        self.net = None
        self.params: dict | None = None

    # ------------------------------------------------------------------------------------------ fit
    def inner_split(self, fit_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train, inner validation) users: a seeded sixth of the fit users (seed 0, as sdk/floor.py's blends)."""
        perm = np.random.default_rng(0).permutation(np.sort(np.asarray(fit_users)))
        n = max(1, int(len(perm) * INNER_VAL_SHARE)) if len(perm) > 1 else 0
        return np.sort(perm[n:]), np.sort(perm[:n])

    def fit(self, ds: Dataset, fit_users: np.ndarray, log: EventLog | None = None) -> "SeqRec":
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # a shared 2-core box: more threads only contend
        try:
            with torch.random.fork_rng():  # the seed governs init and dropout without touching the caller's RNG
                torch.manual_seed(self.hp["seed"])
                self._fit(ds, np.asarray(fit_users))
        finally:
            torch.set_num_threads(prev)
        return self

    def _fit(self, ds: Dataset, fit_users: np.ndarray) -> None:
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        hp = self.hp
        t0, c0 = time.perf_counter(), time.process_time()
        train_u, val_u = self.inner_split(fit_users)
        seqs = _sequences(ds, train_u, hp["max_len"] + 1)
        if not seqs:
            raise ValueError(f"{self.name}: no fit user has 2 events or more")
        x = torch.as_tensor(_pad([s[:-1] for s in seqs], hp["max_len"], ds.n_items))
        y = torch.as_tensor(_pad([s[1:] for s in seqs], hp["max_len"], -100))  # -100: no target (F.cross_entropy)
        lens = np.array([len(s) - 1 for s in seqs])
        val = _sequences(ds, val_u, max(HEADLINE_KS) + 1)
        self.net = _build_net(self.arch, ds.n_items, hp["dim"], hp["blocks"], hp["heads"], hp["max_len"],
                              hp["dropout"])
        opt = torch.optim.Adam(self.net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        rng = np.random.default_rng(hp["seed"])
        curve, best, best_state, since = [], ((-1.0, -1.0), 0), None, 0
        bar = tqdm(range(1, hp["max_epochs"] + 1), disable=not self.progress, desc=f"fit {self.name}", leave=False)
        for epoch in bar:
            self.net.train()
            perm = rng.permutation(len(seqs))
            for j in range(0, len(perm), hp["batch"]):
                idx = perm[j:j + hp["batch"]]
                w = int(lens[idx].max())  # trim the batch to its longest sequence
                logits = self.net(x[idx, :w])
                loss = F.cross_entropy(logits.reshape(-1, ds.n_items), y[idx, :w].reshape(-1), ignore_index=-100)
                opt.zero_grad()
                loss.backward()
                opt.step()
            hr_nd = self.inner_headline(val, ds.n_items) if val else (float("nan"), float("nan"))
            curve.append(hr_nd[0])
            if not val or hr_nd > best[0]:  # HR@10 first, NDCG@10 breaks its ties
                best, since = (hr_nd, epoch), 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                since += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val_hr10=f"{hr_nd[0]:.3f}", best=best[1])
            if since >= hp["patience"]:
                break
        self.net.load_state_dict(best_state)
        self.net.eval()
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.params = {**hp, "arch": self.arch, "epochs_run": len(curve), "best_epoch": best[1],
                       "inner_val_hr10": best[0][0], "inner_val_ndcg10": best[0][1], "inner_val_curve": curve, "n_train_users": len(seqs),
                       "n_inner_val_users": len(val), "fit_seconds": round(secs, 1),
                       "fit_cpu_seconds": round(cpu, 1),
                       "selected_on": f"a seeded {INNER_VAL_SHARE:.3f} of the fit users (headline HR@10)"}
        if self.progress:
            tqdm.write(f"{self.name}: fit in {secs:.1f} s ({cpu:.1f} s CPU) on {len(seqs)} users, best epoch {best[1]} of "
                       f"{len(curve)} (inner validation HR@10 {best[0][0]:.3f}, {len(val)} users)")

    def inner_headline(self, seqs: list[np.ndarray], n_items: int) -> tuple[float, float]:
        """PROTOCOL headline (HR@10, NDCG@10) (per-user means over K = 1..3, then the mean over users) of the current
        weights on the users whose first events are `seqs`: one causal forward pass gives every K's scores."""
        import torch

        ks = HEADLINE_KS
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            logits = self.net(torch.as_tensor(_pad(seqs, max(ks), n_items))).double().numpy()
        self.net.train(was)
        per_user = []
        for r, s in enumerate(seqs):
            m = [rank_metrics(logits[r, k - 1], int(s[k]), s[:k]) for k in ks if len(s) > k and s[k] not in s[:k]]
            if m:
                per_user.append(np.mean(m, 0))
        if not per_user:
            return float("nan"), float("nan")
        hr, nd = np.mean(per_user, 0)
        return float(hr), float(nd)

    # ------------------------------------------------------------------------------------------ score
    def score(self, q: Query) -> np.ndarray:
        if len(q.support_items) == 0:
            return q.popularity.astype(np.float64)
        if self.net is None:
            raise RuntimeError(f"{self.name}: fit before score")
        import torch

        sup = np.asarray(q.support_items, np.int64)[-self.hp["max_len"]:]
        with torch.no_grad():
            s = self.net(torch.as_tensor(sup)[None])[0, -1].double().numpy()
        s[q.support_items] = s.min() - 1.0  # already seen: below every other item, still finite
        return s
