"""Cold-start diagnostics: planted truth recovered on synthetic data (prototypes, scene lift, scene share) and paired
differences between two variants (PROTOCOL v1 "Comparing two methods", docs/protocol.md).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from metarec.sdk.coldstart import FULL, NO_SCENE, prototype_mixture, variant_config
from metarec.sdk.train import TrainConfig


def prototype_recovery(model, ds, fit_users, eval_users, k: int = 3) -> dict:
    """Do the learned prototypes recover the planted ones? Each user's argmax prototype after k support items is
    mapped to a planted prototype by majority vote on fit users; accuracy on eval users vs chance (the share of
    the most common planted prototype among eval users)."""
    from metarec.runtime.scene import scene_features

    truth = np.asarray(ds.extras["user_prototype"])
    per_user = ds.user_events()

    def arg(users):
        out = []
        for u in users:
            rows = per_user[u]
            out.append(int(np.argmax(prototype_mixture(model, ds.item[rows[:k]], scene_features([ds.ts[rows[k]]])[0]))))
        return np.asarray(out)

    fit_users = [u for u in fit_users if len(per_user[u]) > k]
    eval_users = [u for u in eval_users if len(per_user[u]) > k]
    a_fit, a_eval = arg(fit_users), arg(eval_users)
    m = model.cfg.n_prototypes
    mapping = np.zeros(m, np.int64)
    for j in range(m):
        t = truth[fit_users][a_fit == j]
        mapping[j] = np.bincount(t).argmax() if len(t) else np.bincount(truth[fit_users]).argmax()
    acc = float(np.mean(mapping[a_eval] == truth[eval_users]))
    chance = float(np.bincount(truth[eval_users]).max() / len(eval_users))
    return {"accuracy": acc, "chance": chance, "n_users": len(eval_users), "k": k,
            "learned_prototypes_used": int(len(np.unique(a_eval)))}


def paired_difference(res_a: dict, res_b: dict, ks=(1, 2, 3)) -> dict:
    """HR@10 of A minus B over the same next-item queries: per-user mean difference over K in `ks` (and over the
    seeds when `res_a`/`res_b` are lists of per-seed results), its mean and the 95% bootstrap interval over users
    (PROTOCOL v1 "Seeds and noise": a difference whose interval holds 0 is "no difference")."""
    from metarec.sdk.protocol import bootstrap_ci

    ra = res_a if isinstance(res_a, list) else [res_a]
    rb = res_b if isinstance(res_b, list) else [res_b]
    if len(ra) != len(rb) or not ra:
        raise ValueError("paired_difference needs the same number (>= 1) of runs on each side")
    diffs = []
    for a, b in zip(ra, rb):
        ma, mb = np.isin(a["k"], ks), np.isin(b["k"], ks)
        if not (np.array_equal(a["user"][ma], b["user"][mb]) and np.array_equal(a["k"][ma], b["k"][mb])):
            raise ValueError("paired_difference: the two runs did not score the same queries")
        diffs.append(a["hr"][ma] - b["hr"][mb])
    d = np.mean(diffs, 0)  # per query, mean over seeds
    user = ra[0]["user"][np.isin(ra[0]["k"], ks)]
    users = np.unique(user)
    per_user = np.array([d[user == u].mean() for u in users])
    ci = bootstrap_ci(per_user)
    return {"hr10_diff": float(per_user.mean()), "hr10_diff_ci": ci, "n_users": int(len(users)),
            "n_queries": int(len(d)), "n_seeds": len(ra), "measurable": bool(ci[0] > 0 or ci[1] < 0)}


def curve_paired_difference(runs_a: list[dict], runs_b: list[dict], ks=("3", "5")) -> dict:
    """Learning-curve Recall@10 of A minus B, paired over the same users: per K, the per-user difference averaged
    over the seeds, its mean and 95% bootstrap interval over users, and the per-seed mean differences. Runs are
    protocol results with `learning_curve` per-user values (seed i of A paired with seed i of B)."""
    from metarec.sdk.protocol import bootstrap_ci

    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError("curve_paired_difference needs the same number (>= 1) of runs on each side")
    out = {"n_seeds": len(runs_a)}
    for k in ks:
        diffs = []
        for a, b in zip(runs_a, runs_b):
            ca, cb = a["learning_curve"], b["learning_curve"]
            if ca.get("users") != cb.get("users") or "per_user" not in ca["recall10"][k]:
                raise ValueError("curve_paired_difference: the runs did not score the same users, or lack per-user values")
            diffs.append(np.asarray(ca["recall10"][k]["per_user"]) - np.asarray(cb["recall10"][k]["per_user"]))
        per_user = np.mean(diffs, 0)
        ci = bootstrap_ci(per_user)
        out[k] = {"recall10_diff": float(per_user.mean()), "recall10_diff_ci": ci, "n_users": int(len(per_user)),
                  "per_seed": [float(d.mean()) for d in diffs], "measurable": bool(ci[0] > 0 or ci[1] < 0)}
    return out


def adaptation_effect(report: dict) -> dict | None:
    """The full prior against its 0-step twin on the learning curve (`curve_paired_difference`), when the report
    has the twin's runs for the full part's seeds; None otherwise."""
    twin = report.get("twin")
    if not twin or "full" not in report:
        return None
    seeds = [s for s in twin["seeds"] if s in report["full"]["seeds"]]
    if not seeds:
        return None
    return curve_paired_difference([report["full"]["seeds"][s] for s in seeds], [twin["seeds"][s] for s in seeds])


def planted_scene_share(ds, users, ks=(1, 2, 3)) -> dict:
    """How much of the synthetic data the planted scene effect moves: the share of all events, and of the K=1..3
    next-item targets of `users`, that are items of a scene factor active at the event, against the share of the
    catalog those items are (what a scene-blind draw would give)."""
    from metarec.runtime.scene import SceneSpec, scene_features
    from metarec.sdk.synthetic import SCENE_COLUMNS

    spec = SceneSpec.from_dict(ds.extras["scene_spec"])
    aff = np.asarray(ds.extras["scene_item_affinity"]) > 0
    act = scene_features(ds.ts, spec)[:, list(SCENE_COLUMNS)] > 0
    lifted = (act.astype(np.float32) @ aff.astype(np.float32)) > 0  # (n_events, n_items)
    on = lifted[np.arange(ds.n_events), ds.item]
    per_user = ds.user_events()
    tgt = np.array([per_user[u][k] for u in users for k in ks if len(per_user[u]) > k], np.int64)
    return {"events_on_active_scene_items": float(on.mean()), "catalog_share_active": float(lifted.mean()),
            "targets_on_active_scene_items": float(on[tgt].mean()) if len(tgt) else float("nan"),
            "n_targets": int(len(tgt))}


def learned_day_part_lift(rec, ds, users, log, ks=(1, 2, 3)) -> dict:
    """Does the model recover the planted day-part lift? Each K=1..3 query of `users` is scored again with its clock
    moved 6, 12 and 18 hours (the other three day parts; weekday, weekend and holiday kept): the true day part's
    items must gain and the swapped-in part's items lose. Learned lift = mean score change of the first minus that
    of the second; the generator planted 2 * scene_boost (a no-scene model gives 0 by construction)."""
    import dataclasses as dc

    from metarec.runtime.scene import SceneSpec, scene_features
    from metarec.sdk.protocol import next_item_queries

    spec = SceneSpec.from_dict(ds.extras["scene_spec"])
    aff = np.asarray(ds.extras["scene_item_affinity"])[:4] > 0  # night, morning, afternoon, evening items
    lifts = []
    for _, _, q, _ in next_item_queries(ds, log, users, ks=ks):
        s0, part = rec.score(q), int(np.argmax(q.scene[2:6]))
        for hours in (6, 12, 18):
            sc = np.array(q.scene, copy=True)
            sc[:6] = scene_features([q.t + hours * 3600.0], spec)[0][:6]  # hour sin/cos and day part only
            d = s0 - rec.score(dc.replace(q, scene=sc))
            lifts.append(d[aff[part]].mean() - d[aff[int(np.argmax(sc[2:6]))]].mean())
    planted = 2.0 * float(ds.extras["config"]["scene_boost"])
    return {"learned": float(np.mean(lifts)), "planted": planted, "n": len(lifts)}


def synthetic_truth(base: TrainConfig, seeds=(0,), syn_cfg=None) -> dict:
    """PROTOCOL v1 "synthetic scene data": planted prototypes recovered, scene retention, no-scene ablation, and
    the paired HR@10 difference full - no scene over the same test queries (bootstrap over users, seeds pooled)."""
    from metarec.sdk.protocol import EventLog, evaluate_users, scene_slices, split_users, summarize_next_item
    from metarec.sdk.recommender import MetaRecRecommender
    from metarec.sdk.synthetic import SyntheticConfig, generate

    syn_cfg = syn_cfg or SyntheticConfig()
    ds = generate(syn_cfg)
    sp, log = split_users(ds), EventLog(ds)
    fit = np.r_[sp.train, sp.val]
    out: dict = {"dataset": "synthetic", "seeds": list(seeds), "synthetic_config": syn_cfg.to_dict(),
                 "planted_scene": planted_scene_share(ds, sp.test), "runs": {}}
    raw: dict = {}
    for name in (FULL, NO_SCENE):
        runs = []
        for s in seeds:
            cfg = dataclasses.replace(variant_config(base, name, s), dataset="synthetic")
            rec = MetaRecRecommender(config=cfg).fit(ds, fit, log)
            res = evaluate_users(rec, ds, sp.test, log, ks=(1, 2, 3))
            raw.setdefault(name, []).append(res)
            r = {**summarize_next_item(res, ks=(1, 2, 3)), "scene": scene_slices(res), "seed": s,
                 "train_seconds": rec.stats.get("train_seconds")}
            if name == FULL:
                r["prototypes"] = prototype_recovery(rec.model, ds, fit, sp.test)
                r["day_part_lift"] = learned_day_part_lift(rec, ds, sp.test, log)
            runs.append(r)
        out["runs"][name] = runs
    from metarec.sdk.synthetic_oracle import MODES, WorldOracle

    for mode in MODES:  # the generator's references: the same queries, no training, one run serves every seed
        res = evaluate_users(WorldOracle(mode).fit(ds), ds, sp.test, log, ks=(1, 2, 3))
        out["runs"][f"oracle ({mode})"] = [{**summarize_next_item(res, ks=(1, 2, 3)), "scene": scene_slices(res)}]
        out[f"vs_oracle_{mode}"] = paired_difference(raw[FULL], [res] * len(seeds))
    full = np.mean([r["headline"]["hr10"] for r in out["runs"][FULL]])
    out["share_of_oracle"] = float(full / out["runs"]["oracle (truth)"][0]["headline"]["hr10"])
    out["scene_effect"] = paired_difference(raw[FULL], raw[NO_SCENE])
    out["scene_effect"]["per_seed"] = [paired_difference(a, b)["hr10_diff"]
                                       for a, b in zip(raw[FULL], raw[NO_SCENE])]
    return out
