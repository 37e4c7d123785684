"""Smoke tests of the bench helpers and a tiny scaling run: structure and sanity only, never timings."""
import json

import numpy as np
import pytest

from metarec.bench import bench_util as bu
from metarec.bench.run import SUITES, parse_suites


def test_summarize_percentiles_exact():
    s = bu.summarize(np.arange(1, 101) * 1000)  # 1..100 us
    assert s["runs"] == 100
    assert s["p50_us"] == pytest.approx(50.5)
    assert s["p99_us"] == pytest.approx(99.01)
    assert s["min_us"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bu.summarize([])


def test_ratio_and_verdict():
    assert bu.ratio(5.0, 10.0) == 0.5
    assert bu.ratio(None, 1.0) is None and bu.ratio(1.0, 0.0) is None
    v = bu.verdict(30.0, 25.0, "us")
    assert v["met"] is False and v["miss_pct"] == pytest.approx(20.0)
    assert bu.verdict(20.0, 25.0)["met"] is True
    assert bu.verdict(None, 25.0)["met"] is None


def test_time_calls_counts_every_run():
    calls = []
    ns = bu.time_calls(lambda: calls.append(1), runs=30, warmup=5)
    assert len(ns) == 30 and len(calls) == 35 and (ns >= 0).all()


def test_parse_suites():
    assert parse_suites(None) == list(SUITES)
    assert parse_suites("scaling, report") == ["scaling", "report"]
    with pytest.raises(ValueError, match="known"):
        parse_suites("latency,speed")
    assert parse_suites("scaling-runtime") == ["scaling-runtime"]  # on request only: it exports a bundle
    assert "scaling-runtime" not in parse_suites(None)


def test_copy_bandwidth_structure():
    bw = bu.copy_bandwidth(4 << 20, reps=3)
    assert bw["best_gbps"] >= bw["median_gbps"] > 0
    assert "read" in bw["convention"]


def test_tiny_scaling_run(tmp_path):
    from metarec.bench.bench_scaling import run_scaling

    data = run_scaling(50, "pytest tiny scaling", tmp_path, sizes=(1000,), variants=(("input", "none", "flat", "all"),),
                       bw_bytes=4 << 20)
    (row,) = data["rows"]
    assert row["n_items"] == 1000 and row["runs"] == 50
    assert row["topk_matches_eager"] is True  # the lowered program ranks like eager torch
    assert row["p99_us"] >= row["p50_us"] > 0 and row["bound_table_us"] > 0
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert saved["provenance"]["command"] == "pytest tiny scaling"
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert "pytest tiny scaling" in (tmp_path / "scaling.md").read_text()


def test_blocked_topk_equals_flat_topk():
    import torch

    from metarec.bench.scaling_programs import blocked_topk

    g = torch.Generator().manual_seed(0)
    for n in (10_000, 20_000):
        s = torch.randn(n, generator=g)
        s[torch.randint(0, n, (30,), generator=g)] = -1e9  # excluded items
        v, i = blocked_topk(s, 10, 1000)
        fv, fi = torch.topk(s, 10)
        assert torch.equal(v, fv) and torch.equal(i, fi)


@pytest.fixture
def signed_bundle(tmp_path):
    """(bundle dir, public key path): a small signed bundle the runtime's reader accepts (tests/runtime's writer;
    the program bytes only carry the flatbuffer magic, since nothing here executes them)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
    from tiny_bundle import TinyModel, write_bundle

    from metarec.runtime.bundle_codecs import generate_keypair

    priv, pub = generate_keypair()
    (tmp_path / "public.pem").write_bytes(pub)
    fake_pte = b"\x3c\x00\x00\x00ET12" + bytes(64)
    return write_bundle(tmp_path / "bundle", TinyModel(), (fake_pte, fake_pte), priv), tmp_path / "public.pem"


def test_bench_reads_bundles_through_the_runtime_reader(signed_bundle, monkeypatch):
    """Both benches that read a bundle (latency, parity) use metarec.runtime's verified reader: a file changed
    after signing is refused with BundleError before any timing or evaluation starts."""
    from metarec.bench.bench_latency import run_latency
    from metarec.bench.runtime_eval import parity_report
    from metarec.runtime import BundleError
    from metarec.runtime.bundle import open_bundle

    bundle, key = signed_bundle
    assert open_bundle(bundle, key).manifest.serial == 1  # untampered: the reader accepts it
    items = bundle / "items.bin"
    data = bytearray(items.read_bytes())
    data[0] ^= 1
    items.write_bytes(bytes(data))
    import metarec.sdk.data as sdk_data

    monkeypatch.setattr(sdk_data, "load_dataset", lambda *a, **k: pytest.fail("evaluated an unverified bundle"))
    with pytest.raises(BundleError, match="sha256"):
        run_latency(bundle, key, runs=10, command="pytest", write=False)
    with pytest.raises(BundleError, match="sha256"):
        parity_report("unused.pt", bundle, key)


def test_targets_and_analysis_on_a_hand_made_run():
    from metarec.bench.bench_latency_report import analysis, targets

    row = lambda p50, p99=None: {"p50_us": p50, "p99_us": p99 or 2 * p50, "min_us": p50 * 0.9}  # noqa: E731
    d = {"score": {"score.pte (XNNPACK)": row(10.0), "ONNX Runtime (model.onnx)": row(20.0)},
         "runtime": {"recommend (warm user)": row(30.0)},
         "adapt": {"adapt.pte (ExecuTorch training runtime)": row(50.0),
                   "adapt.pte + score.pte (chained, no I/O)": row(60.0, 900.0)},
         "loadavg_before_after": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
         "programs": {"score.pte": {"instructions": 3, "delegate_calls": 1, "portable_kernel_calls": 2,
                                    "portable_ops": {"aten::topk": 1}},
                      "adapt.pte": {"instructions": 5, "delegate_calls": 0, "portable_kernel_calls": 5,
                                    "portable_ops": {"aten::mul": 5}}},
         "profile_recommend": []}
    t = targets(d)
    assert t["score.pte p50 / ONNX Runtime p50 <= 1.0"]["value"] == pytest.approx(0.5)
    assert t["runtime recommend p50 / score.pte p50 <= 2.0"]["met"] is False
    assert t["runtime recommend p50 <= 25 us"]["miss_pct"] == pytest.approx(20.0)
    assert t["adaptation (<= 3 steps) p50 <= 60 us"]["met"] is True
    assert t["adaptation + recommend p99 <= 1 ms (runtime, incl. store reads/writes)"]["met"] is None
    d["targets"] = t
    text = analysis(d)
    assert "runtime recommend: 30.0 us vs 25 us" in text and "score.pte vs ONNX" not in text


def test_report_collects_protocol_results_and_skips_missing(tmp_path):
    from metarec.bench.bench_report import collect_results, run_report

    res = {"per_k": {"1": {"hr10": 0.5, "ndcg10": 0.2, "n": 10, "hr10_ci": [0.4, 0.6]}},
           "headline": {"hr10": 0.5, "hr10_ci": [0.4, 0.6], "ndcg10": 0.2, "ndcg10_ci": [0.1, 0.3], "n_users": 10},
           "model": "popularity"}
    doc = {"provenance": {"command": "x", "commit": "y"}, "results": {"popularity": res},
           "ablations": {"no_scene": dict(res, model="metarec")}}
    names = [n for n, _ in collect_results(doc)]
    assert names == ["popularity", "ablations/no_scene"]
    (tmp_path / "baselines.json").write_text(json.dumps(doc))
    counts = run_report("pytest report", tmp_path)
    assert counts == {"models": 1, "ablations": 1, "compression_variants": 0}
    md = (tmp_path / "report.md").read_text()
    assert "pytest report" in md and "not yet produced: run `metarec bench --only latency`" in md
    assert (tmp_path / "report_coldstart.png").stat().st_size > 0


def test_tree_topk_equals_flat_topk():
    import torch

    from metarec.bench.scaling_programs import tree_levels, tree_topk

    g = torch.Generator().manual_seed(1)
    for n in (1_000, 5_120, 40_000, 100_000):
        s = torch.randn(n, generator=g)
        s[torch.randint(0, n, (30,), generator=g)] = float("-inf")  # excluded items
        v, i = tree_topk(s, 10)
        fv, fi = torch.topk(s, 10)
        assert torch.equal(v, fv) and torch.equal(i, fi)
    assert tree_levels(1_000, 10) == 0 and tree_levels(100_000, 10) == 5  # 100000 -> 3125 candidates


def test_fused_scorer_keeps_score_pte_semantics():
    """The fused scorer (fp32, eager) ranks like export's ScoreModule: same user vector, bias, gated trend, and
    excluded items (t = -inf) never returned."""
    import torch

    from metarec.bench.scaling_programs import synthetic_model, example_inputs, fused_inputs, fused_module
    from metarec.export.programs import ScoreModule

    n, k = 5_120, 10
    model = synthetic_model(n)
    fused = fused_module(model, k, quant="none")
    head, hist, mask, scene, trend, exclude = example_inputs(model, n)
    exclude[torch.topk(model.export_item_bias(), 5)[1]] = 1.0  # exclude items that would otherwise rank high
    ex = fused_inputs(model, n)
    t = trend.clone()
    t[exclude > 0.5] = float("-inf")
    with torch.no_grad():
        v, i = fused(head, hist, mask, scene, t)
        rv, ri = ScoreModule(model, model.export_item_bias(), k)(head, hist, mask, scene, trend, exclude,
                                                                  model.export_item_table())
    assert torch.equal(i, ri) and torch.allclose(v, rv, atol=1e-5)
    assert not exclude[i].any()
    assert len(ex) == 5 and torch.isneginf(ex[4]).sum() == 3


def test_reference_check_passes_lowered_int4_and_catches_wrong_ids():
    from metarec.bench import bench_util as bu
    from metarec.bench.scaling_programs import build_fused, reference_check

    pte, ex, mod = build_fused(2_000, 10, "int4")
    v, i = bu.load_pte(pte).forward(ex)
    assert reference_check(mod, ex, v, i, 10)["ok"]
    bad = i.clone()
    bad[0] = 0  # item 0 is excluded by fused_inputs (t = -inf)
    assert not reference_check(mod, ex, v, bad, 10)["ok"]


def test_fused_warm_call_ranks_like_the_full_fused_program():
    """The scaling suite's warm call (rank from the kept user vector and gate x trend offset) returns the full fused
    program's top-k and passes the same dequantized reference check; excluded items stay out."""
    from metarec.bench import bench_util as bu
    from metarec.bench.scaling_programs import build_fused, build_fused_rank, reference_check

    pte, rank_ex, mod, ex = build_fused_rank(2_000, 10, "int8")
    v, i = bu.load_pte(pte).forward(rank_ex)
    assert reference_check(mod, ex, v, i, 10)["ok"]
    full_pte, full_ex, _ = build_fused(2_000, 10, "int8")
    fv, fi = bu.load_pte(full_pte).forward(full_ex)
    assert set(i.tolist()) == set(fi.tolist())
    assert 0 not in i.tolist()  # item 0 is excluded (t = -inf, so offset = -inf)


def test_chunk_bounds_merge_a_short_tail_and_refuse_tiny_chunks():
    from metarec.bench.scaling_programs import chunk_bounds

    assert chunk_bounds(6_000, 2_048, 10) == [0, 2_048, 4_096, 6_000]
    assert chunk_bounds(4_100, 2_048, 10) == [0, 2_048, 4_100]  # a 4-item tail cannot give k=10 candidates
    assert chunk_bounds(1_000, 4_096, 10) == [0, 1_000]
    with pytest.raises(ValueError, match="at least k"):
        chunk_bounds(1_000, 5, 10)


def test_chunked_scorer_ranks_like_the_unchunked_one_even_with_a_whole_chunk_excluded():
    """Eager fp32: the chunked scorer (full and warm call) returns the unchunked fused scorer's values and ids,
    including when every item of one chunk is excluded (its top-k is -inf: the chaining term must stay 0, not NaN)
    and when the best items sit in the last chunk."""
    import torch

    from metarec.bench.scaling_programs import synthetic_model, user_vec, chunked_module, fused_inputs

    n, k, chunk = 6_000, 10, 2_048
    model = synthetic_model(n)
    head, hist, mask, scene, t = fused_inputs(model, n)
    t = t.clone()
    t[2_048:4_096] = float("-inf")  # the whole middle chunk
    t[4_096:4_200] += 50.0  # the best items are in the last chunk
    spans = [(0, 2_048), (2_048, 4_096), (4_096, 6_000)]
    full_mod, edges = chunked_module(model, k, "none", chunk)
    warm_mod, _ = chunked_module(model, k, "none", chunk, warm=True)
    assert edges == [0, 2_048, 4_096, 6_000]
    with torch.no_grad():
        rv, ri = full_mod.full(head, hist, mask, scene, t)
        v, i = full_mod(head, hist, mask, scene, *(t[None, a:e] for a, e in spans))
        z = user_vec(model, head, hist, mask, scene)[None]
        off = (full_mod.full.gate(scene, mask) * t[None])[0]
        wv, wi = warm_mod(z, *(off[None, a:e] for a, e in spans))
    assert torch.equal(i, ri) and torch.allclose(v, rv, atol=1e-5)
    assert torch.equal(wi, ri) and torch.allclose(wv, rv, atol=1e-5)
    assert ((i >= 4_096) & (i < 4_200)).all() and not torch.isnan(v).any()


def test_lowered_chunked_scorer_runs_one_delegate_call_per_chunk_and_passes_the_reference_check():
    """int8, XNNPACK: the chunked full and warm calls return the unchunked fused program's top-k and pass the
    dequantized reference check; the chaining keeps the chunks in separate delegate calls (the L2 reuse depends
    on it)."""
    from metarec.bench import bench_util as bu
    from metarec.bench.scaling_programs import build_fused, build_fused_chunked, reference_check

    n, k = 6_000, 10
    ref_pte, ref_ex, _ = build_fused(n, k, "int8")
    _, ri = bu.load_pte(ref_pte).forward(ref_ex)
    for warm in (False, True):
        pte, prog_in, mod, ex = build_fused_chunked(n, k, "int8", chunk=2_048, warm=warm)
        assert len(prog_in) == (1 if warm else 4) + 3
        v, i = bu.load_pte(pte).forward(prog_in)
        assert reference_check(mod, ex, v, i, k)["ok"]
        assert set(i.tolist()) == set(ri.tolist()) and 0 not in i.tolist()  # item 0 is excluded
        if warm:  # the full call's user vector adds delegate calls of its own; unchained, the warm call has <= 2
            assert bu.program_profile(pte)["delegate_calls"] >= 3
