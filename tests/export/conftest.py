"""Tiny models for export tests: the real `MetaRecModel` at toy sizes with deterministic, non-trivial weights."""
import numpy as np
import pytest
import torch

N_ITEMS = 96


def make_model(dim: int = 32, seed: int = 0, n_items: int = N_ITEMS, **cfg):
    from metarec.sdk.model import MetaRecModel, ModelConfig

    torch.manual_seed(seed)  # MetaRecModel draws its own init from the global generator
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg.setdefault("inner_steps", 3)  # the programs' multi-step path (the default model takes 1 step)
    c = ModelConfig(dim=dim, n_prototypes=4, scene_hidden=4, head_hidden=4, hist_len=5, n_negatives=6, **cfg)
    m = MetaRecModel(c, n_items, (rng.random((n_items, 6)) < 0.3).astype(np.float32))
    with torch.no_grad():  # an untrained model has zero id embeddings and a zero W2: give every path a signal
        for p in m.parameters():
            if p.dim() >= 1:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
        for p in m.log_lr.values():
            p.fill_(np.log(0.1))
    return m.eval()


@pytest.fixture(scope="session")
def tiny():
    """Factory of tiny models: tiny(dim=16, seed=3)."""
    return make_model


@pytest.fixture(scope="session")
def users():
    """users(model, table, n) -> contract-shaped score inputs of n sample users."""
    return sample_users


@pytest.fixture(scope="session")
def model():
    return make_model()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    from metarec.export import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys"))


def sample_users(model, table, n=8, seed=1):
    """Contract-shaped score inputs for `n` users (right-aligned histories of 1..L items, random scenes)."""
    from metarec.runtime.scene import scene_features

    rng = np.random.default_rng(seed)
    L, N = model.cfg.hist_len, table.shape[0]
    t = torch.as_tensor(table)
    users = []
    for u in range(n):
        k = int(rng.integers(1, L + 1))
        ids = rng.choice(N, k, replace=False)
        mask = torch.zeros(L)
        mask[L - k:] = 1.0
        vecs = torch.zeros(L, t.shape[1])
        vecs[L - k:] = t[ids]
        exclude = torch.zeros(N)
        exclude[ids] = 1.0
        scene = torch.from_numpy(scene_features([8.8e8 + rng.integers(0, 10**7)])[0])
        trend = torch.log1p(torch.from_numpy(rng.poisson(2.0, N).astype(np.float32)))
        users.append(dict(hist_vecs=vecs, hist_mask=mask, scene=scene, trend=trend, exclude=exclude))
    return users
