import copy

import numpy as np
import pytest
import torch

from metarec.sdk.meta import MetaLearner, inner_adapt
from metarec.sdk.model import MetaRecModel, ModelConfig


def _setup(seed=0):
    torch.manual_seed(seed)
    n = 40
    attrs = np.random.default_rng(seed).random((n, 6)).astype(np.float32)
    m = MetaRecModel(ModelConfig(dim=8, head_hidden=4, hist_len=5, n_negatives=6), n, attrs, np.arange(30, 36))
    with torch.no_grad():
        m.item_emb.normal_(0, 0.5)
        for v in m.head0.values():
            v.normal_(0, 0.3)
    L = m.cfg.hist_len
    mask = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    hist = torch.tensor([0, 0, 3, 7, 11])
    return m, hist, mask, torch.rand(15)


def _support(m, hist, mask, scene):
    table = m.item_table()
    hv, neg = table[hist], table[m.negatives]
    return (lambda h: m.support_loss(h, hv, mask, scene, hv, mask, neg)), table


def test_adapting_lowers_support_loss():
    m, hist, mask, scene = _setup()
    loss, _ = _support(m, hist, mask, scene)
    h0 = m.head_init()
    for steps in (1, 3):
        h = inner_adapt(loss, h0, m.step_sizes(scene), steps)
        assert float(loss(h).detach()) < float(loss(h0).detach()) - 1e-4


def test_meta_gradients_reach_init_and_step_sizes():
    m, hist, mask, scene = _setup()
    loss, table = _support(m, hist, mask, scene)
    h = inner_adapt(loss, m.head_init(), m.step_sizes(scene), 2)
    query = -torch.log_softmax(torch.nn.functional.linear(m.user_vector(h, table[hist], mask, scene), table), 0)[20]
    query.backward()
    for k in m.head_param_names:
        assert m.head0[k].grad is not None and float(m.head0[k].grad.abs().sum()) > 0, k
        assert m.log_lr[k].grad is not None and float(m.log_lr[k].grad.abs().sum()) > 0, k
    assert float(m.lr_gate.weight.grad.abs().sum()) > 0  # the scene gate of the rates learns too


def _query_grad(m, hist, mask, scene, first_order):
    m.zero_grad()
    loss, table = _support(m, hist, mask, scene)
    rates = {k: torch.full_like(v, 0.2) for k, v in m.head_init().items()}
    h = inner_adapt(loss, m.head_init(), rates, 2, first_order=first_order)
    q = -torch.log_softmax(torch.nn.functional.linear(m.user_vector(h, table[hist], mask, scene), table), 0)[20]
    q.backward()
    return {k: m.head0[k].grad.clone() for k in m.head_param_names}, h


def test_first_order_matches_hand_built_reference():
    m, hist, mask, scene = _setup()
    got, _ = _query_grad(m, hist, mask, scene, first_order=True)
    # reference: plain autograd SGD on a detached deep copy of the head, then the query gradient at the end
    ref = copy.deepcopy(m)
    table = ref.item_table().detach()
    hv, neg = table[hist], table[ref.negatives]
    head = {k: v.detach().clone().requires_grad_(True) for k, v in ref.head_init().items()}
    for _ in range(2):
        g = torch.autograd.grad(ref.support_loss(head, hv, mask, scene, hv, mask, neg), list(head.values()))
        head = {k: (v - 0.2 * gi).detach().requires_grad_(True) for (k, v), gi in zip(head.items(), g)}
    q = -torch.log_softmax(torch.nn.functional.linear(ref.user_vector(head, hv, mask, scene), table), 0)[20]
    want = torch.autograd.grad(q, list(head.values()))
    for k, w in zip(m.head_param_names, want):
        torch.testing.assert_close(got[k], w, rtol=1e-5, atol=1e-6)
    # and second order really differs (the Hessian term is there)
    full, _ = _query_grad(m, hist, mask, scene, first_order=False)
    assert max(float((full[k] - got[k]).abs().max()) for k in full) > 1e-6


def test_learner_names_and_steps():
    with pytest.raises(ValueError, match="known"):
        MetaLearner("protonet")
    with pytest.raises(ValueError):
        MetaLearner("metasgd", steps=5)
    assert MetaLearner("metric").eval_steps == 0 and MetaLearner("finetune").train_steps == 0
    assert MetaLearner("finetune", steps=3).eval_steps == 3
    assert MetaLearner("reptile").first_order and not MetaLearner("maml").first_order
