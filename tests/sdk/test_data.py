import numpy as np
import pytest

from metarec.sdk.data import (ML100K_GENRES, DataError, build_dataset, load_grouplens, load_movielens,
                              load_recbole_atomic, load_table, save_csv)


def _write_grouplens_from_atomic(src, dst):
    """Build a GroupLens-format ml-100k/ folder from the RecBole atomic files (the test's independent path)."""
    dst.mkdir()
    inter = (src / "ml-100k.inter").read_text().splitlines()[1:]
    (dst / "u.data").write_text("".join(
        f"{u}\t{i}\t{int(float(r))}\t{int(float(t))}\n" for u, i, r, t in (ln.split("\t") for ln in inter)))
    items = []
    for ln in (src / "ml-100k.item").read_text().splitlines()[1:]:
        iid, title, year, cls = ln.split("\t")
        flags = ["1" if g in cls.split() else "0" for g in ML100K_GENRES]
        date = f"01-Jan-{year}" if year.strip() else ""
        items.append("|".join([iid, title, date, "", "http://x"] + flags))
    (dst / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    users = [ln.split("\t") for ln in (src / "ml-100k.user").read_text().splitlines()[1:]]
    (dst / "u.user").write_text("".join("|".join(r) + "\n" for r in users))


def test_grouplens_and_recbole_give_identical_events(ml100k_dir, tmp_path):
    a = load_recbole_atomic(ml100k_dir)
    _write_grouplens_from_atomic(ml100k_dir, tmp_path / "ml-100k")
    b = load_grouplens(tmp_path / "ml-100k")
    assert a.n_events == b.n_events == 100_000
    assert (a.n_users, a.n_items) == (943, 1682)
    for f in ("user", "item", "rating", "ts"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    np.testing.assert_array_equal(a.item_genres, b.item_genres)
    np.testing.assert_array_equal(a.item_year, b.item_year)
    np.testing.assert_array_equal(a.user_attrs["age"], b.user_attrs["age"])
    assert np.all(np.diff(a.ts) >= 0), "events must be in time order"
    assert load_movielens(tmp_path / "ml-100k").n_events == 100_000


def test_ties_keep_file_order():
    ds = build_dataset("t", ["a", "b", "c"], ["x", "y", "z"], [5.0, 1.0, 5.0])
    assert ds.user_ids[ds.user].tolist() == ["b", "a", "c"]


def test_numeric_ids_sort_numerically():
    ds = build_dataset("t", ["10", "9", "2"], ["100", "20", "3"], [1.0, 2.0, 3.0])
    assert ds.item_ids.tolist() == ["3", "20", "100"]
    assert ds.user_ids.tolist() == ["2", "9", "10"]


def test_malformed_files_name_file_and_line(tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "u.data").write_text("1\t2\t3\t4\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data:2"):
        load_grouplens(d)
    with pytest.raises(DataError, match="missing data file"):
        load_grouplens(tmp_path / "nope")
    csvp = tmp_path / "e.csv"
    csvp.write_text("user,item,timestamp\nu1,i1,10\nu1,i2,notatime\n")
    with pytest.raises(DataError, match=r"e\.csv:3"):
        load_table(csvp)
    csvp.write_text("user,item\nu1,i1\n")
    with pytest.raises(DataError, match="timestamp"):
        load_table(csvp)


def test_csv_round_trip(tmp_path):
    ds = build_dataset("t", ["u1", "u2", "u1"], ["i1", "i2", "i3"], [3.0, 1.0, 2.0], [5, 4, 3])
    save_csv(ds, tmp_path / "x.csv")
    back = load_table(tmp_path / "x.csv")
    for f in ("user", "item", "rating", "ts"):
        np.testing.assert_array_equal(getattr(ds, f), getattr(back, f))


def _doubled(ds, shift: float = 0.0):
    """Every event of `ds` twice (a re-play `shift` seconds later), as an implicit log has them."""
    u, i, t = ds.user_ids[ds.user], ds.item_ids[ds.item], ds.ts
    return build_dataset("twice", np.r_[u, u], np.r_[i, i], np.r_[t, t + shift], item_ids=ds.item_ids,
                         item_genres=ds.item_genres, item_year=ds.item_year)


@pytest.mark.parametrize("shift", [0.0, 3600.0])
def test_repeated_events_keep_the_first_occurrence(shift):
    """Repeats of a (user, item) pair are dropped, the first kept: the doubled log is the log itself."""
    from metarec_tiny import tiny_dataset

    ds = tiny_dataset()
    twice = _doubled(ds, shift)
    assert twice.n_events == ds.n_events
    for f in ("user", "item", "ts"):
        np.testing.assert_array_equal(getattr(twice, f), getattr(ds, f))
    # a repeat that comes first in time wins: the earlier timestamp is kept
    later = build_dataset("x", ["u", "u", "u"], ["a", "b", "a"], [10.0, 20.0, 5.0])
    assert later.ts.tolist() == [5.0, 20.0] and later.item_ids[later.item].tolist() == ["a", "b"]


def test_training_on_a_doubled_log_starts_where_the_log_does():
    """Was: every row twice started training at loss 4.5e8 (repeats became excluded targets), exit code 0."""
    from metarec.sdk.train import TrainConfig, fit_model
    from metarec_tiny import tiny_dataset
    from test_train import SMALL

    ds = tiny_dataset()
    cfg = TrainConfig(model=SMALL, dataset="tiny", steps=3, batch_size=16, n_targets=3, progress=False)
    fit = np.arange(ds.n_users)
    _, once = fit_model(cfg, ds, fit)
    _, twice = fit_model(cfg, _doubled(ds, 60.0), fit)
    assert twice["first_loss"] == pytest.approx(once["first_loss"], rel=1e-6) and twice["first_loss"] < 20


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_millisecond_timestamps_are_refused_naming_the_row(scale):
    with pytest.raises(DataError, match=r"row 2: .*milliseconds"):
        build_dataset("ratings.csv", ["u", "u"], ["a", "b"], [880_000_000.0, 880_000_600.0 * scale])
    build_dataset("ratings.csv", ["u"], ["a"], [4_102_444_800.0])  # seconds in 2100 are fine


def test_a_checkpoint_of_another_catalog_is_refused_not_retrained(tmp_path):
    from metarec.sdk.recommender import CheckpointMismatch, MetaRecRecommender
    from metarec.sdk.train import TrainConfig, fit_model, save_checkpoint
    from metarec_tiny import tiny_dataset
    from test_train import SMALL

    ds = tiny_dataset()
    cfg = TrainConfig(model=SMALL, dataset="tiny", steps=2, batch_size=8, n_targets=3, progress=False)
    fit = np.arange(ds.n_users)
    model, _ = fit_model(cfg, ds, fit)
    ck = tmp_path / "prior.pt"
    import torch

    save_checkpoint(ck, model, cfg, torch.optim.Adam(model.parameters()), 2, ds, fit)
    MetaRecRecommender(checkpoint=ck).fit(ds, fit)  # its own data: loads
    other = tiny_dataset(n_items=32)
    with pytest.raises(CheckpointMismatch, match="another catalog"):
        MetaRecRecommender(checkpoint=ck).fit(other, np.arange(other.n_users))
    with pytest.raises(CheckpointMismatch, match="does not exist"):
        MetaRecRecommender(config=cfg, checkpoint=tmp_path / "missing.pt").fit(ds, fit)
