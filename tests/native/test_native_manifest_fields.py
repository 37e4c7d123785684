"""Unknown and missing manifest fields: the native runtime refuses exactly what the Python runtime refuses
(manifest.py `_no_unknown` at the top level and in every sub-object), so a future manifest block is never read by one
runtime and silently ignored by the other."""
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from metarec.runtime import Recommender, manifest as M
from metarec.runtime.errors import BundleError
from metarec.runtime.native import NativeRecommender

from native_helpers import T0, resign

SRC = Path(__file__).parents[2] / "runtime_native" / "src" / "bundle.cpp"
# (where, the dataclass, its C++ field sets' prefix in bundle.cpp)
OBJECTS = [("manifest", M.Manifest, "kManifest"), ("shapes", M.Shapes, "kShapes"), ("item_table", M.TableSpec, "kTable"),
           ("head", M.HeadSpec, "kHead"), ("neighbors", M.NeighborSpec, "kNeighbors"),
           ("by_history", M.HistoryWeights, "kHistory"), ("programs.score", M.ProgramIO, "kProgram"),
           ("programs.adapt", M.ProgramIO, "kProgram"), ("files.head0.bin", M.FileEntry, "kFile")]


def _fields(cls):
    fs = dataclasses.fields(cls)
    req = {f.name for f in fs if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return req, {f.name for f in fs} - req


def _cpp_set(src: str, name: str) -> set:
    m = re.search(r"\b" + name + r" = \{([^}]*)\}", src)
    return set(re.findall(r'"([^"]+)"', m.group(1))) if m else set()


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_bytes())


def _obj(man: dict, where: str) -> dict:
    """The sub-object `where` of `man` (files.<name>: the entry of one file)."""
    if where == "manifest":
        return man
    head, _, rest = where.partition(".")
    return man[head][rest] if rest else man[head]


@pytest.fixture
def full(bundle, keys):
    """The test bundle with an item-item term (its table in packs only) and weights by history length: every
    sub-object present. Both runtimes open it."""
    man = _manifest(bundle)
    resign(bundle, keys / "private.pem",
           neighbors={"file": "", "m": 4, "last": 3, "decay": 0.5, "weight": 1.0, "kind": "transition"},
           by_history={"term": [0.5, 1.0]}, programs=man["programs"])
    return bundle


def _outcome(bundle, keys, lib, tmp_path, tag):
    """(Python's, native's) result of opening `bundle`: "ok" or the BundleError message."""
    out = []
    for name, opener in (("py", lambda p: Recommender.open(bundle, p, trusted_key=keys / "public.pem")),
                         ("nat", lambda p: NativeRecommender.open(bundle, p, keys / "public.pem", lib=lib))):
        try:
            opener(tmp_path / f"{tag}-{name}.db").close()
            out.append("ok")
        except BundleError as e:
            out.append(str(e))
    return out


def test_the_native_field_sets_are_the_python_dataclasses():
    src = SRC.read_text()
    for _, cls, prefix in OBJECTS:
        req, opt = _fields(cls)
        assert (_cpp_set(src, prefix + "Required"), _cpp_set(src, prefix + "Optional")) == (req, opt), cls.__name__


def test_the_full_bundle_opens_in_both(full, keys, lib, tmp_path):
    assert _outcome(full, keys, lib, tmp_path, "full") == ["ok", "ok"]


@pytest.mark.parametrize("where", [w for w, _, _ in OBJECTS])
def test_an_unknown_field_is_refused_by_both_runtimes(full, keys, lib, tmp_path, where):
    man = _manifest(full)
    _obj(man, where)["future_block"] = {"x": 1}
    resign(full, keys / "private.pem", **man)
    py, nat = _outcome(full, keys, lib, tmp_path, "unknown")
    assert "unknown" in py and "future_block" in py, py
    assert "unknown" in nat and "future_block" in nat and where.split(".")[0] in nat, nat


@pytest.mark.parametrize("where", [w for w, _, _ in OBJECTS])
def test_a_missing_required_field_is_refused_by_both_runtimes(full, keys, lib, tmp_path, where):
    cls = dict((w, c) for w, c, _ in OBJECTS)[where]
    required = sorted(_fields(cls)[0])
    if not required:  # by_history: every field has a default (one of term / popularity is checked as a value)
        man = _manifest(full)
        man["by_history"] = {}
        resign(full, keys / "private.pem", **man)
        assert all(r != "ok" for r in _outcome(full, keys, lib, tmp_path, "empty"))
        return
    for name in required:
        man = _manifest(full)
        del _obj(man, where)[name]
        shutil.rmtree(tmp_path / "b", ignore_errors=True)
        b = Path(shutil.copytree(full, tmp_path / "b"))
        (b / "manifest.json").write_bytes(json.dumps(man, sort_keys=True, separators=(",", ":")).encode())
        resign(b, keys / "private.pem")
        py, nat = _outcome(b, keys, lib, tmp_path, f"missing-{name}")
        assert py != "ok" and nat != "ok", (where, name, py, nat)
        if where not in ("manifest",) or name not in ("serial",):
            assert name in nat, (where, name, nat)


def test_a_manifest_without_its_optional_fields_is_accepted_by_both(bundle, keys, lib, tmp_path, item_ids):
    """Every optional field holding its default is left out (as an older exporter would): both runtimes open it
    and answer as with the full manifest."""
    man = _manifest(bundle)
    dropped = []
    for where, cls, _ in OBJECTS:
        if where in ("neighbors", "by_history"):
            continue
        obj = _obj(man, where)
        for f in dataclasses.fields(cls):
            if f.name not in obj or f.name == "schema_version":  # schema_version: read first, before _no_unknown
                continue
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if default is dataclasses.MISSING:
                continue
            v = obj[f.name]
            if v == default or (isinstance(default, tuple) and v == list(default)):
                del obj[f.name]
                dropped.append(f"{where}.{f.name}")
    assert {"programs.score.inner_steps", "programs.score.parameters", "manifest.dtypes"} & set(dropped), dropped
    slim = Path(shutil.copytree(bundle, tmp_path / "slim"))
    (slim / "manifest.json").write_bytes(json.dumps(man, sort_keys=True, separators=(",", ":")).encode())
    resign(slim, keys / "private.pem")
    assert _outcome(slim, keys, lib, tmp_path, "slim") == ["ok", "ok"]
    with NativeRecommender.open(bundle, tmp_path / "a.db", keys / "public.pem", lib=lib) as full_nat, \
            NativeRecommender.open(slim, tmp_path / "b.db", keys / "public.pem", lib=lib) as slim_nat:
        for rec in (full_nat, slim_nat):
            rec.record("u", item_ids[3], T0)
        assert full_nat.recommend("u", T0 + 60, 10) == slim_nat.recommend("u", T0 + 60, 10)
