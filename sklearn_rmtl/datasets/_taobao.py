"""Taobao UserBehavior logs as session-wise click / purchase rows."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, validate_params

from sklearn_rmtl.datasets._base import (
    check_values,
    open_bundled,
    read_checked_csv,
    require_file,
)
from sklearn_rmtl.datasets._sessions import (
    FUNNEL_CONSTRAINTS,
    TIME_FEATURES_DOC,
    funnel_rows,
    gap_to_ms,
    history_feature,
    session_bunch,
)

URL = "https://tianchi.aliyun.com/dataset/649"
FILENAME = "UserBehavior.csv"
BUNDLED = "taobao_userbehavior_head.csv.gz"
COLUMNS = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
#: Event codes; actions sort after a page view with the same timestamp.
BEHAVIOR_CODES = {"pv": 0, "cart": 1, "fav": 2, "buy": 3}
#: Taobao's logs are in China Standard Time (UTC+8, no daylight saving).
UTC_OFFSET_HOURS = 8

DESCR_DATA = """\
.. _taobao_dataset:

Taobao UserBehavior (session-wise CTR / CTCVR)
----------------------------------------------

Source: "User Behavior Data from Taobao for Recommendation", Alibaba Tianchi
dataset 649, https://tianchi.aliyun.com/dataset/649 (about 100M rows of
about 1M users, 2017-11-25 .. 2017-12-03; headerless ``UserBehavior.csv``
with user_id, item_id, category_id, behavior_type in {{pv, cart, fav, buy}},
timestamp [s]). Licence: the Tianchi dataset terms (research use; no
open licence is declared). Cite: Han Zhu et al., "Learning Tree-based Deep
Model for Recommender Systems", KDD 2018.

Preprocessing (``load_taobao``):

- Rows with a missing field (a truncated last line) are dropped.
- Sessions: each user's events sorted by time (ties: pv before actions,
  then item_id); a new session starts where the gap to the user's previous
  event exceeds ``session_gap`` (30 min).
- Rows: one per (session, item) pair with a page view (``pv``, the click
  into the item page) in the session; its timestamp is the first view.
- Labels: ``click`` = the item was added to cart or favourited in the
  session at or after that view, or, with ``funnel=True`` (default), bought:
  the first step beyond viewing, so that ``purchase <= click`` (Taobao lets
  users buy without cart or favourite; ``funnel=False`` gives cart or
  favourite alone, and then most purchases have no click).
  ``purchase`` = the item was bought in the session at or after the view.
  ``label_window="session"`` also counts actions before the view.
- Actions on items not viewed in the session, and (by default) actions
  before the item's first view there, give no row and no label: a row is an
  exposure whose outcome is predicted at view time. In Taobao most carts and
  favourites are logged without a view of the item in the same session, so
  the labels are much sparser than the raw action rates.
- Features: ``user_id``, ``item_id``, ``category_id`` (category; the
  category logged with the first view) and the session features
{time_features}

Caveat of the full dataset: a few rows lie outside the official 9-day window
(some as early as 2017-09); they are kept.
""".format(
    time_features=TIME_FEATURES_DOC.format(clock="in China Standard Time (UTC+8)")
)

#: Measured on the bundled file; tests/test_datasets.py checks these numbers.
SAMPLE_STATS = {
    "n_rows": 67_898,
    "n_sessions": 13_372,
    "max_len": 102,
    "mean_len": 5.078,
    "click": 0.0166,
    "click_nofunnel": 0.0076,
    "purchase": 0.0093,
}

DESCR_SAMPLE = """
Bundled sample (``data_home=None``)
-----------------------------------

The first 3,178,496 bytes of the official ``UserBehavior.csv``: 84,475
complete rows of 815 users (pv 89.8 %, cart 5.3 %, fav 2.8 %, buy 2.1 %;
55,368 items), copied from https://github.com/Haohanblue/mydeep (commit
ef812ad, ``mydeep/UserBehavior.csv``, sha256 9cbce278...d6608b4; that
repository declares no licence, the content is the Tianchi dataset above).
Shipped byte-identical, gzip-compressed, as
``sklearn_rmtl/datasets/data/{bundled}`` (see the README.md there).

Caveats:

- The file was cut by bytes: its last line (``100370,1968385,1875258,pv``)
  has no timestamp and is dropped, and the history of user 100370 (189 rows)
  may be incomplete.
- The users are the lowest ids of a file sorted by user, not a random
  sample; their histories are complete.
