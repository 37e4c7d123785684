"""The large-catalog score.pte (export/large.py) and its serving (runtime ChunkedScoreProgram, Recommender).

Small N with a lowered threshold (ExportConfig.large_catalog_items) and small chunks, so the chunking, the max tree
and the merge all run: a quantized program against fp32 scores (parity), the rows the runtime reads back, and the
product on one model through both programs (small: table input; large: table inside), users with and without
history, exclusions, `because`, trending and new items.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metarec.export import ExportConfig
from metarec.runtime.manifest import OnboardingSpec
from metarec.sdk import kernel

N, CHUNK, D = 3000, 1024, 32  # 3 chunks: 1024, 1024, 952 items
NEW = np.arange(40, 3000, 97)  # items without an id: the new-item trend gain


def _model(n: int = N, seed: int = 0):
    from metarec.sdk.model import MetaRecModel, ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(dim=D, n_prototypes=4, trend_hist_scale=1.3, hist_len=6, n_negatives=8)
    rng = np.random.default_rng(seed)
    attrs = (rng.random((n, 21)) < 0.1).astype(np.float32)
    m = MetaRecModel(cfg, n, attrs).eval()
    with torch.no_grad():
        m.item_emb.normal_(0, 0.3)
        for p in m.head0.values():
            p.normal_(0, 0.1)
        m.trend_gate.bias.fill_(1.0)  # a trend term that matters in the ranking
        m.item_known[torch.from_numpy(NEW[NEW < n])] = 0.0
    return m


def _reference(model, inputs, fp32: bool = True):
    """(N,) fp32 scores of the kernel from the model's unquantized table, excluded items (t = -inf) at -inf."""
    head, hist, mask, scene, *ts = inputs
    t = torch.cat([x.reshape(-1) for x in ts])
    excl = torch.isneginf(t)
    w = kernel.Weights.of(model)
    shapes = kernel.head_shapes(model.cfg)
    with torch.no_grad():
        s = kernel.scores(model.cfg, w, kernel.unflatten_head(head, shapes), hist, mask[None], scene[None],
                          torch.where(excl, 0.0, t), model.export_item_table(), model.export_item_bias(),
                          item_new=1.0 - model.item_known, new_offset=model.cfg.new_trend_offset, serving=True)
        z, _ = kernel.user_vector(model.cfg, w, kernel.unflatten_head(head, shapes), hist, mask[None], scene[None])
    s = s.reshape(-1).double().numpy()
    s[excl.numpy()] = -np.inf
    return s, z.reshape(-1).double().numpy()


