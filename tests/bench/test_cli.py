"""The `metarec` command as a newcomer meets it: quiet output, one-line errors, discoverable options."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarec.bench.cli import build_parser, main
from metarec.bench.config_doc import field_rows, markdown
from metarec.sdk.baselines import BASELINES
from metarec.sdk.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _metarec(*args, env=None):
    return subprocess.run([sys.executable, "-m", "metarec.bench.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "METAREC_VERBOSE": "", **(env or {})})


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory, ml100k_dir):
    """ML-100K's first 120 users as a generic CSV with MovieLens's header names."""
    from metarec.sdk.data import load_dataset

    ds = load_dataset(str(ml100k_dir))
    keep = ds.user < 120
    p = tmp_path_factory.mktemp("tiny") / "ratings.csv"
    with open(p, "w") as f:
        f.write("userId,movieId,rating,timestamp\n")
        for u, i, r, t in zip(ds.user_ids[ds.user[keep]], ds.item_ids[ds.item[keep]], ds.rating[keep], ds.ts[keep]):
            f.write(f"{u},{i},{r:g},{int(t)}\n")
    return p


def test_eval_popularity_prints_results_and_no_warning(tiny_csv):
    r = _metarec("eval", "--model", "popularity", "--dataset", tiny_csv, "--no-new-items")
    assert r.returncode == 0, r.stderr
    assert "headline (K=1..3): HR@10" in r.stdout and f"({tiny_csv})" in r.stdout
    noise = [ln for ln in r.stderr.splitlines() + r.stdout.splitlines()
             if "Warning" in ln or "warn" in ln.lower() or "cpuinfo" in ln or "Failed to load" in ln]
    assert noise == []


def test_data_error_is_one_line_and_v_shows_the_traceback(tmp_path):
    bad = tmp_path / "e.csv"
    bad.write_text("user;item\nu;a\n")
    r = _metarec("eval", "--model", "popularity", "--dataset", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    first = r.stderr.splitlines()[0]
    assert f"{bad}:1: no timestamp column" in first
    r = _metarec("-v", "eval", "--model", "popularity", "--dataset", bad)
    assert r.returncode != 0 and "Traceback" in r.stderr and "DataError" in r.stderr


def test_relative_dataset_path_is_reported_resolved(tmp_path, capsys):
    os.chdir(tmp_path)
    assert main(["eval", "--model", "popularity", "--dataset", "missing/ratings.csv"]) == 2
    err = capsys.readouterr().err
    assert f"no file or folder {tmp_path / 'missing' / 'ratings.csv'}" in err


def test_eval_help_lists_every_baseline_and_export_help_its_defaults():
    p = build_parser()
    sub = p._subparsers._group_actions[0].choices
    eval_help = " ".join(sub["eval"].format_help().split())
    assert all(name in eval_help for name in BASELINES)
    export_help = " ".join(sub["export"].format_help().split())
    assert "auto (default)" in export_help and "validation users" in export_help
    assert "dim=16,prototypes=4" in export_help
    assert "--k-max" in export_help and "(default: 20)" in export_help


def test_keygen_takes_out(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "private.pem").is_file() and (tmp_path / "k" / "public.pem").is_file()
    assert main(["keygen", str(tmp_path / "k2")]) == 0  # the positional form still works
    assert (tmp_path / "k2" / "public.pem").is_file()


def test_train_show_config_lists_every_field_with_default_and_meaning(capsys):
    assert main(["train", "--show-config"]) == 0
    out = capsys.readouterr().out
    for name, typ, default, doc in field_rows(TrainConfig):
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert default in line and doc in line and doc, name
    assert "model.dim" in out and "steps" in out


def test_train_flags_override_the_config(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr("metarec.sdk.train.train", lambda cfg, out, floor=True: seen.update(cfg=cfg, out=out))
    (tmp_path / "c.json").write_text('{"steps": 5, "batch_size": 8}')
    os.chdir(tmp_path)
    assert main(["train", "--config", "c.json", "--steps", "7", "--dataset", "synthetic", "--out", "p.pt"]) == 0
    assert seen["cfg"].steps == 7 and seen["cfg"].batch_size == 8 and seen["cfg"].dataset == "synthetic"
    assert Path(seen["out"]) == tmp_path / "p.pt"
    assert f"-> {tmp_path / 'p.pt'}" in capsys.readouterr().out


def test_config_reference_is_up_to_date():
    assert (ROOT / "docs" / "config.md").read_text() == markdown(), \
        "regenerate: python -m metarec.bench.config_doc docs/config.md"
    for title, cls, _ in __import__("metarec.bench.config_doc", fromlist=["_configs"])._configs():
        assert all(doc for *_, doc in field_rows(cls)), f"{title}: every field needs its one-line comment"


def test_export_passes_k_max_and_prints_each_step(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_export(checkpoint, out, progress=None, export_config=None, **kw):
        seen.update(cfg=export_config, kw=kw)
        progress("1/5 step")
        return out

    monkeypatch.setattr("metarec.export.export_bundle", fake_export)
    assert main(["export", "ck.pt", "--out", str(tmp_path / "b"), "--key", "k.pem", "--k-max", "50", "--no-onnx"]) == 0
    assert seen["cfg"].k_max == 50 and seen["cfg"].onnx is False and seen["kw"]["quant"] == "auto"
    assert capsys.readouterr().out.splitlines() == ["1/5 step", f"bundle written to {tmp_path / 'b'}"]
    assert main(["export", "ck.pt", "--out", str(tmp_path / "b"), "--key", "k.pem", "--k-max", "0"]) == 2
    assert "k_max must be an int >= 1" in capsys.readouterr().err  # one line, no traceback


def test_runtime_only_install_gets_one_line_pointing_to_the_train_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert main(["eval", "--model", "popularity"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'metarec-edge[train]'" in err
