"""Manifest schema: canonical round trip, typed refusals, and the helpers signed next to it."""
import dataclasses
import json

import numpy as np
import pytest

from metarec.runtime import BundleError, InputError, Manifest, TrendingPack
from metarec.runtime.manifest import FileEntry, SCHEMA_VERSION
from metarec.runtime.scene import SceneClock, SceneSpec, scene_features
from metarec.runtime.bundle_codecs import generate_keypair


def _manifest(bundle_dir) -> Manifest:
    return Manifest.from_json((bundle_dir / "manifest.json").read_bytes())


def test_manifest_round_trip_is_canonical(bundle_dir):
    raw = (bundle_dir / "manifest.json").read_bytes()
    m = Manifest.from_json(raw)
    assert m.to_json() == raw
    assert Manifest.from_json(m.to_json()) == m
    d = json.loads(raw)
    assert json.dumps(d, sort_keys=True, separators=(",", ":")).encode() == raw
    assert m.schema_version == SCHEMA_VERSION and m.shapes.N == len(m.item_ids)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(schema_version=1), "schema_version"),
    (lambda d: d.update(surprise=1), "unknown manifest fields"),
    (lambda d: d.pop("serial"), "missing manifest fields"),
    (lambda d: d["shapes"].update(N=39), "item_ids"),
    (lambda d: d.update(item_ids_file="items.bin"), "not both"),
    (lambda d: d.update(item_ids=[], item_ids_file="ids.bin"), "not listed in files"),
    (lambda d: d["files"].update({"../evil": {"sha256": "0" * 64, "bytes": 1}}), "bad file name"),
    (lambda d: d["files"]["score.pte"].update(sha256="XYZ"), "sha256"),
    (lambda d: d["programs"]["score"].update(inputs=["head", "scene"]), "permutation"),
    (lambda d: d["programs"]["adapt"].update(inner_steps=4), "inner_steps"),
    (lambda d: d["programs"]["score"].pop("codec"), "missing programs.score fields"),
    (lambda d: d["programs"]["adapt"].update(codec="lz4"), "program codec 'lz4' unknown"),
    (lambda d: d["programs"]["adapt"].update(outputs=["loss"]), "scale"),
    (lambda d: d["programs"]["adapt"].update(prepare_outputs=["packed"]), "need a prepare_method"),
    (lambda d: d["programs"]["adapt"].update(prepare_method="prepare", prepare_outputs=["packed", "scale"],
                                             step_inputs=["nowhere"]), "step_inputs"),
    (lambda d: d["programs"]["adapt"].update(prepare_method="forward", prepare_outputs=["packed"],
                                             step_inputs=["packed"]), "differ"),
    (lambda d: d.update(negatives=[0, 1, 2, 3, 4, 999]), "negatives"),
    (lambda d: d["item_table"].update(format="int3"), "table format"),
    (lambda d: d["item_table"].update(scale_dtype="bfloat16"), "scale_dtype"),
    (lambda d: d["item_table"].update(scale_dtype=16), "scale_dtype"),
    (lambda d: d["item_table"].update(scale_dtype=None), "scale_dtype"),
    (lambda d: d["item_table"].update(format="float32", scale_dtype="float16"), "int table file only"),
    (lambda d: d["programs"].pop("score"), "programs must be"),
    (lambda d: d["programs"].update(extra=d["programs"]["score"]), "programs must be"),
    (lambda d: d.update(serial=True), "serial"),
    (lambda d: d["scene_spec"].update(version=9), "SceneSpec version"),
    (lambda d: d["scene_spec"].update(hour_resolution_minutes=7), "hour_resolution_minutes"),
    (lambda d: d["programs"]["score"].update(rank_method="rank", rank_inputs=["user_vec", "table"]), "rank_inputs"),
    (lambda d: d["programs"]["score"].update(rank_method="rank", rank_inputs=["user_vec", "offset", "table"],
                                             outputs=["topk_scores", "topk_ids"]), "needs outputs user_vec and offset"),
    (lambda d: d["programs"]["score"].update(rank_method="forward", rank_inputs=["user_vec", "offset", "table"],
                                             outputs=["topk_scores", "topk_ids", "user_vec", "offset"]), "differ"),
    (lambda d: d["programs"]["score"].update(rank_method="", rank_inputs=["user_vec", "offset", "table"]),
     "need a rank_method"),
    (lambda d: d["programs"]["adapt"].update(rank_method="rank", rank_inputs=["user_vec", "offset", "table"],
                                             outputs=["loss", "scale", "user_vec", "offset"]), "adapt has no rank"),
])
def test_manifest_refuses_invalid_with_bundle_error(bundle_dir, mutate, needle):
    d = json.loads((bundle_dir / "manifest.json").read_bytes())
    mutate(d)
    with pytest.raises(BundleError, match=needle):
        Manifest.from_json(json.dumps(d).encode())


