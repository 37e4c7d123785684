"""One versioned base for every stage config (the runtime's SceneSpec, the sdk's and export's configs).

A config is a `@dataclass` with a `version` field that subclasses `VersionedConfig`; the class says which version
it reads (`VERSION`) and, for fields added after that version shipped, the value an older dict means (`LEGACY`):

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Demo(VersionedConfig):
...     VERSION = 1
...     LEGACY = {"b": 0}  # dicts written before `b` existed behaved as b=0
...     version: int = 1
...     a: int = 1
...     b: int = 2
>>> Demo.from_dict({"version": 1, "a": 3}).b  # saved by `to_dict` before `b` existed
0
>>> Demo.from_dict({"a": 3}).b  # written by hand: the fields it leaves out keep their defaults
2
>>> Demo.from_json(Demo(a=5).to_json()) == Demo(a=5)
True

Serialised dicts are `dataclasses.asdict` (nested configs become dicts), JSON has sorted keys: checkpoints and
bundle manifests embed them, so the form must not change. Pure standard library: the phone runtime imports it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

C = TypeVar("C", bound="VersionedConfig")


class VersionedConfig:
    """Mixin for a `@dataclass` config with a `version` field: version check, LEGACY backfill, dict / JSON I/O."""

    VERSION: ClassVar[int] = 1
    # field -> value for a dict saved before the field existed: an old checkpoint keeps its behaviour even when
    # the dataclass default moves
    LEGACY: ClassVar[dict] = {}
    JSON_INDENT: ClassVar[int | None] = None  # to_json's indent (None: one line)

    def __post_init__(self) -> None:
        check_version(type(self), getattr(self, "version"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """Read a dict written by `to_dict` of this or an older version (it carries `version`: missing fields take
        their LEGACY value), or by hand (no `version`: missing fields take their defaults)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{cls.__name__} needs a dict, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
        if "version" not in d:  # by hand: `{"model": {"dim": 64}}` must not turn off what came after version 1
            return cls(**d)
        check_version(cls, d["version"])
        legacy = {k: v for k, v in cls.LEGACY.items() if k not in d}
        return cls(**{**legacy, **d})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=self.JSON_INDENT, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], s: str) -> C:
        return cls.from_dict(json.loads(s))

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        """Read a JSON file written by `to_json` (or by hand: only the fields that differ from the defaults)."""
        return cls.from_json(Path(path).read_text())


def check_version(cls: type, version: Any) -> None:
    """ValueError unless `version` is the one `cls` reads."""
    if isinstance(version, bool) or version != cls.VERSION:  # type: ignore[attr-defined]  # true == 1 in Python
        raise ValueError(f"{cls.__name__} version {version!r} unknown; this code reads version {cls.VERSION}")  # type: ignore[attr-defined]
