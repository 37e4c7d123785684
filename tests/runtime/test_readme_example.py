"""The README's "Use it in an app" example runs as written (paths swapped for a test bundle), quietly."""
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def app_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- app-example -->\n```python\n(.*?)```", text, re.S)
    assert m, "README lost its app example block"
    return m.group(1)


def test_readme_app_example_runs(make_bundle, keys, tmp_path):
    code = app_example()
    paths = 'BUNDLE, KEY, PRIVATE, STATE = "artifacts/bundle", "artifacts/keys/public.pem", "artifacts/keys/private.pem", "state.db"'
    assert paths in code
    (tmp_path / "private.pem").write_bytes(keys[0])
    code = code.replace(paths, f"BUNDLE, KEY, PRIVATE, STATE = {str(make_bundle(rank=True))!r}, {str(keys[1])!r}, "
                               f"{str(tmp_path / 'private.pem')!r}, {str(tmp_path / 'state.db')!r}")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "METAREC_VERBOSE": ""})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout.splitlines()
    assert out[0].startswith("bundle serial 1 catalog 40 items")
    assert sum(" item " in ln for ln in out) == 5  # five recommendations, each explained by alice's item
    assert any(ln.startswith("input error: k must be an int in [1, 20]") for ln in out)
    assert out[-1] == "1 event(s) kept for alice"
