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

    from metarec.bench.bench_scaling import _blocked_topk

    g = torch.Generator().manual_seed(0)
    for n in (10_000, 20_000):
        s = torch.randn(n, generator=g)
        s[torch.randint(0, n, (30,), generator=g)] = -1e9  # excluded items
        v, i = _blocked_topk(s, 10, 1000)
        fv, fi = torch.topk(s, 10)
        assert torch.equal(v, fv) and torch.equal(i, fi)
