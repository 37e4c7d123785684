"""Fixtures for tests/runtime: a fresh Ed25519 key, the tiny model's programs (exported once per session) and
signed bundle directories built from them (tiny_bundle.py)."""
from __future__ import annotations

import pytest

from metarec.runtime.bundle_codecs import generate_keypair
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


@pytest.fixture(scope="session")
def tiny_rank_programs(tiny):
    """The tiny model's programs with score.pte's rank method (export's default form)."""
    return export_programs(tiny[0], rank=True)


@pytest.fixture
def make_bundle(tmp_path, tiny, keys, tiny_rank_programs):
    """make_bundle(name, serial=1, rank=False, **kw) -> a fresh signed bundle dir under tmp_path."""
    def make(name: str = "bundle", serial: int = 1, rank: bool = False, **kw) -> Path:
        programs = tiny_rank_programs if rank else tiny[1]
        return write_bundle(tmp_path / name, tiny[0], programs, keys[0], serial=serial, rank=rank, **kw)
    return make


@pytest.fixture(params=[False, True], ids=["forward", "rank"])
def bundle_dir(make_bundle, request):
    """Every test on a bundle runs on score.pte without and with the rank method."""
    return make_bundle(rank=request.param)
