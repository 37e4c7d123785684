"""score.pte's module is the model's own scorer re-expressed for XNNPACK: same function, one delegated user vector."""
import numpy as np
import pytest
import torch

from metarec.export.programs import EXCLUDED, ScoreModule, export_score_program, flatten_head


def _users_with_k0(model, table, users):
    us = users(model, table, 6, seed=2)
    u0 = dict(us[0], hist_vecs=torch.zeros_like(us[0]["hist_vecs"]), hist_mask=torch.zeros_like(us[0]["hist_mask"]))
    return us + [u0]  # K=0: no history, the scene prior alone


SWITCHES = [None, "use_prototypes", "use_scene", "use_trend", "use_seq", "new_items", "no_new_item_terms",
            "trend_by_k", "trend_attr", "trend_by_k_seen", "trend_hist_scale", "trend_knots", "trend_item"]


@pytest.mark.parametrize("switch", SWITCHES)
def test_scores_equal_score_from_vectors(tiny, users, switch):
    """Every ModelConfig switch that changes the score: score.pte's module equals the sdk model (both run the
    kernel; this checks the baked constants and the flat head)."""
    on = ("trend_by_k", "trend_attr", "trend_item")  # trend mechanisms (ModelConfig), off by default
    model = tiny(**({} if switch in (None, "new_items") else {switch: True} if switch in on else
                    {"trend_by_k": True, "trend_by_k_new": False} if switch == "trend_by_k_seen" else
                    {"trend_hist_scale": 2.5} if switch == "trend_hist_scale" else
                    {"trend_knots": 3} if switch == "trend_knots" else
                    {"new_item_terms": False} if switch == "no_new_item_terms" else {switch: False}))
    model.eval()  # serving: the trend calibration (trend_hist_scale) applies in eval mode only
    with torch.no_grad():  # the mechanisms start neutral: move them so that a dropped term shows
        for name in ("trend_knot_w", "trend_item_w", "trend_k_off"):
            if hasattr(model, name):
                getattr(model, name).normal_(0.5, 0.5, generator=torch.Generator().manual_seed(5))
        if hasattr(model, "trend_attr_w"):
            model.trend_attr_w.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(6))
    if switch in ("new_items", "trend_by_k_seen", "trend_hist_scale", "trend_item", "no_new_item_terms"):
        # a third of the catalog had no fit event: their own trend gate (+ offset) applies
        with torch.no_grad():
            model.item_known[::3] = 0.0
            model.new_bias.fill_(0.7)
    table, bias = model.export_item_table(), model.export_item_bias()
    mod = ScoreModule(model, bias, 20).eval()
    assert (mod.item_new is not None) == (switch in ("new_items", "trend_by_k_seen", "trend_hist_scale", "trend_item"))
    head0 = model.head_init()
    g = torch.Generator().manual_seed(4)
    head = {k: v.detach() + 0.2 * torch.randn(v.shape, generator=g) for k, v in head0.items()}  # an adapted head
    for u in _users_with_k0(model, table, users):
        with torch.no_grad():
            ref = model.score_from_vectors(head, u["hist_vecs"], u["hist_mask"], u["scene"], u["trend"], table, bias)
            got = mod.scores(flatten_head(model, head), u["hist_vecs"], u["hist_mask"], u["scene"], u["trend"],
                             u["exclude"], table)
        keep = u["exclude"] < 0.5
        assert mod.bias.dtype == torch.float32
        np.testing.assert_allclose(got[keep].numpy(), ref[keep].numpy(), rtol=1e-5, atol=1e-5)
        assert (got[~keep] <= EXCLUDED / 2).all()  # excluded items sink below every real score
        v, i = mod(flatten_head(model, head), u["hist_vecs"], u["hist_mask"], u["scene"], u["trend"],
                   u["exclude"], table)
        assert not np.isin(i.numpy(), np.flatnonzero(~keep.numpy())).any()


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_score_graph_is_one_xnnpack_call_and_topk(model, tiny, scale):
    """The point of the rewrite and of `score_partitioner`: everything but top-k is one delegate call (the user
    vector, the table product on the input table, bias, trend, exclusion); the float16 bias is stored as float32
    values, so no cast runs per call."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    if scale != 1.0:  # the trend calibration's history count is a delegated Linear, not a portable sum
        model = tiny(trend_hist_scale=scale)
    table = model.export_item_table()
    pte = export_score_program(model, model.export_item_bias(), table, 20, torch.float16)
    prog = deserialize_pte_binary(pte)
    plan = getattr(prog, "program", prog).execution_plan[0]
    kernels, delegates = [], 0
    for chain in plan.chains:
        for ins in chain.instructions:
            kind = type(ins.instr_args).__name__
            if kind == "KernelCall":
                kernels.append(plan.operators[ins.instr_args.op_index].name)
            delegates += kind == "DelegateCall"
    assert delegates == 1, kernels
    assert sorted(kernels) == ["aten::topk"]


@pytest.mark.parametrize("switch", [None, "use_prototypes", "use_scene", "use_seq", "use_trend"])
def test_prepare_packs_what_the_sdk_model_computes(tiny, users, switch):
    """adapt.pte's `prepare` on baked constants packs the sdk model's own quantities: the head applied to its x and
    base gives `MetaRecModel.user_vector` for any head, its scale is sqrt(step_sizes), its weights the mean over
    valid targets; on every ablation switch and for a user without history."""
    from metarec.export.programs import AdaptPrepareModule, AdaptStepModule
    from metarec.sdk import kernel

    model = tiny(**({} if switch is None else {switch: False}))
    with torch.no_grad():  # a scene gate away from its zero init, so the per-tensor scale expansion is exercised
        model.lr_gate.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
        model.lr_gate.bias.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(2))
    model.eval()
    table = model.export_item_table()
    prep, dims = AdaptPrepareModule(model).eval(), AdaptStepModule(model).dims
    P, X, d, S = dims["P"], dims["X"], dims["d"], dims["S"]
    neg = table[model.negatives]
    theta0 = flatten_head(model, model.head_init()).detach()
    g = torch.Generator().manual_seed(3)
    head = {k: v.detach() + 0.3 * torch.randn(v.shape, generator=g) for k, v in model.head_init().items()}
    for u in _users_with_k0(model, table, users):
        args = (theta0, u["hist_vecs"], u["hist_mask"], u["scene"], u["hist_vecs"], u["hist_mask"], neg)
        with torch.no_grad():
            packed, scale = prep(*args)
            rates = model.step_sizes(u["scene"])
            z_ref = model.user_vector(head, u["hist_vecs"], u["hist_mask"], u["scene"])
        x, base, w = packed[2 * P:2 * P + X], packed[2 * P + X:2 * P + X + d], packed[2 * P + X + d:2 * P + X + d + S]
        np.testing.assert_allclose(kernel.apply_head(head, base, x).numpy(), z_ref.numpy(), rtol=1e-5, atol=1e-6)
        want = torch.cat([torch.sqrt(rates[k]).reshape(-1) for k in kernel.HEAD_PARAM_NAMES])
        np.testing.assert_allclose(scale.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
        m = u["hist_mask"]
        np.testing.assert_allclose(w.numpy(), (m / m.sum().clamp(min=1.0)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"support_target": "next"}, {"inner_bias": True}, {"trend_affinity": True}])
def test_programs_refuse_a_model_they_would_not_reproduce(tiny, bad):
    """A switch the programs do not implement is an ExportError, not a bundle that silently computes another
    function."""
    from metarec.export.errors import ExportError
    from metarec.export.programs import AdaptPrepareModule, check_lowerable

    model = tiny(**bad)
    with pytest.raises(ExportError, match=next(iter(bad))):
        ScoreModule(model, model.export_item_bias(), 5)
    with pytest.raises(ExportError, match=next(iter(bad))):
        AdaptPrepareModule(model)
    check_lowerable(tiny().cfg, "metasgd")
    for learner in ("maml", "reptile", "metric"):
        with pytest.raises(ExportError, match="learner"):
            check_lowerable(tiny().cfg, learner)


def test_rank_method_ranks_exactly_like_forward(model, users):
    """score.pte with a rank method: forward's extra outputs (user_vec, offset) fed to `rank` with the same table
    give forward's scores and ids bit for bit (the runtime serves repeat calls from them), and forward's top-k
    matches ScoreModule's. Both methods are one XNNPACK call + top-k, and `rank` copies no constant."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.runtime import Runtime

    table, bias = model.export_item_table(), model.export_item_bias()
    pte = export_score_program(model, bias, table, 20, torch.float16, rank_method=True)
    prog = Runtime.get().load_program(pte)
    fwd, rank = prog.load_method("forward"), prog.load_method("rank")
    ref = ScoreModule(model, bias, 20, torch.float16).eval()
    head = flatten_head(model, model.head_init()).detach()
    for u in _users_with_k0(model, table, users):
        args = [head, u["hist_vecs"], u["hist_mask"], u["scene"], u["trend"], u["exclude"], table]
        v, i, z, off = (t.clone() for t in fwd.execute(args))
        assert z.shape == (1, table.shape[1]) and off.shape == (table.shape[0],)
        rv, ri = rank.execute([z, off, table])
        assert torch.equal(rv, v) and torch.equal(ri, i)
        with torch.no_grad():
            ev, ei = ref(*args)
        np.testing.assert_allclose(v.numpy(), ev.numpy(), rtol=1e-5, atol=1e-5)
        assert (i == ei).float().mean() >= 0.9  # near-ties may swap neighbours; the scores above hold tight
    plans = getattr(deserialize_pte_binary(pte), "program", None) or deserialize_pte_binary(pte)
    for plan in plans.execution_plan:
        kinds = [type(ins.instr_args).__name__ for c in plan.chains for ins in c.instructions]
        assert kinds.count("DelegateCall") == 1, (plan.name, kinds)
        assert [plan.operators[ins.instr_args.op_index].name for c in plan.chains for ins in c.instructions
                if type(ins.instr_args).__name__ == "KernelCall"] == ["aten::topk"], plan.name
    assert sorted(p.name for p in plans.execution_plan) == ["forward", "rank"]
    assert len(pte) - len(export_score_program(model, bias, table, 20, torch.float16)) < 4096  # no constant copied
