"""Out-of-core fitting and prediction from Parquet data, in bounded memory.

A :class:`ParquetSource` describes a Parquet file, a folder of Parquet files
or a :class:`pyarrow.dataset.Dataset`: which columns are the targets, the
session, the time and the features, and ``block_rows``, the number of rows
held in memory at a time. :meth:`MTLClassifier.fit
<sklearn_rmtl.MTLClassifier.fit>` and :meth:`RMTLClassifier.fit
<sklearn_rmtl.RMTLClassifier.fit>` take a source in place of ``X``, and
``predict_proba`` / ``predict`` score one; :func:`predict_proba_to_parquet`
writes the probabilities to a Parquet file block by block.

How a fit streams (see the docs' scaling page, "Fitting from Parquet"):

1. One pass over the blocks validates the columns and the labels and fits
   the :class:`~sklearn_rmtl.FeatureEncoder` (vocabulary counts, running
   mean and variance), exactly as an in-memory fit on the same rows would.
2. The held-out rows of early stopping are those of the in-memory rule (the
   latest ``validation_fraction`` of the rows by time, ties in row order),
   found from a time threshold; they are encoded and kept in memory.
3. Each epoch visits the blocks in a seeded random order and the rows of a
   block in a random order; batches continue across blocks, so an epoch
   has as many batches as in memory. With one block this is exactly the
   in-memory fit's batch order.

RMTL's critics read chunks of whole sessions instead
(:meth:`ParquetSource.session_frames`). Needs pyarrow (``pip install
"sklearn-rmtl[parquet]"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.preprocessing import OrdinalEncoder, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from sklearn_rmtl._data import StreamingDataset, TensorDictDataset
from sklearn_rmtl._encoding import (
    _FLOAT32_MAX,
    _HOMOGENEOUS,
    _N_RESERVED,
    _TOO_WIDE,
    FeatureEncoder,
    _as_frame,
    _distinct_frame,
    _Factorized,
)
from sklearn_rmtl._fit_data import FitData, encode_inputs, loss_mask, take_rows
from sklearn_rmtl._validation import (
    _observed_labels,
    binarize_labels,
    check_metadata,
    check_multitask_target,
    resolve_device,
    to_pandas,
)

_EXTRA = (
    'Reading Parquet data needs pyarrow: pip install "sklearn-rmtl[parquet]" '
    '(or pip install "pyarrow>=14").'
)


def _pyarrow() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.dataset and pyarrow.parquet, or a clear ImportError."""
    try:
        import pyarrow as pa
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(_EXTRA) from exc
    return pa, ds, pq


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(
            f"{what} must be a column name or a list of column names, got {value!r}."
        )
    return list(value)


