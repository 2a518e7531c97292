"""Per-row histories of earlier items, built without looking at the row or later.

A row's history is the sequence of items its user interacted with strictly
before the row's time (the behaviour sequence of DIN-style models). Building
it per row with a Python loop is slow and easy to get wrong at equal
timestamps; :func:`history_column` does it with one sort:

1. order the rows by (user, time, item);
2. in that order, the rows of a user are contiguous and the rows of one
   (user, time) pair form a *tie block*; a row's history is the run of items
   from the user's first row up to (not including) the first row of its tie
   block, cut to its last ``max_len`` items;
3. that run is a contiguous slice of the sorted item array, so each row's
   history is a read-only view of one shared array: no copy per row, memory
   O(n_rows) rather than O(n_rows * max_len).
"""

from __future__ import annotations

from collections.abc import Hashable
from numbers import Integral
from typing import Any, cast

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, validate_params

from sklearn_rmtl._validation import to_pandas


def _is_column_label(key: Any) -> bool:
    """A key names a column unless it is a 1-D array-like (array, Series, list)."""
    if isinstance(key, str | bytes | tuple):
        return True  # tuples label the columns of a MultiIndex
    # Arrays, Series and lists are unhashable; a hashable scalar is a label.
    return isinstance(key, Hashable) and np.ndim(cast(Any, key)) == 0


def _as_pandas_frame(frame: Any, keys: list[Any]) -> pd.DataFrame | None:
    """``frame`` as pandas; of a polars / pyarrow table, only the named columns."""
    if frame is None or isinstance(frame, pd.DataFrame):
        return frame
    labels = list(dict.fromkeys(k for k in keys if _is_column_label(k)))
    if not labels:
        return pd.DataFrame(index=pd.RangeIndex(len(frame)))
    converted = to_pandas(frame.select(labels) if hasattr(frame, "select") else frame)
    if not isinstance(converted, pd.DataFrame):
        raise ValueError(
            f"frame must be a DataFrame or None, got {type(frame).__name__}."
        )
    return converted


def _key_values(frame: Any, key: Any, param: str, n_rows: int | None) -> pd.Series:
    """The values of ``key``: a column of ``frame`` or a 1-D array of n_rows."""
    if _is_column_label(key):
        if frame is None:
            raise ValueError(
                f"{param}={key!r} names a column, but frame is None; pass a "
                f"DataFrame, or pass {param} as an array of values."
            )
        if key not in frame.columns:
            raise ValueError(
                f"{param}={key!r} is not a column of frame; its columns are "
                f"{[c for c in frame.columns][:20]}."
            )
        values = frame[key]
        if isinstance(values, pd.DataFrame):
            raise ValueError(f"{param}={key!r} names several columns of frame.")
        return values.reset_index(drop=True)
    values = to_pandas(key)
    if np.ndim(values) != 1:
        raise ValueError(
            f"{param} must be a column label or a 1-D array of values, got an "
            f"array of shape {np.shape(values)}."
        )
    if n_rows is not None and len(values) != n_rows:
        expected = "frame has" if frame is not None else "user has"
        raise ValueError(
            f"{param} has {len(values)} values but {expected} {n_rows}; pass "
            "one value per row."
        )
    # Taken by position: an index of a Series ``key`` is not aligned to frame.
    if isinstance(values, pd.Series | pd.Index):
        return pd.Series(values.array, copy=False)
    return pd.Series(np.asarray(values) if not isinstance(values, list) else values)


def _check_missing(values: pd.Series, param: str) -> None:
    missing = values.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"{param} has {int(missing.sum())} missing values (the first at "
            f"position {first}); a row without {param} has no defined history. "
            "Drop or fill those rows first."
        )


def _time_ranks(values: pd.Series) -> np.ndarray:
    """Dense ranks of the times (equal times, equal ranks)."""
    dtype = values.dtype
    if not (
        pd.api.types.is_datetime64_any_dtype(dtype)
        or (
            pd.api.types.is_numeric_dtype(dtype)
            and not pd.api.types.is_bool_dtype(dtype)
        )
    ):
        raise ValueError(
            f"time must hold numbers or datetimes, got dtype {dtype}; convert "
            "text timestamps with pandas.to_datetime first."
        )
    return pd.factorize(values, sort=True)[0]


def _item_ranks(values: pd.Series) -> np.ndarray:
    """Ranks of the items, used only to order items with equal times.

    The order must come from the values, not the input order, so that
    shuffled input gives the same histories. Ids that cannot be compared
    (e.g. tuples and numbers) are ordered by type name, then text.
    """
    try:
        return pd.factorize(values, sort=True)[0]
    except TypeError:
        codes, uniques = pd.factorize(values)
        # One pass over the distinct ids, not the rows.
        keys = uniques.map(lambda u: f"{type(u).__name__}:{u}").to_numpy(dtype=str)
        return np.argsort(np.argsort(keys, kind="stable"))[codes]


