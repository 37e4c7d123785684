"""One user's entry in the Recommender's per-user cache (recommender.py drops it when the user's events, the catalog
the neighbour or onboarding pack change): everything `recommend` needs for the user. Fields built for one head, trend tensor or
scene record what they were built for, and `recommend` rebuilds them when that changed.
"""
from __future__ import annotations

import torch


class UserState:
    """Everything `recommend` needs for one user, ready to pass to score.pte."""

    __slots__ = ("seq", "stored_seq", "idx", "last_ts", "head", "head_scene", "hist_np", "mask_np", "hist_vecs",
                 "hist_mask", "exclude", "excluded", "because_code", "because_labels", "args", "args_head",
                 "args_trend", "recent_unit_t", "because_of", "rank_key", "rank_args", "vec_np", "offset_np",
                 "neighbor", "pop_w", "onboard", "delta_exclude", "delta_scores", "delta_args", "delta_scene")

    def __init__(self, seq, idx, last_ts, hist_np, mask_np, exclude, because_code, because_labels):
        self.seq, self.idx, self.last_ts = seq, idx, last_ts  # newest arrival seq; item indices in time order
        self.stored_seq = -1  # the event seq of the head in the store
        self.head = None  # tensor (P,), valid for scene `head_scene` (bytes; b"" = any scene)
        self.head_scene = None
        self.hist_np, self.mask_np = hist_np, mask_np
        self.hist_vecs, self.hist_mask = torch.from_numpy(hist_np), torch.from_numpy(mask_np)
        self.exclude, self.excluded = torch.from_numpy(exclude), frozenset(idx.tolist())
        # because_labels[because_code[i]] explains item i. For a user with history, because_code is instead the
        # recent item indices and only the k returned items are explained (a catalog-wide pass per user cost ~120 us)
        self.because_code, self.because_labels = because_code, because_labels
        # score.pte's input list, valid while `head` and the recommender's trend tensor are these objects
        self.args, self.args_head, self.args_trend = None, None, None
        self.recent_unit_t = None  # (d, R) unit vectors of the recent items in because_code (lazily)
        self.because_of: dict[int, int] = {}  # item -> index into because_labels, for items already returned
        # score.pte's rank inputs: forward's user vector and offset, valid for `args` and the scene `rank_key`
        self.rank_key, self.rank_args, self.vec_np, self.offset_np = None, None, None, None
        self.neighbor = None  # (item indices, values) of the item-item term for this history (neighbors.py)
        self.pop_w = 0.0  # the popularity feature's weight at this history length (manifest HistoryWeights)
        self.onboard = None  # (weight, pack row) of the onboarding term at this history length, once a pack is set
        # catalog deltas: each delta program's exclude view, and their scores for `args` in scene `delta_scene`
        self.delta_exclude, self.delta_scores, self.delta_args, self.delta_scene = (), None, None, None
