import dataclasses

import pytest

from metarec.runtime.config import VersionedConfig


@dataclasses.dataclass(frozen=True)
class Demo(VersionedConfig):
    VERSION = 2
    LEGACY = {"b": 0}
    version: int = 2
    a: int = 1
    b: int = 5


def test_round_trip_dict_json_and_file(tmp_path):
    cfg = Demo(a=3)
    assert Demo.from_dict(cfg.to_dict()) == cfg and Demo.from_json(cfg.to_json()) == cfg
    assert cfg.to_json() == '{"a": 3, "b": 5, "version": 2}'  # sorted keys, one line: manifests embed it
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert Demo.load(tmp_path / "c.json") == cfg


def test_legacy_fills_only_missing_fields_of_a_saved_dict():
    assert Demo.from_dict({"version": 2}).b == 0  # saved before `b` existed: its old behaviour
    assert Demo.from_dict({"version": 2, "b": 7}).b == 7
    assert Demo().b == 5  # the dataclass default is for new configs


def test_a_hand_written_dict_keeps_the_defaults_it_leaves_out():
    assert Demo.from_dict({"a": 3}) == Demo(a=3)  # no version: by hand, b keeps its default 5
    assert Demo.from_dict({"b": 7}).b == 7



def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown Demo fields \['c'\]; known: \['a', 'b', 'version'\]"):
        Demo.from_dict({"c": 1})
    with pytest.raises(ValueError, match="Demo version 1 unknown; this code reads version 2"):
        Demo.from_dict({"version": 1})
    with pytest.raises(ValueError, match="version 3"):
        Demo(version=3)
    with pytest.raises(ValueError, match="needs a dict"):
        Demo.from_dict([1])
