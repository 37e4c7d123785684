"""The baselines' results files: baselines.{json,md} side by side, with the ML-100K reference figures."""
from __future__ import annotations

# Headline HR@10 each baseline should land near on ML-100K (issue 3; +-0.04), shown beside ours in baselines.md.
ML100K_REFERENCE_HR10 = {"popularity": 0.190, "trending": 0.356, "item_knn": 0.40, "item_knn_fitpool": 0.40,
                         "als": 0.33, "item_knn+trending": 0.43, "item_knn_fitpool+trending": 0.43,
                         "als+trending": 0.43, "transition3+trending": 0.46}


def _ci(x: list) -> str:
    return f"[{x[0]:.3f}, {x[1]:.3f}]"


def baselines_markdown(results: dict[str, dict]) -> str:
    """The side-by-side table of baselines.md."""
    first = next(iter(results.values()), {})
    ks = list(first.get("per_k", {}))
    ref = first.get("dataset") == "ml-100k"
    head = ["model", "HR@10 (K=1..3)", "95% CI", "NDCG@10", "95% CI", *(f"HR@10 K={k}" for k in ks),
            "Recall@10 K=0", "K=3", "K=10", "learning speed K", "new-item HR@10", "n", "seeds", "HR@10 seed range"]
    if ref:
        head.insert(1, "reference HR@10")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        h = r["headline"]
        lc = r.get("learning_curve", {}).get("recall10", {})
        ni = r.get("new_items", {})
        row = [name, f"{h['hr10']:.3f}", _ci(h["hr10_ci"]), f"{h['ndcg10']:.3f}", _ci(h["ndcg10_ci"]),
               *(f"{r['per_k'][k]['hr10']:.3f}" for k in ks),
               *(f"{lc[k]['recall10']:.3f}" if k in lc else "-" for k in ("0", "3", "10")),
               str(r.get("learning_curve", {}).get("learning_speed_k", "-")),
               f"{ni['hr10']:.3f}" if ni else "-", str(ni.get("n", "-")),
               ",".join(map(str, r["seeds"])) if isinstance(r.get("seeds"), list) else "-",
               _ci(r["seed_spread"]["hr10"]) if "seed_spread" in r else "-"]
        if ref:
            row.insert(1, f"{ML100K_REFERENCE_HR10[name]:.3f}" if name in ML100K_REFERENCE_HR10 else "-")
        lines.append("| " + " | ".join(row) + " |")
    n_users = first.get("headline", {}).get("n_users", "?")
    out = [f"# Baselines, PROTOCOL {first.get('protocol', '?')}, dataset {first.get('dataset', '?')}", "",
           f"Headline = mean over K=1..3 of next-item HR@10 / NDCG@10 on {n_users} test users (bootstrap 95% CI "
           "over users). Learning curve: fixed targets (events 11..20), Recall@10 by support size K. New items: "
           "separate run with 10% of items withheld from training. Seeded baselines: the mean of the seeds listed (CIs: "
           "mean of the per-seed bounds), with the range of the per-seed headlines; the others are deterministic.",
           "", *lines, ""]
    blends = {n: r["params"] if isinstance(r["params"], list) else [r["params"]] for n, r in results.items()
              if "params" in r and "weights" in (r["params"][0] if isinstance(r["params"], list) else r["params"])}
    if blends:
        out += ["Blend weights (z-scored components; chosen on validation users, components fit on train users, "
                "then refit on train + validation users; one entry per seed):", ""]
        for n, ps in blends.items():
            w = "; ".join(", ".join(f"{c} {x:.2f}" for c, x in zip(p["components"], p["weights"])) for p in ps)
            out.append(f"- {n}: {w}")
    return "\n".join(out)


def write_baseline_results(results: dict[str, dict], out_dir, command: str = "metarec baselines") -> str:
    """Write <out_dir>/baselines.{json,md}, naming `command`; returns the JSON path."""
    from metarec.sdk.results import write_results

    first = next(iter(results.values()), {})
    data = {"protocol": first.get("protocol"), "dataset": first.get("dataset"), "results": results}
    return str(write_results("baselines", data, baselines_markdown(results), command, out_dir))
