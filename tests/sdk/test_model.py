import json

import numpy as np
import pytest
import torch

from metarec.sdk.model import MetaRecModel, ModelConfig, item_attributes


def _model(**kw):
    torch.manual_seed(0)
    n, attrs = 30, np.random.default_rng(0).random((30, 5)).astype(np.float32)
    return MetaRecModel(ModelConfig(**kw), n, attrs, np.arange(6))


def test_config_json_round_trip_and_validation():
    cfg = ModelConfig(dim=16, n_prototypes=4, use_scene=False)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="inner_steps"):
        ModelConfig(inner_steps=4)
    with pytest.raises(ValueError, match="known"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="version"):
        ModelConfig(version=99)


def test_head_is_small_and_ordered():
    m = _model()
    assert list(m.head_init()) == list(m.head_param_names)
    assert 1000 <= m.head_size() <= 2000  # ~50 us on the phone needs a ~1-2K float head


def test_scores_use_table_and_padding_is_ignored():
    m = _model()
    table, bias = m.export_item_table(), m.export_item_bias()
    L = m.cfg.hist_len
    mask = torch.zeros(L)
    mask[-2:] = 1.0
    hv = table[torch.arange(L)]
    scene, trend = torch.rand(15), torch.rand(30)
    s1 = m.score_from_vectors(m.head_init(), hv, mask, scene, trend, table, bias)
    hv2 = hv.clone()
    hv2[:-2] = 100.0  # padding rows must not matter
    s2 = m.score_from_vectors(m.head_init(), hv2, mask, scene, trend, table, bias)
    assert s1.shape == (30,)
    torch.testing.assert_close(s1, s2)
    # the trend term moves scores, the no-trend ablation ignores it
    s3 = m.score_from_vectors(m.head_init(), hv, mask, scene, trend + 1.0, table, bias)
    assert not torch.allclose(s1, s3)
    m2 = _model(use_trend=False)
    t1 = m2.score_from_vectors(m2.head_init(), hv, mask, scene, trend, table, bias)
    t2 = m2.score_from_vectors(m2.head_init(), hv, mask, scene, trend + 1.0, table, bias)
    torch.testing.assert_close(t1, t2)


def test_new_item_has_attribute_vector():
    m = _model()
    with torch.no_grad():
        m.attr_enc.weight.normal_()
    table = m.export_item_table()
    assert float(m.item_emb.detach().abs().sum()) == 0.0  # ids start at 0: an unseen item keeps its attribute vector
    assert float(table.norm(dim=1).min()) > 0.0


def test_support_loss_zero_without_support():
    m = _model()
    table = m.export_item_table()
    L = m.cfg.hist_len
    z = torch.zeros(L)
    loss = m.support_loss(m.head_init(), table[:L], z, torch.rand(15), table[:L], z, table[m.negatives])
    assert float(loss.detach()) == 0.0


def test_item_attributes_year_unknown_flag():
    a = item_attributes(np.eye(3, dtype=np.float32), np.array([1990, np.nan, 2000], np.float32))
    assert a.shape == (3, 5)
    np.testing.assert_array_equal(a[:, -1], [0, 1, 0])
    assert a[1, 3] == 0.0 and a[0, 3] < 0 < a[2, 3]
