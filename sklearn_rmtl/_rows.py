"""Where a fit reads its rows: blocks of rows, and chunks of whole sessions.

Every phase of a fit (the encoder's statistics, the hold-out rule,
pretraining, the session MDP, the critics, the refit, retraining on all
rows) and prediction read their rows through :class:`Rows`, whatever holds
them. Arrays and DataFrames in memory are :class:`ArrayRows`: one block (a
fit) or blocks of a fixed size (prediction, to bound the encoded copy); a
:class:`~sklearn_rmtl.parquet.ParquetSource` reads a Parquet dataset block
by block. A block arrives validated, in one form: features as given, labels
as 0/1 floats with NaN where missing, checked sessions, times and weights.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_consistent_length

from sklearn_rmtl._encoding import check_features
from sklearn_rmtl._validation import (
    _observed_labels,
    binarize_labels,
    check_metadata,
    check_multitask_target,
    check_sample_weight,
)


@dataclass
class Block:
    """Consecutive rows of a source, validated.

    Attributes
    ----------
    X : DataFrame or ndarray of shape (n_rows, n_features)
        The features, as the source holds them.
    y01 : ndarray of shape (n_rows, n_tasks), dtype float32, or None
        1 for a task's positive label, 0 for its negative one, NaN where the
        label is missing; None when the source has no labels.
    session_ids, timestamps : ndarray of shape (n_rows,) or None
        Checked by :func:`~sklearn_rmtl._validation.check_metadata`.
    sample_weight : ndarray of shape (n_rows, n_tasks), or None
        Non-negative row and task weights, float64 (see
        :func:`~sklearn_rmtl._validation.check_sample_weight`).
    """

    X: Any
    y01: np.ndarray | None = None
    session_ids: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    sample_weight: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])


class Rows(abc.ABC):
    """Rows read in blocks (every pass) and in chunks of whole sessions (the MDP).

    Attributes
    ----------
    n_rows : int
        Number of rows.
    block_rows : int
        Rows per block; block ``i`` holds rows ``i * block_rows`` to
        ``(i + 1) * block_rows`` (fewer in the last).
    n_blocks : int
        Number of blocks (at least 1).

    Notes
    -----
    The reading methods are private: a public source (``ParquetSource``)
    implements them for the package's phases, and users reach its rows
    through the estimators.
    """

    n_rows: int
    block_rows: int
    n_blocks: int

    @abc.abstractmethod
    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        """``classes`` (n_tasks, 2) and ``task_names`` (n_tasks,) of the labels.

        Raises the label errors of an in-memory ``y`` (see
        :func:`~sklearn_rmtl._validation.check_multitask_target`).
        """

    def _block(self, i: int) -> Block:
        """Block ``i``, validated, with labels as 0/1 under :meth:`_labels`."""
        start = i * self.block_rows
        return self._rows(start, min(start + self.block_rows, self.n_rows))

    @abc.abstractmethod
    def _rows(self, start: int, stop: int) -> Block:
        """Rows ``start`` to ``stop`` as one :class:`Block`."""

    def session_bounds(self) -> list[tuple[int, int]]:
        """Row ranges that never split a session, covering every row in order.

        Without sessions, where every row is a session of its own: the blocks.
        """
        return [
            (i * self.block_rows, min((i + 1) * self.block_rows, self.n_rows))
            for i in range(self.n_blocks)
        ]

    @property
    def has_sessions(self) -> bool:
        """Whether the rows carry session ids."""
        return False

    def _untrained_note(self, task: int) -> str:
        """What to add to the error of task ``task`` having no label to train on."""
        return ""


class ArrayRows(Rows):
    """Rows held in memory: arrays, DataFrames (pandas, polars, pyarrow).

    Validates everything once, in the order and with the messages of an
    in-memory ``fit``.

    Parameters
    ----------
    X : {DataFrame, array-like} of shape (n_samples, n_features)
        Features.
    y : {array-like, DataFrame} of shape (n_samples, n_tasks), default=None
        Labels (missing ones NaN, None or ``pd.NA``); None for prediction.
    block_rows : int, default=None
        Rows per block; None: one block (a fit keeps its rows encoded once).
    session_ids, timestamps : array-like of shape (n_samples,), default=None
        Session and time of each row.
    sample_weight : array-like of shape (n_samples,) or (n_samples, n_tasks), \
            default=None
        Non-negative weights.
    """

    def __init__(
        self,
        X: Any,
        y: Any = None,
        *,
        block_rows: int | None = None,
        session_ids: Any = None,
        timestamps: Any = None,
        sample_weight: Any = None,
    ) -> None:
        self.X = check_features(X)
        self.n_rows = int(self.X.shape[0])
        self.y01: np.ndarray | None = None
        if y is not None:
            self.y01, self._classes, self._task_names = check_multitask_target(y)
            check_consistent_length(self.X, self.y01)
            if self.n_rows < 2:
                raise ValueError(
                    f"Found 1 sample (n_samples = {self.n_rows}); at least 2 are "
                    "needed."
                )
        self.session_ids = check_metadata(
            session_ids, self.n_rows, name="session_ids", sortable=False
        )
        self.timestamps = check_metadata(
            timestamps, self.n_rows, name="timestamps", sortable=True
        )
        n_tasks = 1 if self.y01 is None else self.y01.shape[1]
        self.sample_weight = check_sample_weight(
            sample_weight,
            self.n_rows,
            n_tasks,
            task_names=None if self.y01 is None else self._task_names,
        )
        self.block_rows = max(1, self.n_rows if block_rows is None else block_rows)
        self.n_blocks = max(1, -(-self.n_rows // self.block_rows))

    @property
    def has_sessions(self) -> bool:
        return self.session_ids is not None

    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        if self.y01 is None:
            raise ValueError("These rows have no labels.")
        return self._classes, self._task_names

    def _rows(self, start: int, stop: int) -> Block:
        whole = start == 0 and stop == self.n_rows  # no copies of a fit's rows

        def part(a: Any) -> Any:
            if a is None or whole:
                return a
            return a.iloc[start:stop] if isinstance(a, pd.DataFrame) else a[start:stop]

        return Block(
            X=part(self.X),
            y01=part(self.y01),
            session_ids=part(self.session_ids),
            timestamps=part(self.timestamps),
            sample_weight=part(self.sample_weight),
        )

    def session_bounds(self) -> list[tuple[int, int]]:
        # The MDP orders rows by session and time itself: in memory one
        # chunk holds every session, in any row order.
        return [(0, self.n_rows)]


def sorted_session_bounds(
    keys: Iterable[tuple[np.ndarray, Any]],
    block_rows: int,
    *,
    what: str,
    how: str,
    session: str,
) -> list[tuple[int, int]]:
    """Cut rows sorted by (session, time) into ranges of whole sessions.

    Each block is cut after its last complete session and the rest is
    carried into the next range, so a range holds about ``block_rows`` rows,
    more when a session is longer.

    Parameters
    ----------
    keys : iterable of (ndarray, array-like or None)
        Each block's session ids and times (None: no times), in row order.
    block_rows : int
        Rows per block (the last may have fewer).
    what, how : str
        The error's statement of the required order and how to reach it.
    session : str
        The name of the session ids, for the error of ids that do not compare.

    Returns
    -------
    bounds : list of (int, int)
        ``(start, stop)`` ranges covering every row in order.

    Raises
    ------
    ValueError
        If a row comes before the row above it; the message gives its number.
    """
    bounds: list[tuple[int, int]] = []
    start, stop, cut = 0, 0, 0  # the range's start, the rows read, a cut
    previous: tuple[Any, Any] | None = None
    for sessions, times in keys:
        t = None if times is None else np.asarray(times)
        s, first = sessions, stop
        if previous is not None:  # order across the blocks' boundary too
            s = np.concatenate([[previous[0]], s])
            t = None if t is None else np.concatenate([[previous[1]], t])
            first -= 1
        try:
            back = s[1:] < s[:-1]
        except TypeError as exc:
            raise ValueError(
                f"Session ids of column {session!r} cannot be compared ({exc}); "
                "give them one type (e.g. all strings)."
            ) from exc
        if t is not None:
            back |= (s[1:] == s[:-1]) & (t[1:] < t[:-1])
        if back.any():
            row = first + int(np.flatnonzero(back)[0]) + 1
            raise ValueError(
                f"{what}, but row {row} (counting from 0) comes before the row "
                f"above it. {how}"
            )
        previous = (s[-1], None if t is None else t[-1])
        if cut > start:  # the previous block's cut: it was not the last
            bounds.append((start, cut))
            start = cut
        # The last session may continue in the next block: hold it back.
        earlier = np.flatnonzero(sessions != sessions[-1])
        cut = stop + int(earlier[-1]) + 1 if len(earlier) else start
        stop += len(sessions)
    if stop > start:
        bounds.append((start, stop))
    return bounds


def label_classes(frames: Iterable[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """The classes and task names of labels read in blocks (DataFrames).

    The checks of an in-memory ``y`` (label types, two labels per task, a
    task with no observed label) apply to every task's distinct observed
    labels, as soon as a task has more than two.
    """
    seen: list[Any] = []
    names: list[str] = []
    for y in frames:
        names = [str(c) for c in y.columns]
        seen = seen or [np.empty(0) for _ in names]
        for k in range(y.shape[1]):
            values = _observed_labels(y.iloc[:, k])[0]
            seen[k] = np.asarray(pd.unique(np.concatenate([seen[k], values])))
        if max(len(v) for v in seen) > 2:
            _classes_of(names, seen)  # raises the in-memory label errors
    return _classes_of(names, seen)


def _classes_of(names: list[str], seen: list[np.ndarray]) -> tuple[Any, Any]:
    # Every task's distinct labels side by side: the in-memory checks.
    size = max(len(v) for v in seen)
    frame = pd.DataFrame(
        {
            name: pd.Series(np.resize(v, size) if len(v) else np.full(size, np.nan))
            for name, v in zip(names, seen, strict=True)
        }
    )
    _, classes, task_names = check_multitask_target(frame)
    return classes, task_names


def labeled_rows(
    X: Any,
    y: Any,
    classes: np.ndarray,
    task_names: np.ndarray,
    *,
    session_ids: Any,
    timestamps: Any,
) -> tuple[Any, np.ndarray]:
    """Checked rows X and their labels for a fitted model's tasks (``loss_weights``).

    Returns X checked by :func:`~sklearn_rmtl._encoding.check_features` and y
    as float32 0/1 codes of ``classes``, NaN where a label is missing, its
    columns matched to ``task_names`` by name; ``session_ids`` and
    ``timestamps`` are checked for length and type only. Rows in memory
    only: a source (``ParquetSource``) is refused.
    """
    if isinstance(X, Rows):
        raise TypeError(
            f"loss_weights takes rows in memory (X and y), not a "
            f"{type(X).__name__}: sources are not accepted there. Read the rows "
            "to weigh into a DataFrame first (e.g. pandas.read_parquet with the "
            "columns you need) and pass its features as X and its labels as y."
        )
    X = check_features(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one-class tasks are fine
        check_multitask_target(y)
    y01 = binarize_labels(y, classes, task_names).astype(np.float32)
    n = y01.shape[0]
    if X.shape[0] != n:
        raise ValueError(f"X has {X.shape[0]} rows but y has {n}; they must match.")
    check_metadata(session_ids, n, name="session_ids", sortable=False)
    check_metadata(timestamps, n, name="timestamps", sortable=True)
    return X, y01
