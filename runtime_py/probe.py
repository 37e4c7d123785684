"""Smoke-run a bundle's programs once in a child process: a program that faults inside ExecuTorch (SIGSEGV,
SIGABRT: not an exception) kills the child, not the caller. Export runs it on every bundle before signing, so a
bundle whose programs crash is never signed; docs/decisions/program-trust.md says why the phone trusts the signer
instead of probing on open, and what a probe costs.

    python -m metarec.runtime.probe BUNDLE_DIR < manifest.json   # exit 0: ran; 3: refused (reason on stderr)
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import BundleError, MetaRecRuntimeError

_REFUSED = 3


def smoke_run(bundle_dir: str | Path, manifest_bytes: bytes) -> None:
    """In this process: decode the bundle (no signature needed yet), load both programs through the runtime's own
    path, record one event and recommend once. `BundleError` (or a fault that ends the process) if they do not run."""
    from .bundle import decode_bundle
    from .programs import load_adapt_program, load_score_program
    from .recommender import Recommender
    from .store import Store

    bundle = decode_bundle(Path(bundle_dir), manifest_bytes)
    m = bundle.manifest
    score = load_score_program(bundle.programs["score"], m.programs["score"], m.shapes)
    adapt = load_adapt_program(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recommender(bundle, Store(Path(tmp) / "probe.db"), score, adapt)
        try:
            t = 1_000_000_000.0
            rec.record("probe", bundle.item_ids[0], t)
            for now in (t + 60, t + 7 * 3600, t + 7 * 3600 + 60):  # forward, a new scene, and the rank method
                if not rec.recommend("probe", now, k=min(10, m.shapes.k_max)):
                    raise BundleError("score program returned no items")
        finally:
            rec.close()


def probe_in_child(bundle_dir: str | Path, manifest_bytes: bytes, timeout: float = 600.0) -> None:
    """`smoke_run` in a fresh interpreter; `BundleError` naming the refusal, the signal that ended it, or the
    timeout. The caller survives any of them."""
    try:
        r = subprocess.run([sys.executable, "-m", "metarec.runtime.probe", str(bundle_dir)], input=manifest_bytes,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BundleError(f"program smoke run did not finish within {timeout:.0f} s") from e
    if r.returncode == 0:
        return
    if r.returncode < 0:
        raise BundleError(f"program smoke run was killed by {signal.Signals(-r.returncode).name} inside ExecuTorch")
    tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no message)"]
    raise BundleError(f"program smoke run failed (exit {r.returncode}): {tail[0]}")


def main(argv: list[str]) -> int:
    try:
        smoke_run(argv[0], sys.stdin.buffer.read())
    except MetaRecRuntimeError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return _REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
