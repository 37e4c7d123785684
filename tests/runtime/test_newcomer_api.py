"""What an app developer meets first: a silent console, the device time zone, the k range, `because_kind`,
help(metarec.runtime)."""
import os
import pydoc
import subprocess
import sys

import pytest

import metarec.runtime as rt
from metarec.runtime import InputError, Recommender
from metarec.runtime.scene import SceneSpec, scene_features, shift_for

from tiny_bundle import ITEM_IDS, K_MAX, N

OPEN_AND_RECOMMEND = """
import sys
from metarec.runtime import Recommender
rec = Recommender.open(sys.argv[1], sys.argv[2], trusted_key=sys.argv[3])
rec.record("u", rec.item_ids[0], 1.0e9)
print(len(rec.recommend("u", now=1.0e9 + 60, k=3)))
"""


def _run(code, *args, env=None):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_open_and_recommend_print_nothing_to_stderr(make_bundle, keys, tmp_path):
    bundle = make_bundle(rank=True)
    r = _run(OPEN_AND_RECOMMEND, bundle, tmp_path / "s.db", keys[1], env={"METAREC_VERBOSE": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"
    assert r.stderr == ""  # no torchao, pytree or C++ cpuinfo lines


def test_verbose_shows_the_third_party_output(make_bundle, keys, tmp_path):
    r = _run(OPEN_AND_RECOMMEND, make_bundle(rank=True), tmp_path / "s.db", keys[1], env={"METAREC_VERBOSE": "1"})
    assert r.returncode == 0 and r.stderr != ""  # what the quiet mode hides exists, and -v brings it back


def test_tz_moves_the_scene_like_a_different_utc_offset():
    spec = SceneSpec()
    ts = 1_000_000_000.0
    for tz in (9, 5.5, -6.0):
        assert (scene_features([ts + shift_for(tz, ts, spec.utc_offset_hours)], spec)
                == scene_features([ts], SceneSpec(utc_offset_hours=float(tz)))).all()
    # a zone name follows daylight saving: Paris is UTC+1 in January, UTC+2 in July
    jan, jul = 1_704_067_200.0, 1_719_792_000.0
    assert shift_for("Europe/Paris", jan, 0.0) == 3600.0 and shift_for("Europe/Paris", jul, 0.0) == 7200.0
    for bad in ("Mars/Base", 15, float("nan"), True):
        with pytest.raises(InputError, match="tz"):
            shift_for(bad, ts, 0.0)


def test_recommend_in_the_device_time_zone(bundle_dir, keys, tmp_path):
    rec = Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1])
    rec.record("u", ITEM_IDS[0], 1.0e9)
    now = 1.0e9 + 3600 * 5
    base = rec.recommend("u", now=now, k=5)
    tokyo = rec.recommend("u", now=now, k=5, tz="Asia/Tokyo")
    assert rec.recommend("u", now=now, k=5, tz=9) == tokyo  # a fixed +9 and Tokyo's zone agree
    assert rec.recommend("u", now=now, k=5, tz=-6) == base  # the bundle's own offset changes nothing
    assert [r.score for r in tokyo] != [r.score for r in base]  # another local hour is another scene
    rec.close()
    rec = Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1], tz="Asia/Tokyo")
    assert rec.recommend("u", now=now, k=5) == tokyo  # the device zone given once, at open
    rec.close()
    with pytest.raises(InputError, match="tz"):
        Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1], tz="Nowhere/Land")


def test_k_error_states_the_real_range(bundle_dir, keys, tmp_path):
    rec = Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1])
    top = min(K_MAX, N)
    for k in (0, top + 1):
        with pytest.raises(InputError, match=rf"k must be an int in \[1, {top}\].*k_max={K_MAX}.*--k-max"):
            rec.recommend("u", now=1.0e9, k=k)
    assert len(rec.recommend("u", now=1.0e9, k=top)) == top
    rec.close()


def test_because_kind_says_what_because_is(bundle_dir, keys, tmp_path):
    rec = Recommender.open(bundle_dir, tmp_path / "s.db", trusted_key=keys[1])
    cold = rec.recommend("new", now=1.0e9, k=3)
    assert {r.because_kind for r in cold} <= {"prototype", "trend"}
    rec.record("u", ITEM_IDS[4], 1.0e9)
    warm = rec.recommend("u", now=1.0e9 + 60, k=3)
    assert all(r.because_kind == "item" and r.because == ITEM_IDS[4] for r in warm)
    rec.close()


def test_help_lists_the_public_api():
    text = pydoc.render_doc(rt, renderer=pydoc.plaintext)
    for name in ("Recommender", "Recommendation", "TrendingPack", "BundleError", "InputError", "open_bundle",
                 "recommend(self", "because_kind", "Recommender.open("):
        assert name in text, name
    assert set(rt.__all__) <= set(dir(rt))
