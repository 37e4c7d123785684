"""A user's own data as they have it: MovieLens's current layout, common header names, BOM, ';', items files."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from metarec.sdk.data import DataError, load_dataset
from metarec.sdk.model import item_attributes
from metarec.sdk.tables import load_table

ROOT = Path(__file__).resolve().parents[2]


def _write(p: Path, text: str, encoding="utf-8") -> Path:
    p.write_text(text, encoding=encoding)
    return p


def test_movielens_current_layout_folder_with_genres(tmp_path):
    _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n2,20,3.5,50\n1,20,5,200\n")
    _write(tmp_path / "movies.csv", 'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n'
                                    "20,Toy Story (1995),Animation|Children\n30,New One (2001),(no genres listed)\n")
    ds = load_dataset(str(tmp_path))
    assert ds.item_ids.tolist() == ["10", "20", "30"]  # item 30 has no events yet: still in the catalog
    assert ds.genre_names == ("(no genres listed)", "Action", "Animation", "Children", "Crime")
    np.testing.assert_array_equal(ds.item_genres[0], [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(ds.item_year, [1995, 1995, 2001])
    assert ds.n_events == 3 and ds.ts.tolist() == [50.0, 100.0, 200.0] and ds.rating[1] == 4.0
    # the new-item path: item 30 has attributes, so the item encoder gives it a non-trivial row
    assert item_attributes(ds.item_genres, ds.item_year)[2].any()


@pytest.mark.parametrize("header,sep", [("user_id;item_id;ts", ";"), ("UserId\tItemId\tTime", "\t"),
                                        ("\ufeffuser,movieId,timestamp", ",")])
def test_common_headers_bom_and_separators(tmp_path, header, sep):
    rows = [sep.join(r) for r in (("u1", "a", "10"), ("u2", "b", "5"))]
    p = _write(tmp_path / "e.csv", "\n".join([header, *rows]) + "\n")
    ds = load_table(p)
    assert ds.user_ids.tolist() == ["u1", "u2"] and ds.item_ids.tolist() == ["a", "b"]


def test_bom_written_by_excel_is_not_part_of_the_header(tmp_path):
    p = _write(tmp_path / "e.csv", "user,item,timestamp\nu1,a,10\n", encoding="utf-8-sig")
    assert p.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_table(p).n_events == 1


def test_iso_dates_are_timestamps(tmp_path):
    p = _write(tmp_path / "e.csv", "user,item,date\nu1,a,2024-01-02T00:00:00Z\nu1,b,2024-01-01\n")
    assert load_table(p).ts.tolist() == [1704067200.0, 1704153600.0]


@pytest.mark.parametrize("text,match", [
    ("", r"e\.csv: empty file; the first line must be a header"),
    ("\n\n", "empty file"),
    ("user,item,timestamp\n", "header only, no events"),
    ("userId,rating\n1,2\n", r"e\.csv:1: no item/timestamp column .*need a header with user"),
    ("user,item,timestamp\nu,a,10\nu,b\n", r"e\.csv:3: expected 3 fields"),
    ("user,item,timestamp\nu,a,yesterday\n", r"e\.csv:2: timestamp 'yesterday' is neither"),
])
def test_errors_name_file_line_and_what_to_do(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        load_table(_write(tmp_path / "e.csv", text))


def test_folder_and_path_errors_say_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match="ratings.csv.*u.data.*ml-100k.inter"):
        load_dataset(str(tmp_path))
    with pytest.raises(DataError, match=f"no file or folder {tmp_path / 'nope'}"):
        load_dataset(str(tmp_path / "nope"))


def test_ml100k_in_movielens_current_layout_loads_exactly_like_the_builtin(tmp_path, ml100k_dir):
    spec = importlib.util.spec_from_file_location("ml100k_modern", ROOT / "lab" / "ml100k_modern.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.convert(ml100k_dir, tmp_path / "ml")
    a, b = load_dataset("ml-100k"), load_dataset(str(out))
    for f in ("user", "item", "rating", "ts", "user_ids", "item_ids", "item_genres"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(a.item_year, b.item_year)  # nan == nan here
    np.testing.assert_array_equal(item_attributes(a.item_genres, a.item_year),
                                  item_attributes(b.item_genres, b.item_year))