def test_trend_gains_are_the_trend_term():
    """kernel.trend_gains (the large program's trend) = kernel.trend_term on a model without per-item trend terms:
    items with an id take the seen gain, id-less items the new one, with the serving history scale."""
    m = _model(200)
    w = kernel.Weights.of(m)
    s = kernel.scene_encoding(m.cfg, w, torch.rand(1, 15))
    trend = torch.rand(200) * 3
    new = 1.0 - m.item_known
    for k in (0, 3):
        mask = torch.zeros(1, m.cfg.hist_len)
        mask[0, m.cfg.hist_len - k:] = 1.0
        with torch.no_grad():
            ref = kernel.trend_term(m.cfg, w, s, trend, mask, new, m.cfg.new_trend_offset, serving=True)
            seen, newg = kernel.trend_gains(m.cfg, w, s, mask, m.cfg.new_trend_offset, serving=True)
        got = torch.where(new > 0, newg, seen) * trend
        assert float(seen) != float(newg)
        torch.testing.assert_close(got, ref.reshape(-1), rtol=1e-6, atol=1e-6)
    assert kernel.per_item_trend(m.cfg) == []


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_program_parity_with_fp32(quant):
    """The lowered program (run by the runtime's ChunkedScoreProgram) against the kernel's fp32 scores: every
    returned item is outside the exclusions, its value is its fp32 score within the quantization bound, and it is
    within 2 bounds of the fp32 k-th score (top-k equal up to what quantization explains); the rows read back
    through the columns method are the fp32 rows within one quantization step."""
    from metarec.export.large import chunked_example_inputs, export_chunked_score_program
    from metarec.runtime.manifest import CHUNKED_SCORE_INPUTS, COLUMNS_METHOD, ProgramIO, Shapes, chunk_input_names
    from metarec.runtime.programs import ChunkedScoreProgram

    m = _model()
    k = 5  # chunks of 1024 halve once in the max tree (512 >= 64 k), so the two-stage top-k runs
    pte, edges, (fmt, group) = export_chunked_score_program(m, k, quant, CHUNK)
    assert edges == [0, 1024, 2048, N] and fmt == quant and group == (D if quant == "int8" else 32)
    io = ProgramIO("score.pte", "forward", CHUNKED_SCORE_INPUTS + chunk_input_names(3), ("topk_scores", "topk_ids"),
                   codec="none", chunks=tuple(edges), columns_method=COLUMNS_METHOD)
    sh = Shapes(N=N, d=D, L=m.cfg.hist_len, F=15, P=m.head_size(), k_max=k, S=m.cfg.hist_len, R=8)
    prog = ChunkedScoreProgram(pte, io, sh)

    table = m.export_item_table().detach().double().numpy()
    qmax = 127 if quant == "int8" else 7
    step = np.abs(table).max(1) / qmax  # one quantization step per row (a group is a row at d=32)
    assert np.abs(prog.table - table).max() <= step.max() * 0.5 + 1e-6
    assert np.abs(prog.table - table).max() > 0  # really quantized: the rows are the program's, not the model's

    rng = np.random.default_rng(1)
    for trial in range(4):
        ex = list(chunked_example_inputs(m, edges, seed=trial))
        t = torch.cat([x.reshape(-1) for x in ex[4:]]).clone()
        top_fp32 = np.argsort(-_reference(m, ex)[0])[:k]
        t[torch.from_numpy(rng.choice(N, 200, replace=False))] = float("-inf")
        t[torch.from_numpy(top_fp32[:2])] = float("-inf")  # the fp32 favourites excluded
        ex[4:] = [t[None, a:b].clone() for a, b in zip(edges[:-1], edges[1:])]
        ref, z = _reference(m, ex)
        vals, ids = (x.numpy().copy() for x in prog.execute(ex))
        zr = float(z.max() - min(z.min(), 0.0))
        tol = float((step * D * np.abs(z).max()).max()) * 0.5 + float(np.abs(table).sum(1).max()) * zr / 255 / 2 \
            + 1e-4 * (1 + np.abs(ref[np.isfinite(ref)]).max())
        kth = np.sort(ref)[::-1][k - 1]
        assert len(set(ids.tolist())) == k and np.isfinite(ref[ids]).all(), "an excluded item was returned"
        assert (np.abs(vals - ref[ids]) <= tol).all(), (vals, ref[ids], tol)
        assert (ref[ids] >= kth - 2 * tol).all()
        assert len(set(ids.tolist()) & set(np.argsort(-ref)[:k].tolist())) >= k - 2


