"""Temporal, session-preserving data splits (paper Sec. 3.1.3).

The paper splits every data set 6:2:2 into train, validation and test parts
by timestamp. :func:`temporal_train_test_split` does that split once;
:class:`TemporalSplit` and :class:`SessionTimeSeriesSplit` are cross-validation
splitters for :func:`~sklearn.model_selection.cross_validate` and
:class:`~sklearn.model_selection.GridSearchCV`. All keep sessions whole and
order them by their first timestamp. :class:`PerTaskThresholdClassifier`
sets a decision threshold per task, as scikit-learn's
:class:`~sklearn.model_selection.FixedThresholdClassifier` does for one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from itertools import chain
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import _safe_indexing, indexable
from sklearn.utils.validation import _num_samples

from sklearn_rmtl._thresholds import PerTaskThresholdClassifier
from sklearn_rmtl._validation import check_metadata

__all__ = [
    "PerTaskThresholdClassifier",
    "SessionTimeSeriesSplit",
    "TemporalSplit",
    "temporal_train_test_split",
]


# ---------------------------------------------------------------------------
# Session ordering shared by the function and the splitters
# ---------------------------------------------------------------------------


def _session_ranks(
    n_samples: int, session_ids: Any, timestamps: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each row's session in start order, and rows per ranked session.

    A session starts at its earliest timestamp; ties (and missing
    ``timestamps``) fall back to the position of the rows. Without
    ``session_ids`` every row is its own session.

    Returns
    -------
    row_rank : ndarray of shape (n_samples,)
        0-based rank, by start time, of the session of each row.
    sizes : ndarray of shape (n_sessions,)
        Number of rows of the session of each rank.
    """
    times = check_metadata(timestamps, n_samples, name="timestamps", sortable=True)
    sessions = check_metadata(
        session_ids, n_samples, name="session_ids", sortable=False
    )
    if sessions is None:
        codes = np.arange(n_samples)
    else:
        codes, _ = pd.factorize(sessions)
    n_sessions = int(codes.max()) + 1 if n_samples else 0
    time_order = (
        np.arange(n_samples) if times is None else np.argsort(times, kind="stable")
    )
    # Codes are 0..n_sessions-1, so `first[code]` is the session's start rank.
    _, first = np.unique(codes[time_order], return_index=True)
    session_rank = np.empty(n_sessions, dtype=np.intp)
    session_rank[np.argsort(first)] = np.arange(n_sessions)
    row_rank = session_rank[codes]
    return row_rank, np.bincount(row_rank, minlength=n_sessions)


