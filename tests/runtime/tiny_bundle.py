"""Tiny bundle builder for tests/runtime: a model that implements the program contract (runtime_py/manifest.py).

The model is deliberately small (40 items, d=8) but has every moving part the real one has: a head over
[u0; scene], a trend term, an exclude mask, Meta-SGD step sizes that depend on the scene, an int8 item table
stored once in items.bin. `TinyModel` is also the eager reference the parity tests compare the runtime with.
The score program's inputs and outputs are deliberately NOT in the canonical order, so the tests prove that
the runtime follows the manifest's recorded I/O.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metarec.runtime.manifest import (FileEntry, HeadSpec, HistoryWeights, Manifest, NeighborSpec, ProgramIO, Shapes,
                                      TableSpec)
from metarec.runtime.scene import SceneSpec, scene_features
from metarec.runtime.bundle_codecs import (encode_floats, encode_neighbors, encode_popularity, encode_program,
                                           sign_manifest)
from metarec.runtime.table_codec import decode_table, encode_table
from metarec.runtime.trending import TrendingPack

N, D, L, FD, S, R, K_MAX = 40, 8, 4, 15, 4, 6, 20
P = D * (D + FD) + D
INNER_STEPS = 3
ITEM_IDS = [str(100 + 3 * i) for i in range(N)]  # raw ids, not indices: catches index/id mix-ups
SCORE_INPUTS = ["scene", "head", "hist_vecs", "hist_mask", "exclude", "trend"]  # permuted on purpose
SCORE_OUTPUTS = ["topk_ids", "topk_scores"]
RANK_SCORE_OUTPUTS = ["topk_ids", "topk_scores", "offset", "user_vec"]  # forward's, with a rank method
RANK_SCORE_INPUTS = SCORE_INPUTS + ["table"]  # both methods take the table (same kernel, same scores)
RANK_INPUTS = ["table", "user_vec", "offset"]  # permuted on purpose too
ADAPT_INPUTS = ["theta0", "hist_vecs", "hist_mask", "scene", "target_vecs", "target_mask", "neg_vecs"]


class TinyModel:
    """Eager reference: z = u0 + tanh(W [u0; s] + b); score = table z + bias + w_t trend - 1e9 exclude."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        raw = torch.randn(N, D, generator=g).numpy()
        self.table_bytes = encode_table(raw, "int8", group_size=4)
        self.table = torch.from_numpy(decode_table(self.table_bytes, N, D, "int8", 4).copy())
        self.bias = torch.randn(N, generator=g) * 0.1
        self.phi0 = torch.randn(P, generator=g) * 0.3
        self.ws = torch.randn(FD, generator=g)
        self.trend_w = 0.7
        self.negatives = [1, 5, 9, 17, 23, 31]
        self.prototypes = torch.randn(3, D, generator=g)

    def z_of(self, theta, hv, hm, s):
        W = theta[: D * (D + FD)].reshape(D, D + FD)
        b = theta[D * (D + FD):]
        u0 = (hv * hm[:, None]).sum(0) / hm.sum().clamp(min=1.0)
        return u0 + torch.tanh(F.linear(torch.cat([u0, s]), W) + b)

    def scores(self, head, hv, hm, scene, trend, exclude):
        z = self.z_of(head, hv, hm, scene)
        return F.linear(z, self.table) + self.bias + self.trend_w * trend - 1e9 * exclude

    def alpha(self, scene):
        return 0.05 * (1 + torch.sigmoid((scene * self.ws).sum())) * torch.ones(P)

    def loss(self, theta, hv, hm, scene, tv, tm, nv):
        z = self.z_of(theta, hv, hm, scene)
        per = -F.logsigmoid((tv @ z)[:, None] - (nv @ z)[None, :]).mean(1)
        return (per * tm).sum() / tm.sum().clamp(min=1.0)

    # -- the eager pipeline the runtime must reproduce ---------------------------------------------------------
    def slots(self, idx, size):
        """Right-aligned, as sdk/model.py binds it: row size-1 = newest, padding first."""
        keep = list(idx)[-size:]
        vecs, mask = torch.zeros(size, D), torch.zeros(size)
        if keep:
            vecs[size - len(keep):] = self.table[keep]
            mask[size - len(keep):] = 1.0
        return vecs, mask

    def adapted_head(self, idx, scene_ts):
        """Adapt in the scene at `scene_ts` (the query time, as the sdk does)."""
        if not idx:
            return self.phi0.clone()
        hv, hm = self.slots(idx, L)
        tv, tm = self.slots(idx, S)
        scene = torch.from_numpy(scene_features([scene_ts])[0])
        nv = self.table[self.negatives]
        theta = self.phi0.clone()
        for _ in range(INNER_STEPS):
            theta = theta.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(theta, hv, hm, scene, tv, tm, nv), theta)
            theta = theta - self.alpha(scene) * grad
        return theta.detach()

    def topk(self, events, now, counts=None, k=10, adapt_at=None, neighbors=None, by_history=None, onboarding=None):
        """events: [(item_id, ts)] in recording order. The eager top-k item ids; the head is adapted in the
        scene at `adapt_at` (default: `now`). `by_history`: (term weights, popularity weights, (N,) feature) by
        history length (entry min(max(K, 1), len) - 1), written out here rather than imported. `onboarding`:
        (weights by history length, (11, N) pack counts): + weight * log1p(count of row min(K, 10))."""
        ordered = sorted(range(len(events)), key=lambda j: (events[j][1], j))
        idx = [ITEM_IDS.index(events[j][0]) for j in ordered]
        head = self.adapted_head(idx, now if adapt_at is None else adapt_at)
        hv, hm = self.slots(idx, L)
        trend = torch.zeros(N, dtype=torch.float64)
        for item, c in (counts or {}).items():
            trend[ITEM_IDS.index(item)] = c
        trend = torch.log1p(trend).float()
        exclude = torch.zeros(N)
        exclude[idx] = 1.0
        s = self.scores(head, hv, hm, torch.from_numpy(scene_features([now])[0]), trend, exclude)
        term, pop, feature = by_history if by_history is not None else ((), (), None)
        at = min(max(len(idx), 1), max(len(term), len(pop), 1)) - 1
        if neighbors is not None and idx:  # (ids, weights, spec dict): the item-item term, computed densely here
            ids, w, spec = neighbors
            c = np.zeros(N)
            for age, h in enumerate(idx[::-1][:spec["last"]]):
                np.add.at(c, ids[h], spec["decay"] ** age * w[h].astype(np.float64))
            s = s + torch.from_numpy((term[at] if term else spec["weight"]) * c / c.std()).float()
        if pop:
            s = s + torch.from_numpy(pop[at] * feature.astype(np.float64)).float()
        if onboarding is not None:
            w, rows = onboarding
            s = s + torch.from_numpy(w[min(len(idx), len(w) - 1)] * np.log1p(rows[min(len(idx), 10)])).float()
        return [ITEM_IDS[i] for i in torch.topk(s, k).indices.tolist()]


