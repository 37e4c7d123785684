"""ModelConfig trend mechanisms (trend_knots, trend_item, trend_by_k, trend_affinity): richer use of the same 7-day
counts. Each starts exactly at the plain log1p term (so turning one on is a pure extension), and each, once its
parameters move, changes the scores the way its docstring says."""
import numpy as np
import pytest
import torch

from metarec.sdk.model import MetaRecModel, ModelConfig

N = 30
ALL_ON = {"trend_knots": 4, "trend_item": True, "trend_attr": True, "trend_by_k": True, "trend_affinity": True}


def _model(**kw):
    torch.manual_seed(0)
    attrs = np.random.default_rng(0).random((N, 5)).astype(np.float32)
    return MetaRecModel(ModelConfig(**kw), N, attrs, np.arange(6))


def _inputs(m, k: int = 2):
    table, bias = m.export_item_table(), m.export_item_bias()
    L = m.cfg.hist_len
    mask = torch.zeros(L)
    if k:
        mask[-k:] = 1.0
    g = torch.Generator().manual_seed(1)
    trend = torch.log1p(torch.randint(0, 200, (N,), generator=g).float())
    return table[torch.arange(L)], mask, torch.rand(15, generator=g), trend, table, bias


def _scores(m, k: int = 2, trend=None):
    hv, mask, scene, tr, table, bias = _inputs(m, k)
    tr = tr if trend is None else trend
    return m.score_from_vectors(m.head_init(), hv, mask, scene, tr, table, bias)


@pytest.mark.parametrize("opts", [{"trend_knots": 4}, {"trend_item": True}, {"trend_attr": True},
                                  {"trend_by_k": True},
                                  {"trend_affinity": True}, ALL_ON])
def test_each_mechanism_starts_as_the_plain_term(opts):
    plain, ext = _model(), _model(**opts)
    missing, unexpected = ext.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing  # the mechanism's own parameters keep their neutral init
    torch.testing.assert_close(_scores(ext), _scores(plain))


def test_old_config_dict_reads_mechanisms_off():
    d = ModelConfig(**ALL_ON).to_dict()
    for k in ALL_ON:
        del d[k]
    cfg = ModelConfig.from_dict(d)
    assert (cfg.trend_knots, cfg.trend_item, cfg.trend_attr, cfg.trend_by_k, cfg.trend_affinity) == \
        (0, False, False, False, False)
    with pytest.raises(ValueError, match="trend_knots"):
        ModelConfig(trend_knots=9)


def test_knots_bend_the_count_response():
    m = _model(trend_knots=3)
    x = torch.tensor([0.0, 0.5, 1.0, 2.5, 4.0])
    torch.testing.assert_close(m.trend_feature(x), x)  # all weights 1: f(x) = x
    with torch.no_grad():
        m.trend_knot_w.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))  # flat beyond count e - 1: saturation
    torch.testing.assert_close(m.trend_feature(x), torch.tensor([0.0, 0.5, 1.0, 1.0, 1.0]))
    with torch.no_grad():
        m.trend_knot_w.copy_(torch.tensor([1.0, 1.0, 0.0, 2.0]))  # flat on [2, 3), steep beyond 3
    torch.testing.assert_close(m.trend_feature(x), torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0]))


def test_gate_by_support_size_follows_k():
    m = _model(trend_by_k=True)
    with torch.no_grad():
        m.trend_k_off.fill_(-6.0)
        m.trend_k_off[0] = 6.0  # the trend dominates with an empty history only
    hv, _, scene, _, _, _ = _inputs(m)
    w0, _ = m.trend_weights(scene, torch.zeros(m.cfg.hist_len))
    w3, _ = m.trend_weights(scene, torch.cat([torch.zeros(m.cfg.hist_len - 3), torch.ones(3)]))
    assert float(w0.detach()) > 5.0 > 0.1 > float(w3.detach())
    with pytest.raises(ValueError, match="hist_mask"):
        m.trend_weights(scene)


