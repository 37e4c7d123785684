"""The popularity prior in the bias (ModelConfig.pop_prior; docs/decisions/pop-prior.md)."""
import dataclasses

import numpy as np
import torch
from metarec_tiny import tiny_dataset
from test_train import SMALL

from metarec.sdk.model import ModelConfig
from metarec.sdk.neighbors import log_popularity
from metarec.sdk.train import TrainConfig, build_model, fit_model


def test_log_popularity_is_centred_over_seen_items_and_zero_for_unseen():
    x = log_popularity(np.array([0, 1, 3, 0, 7]))
    seen = np.array([False, True, True, False, True])
    assert np.allclose(x[~seen], 0.0)
    assert abs(float(x[seen].mean())) < 1e-6
    assert x[4] > x[2] > x[1]  # more events, larger prior


def _model(**mo):
    ds = tiny_dataset(n_users=30, n_items=30)
    cfg = TrainConfig(model=dataclasses.replace(SMALL, **mo), dataset="tiny", steps=2, batch_size=8, n_targets=3,
                      progress=False)
    return build_model(cfg, ds, np.arange(30)), ds


def test_the_prior_moves_seen_items_only_and_hides_with_the_id():
    m, ds = _model()
    counts = np.bincount(ds.item, minlength=ds.n_items)
    assert torch.allclose(m.log_pop, torch.from_numpy(log_popularity(counts)))
    before = m.item_bias().detach().clone()
    with torch.no_grad():
        m.pop_w.fill_(2.0)
    after = m.item_bias().detach()
    assert torch.allclose(after - before, 2.0 * m.log_pop)
    # an id-dropped item (training) or a new item is scored without its popularity
    keep = torch.ones(ds.n_items)
    keep[0] = 0.0
    dropped = m.item_bias(keep).detach()
    with torch.no_grad():
        m.pop_w.fill_(0.0)
    assert torch.isclose(dropped[0], m.item_bias(keep).detach()[0])


def _skewed(n_users=80, n_items=40, per_user=8, seed=0):
    """Users draw items by a steep popularity law and nothing else: popularity is all there is to learn."""
    from metarec.sdk.data import build_dataset

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** 1.5
    users, items, ts = [], [], []
    for u in range(n_users):
        for j, i in enumerate(rng.choice(n_items, per_user, replace=False, p=p / p.sum())):
            users.append(u), items.append(int(i)), ts.append(880_000_000.0 + u * 86400.0 * 3 + j * 600.0)
    return build_dataset("skewed", users, items, ts, item_ids=np.arange(n_items).astype(str),
                         item_genres=np.ones((n_items, 1), np.float32))


def test_training_learns_a_positive_prior_weight_at_the_fast_rate():
    ds = _skewed()
    cfg = TrainConfig(model=SMALL, dataset="skewed", steps=30, batch_size=16, n_targets=3, progress=False,
                      cooc_init=False)
    model, _ = fit_model(cfg, ds, np.arange(80))
    # more than the outer rate could move it (0.001 x 30 steps), in the direction popularity points
    assert float(model.pop_w.detach()) > 0.1


def test_old_configs_load_without_the_prior():
    old = ModelConfig.from_dict({k: v for k, v in SMALL.to_dict().items() if k != "pop_prior"})
    assert old.pop_prior is False
