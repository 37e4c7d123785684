import copy

import numpy as np
import pytest
import torch

from metarec.export.compress import (compress_model, measure_importance, prune_model, quantize_table, round_head,
                                     snr_db, table_of, topk_overlap, wide_rows)
from metarec.export.config import CompressConfig
from metarec.runtime.table_codec import decode_table



@pytest.mark.parametrize("quant,bits", [("int8", 8), ("int4", 4)])
def test_table_file_is_torchao_dequantized_table(model, quant, bits):
    table = model.export_item_table()
    qt = quantize_table(table, quant, 32)
    n, d = table.shape
    assert np.array_equal(decode_table(qt.data, n, d, quant, 32), qt.dequantized)
    # symmetric: every value is an integer multiple of its group scale, within the `bits` range
    scale = np.abs(qt.dequantized).max(1, keepdims=True) / (2 ** (bits - 1) - 1)
    assert np.all(np.abs(qt.dequantized) <= scale * (2 ** (bits - 1)) + 1e-6)
    snr = snr_db(table.numpy(), qt.dequantized)
    assert snr > (30 if quant == "int8" else 12), snr
    assert len(qt.data) < table.numel() * 4 * (0.3 if quant == "int8" else 0.17)


def test_none_is_exact(model):
    qt = quantize_table(model.export_item_table(), "none")
    assert qt.fmt == "float32" and np.array_equal(qt.dequantized, model.export_item_table().numpy())


def test_snr_and_overlap_exact_cases():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert snr_db(a, a) == np.inf
    assert abs(snr_db(a, a * 1.1) - 20.0) < 1e-9  # noise = 0.1 signal -> 20 dB
    assert topk_overlap(a, a, 2) == 1.0 and topk_overlap(a, -a, 2) == 0.0


def test_prune_keep_all_is_identity(model):
    m2 = prune_model(model, np.arange(model.cfg.dim), np.arange(model.cfg.n_prototypes))
    for k, v in model.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def _scores(m, u):
    with torch.no_grad():
        return m.score_from_vectors(m.head_init(), u["hist_vecs"], u["hist_mask"], u["scene"], u["trend"],
                                    m.export_item_table(), m.export_item_bias()).numpy()


def test_pruned_model_is_smaller_and_equals_sliced_math(tiny, users):
    m = tiny(dim=32)
    keep_d, keep_m = np.arange(0, 32, 2), np.array([0, 2, 3])
    p = prune_model(m, keep_d, keep_m)
    assert p.cfg.dim == 16 and p.cfg.n_prototypes == 3 and p.head_size() < m.head_size()
    assert torch.equal(p.export_item_table(), m.export_item_table()[:, keep_d])
    # zeroing the dropped dimensions / prototypes in the original gives the pruned model's scores
    z = copy.deepcopy(m)
    with torch.no_grad():
        drop = np.setdiff1d(np.arange(32), keep_d)
        for t in (z.item_emb, z.prototypes):
            t[..., drop] = 0
        z.attr_enc.weight[drop] = 0
        z.attr_enc.bias[drop] = 0
        z.proto_prior.bias[np.setdiff1d(np.arange(4), keep_m)] = -1e9  # dropped prototypes never picked
        z.head0["u"][drop] = 0
        z.head0["W2"][drop] = 0
        z.transition.weight[drop] = 0
        z.transition.weight[:, drop] = 0
        z.head0["W1"][:, drop] = 0
        z.head0["W1"][:, 32 + 4 + drop] = 0
    u = users(z, z.export_item_table(), 1)[0]  # kept columns equal m's, dropped ones are zero
    u_p = dict(u, hist_vecs=u["hist_vecs"][:, keep_d])
    np.testing.assert_allclose(_scores(p, u_p), _scores(z, u), atol=1e-4)


def test_importance_and_compress_report(model):
    imp = measure_importance(model, n=32)
    assert imp["dim"].shape == (32,) and abs(imp["dim"].sum() - 1) < 1e-5
    assert imp["prototypes"].shape == (4,) and abs(imp["prototypes"].sum() - 1) < 1e-5
    calls = []
    m, rep = compress_model(model, CompressConfig(prune_dim=16, prune_prototypes=2, finetune_steps=3,
                                                  importance_samples=32),
                            finetune=lambda mm, steps: calls.append(steps) or mm)
    assert m.cfg.dim == 16 and m.cfg.n_prototypes == 2 and calls == [3]
    kept = np.array(rep["kept_dims"])
    assert rep["dim_importance_kept"] == pytest.approx(float(imp["dim"][kept].sum()), rel=1e-5)
    assert rep["dim_importance_kept"] >= float(np.sort(imp["dim"])[:16].sum())  # the most important half


def test_wide_rows_are_the_most_used_items(model):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.log_pop.copy_(torch.arange(m.n_items, dtype=torch.float32))  # item N-1 used most
    wide = wide_rows(m, 0.1)
    k = round(0.1 * m.n_items)
    assert wide.sum() == k and wide[-k:].all() and not wide[:-k].any()
    assert not wide_rows(m, 0.0).any() and wide_rows(m, 1.0).all()


def test_mixed_table_of_a_model_beats_int4_fidelity_at_fewer_bytes_than_int8(model):
    table = model.export_item_table().numpy()
    forms = {q: table_of(model, CompressConfig(quant=q, int8_share=0.5)) for q in ("int4", "mixed", "int8")}
    assert len(forms["int4"].data) < len(forms["mixed"].data) < len(forms["int8"].data)
    snr = {q: snr_db(table, f.dequantized) for q, f in forms.items()}
    assert snr["int4"] < snr["mixed"] < snr["int8"], snr
    with pytest.raises(ValueError, match="row mask"):
        quantize_table(table, "mixed", 32)


def test_round_head_rounds_phi0_only_and_compress_model_applies_it(model):
    half = round_head(model, "float16")
    for name, p in half.head0.items():
        assert torch.equal(p, p.half().float())
    assert any(not torch.equal(p, model.head0[n]) for n, p in half.head0.items())  # so the check can fail
    assert torch.equal(half.item_emb, model.item_emb)
    assert round_head(model, "float32") is model
    out, _ = compress_model(model, CompressConfig(quant="int8"))
    assert all(torch.equal(p, p.half().float()) for p in out.head0.values())
