"""From raw event logs to session-wise rows, vectorised.

Every loader follows the same three steps:

1. sort the events by (user, time, tie-break) and start a new session at a
   user's first event and wherever the gap to the user's previous event
   exceeds ``session_gap`` (:func:`sessionize`);
2. build one row per exposure (:func:`funnel_rows` for view -> action logs;
   KuaiRand logs are one row per exposure already);
3. add features that use only the row's own time and earlier events, and
   package the loader's output (:func:`session_bunch`).

Session splitting looks only backwards (the gap to the *previous* event), so
dropping every event after some time T leaves the sessions, and the features,
of all earlier rows unchanged; ``tests/test_datasets.py`` checks this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, StrOptions

from sklearn_rmtl.datasets._base import make_bunch
from sklearn_rmtl.datasets._history import history_column

#: Internal time unit of every loader: int64 milliseconds since the epoch.
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

#: Parameter constraints (``validate_params`` format) of every loader, and of
#: those that label views by later actions (:func:`funnel_rows`).
LOADER_CONSTRAINTS: dict[str, list[Any]] = {
    "data_home": [str, os.PathLike, None],
    "session_gap": [str, timedelta, np.timedelta64],
    "history": ["boolean"],
    "history_len": [Interval(Integral, 1, None, closed="left"), None],
    "return_X_y": ["boolean"],
}
FUNNEL_CONSTRAINTS: dict[str, list[Any]] = {
    **LOADER_CONSTRAINTS,
    "funnel": ["boolean"],
    "label_window": [StrOptions({"after_view", "session"})],
}

#: The item column of each loader, by dataset name: the loader's
#: ``history=True`` column holds earlier values of it, so that column, as a
#: sequence feature, shares its vocabulary (:func:`history_feature`).
HISTORY_ITEMS = {"retailrocket": "itemid", "taobao": "item_id", "kuairand": "video_id"}


def history_feature(dataset: str) -> tuple[str, str]:
    """A loader's history column and the item column whose vocabulary it shares.

    Parameters
    ----------
    dataset : {"retailrocket", "taobao", "kuairand"}
        The loader, by its name in :data:`HISTORY_ITEMS`.

    Returns
    -------
    column, item : str
        ``"<item>_history"`` and ``"<item>"``: the pair that
        ``sequence_features={column: item}`` of the estimators takes.
    """
    if dataset not in HISTORY_ITEMS:
        raise ValueError(
            f"{dataset!r} has no item history; the loaders with one are "
            f"{sorted(HISTORY_ITEMS)}."
        )
    item = HISTORY_ITEMS[dataset]
    return f"{item}_history", item


#: The features every loader derives from time and session order, described
#: for the loaders' DESCR (``{clock}``: time zone).
TIME_FEATURES_DOC = """\
  - ``position``: 0-based rank of the row in its session (by time);
  - ``seconds_since_session_start``: time since the session's first event
    of any kind (that event is at or before the row: past information);
  - ``hour``, ``dayofweek``: hour of day (0-23) and day of week (Monday = 0)
    of the row's time, {clock};
  - ``prior_sessions``: number of earlier sessions of the same user."""


def gap_to_ms(session_gap: str | timedelta | np.timedelta64) -> int:
    """Convert ``session_gap`` to a positive number of milliseconds."""
    try:
        gap = pd.Timedelta(session_gap)
    except ValueError as exc:
        raise ValueError(
            f"session_gap={session_gap!r} is not a time span; use e.g. '30min', "
            "'1h' or datetime.timedelta(minutes=30)."
        ) from exc
    if pd.isna(gap) or gap <= pd.Timedelta(0):
        raise ValueError(f"session_gap must be a positive time span, got {gap}.")
    return int(gap // pd.Timedelta(1, unit="ms"))


def _starts(keys: np.ndarray) -> np.ndarray:
    """True where a sorted key differs from the previous one (and at 0)."""
    new = np.ones(keys.shape[0], dtype=bool)
    new[1:] = keys[1:] != keys[:-1]
    return new


def session_bunch(
    rows: pd.DataFrame,
    features: Mapping[str, Any],
    *,
    targets: Sequence[str],
    descr: str,
    return_X_y: bool,
    utc_offset_hours: int = 0,
    history: str | None = None,
    history_len: int | None = None,
) -> Any:
    """A loader's output (see the loaders' Returns) from its session rows.

    ``rows`` are sorted by (session, time, tie-break) and hold ``user``,
    ``item``, ``time`` (ms), ``session``, ``session_start`` and
    ``prior_sessions`` (see :func:`sessionize`) and the ``targets``. ``X`` is
    ``features`` followed by the past-only time features
    (:data:`TIME_FEATURES_DOC`), with the clock of ``hour`` and ``dayofweek``
    at ``utc_offset_hours``, and, when ``history`` names it, the column of
    each row's earlier items of the user (:func:`history_column`).
    """
    times, session = rows["time"].to_numpy(), rows["session"].to_numpy()
    first_row = _starts(session)
    starts = np.flatnonzero(first_row)
    position = np.arange(session.shape[0]) - starts[np.cumsum(first_row) - 1]
    local = times + utc_offset_hours * MS_PER_HOUR
    X = pd.DataFrame(
        {
            **features,
            "position": position.astype(np.int64),
            "seconds_since_session_start": (
                (times - rows["session_start"].to_numpy()) / 1000.0
            ),
            "hour": (local // MS_PER_HOUR % 24).astype(np.int64),
            # 1970-01-01 was a Thursday; Monday = 0 as in pandas.
            "dayofweek": ((local // MS_PER_DAY + 3) % 7).astype(np.int64),
            "prior_sessions": rows["prior_sessions"].to_numpy().astype(np.int64),
        }
    )
    if history is not None:
        # Keyed by user, not session: the user's whole earlier log is
        # information available at the row's time (the DIN convention).
        X[history] = history_column(
            user=rows["user"].to_numpy(),
            item=rows["item"].to_numpy(),
            time=times,
            max_len=history_len,
        ).to_numpy()
    return make_bunch(
        X=X,
        y=rows[list(targets)],
        session_ids=session,
        times_ms=times,
        descr=descr,
        return_X_y=return_X_y,
    )


def sessionize(
    events: pd.DataFrame, *, gap_ms: int, tie_break: Sequence[str]
) -> pd.DataFrame:
    """Sort events and add ``session``, ``prior_sessions``, ``session_start``.

    ``events`` has int64 columns ``user`` and ``time`` (ms) and the
    ``tie_break`` columns, which order events with equal times. The tie-break
    never uses the file's row order: a file sorted by label (like the bundled
    KuaiRand sample) would otherwise leak the label into ``position``.

    A session starts at a user's first event and wherever the time since the
    user's previous event exceeds ``gap_ms`` (strictly). ``session`` numbers
    the sessions by (user, start); ``prior_sessions`` counts the user's
    earlier ones.
    """
    keys = [events[c].to_numpy() for c in reversed(["user", "time", *tie_break])]
    events = events.take(np.lexsort(keys)).reset_index(drop=True)
    times = events["time"].to_numpy()
    new_user = _starts(events["user"].to_numpy())
    new_session = new_user.copy()
    new_session[1:] |= np.diff(times) > gap_ms
    session = np.cumsum(new_session) - 1
    prior = session - session[new_user][np.cumsum(new_user) - 1]
    start = times[new_session]
    return events.assign(
        session=session, prior_sessions=prior, session_start=start[session]
    )


def funnel_rows(
    events: pd.DataFrame,
    *,
    gap_ms: int,
    view_code: int,
    labels: Mapping[str, Sequence[int]],
    label_window: str = "after_view",
    carry: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per viewed (session, item) pair of a view -> action event log.

    Parameters
    ----------
    events : DataFrame
        Columns ``user``, ``item``, ``time`` (int64 ms), ``code`` (int: the
        event type, ``view_code`` for a view; codes sort actions after views
        at equal times) and the ``carry`` columns.
    gap_ms : int
        Inactivity gap that starts a new session.
    view_code : int
        Event code of a view.
    labels : mapping of str to sequence of int
        Label name -> event codes that make it 1: the label is 1 when such an
        event on the row's item occurs in the same session at or after the
        item's first view there (``label_window="after_view"``) or anywhere
        in the session (``"session"``).
    label_window : {"after_view", "session"}
        Which actions of the session count, see ``labels``.
    carry : sequence of str
        Event columns copied from the item's first view in the session.

    Returns
    -------
    rows : DataFrame
        Sorted by (session, first view time, item), with columns ``session``
        (0, 1, 2...), ``user``, ``item``, ``time`` (first view), the ``carry``
        columns, ``session_start``, ``prior_sessions`` and one bool column per
        label. Actions on items not viewed in the session give no row and no
        label.
    """
    events = sessionize(events, gap_ms=gap_ms, tie_break=["code", "item"])
    is_view = events["code"].to_numpy() == view_code
    columns = ["session", "user", "item", "time", *carry]
    views = events.loc[is_view, [*columns, "session_start", "prior_sessions"]]
    # Events are time-sorted within a session: the first view is kept.
    rows = views[~views.duplicated(["session", "item"])].reset_index(drop=True)
    for name, codes in labels.items():
        is_action = events["code"].isin(list(codes))
        actions = events.loc[is_action, ["session", "item", "time"]]
        last = actions.groupby(["session", "item"], sort=False)["time"].max()
        last_time = rows.join(last.rename("_last"), on=["session", "item"])["_last"]
        if label_window == "session":
            rows[name] = last_time.notna().to_numpy()
        else:
            rows[name] = (last_time >= rows["time"]).to_numpy()
    # Renumbered 0, 1, 2...: sessions without a view have no row.
    new_session = _starts(rows["session"].to_numpy())
    rows["session"] = (np.cumsum(new_session) - 1).astype(np.int64)
    return rows
