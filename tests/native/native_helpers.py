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


def python_and_native(bundle: Path, keys: Path, lib, tmp_path: Path, users, tag: str, drive):
    """(Python's answers, native's answers, native's adaptation count): `drive(rec, users)` on each runtime, each
    with a fresh state file."""
    from metarec.runtime import Recommender
    from metarec.runtime.native import NativeRecommender

    with Recommender.open(bundle, tmp_path / f"py-{tag}.db", trusted_key=keys / "public.pem") as py:
        want = drive(py, users)
    with NativeRecommender.open(bundle, tmp_path / f"nat-{tag}.db", keys / "public.pem", lib=lib) as nat:
        got = drive(nat, users)
        adaptations = nat.stats()[0]
    return want, got, adaptations


def module_of_tests(relpath: str, name: str):
    """A module of tests/ by path (e.g. "runtime/tiny_bundle.py"), under `name`: a plain `import` would pick
    another directory's module of that name, or none when only tests/native is collected."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
