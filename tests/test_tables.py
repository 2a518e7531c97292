"""Data files of ``rmtl fit`` / ``rmtl predict``: types by suffix, atomic writes."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from sklearn_rmtl._tables import check_columns, read_table, write_table

FRAME = pd.DataFrame({"id": [1, 2, 3], "click_proba": [0.1, 0.5, 0.9]})


@pytest.mark.parametrize("name", ["p.csv", "p.csv.gz", "p.tsv"])
def test_round_trip_by_suffix(tmp_path, name):
    path = tmp_path / name
    write_table(FRAME, path)
    pd.testing.assert_frame_equal(read_table(path), FRAME)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left
    if name.endswith(".gz"):
        with gzip.open(path) as f:
            assert f.read().startswith(b"id,click_proba")


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "p.csv"
    write_table(FRAME, path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_table(FRAME.iloc[:1], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"x\.json: unknown file type; use one of"):
        read_table(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match=r"y\.csv: no such file"):
        read_table(tmp_path / "y.csv")
    (tmp_path / "e.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="the file has no rows"):
        read_table(tmp_path / "e.csv")
    with pytest.raises(
        ValueError, match=r"has no target column\(s\) \['c'\]; its columns are: id"
    ):
        check_columns(FRAME, ["id", "c"], what="target", path="f.csv")