class _Score(torch.nn.Module):
    def __init__(self, m: TinyModel):
        super().__init__()
        self.m = m

    def forward(self, scene, head, hist_vecs, hist_mask, exclude, trend):
        values, ids = torch.topk(self.m.scores(head, hist_vecs, hist_mask, scene, trend, exclude), K_MAX)
        return ids, values


class _ScoreCaching(_Score):
    """forward of a score.pte with a rank method: also (offset, user_vec), what `_Rank` needs."""

    def forward(self, scene, head, hist_vecs, hist_mask, exclude, trend, table):
        m = self.m
        z = m.z_of(head, hist_vecs, hist_mask, scene).reshape(1, D)
        off = m.bias + m.trend_w * trend - 1e9 * exclude
        values, ids = torch.topk(F.linear(z, table).reshape(-1) + off, K_MAX)
        return ids, values, off, z


class _Rank(torch.nn.Module):
    def forward(self, table, user_vec, offset):
        values, ids = torch.topk(F.linear(user_vec, table).reshape(-1) + offset, K_MAX)
        return values, ids  # the contract's fixed order (ProgramIO.rank_method)


class _Adapt(torch.nn.Module):
    """One Meta-SGD step per forward_backward + SGD(lr=1): theta = theta0 + sqrt(alpha(scene)) * delta."""

    def __init__(self, m: TinyModel):
        super().__init__()
        self.m = m
        self.delta = torch.nn.Parameter(torch.zeros(P))

    def forward(self, theta0, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs):
        scale = torch.sqrt(self.m.alpha(scene))
        theta = theta0 + scale * self.delta
        return self.m.loss(theta, hist_vecs, hist_mask, scene, target_vecs, target_mask, neg_vecs), scale.detach()


