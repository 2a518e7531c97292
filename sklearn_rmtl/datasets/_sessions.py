"""From raw event logs to session-wise rows, vectorised.

Every loader follows the same three steps:

1. sort the events by (user, time, tie-break) and start a new session at a
   user's first event and wherever the gap to the user's previous event
   exceeds ``session_gap`` (:func:`split_sessions`);
2. build one row per exposure (:func:`funnel_rows` for view -> action logs;
   KuaiRand logs are one row per exposure already);
3. add features that use only the row's own time and earlier events
   (:func:`time_features`).

Session splitting looks only backwards (the gap to the *previous* event), so
dropping every event after some time T leaves the sessions, and the features,
of all earlier rows unchanged; ``tests/test_datasets.py`` checks this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

#: Internal time unit of every loader: int64 milliseconds since the epoch.
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

#: Parameter constraint of ``session_gap`` (``validate_params`` format).
SESSION_GAP_CONSTRAINT: list[Any] = [str, timedelta, np.timedelta64]

#: The features every loader derives from time and session order.
TIME_FEATURES = [
    "position",
    "seconds_since_session_start",
    "hour",
    "dayofweek",
    "prior_sessions",
]

#: Their description, shared by the loaders' DESCR (``{clock}``: time zone).
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
    if keys.shape[0] > 1:
        new[1:] = keys[1:] != keys[:-1]
    return new


def split_sessions(
    user: np.ndarray, times_ms: np.ndarray, gap_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Session number of each event; the events must be sorted by (user, time).

    A session starts at a user's first event and wherever the time since the
    user's previous event exceeds ``gap_ms`` (strictly).

    Returns
    -------
    session : ndarray of int64
        Global session number, increasing with (user, session start).
    prior_sessions : ndarray of int64
        Number of earlier sessions of the same user.
    """
    new_user = _starts(user)
    new_session = new_user.copy()
    if user.shape[0] > 1:
        new_session[1:] |= np.diff(times_ms) > gap_ms
    session = np.cumsum(new_session) - 1
    first_session_of_user = session[new_user]
    prior_sessions = session - first_session_of_user[np.cumsum(new_user) - 1]
    return session, prior_sessions


def consecutive_ids(session: np.ndarray) -> np.ndarray:
    """Renumber sorted session numbers to 0, 1, 2... without gaps."""
    return (np.cumsum(_starts(session)) - 1).astype(np.int64)


def time_features(
    *,
    times_ms: np.ndarray,
    session_start_ms: np.ndarray,
    session: np.ndarray,
    prior_sessions: np.ndarray,
    utc_offset_hours: int = 0,
) -> dict[str, np.ndarray]:
    """Past-only features of rows sorted by (session, time, tie-break)."""
    first_row = _starts(session)
    starts = np.flatnonzero(first_row)
    position = np.arange(session.shape[0]) - starts[np.cumsum(first_row) - 1]
    local = times_ms + utc_offset_hours * MS_PER_HOUR
    return {
        "position": position.astype(np.int64),
        "seconds_since_session_start": (times_ms - session_start_ms) / 1000.0,
        "hour": (local // MS_PER_HOUR % 24).astype(np.int64),
        # 1970-01-01 was a Thursday; Monday = 0 as in pandas.
        "dayofweek": ((local // MS_PER_DAY + 3) % 7).astype(np.int64),
        "prior_sessions": prior_sessions.astype(np.int64),
    }


def sessionize(
    events: pd.DataFrame, *, gap_ms: int, tie_break: Sequence[str]
) -> pd.DataFrame:
    """Sort events and add ``session``, ``prior_sessions``, ``session_start``.

    ``events`` has int64 columns ``user`` and ``time`` (ms) and the
    ``tie_break`` columns, which order events with equal times. The tie-break
    never uses the file's row order: a file sorted by label (like the bundled
    KuaiRand sample) would otherwise leak the label into ``position``.
    """
    keys = [events[c].to_numpy() for c in reversed(["user", "time", *tie_break])]
    order = np.lexsort(keys)
    events = events.take(order).reset_index(drop=True)
    times = events["time"].to_numpy()
    session, prior = split_sessions(events["user"].to_numpy(), times, gap_ms)
    start = times[_starts(session)]
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
    rows["session"] = consecutive_ids(rows["session"].to_numpy())
    return rows
