"""The `metarec` command line. Library code never reads sys.argv; every subcommand calls a plain function."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

# what the commands need beyond the runtime (`pip install metarec-edge[train]`)
_TRAIN_STACK = ("tqdm", "torchao", "onnxscript")


def _command(argv: list[str]) -> str:
    return "metarec " + " ".join(shlex.quote(a) for a in argv)


def _dataset_arg(name: str) -> str:
    """A path as an absolute one (checkpoints record it, and it is what error messages show); names as given."""
    if name in ("ml-100k", "synthetic") or name.startswith("synthetic:"):
        return name
    return str(Path(name).expanduser().resolve())


def _load(dataset: str):
    from metarec.sdk.data import load_dataset

    ds = load_dataset(_dataset_arg(dataset))
    print(f"dataset {ds.name} ({_dataset_arg(dataset)}): {ds.n_events} events, {ds.n_users} users, "
          f"{ds.n_items} items, {ds.item_genres.shape[1]} item attributes", flush=True)
    return ds


# ---------------------------------------------------------------------------------------------- printing
def format_report(r: dict) -> str:
    """The per-K table, the headline with its interval, the learning curve and the new-item figures."""
    lines = [f"model {r['model']}  protocol {r['protocol']}  dataset {r.get('dataset', '?')}", "",
             "   K    HR@10  NDCG@10     n   HR@10 95% CI"]
    for k, v in r["per_k"].items():
        lines.append(f"{k:>4}  {v['hr10']:.4f}   {v['ndcg10']:.4f}  {v['n']:>4}   [{v['hr10_ci'][0]:.3f}, {v['hr10_ci'][1]:.3f}]")
    h = r["headline"]
    lines += ["", f"headline (K=1..3): HR@10 {h['hr10']:.4f} [{h['hr10_ci'][0]:.3f}, {h['hr10_ci'][1]:.3f}]  "
                  f"NDCG@10 {h['ndcg10']:.4f} [{h['ndcg10_ci'][0]:.3f}, {h['ndcg10_ci'][1]:.3f}]  users {h['n_users']}"]
    if "learning_curve" in r:
        lc = r["learning_curve"]
        lines += ["", "learning curve (fixed targets = events 11..20): " + "  ".join(
            f"K={k}: {v['recall10']:.4f}" for k, v in lc["recall10"].items()) + f"  (n={next(iter(lc['recall10'].values()))['n']})",
            f"learning speed: K={lc['learning_speed_k']}"]
    if "new_items" in r:
        ni = r["new_items"]
        lines += ["", f"new items: HR@10 {ni['hr10']:.4f}  NDCG@10 {ni['ndcg10']:.4f}  n={ni['n']}"]
    if "scene" in r:
        s = r["scene"]
        lines += [f"scene: changed HR@10 {s['changed']['hr10']:.3f} (n={s['changed']['n']})  same "
                  f"{s['same']['hr10']:.3f} (n={s['same']['n']})  retention {s['retention']:.3f}"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- subcommands
def cmd_data(a, argv) -> int:
    from metarec.sdk.data import fetch_ml100k

    path = fetch_ml100k(a.cache)
    ds = _load(str(path))
    print(f"ML-100K cached at {path}: {ds.n_events} events, {ds.n_users} users, {ds.n_items} items")
    return 0


def _model_factory(a):
    if a.model in ("metarec",):
        from metarec.sdk.train import metarec_factory

        return metarec_factory(a.checkpoint)
    from metarec.sdk.baselines import make_baseline

    return lambda: make_baseline(a.model)


def cmd_eval(a, argv) -> int:
    from metarec.sdk.protocol import run_protocol

    ds = _load(a.dataset)
    r = run_protocol(_model_factory(a), ds, new_items=not a.no_new_items, progress=True)
    r["command"] = _command(argv)
    print(format_report(r))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(r, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


def cmd_baselines(a, argv) -> int:
    from metarec.sdk.baselines import run_baselines
    from metarec.sdk.baselines_report import write_baseline_results

    ds = _load(a.dataset)
    res = run_baselines(ds, names=a.names.split(",") if a.names else None, progress=True)
    if not a.no_oracle:  # a synthetic world: the generator's references beside the baselines (none otherwise)
        from metarec.sdk.synthetic_oracle import oracle_results

        res.update(oracle_results(ds, progress=True))
    for r in res.values():
        print(format_report(r), "\n")
    from metarec.bench.paths import RESULTS_DIR

    write_baseline_results(res, a.out or RESULTS_DIR, _command(argv))
    return 0


def cmd_train(a, argv) -> int:
    from metarec.sdk.train import TrainConfig, train

    if a.show_config:
        from metarec.bench.config_doc import show_config

        print("TrainConfig fields (JSON for --config; only the fields you change; docs/config.md has all stages):")
        print(show_config(TrainConfig))
        return 0
    if not a.out:
        raise SystemExit("metarec train: error: --out CHECKPOINT is required (or --show-config)")
    cfg = TrainConfig.load(a.config) if a.config else TrainConfig()
    over = {k: v for k, v in (("dataset", a.dataset and _dataset_arg(a.dataset)), ("steps", a.steps),
                              ("seed", a.seed)) if v is not None}
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **over, "progress": cfg.progress and not a.quiet})
    out = Path(a.out).expanduser().resolve()
    print(f"training on {cfg.dataset} for {cfg.steps} steps (config {Path(a.config).resolve() if a.config else 'defaults'})"
          f" -> {out}", flush=True)
    train(cfg, out, floor=not a.no_floor)
    print(f"wrote {out}")
    return 0


def cmd_keygen(a, argv) -> int:
    from metarec.export import generate_keypair

    folder = a.out or a.dir
    if not folder:
        raise SystemExit("metarec keygen: error: give the key folder: metarec keygen --out DIR")
    print(f"wrote {Path(generate_keypair(folder)).resolve()} (private.pem: keep it off the bundle and the phone)")
    return 0


def cmd_export(a, argv) -> int:
    from metarec.export import ExportConfig, export_bundle

    ecfg = ExportConfig(k_max=a.k_max, onnx=not a.no_onnx, large_catalog_items=a.large_catalog_items)
    out = export_bundle(a.checkpoint, a.out, quant=a.quant, prune=a.prune, key_path=a.key, serial=a.serial,
                        model_out=a.save_model, export_config=ecfg, progress=lambda m: print(m, flush=True),
                        force=a.force)
    print(f"bundle written to {Path(out).resolve()}")
    return 0


def cmd_catalog(a, argv) -> int:
    from metarec.export.catalog import make_delta

    say = lambda m: print(m, flush=True)  # noqa: E731
    if a.action == "add":
        r = make_delta(a.bundle, a.key, a.out, items_csv=a.items, model=a.model, retire=a.retire or (), seq=a.seq,
                       progress=say)
    else:
        r = make_delta(a.bundle, a.key, a.out, retire=a.ids, seq=a.seq, progress=say)
    print(f"wrote {Path(a.out).resolve()} (+ .sig): {r['items']} item(s) added, {r['retired']} retired, seq {r['seq']} "
          f"for bundle serial {r['bundle_serial']}, {r['bytes']} bytes")
    return 0


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str) -> float:
    """Seconds of "7d", "168h", "90m", "3600s" or "3600"; ValueError otherwise."""
    t = str(text).strip().lower()
    unit = _UNITS.get(t[-1:], None)
    try:
        v = float(t[:-1] if unit else t) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"duration {text!r}: use e.g. 7d, 168h, 90m or seconds") from None
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"duration {text!r} must be > 0")
    return v


def parse_ks(text: str) -> tuple[int, ...]:
    """History lengths K of "1-3", "1-10" or "0,1,2,5" (0 <= K <= 100); ValueError otherwise."""
    try:
        ks = set()
        for part in str(text).split(","):
            lo, _, hi = part.strip().partition("-")
            ks.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"--ks {text!r}: use e.g. 1-3, 1-10 or 0,1,2,5") from None
    if not ks or min(ks) < 0 or max(ks) > 100:
        raise ValueError(f"--ks {text!r}: history lengths must lie in 0..100")
    return tuple(sorted(ks))


def parse_time(text: str | None) -> float:
    """Unix seconds of "1700000000", an ISO 8601 date/time (naive = UTC) or None (now)."""
    import datetime as _dt
    import time as _time

    if text is None:
        return _time.time()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--at {text!r} is neither unix seconds nor an ISO 8601 date/time") from None
    return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).timestamp()


def cmd_demo(a, argv) -> int:
    from metarec.bench.demo import run_demo

    return run_demo(fast=a.fast)


def cmd_parity(a, argv) -> int:
    from metarec.bench.runtime_eval import parity_report

    r = parity_report(a.checkpoint, a.bundle, a.key, a.dataset, as_shipped=not a.checkpoint_weights)
    r["command"] = _command(argv)
    print(json.dumps(r, indent=1))
    return 0


def cmd_eval_bundle(a, argv) -> int:
    from metarec.bench.runtime_eval import bundle_table, bundle_vs_baselines

    names = [n.strip() for n in a.baselines.split(",")] if a.baselines else None
    r = bundle_vs_baselines(a.bundle, a.key, _dataset_arg(a.dataset), names, checkpoint=a.checkpoint,
                            ks=parse_ks(a.ks))
    r["command"] = _command(argv)
    print(bundle_table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1, default=float))
    return 0


def cmd_bench(a, argv) -> int:
    from metarec.bench.run import run_benchmarks

    return run_benchmarks(a, _command(argv))


def build_parser() -> argparse.ArgumentParser:
    from metarec.bench.cli_packs import add_pack_commands

    p = argparse.ArgumentParser(prog="metarec", description="MetaRec Edge: meta-learned on-device cold-start recommendation")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show third-party warnings, the C++ runtime's log and full tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    from metarec.export.config import ExportConfig  # standard library only
    from metarec.sdk.baselines import BASELINES  # numpy only: --help stays fast

    names = tuple(BASELINES)
    ds_help = ("ml-100k | synthetic | synthetic:world-a | synthetic:world-b (sdk/synthetic.py WORLDS) | a folder "
               "(MovieLens's ratings.csv + movies.csv, events.csv + items.csv, u.data) "
               "| a CSV/Parquet events file (docs/data.md)")

    s = sub.add_parser("data", help="data utilities")
    s.add_argument("action", choices=["fetch"])
    s.add_argument("--cache", default=None, help="cache folder (default ~/.cache/metarec or $METAREC_DATA)")
    s.set_defaults(fn=cmd_data)

    s = sub.add_parser("eval", help="PROTOCOL v1 report for one model")
    s.add_argument("--model", required=True, choices=("metarec",) + names, metavar="MODEL",
                   help="'metarec' (the meta-learned prior) or a baseline: " + ", ".join(names))
    s.add_argument("--checkpoint", default=None, help="metarec checkpoint (from `metarec train`)")
    s.add_argument("--dataset", default="ml-100k", help=ds_help + " (default: %(default)s)")
    s.add_argument("--json", default=None, help="write the report as JSON here")
    s.add_argument("--no-new-items", action="store_true", help="skip the separate new-item training run")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("baselines", help="all baselines side by side -> bench/results/baselines.{json,md}")
    s.add_argument("--dataset", default="ml-100k", help=ds_help + " (default: %(default)s)")
    s.add_argument("--names", default=None, help="comma-separated subset of: " + ", ".join(names))
    s.add_argument("--out", default=None, help="results folder (default bench/results)")
    s.add_argument("--no-oracle", action="store_true",
                   help="on a synthetic dataset, skip the generator's reference rows (sdk/synthetic_oracle.py)")
    s.set_defaults(fn=cmd_baselines)

    s = sub.add_parser("train", help="meta-train the prior")
    s.add_argument("--config", default=None,
                   help="JSON file of TrainConfig fields to change (see --show-config and docs/config.md)")
    s.add_argument("--dataset", default=None, help=ds_help + " (default: the config's, ml-100k)")
    s.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's, 600)")
    s.add_argument("--seed", type=int, default=None, help="seed (default: the config's, 0)")
    s.add_argument("--out", default=None, help="checkpoint path to write")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--show-config", action="store_true",
                   help="print every TrainConfig field with its default and meaning, then exit")
    s.add_argument("--no-floor", action="store_true",
                   help="skip the validation floor (the prior vs simple baselines on validation users, stored in "
                        "the checkpoint; export refuses a prior measured below it)")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("keygen", help="generate an Ed25519 development key pair (private.pem, public.pem)")
    s.add_argument("dir", nargs="?", help="key folder (same as --out)")
    s.add_argument("--out", default=None, help="key folder to create")
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("export", help="compress and export a checkpoint as a signed bundle")
    s.add_argument("checkpoint")
    s.add_argument("--out", required=True)
    s.add_argument("--quant", choices=["auto", "none", "int8", "int4", "mixed"], default="auto",
                   help="item table storage; auto (default): the smallest form within the accuracy budget on the "
                        "checkpoint's validation users, with the pruning and the serving steps (export/select.py)")
    s.add_argument("--prune", default=None, help="pruning spec, e.g. dim=24,prototypes=6, or none (default: chosen "
                                                  "with --quant auto, else the phone profile dim=16,prototypes=4)")
    s.add_argument("--k-max", type=int, default=20,
                   help="most items one recommend call can return, score.pte's top-k size (default: %(default)s)")
    s.add_argument("--no-onnx", action="store_true", help="skip model.onnx (not part of the phone bundle)")
    s.add_argument("--large-catalog-items", type=int, default=ExportConfig.large_catalog_items,
                   help="catalogs of at least this many items get the large-catalog score.pte (table quantized "
                        "inside it, scored in chunks; no model.onnx); 0: never (default: %(default)s)")
    s.add_argument("--key", required=True, help="Ed25519 private key PEM")
    s.add_argument("--serial", type=int, default=None,
                   help="bundle serial, larger than any the phones have (default: the current unix time)")
    s.add_argument("--save-model", default=None,
                   help="also save the exported (pruned, re-fine-tuned) model as a checkpoint here (not in the bundle)")
    s.add_argument("--force", action="store_true",
                   help="export even when the checkpoint's validation floor says the prior loses to a baseline")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("catalog", help="signed catalog deltas: add items to / retire items from a shipped bundle")
    cs = s.add_subparsers(dest="action", required=True)
    c = cs.add_parser("add", help="compute new items' vectors from their attributes and sign them as a delta")
    c.add_argument("bundle", help="the shipped bundle folder the delta is for (its serial and catalog)")
    c.add_argument("items", help="items file (item column + title/genres/year, e.g. movies.csv's layout)")
    c.add_argument("--model", default=None, help="the bundle's exported model (`metarec export --save-model`; "
                                                  "default: BUNDLE.model.pt, what make demo writes)")
    c.add_argument("--retire", nargs="*", default=None, help="also retire these item ids")
    for c in (c, cs.add_parser("retire", help="retire items (never recommended again; events stay valid)")):
        if c.prog.endswith("retire"):
            c.add_argument("bundle", help="the shipped bundle folder the delta is for")
            c.add_argument("ids", nargs="+", help="item ids to retire")
        c.add_argument("--key", required=True, help="the bundle's Ed25519 private key PEM")
        c.add_argument("--out", required=True, help="delta file to write (and OUT.sig)")
        c.add_argument("--seq", type=int, default=1,
                       help="delta sequence number for this bundle serial: 1, 2, 3, ... in the order phones apply "
                            "them (default: %(default)s)")
        c.set_defaults(fn=cmd_catalog)

    add_pack_commands(sub)

    s = sub.add_parser("demo", help="train -> compress -> export -> on-device adapt + score -> short report")
    s.add_argument("--fast", action="store_true", help="smaller training budget")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("eval-bundle", help="a bundle through the runtime on test users vs the baselines, paired")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, help="trusted Ed25519 public key PEM")
    s.add_argument("--dataset", default="ml-100k", help=ds_help + " (default: %(default)s)")
    s.add_argument("--baselines", default=None, help="comma-separated (default: the floor's, sdk/floor.py FLOOR_BASELINES)")
    s.add_argument("--json", default=None, help="also write the result as JSON here")
    s.add_argument("--checkpoint", default=None, help="also pair the bundle with this checkpoint's fp32 prior, "
                                                      "served with the bundle's steps and term")
    s.add_argument("--ks", default="1-3", help="the test queries' history lengths K, e.g. 1-10 (default %(default)s: "
                                               "the headline)")
    s.set_defaults(fn=cmd_eval_bundle)

    s = sub.add_parser("parity", help="runtime top-10 vs the sdk's eager model on PROTOCOL v1 test users")
    s.add_argument("checkpoint", help="the bundle's eager model: the checkpoint of an unpruned export, or the "
                                      "`--save-model` file of any export")
    s.add_argument("--bundle", required=True)
    s.add_argument("--key", required=True, help="trusted Ed25519 public key PEM")
    s.add_argument("--dataset", default="ml-100k")
    s.add_argument("--checkpoint-weights", action="store_true",
                   help="compare with the checkpoint's fp32 weights (includes the quantization error)")
    s.set_defaults(fn=cmd_parity)

    s = sub.add_parser("bench", help="latency, memory, size, scaling and accuracy benchmarks -> bench/results/")
    s.add_argument("--only", default=None, help="comma-separated subset of suites")
    s.add_argument("--bundle", default="artifacts/bundle")
    s.add_argument("--runs", type=int, default=2000)
    s.add_argument("--items", type=int, default=None,
                   help="scaling-runtime: catalog size of the synthetic bundle it exports (default: measure --bundle)")
    s.add_argument("--json", default=None, help="scaling-runtime: write its figures as JSON here")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser("fuzz-bundles", help="hostile bundle fuzzing (bench/fuzz_bundles.py)", prefix_chars="+")
    s.add_argument("args", nargs="*")  # every option goes to fuzz_bundles.main (prefix "+" frees "--x")
    s.set_defaults(fn=lambda a, argv: __import__("metarec.bench.fuzz_bundles", fromlist=["main"]).main(a.args))
    return p


def _quiet() -> None:
    """Third-party deprecation chatter is not the user's business: drop the categories the stack emits, only from
    third-party modules (our own warnings still show); the runtime's logs are handled by metarec.runtime.quiet."""
    for cat in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=cat, module=r"(torch|torchao|torchvision|executorch|onnx\w*|"
                                                                 r"onnxscript|implicit|coremltools|google)\b")
    warnings.filterwarnings("ignore", message="This API is experimental")
    # torch.export's own deprecation, raised from inside pickling (so attributed to copyreg, not torch)
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`isinstance\(treespec, LeafSpec\)`")
    import logging

    for name in ("torchao", "torch.utils._pytree", "onnxscript", "coremltools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # torch's logging config resets torch.onnx's level when it loads, so this one is a filter on the emitting logger:
    # the ONNX exporter lists every torchvision op it skips (we export no vision op)
    logging.getLogger("torch.onnx._internal.exporter._registration").addFilter(
        lambda r: "torchvision is not installed" not in r.getMessage())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    missing = [m for m in _TRAIN_STACK if importlib.util.find_spec(m) is None]
    if missing:  # a runtime-only install: the app's API is `metarec.runtime`, the commands come with [train]
        print(f"metarec: the commands need the training stack ({', '.join(missing)} missing): "
              "pip install 'metarec-edge[train]'", file=sys.stderr)
        return 2
    a = build_parser().parse_args(argv)
    if a.verbose:
        os.environ["METAREC_VERBOSE"] = "1"
    else:
        _quiet()
    from metarec.runtime.errors import MetaRecRuntimeError

    try:
        return a.fn(a, argv)
    except (ValueError, OSError, MetaRecRuntimeError) as e:  # DataError, ExportError, bad configs, missing files
        if a.verbose:
            raise
        print(f"metarec {a.cmd}: error: {e}\n(metarec -v {a.cmd} ... shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
