"""Helpers of tests/native (a uniquely named module: `from conftest import` would pick another directory's)."""
from __future__ import annotations

import json
from pathlib import Path

T0 = 8.8e8  # a timestamp inside ML-100K's range


def resign(bundle: Path, private_pem: Path, **changes) -> None:
    """Rewrite manifest.json with `changes` (canonical form) and sign it again with the real key."""
    from metarec.runtime.bundle_codecs import sign_manifest

    m = json.loads((bundle / "manifest.json").read_bytes())
    m.update(changes)
    raw = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sig").write_bytes(sign_manifest(raw, private_pem))
