"""Issue 19 parts 2 and 3 end to end: `metarec catalog add|retire` makes signed deltas that `Recommender.add_items`
verifies, stores and re-verifies on open; `metarec trending` makes packs the runtime verifies.

The model is the real MetaRecModel on a small MovieLens-layout folder, with weights set so that what should happen
is known: item vectors are 2 * (one axis per genre) from the attribute encoder alone (no id memory), the user vector
is the history's summary, the trend weight is fixed. A user whose support is genre G0 then scores a G0 item 4 and
any other item 0 before the trend, and the new-item trend adds 1.47 log1p(count).
"""
import json
import sqlite3
import warnings

import numpy as np
import pytest
import torch

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "SciFi")
N = 60
T = 1_700_000_000.0  # pack time and query time
DAY = 86400.0


def _write_dataset(folder):
    folder.mkdir()
    rows = ["movieId,title,genres"] + [f"{i},Movie {i} ({1990 + i % 10}),{GENRES[i % 6]}" for i in range(1, N + 1)]
    (folder / "movies.csv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    ev = ["userId,movieId,rating,timestamp"]
    for u in range(1, 21):
        for i in rng.choice(np.arange(1, N + 1), 5, replace=False):
            ev.append(f"{u},{i},4,{int(T - 30 * DAY + rng.integers(0, 20 * DAY))}")
    (folder / "ratings.csv").write_text("\n".join(ev) + "\n")


def _model(ds):
    from metarec.sdk.model import MetaRecModel, ModelConfig, item_attributes

    torch.manual_seed(0)
    cfg = ModelConfig(dim=8, n_prototypes=2, scene_hidden=4, head_hidden=4, hist_len=5, n_negatives=6)
    m = MetaRecModel(cfg, ds.n_items, item_attributes(ds.item_genres, ds.item_year))
    with torch.no_grad():
        m.attr_enc.weight.zero_()
        m.attr_enc.bias.zero_()
        for j in range(len(GENRES)):  # genre j -> 2 * axis j (ds genre columns are sorted: GENRES is sorted)
            m.attr_enc.weight[j, j] = 2.0
        m.attr_bias.weight.zero_()
        m.prototypes.mul_(0.05)
        m.trend_gate.weight.zero_()  # trend weight softplus(0.5) = 0.97, new items + 0.5: 1.47 in every scene
        m.item_known.zero_()
    return m.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from metarec.export import ExportConfig, export_bundle, generate_keypair
    from metarec.export.bundle import save_exported_model
    from metarec.export.compress import round_head
    from metarec.export.config import CompressConfig
    from metarec.sdk.data import load_dataset
    from metarec.sdk.train import TrainConfig

    tmp = tmp_path_factory.mktemp("delta")
    data = tmp / "shop"
    _write_dataset(data)
    ds = load_dataset(str(data))
    model = _model(ds)
    keys, other = generate_keypair(tmp / "keys"), generate_keypair(tmp / "other")
    bundle = export_bundle(model, tmp / "bundle", quant="none", prune="none", key_path=keys / "private.pem",
                           serial=1_000, export_config=ExportConfig(k_max=10, onnx=False),
                           item_ids=ds.item_ids.tolist())
    tcfg = TrainConfig.from_dict({"dataset": str(data), "model": model.cfg.to_dict()})
    # the model export shipped: its phi0 rounded to CompressConfig's head_dtype (export/compress.py compress_model)
    shipped = round_head(model, CompressConfig().head_dtype)
    save_exported_model(shipped, str(bundle) + ".model.pt", tcfg.to_dict(), ds.item_ids.tolist(), {})
    return dict(tmp=tmp, data=data, ds=ds, keys=keys, other=other, bundle=bundle)


def _items_csv(path, rows):
    path.write_text("movieId,title,genres\n" + "".join(f"{i},{t},{g}\n" for i, t, g in rows))
    return path


@pytest.fixture(scope="module")
def deltas(world):
    """delta-1 (CLI): n1 shares Action with the user's support, n2 is Horror, n3 Action too; delta-2 retires base
    item 18 (Action: one alice would get)."""
    from metarec.bench.cli import main

    tmp, keys = world["tmp"], world["keys"]
    items = _items_csv(tmp / "new.csv", [("n1", "New Action (1995)", "Action"), ("n2", "New Horror (1995)", "Horror"),
                                         ("n3", "Quiet Action (1995)", "Action")])
    assert main(["catalog", "add", str(world["bundle"]), str(items), "--key", str(keys / "private.pem"),
                 "--out", str(tmp / "delta-1"), "--seq", "1"]) == 0
    assert main(["catalog", "retire", str(world["bundle"]), "18", "--key", str(keys / "private.pem"),
                 "--out", str(tmp / "delta-2"), "--seq", "2"]) == 0
    return tmp / "delta-1", tmp / "delta-2"


def _open(world, state):
    from metarec.runtime import Recommender

    return Recommender.open(world["bundle"], state, trusted_key=world["keys"] / "public.pem")


def _pack(rec, counts):
    from metarec.runtime import TrendingPack

    return TrendingPack.from_counts(T, counts, catalog=rec.catalog)


def _support(rec, user="alice"):
    for n, item in enumerate(("6", "12")):  # items 6 and 12: Action (item i has genre GENRES[i % 6])
        rec.record(user, item, T - 3600 + n)


def _resign(src, dst, key, **change):
    """A copy of delta `src` with fields changed, signed by `key` (a correctly signed but wrong delta)."""
    from metarec.runtime.bundle_codecs import sign_manifest

    d = json.loads(src.read_bytes())
    d.update(change)
    data = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    dst.write_bytes(data)
    (dst.parent / (dst.name + ".sig")).write_bytes(sign_manifest(data, key))
    return dst


def _rows(state):
    with sqlite3.connect(state) as db:
        return db.execute("SELECT serial, seq FROM catalog_deltas ORDER BY seq").fetchall()


def test_new_item_sharing_the_support_genre_and_trending_is_recommended_one_without_is_not(world, deltas, tmp_path):
    rec = _open(world, tmp_path / "s.db")
    _support(rec)
    rec.set_trending(_pack(rec, {"n1": 3, "n2": 3}), now=T)
    before = [r.item_id for r in rec.recommend("alice", now=T, k=5)]
    assert not {"n1", "n2", "n3"} & set(before)
    rec.add_items(deltas[0])
    assert rec.item_ids[-3:] == ("n1", "n2", "n3") and rec.delta_seq == 1
    recs = rec.recommend("alice", now=T, k=5)
    ids = [r.item_id for r in recs]
    assert ids[0] == "n1", ids  # Action and trending: 4 + 1.47 log1p(3) above every Action item (4)
    assert "n2" not in ids  # trending as much, but Horror: 1.47 log1p(3) = 2.0 < 4
    full = [r.item_id for r in rec.recommend("alice", now=T, k=10)]
    assert full.index("n1") < full.index("n3")  # the same genre without the trend ranks lower
    assert recs[0].because_kind == "item" and recs[0].because in ("6", "12")  # explained by the support
    # excluded like any item once recorded, and it can be recorded
    rec.record("alice", "n1", T)
    assert "n1" not in [r.item_id for r in rec.recommend("alice", now=T + 60, k=10)]
    assert [e.item_id for e in rec.history("alice")][-1] == "n1"
    rec.close()


def test_deltas_survive_a_restart_and_retired_items_are_never_recommended(world, deltas, tmp_path):
    state = tmp_path / "s.db"
    rec = _open(world, state)
    _support(rec)
    rec.record("dave", "18", T - 10)  # an event on the item retired below stays valid
    rec.add_items(deltas[0])
    rec.set_trending(_pack(rec, {"n1": 3, "n2": 3, "18": 50}), now=T)
    assert "18" in [r.item_id for r in rec.recommend("alice", now=T, k=10)]
    assert "18" in [r.item_id for r in rec.recommend("bob", now=T, k=10)]  # very trending: a new user gets it
    rec.add_items(deltas[1])  # retires 18
    assert "18" not in [r.item_id for r in rec.recommend("alice", now=T, k=10)]
    rec.close()
    rec = _open(world, state)  # re-verified from the state database
    assert rec.delta_seq == 2 and rec.retired == frozenset({"18"}) and "n2" in rec.item_ids
    ids = [r.item_id for r in rec.recommend("alice", now=T, k=10)]
    assert ids[0] == "n1" and "18" not in ids
    for user in ("bob", "carol", "dave"):
        assert "18" not in [r.item_id for r in rec.recommend(user, now=T, k=10)]
    assert [e.item_id for e in rec.history("dave")] == ["18"]
    rec.record("dave", "n2", T + 1)  # delta items are recordable after a restart
    assert _rows(state) == [(1000, 1), (1000, 2)]
    rec.close()


def test_retiring_removes_an_item_that_would_be_recommended(world, tmp_path):
    from metarec.export.catalog import make_delta

    rec = _open(world, tmp_path / "s.db")
    _support(rec)
    top = rec.recommend("alice", now=T, k=3)[0].item_id
    d = make_delta(world["bundle"], world["keys"] / "private.pem", tmp_path / "retire", retire=[top], seq=1)
    assert d["retired"] == 1
    rec.add_items(tmp_path / "retire")
    assert top not in [r.item_id for r in rec.recommend("alice", now=T, k=10)]
    rec.close()


def test_refused_deltas_change_nothing(world, deltas, tmp_path):
    from metarec.runtime import BundleError

    keys, other = world["keys"], world["other"]
    state = tmp_path / "s.db"
    rec = _open(world, state)
    _support(rec)
    rec.set_trending(_pack(rec, {"n1": 3}), now=T)
    bad = {
        "another key": _resign(deltas[0], tmp_path / "k", other / "private.pem"),
        "another serial": _resign(deltas[0], tmp_path / "s", keys / "private.pem", bundle_serial=999),
        "another catalog": _resign(deltas[0], tmp_path / "c", keys / "private.pem", catalog="0" * 64),
        "out of order": deltas[1],  # seq 2 before seq 1
        "retires an unknown id": _resign(deltas[1], tmp_path / "u", keys / "private.pem", seq=1, retire=["n1"]),
    }
    unsigned = tmp_path / "nosig"
    unsigned.write_bytes(deltas[0].read_bytes())
    bad["unsigned"] = unsigned
    before = (rec.item_ids, [r.item_id for r in rec.recommend("alice", now=T, k=10)], _rows(state))
    messages = {}
    for what, path in bad.items():
        with pytest.raises(BundleError) as e:
            rec.add_items(path)
        messages[what] = str(e.value)
        assert (rec.item_ids, [r.item_id for r in rec.recommend("alice", now=T, k=10)], _rows(state)) == before, what
    assert "serial 999" in messages["another serial"] and "out of order" in messages["out of order"]
    assert "signature" in messages["another key"] and "another catalog" in messages["another catalog"]
    rec.add_items(deltas[0])
    with pytest.raises(BundleError, match="replay"):
        rec.add_items(deltas[0])  # replayed
    with pytest.raises(BundleError, match="replay"):
        rec.add_items(_resign(deltas[0], tmp_path / "r", keys / "private.pem", items=["n9"]))  # another seq 1
    rec.close()
    rec = _open(world, state)
    with pytest.raises(BundleError, match="replay"):
        rec.add_items(deltas[0])  # and after a restart
    assert rec.delta_seq == 1 and _rows(state) == [(1000, 1)]
    rec.close()


def test_bad_add_items_arguments_are_typed_and_change_nothing(world, deltas, tmp_path):
    from metarec.runtime import BundleError, InputError

    state = tmp_path / "s.db"
    rec = _open(world, state)
    (tmp_path / "garbage").write_bytes(b"{not json")
    (tmp_path / "garbage.sig").write_bytes(b"\0" * 64)
    (tmp_path / "dir").mkdir()
    for arg, err in ((None, InputError), (123, InputError), ("", InputError), (tmp_path / "missing", BundleError),
                     (tmp_path / "garbage", BundleError), (tmp_path / "dir", BundleError)):
        with pytest.raises(err):
            rec.add_items(arg)
    assert rec.delta_seq == 0 and len(rec.item_ids) == N and _rows(state) == []
    rec.close()


def test_a_stored_delta_that_no_longer_verifies_is_a_state_error(world, deltas, tmp_path):
    from metarec.runtime import StateError
    from metarec.runtime.store import _chk

    state = tmp_path / "s.db"
    rec = _open(world, state)
    rec.add_items(deltas[0])
    rec.close()
    d = json.loads(deltas[0].read_bytes())
    d["items"] = ["x1", "x2", "x3"]  # the ids changed, the signature kept, the row checksum recomputed
    data = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    with sqlite3.connect(state) as db:
        sig = db.execute("SELECT sig FROM catalog_deltas").fetchone()[0]
        db.execute("UPDATE catalog_deltas SET delta=?, chk=?", (data, _chk(1000, 1, data, sig)))
    with pytest.raises(StateError, match="no longer verifies"):
        _open(world, state)


def test_catalog_add_refuses_a_model_that_is_not_the_bundles(world, tmp_path):
    from metarec.export.bundle import save_exported_model
    from metarec.export.catalog import make_delta
    from metarec.export.compress import round_head
    from metarec.export.config import CompressConfig
    from metarec.export.errors import ExportError
    from metarec.sdk.train import TrainConfig

    m = _model(world["ds"])
    with torch.no_grad():
        m.attr_enc.weight[0, 0] = 3.0
    tcfg = TrainConfig.from_dict({"dataset": str(world["data"]), "model": m.cfg.to_dict()})
    m = round_head(m, CompressConfig().head_dtype)  # phi0 as the bundle's: only the attribute encoder differs
    path = save_exported_model(m, tmp_path / "other.pt", tcfg.to_dict(), world["ds"].item_ids.tolist(), {})
    items = _items_csv(tmp_path / "i.csv", [("z1", "Z (1995)", "Action")])
    with pytest.raises(ExportError, match="not this bundle's"):
        make_delta(world["bundle"], world["keys"] / "private.pem", tmp_path / "d", items_csv=items, model=path)
    with pytest.raises(ExportError, match="does not verify"):  # a key that did not sign the bundle
        make_delta(world["bundle"], world["other"] / "private.pem", tmp_path / "d", retire=["1"])
    assert not (tmp_path / "d").exists()


def test_a_mixed_bundle_takes_int8_rows_for_new_items_and_checks_its_model_row_by_row(world, tmp_path):
    """A mixed table's rows are each int8 or int4: `catalog add` recognises the bundle's model by them, refuses a
    model one int4 row away, and ships the new items' rows in int8."""
    from metarec.export import CompressConfig, ExportConfig, export_bundle
    from metarec.export.bundle import save_exported_model
    from metarec.export.catalog import make_delta
    from metarec.export.errors import ExportError
    from metarec.runtime.bundle_codecs import decode_delta
    from metarec.sdk.train import TrainConfig

    m = round_head_of(world)
    out = export_bundle(m, tmp_path / "mixed", key_path=world["keys"] / "private.pem", serial=2_000,
                        export_config=ExportConfig(k_max=10, onnx=False), item_ids=world["ds"].item_ids.tolist(),
                        compress_config=CompressConfig(quant="mixed", int8_share=0.2, group_size=0))
    tcfg = TrainConfig.from_dict({"dataset": str(world["data"]), "model": m.cfg.to_dict()}).to_dict()
    ids = world["ds"].item_ids.tolist()
    good = save_exported_model(m, tmp_path / "good.pt", tcfg, ids, {})
    items = _items_csv(tmp_path / "i.csv", [("z1", "Z (1995)", "Action")])
    make_delta(out, world["keys"] / "private.pem", tmp_path / "d", items_csv=items, model=good)
    d = decode_delta((tmp_path / "d").read_bytes())
    assert d["table_format"] == "int8" and len(d["table"]) == m.cfg.dim + 2  # one int8 row, one half scale
    from metarec.export.compress import wide_rows

    from metarec.export.catalog import check_model_is_bundles
    from metarec.runtime.bundle import open_bundle

    bundle = open_bundle(out, world["keys"] / "public.pem")
    check_model_is_bundles(m, bundle)
    table = m.export_item_table().clone()
    for wide in (True, False):  # one row of either kind moved by a third of its range: no form of it matches
        moved = table.clone()
        row = int(np.flatnonzero(wide_rows(m, 0.2) == wide)[0])
        moved[row] += moved[row].abs().max() / 3
        m.export_item_table = lambda t=moved: t
        with pytest.raises(ExportError, match="not this bundle's"):
            check_model_is_bundles(m, bundle)


def round_head_of(world):
    from metarec.export.compress import round_head
    from metarec.export.config import CompressConfig

    return round_head(_model(world["ds"]), CompressConfig().head_dtype)


# ---------------------------------------------------------------------------------------------- part 3
def test_trending_cli_pack_is_verified_on_the_device_and_refused_stale_or_future(world, tmp_path):
    from metarec.bench.cli import main
    from metarec.runtime import BundleError, InputError, TrendingPack

    events = tmp_path / "events.csv"
    rows = ["user_id,item_id,timestamp"]
    rows += [f"u{j},19,{int(T - 3600 - j)}" for j in range(9)]  # 9 events of item 19 in the last week
    rows += [f"u{j},20,{int(T - 8 * DAY - j)}" for j in range(30)]  # 30 of item 20, older than the window
    rows += ["u1,21,%d" % int(T), "u2,21,%d" % int(T - 7 * DAY)]  # at T (outside [T-7d, T)), at T-7d (inside)
    events.write_text("\n".join(rows) + "\n")
    pack_path = tmp_path / "pack.json"
    assert main(["trending", str(events), "--bundle", str(world["bundle"]), "--at", str(int(T)), "--window", "7d",
                 "--key", str(world["keys"] / "private.pem"), "--out", str(pack_path)]) == 0
    pack = TrendingPack.load(pack_path, trusted_key=world["keys"] / "public.pem")
    assert pack.at == T and dict(pack.counts) == {"19": 9.0, "21": 1.0}
    with pytest.raises(BundleError):
        TrendingPack.load(pack_path, trusted_key=world["other"] / "public.pem")
    state = tmp_path / "s.db"
    rec = _open(world, state)
    assert pack.catalog == rec.catalog
    for now, why in ((T + 15 * DAY, "stale"), (T - 2 * DAY, "future")):
        with pytest.raises(InputError, match=why):
            rec.set_trending(pack, now=now)
    assert rec.recommend("bob", now=T, k=1)[0].item_id != "19"  # nothing applied
    rec.set_trending(pack, now=T + 13 * DAY)
    assert rec.recommend("bob", now=T, k=1)[0].item_id == "19"  # the most trending item leads a new user's list
    rec.close()


def test_native_runtime_refuses_a_state_with_deltas(world, deltas, tmp_path):
    """A state file with catalog deltas for the bundle's serial: the native runtime refuses it (MR_STATE_ERROR)
    rather than serving the catalog without its deltas (docs/native.md), and changes nothing."""
    import os
    from pathlib import Path

    from metarec.runtime import StateError
    from metarec.runtime.native import DEFAULT_LIB, NativeRecommender, load_library

    path = os.environ.get("METAREC_NATIVE_LIB") or DEFAULT_LIB
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: run `make native` first (make test does)")  # as tests/native
    state = tmp_path / "s.db"
    rec = _open(world, state)
    rec.add_items(deltas[0])
    rec.close()
    before = state.read_bytes()
    with pytest.raises(StateError, match="holds catalog deltas .* which the native runtime does not serve"):
        NativeRecommender.open(world["bundle"], state, world["keys"] / "public.pem", lib=load_library(path))
    assert state.read_bytes() == before


def test_eval_bundle_pairs_the_bundle_with_its_fp32_prior_and_reports_scene_retention(world):
    """`metarec eval-bundle --checkpoint`: an unquantized bundle against the model it was exported from, served the
    same way, on the same queries, is the same ranking (difference 0); the scene slices split the headline queries."""
    from metarec.bench.runtime_eval import bundle_table, bundle_vs_baselines

    r = bundle_vs_baselines(world["bundle"], world["keys"] / "public.pem", str(world["data"]), ["popularity"],
                            progress=False, checkpoint=str(world["bundle"]) + ".model.pt")
    f = r["fp32"]
    assert abs(f["hr10"] - r["rows"]["bundle"]["hr10"]) < 1e-9 and f["bundle_minus"] == 0.0
    assert f["bundle_minus_ci"] == [0.0, 0.0]
    sc = r["rows"]["bundle"]["scene"]
    assert sc["changed"]["n"] + sc["same"]["n"] > 0 and sc["same"]["n"] > 0
    assert r["rows"]["popularity"]["scene"]["changed"]["n"] == sc["changed"]["n"]  # the same queries, both sides
    text = bundle_table(r)
    assert "Against its fp32 prior" in text and "Scene retention" in text


def test_eval_bundle_reads_the_history_lengths_it_is_given(world):
    """`metarec eval-bundle --ks 1-5`: every side scores the queries with K in 1..5 (more than the headline's 1..3,
    the same ones on both sides of a pair); the table names them."""
    from metarec.bench.cli import parse_ks
    from metarec.bench.runtime_eval import bundle_table, bundle_vs_baselines

    args = (world["bundle"], world["keys"] / "public.pem", str(world["data"]), ["popularity"])
    r3 = bundle_vs_baselines(*args, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a K few users reach is no NaN on the console
        r5 = bundle_vs_baselines(*args, progress=False, ks=parse_ks("1-5"))
    n = lambda r, name="bundle": sum(r["rows"][name]["scene"][s]["n"] for s in ("changed", "same"))
    assert r3["ks"] == [1, 2, 3] and r5["ks"] == [1, 2, 3, 4, 5]
    assert n(r5) > n(r3) and n(r5, "popularity") == n(r5)
    assert "K = 1..5)" in bundle_table(r5) and "K = 1..3)" in bundle_table(r3)
    assert parse_ks("0,2,5-6") == (0, 2, 5, 6)
    for bad in ("a", "3-1", "-1", "101", ""):
        with pytest.raises(ValueError):
            parse_ks(bad)


def test_eval_bundle_pairs_the_scene_changed_queries_with_the_baseline(world):
    """eval-bundle's changed-scene comparison is the paired difference over exactly the queries whose scene changed
    since the last event (the bundle's and the baseline's results for them, user by user)."""
    from metarec.bench.runtime_eval import bundle_table, bundle_vs_baselines, runtime_next_item
    from metarec.sdk.data import load_dataset
    from metarec.sdk.floor import baseline_on
    from metarec.sdk.protocol import EventLog, evaluate_users, split_users

    ks = tuple(range(1, 11))
    r = bundle_vs_baselines(world["bundle"], world["keys"] / "public.pem", str(world["data"]), ["popularity"],
                            progress=False, ks=ks)
    ds = load_dataset(str(world["data"]))
    split, log = split_users(ds), EventLog(ds)
    mine = runtime_next_item(world["bundle"], world["keys"] / "public.pem", ds, ks=ks)["results"]
    base = evaluate_users(baseline_on("popularity", ds, np.r_[split.train, split.val], log), ds, split.test, log, ks=ks)
    ch = np.asarray(mine["scene_changed"], bool)
    assert ch.any() and (~ch).any() and np.array_equal(ch, np.asarray(base["scene_changed"], bool))
    d = np.asarray(mine["hr"])[ch] - np.asarray(base["hr"])[ch]
    u = np.asarray(mine["user"])[ch]
    want = np.mean([d[u == x].mean() for x in np.unique(u)])
    row = r["rows"]["popularity"]
    assert row["changed_minus"] == pytest.approx(want, abs=1e-12)
    assert row["changed_minus_ci"][0] <= want <= row["changed_minus_ci"][1]
    assert "On the queries whose scene changed, the bundle minus" in bundle_table(r)