- 35 rows fall outside the official 9-day window (earliest 2017-09-11).
- Of the 4,497 cart / 2,356 fav / 1,750 buy events, 76 % / 82 % / 56 % concern
  an item not viewed in their session and 15 % / 13 % / 7 % come before the
  item's view; only 9 % / 5 % / 37 % label a row by default
  (``label_window="session"``: click 3.2 %, purchase 1.1 %).

Measured with the defaults (``session_gap="30min"``, ``funnel=True``,
``label_window="after_view"``): {n_rows:,} rows in {n_sessions:,} sessions
(1..{max_len} rows, mean {mean_len:.1f}, median 3); click {click:.2%} (cart
or favourite alone, ``funnel=False``: {click_nofunnel:.2%}), purchase
{purchase:.2%}; 6.5 % of sessions have a click, 3.5 % a purchase.
""".format(bundled=BUNDLED, **SAMPLE_STATS)


def _has_header(open_file: Callable[[], Any], source: str) -> bool:
    """Check the field count; tell a header line from a headerless file."""
    try:
        first = pd.read_csv(open_file(), header=None, nrows=1, dtype=str)
    except pd.errors.EmptyDataError as exc:
        message = f"{source} is empty; expected the columns {COLUMNS}."
        raise ValueError(message) from exc
    fields = [str(v).strip() for v in first.iloc[0]]
    if len(fields) != len(COLUMNS):
        raise ValueError(
            f"{source} has {len(fields)} columns in its first line {fields}; "
            f"expected the {len(COLUMNS)} headerless columns {COLUMNS}."
        )
    if fields[0].isdigit():
        return False
    if fields != COLUMNS:
        unexpected = [f for f in fields if f not in COLUMNS]
        raise ValueError(
            f"{source} starts with a header {fields} that does not match the "
            f"expected columns {COLUMNS} (unexpected: {unexpected}). The "
            "official file has no header row."
        )
    return True


def _read_log(
    open_file: Callable[[], Any], source: str, nrows: int | None
) -> tuple[pd.DataFrame, int]:
    """Events as ``user``, ``item``, ``time`` (ms), ``code``, ``category``."""
    header = _has_header(open_file, source)
    # Read ids as float64 (exact below 2**53) so that a truncated line gives
    # NaN instead of a parse error.
    log = read_checked_csv(
        open_file(),
        source=source,
        usecols=COLUMNS,
        dtype={
            **{c: "float64" for c in COLUMNS if c != "behavior_type"},
            "behavior_type": "category",
        },
        header=0 if header else None,
        names=COLUMNS,
        nrows=nrows,
    )
    complete = log.notna().all(axis=1)
    n_dropped = int((~complete).sum())
    log = log.loc[complete]
    check_values(
        log["behavior_type"],
        list(BEHAVIOR_CODES),
        column="behavior_type",
        source=source,
    )
    events = pd.DataFrame(
        {
            "user": log["user_id"].to_numpy(dtype=np.int64),
            "item": log["item_id"].to_numpy(dtype=np.int64),
            "time": log["timestamp"].to_numpy(dtype=np.int64) * 1000,
            "code": log["behavior_type"].map(BEHAVIOR_CODES).to_numpy(np.int8),
            "category": log["category_id"].to_numpy(dtype=np.int64),
        }
    )
    return events, n_dropped


@validate_params(
    {**FUNNEL_CONSTRAINTS, "nrows": [Interval(Integral, 1, None, closed="left"), None]},
    prefer_skip_nested_validation=True,
)
def load_taobao(
    data_home: str | os.PathLike[str] | None = None,
    *,
    session_gap: Any = "30min",
    funnel: bool = True,
    label_window: str = "after_view",
    nrows: int | None = None,
    history: bool = False,
    history_len: int | None = 50,
    return_X_y: bool = False,
) -> Any:
    """Load Taobao UserBehavior logs as session-wise click / purchase rows.

    Each user's events are split into sessions at inactivity gaps longer than
    ``session_gap``; each item viewed (``pv``) in a session becomes one row,
    labelled by what the user did with it later in that session (cart or
    favourite -> ``click``, buy -> ``purchase``). Without ``data_home`` a
    bundled sample of the real log is loaded (no download).

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder holding the official headerless ``UserBehavior.csv``
        (https://tianchi.aliyun.com/dataset/649). ``None`` loads the bundled
        sample: the first 84,475 rows (815 users) of that file.
    session_gap : str, datetime.timedelta or numpy.timedelta64, default="30min"
        A user's next event starts a new session when it comes more than this
        long after the previous one. Strings are parsed by
        :class:`pandas.Timedelta`.
    funnel : bool, default=True
        If True, a purchase also counts as a click, so that
        ``purchase <= click``; if False, ``click`` is cart or favourite only.
    label_window : {"after_view", "session"}, default="after_view"
        Which actions of the session label a row: those at or after the
        item's first view in the session (``"after_view"``: the outcome of
        the exposure), or all of the session's actions on the item
        (``"session"``: also those before the view, useful where the log
        kept only one, possibly later, view time per item).
    nrows : int, default=None
        Read only the first ``nrows`` lines of the file (the full file has
        about 100M). The file is sorted by user, so the last user read may
        have an incomplete history.
    history : bool, default=False
        If True, ``X`` gets a last column ``item_id_history``: for each row,
        the ``item_id`` of the same user's rows with strictly earlier
        timestamps, over the whole log (earlier sessions included), oldest
        first, at most ``history_len`` of them (see
        :func:`~sklearn_rmtl.datasets.history_column`). Rows with equal
        timestamps do not see each other. It is a list column: object dtype,
        one read-only int64 NumPy array per row, empty for the user's
        first rows.
    history_len : int or None, default=50
        With ``history=True``, the most items kept per row (the most
        recent); None keeps them all.
    return_X_y : bool, default=False
        If True, return ``(X, y, session_ids, timestamps)`` instead of a
        Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        X : DataFrame of shape (n_samples, n_features)
            ``user_id``, ``item_id``, ``category_id`` as ``category`` columns;
            ``position``, ``seconds_since_session_start``, ``hour``,
            ``dayofweek`` (China Standard Time), ``prior_sessions`` as
            numbers; with ``history=True``, last, ``item_id_history`` (a
            list column). All features use only information available at
            the row's view time.
        y : DataFrame of shape (n_samples, 2)
            int8 0/1 columns ``click`` and ``purchase``.
        session_ids : ndarray of shape (n_samples,), dtype int64
            Session of each row, numbered 0, 1, ... by (user, start time).
        timestamps : ndarray of shape (n_samples,), dtype datetime64[ms]
            First view of the item in the session (UTC).
        feature_names : list of str
            Columns of ``X``.
        target_names : list of str
            ``["click", "purchase"]``.
        DESCR : str
            Provenance, licence, citation, preprocessing and caveats.

        Rows are sorted by (session, timestamp, item_id).

    (X, y, session_ids, timestamps) : tuple
        When ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        When ``data_home`` is not a folder or holds no ``UserBehavior.csv``.
    ValueError
        When the file does not have the five expected columns or
        ``behavior_type`` has unknown values.

    Warns
    -----
    UserWarning
        When rows of a file in ``data_home`` had missing fields and were
        dropped.

    See Also
    --------
    load_retailrocket : The same construction on RetailRocket events.

    Examples
    --------
    >>> from sklearn_rmtl.datasets import load_taobao
    >>> X, y, session_ids, timestamps = load_taobao(return_X_y=True)
    >>> list(y.columns)
    ['click', 'purchase']
    >>> bool((y["purchase"] <= y["click"]).all())
    True
    """
    gap_ms = gap_to_ms(session_gap)
    if data_home is None:
        events, _ = _read_log(
            lambda: open_bundled(BUNDLED), f"bundled {BUNDLED}", nrows
        )
    else:
        path = require_file(data_home, FILENAME, dataset="Taobao UserBehavior", url=URL)
        events, n_dropped = _read_log(lambda: path, str(path), nrows)
        if n_dropped:
            warnings.warn(
                f"Dropped {n_dropped} rows of {str(path)!r} with missing fields "
                "(a truncated file?).",
                UserWarning,
                stacklevel=3,  # the caller of the validate_params wrapper
            )
    cart, fav, buy = (BEHAVIOR_CODES[b] for b in ("cart", "fav", "buy"))
    rows = funnel_rows(
        events,
        gap_ms=gap_ms,
        view_code=BEHAVIOR_CODES["pv"],
        label_window=label_window,
        labels={
            "click": [cart, fav, buy] if funnel else [cart, fav],
            "purchase": [buy],
        },
        carry=["category"],
    )
    features = {
        "user_id": pd.Categorical(rows["user"]),
        "item_id": pd.Categorical(rows["item"]),
        "category_id": pd.Categorical(rows["category"]),
    }
    return session_bunch(
        rows,
        features,
        targets=["click", "purchase"],
        descr=DESCR_DATA + (DESCR_SAMPLE if data_home is None else ""),
        return_X_y=return_X_y,
        history=history_feature("taobao")[0] if history else None,
        history_len=history_len,
        utc_offset_hours=UTC_OFFSET_HOURS,
    )
