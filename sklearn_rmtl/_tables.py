"""Reading and writing the data files of ``rmtl fit`` / ``rmtl predict``.

CSV (optionally compressed, e.g. ``.csv.gz``), TSV and Parquet, chosen by
the file name's suffix; Parquet needs pyarrow (``pip install
"sklearn-rmtl[parquet]"``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from sklearn_rmtl._vocabulary import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    SUFFIXES,
    TSV_SUFFIXES,
)


def _kind(path: Path) -> str:
    name = path.name.lower()
    kinds = {"csv": CSV_SUFFIXES, "tsv": TSV_SUFFIXES, "parquet": PARQUET_SUFFIXES}
    for kind, suffixes in kinds.items():
        if name.endswith(suffixes):
            return kind
    raise ValueError(
        f"{path}: unknown file type; use one of {', '.join(SUFFIXES)} (the "
        "type is read from the file name's suffix)."
    )


def _need_pyarrow(path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(
            f"{path}: Parquet files need pyarrow; install it with "
            "pip install 'sklearn-rmtl[parquet]', or use a CSV file."
        ) from None


def read_table(
    path: str | os.PathLike[str], *, text: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file into a DataFrame.

    Parameters
    ----------
    path : str or path-like
        The file; its suffix says its type.
    text : list of str, default=()
        Columns of a CSV/TSV file read as the text of their cells (missing
        cells stay missing) rather than guessed from them; a Parquet file's
        columns have their stored types.

    Returns
    -------
    frame : DataFrame

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the suffix is not a supported type, or the file has no rows.
    ImportError
        For Parquet without pyarrow.
    """
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    if kind == "parquet":
        _need_pyarrow(path)
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(
            path,
            sep="\t" if kind == "tsv" else ",",
            dtype=dict.fromkeys(text, str),
        )
    if len(frame) == 0:
        raise ValueError(f"{path}: the file has no rows.")
    return frame


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``, moved over it once the block completes.

    Whatever the block writes to the temporary path replaces ``path`` only
    if the block ends without an error, so a failure mid-way leaves an
    earlier complete file intact, and no temporary file behind. The
    temporary name ends with ``path``'s name, so that a writer that reads
    the suffix (pandas' compression, a file type) sees the same one.
    """
    # Through a symbolic link, the file it points to is the one replaced.
    target = Path(os.path.realpath(path))
    tmp = target.with_name(f".tmp-{secrets.token_hex(4)}-{target.name}")
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write ``frame`` as CSV, TSV or Parquet, replacing ``path`` atomically.

    The file is written next to ``path`` under a temporary name and renamed,
    so an interrupted write never leaves a truncated file behind.
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "parquet":
        _need_pyarrow(path)
    with replacing(path) as tmp:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, sep="\t" if kind == "tsv" else ",", index=False)


def check_input_file(path: Path, what: str) -> None:
    """Fail in one line unless ``path`` is an existing file (not a folder)."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give the file in it.")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file.")


def check_output_path(path: Path, what: str) -> None:
    """Fail in one line, before any work, if ``path`` cannot be written."""
    folder = path.parent
    if path.is_dir():
        raise ValueError(
            f"{what} {path} is a folder; give a file name, e.g. {path / 'out'}."
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} {path}: the folder {folder} does not exist; create it first."
        )
    # The file is written beside its target and renamed: the folder must
    # take new files.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{what} {path}: the folder {folder} is not writable; choose "
            "another place or change its permissions."
        )


def check_columns(
    frame: pd.DataFrame, columns: Sequence[str], *, what: str, path: str
) -> None:
    """Fail naming the ``columns`` that ``frame`` lacks and the ones it has."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        have = [str(c) for c in frame.columns]
        shown = ", ".join(have[:30]) + (" ..." if len(have) > 30 else "")
        raise ValueError(
            f"{path} has no {what} column(s) {missing}; its columns are: {shown}."
        )
