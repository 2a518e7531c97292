"""Parquet sources and writers under hostile conditions (issue 27, I/O).

Columns keep the types they were written with, a file that changed after it
was opened or holds a broken row group is named in a clear error, a folder
of files with drifting types is unified or refused clearly, and an output is
replaced only by a complete one.
"""

import os

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_proba

from sklearn_rmtl import MTLClassifier, ParquetSource, datasets
from sklearn_rmtl.parquet import predict_proba_to_parquet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _clf(**params):
    return MTLClassifier(
        backbone="sharedbottom",
        max_epochs=1,
        batch_size=256,
        random_state=0,
        backbone_params={"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)},
        **params,
    )


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "item": rng.choice(list("abcd"), n),
            "price": rng.normal(size=n),
            "session": np.repeat(np.arange(n // 4), 4),
        }
    )
    frame["click"] = (frame["item"] == "a").astype(int) | (rng.random(n) < 0.2)
    return frame


@pytest.fixture(scope="module")
def fitted():
    frame = _frame()
    return _clf().fit(frame[["item", "price"]], frame[["click"]])


def test_pandas_categorical_ids_from_parquet_are_embedded(tmp_path):
    # The bundled loaders' ids are categoricals of integers, which Parquet
    # stores as plain integers: only pandas' metadata says they are ids.
    bunch = datasets.load_retailrocket()
    X, y = bunch.X.iloc[:1500], bunch.y.iloc[:1500]
    path = tmp_path / "retailrocket.parquet"
    pd.concat([X, y], axis=1).to_parquet(path)
    memory = _clf().fit(X, y)
    source = ParquetSource(path, target=list(y.columns), block_rows=10**6)
    streamed = _clf().fit(source)
    assert list(streamed.encoder_.categorical_features_) == ["visitorid", "itemid"]
    assert_same_proba(streamed.predict_proba(X), memory.predict_proba(X))
    # Predicting from the file scores its rows as the frame's.
    assert_same_proba(memory.predict_proba(source), memory.predict_proba(X))


@pytest.mark.parametrize("rows", [400, 100], ids=["grew", "shrank"])
def test_a_file_that_changed_after_opening_is_named(tmp_path, fitted, rows):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(_frame()), path, row_group_size=50)
    source = ParquetSource(path, block_rows=100)
    pq.write_table(pa.Table.from_pandas(_frame(rows, seed=1)), path, row_group_size=50)
    with pytest.raises(ValueError, match=f"{path} changed after this ParquetSource"):
        fitted.predict_proba(source)


def test_a_folder_whose_files_changed_after_opening_is_named(tmp_path, fitted):
    for i in range(2):
        pq.write_table(pa.Table.from_pandas(_frame()), tmp_path / f"part-{i}.parquet")
    source = ParquetSource(tmp_path, block_rows=100)
    assert fitted.predict_proba(source).shape == (400, 1)
    pq.write_table(pa.Table.from_pandas(_frame()), tmp_path / "part-2.parquet")
    with pytest.raises(ValueError, match="added to or removed from the Parquet folder"):
        fitted.predict_proba(source)
    (tmp_path / "part-2.parquet").unlink()
    (tmp_path / "part-1.parquet").unlink()
    with pytest.raises(ValueError, match="added to or removed from the Parquet folder"):
        fitted.predict_proba(source)


def test_int64_and_float64_files_unify_to_float64(tmp_path, fitted):
    # pandas writes an integer column with a NaN as float64.
    frame = _frame()
    frame["price"] = np.arange(len(frame))
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.iloc[:100].to_parquet(folder / "part-0.parquet")
    late = frame.iloc[100:].astype({"price": float})
    late.iloc[3, late.columns.get_loc("price")] = np.nan
    late.to_parquet(folder / "part-1.parquet")
    source = ParquetSource(folder, block_rows=150)  # a block spans both files
    block = source.read_block(0, ["price"])
    assert block.schema.field("price").type == pa.float64()
    expected = pd.concat([frame.iloc[:100], late])[["item", "price"]]
    assert_same_proba(fitted.predict_proba(source), fitted.predict_proba(expected))


def test_type_drift_names_the_files_and_the_column(tmp_path):
    frame = _frame()
    folder = tmp_path / "drift"
    folder.mkdir()
    frame.iloc[:100].to_parquet(folder / "part-0.parquet")
    frame.iloc[100:].astype({"price": str}).to_parquet(folder / "part-1.parquet")
    with pytest.raises(TypeError, match=r"'price' has different types.*part-1"):
        ParquetSource(folder, target="click")
    # A column that is not read is no error until it is.
    source = ParquetSource(folder, target="click", features=["item"])
    with pytest.raises(TypeError, match=r"part-0\.parquet: double"):
        source.read_block(0, ["price"])
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    frame.iloc[:100].to_parquet(sessions / "part-0.parquet")
    frame.iloc[100:].astype({"session": float}).to_parquet(sessions / "part-1.parquet")
    with pytest.raises(TypeError, match=r"session column 'session'.*part-1"):
        ParquetSource(sessions, target="click", session="session")


def test_a_corrupted_row_group_names_the_file(tmp_path):
    path = tmp_path / "corrupt.parquet"
    pq.write_table(pa.table({"x": np.arange(200.0)}), path, row_group_size=100)
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 16)  # the second row group's page header
    source = ParquetSource(path, block_rows=100)
    assert source.read_block(0, ["x"]).num_rows == 100
    with pytest.raises(ValueError, match=f"row group 1 of the Parquet file {path}"):
        source.read_block(1, ["x"])


def _write_source(tmp_path, frame):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=50)
    return ParquetSource(path, block_rows=50)


def test_predict_proba_to_parquet_failing_mid_way_keeps_the_output(
    tmp_path, fitted, monkeypatch
):
    source = _write_source(tmp_path, _frame())
    out = tmp_path / "out" / "proba.parquet"
    out.parent.mkdir()
    assert predict_proba_to_parquet(fitted, source, out) == 200
    before = out.read_bytes()
    logits = type(fitted)._iter_logits

    def failing(self, X):
        for b, block in enumerate(logits(self, X)):
            if b == 2:
                raise RuntimeError("disk full")
            yield block

    monkeypatch.setattr(type(fitted), "_iter_logits", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        predict_proba_to_parquet(fitted, source, out)
    assert out.read_bytes() == before
    assert os.listdir(out.parent) == ["proba.parquet"]


def test_an_empty_source_is_a_clear_error_and_keeps_the_output(tmp_path, fitted):
    out = tmp_path / "proba.parquet"
    out.write_bytes(b"earlier output")
    empty = tmp_path / "empty"
    empty.mkdir()
    source = _write_source(empty, _frame().iloc[:0])
    for predict in (
        fitted.predict_proba,
        lambda s: predict_proba_to_parquet(fitted, s, out),
    ):
        with pytest.raises(ValueError, match="has no rows; there is nothing"):
            predict(source)
    assert out.read_bytes() == b"earlier output"
    assert sorted(os.listdir(tmp_path)) == ["empty", "proba.parquet"]
