"""Parquet data read in blocks of rows, for fits and predictions in bounded memory.

A :class:`ParquetSource` describes a Parquet file, a folder of Parquet files
or a :class:`pyarrow.dataset.Dataset`: which columns are the targets, the
session, the time and the features, and ``block_rows``, the number of rows
held in memory at a time. :meth:`MTLClassifier.fit
<sklearn_rmtl.MTLClassifier.fit>` and :meth:`RMTLClassifier.fit
<sklearn_rmtl.RMTLClassifier.fit>` take a source in place of ``X`` and read
it block by block through the same fit as arrays in memory, which are one
block (see the docs' scaling page, "Fitting from Parquet");
``predict_proba`` / ``predict`` score one, and
:func:`predict_proba_to_parquet` writes the probabilities to a Parquet
file block by block. Needs pyarrow (``pip install "sklearn-rmtl[parquet]"``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._parquet_files import ParquetFiles, pyarrow_modules
from sklearn_rmtl._rows import Block, Rows, label_classes, sorted_session_bounds
from sklearn_rmtl._tables import replacing
from sklearn_rmtl._validation import (
    binarize_labels,
    check_metadata,
    check_sample_weight,
    to_pandas,
)
from sklearn_rmtl._vocabulary import BLOCK_ROWS


def _is_flat_list(kind: Any) -> bool:
    """Whether a pyarrow type is a list of scalars (a sequence column's)."""
    import pyarrow as pa

    return (
        pa.types.is_list(kind) or pa.types.is_large_list(kind)
    ) and not pa.types.is_nested(kind.value_type)


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


class ParquetSource(Rows):
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
        If a named column is not in the dataset, or a column is named twice;
        when reading, if a file changed after the source was opened or a row
        group cannot be read (the message names the file).
    TypeError
        If a column has a nested type (struct, map, or a list other than a
        feature's list of scalars), or ``block_rows``
        is not a positive int; if a column read has types in different files
        with no common one (e.g. text and numbers), or the session ids have
        different types (the message names the files).

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

    Columns keep the types they were written with. Those that pandas wrote
    from a ``category`` dtype (its metadata in the file says so) are read
    as categories, integer ones included, as the frame in memory. A column
    that is int64 in some files of a folder and float64 in others (pandas
    writes an integer column with a NaN as float64) is read as float64.

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

    def __init__(
        self,
        path: Any,
        *,
        target: str | Sequence[str] | None = None,
        session: str | None = None,
        time: str | None = None,
        features: Sequence[str] | None = None,
        sample_weight: str | None = None,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        pa, _, _ = pyarrow_modules()
        if isinstance(block_rows, bool) or not isinstance(block_rows, Integral):
            raise TypeError(f"block_rows must be a positive int, got {block_rows!r}.")
        if block_rows < 1:
            raise ValueError(f"block_rows must be at least 1, got {block_rows}.")
        self.path: Any = path
        self.target: list[str] = _names(target, "target")
        for name, value in (
            ("session", session),
            ("time", time),
            ("sample_weight", sample_weight),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a column name, got {value!r}.")
        self.session: str | None = session
        self.time: str | None = time
        self.sample_weight: str | None = sample_weight
        self.block_rows = int(block_rows)
        self._files: ParquetFiles = ParquetFiles(path, session=session)
        schema = self._files.schema
        self.columns: list[str] = list(schema.names)
        meta = [
            *self.target,
            *(c for c in (session, time, sample_weight) if c is not None),
        ]
        self.features: list[str] = (
            [c for c in self.columns if c not in meta]
            if features is None
            else _names(features, "features")
        )
        self._features_given: bool = features is not None
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
        self._files.check_types(named)
        for name in named:
            kind = schema.field(name).type
            # A feature may be a list of scalars: a sequence column (the
            # estimator's sequence_features), read as arrays per cell.
            listed = name in self.features and _is_flat_list(kind)
            if pa.types.is_nested(kind) and not listed:
                raise TypeError(
                    f"Column {name!r} has the nested type {kind}; targets, "
                    "session, time and features must be scalar columns, or "
                    "lists of scalars for a feature (a sequence column)."
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
        # Columns pandas wrote from a ``category`` dtype are read back as
        # categories (Parquet keeps integer ones as plain integers), so that
        # a fit by dtype embeds them as the fit of the frame in memory does.
        self._categories: set[str] = self._files.categoricals - set(meta)
        self._offsets: np.ndarray = np.concatenate(
            [[0], np.cumsum(self._files.group_rows, dtype=np.int64)]
        )
        self.n_rows = int(self._offsets[-1])
        self.n_blocks = -(-self.n_rows // self.block_rows)
        self._classes: tuple[np.ndarray, np.ndarray] | None = None

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
        pa, _, _ = pyarrow_modules()
        columns = list(columns)
        self._files.check_types(columns)
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        parts = []
        g = first
        while g < len(self._files.group_rows) and self._offsets[g] < stop:
            table = self._files.read_group(g, columns, self.n_rows)
            lo = max(start - int(self._offsets[g]), 0)
            hi = min(stop - int(self._offsets[g]), table.num_rows)
            parts.append(table.slice(lo, hi - lo))
            g += 1
        if not parts:
            table = self._files.schema.empty_table().select(columns)
        else:
            table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        for name in self._categories.intersection(columns):
            i = table.schema.get_field_index(name)
            if not pa.types.is_dictionary(table.schema.field(i).type):
                table = table.set_column(i, name, table.column(i).dictionary_encode())
        return table

    @property
    def has_sessions(self) -> bool:
        return self.session is not None

    def _check_fit(self) -> None:
        if not self.target:
            raise ValueError(
                "The ParquetSource passed to fit has no target columns; pass "
                "target=[...] (one label column per task)."
            )
        if not self.features:
            raise ValueError("The ParquetSource has no feature columns.")
        if self.n_rows < 2:
            raise ValueError(
                f"Found {self.n_rows} sample(s) in the Parquet data; at least "
                "2 are needed."
            )

    def _check_predict(self) -> None:
        # As for a DataFrame without rows: an error, not an empty result,
        # so that a writer never replaces an earlier output with nothing.
        if self.n_rows == 0:
            raise ValueError(
                f"The Parquet data at {self.path!r} has no rows; there is "
                "nothing to predict."
            )

    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        """The classes and names of the target columns (one pass over them)."""
        self._check_fit()
        frames = (
            to_pandas(self.read_block(i, self.target)) for i in range(self.n_blocks)
        )
        self._classes = label_classes(frames)
        return self._classes

    def _rows(self, start: int, stop: int) -> Block:
        meta = [c for c in (self.session, self.time, self.sample_weight) if c]
        frame = to_pandas(
            self._read_rows(start, stop, [*self.features, *self.target, *meta])
        )
        n = len(frame)
        y01 = None
        if self.target:
            classes = None if self._classes is None else self._classes[0]
            y01 = binarize_labels(frame[self.target], classes).astype(np.float32)
        return Block(
            X=frame[self.features],
            y01=y01,
            session_ids=None
            if self.session is None
            else check_metadata(
                frame[self.session], n, name="session_ids", sortable=False
            ),
            timestamps=None
            if self.time is None
            else check_metadata(frame[self.time], n, name="timestamps", sortable=True),
            sample_weight=None
            if self.sample_weight is None
            else check_sample_weight(
                frame[self.sample_weight],
                n,
                len(self.target),
                name=f"Column {self.sample_weight!r} (sample_weight)",
                all_rows=False,
            ),
        )

    def session_bounds(self) -> list[tuple[int, int]]:
        """Row ranges of about ``block_rows`` rows that never split a session.

        The data must be sorted by session, then time (session ids
        non-decreasing, times non-decreasing within a session); this is
        verified while reading, and a row that breaks the order is a
        ``ValueError`` that names it and says how to sort the data.

        Returns
        -------
        bounds : list of (int, int)
            ``(start, stop)`` row ranges covering every row in order; without
            a session column (every row its own session), the blocks.
        """
        if self.session is None:
            return super().session_bounds()
        order = [c for c in (self.session, self.time) if c is not None]
        frames = (to_pandas(self.read_block(i, order)) for i in range(self.n_blocks))
        keys = (
            (f[self.session].to_numpy(), None if self.time is None else f[self.time])
            for f in frames
        )
        by = self.session if self.time is None else f"{self.session}, {self.time}"
        how = (
            f"Sort it once, e.g. pyarrow.dataset.dataset(path).sort_by("
            f"[({self.session!r}, 'ascending')"
            + ("" if self.time is None else f", ({self.time!r}, 'ascending')")
            + "]), and write it again."
        )
        return sorted_session_bounds(
            keys,
            self.block_rows,
            what=f"The Parquet data must be sorted by ({by}) for session-wise reading",
            how=how,
            session=self.session,
        )


def _is_time_type(kind: Any) -> bool:
    pa, _, _ = pyarrow_modules()
    return bool(
        pa.types.is_floating(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
    )


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
        The Parquet file to write (replaced if it exists). It is written under
        a temporary name beside it and renamed at the end, so an interrupted
        run leaves no truncated file.
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
        clash with a probability column, or the source has no rows (the
        file at ``path`` is then left as it was).

    Notes
    -----
    The probability of task ``k`` is in the column ``"<task name>_proba"``
    (float64), as ``estimator.predict_proba(source)[:, k]``; the kept
    columns keep the source's types.
    """
    pa, _, pq = pyarrow_modules()
    check_is_fitted(estimator)
    keep = _names(keep_columns, "keep_columns")
    missing = [c for c in keep if c not in source.columns]
    if missing:
        raise ValueError(
            f"keep_columns names {missing}, which the Parquet data does not have."
        )
    names = [f"{t}_proba" for t in estimator.task_names_]
    clash = sorted(set(names) & set(keep))
    if clash:
        raise ValueError(f"keep_columns {clash} clash with the probability columns.")
    written = 0
    with replacing(path) as tmp, contextlib.ExitStack() as stack:
        writer = None
        for b, logits in enumerate(estimator._iter_logits(source)):
            kept = source.read_block(b, keep)
            columns: dict[str, Any] = {c: kept.column(c) for c in keep}
            columns.update({n: expit(logits[:, k]) for k, n in enumerate(names)})
            table = pa.table(columns)
            if writer is None:
                writer = stack.enter_context(pq.ParquetWriter(tmp, table.schema))
            writer.write_table(table)
            written += table.num_rows
    return written


__all__ = ["ParquetSource", "predict_proba_to_parquet"]
