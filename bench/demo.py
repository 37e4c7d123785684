"""`make demo`: data -> meta-train -> compress + export -> on-device adapt + score (runtime) -> short report."""
from __future__ import annotations

import json
import time
from pathlib import Path

from metarec.bench.paths import RESULTS_DIR

ART = Path("artifacts")


def _step(msg: str) -> float:
    print(f"\n== {msg}", flush=True)
    return time.perf_counter()


def run_demo(fast: bool = False) -> int:
    from metarec.bench.runtime_eval import runtime_next_item
    from metarec.export import export_bundle, generate_keypair
    from metarec.sdk.baselines import make_baseline
    from metarec.sdk.data import fetch_ml100k, load_dataset
    from metarec.sdk.protocol import EventLog, evaluate_users, split_users, summarize_next_item
    from metarec.sdk.train import TrainConfig, train

    t0 = _step("1/5 data: ML-100K from the recbole wheel (cached)")
    ds = load_dataset(str(fetch_ml100k()))
    print(f"{ds.n_events} events, {ds.n_users} users, {ds.n_items} items ({time.perf_counter() - t0:.1f} s)")

    t0 = _step("2/5 meta-train the prior on train + validation users")
    ART.mkdir(exist_ok=True)
    ckpt = ART / "prior.pt"
    cfg = TrainConfig()
    if fast:
        cfg = TrainConfig(**{**cfg.to_dict(), "steps": max(50, cfg.steps // 4)})
    stats = train(cfg, ckpt)
    train_s = time.perf_counter() - t0
    print(f"checkpoint {ckpt} ({train_s:.0f} s)")

    t0 = _step("3/5 compress + export a signed bundle")
    keys = ART / "keys"
    generate_keypair(keys)
    bundle = export_bundle(ckpt, ART / "bundle", key_path=keys / "private.pem", model_out=ART / "bundle.model.pt",
                           progress=lambda m: print(m, flush=True))  # the product's defaults: chosen on val users
    sizes = {p.name: p.stat().st_size for p in sorted(Path(bundle).iterdir()) if p.is_file()}
    phone = sum(v for k, v in sizes.items() if not k.endswith(".onnx"))
    print("  " + "  ".join(f"{k} {v / 1024:.1f} KB" for k, v in sizes.items()))
    print(f"phone bundle (all but ONNX): {phone / 1024:.1f} KB ({time.perf_counter() - t0:.0f} s)")

    adapts = (Path(bundle) / "adapt.pte").exists()  # export leaves it out when no step pays on validation users
    t0 = _step("4/5 test users through the on-device runtime (record -> "
               + ("adapt via adapt.pte" if adapts else "phi0, no adaptation step paid") + " -> score.pte top-10)")
    rt = runtime_next_item(bundle, keys / "public.pem", ds)
    print(f"({time.perf_counter() - t0:.1f} s)")

    _step("5/5 report (PROTOCOL v1, test users, HR@10 at K = 1, 2, 3 and the headline)")
    split, log = split_users(ds), EventLog(ds)
    fit = __import__("numpy").r_[split.train, split.val]
    rows = [("metarec (on-device runtime)", rt["per_k"], rt["headline"])]
    for name in ("popularity", "trending"):
        m = make_baseline(name).fit(ds, fit, log)
        s = summarize_next_item(evaluate_users(m, ds, split.test, log, ks=(1, 2, 3)), ks=(1, 2, 3))
        rows.append((name, s["per_k"], s["headline"]))
    stored = RESULTS_DIR / "baselines.json"
    if stored.is_file():  # the slower baselines come from their own run; the report says which command
        for name, r in json.loads(stored.read_text()).get("results", {}).items():
            if name not in ("popularity", "trending"):
                rows.append((f"{name} *", r["per_k"], r["headline"]))
    lines = ["| model | K=1 | K=2 | K=3 | headline HR@10 [95% CI] |", "|---|---|---|---|---|"]
    for name, pk, h in rows:
        lines.append(f"| {name} | " + " | ".join(f"{pk[str(k)]['hr10']:.3f}" for k in (1, 2, 3))
                     + f" | {h['hr10']:.3f} [{h['hr10_ci'][0]:.3f}, {h['hr10_ci'][1]:.3f}] |")
    report = "\n".join(lines)
    print(report)
    if stored.is_file():
        print("* from bench/results/baselines.json (`metarec baselines --dataset ml-100k`)")
    print(f"\ntraining {train_s:.0f} s; bundle {phone / 1024:.1f} KB; more: bench/results/*.md "
          "(`metarec bench`, `metarec baselines`, `metarec eval --model metarec --checkpoint artifacts/prior.pt`)")
    (ART / "report.md").write_text("# make demo report\n\n" + report + "\n")
    return 0