def _history_slices(
    user_codes: np.ndarray,
    time_ranks: np.ndarray,
    item_ranks: np.ndarray,
    max_len: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order and, per sorted row, the [lo, hi) slice of its history."""
    n_users, n_times, n_items = (
        int(r.max(initial=-1)) + 1 for r in (user_codes, time_ranks, item_ranks)
    )
    if n_users * n_times * n_items < 2**63:
        # One int64 key sorts about 10 times faster than a 3-key lexsort.
        # Rows with equal keys have equal histories, so no stable sort needed.
        key = (user_codes.astype(np.int64) * n_times + time_ranks) * n_items
        order = np.argsort(key + item_ranks)
    else:
        order = np.lexsort((item_ranks, time_ranks, user_codes))
    user_sorted, time_sorted = user_codes[order], time_ranks[order]
    n_rows = order.shape[0]
    positions = np.arange(n_rows)
    new_user = np.ones(n_rows, dtype=bool)
    new_user[1:] = user_sorted[1:] != user_sorted[:-1]
    new_block = new_user.copy()
    new_block[1:] |= time_sorted[1:] != time_sorted[:-1]
    # Index of the first row of each row's user / tie block, carried forward.
    user_start = np.maximum.accumulate(np.where(new_user, positions, 0))
    # Rows of the same user at the same time share ``hi``: none sees another.
    hi = np.maximum.accumulate(np.where(new_block, positions, 0))
    lo = user_start if max_len is None else np.maximum(user_start, hi - max_len)
    return order, lo, hi


@validate_params(
    {
        "frame": ["array-like", None],
        "user": "no_validation",
        "item": "no_validation",
        "time": "no_validation",
        "max_len": [Interval(Integral, 1, None, closed="left"), None],
        "name": [Hashable, None],
    },
    prefer_skip_nested_validation=True,
)
def history_column(
    frame: Any = None,
    *,
    user: Any,
    item: Any,
    time: Any,
    max_len: int | None = 50,
    name: Hashable | None = None,
) -> pd.Series:
    """Each row's history: the items of the same user at strictly earlier times.

    For every row, collects the ``item`` values of the rows with the same
    ``user`` and a strictly smaller ``time``, oldest first (the most recent
    item is **last**), keeping the last ``max_len``. Rows of one user with
    equal times never see each other, so no row's history holds its own
    event, an event at the same time or a later one. The rows may come in
    any order: the result is aligned to the input rows and equals the result
    of the same rows sorted.

    Parameters
    ----------
    frame : DataFrame, default=None
        The log, one row per event: a pandas DataFrame, or a polars
        DataFrame or pyarrow Table (converted to pandas; needs pyarrow).
        May be None when ``user``, ``item`` and ``time`` are all arrays.
    user : column label or array-like of shape (n_rows,)
        Whose history each row belongs to (a user id; a session id restricts
        the history to the session). A label names a column of ``frame``;
        an array (NumPy, list, pandas or polars Series) gives the values by
        position. Any hashable values; none may be missing.
    item : column label or array-like of shape (n_rows,)
        The id recorded in the histories (e.g. the item id). Missing values
        are rejected.
    time : column label or array-like of shape (n_rows,)
        When each event happened: numbers (e.g. epoch milliseconds) or
        datetimes. Missing values are rejected. Earlier events of the same
        user with equal times are ordered by ``item``.
    max_len : int or None, default=50
        Keep at most this many items per row, the most recent ones; None
        keeps the whole history.
    name : hashable, default=None
        Name of the returned Series; by default ``f"{item}_history"`` when
        ``item`` is a column label, else ``"history"``.

    Returns
    -------
    history : pandas Series of shape (n_rows,), dtype object
        One 1-D NumPy array per row, of the dtype of ``item``'s values
        (e.g. int64, or object for strings), oldest first; an empty array
        for a user's first events. The index is ``frame``'s (a RangeIndex
        without a pandas ``frame``). The arrays are read-only views of one
        shared array, so the column costs O(n_rows) memory plus one small
        array object per row; ``.map(numpy.ndarray.tolist)`` gives Python lists. pyarrow
        and parquet store the column as ``list<item>``, and
        ``polars.from_pandas`` as a ``List`` column.

    Raises
    ------
    ValueError
        When a label is not a column of ``frame``, an array's length differs
        from the number of rows, ``user``, ``item`` or ``time`` has missing
        values, or ``time`` holds neither numbers nor datetimes.

    See Also
    --------
    load_retailrocket : Offers this column with ``history=True``.

    Notes
    -----
    Repeated events on the same item appear repeatedly, as in a behaviour
    sequence. Only the computation of the slices is vectorised (one sort and
    cumulative maxima); creating the Series still makes one view object per
    row.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn_rmtl.datasets import history_column
    >>> log = pd.DataFrame(
    ...     {
    ...         "user": ["a", "a", "b", "a", "a"],
    ...         "item": [10, 11, 20, 12, 13],
    ...         "time": [1, 2, 1, 2, 3],
    ...     }
    ... )
    >>> history = history_column(log, user="user", item="item", time="time")
    >>> history.name
    'item_history'
    >>> history.map(np.ndarray.tolist).tolist()
    [[], [10], [], [10], [10, 11, 12]]
    >>> history_column(log, user="user", item="item", time="time", max_len=2)[4]
    array([11, 12])
    """
    pandas_frame = _as_pandas_frame(frame, [user, item, time])
    n_rows = None if pandas_frame is None else len(pandas_frame)
    users = _key_values(pandas_frame, user, "user", n_rows)
    n_rows = len(users)
    items = _key_values(pandas_frame, item, "item", n_rows)
    times = _key_values(pandas_frame, time, "time", n_rows)
    for values, param in ((users, "user"), (items, "item"), (times, "time")):
        _check_missing(values, param)

    order, lo, hi = _history_slices(
        pd.factorize(users)[0], _time_ranks(times), _item_ranks(items), max_len
    )
    item_values = np.asarray(items.to_numpy())
    sorted_items = item_values[order]
    # Views share this array: read-only, so editing one row cannot change others.
    sorted_items.setflags(write=False)
    histories = np.empty(n_rows, dtype=object)
    # fromiter stores each view as one element (a list of equal-length arrays
    # would be turned into a 2-D array by numpy).
    histories[order] = np.fromiter(
        (sorted_items[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)),
        dtype=object,
        count=n_rows,
    )
    if name is None:
        name = f"{item}_history" if _is_column_label(item) else "history"
    index = frame.index if isinstance(frame, pd.DataFrame) else None
    return pd.Series(histories, index=index, name=name, dtype=object)
