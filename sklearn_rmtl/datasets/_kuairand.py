"""KuaiRand short-video logs as session-wise multi-task rows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import validate_params

from sklearn_rmtl.datasets._base import (
    check_columns,
    open_bundled,
    read_checked_csv,
    resolve_data_home,
)
from sklearn_rmtl.datasets._sessions import (
    LOADER_CONSTRAINTS,
    TIME_FEATURES_DOC,
    gap_to_ms,
    history_feature,
    session_bunch,
    sessionize,
)

URL = "https://kuairand.com (https://github.com/chongminggao/KuaiRand)"
PATTERN = "log_standard_*.csv"
BUNDLED = "kuairand27k_likehate.tsv.gz"
ID_COLUMNS = ["user_id", "video_id", "time_ms"]
#: Binary feedback columns of the KuaiRand logs that can be tasks.
TASK_COLUMNS = [
    "is_click",
    "long_view",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "is_profile_enter",
]
#: Known at exposure time: the video's length and the app tab it was shown on.
#: ``play_time_ms``, ``profile_stay_time`` and ``comment_stay_time`` are
#: outcomes of the exposure (they leak the labels) and are never read.
OPTIONAL_FEATURES = ["duration_ms", "tab"]
DEFAULT_TASKS = ("is_click", "long_view", "is_like")
#: KuaiRand's logs are in China Standard Time (UTC+8, no daylight saving).
UTC_OFFSET_HOURS = 8

DESCR_DATA = """\
.. _kuairand_dataset:

KuaiRand short-video feed logs (session-wise multi-task)
--------------------------------------------------------

Source: KuaiRand, https://kuairand.com and
https://github.com/chongminggao/KuaiRand (logs of the Kuaishou short-video
app, 2022-04-08 .. 2022-05-08; ``log_standard_*.csv`` with user_id,
video_id, time_ms and binary feedback is_click, is_like, is_follow,
is_comment, is_forward, is_hate, long_view, is_profile_enter, plus
play_time_ms, duration_ms, tab, ...). Licence: CC BY-SA 4.0 (attribution,
share-alike). Cite: Chongming Gao et al., "KuaiRand: An Unbiased
Sequential Recommendation Dataset with Randomly Exposed Videos", CIKM 2022.

Preprocessing (``load_kuairand``):

- One row per log row (an exposure of a video to a user); no aggregation.
- Sessions: each user's rows sorted by time_ms (ties, e.g. videos shown
  together in the two-column feed: video_id, never the file order); a new
  session starts where the gap to the user's previous row exceeds
  ``session_gap`` (30 min).
- Labels: the requested ``tasks`` columns as they are (default
  ``is_click``, ``long_view``, ``is_like``). They are not nested: a long
  view or a like can occur without ``is_click`` (single-column UI rows have
  is_click = valid play), so no funnel holds.
- Features: ``user_id``, ``video_id`` (category), ``duration_ms`` (video
  length) and ``tab`` (category) when present, and the session features
{time_features}
- Never used as features: ``play_time_ms``, ``profile_stay_time``,
  ``comment_stay_time`` (outcomes of the exposure, they leak the labels).
""".format(
    time_features=TIME_FEATURES_DOC.format(clock="in China Standard Time (UTC+8)")
)

#: Measured on the bundled file; tests/test_datasets.py checks these numbers.
SAMPLE_STATS = {
    "n_rows": 41_828,
    "n_sessions": 20_756,
    "max_len": 182,
    "is_like": 0.8068,
    "is_click": 0.6571,
    "long_view": 0.4619,
}

DESCR_SAMPLE = """
Bundled sample (``data_home=None``): SELECTION-BIASED
-----------------------------------------------------

**Only exposures that the user liked or hated are kept.** The sample is the
KuaiRand-27K standard log (2022-04-08 .. 2022-04-21) filtered by
https://github.com/alessandrosocc/predict_explicit_negative_feedback_kuairand
(MIT, (c) 2026 Alessandro Soccol, commit 959232d,
``processed_data/processed_standard_kcore_15.csv``, tab-separated): rows
with is_like = 1 or is_hate = 1; users having both; a 15-core on the liked
rows (items, then users) with all hated rows re-attached. Upstream dropped
is_like, is_hate, profile_stay_time, is_rand and tab and added ``label``
(1 = liked, 0 = hated) and a text ``timestamp``. Shipped byte-identical,
gzip-compressed, as ``sklearn_rmtl/datasets/data/{bundled}`` (see the
README.md there); the loader renames ``label`` to ``is_like`` (label = 1
exactly when is_like = 1).

