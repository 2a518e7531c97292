"""Shared file handling of the loaders: bundled files, data_home, columns, Bunch."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import Bunch


def open_bundled(filename: str) -> io.BytesIO:
    """Decompressed bytes of a gzip file in ``sklearn_rmtl/datasets/data/``.

    Goes through :mod:`importlib.resources`, so it also works from a wheel or
    a zip import, not only from a source checkout. The samples are a few MB,
    so they are read whole: no file handle is left for ``pd.read_csv`` to
    close.
    """
    resource = resources.files("sklearn_rmtl.datasets").joinpath("data")
    return io.BytesIO(gzip.decompress(resource.joinpath(filename).read_bytes()))


def resolve_data_home(data_home: str | os.PathLike[str], *, dataset: str) -> Path:
    """Return ``data_home`` as an existing folder, or raise FileNotFoundError."""
    home = Path(data_home).expanduser()
    if not home.is_dir():
        raise FileNotFoundError(
            f"data_home={str(home)!r} is not an existing folder. Pass the folder "
            f"that holds the {dataset} files, or data_home=None for the bundled "
            "sample."
        )
    return home


def require_file(
    data_home: str | os.PathLike[str], filename: str, *, dataset: str, url: str
) -> Path:
    """Return ``filename`` in ``data_home``; if missing, say where to download it."""
    home = resolve_data_home(data_home, dataset=dataset)
    path = home / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected the {dataset} file {filename!r} in {str(home)!r}, but it is "
            f"not there. Download the dataset from {url} and unpack {filename!r} "
            "into that folder, or pass data_home=None to load the bundled sample."
        )
    return path


def check_columns(
    columns: Iterable[Any],
    required: Sequence[str],
    *,
    source: str,
    optional: Sequence[str] = (),
) -> list[str]:
    """Check a file's header; return the optional columns it has.

    Raises a ValueError that names the missing columns and any unexpected ones
    (an unexpected column often means the wrong file or separator was given).
    """
    found = [str(c) for c in columns]
    missing = [c for c in required if c not in found]
    if missing:
        known = set(required) | set(optional)
        unexpected = [c for c in found if c not in known]
        hint = f"; unexpected columns: {unexpected}" if unexpected else ""
        raise ValueError(
            f"{source} is missing the required columns {missing}{hint}. "
            f"Expected the columns {list(required)}"
            + (f" (optionally also {list(optional)})" if optional else "")
            + f", found {found}."
        )
    return [c for c in optional if c in found]


def check_values(
    values: pd.Series, allowed: Sequence[str], *, column: str, source: str
) -> None:
    """Raise a ValueError naming the values of ``column`` outside ``allowed``."""
    known = set(allowed)
    present = values.dropna().unique().tolist()
    unexpected = sorted(str(v) for v in present if v not in known)
    if unexpected:
        raise ValueError(
            f"{source}: column {column!r} has unexpected values "
            f"{unexpected[:10]}; expected only {list(allowed)}."
        )


def read_checked_csv(
    open_file: Any,
    *,
    source: str,
    usecols: Sequence[str],
    dtype: dict[str, Any],
    **kwargs: Any,
) -> pd.DataFrame:
    """``pd.read_csv`` with the file named in parse errors (e.g. a text id)."""
    try:
        return pd.read_csv(open_file, usecols=list(usecols), dtype=dtype, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"Could not parse {source} with the expected column types {dtype}: {exc}"
        ) from exc


def make_bunch(
    *,
    X: pd.DataFrame,
    y: pd.DataFrame,
    session_ids: np.ndarray,
    times_ms: np.ndarray,
    descr: str,
    return_X_y: bool,
) -> Bunch | tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Package a loader's output (see the loaders' Returns sections)."""
    X = X.reset_index(drop=True)
    y = y.reset_index(drop=True).astype(np.int8)
    timestamps = np.asarray(times_ms, dtype=np.int64).astype("datetime64[ms]")
    session_ids = np.asarray(session_ids, dtype=np.int64)
    if return_X_y:
        return X, y, session_ids, timestamps
    return Bunch(
        X=X,
        y=y,
        session_ids=session_ids,
        timestamps=timestamps,
        feature_names=[str(c) for c in X.columns],
        target_names=[str(c) for c in y.columns],
        DESCR=descr,
    )
