"""A bundle without an adapt program (manifest `programs` = {"score"}, no adapt.pte: export leaves it out when the
model runs no adaptation step) opens natively and serves phi0 to every user, as the Python runtime does and as a
bundle whose adapt program runs 0 steps does; `programs` other than {"score"} or {"score", "adapt"} is refused."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from metarec.runtime import Recommender
from metarec.runtime.errors import BundleError
from metarec.runtime.native import NativeRecommender

from native_helpers import python_and_native, resign
from test_native_by_history import KMAX, _drive, _users


def _make_model(**cfg):
    """tests/export/conftest.py's make_model (`from conftest import` would pick another directory's conftest)."""
    spec = importlib.util.spec_from_file_location("export_fixtures", Path(__file__).parents[1] / "export" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_model(**cfg)


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_bytes())


def _strip_adapt(src, dst, pem):
    """A copy of bundle `src` without its adapt program: programs.adapt, files["adapt.pte"] and the file removed."""
    shutil.copytree(src, dst)
    man = _manifest(dst)
    adapt = man["programs"].pop("adapt")
    del man["files"][adapt["file"]]
    (dst / adapt["file"]).unlink()
    resign(dst, pem, programs=man["programs"], files=man["files"])
    return dst


def _zero_steps(src, dst, pem):
    """A copy of bundle `src` whose adapt program is kept but runs no step (inner_steps 0): phi0 for everyone."""
    shutil.copytree(src, dst)
    man = _manifest(dst)
    man["programs"]["adapt"]["inner_steps"] = 0
    resign(dst, pem, programs=man["programs"])
    return dst


def _both(bundle, keys, lib, tmp_path, users, tag):
    """(Python's answers, native's answers, native's adaptation count) for the same events at K = 0 .. KMAX."""
    return python_and_native(bundle, keys, lib, tmp_path, users, tag, _drive)


@pytest.fixture(scope="module")
def exported_no_steps(tmp_path_factory, keys):
    """The conftest model with inner_steps 0, exported: the exporter writes no adapt.pte."""
    from metarec.export.bundle import export_bundle
    from metarec.export.config import ExportConfig

    model = _make_model(dim=16, seed=4, inner_steps=0)
    ids = [f"i{100 + 7 * j}" for j in range(model.n_items)]
    return export_bundle(model, tmp_path_factory.mktemp("b0") / "bundle", quant="int4", prune="none",
                         key_path=keys / "private.pem", serial=10, item_ids=ids,
                         export_config=ExportConfig(k_max=20, onnx=False))


def test_an_exported_bundle_without_adapt_serves_the_python_answers(exported_no_steps, keys, lib, tmp_path):
    man = _manifest(exported_no_steps)
    assert set(man["programs"]) == {"score"} and "adapt.pte" not in man["files"]
    assert not (exported_no_steps / "adapt.pte").exists()
    with Recommender.open(exported_no_steps, tmp_path / "ids.db", trusted_key=keys / "public.pem") as py:
        item_ids = list(py.item_ids)
    users = _users(item_ids, 8, seed=5)
    want, got, adaptations = _both(exported_no_steps, keys, lib, tmp_path, users, "exp")
    assert len(want) == len(users) * (KMAX + 1)
    assert got == want
    assert adaptations > 0  # counted as with inner_steps 0: adapt_user runs (and serves phi0)


def test_a_bundle_stripped_of_adapt_answers_as_zero_steps_and_as_python(exported, keys, item_ids, lib, tmp_path):
    """Without adapt.pte every head is phi0: the answers (ids and scores, K = 0 .. 6) and mr_stats' adaptation count
    are those of the same bundle with its adapt program kept at inner_steps 0, and differ from the adapting bundle."""
    pem = keys / "private.pem"
    stripped = _strip_adapt(exported[0], tmp_path / "stripped", pem)
    zero = _zero_steps(exported[0], tmp_path / "zero", pem)
    users = _users(item_ids, 10, seed=8)
    want, got, n_stripped = _both(stripped, keys, lib, tmp_path, users, "stripped")
    assert got == want
    zero_want, zero_got, n_zero = _both(zero, keys, lib, tmp_path, users, "zero")
    assert zero_got == zero_want == want
    assert n_stripped == n_zero > 0
    with NativeRecommender.open(exported[0], tmp_path / "adapting.db", keys / "public.pem", lib=lib) as nat:
        adapting = _drive(nat, users)
    # the adapting bundle moves the rankings once a user has events: phi0 for everyone is not what it serves
    assert sum(adapting[key] != want[key] for key in want if key[1] >= 1) >= len(users)
    assert all(adapting[key] == want[key] for key in want if key[1] == 0)  # K = 0: phi0 in both


def _programs_variant(exported, dst, pem, programs):
    shutil.copytree(exported, dst)
    resign(dst, pem, programs=programs)
    return dst


@pytest.mark.parametrize("keep", [("adapt",), (), ("score", "adapt", "x"), ("score", "x")])
def test_programs_other_than_score_and_optional_adapt_are_refused(exported, keys, lib, tmp_path, keep):
    man = _manifest(exported[0])
    progs = {k: man["programs"].get(k, man["programs"]["score"]) for k in keep}  # "x": a copy of score's entry
    b = _programs_variant(exported[0], tmp_path / "b", keys / "private.pem", progs)
    with pytest.raises(BundleError, match="programs"):
        NativeRecommender.open(b, tmp_path / "s.db", keys / "public.pem", lib=lib)
    with pytest.raises(BundleError):
        Recommender.open(b, tmp_path / "py.db", trusted_key=keys / "public.pem")


def test_an_adapt_program_still_gets_every_check(exported, keys, lib, tmp_path):
    """Present, adapt is read as before: its file must be listed, its inputs the contract's."""
    pem, man = keys / "private.pem", _manifest(exported[0])
    unlisted = _programs_variant(exported[0], tmp_path / "a", pem,
                                 {**man["programs"], "adapt": {**man["programs"]["adapt"], "file": "other.pte"}})
    with pytest.raises(BundleError, match="not listed"):
        NativeRecommender.open(unlisted, tmp_path / "a.db", keys / "public.pem", lib=lib)
    inputs = list(man["programs"]["adapt"]["inputs"])[:-1]
    short = _programs_variant(exported[0], tmp_path / "b", pem,
                              {**man["programs"], "adapt": {**man["programs"]["adapt"], "inputs": inputs}})
    with pytest.raises(BundleError, match="contract"):
        NativeRecommender.open(short, tmp_path / "b.db", keys / "public.pem", lib=lib)
    for b in (unlisted, short):
        with pytest.raises(BundleError):
            Recommender.open(b, tmp_path / f"py-{b.name}.db", trusted_key=keys / "public.pem")