def test_chunked_top_k_is_the_flat_top_k():
    """Unquantized, the chunks + max trees + merge return the flat top-k of the kernel's scores."""
    from metarec.export.large import build_chunked, chunked_example_inputs

    m = _model()
    fwd, cols, edges, fmt = build_chunked(m, 5, "none", CHUNK)
    assert fmt == ("float32", 0)
    for seed in range(3):
        ex = chunked_example_inputs(m, edges, seed)
        with torch.no_grad():
            v, i = fwd(*ex)
            col = cols(torch.ones(1, D))[0]
        ref, _ = _reference(m, ex)
        assert i.tolist() == np.argsort(-ref, kind="stable")[:5].tolist()
        np.testing.assert_allclose(v.numpy(), ref[i.numpy()], rtol=1e-5, atol=1e-5)
        ref_col = m.export_item_table().sum(1) + m.export_item_bias()
        torch.testing.assert_close(col.reshape(-1), ref_col.detach(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ through the product
@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """One model exported twice: the small program (threshold off) and the large one (threshold 1,000)."""
    from metarec.export import export_bundle, generate_keypair

    root = tmp_path_factory.mktemp("large")
    keys = generate_keypair(root / "keys")
    m = _model()
    out = {}
    for name, threshold in (("small", 0), ("large", 1000)):
        ecfg = ExportConfig(k_max=20, onnx=False, large_catalog_items=threshold, large_chunk_items=CHUNK)
        out[name] = export_bundle(m, root / name, quant="int8", prune="none", key_path=keys / "private.pem",
                                  serial=7, export_config=ecfg)
    return out, keys / "public.pem", root


def _open(bundles, name, state):
    from metarec.runtime import Recommender

    dirs, key, root = bundles
    return Recommender.open(dirs[name], root / f"{state}.db", trusted_key=key)


def test_large_bundle_holds_the_table_once(bundles):
    dirs, _, _ = bundles
    m = json.loads((dirs["large"] / "manifest.json").read_bytes())
    assert m["item_table"] == {"file": "", "format": "int8", "group_size": D, "program": "score"}
    assert m["programs"]["score"]["chunks"] == [0, 1024, 2048, N]
    assert m["configs"]["export"]["large_catalog_items"] == 1000
    sizes = {p.name: p.stat().st_size for p in dirs["large"].iterdir()}
    assert "items.bin" not in sizes and "model.onnx" not in sizes
    table = N * (D + 4 + 4)  # int8 rows + a float32 scale and bias per item
    assert sizes["score.pte"] <= table + 64_000  # the program is its table plus its small graph
    rest = sum(sizes.values()) - sizes["score.pte"]
    small = {p.name: p.stat().st_size for p in dirs["small"].iterdir()}
    assert rest <= sum(small.values()) - small["score.pte"] - small["items.bin"] + 2_000  # nothing else grows
    s = json.loads((dirs["small"] / "manifest.json").read_bytes())
    # the small bundle's manifest has no large-catalog field: a runtime from before them reads it unchanged
    assert "program" not in s["item_table"] and "chunks" not in s["programs"]["score"]
    assert not any("columns_method" in p or "chunks" in p for p in s["programs"].values())


def test_manifest_refuses_inconsistent_chunks(bundles):
    from metarec.runtime.errors import BundleError
    from metarec.runtime.manifest import Manifest

    dirs, _, _ = bundles
    good = json.loads((dirs["large"] / "manifest.json").read_bytes())
    Manifest.from_dict(good)
    bad = [("chunks", [0, 1024, 2048, N - 1]), ("chunks", [0, 10, N]), ("chunks", []), ("chunks", [0, N, N])]
    for field, value in bad:
        d = json.loads(json.dumps(good))
        d["programs"]["score"][field] = value
        with pytest.raises(BundleError):
            Manifest.from_dict(d)
    d = json.loads(json.dumps(good))
    d["item_table"]["program"] = ""
    with pytest.raises(BundleError):
        Manifest.from_dict(d)


def test_large_serves_what_small_serves(bundles):
    """Same model, same users and scenes, both programs: the recorded items are never returned, the top-10s agree
    up to quantization (>= 8 of 10 shared, shared items' scores within 0.05), `because` agrees on shared items,
    and a trending pack moves both the same way, new items (the new-item gain) included."""
    from metarec.runtime import TrendingPack

    dirs, _, root = bundles
    recs = {name: _open(bundles, name, f"serve-{name}") for name in ("small", "large")}
    try:
        ids = recs["small"].item_ids
        assert recs["large"].item_ids == ids
        now = 1_700_000_000.0
        base = [r.item_id for r in recs["small"].recommend("probe", now, k=10)]
        users = {"none": [], "one": [base[0]], "three": base[1:3] + [ids[NEW[0]]]}
        for rec in recs.values():
            for user, items in users.items():
                for j, item in enumerate(items):
                    rec.record(user, item, now - 100 + j)
        hot = [ids[NEW[1]], ids[5], ids[NEW[2]]]  # two new items among them
        pack = TrendingPack.from_counts(now, {hot[0]: 5000, hot[1]: 3000, hot[2]: 2000},
                                        catalog=recs["small"].catalog)
        for phase in ("no pack", "pack"):
            if phase == "pack":
                for rec in recs.values():
                    rec.set_trending(pack, now=now)
            for user, items in users.items():
                for hour in (0, 9):
                    at = now + hour * 3600
                    got = {name: rec.recommend(user, at, k=10) for name, rec in recs.items()}
                    small, large = ({r.item_id: r for r in got[n]} for n in ("small", "large"))
                    assert not set(items) & set(large) and not set(items) & set(small)
                    shared = set(small) & set(large)
                    assert len(shared) >= 8, (user, phase, hour, sorted(small), sorted(large))
                    for i in shared:
                        assert abs(small[i].score - large[i].score) <= 0.05
                        assert small[i].because_kind == large[i].because_kind
                        if items:
                            assert large[i].because in items
                    agree = sum(small[i].because == large[i].because for i in shared)
                    assert agree >= len(shared) - 1
                    if phase == "pack" and user == "none":
                        assert set(hot) <= set(large) and set(hot) <= set(small)
                        assert large[hot[0]].because == "trending"
    finally:
        for rec in recs.values():
            rec.close()


def test_large_exclusions_are_per_call(bundles):
    """The shared t buffer carries one user's exclusions only during that user's call: another user, and the same
    user after a restart, see exactly their own."""
    rec = _open(bundles, "large", "excl")
    now = 1_700_000_000.0
    try:
        first = [r.item_id for r in rec.recommend("a", now, k=20)]
        for j, item in enumerate(first[:15]):  # a excludes most of the cold top-20
            rec.record("a", item, now + j)
        a = [r.item_id for r in rec.recommend("a", now + 60, k=20)]
        b = [r.item_id for r in rec.recommend("b", now + 60, k=20)]
        assert not set(first[:15]) & set(a)
        assert set(first[:15]) <= set(b)  # b has no history: nothing of a's is excluded for b
        assert rec._t_np.tolist() == rec._trend_np.tolist()  # restored after each call
    finally:
        rec.close()
    rec = _open(bundles, "large", "excl")
    try:
        assert [r.item_id for r in rec.recommend("a", now + 60, k=20)] == a
    finally:
        rec.close()


def test_scaling_runtime_bench_measures_the_large_bundle(bundles):
    """bench/bench_scaling_runtime.py's parts on the test bundles: what a call streams (the large program: its
    inflated score.pte and t; the small one: the fp32 table input first) and a warm measurement that excludes the
    recorded items."""
    from metarec.bench.bench_scaling_runtime import measure, stream_bytes

    dirs, key, root = bundles
    large, small = stream_bytes(dirs["large"]), stream_bytes(dirs["small"])
    assert set(large) == {"score_pte", "t"} and large["t"] == 4 * N
    assert large["score_pte"] >= (dirs["large"] / "score.pte").stat().st_size  # inflated, not as stored
    assert large["score_pte"] >= N * (D + 8)  # the table, its scales and the bias are in it
    assert small["table_fp32"] == 4 * N * D
    m = measure(dirs["large"], key, 20, root / "bench.db")
    assert m["recorded_excluded"] and m["warm"]["p50_us"] > 0 and len(m["top3"]) == 3


# ------------------------------------------------------------------- what a large bundle cannot carry (issue 19 merge)
NB_SPEC = {"m": 4, "last": 3, "decay": 0.8, "weight": 0.5, "kind": "cooc"}


def test_runtime_refuses_a_large_bundle_with_the_item_item_term(bundles, tmp_path):
    """The chunked score.pte has no rank method (no cached offset to add the term to): a large bundle whose signed
    manifest carries `neighbors` is a BundleError, and no state file is left behind."""
    import hashlib
    import shutil

    from metarec.runtime import Recommender
    from metarec.runtime.bundle_codecs import sign_manifest
    from metarec.runtime.errors import BundleError
    from metarec.runtime.manifest import NEIGHBORS_FILE, Manifest

    dirs, key, root = bundles
    bad = tmp_path / "large_nb"
    shutil.copytree(dirs["large"], bad)
    nb = np.zeros(N * 4 * 6, dtype=np.uint8).tobytes()  # (N, m) int32 ids + float16 weights
    (bad / NEIGHBORS_FILE).write_bytes(nb)
    d = json.loads((bad / "manifest.json").read_bytes())
    d["files"][NEIGHBORS_FILE] = {"sha256": hashlib.sha256(nb).hexdigest(), "bytes": len(nb)}
    d["neighbors"] = {"file": NEIGHBORS_FILE, **NB_SPEC}
    with pytest.raises(BundleError, match="rank method"):
        Manifest.from_dict(d)
    data = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    (bad / "manifest.json").write_bytes(data)
    (bad / "manifest.sig").write_bytes(sign_manifest(data, root / "keys" / "private.pem"))
    state = tmp_path / "nb.db"
    with pytest.raises(BundleError):
        Recommender.open(bad, state, trusted_key=key)
    assert not state.exists()


def test_export_ships_no_item_item_term_with_the_large_program(bundles, tmp_path, monkeypatch):
    """When the selection (on eager models) chose an item-item term, weights by history length and the onboarding term
    but the catalog gets the large program, export leaves them out and records it; build_manifest refuses each
    outright."""
    import metarec.export.bundle as eb
    from metarec.export import CompressConfig, export_bundle
    from metarec.export.errors import ExportError

    _, _, root = bundles
    m = _model(1200)
    monkeypatch.setattr(eb, "load_model", lambda ck: (m, None, {"validation": {"stub": True}}))

    def choose(model, validation, extra, ecfg, force, say):
        extra["selection"] = {"neighbors": {"best": dict(NB_SPEC)}}
        return (model, CompressConfig(quant="int8"), dict(NB_SPEC), {"term": [0.0, 2.0], "popularity": [1.0]},
                OnboardingSpec(weight=(1.0,), span=3, window_days=7.0))

    monkeypatch.setattr(eb, "_choose", choose)
    said = []
    ecfg = ExportConfig(k_max=20, onnx=False, large_catalog_items=1000, large_chunk_items=CHUNK)
    out = export_bundle("unused.pt", tmp_path / "b", key_path=root / "keys" / "private.pem", serial=8,
                        export_config=ecfg, progress=said.append)
    man = json.loads((out / "manifest.json").read_bytes())
    assert man["neighbors"] is None and "neighbors.bin" not in man["files"]
    assert "by_history" not in man and "popularity.bin" not in man["files"]  # weights by history length: left out too
    assert "onboarding" not in man and not eb.onboarding_pack_path(out).exists()  # and the onboarding term
    assert man["programs"]["score"]["chunks"] and man["configs"]["selection"]["neighbors"]["shipped"] is False
    assert any("item-item term" in s and "not shipped" in s for s in said)
    from metarec.runtime.manifest import NEIGHBORS_FILE, POPULARITY_FILE, HistoryWeights, NeighborSpec

    with pytest.raises(ExportError, match="rank method"):
        eb.build_manifest(m, None, {}, serial=1, model_version="x", configs={}, k_max=20,
                          large={"chunks": [0, 1024, 1200], "format": "int8", "group_size": D},
                          neighbors=NeighborSpec(file=NEIGHBORS_FILE, **NB_SPEC))
    with pytest.raises(ExportError, match="rank method"):
        eb.build_manifest(m, None, {}, serial=1, model_version="x", configs={}, k_max=20,
                          large={"chunks": [0, 1024, 1200], "format": "int8", "group_size": D},
                          by_history=HistoryWeights(popularity=(1.0,), file=POPULARITY_FILE))
    with pytest.raises(ExportError, match="rank method"):
        eb.build_manifest(m, None, {}, serial=1, model_version="x", configs={}, k_max=20,
                          large={"chunks": [0, 1024, 1200], "format": "int8", "group_size": D},
                          onboarding=OnboardingSpec(weight=(1.0,), span=3, window_days=7.0))


def test_catalog_deltas_are_refused_on_a_large_bundle(bundles, tmp_path):
    """A signed delta for a large bundle is a BundleError from add_items and changes nothing (catalog, retired,
    delta_seq, answers, state database); `metarec catalog` refuses to make one (ExportError)."""
    import sqlite3

    from metarec.export.errors import ExportError
    from metarec.export.catalog import make_delta
    from metarec.runtime.bundle_codecs import catalog_digest, encode_delta, sign_manifest
    from metarec.runtime.errors import BundleError

    dirs, _, root = bundles
    with pytest.raises(ExportError, match="large-catalog"):
        make_delta(dirs["large"], root / "keys" / "private.pem", tmp_path / "d1", retire=["5"])
    rec = _open(bundles, "large", f"delta_{tmp_path.name}")
    try:
        rec.record("u", rec.item_ids[3], 1_700_000_000.0)
        before = rec.recommend("u", 1_700_000_100.0, k=10)
        top = before[0].item_id
        data = encode_delta(at=1_700_000_000.0, bundle_serial=rec.serial, catalog=rec.catalog, seq=1, items=[],
                            retire=[top], table=None)
        assert rec.catalog == catalog_digest(rec.item_ids)
        (tmp_path / "d1").write_bytes(data)
        (tmp_path / "d1.sig").write_bytes(sign_manifest(data, root / "keys" / "private.pem"))
        with pytest.raises(BundleError, match="large-catalog"):
            rec.add_items(tmp_path / "d1")
        assert rec.delta_seq == 0 and rec.retired == frozenset() and len(rec.item_ids) == N
        assert rec.recommend("u", 1_700_000_100.0, k=10) == before
    finally:
        rec.close()
    db = sqlite3.connect(root / f"delta_{tmp_path.name}.db")
    assert db.execute("SELECT COUNT(*) FROM catalog_deltas").fetchone()[0] == 0
    db.close()


def test_a_mixed_table_is_refused_for_the_large_program(bundles, tmp_path):
    """The large program's table is one torchao constant of one format: a mixed table (a file layout) is an
    ExportError before anything is written, and the same model below the threshold exports it."""
    from metarec.export import CompressConfig, export_bundle
    from metarec.export.errors import ExportError

    _, _, root = bundles
    m = _model(1200)
    key = root / "keys" / "private.pem"
    ccfg = CompressConfig(quant="mixed", prune_dim=None, prune_prototypes=None)
    with pytest.raises(ExportError, match="mixed"):
        export_bundle(m, tmp_path / "large", key_path=key, compress_config=ccfg,
                      export_config=ExportConfig(k_max=20, onnx=False, large_catalog_items=1000,
                                                 large_chunk_items=CHUNK))
    assert not (tmp_path / "large" / "manifest.json").exists()
    out = export_bundle(m, tmp_path / "small", key_path=key, compress_config=ccfg,
                        export_config=ExportConfig(k_max=20, onnx=False, large_catalog_items=0))
    assert json.loads((out / "manifest.json").read_bytes())["item_table"]["format"] == "mixed"
