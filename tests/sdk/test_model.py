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
    c = m.cfg  # P = d + h (2d + s) + h + d h (the ModelConfig.head_hidden comment)
    assert m.head_size() == c.dim + c.head_hidden * (2 * c.dim + c.scene_hidden) + c.head_hidden + c.dim * c.head_hidden
    assert 500 <= m.head_size() <= 2000  # ~50 us on the phone needs a ~1-2K float head (928 at the default d=16)


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


def test_user_vector_batched_matches_rows():
    # the "next" support loss scores all support prefixes in one batched call: it must equal row-by-row calls
    m = _model()
    with torch.no_grad():
        m.head0["W2"].normal_()
    table, L = m.export_item_table(), m.cfg.hist_len
    hv = table[torch.arange(3 * L).reshape(3, L)]
    mask = torch.zeros(3, L)
    mask[0, -1:], mask[1, -4:], mask[2, :] = 1.0, 1.0, 1.0
    scene = torch.rand(15)
    z = m.user_vector(m.head_init(), hv, mask, scene)
    for i in range(3):
        torch.testing.assert_close(z[i], m.user_vector(m.head_init(), hv[i], mask[i], scene))


def test_next_support_loss_scores_each_item_from_the_earlier_ones():
    m = _model(support_target="next")
    with torch.no_grad():
        m.head0["W2"].normal_()
    table, L = m.export_item_table(), m.cfg.hist_len
    hv, mask, scene, neg = table[torch.arange(L) + 7], torch.zeros(L), torch.rand(15), table[m.negatives]
    mask[-3:] = 1.0
    head = m.head_init()
    ref = []
    for j in range(L - 3, L):  # hand-built: context = rows before j, moved to the right end
        ctx, cm = torch.zeros_like(hv), torch.zeros(L)
        ctx[L - j:], cm[L - j:] = hv[:j], mask[:j]
        z = m.user_vector(head, ctx, cm, scene)
        pos = hv[j] @ z
        ref.append(torch.logsumexp(torch.cat([pos[None], neg @ z]), 0) - pos)
    got = m.support_loss(head, hv, mask, scene, hv, mask, neg)
    torch.testing.assert_close(got, torch.stack(ref).mean())
    # the newest item is never its own context: "all" scores it with itself in the history, "next" does not
    assert not torch.allclose(got, _model().support_loss(head, hv, mask, scene, hv, mask, neg))
    with pytest.raises(ValueError, match="support_target"):
        ModelConfig(support_target="prev")


def test_config_is_versioned():
    cfg = ModelConfig(dim=16, trend_knots=2)
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="ModelConfig version 2 unknown"):
        ModelConfig.from_dict({**cfg.to_dict(), "version": 2})
    with pytest.raises(ValueError, match=r"unknown ModelConfig fields \['dims'\]; known"):
        ModelConfig.from_dict({"dims": 16})
