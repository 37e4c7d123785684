"""Session 11's bundle contract: a bundle that never adapts leaves adapt.pte out, and an int table may store its
scales as halves. Both must serve exactly what the longer form serves."""
import numpy as np
import pytest

from metarec.runtime import BundleError, Recommender
from metarec.runtime.bundle import open_bundle
from metarec.runtime.table_codec import decode_table, encode_table, pack_table

from tiny_bundle import D, ITEM_IDS, N

T0 = 8.8e8


def _served(bundle, state, key) -> list:
    """Every user's top-10 (ids and scores) after 0..4 events, at two moments (two scenes)."""
    rec = Recommender.open(bundle, state, trusted_key=key)
    try:
        out = []
        for u in range(3):
            user = f"u{u}"
            for j in range(5):
                for now in (T0 + 10 * j + 5, T0 + 10 * j + 7 * 3600):
                    out.append([(r.item_id, r.score) for r in rec.recommend(user, now, k=10)])
                rec.record(user, ITEM_IDS[(7 * u + 3 * j) % N], T0 + 10 * j + 6)
        return out
    finally:
        rec.close()


@pytest.mark.parametrize("rank", [False, True], ids=["forward", "rank"])
def test_a_bundle_without_adapt_serves_what_zero_steps_serve(make_bundle, tmp_path, keys, rank):
    with_prog = make_bundle("with", rank=rank, inner_steps=0)
    lean = make_bundle("lean", rank=rank, inner_steps=0, with_adapt=False)
    assert not (lean / "adapt.pte").exists()
    b = open_bundle(lean, keys[1])
    assert set(b.programs) == {"score"} and b.manifest.inner_steps == 0
    assert _served(lean, tmp_path / "a.db", keys[1]) == _served(with_prog, tmp_path / "b.db", keys[1])
    # ...and not what adaptation serves: the comparison can tell the two apart
    stepped = make_bundle("stepped", rank=rank, inner_steps=2)
    assert _served(stepped, tmp_path / "c.db", keys[1]) != _served(lean, tmp_path / "d.db", keys[1])


def test_half_scales_serve_what_the_same_scales_as_float32_serve(make_bundle, tiny, tmp_path, keys):
    m = tiny[0]
    raw = decode_table(m.table_bytes, N, D, "int8", 4)
    half = encode_table(raw, "int8", 4, "float16")
    t = decode_table(half, N, D, "int8", 4, "float16")
    scale = np.frombuffer(half, "<f2", offset=N * D).reshape(N, -1).astype(np.float32)
    q = np.rint(t.reshape(N, -1, 4) / np.where(scale > 0, scale, 1)[:, :, None]).reshape(N, D).astype(np.int8)
    full = pack_table(q, scale, "int8", "float32")  # the same integers and scale values, 4 bytes a scale
    a = make_bundle("half", table=(half, "float16"))
    b = make_bundle("full", table=(full, "float32"))
    assert (a / "items.bin").stat().st_size == (b / "items.bin").stat().st_size - N * (D // 4) * 2
    np.testing.assert_array_equal(open_bundle(a, keys[1]).table, open_bundle(b, keys[1]).table)
    assert _served(a, tmp_path / "a.db", keys[1]) == _served(b, tmp_path / "b.db", keys[1])


@pytest.mark.parametrize("table, dtype", [("full", "float16"), ("half", "float32")])
def test_a_table_whose_length_does_not_fit_its_scale_dtype_is_refused(make_bundle, tiny, tmp_path, keys, table,
                                                                       dtype):
    raw = decode_table(tiny[0].table_bytes, N, D, "int8", 4)
    data = encode_table(raw, "int8", 4, "float16" if table == "half" else "float32")
    b = make_bundle("b", table=(data, dtype))
    with pytest.raises(BundleError, match="bytes"):
        Recommender.open(b, tmp_path / "s.db", trusted_key=keys[1])
    assert not (tmp_path / "s.db").exists()
