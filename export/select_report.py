"""What export records of its choices (export/select.py): the manifest's summary of the selection report (the
report itself goes beside the bundle) and the console line of the bundle's floor."""
from __future__ import annotations


def manifest_record(rep: dict) -> dict:
    """The selection report as the manifest records it: the choices and their paired figures, without the weight
    grids and the candidates' full configs (4-9 KB of a 64 KB bundle). Export writes the whole report beside the
    bundle (`<bundle>.selection.json`)."""
    # what the manifest holds in its own blocks (neighbors, by_history, onboarding) and a fixed sentence are left out
    out = {k: v for k, v in rep.items() if k not in ("shipped_neighbors", "shipped_by_history", "shipped_onboarding",
                                                    "shipped_check")}
    for key in ("neighbors", "popularity"):
        if isinstance(rep.get(key), dict) and "grid" in rep[key]:
            out[key] = {k: v for k, v in rep[key].items() if k != "grid"}
            out[key]["grid_size"] = len(rep[key]["grid"])
    if isinstance(rep.get("by_history"), dict):
        out["by_history"] = {k: v for k, v in rep["by_history"].items() if k not in ("pop_extras", "term_weights")}
    if isinstance(rep.get("onboarding"), dict) and "buckets" in rep["onboarding"]:
        out["onboarding"] = {"buckets": [{k: v for k, v in b.items() if k != "grid"}
                                         for b in rep["onboarding"]["buckets"]]}
    if "compression" in rep:
        out["compression"] = [{k: v for k, v in row.items() if k != "compress"} for row in rep["compression"]]
    return _rounded(out)


def _rounded(o, places: int = 4):
    """`o` with every float rounded to `places` decimals: a hit rate over ~100 users moves in steps of ~0.001, and
    the 17 digits of a float64 cost the manifest ~2 KB (the full figures are in the report beside the bundle)."""
    if isinstance(o, float):
        return round(o, places)
    if isinstance(o, dict):
        return {k: _rounded(v, places) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_rounded(v, places) for v in o]
    return o


def selection_summary(rep: dict, best_baseline: str) -> str:
    """One console line: the chosen form against the best baseline on the validation users. A tie also says how
    large a loss these users could have shown: few users' ties hide real losses (session 15's Instacart sample:
    intervals of +-0.03 at HR@10 0.06, and a bundle 0.039 below popularity on test users)."""
    f = rep["bundle_floor"]
    lo, hi = f["paired"]["ci"]
    line = (f"bundle floor (validation users, n={rep['n_users']}): {rep['chosen']} HR@10 {f['hr10']:.3f} vs "
            f"{best_baseline} {f['baseline_hr10']:.3f}: paired {f['paired']['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            f"-> {f['verdict']}")
    if f["verdict"] != "tie":
        return line
    half = (hi - lo) / 2  # a true loss shows as "below" once it is about this large
    share = f" ({half / f['baseline_hr10']:.0%} of {best_baseline}'s)" if f["baseline_hr10"] > 0 else ""
    return line + f"; a loss under about {half:.3f}{share} would not show on these users"