class ParquetSource:
    """A Parquet dataset read in blocks of rows, for out-of-core fits.

    Pass it to :meth:`MTLClassifier.fit <sklearn_rmtl.MTLClassifier.fit>` or
    :meth:`RMTLClassifier.fit <sklearn_rmtl.RMTLClassifier.fit>` (which needs
    the rows sorted by session, then time) in place of ``X``, with no
    ``y``, ``session_ids``, ``timestamps`` or ``sample_weight`` (they are
    columns of the source), and to
    ``predict_proba``, ``predict`` or :func:`predict_proba_to_parquet` in
    place of ``X``. At most about ``block_rows`` rows are held in memory at a
    time (see Notes).

    Parameters
    ----------
    path : str, path-like, list of them, or pyarrow.dataset.Dataset
        A Parquet file, a folder of Parquet files (read in path order), a
        list of files, or a Parquet :class:`pyarrow.dataset.Dataset`.
    target : str or list of str, default=None
        The label columns, one per task in task order (needed by ``fit``).
        Missing values are missing labels, as in ``fit``'s ``y``.
    session : str, default=None
        The session column (``fit``'s ``session_ids``).
    time : str, default=None
        The time column (``fit``'s ``timestamps``): numbers or timestamps.
        With early stopping the latest rows by time are held out.
    features : list of str, default=None
        The feature columns, in order. ``None``: every column that is not
        ``target``, ``session``, ``time`` or ``sample_weight``, in file
        order (for prediction: the columns the estimator was fitted on).
    sample_weight : str, default=None
        A column of non-negative row weights (``fit``'s ``sample_weight``).
    block_rows : int, default=65536
        Rows read, encoded and trained on at a time: the memory budget.

    Attributes
    ----------
    n_rows : int
        Number of rows of the dataset.
    n_blocks : int
        Number of blocks, ``ceil(n_rows / block_rows)``.
    columns : list of str
        The dataset's column names.

    Raises
    ------
    ImportError
        If pyarrow is not installed.
    ValueError
        If a named column is not in the dataset, or a column is named twice.
    TypeError
        If a column has a nested type (list, struct, map), or ``block_rows``
        is not a positive int.

    See Also
    --------
    predict_proba_to_parquet : Write the probabilities of a source's rows.

    Notes
    -----
    Parquet is read by row groups: a block reads the row groups that overlap
    it, so memory is bounded by ``block_rows`` when the files' row groups
    are no larger than that (``pyarrow.parquet.write_table(...,
    row_group_size=...)``). Early stopping also keeps its held-out rows
    (``validation_fraction`` of them) encoded in memory.

    Examples
    --------
    >>> import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.parquet import ParquetSource
    >>> rng = np.random.default_rng(0)
    >>> frame = pd.DataFrame({"item": rng.choice(["a", "b"], 300),
    ...                       "price": rng.normal(size=300),
    ...                       "t": np.arange(300)})
    >>> frame["click"] = (frame["item"] == "a").astype(int)
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.parquet")
    >>> pq.write_table(pa.Table.from_pandas(frame), path, row_group_size=100)
    >>> source = ParquetSource(path, target="click", time="t",
    ...                        features=["item", "price"], block_rows=100)
    >>> clf = MTLClassifier(backbone="sharedbottom", max_epochs=2, random_state=0,
    ...                     backbone_params={"embedding_dim": 4,
    ...                                      "bottom_dims": (8,), "tower_dims": (4,)})
    >>> clf.fit(source).predict_proba(source).shape
    (300, 1)
    """

    path: Any
    target: list[str]
    session: str | None
    time: str | None
    sample_weight: str | None
    features: list[str]
    block_rows: int
    columns: list[str]
    n_rows: int
    n_blocks: int
    _features_given: bool
    _offsets: np.ndarray

    def __init__(
        self,
        path: Any,
        *,
        target: str | Sequence[str] | None = None,
        session: str | None = None,
        time: str | None = None,
        features: Sequence[str] | None = None,
        sample_weight: str | None = None,
        block_rows: int = 65_536,
    ) -> None:
        pa, ds, _ = _pyarrow()
        if isinstance(block_rows, bool) or not isinstance(block_rows, Integral):
            raise TypeError(f"block_rows must be a positive int, got {block_rows!r}.")
        if block_rows < 1:
            raise ValueError(f"block_rows must be at least 1, got {block_rows}.")
        self.path = path
        self.target = _names(target, "target")
        for name, value in (
            ("session", session),
            ("time", time),
            ("sample_weight", sample_weight),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a column name, got {value!r}.")
        self.session = session
        self.time = time
        self.sample_weight = sample_weight
        self.block_rows = int(block_rows)
        if isinstance(path, ds.Dataset):
            dataset = path
        else:
            paths = (
                [os.fspath(p) for p in path]
                if isinstance(path, list | tuple)
                else os.fspath(path)
            )
            try:
                dataset = ds.dataset(paths, format="parquet")
            except (FileNotFoundError, pa.ArrowInvalid) as exc:
                raise ValueError(
                    f"Cannot read Parquet data at {path!r}: {exc}"
                ) from exc
        if not isinstance(dataset, ds.FileSystemDataset):
            raise TypeError(
                "ParquetSource reads a Parquet file, a folder of them or a "
                f"pyarrow FileSystemDataset of Parquet files, got {type(dataset)}."
            )
        schema = dataset.schema
        self.columns = list(schema.names)
        meta = [
            *self.target,
            *(c for c in (session, time, sample_weight) if c is not None),
        ]
        self.features = (
            [c for c in self.columns if c not in meta]
            if features is None
            else _names(features, "features")
        )
        self._features_given = features is not None
        named = [*meta, *self.features]
        missing = [c for c in named if c not in self.columns]
        if missing:
            raise ValueError(
                f"Columns {missing} are not in the Parquet data; its columns are "
                f"{self.columns}."
            )
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise ValueError(
                f"Columns {twice} are named more than once among target, session, "
                "time, sample_weight and features; each has one role."
            )
        for name in named:
            kind = schema.field(name).type
            if pa.types.is_nested(kind):
                raise TypeError(
                    f"Column {name!r} has the nested type {kind}; targets, "
                    "session, time and features must be scalar columns."
                )
        for name, check, what in (
            (time, _is_time_type, "numbers or timestamps"),
            (sample_weight, pa.types.is_floating, "numbers"),
        ):
            kind = None if name is None else schema.field(name).type
            if kind is not None and not (
                check(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind)
            ):
                raise TypeError(f"Column {name!r} must hold {what}, got {kind}.")
        self._groups: list[tuple[Any, int]] = []
        rows = []
        for fragment in dataset.get_fragments():
            for group in fragment.row_groups:
                self._groups.append((fragment, group.id))
                rows.append(group.num_rows)
        self._dataset: Any = dataset
        self._offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        self.n_rows = int(self._offsets[-1])
        self.n_blocks = -(-self.n_rows // self.block_rows)
        self._cache: tuple[Any, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"ParquetSource({self.path!r}, target={self.target}, "
            f"session={self.session!r}, time={self.time!r}, "
            f"block_rows={self.block_rows}, n_rows={self.n_rows})"
        )

    def read_block(self, i: int, columns: Sequence[str]) -> Any:
        """The rows of block ``i`` (``columns`` only), as a pyarrow Table.

        Parameters
        ----------
        i : int
            Block index, ``0 <= i < n_blocks``.
        columns : list of str
            The columns to read.

        Returns
        -------
        table : pyarrow.Table
            Rows ``i * block_rows`` to ``(i + 1) * block_rows`` (fewer in the
            last block).
        """
        start = i * self.block_rows
        return self._read_rows(
            start, min(start + self.block_rows, self.n_rows), columns
        )

    def _read_rows(self, start: int, stop: int, columns: Sequence[str]) -> Any:
        """Rows ``start`` to ``stop`` (``columns`` only), as a pyarrow Table."""
        pa, _, _ = _pyarrow()
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        parts = []
        g = first
        while g < len(self._groups) and self._offsets[g] < stop:
            table = self._row_group(g, list(columns))
            lo = max(start - int(self._offsets[g]), 0)
            hi = min(stop - int(self._offsets[g]), table.num_rows)
            parts.append(table.slice(lo, hi - lo))
            g += 1
        if not parts:
            return self._dataset.schema.empty_table().select(list(columns))
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def _row_group(self, g: int, columns: list[str]) -> Any:
        # A row group that straddles two blocks is read once for both.
        key = (g, tuple(columns))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        fragment, group = self._groups[g]
        table = fragment.subset(row_group_ids=[group]).to_table(columns=columns)
        self._cache = (key, table)
        return table

    def frames(self, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        """Every block's ``columns`` as a pandas DataFrame, in row order.

        Parameters
        ----------
        columns : list of str
            The columns to read.

        Yields
        ------
        frame : DataFrame
            One block (converted as ``fit`` converts a pyarrow table).
        """
        for i in range(self.n_blocks):
            yield to_pandas(self.read_block(i, columns))

    def session_frames(self, columns: Sequence[str]) -> Iterator[pd.DataFrame]:
        """Whole sessions at a time, checking that rows are sorted by session.

        Each block is cut after its last complete session and the rest is
        carried into the next one, so a session is never split: per-session
        work (session metrics, the session MDP) can run chunk by chunk. The
        data must be sorted by session, then time (session ids
        non-decreasing, times non-decreasing within a session); this is
        verified while reading.

        Parameters
        ----------
        columns : list of str
            The columns to read (``session`` and ``time`` are added).

        Yields
        ------
        frame : DataFrame
            Consecutive rows making whole sessions: about ``block_rows``,
            more when one session is longer.

        Raises
        ------
        ValueError
            If the source has no ``session`` column, or a row breaks the
            (session, time) order; the message gives the row number.
        """
        if self.session is None:
            raise ValueError("session_frames needs a source with a session column.")
        order = [c for c in (self.session, self.time) if c is not None]
        wanted = [*columns, *(c for c in order if c not in columns)]
        carry: pd.DataFrame | None = None
        previous: tuple[Any, Any] | None = None
        start = 0
        for i, frame in enumerate(self.frames(wanted)):
            self._check_sorted(frame, previous, start)
            start += len(frame)
            if len(frame):
                last = frame.iloc[-1]
                previous = (
                    last[self.session],
                    None if self.time is None else last[self.time],
                )
            if carry is not None:
                frame = pd.concat([carry, frame], ignore_index=True)
            if i == self.n_blocks - 1:
                carry = None
                yield frame.reset_index(drop=True)
                break
            sessions = frame[self.session].to_numpy()
            # The last session may continue in the next block: hold it back.
            earlier = np.flatnonzero(sessions != sessions[-1])
            cut = int(earlier[-1]) + 1 if len(earlier) else 0
            if cut == 0:
                carry = frame
                continue
            carry = frame.iloc[cut:]
            yield frame.iloc[:cut].reset_index(drop=True)
        if carry is not None and len(carry):
            yield carry.reset_index(drop=True)

    def _session_bounds(self) -> list[tuple[int, int]]:
        """The row ranges of :meth:`session_frames`'s chunks (order verified)."""
        bounds, start = [], 0
        for frame in self.session_frames([]):
            bounds.append((start, start + len(frame)))
            start += len(frame)
        return bounds

    def _check_sorted(
        self, frame: pd.DataFrame, previous: tuple[Any, Any] | None, start: int
    ) -> None:
        sessions = frame[self.session].to_numpy()
        times = None if self.time is None else frame[self.time].to_numpy()
        if previous is not None and len(frame):
            sessions = np.concatenate([[previous[0]], sessions])
            if times is not None:
                times = np.concatenate([[previous[1]], times])
            start -= 1
        if len(sessions) < 2:
            return
        try:
            back = sessions[1:] < sessions[:-1]
        except TypeError as exc:
            raise ValueError(
                f"Session ids of column {self.session!r} cannot be compared "
                f"({exc}); give them one type (e.g. all strings)."
            ) from exc
        if times is not None:
            same = sessions[1:] == sessions[:-1]
            back = back | (same & (times[1:] < times[:-1]))
        if back.any():
            row = start + int(np.flatnonzero(back)[0]) + 1
            by = self.session if self.time is None else f"{self.session}, {self.time}"
            raise ValueError(
                f"The Parquet data must be sorted by ({by}) for session-wise "
                f"reading, but row {row} (counting from 0) comes before the row "
                f"above it. Sort "
                f"it once, e.g. pyarrow.dataset.dataset(path).sort_by("
                f"[({self.session!r}, 'ascending')"
                + ("" if self.time is None else f", ({self.time!r}, 'ascending')")
                + "]), and write it again."
            )


def _is_time_type(kind: Any) -> bool:
    pa, _, _ = _pyarrow()
    return bool(
        pa.types.is_floating(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
    )


def is_source(X: Any) -> bool:
    """Whether ``X`` is a :class:`ParquetSource` (the estimators' hook)."""
    return isinstance(X, ParquetSource)


# --------------------------------------------------------------- labels
class _Labels:
    """The labels, weights and loss mask of a block, under the fit's rules."""

    def __init__(self, source: ParquetSource) -> None:
        self.source = source
        self.columns = [
            *source.target,
            *([source.sample_weight] if source.sample_weight else []),
        ]
        self.classes: np.ndarray | None = None
        self.has_missing = False  # set after the first pass
        self.has_weights = False

    def raw(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
        y = frame[self.source.target]
        weight = None
        if self.source.sample_weight is not None:
            w = frame[self.source.sample_weight].to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            if not np.isfinite(w).all():
                raise ValueError(
                    f"Column {self.source.sample_weight!r} (sample_weight) contains "
                    "NaN or infinite values; every weight must be a finite number "
                    ">= 0 (use 0 to leave a row out)."
                )
            if (w < 0).any():
                raise ValueError(
                    f"Column {self.source.sample_weight!r} (sample_weight) contains "
                    f"negative values (min {w.min():g}); weights must be >= 0."
                )
            weight = w
        return y, weight

    def block(
        self, frame: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
        """y01 (missing as 0), observed, weights (n, K) and the kept rows."""
        y, weight = self.raw(frame)
        y01 = binarize_labels(y, self.classes).astype(np.float32)
        observed = ~np.isnan(y01)
        y01 = np.where(observed, y01, 0.0).astype(np.float32)
        n, k = y01.shape
        w = None
        if self.has_weights and weight is not None:
            w = np.repeat(weight[:, None], k, axis=1).astype(np.float32)
        obs = observed if self.has_missing else None
        mask = loss_mask(obs, w)
        kept = np.ones(n, bool) if mask is None else np.asarray((mask > 0).any(axis=1))
        return y01, obs, w, kept


# -------------------------------------------------------------- encoder
class _EncoderPass:
    """Accumulates what ``FeatureEncoder.fit`` learns, block by block.

    Categorical columns: each distinct value and its count. Numerical
    columns: the running mean and variance of ``StandardScaler.partial_fit``
    (the pairwise update of Chan, Golub and LeVeque, so merging blocks is
    numerically stable; one block is exactly ``StandardScaler.fit``), plus
    the range and magnitude that :func:`_standardisation` looks at.
    """

    def __init__(self, encoder: FeatureEncoder) -> None:
        self.encoder = encoder
        self.is_cat: np.ndarray | None = None
        self.values: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.scaler = StandardScaler()
        self.n_kept = 0

    def first(self, X: pd.DataFrame) -> None:
        enc = self.encoder
        self.is_cat = enc._categorical_mask(X, X)
        enc._cat_idx = np.flatnonzero(self.is_cat)
        enc._num_idx = np.flatnonzero(~self.is_cat)
        n_num = len(enc._num_idx)
        self.values = [np.empty(0, dtype=object) for _ in enc._cat_idx]
        self.counts = [np.zeros(0, dtype=np.int64) for _ in enc._cat_idx]
        self.magnitude = np.zeros(n_num)
        self.high = np.full(n_num, -np.inf)
        self.low = np.full(n_num, np.inf)
        self.nan = np.zeros(n_num, dtype=bool)
        self.n_seen = np.zeros(n_num, dtype=np.int64)

    def add(self, X: pd.DataFrame) -> None:
        enc = self.encoder
        assert self.is_cat is not None
        is_cat = enc._categorical_mask(X, X)
        if not np.array_equal(is_cat, self.is_cat):
            changed = [str(c) for c in X.columns[is_cat != self.is_cat]]
            raise TypeError(
                f"Columns {changed} change between categorical and numerical "
                "dtypes from one block to another; give them one type in every "
                "file (e.g. cast them) or name the categorical columns with "
                "categorical_features."
            )
        if not len(X):
            return
        self.n_kept += len(X)
        for i, j in enumerate(enc._cat_idx):
            column = X.iloc[:, int(j)]
            if isinstance(column.dtype, pd.CategoricalDtype):
                positions = column.cat.codes.to_numpy().astype(np.intp)
                uniques = column.cat.categories.to_numpy(dtype=object)
            else:
                positions, found = pd.factorize(column, use_na_sentinel=True)
                uniques = np.asarray(found, dtype=object)
            counts = np.bincount(positions[positions >= 0], minlength=len(uniques))
            self._merge(i, uniques[counts > 0], counts[counts > 0])
        if len(enc._num_idx):
            x = enc._numbers(X, enc._num_idx)
            with np.errstate(over="ignore", invalid="ignore"):
                self.scaler.partial_fit(x)
            self.magnitude = np.fmax(
                self.magnitude, np.where(np.isnan(x), 0.0, np.abs(x)).max(axis=0)
            )
            self.high = np.fmax(self.high, np.fmax.reduce(x, axis=0))
            self.low = np.fmin(self.low, np.fmin.reduce(x, axis=0))
            self.nan |= np.isnan(x).any(axis=0)

    def _merge(self, i: int, values: np.ndarray, counts: np.ndarray) -> None:
        both = np.concatenate([self.values[i], values])
        positions, uniques = pd.factorize(pd.Series(both, dtype=object))
        total = np.zeros(len(uniques), dtype=np.int64)
        np.add.at(total, positions, np.concatenate([self.counts[i], counts]))
        self.values[i] = np.asarray(uniques, dtype=object)
        self.counts[i] = total

    def vocabulary(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Column ``i``'s sorted known values and their codes, as fit learns them."""
        values, counts = self.values[i], self.counts[i]
        if pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS:
            # fit compares a mixed-type column's values as strings
            positions, strings = pd.factorize(values.astype(str).astype(object))
            values = np.asarray(strings, dtype=object)
            counts = np.bincount(positions, weights=counts).astype(np.int64)
        ordinal = OrdinalEncoder().fit(
            _distinct_frame([_Factorized(values, np.zeros(0, np.intp))])
        )
        known = ordinal.categories_[0]
        known = known[~pd.isna(known)]
        position = ordinal.transform(pd.DataFrame({0: values}, dtype=object))[:, 0]
        count = np.zeros(len(known), dtype=np.int64)
        np.add.at(count, position.astype(np.intp), counts)
        infrequent = self._infrequent(count)
        codes = np.empty(len(known), dtype=np.int64)
        codes[~infrequent] = np.arange(int((~infrequent).sum()))
        codes[infrequent] = int((~infrequent).sum())
        return known, codes + _N_RESERVED

    def _infrequent(self, count: np.ndarray) -> np.ndarray:
        """OrdinalEncoder's rule for ``min_frequency`` and ``max_categories``."""
        min_frequency = self.encoder.min_frequency
        max_categories = self.encoder.max_categories
        if min_frequency is None:
            rare = np.zeros(len(count), dtype=bool)
        elif isinstance(min_frequency, Integral):
            rare = count < min_frequency
        else:
            rare = count < self.n_kept * min_frequency
        n_kept_codes = len(count) - int(rare.sum()) + 1  # + the infrequent code
        if max_categories is not None and max_categories < n_kept_codes:
            keep = max_categories - 1
            if keep == 0:
                rare[:] = True
            else:
                # The least frequent first; ties by position (a stable sort).
                rare[np.argsort(count, kind="mergesort")[:-keep]] = True
        return rare

    def standardisation(self, source_frames: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean and scale as ``_standardisation``, from the running statistics."""
        s = self.scaler
        if not hasattr(s, "mean_"):
            n = len(self.encoder._num_idx)
            return np.zeros(n), np.ones(n)
        mean, scale, var = s.mean_.copy(), s.scale_.copy(), s.var_
        candidates = np.flatnonzero(~(var >= np.finfo(np.float64).tiny))
        refine = (self.magnitude[candidates] > 0) & (
            ~np.isfinite(var[candidates])
            | (self.high[candidates] > self.low[candidates])
        )
        if not refine.any():
            return mean, scale
        # Columns whose variance over- or underflows: a second pass over
        # them, divided by their largest magnitude (as _standardisation).
        columns = candidates[refine]
        m = self.magnitude[columns]
        rescaled = StandardScaler()
        for X in source_frames():
            x = self.encoder._numbers(X, self.encoder._num_idx[columns])
            if len(x):
                rescaled.partial_fit(x / m)
        mean[columns] = rescaled.mean_ * m
        scale[columns] = rescaled.scale_ * m
        for X in source_frames():
            x = self.encoder._numbers(X, self.encoder._num_idx[columns])
            with np.errstate(over="ignore", invalid="ignore"):
                z = (x - mean[columns]) / scale[columns]
            wide = (np.abs(z) > _FLOAT32_MAX).any(axis=0)
            if wide.any():
                names = [
                    str(X.columns[j]) for j in self.encoder._num_idx[columns[wide]]
                ]
                raise ValueError(
                    f"Numerical columns {names} hold values too far apart (more "
                    f"than {_FLOAT32_MAX:.1e} standard deviations from the mean)"
                    f"{_TOO_WIDE}"
                )
        return mean, scale

    def state(self, X: pd.DataFrame, probe: BaseEstimator) -> dict[str, Any]:
        """The encoder's fitted state (``FeatureEncoder._get_state`` layout)."""
        enc = self.encoder
        labels = [str(c) for c in X.columns]
        categorical = []
        for i, j in enumerate(enc._cat_idx):
            known, codes = self.vocabulary(i)
            categorical.append(
                {
                    "position": int(j),
                    "name": labels[j],
                    "values": known.tolist(),
                    "codes": codes.tolist(),
                }
            )
        return {
            "n_features_in": int(probe.n_features_in_),
            "feature_names_in": getattr(probe, "feature_names_in_", None),
            "categorical": categorical,
            "numerical": [],
        }


def _numerical_state(
    enc_pass: _EncoderPass, labels: list[str], mean: np.ndarray, scale: np.ndarray
) -> list[dict[str, Any]]:
    return [
        {
            "position": int(j),
            "name": labels[j],
            "mean": float(mean[i]),
            "scale": float(scale[i]),
            "missing_indicator": bool(enc_pass.nan[i]),
        }
        for i, j in enumerate(enc_pass.encoder._num_idx)
    ]


# -------------------------------------------------------------- hold-out
class _HoldOut:
    """Which rows early stopping holds out, decided block by block.

    The in-memory rule (:func:`~sklearn_rmtl._fit_data.validation_mask`):
    among the kept rows, the ``n_valid`` latest by time, rows of equal time
    in row order (a stable sort), so of the rows at the threshold time the
    last ones are held out. Without a time column, the same seeded random
    subset of the kept rows (one flag per kept row is then held).
    """

    def __init__(
        self,
        *,
        threshold: float | None = None,
        tie_cut: int = 0,
        ties_before: np.ndarray | None = None,
        flags: np.ndarray | None = None,
        kept_before: np.ndarray | None = None,
    ) -> None:
        self.threshold = threshold
        self.tie_cut = tie_cut
        self.ties_before = ties_before
        self.flags = flags
        self.kept_before = kept_before

    def mask(self, b: int, kept: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        if self.flags is not None:
            assert self.kept_before is not None
            out = np.zeros(len(kept), dtype=bool)
            start = int(self.kept_before[b])
            out[kept] = self.flags[start : start + int(kept.sum())]
            return out
        assert times is not None and self.ties_before is not None
        tie = kept & (times == self.threshold)
        rank = int(self.ties_before[b]) + np.cumsum(tie) - 1
        return kept & ((times > self.threshold) | (tie & (rank >= self.tie_cut)))


def _too_few(n: int, fraction: float) -> ValueError:
    return ValueError(
        f"early_stopping needs more rows: with {n} samples and "
        f"validation_fraction={fraction} no row is left "
        "for training. Pass more data or early_stopping=False."
    )


# --------------------------------------------------------------- training
#: Per-row inputs derived from a block's encoded rows and 0/1 labels (e.g.
#: the critics' inputs of RMTL's refit).
Extra = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]


class _TrainStream(StreamingDataset):
    """The training rows of a source: blocks read, encoded and shuffled.

    Each pass visits the blocks in an order drawn from ``block_rng`` and the
    training rows of a block in an order drawn from the fit's torch
    ``generator``; a batch continues into the next block, so a pass has
    ``ceil(n_rows / batch_size)`` batches as in memory. One block gives the
    in-memory batches exactly (:class:`~sklearn_rmtl._data.BatchLoader`'s
    draws).
    """

    def __init__(
        self,
        fit: _StreamingFit,
        n_train: int,
        seed: int,
        extra: Extra | None = None,
    ) -> None:
        self.fit = fit
        self.n_train = n_train
        self.block_rng = np.random.default_rng(seed)
        self.extra = extra  # per-row inputs derived from a block's rows

    def __len__(self) -> int:
        return self.n_train

    def batches(
        self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None
    ) -> Iterator[tuple[dict[str, Tensor], Tensor | None]]:
        n_blocks = self.fit.source.n_blocks
        order = np.arange(n_blocks)
        if shuffle:
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            if n_blocks > 1:
                order = self.block_rng.permutation(n_blocks)
        carry: TensorDictDataset | None = None
        for b in order:
            block = self.fit.train_block(int(b), self.extra)
            if block is None:
                continue
            if shuffle:
                perm = torch.randperm(len(block), generator=generator)
                block = _dataset(*block.take(perm.to(block.device)), block.device)
            if carry is not None:
                block = _concat(carry, block)
            full = len(block) // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield block.take(slice(start, start + batch_size))
            carry = None
            if full < len(block):
                carry = _dataset(*block.take(slice(full, len(block))), block.device)
        if carry is not None:
            yield carry.take(slice(0, len(carry)))


def _dataset(
    X: dict[str, Tensor], y: Tensor | None, device: torch.device
) -> TensorDictDataset:
    return TensorDictDataset(X, y, device=device)


def _concat(a: TensorDictDataset, b: TensorDictDataset) -> TensorDictDataset:
    assert a.y is not None and b.y is not None
    X = {k: torch.cat([a.X[k], b.X[k]]) for k in a.X}
    return TensorDictDataset(X, torch.cat([a.y, b.y]), device=a.device)


class _StreamingFit:
    """The passes over a source that prepare an out-of-core fit."""

    def __init__(self, estimator: Any, source: ParquetSource) -> None:
        self.estimator = estimator
        self.source = source
        self.labels = _Labels(source)
        self.features = source.features

    # The columns each pass reads.
    def _label_columns(self) -> list[str]:
        time = [self.source.time] if self.source.time else []
        return [*self.labels.columns, *time]

    def _all_columns(self) -> list[str]:
        session = [self.source.session] if self.source.session else []
        return [*self.features, *self._label_columns(), *session]

    def _times(self, frame: pd.DataFrame) -> np.ndarray | None:
        if self.source.time is None:
            return None
        return check_metadata(
            frame[self.source.time], len(frame), name="timestamps", sortable=True
        )

    def prepare(self) -> tuple[FitData, FeatureEncoder]:
        est, source = self.estimator, self.source
        if not source.target:
            raise ValueError(
                "The ParquetSource passed to fit has no target columns; pass "
                "target=[...] (one label column per task)."
            )
        if not self.features:
            raise ValueError("The ParquetSource has no feature columns.")
        if source.n_rows < 2:
            raise ValueError(
                f"Found {source.n_rows} sample(s) in the Parquet data; at least "
                "2 are needed."
            )
        encoder = FeatureEncoder(
            categorical_features=est.categorical_features,
            min_frequency=est.min_frequency,
            max_categories=est.max_categories,
        )
        encoder._validate_params()
        enc_pass = _EncoderPass(encoder)
        probe = BaseEstimator()
        labels: list[Any] = [None for _ in source.target]
        n_kept, has_missing, has_weights, any_weight = 0, False, False, False
        trained = np.zeros(len(source.target), dtype=bool)
        first_frame = None
        # Pass 1: labels, weights, metadata and the encoder's statistics.
        for b, frame in enumerate(source.frames(self._all_columns())):
            X = frame[self.features]
            if b == 0:
                validate_data(probe, X, reset=True, skip_check_array=True)
                enc_pass.first(X)
                first_frame = X.iloc[:0]
            y, weight = self.labels.raw(frame)
            observed = np.ones(y.shape, dtype=bool)
            for k in range(y.shape[1]):
                values, observed[:, k] = _observed_labels(y.iloc[:, k])
                labels[k] = _union(labels[k], values)
            if max(len(v) for v in labels) > 2:
                self._classes(labels)  # raises the in-memory label errors
            has_missing |= not observed.all()
            w = np.ones(len(frame)) if weight is None else weight
            has_weights |= bool((w != 1).any())
            any_weight |= bool((w > 0).any())
            mask = observed & (w[:, None] > 0)
            trained |= mask.any(axis=0)
            kept = np.asarray(mask.any(axis=1), dtype=bool)
            n_kept += int(kept.sum())
            if source.session is not None:
                check_metadata(
                    frame[source.session],
                    len(frame),
                    name="session_ids",
                    sortable=False,
                )
            self._times(frame)
            enc_pass.add(X if kept.all() else take_rows(X, kept))
        assert first_frame is not None
        classes, task_names = self._classes(labels)
        if source.sample_weight is not None and not any_weight:
            raise ValueError(
                "sample_weight is zero for every row: at least one weight must "
                "be positive."
            )
        if not trained.all():
            raise ValueError(
                f"Task {task_names[np.flatnonzero(~trained)[0]]!r} has no observed "
                "label with a positive sample_weight; it would not be trained. "
                "Give some of its labelled rows a positive weight."
            )
        self.labels.classes = classes
        self.labels.has_missing = has_missing
        self.labels.has_weights = has_weights
        est._check_data_params(
            task_names, np.zeros(0) if source.session is not None else None
        )
        device = resolve_device(est.device)
        seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
        # The encoder, as FeatureEncoder.fit learns it on the kept rows.
        state = enc_pass.state(first_frame, probe)
        mean, scale = enc_pass.standardisation(
            lambda: (
                f[self.features][self.labels.block(f)[3]]
                for f in source.frames([*self.features, *self.labels.columns])
            )
        )
        state["numerical"] = _numerical_state(
            enc_pass, [str(c) for c in first_frame.columns], mean, scale
        )
        encoder._set_state(state)
        self.encoder = encoder
        # Pass 2 (labels and time only): the held-out rows.
        fraction = est.validation_fraction if est.early_stopping else None
        self.hold_out = (
            None if fraction is None else self._hold_out(n_kept, fraction, seed)
        )
        valid = self._valid_rows()
        n_valid = 0 if valid is None else len(valid["y01"])
        data = FitData(
            X=None,
            y01=np.zeros((0, len(task_names)), np.float32)
            if valid is None
            else valid["y01"],
            classes=classes,
            task_names=task_names,
            probe=probe,
            session_ids=None if valid is None else valid.get("session"),
            times=None if valid is None else valid.get("time"),
            device=device,
            seed=seed,
            valid=None if valid is None else np.ones(n_valid, dtype=bool),
            observed=None if valid is None else valid.get("observed"),
            sample_weight=None if valid is None else valid.get("weight"),
        )
        data.cardinalities = encoder.cardinalities_.tolist()
        # Without a hold-out: no rows, the network's input widths.
        n_numbers = len(encoder.numerical_features_) + len(
            encoder.missing_indicator_features_
        )
        data.inputs = (
            {
                "x_cat": np.zeros((0, len(encoder.cardinalities_)), np.int64),
                "x_num": np.zeros((0, n_numbers), np.float32),
            }
            if valid is None
            else valid["inputs"]
        )
        data.train_stream = _TrainStream(self, source.n_rows - n_valid, seed)
        self.device = device
        return data, encoder

    def _classes(self, labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # Every task's distinct labels side by side: the in-memory checks.
        size = max(len(v) for v in labels)
        frame = pd.DataFrame(
            {
                name: pd.Series(np.resize(v, size) if len(v) else np.full(size, np.nan))
                for name, v in zip(self.source.target, labels, strict=True)
            }
        )
        _, classes, task_names = check_multitask_target(frame)
        return classes, task_names

    def _hold_out(self, n_kept: int, fraction: float, seed: int) -> _HoldOut:
        n_valid = max(1, round(fraction * n_kept))
        if n_valid >= n_kept:
            raise _too_few(n_kept, fraction)
        source = self.source
        if source.time is None:
            flags = np.zeros(n_kept, dtype=bool)
            flags[np.random.default_rng(seed).permutation(n_kept)[-n_valid:]] = True
            kept_before = [0]
            for frame in source.frames(self.labels.columns):
                kept_before.append(
                    kept_before[-1] + int(self.labels.block(frame)[3].sum())
                )
            return _HoldOut(flags=flags, kept_before=np.array(kept_before))
        # The n_valid latest times (a multiset) in at most n_valid + a block.
        top: np.ndarray | None = None  # in the times' dtype: int64 stays exact
        for frame in source.frames(self._label_columns()):
            times = self._times(frame)
            assert times is not None
            kept = self.labels.block(frame)[3]
            top = times[kept] if top is None else np.concatenate([top, times[kept]])
            if len(top) > n_valid:
                top = np.partition(top, len(top) - n_valid)[-n_valid:]
        assert top is not None
        threshold = top.min()
        tie_cut_from_end = n_valid - int((top > threshold).sum())
        ties = [0]
        for frame in source.frames(self._label_columns()):
            times = self._times(frame)
            kept = self.labels.block(frame)[3]
            ties.append(ties[-1] + int((kept & (times == threshold)).sum()))
        return _HoldOut(
            threshold=threshold.item(),
            tie_cut=ties[-1] - tie_cut_from_end,
            ties_before=np.array(ties),
        )

    def _block_valid(self, b: int, frame: pd.DataFrame, kept: np.ndarray) -> np.ndarray:
        if self.hold_out is None:
            return np.zeros(len(frame), dtype=bool)
        return self.hold_out.mask(b, kept, self._times(frame))

    def _valid_rows(self) -> dict[str, Any] | None:
        """Pass 3: the held-out rows, encoded, in row order."""
        if self.hold_out is None:
            return None
        parts: dict[str, list[Any]] = {}
        for b, frame in enumerate(self.source.frames(self._all_columns())):
            y01, observed, weight, kept = self.labels.block(frame)
            valid = self._block_valid(b, frame, kept)
            if not valid.any():
                continue
            rows = frame[valid]
            pieces = {
                "y01": y01[valid],
                "inputs": encode_inputs(
                    self.encoder._transform_parts(rows[self.features])
                ),
                "observed": None if observed is None else observed[valid],
                "weight": None if weight is None else weight[valid],
                "time": self._times(rows),
                "session": None
                if self.source.session is None
                else check_metadata(
                    rows[self.source.session],
                    len(rows),
                    name="session_ids",
                    sortable=False,
                ),
            }
            for key, value in pieces.items():
                parts.setdefault(key, []).append(value)
        out: dict[str, Any] = {}
        for key, values in parts.items():
            if values[0] is None:
                continue
            if key == "inputs":
                out[key] = {
                    k: np.concatenate([v[k] for v in values]) for k in values[0]
                }
            else:
                out[key] = np.concatenate(values)
        return out

    def train_block(
        self,
        b: int,
        extra: Extra | None = None,
    ) -> TensorDictDataset | None:
        """Block ``b``'s training rows (not held out), encoded, on the device."""
        frame = to_pandas(self.source.read_block(b, self._all_columns()))
        y01, observed, weight, kept = self.labels.block(frame)
        train = ~self._block_valid(b, frame, kept)
        if not train.any():
            return None
        X = frame[self.features]
        if not train.all():
            X = X[train]
        inputs = encode_inputs(self.encoder._transform_parts(X))
        mask = loss_mask(
            None if observed is None else observed[train],
            None if weight is None else weight[train],
        )
        if mask is not None:
            inputs["loss_mask"] = mask
        if extra is not None:
            inputs.update(extra(inputs, y01[train]))
        return TensorDictDataset(inputs, y01[train], device=self.device)


def _union(known: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """The distinct labels of ``known`` and ``values``, in their own dtype."""
    values = np.asarray(pd.unique(np.asarray(values)))
    if known is None:
        return values
    both = np.concatenate([known, values])
    return np.asarray(pd.unique(both))


def check_streaming_settings(estimator: Any) -> list[str]:
    """The estimator settings that fits from a source do not cover yet."""
    unsupported = []
    if estimator.retrain_on_all:
        # The stream holds the training rows; the hold-out lives in memory.
        unsupported.append("retrain_on_all=True")
    if estimator.distributed:
        unsupported.append("distributed=True")
    return unsupported


def fit_state(estimator: Any, source: ParquetSource, **ignored: Any) -> dict[str, Any]:
    """The fitted attributes of ``estimator`` (an MTLClassifier) on ``source``.

    The out-of-core counterpart of ``MTLClassifier._fit_state``: the same
    validation, encoder, hold-out and training loop, fed block by block.
    """
    from sklearn_rmtl._training import net_history

    given = [name for name, value in ignored.items() if value is not None]
    if given:
        raise TypeError(
            f"fit got a ParquetSource and {given}; with a source, the labels, "
            "sessions, times and weights are its columns (target=, session=, "
            "time=, sample_weight=), so pass none of them to fit."
        )
    unsupported = check_streaming_settings(estimator)
    if unsupported:
        raise TypeError(
            f"fit from a ParquetSource does not support {', '.join(unsupported)} "
            "yet; set them to False, or fit in memory."
        )
    data, encoder = _StreamingFit(estimator, source).prepare()
    params, task_weights = estimator._check_params(data.n_tasks)
    net = estimator._pretrain_net(data, params, task_weights)
    from sklearn_rmtl._mtl import fitted_mtl_state

    return fitted_mtl_state(data, encoder, net, params, {"pretrain": net_history(net)})


# ------------------------------------------------------------- predict
def _feature_columns(estimator: Any, source: ParquetSource) -> list[str]:
    if source._features_given or not hasattr(estimator, "feature_names_in_"):
        return source.features
    names = [str(c) for c in estimator.feature_names_in_]
    missing = [c for c in names if c not in source.columns]
    if missing:
        raise ValueError(
            f"The Parquet data lacks the columns {missing} that the estimator "
            "was fitted on."
        )
    return names


def iter_logits(estimator: Any, source: ParquetSource) -> Iterator[np.ndarray]:
    """The logits of every block of ``source``, in row order."""
    check_is_fitted(estimator)
    columns = _feature_columns(estimator, source)
    for frame in source.frames(columns):
        validate_data(estimator, frame, reset=False, skip_check_array=True)
        parts = estimator.encoder_._transform_parts(_as_frame(frame))
        yield np.asarray(
            estimator.net_.predict_proba(encode_inputs(parts)), dtype=np.float64
        )


def source_logits(estimator: Any, source: ParquetSource) -> np.ndarray:
    """All the logits of ``source`` as one array (the estimators' hook)."""
    out = np.empty((source.n_rows, estimator.n_tasks_), dtype=np.float64)
    start = 0
    for logits in iter_logits(estimator, source):
        out[start : start + len(logits)] = logits
        start += len(logits)
    return out


def predict_proba_to_parquet(
    estimator: Any,
    source: ParquetSource,
    path: str | os.PathLike[str],
    *,
    keep_columns: Sequence[str] | None = None,
) -> int:
    """Write the probabilities of a source's rows to a Parquet file, block by block.

    Memory holds one block of the source and its probabilities at a time,
    whatever the number of rows; the output has one row group per block, in
    the source's row order.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator.
    source : ParquetSource
        The rows to score; its feature columns (by default, those the
        estimator was fitted on) are read.
    path : str or path-like
        The Parquet file to write (replaced if it exists).
    keep_columns : list of str, default=None
        Columns of the source copied next to the probabilities (e.g. an id
        or the session), to join the results back.

    Returns
    -------
    n_rows : int
        Number of rows written.

    Raises
    ------
    ValueError
        If a column of ``keep_columns`` is not in the source, or would
        clash with a probability column.

    Notes
    -----
    The probability of task ``k`` is in the column ``"proba_<task name>"``
    (float64), as ``estimator.predict_proba(source)[:, k]``.
    """
    pa, _, pq = _pyarrow()
    check_is_fitted(estimator)
    keep = _names(keep_columns, "keep_columns")
    missing = [c for c in keep if c not in source.columns]
    if missing:
        raise ValueError(
            f"keep_columns names {missing}, which the Parquet data does not have."
        )
    names = [f"proba_{t}" for t in estimator.task_names_]
    clash = sorted(set(names) & set(keep))
    if clash:
        raise ValueError(f"keep_columns {clash} clash with the probability columns.")
    written = 0
    writer = None
    try:
        for b, logits in enumerate(iter_logits(estimator, source)):
            proba = expit(logits)
            columns = {}
            if keep:
                kept = source.read_block(b, keep)
                columns = {c: kept.column(c) for c in keep}
            columns.update({n: proba[:, k] for k, n in enumerate(names)})
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(os.fspath(path), table.schema)
            writer.write_table(table)
            written += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return written


__all__ = ["ParquetSource", "predict_proba_to_parquet"]
