"""RetailRocket e-commerce events as session-wise click / purchase rows."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import validate_params

from sklearn_rmtl.datasets._base import (
    check_columns,
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

URL = "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset"
EVENTS = "events.csv"
PROPERTIES = ("item_properties_part1.csv", "item_properties_part2.csv")
CATEGORY_TREE = "category_tree.csv"
BUNDLED = "retailrocket_events.csv.gz"

EVENT_COLUMNS = ["timestamp", "visitorid", "event", "itemid"]
PROPERTY_COLUMNS = ["timestamp", "itemid", "property", "value"]
TREE_COLUMNS = ["categoryid", "parentid"]
#: Event codes; actions sort after a view with the same timestamp.
EVENT_CODES = {"view": 0, "addtocart": 1, "transaction": 2}
#: Rows of item_properties read at a time (the two parts hold ~20M rows).
PROPERTY_CHUNK = 2_000_000

DESCR_DATA = """\
.. _retailrocket_dataset:

RetailRocket e-commerce events (session-wise CTR / CTCVR)
---------------------------------------------------------

Source: Retailrocket recommender system dataset,
https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset (events of a
real e-commerce site, 2015-05-03 .. 2015-09-18: ``events.csv`` with
timestamp [ms], visitorid, event in {{view, addtocart, transaction}}, itemid,
transactionid; item properties in ``item_properties_part{{1,2}}.csv``;
``category_tree.csv``). Licence: CC BY-NC-SA 4.0 as listed on Kaggle
(non-commercial, share-alike, attribute Retailrocket).

Preprocessing (``load_retailrocket``):

- Sessions: each visitor's events sorted by time (ties: view before
  addtocart before transaction, then itemid); a new session starts where the
  gap to the visitor's previous event exceeds ``session_gap`` (30 min).
- Rows: one per (session, item) pair with a view in the session; its
  timestamp is the first view of the item in the session.
- Labels: ``purchase`` = a transaction of the item in the session at or after
  that first view; ``click`` = an addtocart of the item in the session at or
  after that view, or, with ``funnel=True`` (default), also a purchase, so
  that ``purchase <= click`` (CTCVR = click and conversion, as ESMM assumes;
  a purchase whose cart event is missing or falls in another session still
  went through the cart). ``funnel=False`` gives the add-to-cart label
  alone; ``label_window="session"`` also counts actions before the view.
- Actions on items that were not viewed in the session, and (by default)
  actions before the item's first view in the session, give no row and no
  label: a row is an exposure whose outcome is predicted at view time.
- Features: ``visitorid``, ``itemid`` (category); when the item properties
  are present, ``categoryid`` = the item's ``categoryid`` property value with
  the latest property timestamp at or before the view (missing when none is
  known yet; never a later value) and ``parent_categoryid`` from
  ``category_tree.csv`` (category); and the session features
{time_features}

References: Retailrocket, "Retailrocket recommender system dataset", Kaggle,
2016. The session-wise CTR/CTCVR setting follows Liu et al., "Multi-Task
Recommendations with Reinforcement Learning", WWW 2023.
""".format(time_features=TIME_FEATURES_DOC.format(clock="in UTC"))

#: Measured on the bundled file; tests/test_datasets.py checks these numbers.
SAMPLE_STATS = {
    "n_rows": 75_374,
    "n_sessions": 15_026,
    "max_len": 184,
    "mean_len": 5.016,
    "click": 0.1088,
    "cart": 0.0949,
    "purchase": 0.0789,
}

DESCR_SAMPLE = """
Bundled sample (``data_home=None``)
-----------------------------------

