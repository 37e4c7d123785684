"""One fuzzing worker (bench/fuzz_bundles.py): a long-lived child that opens mutated bundles on request.

Protocol: one JSON line in ({"dir", "state", "key"}) -> one JSON line out ({"outcome", "error", "peak_traced",
"maxrss_kb"}). The answer goes to a private copy of stdout; fd 1 itself is pointed at /dev/null, so ExecuTorch's
own logging cannot corrupt the protocol. A case that faults inside ExecuTorch ends this process (the parent counts
it and starts another); one that blocks is killed by the parent's per-case timeout.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tracemalloc

_AS_HEADROOM = 1 << 30  # address space allowed above the warmed-up process: a runaway allocation fails here


def _limit_address_space() -> None:
    """Cap virtual memory at what the warmed-up interpreter maps plus 1 GiB, so a mutated program asking ExecuTorch
    for terabytes fails in this child instead of pressing the machine."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + _AS_HEADROOM, vm + _AS_HEADROOM))


def run_case(case: dict) -> dict:
    """Open the case's bundle; if accepted, record one event and recommend once (what a phone does next)."""
    from metarec.runtime import MetaRecRuntimeError, Recommender

    tracemalloc.start()
    outcome, error = "accepted", ""
    try:
        rec = Recommender.open(case["dir"], case["state"], trusted_key=case["key"])
        try:
            item = rec.item_ids[0]
            rec.record("fuzz-user", item, 1_000_000_000.0)
            rec.recommend("fuzz-user", 1_000_000_060.0, k=min(5, rec.shapes.k_max))
        finally:
            rec.close()
    except MetaRecRuntimeError as e:
        outcome, error = type(e).__name__, str(e)[:300]
    except BaseException as e:  # what the fuzzing counts: anything not typed escaped the runtime
        outcome, error = f"untyped:{type(e).__name__}", str(e)[:300]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"outcome": outcome, "error": error, "peak_traced": peak,
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    import executorch.runtime  # noqa: F401  # warmed up before the first case, so timeouts measure the case
    import metarec.runtime.recommender  # noqa: F401

    _limit_address_space()
    out.write(json.dumps({"ready": True, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")
    for line in sys.stdin:
        out.write(json.dumps(run_case(json.loads(line))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