def test_item_sensitivity_is_id_memory():
    m = _model(trend_item=True)
    with torch.no_grad():
        m.item_known[3] = 0.0  # a new item: no id, so no learned sensitivity
        m.trend_item_w.fill_(2.0)
    base = _model()
    with torch.no_grad():
        base.item_known[3] = 0.0
    hv, mask, scene, tr, table, bias = _inputs(m)
    t_ext, t_base = m.trend_term(scene, tr, mask), base.trend_term(scene, tr, mask)
    seen = torch.arange(N) != 3
    torch.testing.assert_close(t_ext[3], t_base[3])
    w, _ = base.trend_weights(scene)
    torch.testing.assert_close(t_ext[seen] - t_base[seen], 2.0 * w * tr[seen])


def test_affinity_lifts_trending_items_close_to_the_user():
    m = _model(trend_affinity=True)
    with torch.no_grad():
        m.trend_aff.fill_(0.5)
    hv, mask, scene, tr, table, bias = _inputs(m)
    z = m.user_vector(m.head_init(), hv, mask, scene)
    zero = torch.zeros_like(tr)
    lift = _scores(m) - _scores(m, trend=zero)  # trend part with the cross term
    plain = m.trend_term(scene, tr, mask)
    torch.testing.assert_close(lift - plain, 0.5 * tr * (table @ z))


def test_attribute_sensitivity_reaches_new_items():
    m = _model(trend_attr=True)
    with torch.no_grad():
        m.item_known[3] = 0.0
        m.trend_attr_w.weight.fill_(1.0)
    base = _model()
    with torch.no_grad():
        base.item_known[3] = 0.0
    hv, mask, scene, tr, table, bias = _inputs(m)
    factor = 1.0 + m.item_attrs.sum(1)  # c = all ones
    torch.testing.assert_close(m.trend_term(scene, tr, mask), base.trend_term(scene, tr, mask) * factor)


def test_gate_by_support_size_can_spare_new_items():
    both, seen = _model(trend_by_k=True), _model(trend_by_k=True, trend_by_k_new=False)
    hv, mask, scene, tr, table, bias = _inputs(both)
    for m in (both, seen):
        with torch.no_grad():
            m.trend_k_off.fill_(-3.0)
    plain = _model()
    w_b, dw_b = both.trend_weights(scene, mask)
    w_s, dw_s = seen.trend_weights(scene, mask)
    w_p, dw_p = plain.trend_weights(scene)
    torch.testing.assert_close(w_b, w_s)
    assert float(w_s) < float(w_p)
    torch.testing.assert_close(w_s + dw_s, w_p + dw_p)  # the new-item weight ignores K
    assert float((w_b + dw_b).detach()) < float((w_p + dw_p).detach())


def test_trend_hist_scale_is_a_serving_calibration_for_users_with_history():
    """Eval mode: the trend term is x trend_hist_scale once K >= 1 and as is at K = 0; train mode (meta-training)
    never scales; a config saved before the field reads 1.0 (the model it was saved with)."""
    m = _model(trend_hist_scale=2.0)
    hv, mask, scene, tr, table, bias = _inputs(m, 2)
    with torch.no_grad():
        m.train()
        t_train = m.trend_term(scene, tr, mask)
        m.eval()
        t_k2 = m.trend_term(scene, tr, mask)
        t_k0 = m.trend_term(scene, tr, torch.zeros_like(mask))
    assert t_train.abs().sum() > 0
    torch.testing.assert_close(t_k2, 2.0 * t_train)
    torch.testing.assert_close(t_k0, t_train)
    torch.testing.assert_close(m.trend_term(scene, tr, None), t_train)  # None: a user without history
    with torch.no_grad():  # the score moves by exactly the extra trend term
        s2, s1 = _scores(m, 2), _scores(_model(trend_hist_scale=1.0).eval(), 2)
    torch.testing.assert_close(s2 - s1, t_k2 - t_train)
    legacy = {k: v for k, v in ModelConfig().to_dict().items() if k != "trend_hist_scale"}
    assert ModelConfig.from_dict(legacy).trend_hist_scale == 1.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="trend_hist_scale"):
            ModelConfig(trend_hist_scale=bad)
