"""`metarec bench`: the benchmark suites, each writing bench/results/<suite>.{json,md,png} with provenance.

Suites (`--only`, comma-separated; default all, in this order):
- latency: recommend and one whole adaptation, p50/p99 per backend (runtime over score.pte/adapt.pte with
  XNNPACK, portable ExecuTorch, ONNX Runtime over model.onnx, eager torch), ratios to ONNX Runtime;
- memory: peak RSS of a child process that opens the bundle and serves 1,000 users; state bytes per user;
- native: the C runtime (build/native/metarec-native, `make native`) beside the Python runtime and ONNX Runtime,
  3 runs each: peak RSS, open, first recommend, recommend p50, adaptation p50, library and program sizes;
- scaling: synthetic catalogs 1K..1M against the copy-bandwidth bound (needs no bundle);
- scaling-runtime: `Recommender.recommend` on a bundle `metarec export` makes from a synthetic checkpoint of
  `--items` N items (or, without `--items`, on `--bundle`), against the bandwidth bound; `--json OUT` (not in the
  default run: it exports a bundle);
- report: accuracy tables and plots gathered from baselines/coldstart/export results.
A suite that cannot run (no bundle yet, say) writes nothing and says which command makes what it needs; the
others still run, and the exit code is 1 if any suite failed.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from metarec.bench.paths import RESULTS_DIR

SUITES = ("latency", "memory", "native", "scaling", "report")
EXTRA_SUITES = ("scaling-runtime",)  # run only when named in --only


class SuiteSkipped(Exception):
    """A prerequisite is missing (not a failure of the measured code): the message says how to produce it."""


def parse_suites(only: str | None) -> list[str]:
    """Suite names from `--only` (None = all), validated; ValueError lists the known ones."""
    if not only:
        return list(SUITES)
    names = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES + EXTRA_SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; known: {', '.join(SUITES + EXTRA_SUITES)}")
    return names


def find_trusted_key(bundle_dir: str | os.PathLike) -> Path | None:
    """The public key beside a `make demo` bundle: artifacts/keys/public.pem for artifacts/bundle, else
    <bundle>/../keys/public.pem, else $METAREC_TRUSTED_KEY."""
    env = os.environ.get("METAREC_TRUSTED_KEY")
    cands = [Path(env)] if env else []
    b = Path(bundle_dir)
    cands += [b.parent / "keys" / "public.pem", b / "public.pem", Path("artifacts/keys/public.pem")]
    return next((c for c in cands if c.is_file()), None)


def require_bundle(bundle_dir: str | os.PathLike) -> tuple[Path, Path]:
    b = Path(bundle_dir)
    if not (b / "manifest.json").is_file():
        raise SuiteSkipped(f"no bundle at {b}: run `make demo` (or `metarec export ... --out {b}`) first")
    key = find_trusted_key(b)
    if key is None:
        raise SuiteSkipped(f"no trusted public key for {b}: expected {b.parent / 'keys' / 'public.pem'} "
                           "or $METAREC_TRUSTED_KEY")
    return b, key


def run_suite(name: str, args, command: str, out_dir=None) -> dict:
    out_dir = Path(out_dir or RESULTS_DIR)
    runs = int(getattr(args, "runs", 2000) or 2000)
    bundle = getattr(args, "bundle", "artifacts/bundle") or "artifacts/bundle"
    if name == "scaling-runtime":
        from metarec.bench.bench_scaling_runtime import run_scaling_runtime

        items = getattr(args, "items", None)
        return run_scaling_runtime(items, runs, command, getattr(args, "json", None),
                                   bundle_dir=None if items is not None else bundle)
    if name == "scaling":
        from metarec.bench.bench_scaling import run_scaling

        return run_scaling(runs, command, out_dir)
    if name == "latency":
        from metarec.bench.bench_latency import run_latency

        b, key = require_bundle(bundle)
        return run_latency(b, key, runs, command, out_dir)
    if name == "memory":
        from metarec.bench.bench_memory import run_memory

        b, key = require_bundle(bundle)
        return run_memory(b, key, command, out_dir)
    if name == "native":
        from metarec.bench.bench_native import run_native

        b, key = require_bundle(bundle)
        return run_native(b, key, command, out_dir)
    if name == "report":
        from metarec.bench.bench_report import run_report

        return run_report(command, out_dir)
    raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES + EXTRA_SUITES)}")


def run_benchmarks(args, command: str, out_dir=None) -> int:
    """Entry point of `metarec bench [--only SUITES] [--bundle DIR] [--runs N]`; 0 when every suite ran."""
    try:
        suites = parse_suites(getattr(args, "only", None))
    except ValueError as e:
        print(f"metarec bench: {e}")
        return 2
    if int(getattr(args, "runs", 2000) or 2000) < 1000:
        print("note: fewer than 1,000 runs per measurement; the issue's targets are defined over >= 1,000")
    status = {}
    for name in suites:
        t0 = time.perf_counter()
        print(f"== bench {name}", flush=True)
        try:
            run_suite(name, args, command, out_dir)
            status[name] = "ok"
        except SuiteSkipped as e:
            status[name] = f"skipped: {e}"
        except Exception as e:  # noqa: BLE001 - one broken suite must not hide the others' numbers
            traceback.print_exc()
            status[name] = f"FAILED: {type(e).__name__}: {e}"
        print(f"   {name}: {status[name]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(out_dir or RESULTS_DIR)
    written = [str(out / f"{n}.md") for n, s in status.items() if s == "ok" and n not in EXTRA_SUITES]
    written += [str(args.json) for n, s in status.items() if s == "ok" and n in EXTRA_SUITES and getattr(args, "json", None)]
    print("results: " + (", ".join(written) or "(printed above)"))
    return 0 if all(s == "ok" or s.startswith("skipped") for s in status.values()) and \
        any(s == "ok" for s in status.values()) else 1
