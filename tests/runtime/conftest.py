"""Fixtures for tests/runtime: a fresh Ed25519 key, the tiny model's programs (exported once per session) and
signed bundle directories built from them (tiny_bundle.py)."""
from __future__ import annotations

import pytest

from metarec.runtime.signing import generate_keypair
from tiny_bundle import TinyModel, export_programs, write_bundle


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """(private_pem, public_pem_path) of a fresh Ed25519 key."""
    priv, pub = generate_keypair()
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_bytes(pub)
    return priv, path


@pytest.fixture(scope="session")
def tiny():
    """(TinyModel, (score.pte bytes, adapt.pte bytes)), exported once per session."""
    m = TinyModel()
    return m, export_programs(m)


@pytest.fixture
def make_bundle(tmp_path, tiny, keys):
    """make_bundle(name, serial=1, **kw) -> a fresh signed bundle dir under tmp_path."""
    def make(name: str = "bundle", serial: int = 1, **kw) -> Path:
        return write_bundle(tmp_path / name, tiny[0], tiny[1], keys[0], serial=serial, **kw)
    return make


@pytest.fixture
def bundle_dir(make_bundle):
    return make_bundle()
