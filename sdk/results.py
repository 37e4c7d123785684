"""Results files with provenance: every JSON / Markdown written names the command and commit behind it."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

def git_commit() -> str:
    """The commit the numbers came from ("+dirty" when the tree had uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(command: str) -> dict:
    return {"command": command, "commit": git_commit(),
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}}


def write_results(name: str, data: dict, markdown: str, command: str, out_dir: str | os.PathLike) -> Path:
    """Write <out_dir>/<name>.json and .md with the command and commit that produced them; returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(command)
    (out / f"{name}.json").write_text(json.dumps({"provenance": prov, **data}, indent=2, default=_jsonable) + "\n")
    header = f"<!-- generated; do not edit -->\nCommand: `{command}`  \nCommit: `{prov['commit']}`  \nWritten: {prov['created_at']}\n\n"
    (out / f"{name}.md").write_text(header + markdown.rstrip() + "\n")
    return out / f"{name}.json"


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
