"""PROTOCOL v1 next-item queries run through the phone's runtime (not the sdk), the way an app would drive it.

Each test user is a fresh user on the device: its events are recorded one by one; before event K+1 the app sets
the trending pack of that moment (other users' 7-day counts, what the server would ship) and, when the bundle has an
item-item term, the neighbour pack of that moment (sdk/neighbors.py LiveNeighbors: only the rows the term reads are
filled, so the ranking is the full pack's), and asks for the top 10.
Only top-10 lists come back, so HR@10/NDCG@10 are read off the list (model scores are continuous: no ties).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from metarec.bench.bench_util import ci_text
from metarec.runtime import Recommender, TrendingPack
from metarec.runtime.neighbors import NeighborPack
from metarec.runtime.onboarding import OnboardingPack
from metarec.runtime.scene import scene_features, scene_labels
from metarec.sdk.catalog import id_counts
from metarec.sdk.data import Dataset
from metarec.sdk.onboarding import pack_rows
from metarec.sdk.protocol import HEADLINE_KS, WEEK, EventLog, make_query, split_users, summarize_next_item


def runtime_next_item(bundle_dir, trusted_key, ds: Dataset, users=None, ks=HEADLINE_KS, state_path=None,
                      progress: bool = True, eager=None, opener=Recommender.open) -> dict:
    """HR@10 / NDCG@10 per K and the K=1..3 headline through `metarec.runtime.Recommender`.

    With `eager` (a fitted sdk Recommender, e.g. MetaRecRecommender on the bundle's checkpoint), each query's
    runtime top-10 is also compared with the eager model's top-10 over the same candidates (issue 6 parity)."""
    users = split_users(ds).test if users is None else users
    log = EventLog(ds)
    per_user = ds.user_events()
    tmp = None
    if state_path is None:
        tmp = tempfile.TemporaryDirectory()
        state_path = Path(tmp.name) / "state.db"
    rec = opener(bundle_dir, state_path, trusted_key=trusted_key)
    spec = rec.neighbor_spec  # both runtimes: the item-item term's kind, m, last, decay, weight, or None
    ob = rec.onboarding_spec  # both runtimes: the onboarding term's weight, span, window_days, or None
    live = None
    if spec is not None:
        from metarec.sdk.neighbors import LiveNeighbors

        live = LiveNeighbors(spec.kind, spec.m)
    rows_out = []  # (user, k, hr, ndcg, top10 ids, eager top10, scene changed since the last event, target scene)
    try:
        for u in tqdm(users, disable=not progress, desc="runtime"):
            rows = per_user[u]
            uid = f"eval-{ds.user_ids[u]}"
            done = 0
            for k in sorted(ks):
                if len(rows) < k + 1:
                    break
                for j in range(done, k):  # the device records the user's events as they happen
                    r = rows[j]
                    rec.record(uid, str(ds.item_ids[ds.item[r]]), float(ds.ts[r]), event_id=f"{uid}:{j}")
                done = k
                t = float(ds.ts[rows[k]])
                counts = log.counts(t, u, WEEK)
                rec.set_trending(TrendingPack.from_counts(t, id_counts(ds.item_ids, counts.astype(np.int64))),
                                 now=t, allow_older=True)  # users are replayed one after another: time goes back
                if live is not None:
                    ids, w = live.table(log, ds.item[rows[:k]], t, u, spec.last)
                    rec.set_neighbors(NeighborPack(t, rec.catalog, spec.kind, ids, w), now=t, allow_older=True)
                if ob is not None:  # the server's pack of that moment, without this user's own events
                    rec.set_onboarding(OnboardingPack.from_rows(t, pack_rows(log, t, u, ob, ds.item_ids), rec.catalog),
                                       now=t, allow_older=True)
                top = [r.item_id for r in rec.recommend(uid, now=t, k=10)]
                target = str(ds.item_ids[ds.item[rows[k]]])
                pos = top.index(target) + 1 if target in top else 0
                want = None
                if eager is not None:
                    s = np.asarray(eager.score(make_query(ds, log, u, rows, k, t)), dtype=np.float64).copy()
                    s[ds.item[rows[:k]]] = -np.inf  # the user's own items are excluded, as on the phone
                    want = [str(ds.item_ids[i]) for i in np.argsort(-s, kind="stable")[:10]]
                lab = scene_labels(np.r_[float(ds.ts[rows[k - 1]]) if k else t, t])  # as evaluate_users does
                rows_out.append((int(u), k, float(pos > 0), 1.0 / np.log2(pos + 1) if pos else 0.0, top, want,
                                 bool(lab[0] != lab[1]), scene_features([t])[0]))
    finally:
        rec.close()
        if tmp is not None:
            tmp.cleanup()
    user = np.array([r[0] for r in rows_out])
    kk = np.array([r[1] for r in rows_out])
    hr = np.array([r[2] for r in rows_out])
    nd = np.array([r[3] for r in rows_out])
    res = {"user": user, "k": kk, "hr": hr, "ndcg": nd, "scene_changed": np.array([r[6] for r in rows_out], bool),
           "target_scene": np.array([r[7] for r in rows_out], np.float32).reshape(len(rows_out), -1)}
    # a K no test user reaches has no row (no NaN, no warning); the headline is K = 1..3 only, whatever else was asked
    out = {**summarize_next_item(res, [k for k in sorted(ks) if (kk == k).any()], headline=HEADLINE_KS),
           "top10": {(int(r[0]), int(r[1])): r[4] for r in rows_out}, "results": res}
    if eager is not None:
        same = np.array([r[4] == r[5] for r in rows_out])
        same_set = np.array([set(r[4]) == set(r[5]) for r in rows_out])
        out["parity"] = {"queries": int(len(same)), "ordered": float(same.mean()), "as_sets": float(same_set.mean()),
                         "by_k": {str(k): float(same[kk == k].mean()) for k in sorted(ks) if (kk == k).any()}}
    return out


def _use_bundle_weights(eager, bundle) -> None:
    """Give the eager model the item table and bias exactly as `bundle` (from `open_bundle`) ships them
    (dequantized table, fp16 bias), so parity measures the runtime's execution rather than the quantization
    error (export.md has that)."""
    import torch

    table = bundle.table
    if table.shape != tuple(eager.table.shape):
        raise ValueError(f"bundle table {table.shape} does not match the checkpoint's {tuple(eager.table.shape)} "
                         "(a pruned bundle has no eager checkpoint: export with --prune none for parity)")
    eager.table = torch.from_numpy(table.copy())
    if "float16" in str(bundle.manifest.dtypes.get("item_bias", "")):
        eager.bias = eager.bias.half().float()


def parity_report(checkpoint, bundle_dir, trusted_key, dataset: str = "ml-100k", ks=(0, 1, 2, 3, 5, 10),
                  as_shipped: bool = True) -> dict:
    """Issue 6 parity: runtime top-10 vs the sdk's eager adapted model (same checkpoint), and HR@10 both ways.
    `as_shipped`: the eager model uses the bundle's (quantized) item table and bias."""
    from metarec.runtime.bundle import open_bundle
    from metarec.sdk.data import load_dataset
    from metarec.sdk.protocol import evaluate_users
    from metarec.sdk.recommender import MetaRecRecommender

    shipped = open_bundle(bundle_dir, trusted_key)  # the runtime's reader, before minutes of evaluation
    ds = load_dataset(dataset)
    split, log = split_users(ds), EventLog(ds)
    eager = MetaRecRecommender(checkpoint=checkpoint, config=None).fit(ds, np.r_[split.train, split.val], log)
    eager = _fp32_reference(eager.model, eager.config, shipped)  # the bundle's steps, popularity delta and term
    if as_shipped:
        _use_bundle_weights(eager, shipped)
    rt = runtime_next_item(bundle_dir, trusted_key, ds, ks=ks, eager=eager)
    ev = summarize_next_item(evaluate_users(eager, ds, split.test, log, ks=HEADLINE_KS), ks=HEADLINE_KS)
    return {"parity": rt["parity"], "eager_weights": "as shipped in the bundle" if as_shipped else "checkpoint fp32",
            "hr10_runtime_k1to3": rt["headline"]["hr10"],
            "hr10_eval_k1to3": ev["headline"]["hr10"], "hr10_abs_diff": abs(rt["headline"]["hr10"] - ev["headline"]["hr10"])}


def _fp32_reference(model, cfg, shipped):
    """The prior `model` (TrainConfig `cfg`) served as the bundle `shipped` (from `open_bundle`) serves it: its
    adaptation steps, the popularity delta export baked into its bias, its item-item term and weights by history
    length. What the bundle's compression is measured against."""
    import copy
    import dataclasses

    import torch

    from metarec.sdk.recommender import MetaRecRecommender

    m = shipped.manifest
    model = copy.deepcopy(model)
    model.cfg = dataclasses.replace(model.cfg, inner_steps=m.inner_steps)
    delta = float(m.configs.get("selection", {}).get("popularity", {}).get("delta", 0.0))
    if delta:
        with torch.no_grad():
            model.pop_w += delta
    cfg = dataclasses.replace(cfg, model=model.cfg)
    return _serve_as(MetaRecRecommender(cfg, name="fp32 prior").set_model(model, cfg), shipped)


def _serve_as(rec, shipped):
    """`rec` (the sdk's eager scorer) with the bundle's item-item term, its rows from the neighbour pack of each
    query's moment, its weights by history length and its onboarding term, as the runtimes serve them."""
    from metarec.sdk.neighbors import LiveNeighbors

    nb, bh = shipped.manifest.neighbors, shipped.manifest.by_history
    if nb is not None:
        rec.set_neighbors(LiveNeighbors(nb.kind, nb.m), nb.last, nb.decay, nb.weight)
    if bh is not None:
        rec.set_by_history(bh.term, bh.popularity, shipped.popularity)
    return rec.set_onboarding(shipped.manifest.onboarding)


def bundle_vs_baselines(bundle_dir, trusted_key, dataset: str = "ml-100k", baselines=None,
                        progress: bool = True, checkpoint=None, ks=HEADLINE_KS) -> dict:
    """`metarec eval-bundle`: the bundle through `metarec.runtime.Recommender` on PROTOCOL v1 test users (the queries
    with K in `ks`, the headline's 1..3 by default) against each baseline fit on the fit users, paired over the same
    queries (95% bootstrap interval over users); with `checkpoint`, also against its fp32 prior served the same way
    (steps, term): the compression's cost."""
    from metarec.sdk.coldstart_diagnostics import paired_difference
    from metarec.sdk.data import load_dataset
    from metarec.sdk.floor import FLOOR_BASELINES, baseline_on, verdict
    from metarec.sdk.protocol import evaluate_users, scene_slices

    ds = load_dataset(dataset)
    split, log = split_users(ds), EventLog(ds)
    fit = np.r_[split.train, split.val]
    ks = tuple(sorted(set(int(k) for k in ks)))
    rt = runtime_next_item(bundle_dir, trusted_key, ds, ks=ks, progress=progress)
    mine = rt["results"]
    head = summarize_next_item(mine, ks, headline=ks)["headline"]  # at K = 1..3, runtime_next_item's headline
    rows = {"bundle": {"hr10": head["hr10"], "hr10_ci": head["hr10_ci"], "scene": scene_slices(mine, ks)}}
    for name in baselines or FLOOR_BASELINES:
        res = evaluate_users(baseline_on(name, ds, fit, log), ds, split.test, log, ks=ks)
        key = {(int(u), int(k)) for u, k in zip(res["user"], res["k"])}
        keep = np.array([(int(u), int(k)) in key for u, k in zip(mine["user"], mine["k"])])
        a = {k: v[keep] for k, v in mine.items()}
        p = paired_difference(a, res, ks)
        h = summarize_next_item(res, ks, headline=ks)["headline"]
        rows[name] = {"hr10": h["hr10"], "hr10_ci": h["hr10_ci"], "scene": scene_slices(res, ks), "bundle_minus": p["hr10_diff"],
                      "bundle_minus_ci": p["hr10_diff_ci"], "verdict": verdict(p["hr10_diff_ci"])}
        ch = np.asarray(a["scene_changed"], bool)  # the same queries, so the same flags as res's
        if ch.any():  # where the scene changed since the last event: does the bundle keep up with what else there is?
            pc = paired_difference(*({f: np.asarray(r[f])[ch] for f in ("user", "k", "hr")} for r in (a, res)), ks)
            rows[name]["changed_minus"], rows[name]["changed_minus_ci"] = pc["hr10_diff"], pc["hr10_diff_ci"]
    best = max((n for n in rows if n != "bundle"), key=lambda n: rows[n]["hr10"])
    out = {"dataset": ds.name, "users": "test", "ks": list(ks), "n_users": head["n_users"], "rows": rows,
           "best_baseline": best, "verdict": rows[best]["verdict"]}
    if checkpoint is not None:
        from metarec.runtime.bundle import open_bundle
        from metarec.sdk.train import load_checkpoint

        model, cfg, _ = load_checkpoint(checkpoint)
        ref = _fp32_reference(model, cfg, open_bundle(bundle_dir, trusted_key))
        res = evaluate_users(ref, ds, split.test, log, ks=ks)
        key = {(int(u), int(k)) for u, k in zip(res["user"], res["k"])}
        keep = np.array([(int(u), int(k)) in key for u, k in zip(mine["user"], mine["k"])])
        p = paired_difference({k: v[keep] for k, v in mine.items()}, res, ks)
        h = summarize_next_item(res, ks, headline=ks)["headline"]
        out["fp32"] = {"checkpoint": str(checkpoint), "hr10": h["hr10"], "hr10_ci": h["hr10_ci"],
                       "bundle_minus": p["hr10_diff"], "bundle_minus_ci": p["hr10_diff_ci"],
                       "relative": p["hr10_diff"] / h["hr10"] if h["hr10"] > 0 else 0.0}
    return out


def bundle_table(r: dict) -> str:
    """Markdown table of `bundle_vs_baselines`."""
    ks = r.get("ks", list(HEADLINE_KS))
    span = f"{ks[0]}..{ks[-1]}" if ks == list(range(ks[0], ks[-1] + 1)) else ", ".join(map(str, ks))
    out = [f"# Bundle vs baselines ({r['dataset']}, PROTOCOL v1 test users, n={r['n_users']}, HR@10 K = {span})", "",
           "| scorer | HR@10 [95% CI] | bundle minus it, paired [95% CI] | verdict |", "|---|---|---|---|"]
    for name, v in r["rows"].items():
        ci = v["hr10_ci"]
        pair = "" if name == "bundle" else f"{v['bundle_minus']:+.3f} [{v['bundle_minus_ci'][0]:+.3f}, " \
                                           f"{v['bundle_minus_ci'][1]:+.3f}]"
        out.append(f"| {name} | {v['hr10']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {pair} | {v.get('verdict', '')} |")
    out += ["", f"Best baseline: {r['best_baseline']} -> the bundle is {r['verdict']} it."]
    sc, sb = r["rows"]["bundle"]["scene"], r["rows"][r["best_baseline"]]["scene"]
    out.append(f"Scene retention (HR@10 when the scene changed since the last event / when it did not): bundle "
               f"{sc['retention']:.3f} {ci_text(sc, 'retention')} ({sc['changed']['hr10']:.3f}, n={sc['changed']['n']} / "
               f"{sc['same']['hr10']:.3f}, n={sc['same']['n']}); {r['best_baseline']} {sb['retention']:.3f} {ci_text(sb, 'retention')}.")
    b = r["rows"][r["best_baseline"]]
    if "changed_minus" in b:
        out.append(f"On the queries whose scene changed, the bundle minus {r['best_baseline']}: {b['changed_minus']:+.3f} "
                   f"[{b['changed_minus_ci'][0]:+.3f}, {b['changed_minus_ci'][1]:+.3f}] (paired over users).")
    if "fp32" in r:
        f = r["fp32"]
        out.append(f"Against its fp32 prior ({f['checkpoint']}, served the same way): {f['hr10']:.3f}; bundle minus "
                   f"it {f['bundle_minus']:+.3f} [{f['bundle_minus_ci'][0]:+.3f}, {f['bundle_minus_ci'][1]:+.3f}] "
                   f"({100 * f['relative']:+.1f}%).")
    return "\n".join(out)
