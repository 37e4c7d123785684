"""Fixtures for tests/native: one tiny real model exported through export_bundle (the one writer), the native
library through ctypes (runtime_py/native.py), and fresh copies of the bundle for tamper tests."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from metarec.runtime.native import DEFAULT_LIB, load_library



def _export_fixtures():
    """tests/export/conftest.py's make_model (a module of that name is already taken by this conftest)."""
    spec = importlib.util.spec_from_file_location("export_fixtures", Path(__file__).parents[1] / "export" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def lib():
    import os

    path = os.environ.get("METAREC_NATIVE_LIB") or DEFAULT_LIB
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: run `make native` first (make test does)")
    return load_library(path)


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    from metarec.export import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, keys):
    """(bundle dir, model): int4 table, zlib programs, score.pte with its rank method, 3 inner steps."""
    from metarec.export.bundle import export_bundle
    from metarec.export.config import ExportConfig

    model = _export_fixtures().make_model(dim=16, seed=4)
    ids = [f"i{100 + 7 * j}" for j in range(model.n_items)]  # ids, not indices: catches index/id mix-ups
    path = export_bundle(model, tmp_path_factory.mktemp("b") / "bundle", quant="int4", prune="none",
                         key_path=keys / "private.pem", serial=10, item_ids=ids,
                         export_config=ExportConfig(k_max=20, onnx=False))
    return path, model


@pytest.fixture
def bundle(exported, tmp_path):
    """A fresh copy of the exported bundle (tests may tamper with it)."""
    return Path(shutil.copytree(exported[0], tmp_path / "bundle"))


@pytest.fixture
def item_ids(exported, keys):
    from metarec.runtime.bundle import open_bundle

    return list(open_bundle(exported[0], keys / "public.pem").item_ids)
