"""The config reference, generated from the stage dataclasses themselves (field, default, the field's one-line
comment), so `metarec train --show-config` and docs/config.md cannot drift from the code.

Regenerate docs/config.md (a test fails when it is stale): `python -m metarec.bench.config_doc docs/config.md`
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path

# `name: type = default  # (type) comment`: the convention every stage config follows (docs/architecture.md)
_FIELD = re.compile(r"^\s+(?P<name>\w+):[^=#]*=[^#]*#\s*(?:\((?P<type>[^)]*)\)\s*)?(?P<doc>.*)$")


def _configs() -> list[tuple[str, type, str]]:
    """(title, class, where it is set), in pipeline order."""
    from metarec.export.config import CompressConfig, ExportConfig
    from metarec.runtime.scene import SceneSpec
    from metarec.sdk.protocol import SplitConfig
    from metarec.sdk.synthetic import SyntheticConfig
    from metarec.sdk.train import TrainConfig

    return [("TrainConfig", TrainConfig, "`metarec train --config FILE.json` (sdk/train.py); `model` is ModelConfig"),
            ("SplitConfig", SplitConfig, "PROTOCOL v1's user split (sdk/protocol.py); fixed for reported figures"),
            ("SyntheticConfig", SyntheticConfig, "`--dataset synthetic` (the defaults) or `--dataset synthetic:<world>` "
             "(a named world: sdk/synthetic.py WORLDS, e.g. world-a, world-b); the generator of sdk/synthetic.py"),
            ("CompressConfig", CompressConfig, "`metarec export --quant/--prune` (export/config.py)"),
            ("ExportConfig", ExportConfig, "`metarec export --k-max/--no-onnx/--large-catalog-items` (export/config.py)"),
            ("SceneSpec", SceneSpec, "recorded in the bundle; the runtime's clock features (runtime_py/scene.py)")]


def field_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default as JSON, comment) for every field; nested configs are expanded."""
    docs = {}
    for line in inspect.getsource(cls).splitlines():
        m = _FIELD.match(line)
        if m:
            docs[m["name"]] = (m["type"] or "", m["doc"].strip())
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            rows += field_rows(type(default), f"{prefix}{f.name}.")
            continue
        typ, doc = docs.get(f.name, ("int", "schema version of this config") if f.name == "version" else ("", ""))
        rows.append((prefix + f.name, typ, json.dumps(default), doc))
    return rows


def show_config(cls: type) -> str:
    """Plain text for a terminal: one field a line."""
    rows = field_rows(cls)
    w = max(len(r[0]) for r in rows)
    dw = max(len(r[2]) for r in rows)
    return "\n".join(f"{n:<{w}}  {d:<{dw}}  ({t}) {doc}" for n, t, d, doc in rows)


def markdown() -> str:
    lines = ["# Configuration reference", "",
             "Generated from the code by `python -m metarec.bench.config_doc docs/config.md` (a test fails when it is "
             "stale). Every stage has one versioned dataclass config (`runtime_py/config.py`); a JSON file needs only "
             "the fields you change, e.g. `{\"steps\": 300, \"model\": {\"dim\": 16}}`. Checkpoints and bundle "
             "manifests embed the full config, so a result always says how it was made. Why a default has its value: "
             "`docs/decisions/`.", "",
             "Common training fields are also flags: `metarec train --dataset DIR --steps 300 --out prior.pt` "
             "(flags override the file); `metarec train --show-config` prints this table for TrainConfig.", ""]
    for title, cls, where in _configs():
        lines += [f"## {title}", "", f"Set by {where}.", "", "| field | type | default | meaning |",
                  "|---|---|---|---|"]
        lines += [f"| `{n}` | {t} | `{d}` | {doc.replace('|', '/')} |" for n, t, d, doc in field_rows(cls)]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = markdown()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        print(text)
