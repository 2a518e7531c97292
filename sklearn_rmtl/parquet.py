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

import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._rows import Block, Rows, label_classes, sorted_session_bounds
from sklearn_rmtl._validation import (
    binarize_labels,
    check_metadata,
    check_sample_weight,
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
        self._offsets: np.ndarray = np.concatenate(
            [[0], np.cumsum(rows, dtype=np.int64)]
        )
        self.n_rows = int(self._offsets[-1])
        self.n_blocks = -(-self.n_rows // self.block_rows)
        self._cache: tuple[Any, Any] | None = None
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
    pa, _, _ = _pyarrow()
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
        clash with a probability column.

    Notes
    -----
    The probability of task ``k`` is in the column ``"<task name>_proba"``
    (float64), as ``estimator.predict_proba(source)[:, k]``; the kept
    columns keep the source's types.
    """
    pa, _, pq = _pyarrow()
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
    target = os.fspath(path)
    tmp = os.path.join(
        os.path.dirname(target), f".tmp-{os.getpid()}-{os.path.basename(target)}"
    )
    written, writer = 0, None
    try:
        for b, logits in enumerate(estimator._iter_logits(source)):
            kept = source.read_block(b, keep)
            columns: dict[str, Any] = {c: kept.column(c) for c in keep}
            columns.update({n: expit(logits[:, k]) for k, n in enumerate(names)})
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            written += table.num_rows
        if writer is not None:
            writer.close()
            writer = None
            os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return written


__all__ = ["ParquetSource", "predict_proba_to_parquet"]