Consequences, read before using the sample for anything but a demo:

- Label rates are nothing like a normal feed, where most exposures are
  neither liked nor hated: here is_like is {is_like:.1%}, is_click
  {is_click:.1%}, long_view {long_view:.1%}. Models trained on the sample do
  not estimate the rates of a real feed, and is_like = 0 means "hated".
- Sessions are fragments: most of each feed was filtered away, so sessions
  are short ({n_sessions:,} sessions for {n_rows:,} rows; median 1 row,
  max {max_len}) and ``position`` / ``prior_sessions`` count only liked or
  hated videos.
- The file lists its 33,745 liked rows first and its 8,083 hated rows
  after them; the loader breaks time ties by video_id so that this order
  cannot leak the label into ``position``.
- 116 rows are exact duplicates of another row (kept as they are).
- ``is_hate`` is not available (a row liked and hated has label 1);
  ``tab`` is not available. Available tasks: is_click, long_view, is_like,
  is_follow, is_comment, is_forward, is_profile_enter.
""".format(bundled=BUNDLED, **SAMPLE_STATS)


def _read_logs(
    sources: Sequence[tuple[Any, str]], tasks: Sequence[str], **read_kwargs: Any
) -> pd.DataFrame:
    """Read and concatenate log files: id columns, tasks, optional features."""
    frames = []
    for open_file, name in sources:
        header = [str(c) for c in pd.read_csv(open_file(), nrows=0, **read_kwargs)]
        # The bundled like/hate subset calls is_like "label" (1 = liked).
        rename = {"label": "is_like"} if "is_like" not in header else {}
        columns = [rename.get(c, c) for c in header]
        present = check_columns(
            columns,
            ID_COLUMNS,
            optional=[*TASK_COLUMNS, *OPTIONAL_FEATURES],
            source=name,
        )
        missing = [t for t in tasks if t not in present]
        if missing:
            available = [c for c in TASK_COLUMNS if c in present]
            raise ValueError(
                f"{name} has no column for the tasks {missing}; the tasks "
                f"available there are {available}."
            )
        wanted = {*ID_COLUMNS, *tasks, *OPTIONAL_FEATURES}
        usecols = [c for c in header if rename.get(c, c) in wanted]
        frame = read_checked_csv(
            open_file(),
            source=name,
            usecols=usecols,
            dtype={c: "int64" for c in usecols if c != "tab"},
            **read_kwargs,
        ).rename(columns=rename)
        for task in tasks:
            values = frame[task].to_numpy()
            if not np.isin(values, (0, 1)).all():
                raise ValueError(
                    f"{name}: task column {task!r} must hold 0/1 values, found "
                    f"{sorted(np.unique(values).tolist())[:10]}."
                )
        frames.append(frame)
    column_sets = [set(f.columns) for f in frames]
    if any(c != column_sets[0] for c in column_sets):
        raise ValueError(
            "The KuaiRand log files have different columns: "
            f"{[sorted(c) for c in column_sets]}."
        )
    return pd.concat(frames, ignore_index=True)


@validate_params(
    {**LOADER_CONSTRAINTS, "tasks": ["array-like"]}, prefer_skip_nested_validation=True
)
def load_kuairand(
    data_home: str | os.PathLike[str] | None = None,
    *,
    session_gap: Any = "30min",
    tasks: Sequence[str] = DEFAULT_TASKS,
    history: bool = False,
    history_len: int | None = 50,
    return_X_y: bool = False,
) -> Any:
    """Load KuaiRand short-video logs as session-wise multi-task rows.

    One row per exposure of a video to a user, with one 0/1 column per
    requested feedback task; each user's rows are split into sessions at
    inactivity gaps longer than ``session_gap``. Without ``data_home`` a
    bundled, heavily **selection-biased** sample is loaded: it keeps only
    exposures the user liked or hated (see ``DESCR``).

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder holding KuaiRand's ``log_standard_*.csv`` files (the ``data``
        folder of KuaiRand-Pure, -1K or -27K from https://kuairand.com); all
        of them are read and concatenated (``log_random_*.csv`` are not).
        ``None`` loads the bundled like/hate subset of KuaiRand-27K (41,828
        rows of 664 users).
    session_gap : str, datetime.timedelta or numpy.timedelta64, default="30min"
        A user's next row starts a new session when it comes more than this
        long after the previous one. Strings are parsed by
        :class:`pandas.Timedelta`.
    tasks : sequence of str, default=("is_click", "long_view", "is_like")
        Binary feedback columns to return as tasks, in this order, from
        ``is_click``, ``long_view``, ``is_like``, ``is_follow``,
        ``is_comment``, ``is_forward``, ``is_hate``, ``is_profile_enter``
        (``is_hate`` is not in the bundled sample).
    history : bool, default=False
        If True, ``X`` gets a last column ``video_id_history``: for each row,
        the ``video_id`` of the same user's rows with strictly earlier
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
            ``user_id``, ``video_id`` (and ``tab`` where present) as
            ``category`` columns; ``duration_ms`` (where present),
            ``position``, ``seconds_since_session_start``, ``hour``,
            ``dayofweek`` (China Standard Time), ``prior_sessions`` as
            numbers; with ``history=True``, last, ``video_id_history`` (a
            list column). All are known at exposure time.
        y : DataFrame of shape (n_samples, n_tasks)
            int8 0/1 columns named as in ``tasks``.
        session_ids : ndarray of shape (n_samples,), dtype int64
            Session of each row, numbered 0, 1, ... by (user, start time).
        timestamps : ndarray of shape (n_samples,), dtype datetime64[ms]
            Exposure time (UTC).
        feature_names : list of str
            Columns of ``X``.
        target_names : list of str
            The ``tasks``.
        DESCR : str
            Provenance, licence, citation, preprocessing and caveats.

        Rows are sorted by (session, timestamp, video_id).

    (X, y, session_ids, timestamps) : tuple
        When ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        When ``data_home`` is not a folder or holds no ``log_standard_*.csv``.
    ValueError
        When a file lacks the id columns or a requested task, or a task
        column is not 0/1, or ``tasks`` is empty or has duplicates.

    See Also
    --------
    load_retailrocket : E-commerce sessions with click / purchase labels.

    Examples
    --------
    >>> from sklearn_rmtl.datasets import load_kuairand
    >>> data = load_kuairand(tasks=["is_click", "is_like"])
    >>> data.target_names
    ['is_click', 'is_like']
    >>> print(data.DESCR.splitlines()[0])
    .. _kuairand_dataset:
    """
    gap_ms = gap_to_ms(session_gap)
    tasks = [str(t) for t in tasks]
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct column names, got {tasks}.")
    unknown = [t for t in tasks if t not in TASK_COLUMNS]
    if unknown:
        raise ValueError(f"Unknown tasks {unknown}; choose from {TASK_COLUMNS}.")
    if data_home is None:
        sources: list[tuple[Any, str]] = [
            (lambda: open_bundled(BUNDLED), f"bundled {BUNDLED}")
        ]
        log = _read_logs(sources, tasks, sep="\t")
    else:
        home = resolve_data_home(data_home, dataset="KuaiRand")
        paths = sorted(Path(home).glob(PATTERN))
        if not paths:
            raise FileNotFoundError(
                f"Expected KuaiRand log files {PATTERN!r} (e.g. "
                f"'log_standard_4_08_to_4_21_pure.csv') in {str(home)!r}, but "
                f"there are none. Download KuaiRand from {URL} and unpack its "
                "data/ folder there, or pass data_home=None for the bundled "
                "sample."
            )
        log = _read_logs([((lambda p=p: p), str(p)) for p in paths], tasks)
    events = log.rename(
        columns={"user_id": "user", "video_id": "item", "time_ms": "time"}
    )
    rows = sessionize(events, gap_ms=gap_ms, tie_break=["item"])
    features: dict[str, Any] = {
        "user_id": pd.Categorical(rows["user"]),
        "video_id": pd.Categorical(rows["item"]),
    }
    if "tab" in rows:
        features["tab"] = pd.Categorical(rows["tab"])
    if "duration_ms" in rows:
        features["duration_ms"] = rows["duration_ms"].to_numpy()
    return session_bunch(
        rows,
        features,
        targets=tasks,
        descr=DESCR_DATA + (DESCR_SAMPLE if data_home is None else ""),
        return_X_y=return_X_y,
        history=history_feature("kuairand")[0] if history else None,
        history_len=history_len,
        utc_offset_hours=UTC_OFFSET_HOURS,
    )
