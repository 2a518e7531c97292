"""Dataset loaders and the synthetic session generator."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from sklearn_rmtl.datasets import (
    _kuairand,
    _retailrocket,
    _taobao,
    load_kuairand,
    load_retailrocket,
    load_taobao,
    make_sessions,
)

MIN = 60_000  # ms
# 2015-06-01 00:00:00 UTC, a Monday.
T0 = 1_433_116_800_000
# 2017-11-25 00:00:00 China Standard Time (UTC+8), a Saturday; in seconds.
TB0 = 1_511_539_200

ID_COLUMNS = {
    load_retailrocket: ["visitorid", "itemid"],
    load_taobao: ["user_id", "item_id", "category_id"],
    load_kuairand: ["user_id", "video_id"],
}


def bundled_bytes(name: str) -> bytes:
    path = resources.files("sklearn_rmtl.datasets").joinpath("data", name)
    return gzip.decompress(path.read_bytes())


@pytest.fixture(scope="module")
def bundled():
    return {load: load() for load in ID_COLUMNS}


# ---------------------------------------------------------------------------
# Bundled samples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("load", list(ID_COLUMNS), ids=lambda f: f.__name__)
def test_bundled_layout(bundled, load):
    data = bundled[load]
    assert isinstance(data, Bunch)
    X, y = data.X, data.y
    n = len(X)
    assert len(y) == len(data.session_ids) == len(data.timestamps) == n
    assert data.feature_names == list(X.columns)
    assert data.target_names == list(y.columns)
    assert y.shape[1] >= 2
    assert all(dtype == np.int8 for dtype in y.dtypes)
    assert set(np.unique(y.to_numpy())) == {0, 1}
    for column in ID_COLUMNS[load]:
        assert isinstance(X[column].dtype, pd.CategoricalDtype), column
    assert data.session_ids.dtype == np.int64
    assert data.timestamps.dtype == np.dtype("datetime64[ms]")
    # Sorted by (session, timestamp); sessions numbered 0, 1, ... in order.
    sessions, times = data.session_ids, data.timestamps
    assert (np.diff(sessions) >= 0).all()
    assert sessions[0] == 0 and set(np.diff(sessions)) <= {0, 1}
    same = sessions[1:] == sessions[:-1]
    assert (times[1:][same] >= times[:-1][same]).all()
    expected_position = pd.Series(sessions).groupby(sessions).cumcount()
    np.testing.assert_array_equal(X["position"], expected_position)
    assert "Bundled sample" in data.DESCR and "Licen" in data.DESCR


@pytest.mark.parametrize(
    ("load", "module", "n_rows", "n_sessions"),
    [
        (load_retailrocket, _retailrocket, 75_374, 15_026),
        (load_taobao, _taobao, 67_898, 13_372),
        (load_kuairand, _kuairand, 41_828, 20_756),
    ],
    ids=["retailrocket", "taobao", "kuairand"],
)
def test_bundled_counts_match_descr(bundled, load, module, n_rows, n_sessions):
    data = bundled[load]
    lengths = np.bincount(data.session_ids)
    assert len(data.y) == n_rows == module.SAMPLE_STATS["n_rows"]
    assert lengths.size == n_sessions == module.SAMPLE_STATS["n_sessions"]
    assert lengths.max() == module.SAMPLE_STATS["max_len"]
    rates = data.y.mean()
    for task, rate in rates.items():
        if task in module.SAMPLE_STATS:
            assert rate == pytest.approx(module.SAMPLE_STATS[task], abs=5e-5)
    # The numbers quoted in DESCR are these.
    assert f"{n_rows:,} rows" in data.DESCR


def test_bundled_label_rates(bundled):
    rr = bundled[load_retailrocket].y.mean()
    assert 0.05 < rr["click"] < 0.2 and 0.03 < rr["purchase"] < rr["click"]
    tb = bundled[load_taobao].y.mean()
    assert 0.005 < tb["click"] < 0.05 and 0.002 < tb["purchase"] < tb["click"]
    kr = bundled[load_kuairand].y.mean()
    # Selection-biased: nearly every row was liked (or hated).
    assert 0.5 < kr["is_click"] < 0.8 and 0.3 < kr["long_view"] < 0.6
    assert 0.7 < kr["is_like"] < 0.9


@pytest.mark.parametrize("load", [load_retailrocket, load_taobao])
def test_bundled_funnel(bundled, load):
    y = bundled[load].y
    assert (y["purchase"] <= y["click"]).all()
    # Without the funnel, purchases without a cart event remain.
    raw = load(funnel=False).y
    assert (raw["purchase"] > raw["click"]).any()
    assert (raw["click"] <= y["click"]).all()
    assert (raw["purchase"] == y["purchase"]).all()


def test_bundled_label_window(bundled):
    strict = bundled[load_retailrocket].y
    loose = load_retailrocket(label_window="session").y
    assert (loose >= strict).all().all() and (loose > strict).any().any()


@pytest.mark.parametrize(
    ("name", "sha256"),
    [
        (
            "retailrocket_events.csv.gz",
            "cbe3fccf67fb380ba3221978144ce17bc4752e430b33b0e5adaeef5ed191507c",
        ),
        (
            "taobao_userbehavior_head.csv.gz",
            "9cbce278d485d50954029082dd1b22f0dc78dc38776f58d953f0cbe18d6608b4",
        ),
        (
            "kuairand27k_likehate.tsv.gz",
            "321128c4543d3e658a1fa9788edd4049295b0d1ccf4469154326fb7769556e0a",
        ),
    ],
)
def test_bundled_files_are_upstream_bytes(name, sha256):
    path = resources.files("sklearn_rmtl.datasets").joinpath("data", name)
    assert len(path.read_bytes()) < 2 * 1024**2
    assert hashlib.sha256(bundled_bytes(name)).hexdigest() == sha256


@pytest.mark.parametrize("load", list(ID_COLUMNS), ids=lambda f: f.__name__)
def test_return_X_y(bundled, load):
    X, y, sessions, times = load(return_X_y=True)
    data = bundled[load]
    pd.testing.assert_frame_equal(X, data.X)
    pd.testing.assert_frame_equal(y, data.y)
    np.testing.assert_array_equal(sessions, data.session_ids)
    np.testing.assert_array_equal(times, data.timestamps)


def test_kuairand_ties_do_not_follow_file_order(bundled):
    # The bundled file lists liked rows first; ties must not inherit that order.
    data = bundled[load_kuairand]
    frame = pd.DataFrame(
        {
            "s": data.session_ids,
            "t": data.timestamps,
            "v": data.X["video_id"].astype(np.int64),
        }
    )
    tied = frame.duplicated(["s", "t"], keep=False)
    assert tied.sum() > 1000
    previous = frame.shift()
    same = (frame["s"] == previous["s"]) & (frame["t"] == previous["t"])
    assert (frame.loc[same, "v"] >= previous.loc[same, "v"]).all()
    assert "play_time_ms" not in data.feature_names
    assert "comment_stay_time" not in data.feature_names
    assert "SELECTION-BIASED" in data.DESCR


def test_kuairand_tasks(bundled):
    data = load_kuairand(tasks=["long_view", "is_comment"])
    assert data.target_names == ["long_view", "is_comment"]
    base = bundled[load_kuairand]
    np.testing.assert_array_equal(data.y["long_view"], base.y["long_view"])
    with pytest.raises(ValueError, match=r"is_hate.*available there are"):
        load_kuairand(tasks=["is_click", "is_hate"])
    with pytest.raises(ValueError, match="Unknown tasks"):
        load_kuairand(tasks=["watch_ratio"])
    with pytest.raises(ValueError, match="distinct"):
        load_kuairand(tasks=["is_click", "is_click"])


# ---------------------------------------------------------------------------
# Raw formats: hand-written fixtures with exact expected rows
# ---------------------------------------------------------------------------


def write_csv(path, header, rows):
    lines = ([",".join(header)] if header else []) + [
        ",".join("" if v is None else str(v) for v in row) for row in rows
    ]
    path.write_text("\n".join(lines) + "\n")


RR_EVENTS = [
    # visitor 1, session A
    (T0, 1, "view", 10, None),
    (T0 + 1 * MIN, 1, "view", 11, None),
    (T0 + 2 * MIN, 1, "addtocart", 10, None),
    (T0 + 3 * MIN, 1, "view", 10, None),  # repeat view: no new row
    (T0 + 4 * MIN, 1, "transaction", 10, 1),
    (T0 + 5 * MIN, 1, "addtocart", 12, None),  # before 12's view
    (T0 + 6 * MIN, 1, "view", 12, None),
    (T0 + 36 * MIN, 1, "view", 13, None),  # gap of exactly 30 min: same session
    (T0 + 36 * MIN, 1, "addtocart", 15, None),  # never viewed: no row
    # visitor 1, session B: gap of 30 min + 1 ms
    (T0 + 66 * MIN + 1, 1, "view", 11, None),
    (T0 + 67 * MIN, 1, "transaction", 11, 2),  # bought without cart
    # visitor 2
    (T0, 2, "view", 10, None),
    (T0, 2, "addtocart", 10, None),  # same timestamp as the view: counts
    (T0 + 10 * MIN, 2, "view", 14, None),
    (T0 + 10 * MIN, 2, "view", 13, None),  # tie: itemid 13 before 14
    (T0 + 180 * MIN, 2, "transaction", 14, 3),  # later session, no view
    # visitor 0, listed last: sorted first
    (T0 + 60 * MIN, 0, "view", 99, None),
]
RR_HEADER = ["timestamp", "visitorid", "event", "itemid", "transactionid"]

RR_EXPECTED = pd.DataFrame(
    [
        # session, visitor, item, time, click, purchase, position, elapsed, prior
        (0, 0, 99, T0 + 60 * MIN, 0, 0, 0, 0.0, 0),
        (1, 1, 10, T0, 1, 1, 0, 0.0, 0),
        (1, 1, 11, T0 + 1 * MIN, 0, 0, 1, 60.0, 0),
        (1, 1, 12, T0 + 6 * MIN, 0, 0, 2, 360.0, 0),
        (1, 1, 13, T0 + 36 * MIN, 0, 0, 3, 2160.0, 0),
        (2, 1, 11, T0 + 66 * MIN + 1, 1, 1, 0, 0.0, 1),
        (3, 2, 10, T0, 1, 0, 0, 0.0, 0),
        (3, 2, 13, T0 + 10 * MIN, 0, 0, 1, 600.0, 0),
        (3, 2, 14, T0 + 10 * MIN, 0, 0, 2, 600.0, 0),
    ],
    columns=[
        "session",
        "visitorid",
        "itemid",
        "time",
        "click",
        "purchase",
        "position",
        "seconds_since_session_start",
        "prior_sessions",
    ],
)


@pytest.fixture
def rr_home(tmp_path):
    write_csv(tmp_path / "events.csv", RR_HEADER, RR_EVENTS)
    return tmp_path


def test_retailrocket_raw_exact_rows(rr_home):
    data = load_retailrocket(rr_home)
    expected = RR_EXPECTED
    np.testing.assert_array_equal(data.session_ids, expected["session"])
    np.testing.assert_array_equal(
        data.timestamps, expected["time"].to_numpy().astype("datetime64[ms]")
    )
    np.testing.assert_array_equal(
        data.X["visitorid"].astype(int), expected["visitorid"]
    )
    np.testing.assert_array_equal(data.X["itemid"].astype(int), expected["itemid"])
    for column in ["position", "seconds_since_session_start", "prior_sessions"]:
        np.testing.assert_array_equal(data.X[column], expected[column], column)
    np.testing.assert_array_equal(data.y["click"], expected["click"])
    np.testing.assert_array_equal(data.y["purchase"], expected["purchase"])
    np.testing.assert_array_equal(data.X["hour"], [1, 0, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(data.X["dayofweek"], np.zeros(9))
    assert data.feature_names == [
        "visitorid",
        "itemid",
        "position",
        "seconds_since_session_start",
        "hour",
        "dayofweek",
        "prior_sessions",
    ]
    assert "Bundled sample" not in data.DESCR


def test_retailrocket_raw_options(rr_home):
    no_funnel = load_retailrocket(rr_home, funnel=False).y
    # Session B's item 11 was bought without an add-to-cart.
    np.testing.assert_array_equal(no_funnel["click"], [0, 1, 0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(no_funnel["purchase"], RR_EXPECTED["purchase"])
    window = load_retailrocket(rr_home, label_window="session").y
    # Item 12 was added to the cart before its view in the same session.
    np.testing.assert_array_equal(window["click"], [0, 1, 0, 1, 0, 1, 1, 0, 0])
    # With a 2 h gap, visitor 1's two sessions merge: item 11 gets one row,
    # at its first view, labelled by the transaction of the later view.
    hourly = load_retailrocket(rr_home, session_gap="2h")
    np.testing.assert_array_equal(hourly.session_ids, [0, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(hourly.X["itemid"].astype(int)[1:5], [10, 11, 12, 13])
    np.testing.assert_array_equal(hourly.y["purchase"], [0, 1, 1, 0, 0, 0, 0, 0])


def test_retailrocket_categories_known_at_view_time(rr_home):
    write_csv(
        rr_home / "item_properties_part1.csv",
        ["timestamp", "itemid", "property", "value"],
        [
            (T0 - 1000, 10, "categoryid", 5),
            (T0 + 30 * MIN, 10, "categoryid", 6),  # later: never used at T0
            (T0 + 1 * MIN, 11, "categoryid", 7),  # exactly at the view: used
            (T0 - 5, 12, "available", 1),
            (T0 + 20 * MIN, 13, "categoryid", 8),
        ],
    )
    write_csv(
        rr_home / "item_properties_part2.csv",
        ["timestamp", "itemid", "property", "value"],
        [(T0 - 1, 14, "categoryid", 5), (T0, 99, "790", "n1.000")],
    )
    write_csv(
        rr_home / "category_tree.csv",
        ["categoryid", "parentid"],
        [(5, 1), (6, 1), (7, None), (8, 2)],
    )
    data = load_retailrocket(rr_home)
    category = data.X["categoryid"].astype("Int64").tolist()
    parent = data.X["parent_categoryid"].astype("Int64").tolist()
    na = pd.NA
    assert category == [na, 5, 7, na, 8, 7, 5, na, 5]
    assert parent == [na, 1, na, na, 2, na, 1, na, 1]
    assert isinstance(data.X["categoryid"].dtype, pd.CategoricalDtype)
    # Without the tree: the category only.
    (rr_home / "category_tree.csv").unlink()
    (rr_home / "item_properties_part2.csv").unlink()
    with pytest.warns(UserWarning, match="Only item_properties_part1.csv"):
        data = load_retailrocket(rr_home)
    assert "categoryid" in data.feature_names
    assert "parent_categoryid" not in data.feature_names


TB_EVENTS = [
    (1, 100, 7, "pv", TB0),
    (1, 100, 7, "fav", TB0 + 60),
    (1, 101, 8, "pv", TB0 + 120),
    (1, 101, 8, "buy", TB0 + 180),  # bought without cart or fav
    (1, 102, 8, "cart", TB0 + 240),  # never viewed: no row
    (1, 100, 7, "pv", TB0 + 240 + 1801),  # new session
    (2, 200, 9, "cart", TB0 + 5),
    (2, 200, 9, "pv", TB0 + 5),  # same second, listed after: cart counts
    (2, 201, 9, "pv", None),  # truncated last line
]


def test_taobao_raw_exact_rows(tmp_path):
    write_csv(tmp_path / "UserBehavior.csv", None, TB_EVENTS)
    with pytest.warns(UserWarning, match="Dropped 1 rows"):
        data = load_taobao(tmp_path)
    np.testing.assert_array_equal(data.session_ids, [0, 0, 1, 2])
    np.testing.assert_array_equal(data.X["user_id"].astype(int), [1, 1, 1, 2])
    np.testing.assert_array_equal(data.X["item_id"].astype(int), [100, 101, 100, 200])
    np.testing.assert_array_equal(data.X["category_id"].astype(int), [7, 8, 7, 9])
    seconds = np.array([TB0, TB0 + 120, TB0 + 2041, TB0 + 5])
    np.testing.assert_array_equal(
        data.timestamps, (seconds * 1000).astype("datetime64[ms]")
    )
    np.testing.assert_array_equal(data.y["click"], [1, 1, 0, 1])
    np.testing.assert_array_equal(data.y["purchase"], [0, 1, 0, 0])
    np.testing.assert_array_equal(data.X["prior_sessions"], [0, 0, 1, 0])
    np.testing.assert_array_equal(data.X["position"], [0, 1, 0, 0])
    np.testing.assert_array_equal(data.X["hour"], [0, 0, 0, 0])  # UTC+8
    np.testing.assert_array_equal(data.X["dayofweek"], [5, 5, 5, 5])
    with pytest.warns(UserWarning):
        no_funnel = load_taobao(tmp_path, funnel=False)
    np.testing.assert_array_equal(no_funnel.y["click"], [1, 0, 0, 1])
    # nrows and a header row.
    write_csv(
        tmp_path / "UserBehavior.csv",
        ["user_id", "item_id", "category_id", "behavior_type", "timestamp"],
        TB_EVENTS[:-1],
    )
    assert len(load_taobao(tmp_path).y) == 4
    assert len(load_taobao(tmp_path, nrows=3).y) == 2


# The columns of KuaiRand's log_standard_*.csv files.
KR_HEADER = [
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
    "is_follow", "is_comment", "is_forward", "is_hate", "long_view",
    "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time",
    "is_profile_enter", "is_rand", "tab",
]  # fmt: skip


def kr_row(user, video, time_ms, click, like, long_view, hate=0, tab=1):
    """One KuaiRand log row; play_time_ms (a label leak) follows the click."""
    row = dict.fromkeys(KR_HEADER, 0)
    row.update(
        user_id=user,
        video_id=video,
        date=20220408,
        hourmin=1000,
        time_ms=time_ms,
        is_click=click,
        is_like=like,
        is_hate=hate,
        long_view=long_view,
        play_time_ms=5000 * click,
        duration_ms=9000,
        tab=tab,
    )
    return tuple(row[c] for c in KR_HEADER)


def test_kuairand_raw_exact_rows(tmp_path):
    k0 = 1_649_400_000_000
    write_csv(
        tmp_path / "log_standard_4_08_to_4_21_27k_part1.csv",
        KR_HEADER,
        [
            kr_row(7, 30, k0, 1, 1, 1),
            kr_row(7, 20, k0, 0, 0, 0, hate=1),  # tie with video 30: sorted first
            kr_row(7, 40, k0 + 10 * MIN, 1, 0, 0, tab=4),
        ],
    )
    write_csv(
        tmp_path / "log_standard_4_08_to_4_21_27k_part2.csv",
        KR_HEADER,
        [kr_row(7, 50, k0 + 40 * MIN + 1, 1, 0, 1), kr_row(5, 20, k0 + MIN, 0, 0, 1)],
    )
    (tmp_path / "log_random_4_22_to_5_08_27k.csv").write_text("ignored\n")
    data = load_kuairand(tmp_path, tasks=["is_click", "is_hate", "long_view"])
    np.testing.assert_array_equal(data.session_ids, [0, 1, 1, 1, 2])
    np.testing.assert_array_equal(data.X["user_id"].astype(int), [5, 7, 7, 7, 7])
    np.testing.assert_array_equal(data.X["video_id"].astype(int), [20, 20, 30, 40, 50])
    np.testing.assert_array_equal(data.y["is_click"], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.y["is_hate"], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(data.y["long_view"], [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(data.X["position"], [0, 0, 1, 2, 0])
    np.testing.assert_array_equal(data.X["prior_sessions"], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(data.X["duration_ms"], [9000] * 5)
    assert data.X["tab"].astype(int).tolist() == [1, 1, 1, 4, 1]
    assert data.feature_names == [
        "user_id",
        "video_id",
        "tab",
        "duration_ms",
        "position",
        "seconds_since_session_start",
        "hour",
        "dayofweek",
        "prior_sessions",
    ]
    # 2022-04-08 06:40 UTC is 14:40 in UTC+8, a Friday.
    assert data.X["hour"].tolist() == [14, 14, 14, 14, 15]
    assert data.X["dayofweek"].tolist() == [4] * 5


# ---------------------------------------------------------------------------
# No future information in the features
# ---------------------------------------------------------------------------


def assert_past_only(full, cut):
    """Rows up to the cut time have the same features and session partition.

    ``cut`` is loaded from the same log without the events after some time T.
    Sessions are split on the gap to the *previous* event, so every row up to
    T must come out the same; any difference would be future information.
    """
    keep = full.timestamps <= cut.timestamps.max()
    assert keep.sum() == len(cut.X)
    left = full.X.loc[keep].reset_index(drop=True)
    for column in cut.X.columns:
        a, b = left[column], cut.X[column]
        if isinstance(b.dtype, pd.CategoricalDtype):
            a, b = a.astype(object), b.astype(object)
        pd.testing.assert_series_equal(a, b, check_names=False, obj=column)
    np.testing.assert_array_equal(full.timestamps[keep], cut.timestamps)
    np.testing.assert_array_equal(
        pd.factorize(full.session_ids[keep])[0], pd.factorize(cut.session_ids)[0]
    )
    return keep


def split_at_median(frame, time_column, tmp_path, write):
    cut_time = frame[time_column].median()
    for name, part in [("full", frame), ("cut", frame[frame[time_column] <= cut_time])]:
        (tmp_path / name).mkdir()
        write(part, tmp_path / name)
    return tmp_path / "full", tmp_path / "cut"


def test_retailrocket_features_use_only_the_past(tmp_path):
    frame = pd.read_csv(_retailrocket.open_bundled(_retailrocket.BUNDLED))
    full_home, cut_home = split_at_median(
        frame,
        "timestamp",
        tmp_path,
        lambda part, home: part.to_csv(home / "events.csv", index=False),
    )
    full, cut = load_retailrocket(full_home), load_retailrocket(cut_home)
    keep = assert_past_only(full, cut)
    assert keep.sum() > 30_000


def test_taobao_features_use_only_the_past(tmp_path):
    frame = pd.read_csv(
        _taobao.open_bundled(_taobao.BUNDLED), header=None, names=_taobao.COLUMNS
    ).dropna()
    frame = frame.astype({"timestamp": "int64"})
    full_home, cut_home = split_at_median(
        frame,
        "timestamp",
        tmp_path,
        lambda part, home: part.to_csv(
            home / "UserBehavior.csv", index=False, header=False
        ),
    )
    full, cut = load_taobao(full_home), load_taobao(cut_home)
    keep = assert_past_only(full, cut)
    assert keep.sum() > 30_000
    # Same rows as the bundled loader (which also drops the truncated line).
    bundled = load_taobao()
    pd.testing.assert_frame_equal(full.X, bundled.X)
    pd.testing.assert_frame_equal(full.y, bundled.y)


def test_kuairand_features_use_only_the_past(tmp_path):
    frame = pd.read_csv(_kuairand.open_bundled(_kuairand.BUNDLED), sep="\t")
    frame = frame.rename(columns={"label": "is_like"})
    full_home, cut_home = split_at_median(
        frame,
        "time_ms",
        tmp_path,
        lambda part, home: part.to_csv(home / "log_standard_x.csv", index=False),
    )
    full, cut = load_kuairand(full_home), load_kuairand(cut_home)
    keep = assert_past_only(full, cut)
    assert keep.sum() > 15_000
    # The raw-format path gives the bundled rows.
    bundled = load_kuairand()
    pd.testing.assert_frame_equal(full.X, bundled.X)
    pd.testing.assert_frame_equal(full.y, bundled.y)


PROPERTY_HEADER = ["timestamp", "itemid", "property", "value"]


def test_retailrocket_categories_use_only_the_past(rr_home, tmp_path):
    # Every item changes category every 7 minutes.
    props = [
        (T0 + i * MIN, item, "categoryid", 100 + i)
        for i in range(0, 70, 7)
        for item in (10, 11, 12, 13, 14, 99)
    ]
    write_csv(rr_home / "item_properties_part1.csv", PROPERTY_HEADER, props)
    write_csv(rr_home / "item_properties_part2.csv", PROPERTY_HEADER, [])
    full = load_retailrocket(rr_home)
    # The value in force at the view time, never a later one.
    assert full.X["categoryid"].astype(int).tolist() == [
        156, 100, 100, 100, 135, 163, 100, 107, 107,
    ]  # fmt: skip
    cut_home = tmp_path / "cut"
    cut_home.mkdir()
    cut_time = T0 + 36 * MIN
    write_csv(
        cut_home / "events.csv", RR_HEADER, [e for e in RR_EVENTS if e[0] <= cut_time]
    )
    write_csv(
        cut_home / "item_properties_part1.csv",
        PROPERTY_HEADER,
        [p for p in props if p[0] <= cut_time],
    )
    write_csv(cut_home / "item_properties_part2.csv", PROPERTY_HEADER, [])
    assert_past_only(full, load_retailrocket(cut_home))


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        load_retailrocket(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"'events.csv'.*kaggle.com"):
        load_retailrocket(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'UserBehavior.csv'.*tianchi"):
        load_taobao(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"log_standard_\*.csv.*kuairand"):
        load_kuairand(tmp_path)


def test_wrong_columns(tmp_path):
    write_csv(tmp_path / "events.csv", ["timestamp", "visitor", "event", "itemid"], [])
    message = r"missing .* \['visitorid'\]; unexpected columns: \['visitor'\]"
    with pytest.raises(ValueError, match=message):
        load_retailrocket(tmp_path)
    write_csv(tmp_path / "events.csv", RR_HEADER, [(T0, 1, "click", 10, None)])
    with pytest.raises(ValueError, match=r"unexpected values \['click'\]"):
        load_retailrocket(tmp_path)
    write_csv(tmp_path / "events.csv", RR_HEADER, [(T0, "anna", "view", 10, None)])
    with pytest.raises(ValueError, match="Could not parse"):
        load_retailrocket(tmp_path)
    write_csv(tmp_path / "events.csv", RR_HEADER, RR_EVENTS)
    write_csv(tmp_path / "item_properties_part1.csv", ["itemid", "value"], [])
    write_csv(tmp_path / "item_properties_part2.csv", PROPERTY_HEADER, [])
    with pytest.raises(ValueError, match=r"\['timestamp', 'property'\]"):
        load_retailrocket(tmp_path)

    (tmp_path / "UserBehavior.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_taobao(tmp_path)
    write_csv(tmp_path / "UserBehavior.csv", None, [(1, 2, 3, "pv")])
    with pytest.raises(ValueError, match="has 4 columns"):
        load_taobao(tmp_path)
    write_csv(tmp_path / "UserBehavior.csv", ["user", "item", "cat", "type", "ts"], [])
    with pytest.raises(ValueError, match=r"unexpected: \['user', 'item'"):
        load_taobao(tmp_path)
    write_csv(tmp_path / "UserBehavior.csv", None, [(1, 2, 3, "click", TB0)])
    with pytest.raises(ValueError, match=r"behavior_type.*\['click'\]"):
        load_taobao(tmp_path)

    write_csv(tmp_path / "log_standard_a.csv", ["user_id", "time_ms", "is_click"], [])
    with pytest.raises(ValueError, match=r"\['video_id'\]"):
        load_kuairand(tmp_path)
    write_csv(
        tmp_path / "log_standard_a.csv",
        ["user_id", "video_id", "time_ms", "is_click", "long_view"],
        [(1, 2, 3, 0, 1)],
    )
    with pytest.raises(ValueError, match=r"tasks \['is_like'\].*\['is_click', "):
        load_kuairand(tmp_path)
    write_csv(
        tmp_path / "log_standard_a.csv",
        ["user_id", "video_id", "time_ms", "is_click", "long_view"],
        [(1, 2, 3, 2, 1)],
    )
    with pytest.raises(ValueError, match="must hold 0/1 values"):
        load_kuairand(tmp_path, tasks=["is_click", "long_view"])


@pytest.mark.parametrize("gap", ["soon", "-5min", "0s"])
def test_bad_session_gap(gap):
    with pytest.raises(ValueError, match="session_gap"):
        load_retailrocket(session_gap=gap)


def test_declared_parameter_validation():
    with pytest.raises(ValueError, match="session_gap"):
        load_taobao(session_gap=30)  # a bare number has no unit
    with pytest.raises(ValueError, match="label_window"):
        load_retailrocket(label_window="later")
    with pytest.raises(ValueError, match="n_sessions"):
        make_sessions(0)


# ---------------------------------------------------------------------------
# make_sessions
# ---------------------------------------------------------------------------


def test_make_sessions_layout_and_reproducibility():
    data = make_sessions(60, n_tasks=3, n_categorical=2, n_numerical=1, random_state=0)
    assert data.target_names == ["click", "step_1", "purchase"]
    assert data.feature_names == ["cat_0", "cat_1", "num_0", "position"]
    assert isinstance(data.X["cat_1"].dtype, pd.CategoricalDtype)
    assert data.X["cat_1"].cat.categories.size == 20
    assert np.array_equal(np.unique(data.session_ids), np.arange(60))
    y = data.y.to_numpy()
    assert (y[:, 1] <= y[:, 0]).all() and (y[:, 2] <= y[:, 1]).all()
    same = data.session_ids[1:] == data.session_ids[:-1]
    assert (np.diff(data.session_ids) >= 0).all()
    assert (data.timestamps[1:][same] > data.timestamps[:-1][same]).all()
    again = make_sessions(60, n_tasks=3, n_categorical=2, n_numerical=1, random_state=0)
    pd.testing.assert_frame_equal(data.X, again.X)
    pd.testing.assert_frame_equal(data.y, again.y)
    np.testing.assert_array_equal(data.timestamps, again.timestamps)
    other = make_sessions(60, n_tasks=3, n_categorical=2, n_numerical=1, random_state=1)
    assert not data.X.equals(other.X)
    X, y, sessions, times = make_sessions(5, n_tasks=1, random_state=0, return_X_y=True)
    assert list(y.columns) == ["click"] and len(X) == len(sessions) == len(times)
    bare = make_sessions(5, n_categorical=0, n_numerical=0, random_state=0)
    assert bare.feature_names == ["position"]


def test_make_sessions_lengths():
    data = make_sessions(2000, mean_session_length=4, random_state=0)
    lengths = np.bincount(data.session_ids)
    assert lengths.min() >= 1
    assert lengths.mean() == pytest.approx(4, abs=0.15)
    assert make_sessions(50, mean_session_length=1, random_state=0).X.shape[0] == 50


def click_rates(strength):
    data = make_sessions(4000, sequential_strength=strength, random_state=0)
    click = data.y["click"]
    position = data.X["position"]
    earlier = click.groupby(data.session_ids).cumsum() - click
    middle = position.between(2, 5)
    return {
        "fatigue": click[position >= 8].mean() - click[position == 0].mean(),
        "momentum": click[middle & (earlier > 0)].mean()
        - click[middle & (earlier == 0)].mean(),
    }


def test_make_sessions_position_and_history_matter():
    sequential, independent = click_rates(1.0), click_rates(0.0)
    # Later rows click less (fatigue), rows after a click click more.
    assert sequential["fatigue"] < -0.1
    assert sequential["momentum"] > 0.15
    # With sequential_strength=0 the rows are independent given X.
    assert abs(independent["fatigue"]) < 0.03
    assert abs(independent["momentum"]) < 0.03


def test_make_sessions_satiation():
    data = make_sessions(4000, random_state=0)
    y = data.y
    earlier = y["purchase"].groupby(data.session_ids).cumsum() - y["purchase"]
    clicked = y["click"] == 1
    after = y["purchase"][clicked & (earlier > 0)].mean()
    before = y["purchase"][clicked & (earlier == 0)].mean()
    assert after < before - 0.1