def _cut_by_rows(sizes: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Part of each ranked session so that parts hold ~``fractions`` of rows.

    A session goes to the part in which the middle of its rows falls, so the
    cut points land on the session boundaries nearest to the requested ones.
    """
    # Rounded so that float noise in the fractions cannot move a tie.
    bounds = np.round(np.cumsum(fractions)[:-1] * sizes.sum(), 9)
    middle = np.cumsum(sizes) - sizes / 2
    return np.searchsorted(bounds, middle, side="right")


def _session_ids_from(groups: Any, session_ids: Any) -> Any:
    """Session ids given as ``groups`` (routing off) or ``session_ids``."""
    if groups is None:
        return session_ids
    if session_ids is None:
        return groups
    if not np.array_equal(
        np.asarray(groups, dtype=object), np.asarray(session_ids, dtype=object)
    ):
        raise ValueError(
            "groups and session_ids were both given and differ; pass the session "
            "ids once, as groups or as session_ids."
        )
    return session_ids


def _check_fraction(value: Any, name: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        not isinstance(value, Real)
        or isinstance(value, bool)
        or not 0 < float(value) < 1
    ):
        raise ValueError(f"{name} must be a float in (0, 1), got {value!r}.")


# ---------------------------------------------------------------------------
# One-off split
# ---------------------------------------------------------------------------


def temporal_train_test_split(
    *arrays: Any,
    timestamps: Any,
    session_ids: Any = None,
    sizes: Sequence[float] = (0.6, 0.2, 0.2),
) -> list[Any]:
    """Split arrays into train, validation and test parts by time.

    The paper's protocol: rows are ordered by timestamp and cut 6:2:2, the
    earliest part for training, the next for validation (early stopping,
    model selection) and the latest for testing.

    Parameters
    ----------
    *arrays : sequence of indexables with same length / shape[0]
        Lists, ndarrays, sparse matrices or DataFrames to split alike.
        Include ``session_ids`` and ``timestamps`` here too when the parts
        need them, e.g. for ``fit``.
    timestamps : array-like of shape (n_samples,) or None
        Time of each row, numbers or datetimes. ``None`` means the rows are
        already in time order.
    session_ids : array-like of shape (n_samples,), default=None
        Session of each row. When given, whole sessions are assigned to one
        part by their first timestamp, so that no session straddles two
        parts; the part sizes then hold approximately.
    sizes : sequence of float, default=(0.6, 0.2, 0.2)
        Fractions of rows in each part, earliest first; positive and summing
        to 1. Two or more parts are allowed: ``(0.8, 0.2)`` gives a plain
        train/test split.

    Returns
    -------
    splitting : list, length=len(sizes) * len(arrays)
        The parts of each array in turn: ``train, valid, test`` of the first
        array, then of the second, and so on. Each part keeps the original
        row order and the input type (DataFrames keep their index).

    See Also
    --------
    TemporalSplit : The same cut as a cross-validation splitter.
    sklearn.model_selection.train_test_split : The shuffled counterpart.

    Notes
    -----
    Sessions are ordered by their first timestamp (ties by their first row)
    and assigned to the part in which the middle of their rows falls, so
    every session in an earlier part starts no later than any session of a
    later part, and each part's row count is as close to its share as whole
    sessions allow. Later rows of a long session may be later than the
    first rows of the next part's sessions.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.model_selection import temporal_train_test_split
    >>> X = np.arange(20).reshape(10, 2)
    >>> t = np.array([0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
    >>> X_train, X_valid, X_test = temporal_train_test_split(X, timestamps=t)
    >>> X_train[:, 0], X_valid[:, 0], X_test[:, 0]
    (array([ 0,  4,  8, 12, 16, 18]), array([10, 14]), array([2, 6]))

    Whole sessions, with the session ids split alongside ``X``:

    >>> s = np.array([0, 0, 1, 1, 1, 2, 2, 3, 4, 4])
    >>> parts = temporal_train_test_split(
    ...     X, s, timestamps=np.arange(10), session_ids=s
    ... )
    >>> s_train, s_valid, s_test = parts[3:]
    >>> s_train, s_valid, s_test
    (array([0, 0, 1, 1, 1]), array([2, 2, 3]), array([4, 4]))
    """
    if not arrays:
        raise ValueError("At least one array is required as input.")
    arrays_ = indexable(*arrays)
    n_samples = _num_samples(arrays_[0])
    if n_samples == 0:
        raise ValueError("The arrays are empty; at least one row is required.")
    fractions = _check_sizes(sizes)
    row_rank, session_sizes = _session_ranks(n_samples, session_ids, timestamps)
    part = _cut_by_rows(session_sizes, fractions)[row_rank]
    counts = np.bincount(part, minlength=len(fractions))
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise ValueError(
            f"Splitting {n_samples} rows in {session_sizes.size} sessions with "
            f"sizes={tuple(sizes)} leaves part(s) {empty} empty; more rows or "
            "sessions are needed."
        )
    indices = [np.flatnonzero(part == j) for j in range(len(fractions))]
    return list(
        chain.from_iterable(
            [_safe_indexing(array, idx) for idx in indices] for array in arrays_
        )
    )


def _check_sizes(sizes: Any) -> list[float]:
    try:
        fractions = [float(s) for s in sizes]
    except (TypeError, ValueError):
        raise ValueError(
            f"sizes must be a sequence of fractions, got {sizes!r}."
        ) from None
    if len(fractions) < 2 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-8:
        raise ValueError(
            "sizes must hold at least two positive fractions summing to 1, got "
            f"{tuple(sizes)!r}."
        )
    return fractions


# ---------------------------------------------------------------------------
# Cross-validation splitters
# ---------------------------------------------------------------------------


class _SessionSplitter(BaseCrossValidator):
    """Shared metadata handling of the session-preserving temporal splitters."""

    # Requested by default so that, with metadata routing on, the session ids
    # and timestamps passed as `params=` reach `split` without
    # `set_split_request`. With routing off sklearn passes `groups` only.
    __metadata_request__split = {
        "groups": True,
        "session_ids": True,
        "timestamps": True,
    }

    def split(
        self,
        X: Any,
        y: Any = None,
        groups: Any = None,
        *,
        session_ids: Any = None,
        timestamps: Any = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Generate the indices of the training and test folds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; only its number of rows is used.
        y : array-like, default=None
            Ignored, exists for compatibility.
        groups : array-like of shape (n_samples,), default=None
            Session id of each row (the only metadata scikit-learn passes
            without metadata routing).
        session_ids : array-like of shape (n_samples,), default=None
            Session id of each row; same as ``groups``.
        timestamps : array-like of shape (n_samples,), default=None
            Time of each row (numbers or datetimes). ``None``: row order.

        Yields
        ------
        train : ndarray
            The training set indices for that split.
        test : ndarray
            The testing set indices for that split.
        """
        if X is None:
            raise ValueError(f"{type(self).__name__}.split needs X to count rows.")
        sessions = _session_ids_from(groups, session_ids)
        row_rank, sizes = _session_ranks(_num_samples(X), sessions, timestamps)
        yield from self._folds(row_rank, sizes)

    def get_n_splits(
        self,
        X: Any = None,
        y: Any = None,
        groups: Any = None,
        *,
        session_ids: Any = None,
        timestamps: Any = None,
    ) -> int:
        """Return the number of folds.

        Parameters
        ----------
        X : object, default=None
            Ignored, exists for compatibility.
        y : object, default=None
            Ignored, exists for compatibility.
        groups : object, default=None
            Ignored, exists for compatibility.
        session_ids : object, default=None
            Ignored; accepted because search estimators pass the metadata
            routed to ``split`` here as well.
        timestamps : object, default=None
            Ignored, as ``session_ids``.

        Returns
        -------
        n_splits : int
            The number of folds.
        """
        return self._n_folds()

    @abstractmethod
    def _n_folds(self) -> int:
        """The number of folds of this splitter."""

    @abstractmethod
    def _folds(
        self, row_rank: np.ndarray, sizes: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Train/test indices from each row's session rank and session sizes."""


class TemporalSplit(_SessionSplitter):
    """One temporal train/test fold with whole sessions: the paper's split.

    Sessions are ordered by their first timestamp; the earliest
    ``train_size`` of the rows form the training fold and the following
    ``test_size`` the test fold, cut at session boundaries. By default the
    model trains on the paper's train and validation parts (the first 80 %)
    and is tested on the latest 20 %; the estimator's own early stopping
    holds out the latest rows it is given (``validation_fraction=0.25``
    reproduces 6:2:2 exactly).

    Parameters
    ----------
    train_size : float, default=None
        Fraction of rows in the training fold. ``None`` means all rows
        before the test fold, ``1 - test_size``. With ``train_size=0.6,
        test_size=0.2`` the fold trains on the paper's training part, scores
        on its validation part and leaves the test part unused, for
        hyper-parameter search that never sees the test rows.
    test_size : float, default=0.2
        Fraction of rows in the test fold, which directly follows the
        training fold.

    See Also
    --------
    temporal_train_test_split : The same ordering as a one-off split.
    SessionTimeSeriesSplit : Several expanding-window folds.

    Notes
    -----
    Session ids and timestamps reach :meth:`split` in one of two ways:

    - with ``sklearn.set_config(enable_metadata_routing=True)``, pass
      ``params={"session_ids": s, "timestamps": t}`` to ``cross_validate``
      (or the same keywords to ``GridSearchCV.fit``); ``split`` requests
      ``session_ids``, ``groups`` and ``timestamps`` by default;
    - without routing, scikit-learn passes only ``groups``: give the session
      ids as ``groups=s``, and rows are then taken to be in time order.

    Without session ids every row is its own session. Splitter objects are
    parameters only, so they clone and nest like scikit-learn's own.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.model_selection import TemporalSplit
    >>> X = np.zeros((10, 1))
    >>> s = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    >>> for train, test in TemporalSplit().split(X, groups=s):
    ...     print(train, test)
    [0 1 2 3 4 5 6 7] [8 9]
    >>> cv = TemporalSplit(train_size=0.6, test_size=0.2)
    >>> [test for _, test in cv.split(X, groups=s)]
    [array([6, 7])]
    """

    def __init__(self, *, train_size: float | None = None, test_size: float = 0.2):
        self.train_size = train_size
        self.test_size = test_size

    def _fractions(self) -> list[float]:
        _check_fraction(self.train_size, "train_size", allow_none=True)
        _check_fraction(self.test_size, "test_size")
        train = 1 - self.test_size if self.train_size is None else self.train_size
        rest = 1 - train - self.test_size
        if rest < -1e-8:
            raise ValueError(
                f"train_size + test_size must be at most 1, got "
                f"{self.train_size} + {self.test_size}."
            )
        return [train, self.test_size, max(rest, 0.0)]

    def _n_folds(self) -> int:
        return 1

    def _folds(
        self, row_rank: np.ndarray, sizes: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        fractions = self._fractions()
        part = _cut_by_rows(sizes, fractions)[row_rank]
        train, test = np.flatnonzero(part == 0), np.flatnonzero(part == 1)
        if train.size == 0 or test.size == 0:
            fold = "training" if train.size == 0 else "test"
            raise ValueError(
                f"{self!r} leaves the {fold} fold empty with {sizes.size} "
                "sessions; more sessions are needed."
            )
        yield train, test


class SessionTimeSeriesSplit(_SessionSplitter):
    """Expanding-window time-series folds over whole sessions.

    Like :class:`~sklearn.model_selection.TimeSeriesSplit`, but the units are
    sessions ordered by their first timestamp: fold ``i`` tests on the
    ``i``-th block of later sessions and trains on all (or the last
    ``max_train_size``) sessions before it, so training sessions always start
    no later than test sessions and no session is split.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    max_train_size : int, default=None
        Maximum number of sessions in a training fold (a sliding instead of
        an expanding window).
    test_size : int, default=None
        Number of sessions in each test fold. ``None``:
        ``n_sessions // (n_splits + 1)``.
    gap : int, default=0
        Number of sessions left out between each training and test fold.

    See Also
    --------
    TemporalSplit : The paper's single temporal fold.
    sklearn.model_selection.TimeSeriesSplit : The row-level counterpart.

    Notes
    -----
    Sizes count sessions, not rows, so folds of sessions of unequal length
    hold unequal numbers of rows. Session ids and timestamps are passed as
    for :class:`TemporalSplit`: through metadata routing as ``session_ids``
    (or ``groups``) and ``timestamps``, or, without routing, as ``groups``
    with rows in time order. Without session ids each row is a session.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.model_selection import SessionTimeSeriesSplit
    >>> X = np.zeros((8, 1))
    >>> s = np.array([0, 0, 1, 2, 2, 2, 3, 3])
    >>> cv = SessionTimeSeriesSplit(n_splits=3)
    >>> for train, test in cv.split(X, groups=s):
    ...     print(train, test)
    [0 1] [2]
    [0 1 2] [3 4 5]
    [0 1 2 3 4 5] [6 7]
    """

    def __init__(
        self,
        n_splits: int = 5,
        *,
        max_train_size: int | None = None,
        test_size: int | None = None,
        gap: int = 0,
    ):
        self.n_splits = n_splits
        self.max_train_size = max_train_size
        self.test_size = test_size
        self.gap = gap

    def _check_params(self) -> None:
        checks = [
            ("n_splits", self.n_splits, 2, False),
            ("max_train_size", self.max_train_size, 1, True),
            ("test_size", self.test_size, 1, True),
            ("gap", self.gap, 0, False),
        ]
        for name, value, low, allow_none in checks:
            if value is None and allow_none:
                continue
            if (
                not isinstance(value, Integral)
                or isinstance(value, bool)
                or value < low
            ):
                kind = "None or an int" if allow_none else "an int"
                raise ValueError(f"{name} must be {kind} >= {low}, got {value!r}.")

    def _n_folds(self) -> int:
        self._check_params()
        return int(self.n_splits)

    def _folds(
        self, row_rank: np.ndarray, sizes: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self._check_params()
        n_sessions, n_splits = sizes.size, int(self.n_splits)
        if n_splits + 1 > n_sessions:
            raise ValueError(
                f"Cannot make n_splits={n_splits} folds from {n_sessions} "
                "sessions; at least n_splits + 1 sessions are needed."
            )
        test_size = (
            n_sessions // (n_splits + 1) if self.test_size is None else self.test_size
        )
        if n_sessions - self.gap - test_size * n_splits <= 0:
            raise ValueError(
                f"Too many splits: n_splits={n_splits} with test_size={test_size} "
                f"sessions and gap={self.gap} leave no training sessions among "
                f"{n_sessions}."
            )
        window = n_sessions if self.max_train_size is None else self.max_train_size
        first_test = n_sessions - n_splits * test_size
        for start in range(first_test, n_sessions, test_size):
            end = start - self.gap
            train = (row_rank >= max(0, end - window)) & (row_rank < end)
            test = (row_rank >= start) & (row_rank < start + test_size)
            yield np.flatnonzero(train), np.flatnonzero(test)