def export_programs(m: TinyModel, planned_inputs: bool = False, rank: bool = False) -> tuple[bytes, bytes]:
    """score.pte lowered to XNNPACK (inputs not memory-planned, as export writes it, unless `planned_inputs`;
    with `rank`, forward also returns (offset, user_vec) and a `rank` method scores from them and the table);
    adapt.pte as an ExecuTorch training program."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from torch.export.experimental import _export_forward_backward

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = (torch.zeros(FD), m.phi0, torch.zeros(L, D), torch.zeros(L), torch.zeros(N), torch.zeros(N))
        plan = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=planned_inputs))
        if rank:
            eps = {"forward": torch.export.export(_ScoreCaching(m), ex + (m.table.clone(),)),
                   "rank": torch.export.export(_Rank(), (m.table.clone(), torch.zeros(1, D), torch.zeros(N)))}
            part = {k: [XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)] for k in eps}
            edge = to_edge_transform_and_lower(eps, partitioner=part)
        else:
            edge = to_edge_transform_and_lower(torch.export.export(_Score(m), ex), partitioner=[XnnpackPartitioner()])
        score = edge.to_executorch(plan).buffer
        exa = (m.phi0, torch.zeros(L, D), torch.ones(L), torch.zeros(FD), torch.zeros(S, D), torch.ones(S),
               torch.zeros(R, D))
        ep = _export_forward_backward(torch.export.export(_Adapt(m), exa, strict=False))
        adapt = to_edge(ep).to_executorch().buffer
    return score, adapt


def _entry(data: bytes) -> FileEntry:
    return FileEntry(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def write_bundle(out: Path, m: TinyModel, programs: tuple[bytes, bytes], private_pem: bytes, serial: int = 1,
                 trending: TrendingPack | None = None, inner_steps: int = INNER_STEPS,
                 adapt_scene: str = "query", codec: str = "none", ids_file: bytes | None = None,
                 rank: bool = False, neighbors: tuple | None = None, by_history: tuple | None = None,
                 with_adapt: bool = True, table: tuple | None = None, table_format: str = "int8",
                 head_dtype: str = "float32", onboarding=None) -> Path:
    """Write a signed bundle dir the way export must: files, canonical manifest.json, manifest.sig.
    `with_adapt` False: no adapt program (a bundle that never adapts); `table`: (items.bin bytes, scale_dtype) in
    `table_format` (group size 4); `head_dtype`: head_init.bin's storage (m.phi0 must hold values of that dtype);
    `onboarding`: the manifest's OnboardingSpec."""
    out.mkdir(parents=True, exist_ok=True)
    store = lambda b: encode_program(b, codec)  # noqa: E731
    table_bytes, scale_dtype = table if table is not None else (m.table_bytes, "float32")
    blobs = {"score.pte": store(programs[0]), "adapt.pte": store(programs[1]), "items.bin": table_bytes,
             "head_init.bin": encode_floats(m.phi0.numpy(), head_dtype),
             "prototypes.bin": m.prototypes.numpy().astype("<f4").tobytes()}
    if trending is not None:
        blobs["trending.json"] = trending.to_json()
    if ids_file is not None:  # the catalog's ids as a file (export's form) instead of inline
        blobs["item_ids.bin"] = ids_file
    if neighbors is not None and neighbors[0] is not None:  # (ids (N, m), weights (N, m), {"last", ...})
        blobs["neighbors.bin"] = encode_neighbors(neighbors[0], neighbors[1])
    if by_history is not None and by_history[1]:  # (term, popularity, (N,) feature as float16 values)
        blobs["popularity.bin"] = encode_popularity(by_history[2])
    if not with_adapt:
        del blobs["adapt.pte"]
    for name, data in blobs.items():
        (out / name).write_bytes(data)
    adapt = ProgramIO("adapt.pte", "forward", ADAPT_INPUTS, ["loss", "scale"], codec=codec, parameters=["delta"],
                      inner_steps=inner_steps, lr=1.0)
    manifest = Manifest(
        model_version="tiny-1", serial=serial, created_at="2026-11-28T00:00:00Z",
        shapes=Shapes(N=N, d=D, L=L, F=FD, P=P, k_max=K_MAX, S=S, R=R), item_ids=ITEM_IDS if ids_file is None else (),
        item_ids_file=None if ids_file is None else "item_ids.bin",
        negatives=m.negatives, scene_spec=SceneSpec().to_dict(),
        files={name: _entry(data) for name, data in blobs.items()},
        programs={"score": ProgramIO("score.pte", "forward", RANK_SCORE_INPUTS, RANK_SCORE_OUTPUTS, codec=codec,
                                     rank_method="rank", rank_inputs=RANK_INPUTS) if rank else
                  ProgramIO("score.pte", "forward", SCORE_INPUTS, SCORE_OUTPUTS, codec=codec),
                  **({"adapt": adapt} if with_adapt else {})},
        item_table=TableSpec("items.bin", table_format, 4, scale_dtype=scale_dtype),
        head=HeadSpec("head_init.bin", ["W", "b"], [[D, D + FD], [D]], dtype=head_dtype),
        prototype_labels=["action fan", "drama fan", "comedy fan"], prototypes_file="prototypes.bin",
        trending_file="trending.json" if trending is not None else None,
        # (None, m, spec): the term with no table in the bundle (it comes in a NeighborPack)
        neighbors=None if neighbors is None else NeighborSpec(
            file="neighbors.bin" if neighbors[0] is not None else "",
            m=int(neighbors[0].shape[1]) if neighbors[0] is not None else int(neighbors[1]), **neighbors[2]),
        by_history=None if by_history is None else HistoryWeights(
            term=by_history[0], popularity=by_history[1], file="popularity.bin" if by_history[1] else ""),
        onboarding=onboarding,
        dtypes={"table": table_format, "head": head_dtype}, configs={"tiny": {"version": 1, "seed": 0}},
        adapt_scene=adapt_scene, history_align="right")
    data = manifest.to_json()
    (out / "manifest.json").write_bytes(data)
    (out / "manifest.sig").write_bytes(sign_manifest(data, private_pem))
    return out