Real RetailRocket events of 2,174 visitors (97,381 events: 75,374 views,
12,456 addtocarts, 9,551 transactions; 29,905 items), as redistributed by
HKUDS/SSLRec (https://github.com/HKUDS/SSLRec, Apache-2.0, commit 7597c31,
``datasets/multi_behavior/retail_rocket/train_mat_{{view,cart,buy}}.pkl``),
who took the split of Wei et al., "Contrastive Meta Learning with Behavior
Multiplicity for Recommendation", WSDM 2022 (CML). The sparse matrices were
converted back to the ``events.csv`` layout (no rows dropped or added;
``transactionid`` is always empty) and are shipped byte-identical,
gzip-compressed, as ``sklearn_rmtl/datasets/data/{bundled}`` (see the
README.md there). Cite Retailrocket, CML and SSLRec (Ren et al., "SSLRec: A
Self-Supervised Learning Framework for Recommendation", WSDM 2024).

Caveats:

- Visitor and item ids are re-indexed (0..2173, 0..30112): they do not match
  Kaggle's ids, so no item properties or categories can be joined.
- Upstream kept one timestamp per (visitor, item, event type), at a
  resolution of seconds, so every view row is the only view of its item and
  a view and the cart / buy of the same item can land in different
  sessions. The kept view is probably the last one: 16 % of addtocart and
  7 % of transaction events come before the view of their item in the same
  session and do not count by default (``label_window="session"`` counts
  them: click 12.7 %, purchase 8.8 %).
- 27 % of addtocart and 30 % of transaction events concern an item not
  viewed in their session; they give no row and no label.
- Only visitors who purchased were kept (CML selects multi-behaviour
  users): purchase rates are far above raw RetailRocket (raw events: 96.7 %
  view, 2.5 % addtocart, 0.8 % transaction).

Measured with the defaults (``session_gap="30min"``, ``funnel=True``,
``label_window="after_view"``): {n_rows:,} rows in {n_sessions:,} sessions
(1..{max_len} rows, mean {mean_len:.1f}, median 2); click {click:.1%}
(add to cart alone, ``funnel=False``: {cart:.1%}), purchase {purchase:.1%};
26.5 % of sessions have a click, 20.2 % a purchase.
""".format(bundled=BUNDLED, **SAMPLE_STATS)


def _read_events(open_file: Any, source: str) -> pd.DataFrame:
    header = pd.read_csv(open_file(), nrows=0).columns
    check_columns(header, EVENT_COLUMNS, optional=["transactionid"], source=source)
    events = read_checked_csv(
        open_file(),
        source=source,
        usecols=EVENT_COLUMNS,
        dtype={
            "timestamp": "int64",
            "visitorid": "int64",
            "itemid": "int64",
            "event": "category",
        },
    )
    check_values(events["event"], list(EVENT_CODES), column="event", source=source)
    return pd.DataFrame(
        {
            "user": events["visitorid"].to_numpy(),
            "item": events["itemid"].to_numpy(),
            "time": events["timestamp"].to_numpy(),
            "code": events["event"].map(EVENT_CODES).to_numpy(dtype=np.int8),
        }
    )


def _read_categories(home: Path) -> pd.DataFrame | None:
    """``categoryid`` property changes: columns ``time``, ``item``, ``categoryid``."""
    paths = [home / name for name in PROPERTIES if (home / name).is_file()]
    if not paths:
        return None
    if len(paths) < len(PROPERTIES):
        warnings.warn(
            f"Only {paths[0].name} of the two item property files was found in "
            f"{str(home)!r}; items whose properties are in the other part get "
            "no category.",
            UserWarning,
            stacklevel=5,  # the caller of the validate_params wrapper
        )
    parts = []
    for path in paths:
        check_columns(
            pd.read_csv(path, nrows=0).columns, PROPERTY_COLUMNS, source=str(path)
        )
        # The files hold ~20M rows of all properties; keep categoryid only.
        for chunk in pd.read_csv(
            path,
            usecols=PROPERTY_COLUMNS,
            dtype={"timestamp": "int64", "itemid": "int64"},
            chunksize=PROPERTY_CHUNK,
        ):
            parts.append(chunk.loc[chunk["property"] == "categoryid"])
    found = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(
        {
            "time": found["timestamp"].to_numpy(dtype=np.int64),
            "item": found["itemid"].to_numpy(dtype=np.int64),
            "categoryid": pd.to_numeric(found["value"], errors="coerce").astype(
                "Int64"
            ),
        }
    )


def _category_features(rows: pd.DataFrame, home: Path) -> dict[str, Any]:
    """Category known at each row's view time, and its parent category."""
    categories = _read_categories(home)
    if categories is None:
        return {}
    left = rows[["time", "item"]].assign(_row=np.arange(len(rows)))
    merged = pd.merge_asof(
        left.sort_values("time", kind="stable"),
        categories.sort_values("time", kind="stable"),
        on="time",
        by="item",
        direction="backward",
        allow_exact_matches=True,
    ).sort_values("_row")
    category = merged["categoryid"].reset_index(drop=True)
    features: dict[str, Any] = {"categoryid": pd.Categorical(category)}
    tree_path = home / CATEGORY_TREE
    if tree_path.is_file():
        header = pd.read_csv(tree_path, nrows=0).columns
        check_columns(header, TREE_COLUMNS, source=str(tree_path))
        tree = read_checked_csv(
            tree_path,
            source=str(tree_path),
            usecols=TREE_COLUMNS,
            dtype={"categoryid": "int64", "parentid": "Int64"},
        ).drop_duplicates("categoryid")
        parent = category.map(tree.set_index("categoryid")["parentid"])
        features["parent_categoryid"] = pd.Categorical(parent.astype("Int64"))
    return features


@validate_params(FUNNEL_CONSTRAINTS, prefer_skip_nested_validation=True)
def load_retailrocket(
    data_home: str | os.PathLike[str] | None = None,
    *,
    session_gap: Any = "30min",
    funnel: bool = True,
    label_window: str = "after_view",
    history: bool = False,
    history_len: int | None = 50,
    return_X_y: bool = False,
) -> Any:
    """Load RetailRocket events as session-wise click / purchase rows.

    Each visitor's events are split into sessions at inactivity gaps longer
    than ``session_gap``; each item viewed in a session becomes one row,
    labelled by what the visitor did with it later in that session
    (add to cart -> ``click``, transaction -> ``purchase``), the CTR / CTCVR
    setting of the RMTL paper. Without ``data_home`` a bundled sample of real
    RetailRocket events is loaded (no download).

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder holding Kaggle's ``events.csv`` and, optionally,
        ``item_properties_part1.csv``, ``item_properties_part2.csv`` and
        ``category_tree.csv`` (https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset).
        ``None`` loads the bundled sample of 2,174 visitors (no item
        properties; see ``DESCR`` for its caveats).
    session_gap : str, datetime.timedelta or numpy.timedelta64, default="30min"
        A visitor's next event starts a new session when it comes more than
        this long after the previous one. Strings are parsed by
        :class:`pandas.Timedelta`.
    funnel : bool, default=True
        If True, a purchase also counts as a click, so that
        ``purchase <= click`` (click-then-convert funnel); if False,
        ``click`` is the add-to-cart event alone.
    label_window : {"after_view", "session"}, default="after_view"
        Which actions of the session label a row: those at or after the
        item's first view in the session (``"after_view"``: the outcome of
        the exposure), or all of the session's actions on the item
        (``"session"``: also those before the view, useful where the log
        kept only one, possibly later, view time per item).
    history : bool, default=False
        If True, ``X`` gets a last column ``itemid_history``: for each row,
        the ``itemid`` of the same visitor's rows with strictly earlier
        timestamps, over the whole log (earlier sessions included), oldest
        first, at most ``history_len`` of them (see
        :func:`~sklearn_rmtl.datasets.history_column`). Rows with equal
        timestamps do not see each other. It is a list column: object dtype,
        one read-only int64 NumPy array per row, empty for the visitor's
        first rows.
    history_len : int or None, default=50
        With ``history=True``, the most items kept per row (the most
        recent); None keeps them all.
    return_X_y : bool, default=False
        If True, return ``(X, y, session_ids, timestamps)`` instead of a
        Bunch: the session metadata belong with ``X`` for RMTL, so they are
        not dropped as a plain ``(X, y)`` would.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        X : DataFrame of shape (n_samples, n_features)
            ``visitorid``, ``itemid`` (and with item properties
            ``categoryid``, ``parent_categoryid``) as ``category`` columns;
            ``position``, ``seconds_since_session_start``, ``hour``,
            ``dayofweek``, ``prior_sessions`` as numbers; with
            ``history=True``, last, ``itemid_history`` (a list column). All
            features use only information available at the row's view time.
        y : DataFrame of shape (n_samples, 2)
            int8 0/1 columns ``click`` and ``purchase``.
        session_ids : ndarray of shape (n_samples,), dtype int64
            Session of each row, numbered 0, 1, ... by (visitor, start time).
        timestamps : ndarray of shape (n_samples,), dtype datetime64[ms]
            First view of the item in the session (UTC).
        feature_names : list of str
            Columns of ``X``.
        target_names : list of str
            ``["click", "purchase"]``.
        DESCR : str
            Provenance, licence, citation, preprocessing and caveats.

        Rows are sorted by (session, timestamp, itemid).

    (X, y, session_ids, timestamps) : tuple
        When ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        When ``data_home`` is not a folder or holds no ``events.csv``.
    ValueError
        When a file lacks expected columns or ``event`` has unknown values.

    See Also
    --------
    load_taobao : The same construction on Taobao UserBehavior logs.
    make_sessions : Synthetic sessions with known sequential structure.

    Notes
    -----
    A cart or purchase of an item that was not viewed in the session gives no
    row and no label; with ``label_window="after_view"`` neither does one that
    happened before the item's first view in the session. Each visitor's
    ``prior_sessions`` counts all earlier sessions, also those without a view.

    Examples
    --------
    >>> from sklearn_rmtl.datasets import load_retailrocket
    >>> data = load_retailrocket()
    >>> data.X.shape, data.target_names
    ((75374, 7), ['click', 'purchase'])
    >>> bool((data.y["purchase"] <= data.y["click"]).all())
    True

    Each row's earlier items of the visitor, most recent last:

    >>> data = load_retailrocket(history=True, history_len=3)
    >>> history = data.X["itemid_history"]
    >>> history.iloc[0].tolist(), int(history.map(len).max())
    ([], 3)
    """
    gap_ms = gap_to_ms(session_gap)
    if data_home is None:
        home = None
        events = _read_events(lambda: open_bundled(BUNDLED), f"bundled {BUNDLED}")
    else:
        path = require_file(data_home, EVENTS, dataset="RetailRocket", url=URL)
        home = path.parent
        events = _read_events(lambda: path, str(path))
    cart, buy = EVENT_CODES["addtocart"], EVENT_CODES["transaction"]
    rows = funnel_rows(
        events,
        gap_ms=gap_ms,
        view_code=EVENT_CODES["view"],
        label_window=label_window,
        labels={"click": [cart, buy] if funnel else [cart], "purchase": [buy]},
    )
    features: dict[str, Any] = {
        "visitorid": pd.Categorical(rows["user"]),
        "itemid": pd.Categorical(rows["item"]),
    }
    if home is not None:
        features.update(_category_features(rows, home))
    return session_bunch(
        rows,
        features,
        targets=["click", "purchase"],
        descr=DESCR_DATA + (DESCR_SAMPLE if home is None else ""),
        return_X_y=return_X_y,
        history=history_feature("retailrocket")[0] if history else None,
        history_len=history_len,
    )
