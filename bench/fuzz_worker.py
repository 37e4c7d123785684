"""One fuzzing worker (bench/fuzz_bundles.py): a long-lived fork server that opens each mutated bundle in a
child forked from its warmed-up self (torch and ExecuTorch imported once, ~10 ms a case instead of seconds).

Protocol: one JSON line in ({"dir", "state", "key", "timeout"}) -> one JSON line out ({"outcome", "error",
"peak_traced", "rss_growth_kb"}); outcome "death:<signal>" when the case's child was killed by a fault inside
ExecuTorch, "hang" when it outlived the timeout (then killed). Answers go to a private copy of stdout; fd 1 itself
is pointed at /dev/null, so ExecuTorch's own logging cannot corrupt the protocol.
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
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

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
            "rss_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0}


def run_forked(case: dict) -> dict:
    """`run_case` in a forked child: its death or hang is reported, never shared."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, then leave without running the parent's exit handlers
        os.close(r)
        try:
            os.write(w, json.dumps(run_case(case)).encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline, chunks = time.monotonic() + case["timeout"], []
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return {"outcome": "hang", "error": f"no answer within {case['timeout']} s"}
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"outcome": f"death:{signal.Signals(os.WTERMSIG(status)).name}", "error": ""}
    if not chunks:
        return {"outcome": f"death:exit{os.WEXITSTATUS(status)}", "error": ""}
    return json.loads(b"".join(chunks))


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    import executorch.runtime  # noqa: F401  # warmed up before the first case, so timeouts measure the case
    import metarec.runtime.recommender  # noqa: F401

    _limit_address_space()
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        out.write(json.dumps(run_forked(json.loads(line))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