def test_manifest_refuses_non_json_and_nan(bundle_dir):
    with pytest.raises(BundleError):
        Manifest.from_json(b"\xff\xfe not json")
    raw = (bundle_dir / "manifest.json").read_bytes().replace(b'"serial":1', b'"serial":NaN')
    with pytest.raises(BundleError):
        Manifest.from_json(raw)


def test_manifest_constructor_raises_value_error_for_export_bugs(bundle_dir):
    m = _manifest(bundle_dir)
    with pytest.raises(ValueError, match="serial"):
        dataclasses.replace(m, serial=0)
    with pytest.raises(ValueError, match="not listed"):
        dataclasses.replace(m, files={k: v for k, v in m.files.items() if k != "items.bin"})
    with pytest.raises(ValueError):
        FileEntry(sha256="a" * 64, bytes=-1)


def test_trending_pack_signed_round_trip_and_refusals(tmp_path):
    priv, pub = generate_keypair()
    pack = TrendingPack.from_counts(8.8e8, {"12": 3, "7": 0, "99": 2.5}, catalog="ab" * 32)
    pack.save(tmp_path / "pack.json", priv)
    assert TrendingPack.load(tmp_path / "pack.json", pub) == pack
    _, other_pub = generate_keypair()
    with pytest.raises(BundleError):
        TrendingPack.load(tmp_path / "pack.json", other_pub)
    raw = (tmp_path / "pack.json").read_bytes()
    (tmp_path / "pack.json").write_bytes(raw.replace(b'"12":3', b'"12":9'))
    with pytest.raises(BundleError):
        TrendingPack.load(tmp_path / "pack.json", pub)
    for at, counts in [(float("nan"), {}), (1.0, {"": 1}), (1.0, {"a": -1}), (1.0, {"a": float("inf")}),
                       (1.0, {"a": "3"}), (float("inf"), {})]:
        with pytest.raises(InputError):
            TrendingPack.from_counts(at, counts)
    vec = pack.log_counts({"12": 0, "99": 2, "gone": 1}, 3)
    np.testing.assert_allclose(vec, np.log1p([3.0, 0.0, 2.5]).astype(np.float32))


@pytest.mark.parametrize("minutes", [60, 15, 0])
def test_scene_clock_equals_scene_features_exactly(minutes):
    rng = np.random.default_rng(1)
    ts = np.concatenate([rng.uniform(8.7e8, 9.0e8, 3000), rng.uniform(-1e9, 3e9, 3000),
                         [0.0, 21600.0, -21600.0, 8.8e8 + 0.25, 3599.999, 3600.0]])
    spec = SceneSpec(hour_resolution_minutes=minutes)
    clock, out = SceneClock(spec), np.zeros(15, np.float32)
    ref = scene_features(ts, spec)
    mismatches = sum(not np.array_equal(clock.fill(float(t), out), ref[i]) for i, t in enumerate(ts))
    assert mismatches == 0


def test_scene_is_constant_within_an_hour_and_moves_between_hours():
    t = 8.8e8 - (8.8e8 - 6 * 3600) % 3600  # a whole local hour (UTC-6 is a whole-hour offset)
    f = scene_features([t, t + 1.0, t + 3599.0, t + 3600.0])
    assert np.array_equal(f[0], f[1]) and np.array_equal(f[0], f[2])
    assert not np.array_equal(f[2], f[3])
    exact = scene_features([t, t + 1.0], SceneSpec(hour_resolution_minutes=0))
    assert not np.array_equal(exact[0], exact[1])  # the legacy spec: the exact time
    hour = (t - 6 * 3600) % 86400 / 3600
    np.testing.assert_allclose(f[0, :2], [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)], atol=1e-6)


def test_scene_spec_resolution_is_checked_and_old_manifests_read_exact_time():
    for bad in (7, -60, 90, 60.0, True):
        with pytest.raises(ValueError, match="hour_resolution_minutes"):
            SceneSpec(hour_resolution_minutes=bad)
    old = {"version": 1, "utc_offset_hours": -6.0, "holiday_window_days": 3}  # a manifest before the field
    assert SceneSpec.from_dict(old).hour_resolution_minutes == 0
    assert SceneSpec.from_dict(SceneSpec().to_dict()) == SceneSpec()


def test_scene_spec_is_a_versioned_config():
    spec = SceneSpec(utc_offset_hours=2.0)
    assert SceneSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="version"):
        SceneSpec.from_dict({**spec.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="known"):
        SceneSpec.from_dict({"utc_offset": 2.0})
