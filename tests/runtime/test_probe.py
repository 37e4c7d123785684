"""The smoke-run probe (runtime_py/probe.py) export runs before signing: a program that faults inside ExecuTorch
kills the probe's child, never the caller, and comes back as a BundleError (docs/decisions/program-trust.md)."""
import random
import shutil

import pytest

from metarec.bench.fuzz_bundles import Case, m_signed_program_flip
from metarec.runtime import BundleError
from metarec.runtime.probe import probe_in_child


def test_probe_passes_a_good_bundle_and_survives_a_faulting_program(make_bundle, keys, tmp_path):
    base = make_bundle("base", rank=True, codec="zlib")
    probe_in_child(base, (base / "manifest.json").read_bytes())
    # seed 0 flips a byte that SIGSEGVs the tiny programs as exported here; the loop only guards against a
    # different ExecuTorch build exporting other bytes
    for seed in range(6):
        root = tmp_path / f"m{seed}"
        shutil.copytree(base, root)
        m_signed_program_flip(Case(root, tmp_path / "canary", keys[0], random.Random(seed)))
        try:
            probe_in_child(root, (root / "manifest.json").read_bytes(), timeout=300)
        except BundleError as e:
            if "killed by" in str(e):
                return  # the fault ended the child; this process is still here to see it
    pytest.fail("no flipped program faulted in 6 seeds: the probe's fault path was not exercised")
