"""Per-row histories of earlier items (history_column) and the loaders' option."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl.datasets import (
    _history,
    _retailrocket,
    history_column,
    load_kuairand,
    load_retailrocket,
    load_taobao,
)
from sklearn_rmtl.datasets._sessions import history_feature


def random_log(seed, n_rows=400, n_users=8, n_times=12):
    """A shuffled log with many equal timestamps per user, on a scrambled index."""
    rng = np.random.default_rng(seed)
    log = pd.DataFrame(
        {
            "user": rng.integers(0, n_users, n_rows),
            "item": rng.integers(0, 30, n_rows),
            "time": rng.integers(0, n_times, n_rows),
            # A unique id per event: lets a test find the event behind an id.
            "event": np.arange(n_rows),
        },
        index=rng.permutation(np.arange(1000, 1000 + n_rows)),
    )
    return log.sample(frac=1.0, random_state=seed)


def naive_history(log, item, max_len):
    """Reference: per row, scan the whole log (slow, obviously right)."""
    out = []
    for _, row in log.iterrows():
        earlier = log[(log["user"] == row["user"]) & (log["time"] < row["time"])]
        earlier = earlier.sort_values(["time", item])
        values = earlier[item].to_list()
        out.append(
            values if max_len is None else values[max(0, len(values) - max_len) :]
        )
    return out


def as_lists(history):
    return [h.tolist() for h in history]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("max_len", [None, 1, 3, 50])
def test_matches_naive_reference(seed, max_len):
    log = random_log(seed)
    history = history_column(
        log, user="user", item="item", time="time", max_len=max_len
    )
    assert history.index.equals(log.index)
    assert as_lists(history) == naive_history(log, "item", max_len)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_row_sees_itself_or_a_later_event(seed):
    log = random_log(seed)
    # Many ties: every user has several events at each time.
    assert log.duplicated(["user", "time"]).sum() > 250
    history = history_column(log, user="user", item="event", time="time", max_len=None)
    by_event = log.set_index("event")
    for (index, row), seen in zip(log.iterrows(), history, strict=True):
        assert row["event"] not in seen, index
        earlier = by_event.loc[seen]
        assert (earlier["time"] < row["time"]).all(), index
        assert (earlier["user"] == row["user"]).all(), index
        # Nothing strictly earlier is missing either.
        expected = (log["user"] == row["user"]) & (log["time"] < row["time"])
        assert sorted(seen.tolist()) == sorted(log.loc[expected, "event"])


def test_unsorted_input_equals_sorted_input():
    log = random_log(3)
    sorted_log = log.sort_values(["user", "time", "item"])
    shuffled = history_column(log, user="user", item="item", time="time", max_len=4)
    ordered = history_column(
        sorted_log, user="user", item="item", time="time", max_len=4
    )
    assert as_lists(shuffled) == as_lists(ordered.loc[log.index])


def test_recorded_example():
    log = pd.DataFrame(
        {
            "user": ["u", "v", "u", "u", "u", "v", "u"],
            "item": [5, 7, 3, 4, 9, 8, 1],
            "time": [30, 10, 10, 20, 20, 10, 40],
        },
        index=list("abcdefg"),
    )
    history = history_column(log, user="user", item="item", time="time", max_len=3)
    assert history.name == "item_history"
    assert history.dtype == object
    assert history.index.tolist() == list("abcdefg")
    # a: c at 10, then d and e tied at 20 (ties ordered by item); b: v's first
    # event, tied with f; d and e are tied: neither sees the other; g: the 3
    # most recent of 3, 4, 9, 5.
    assert as_lists(history) == [[3, 4, 9], [], [], [3], [3], [], [4, 9, 5]]
    assert all(h.dtype == np.int64 for h in history)


def test_max_len_keeps_the_most_recent():
    log = pd.DataFrame({"user": 1, "item": np.arange(10), "time": np.arange(10)})
    history = history_column(log, user="user", item="item", time="time", max_len=3)
    assert as_lists(history) == [
        [],
        [0],
        [0, 1],
        [0, 1, 2],
        *([i - 3, i - 2, i - 1] for i in range(4, 10)),
    ]
    full = history_column(log, user="user", item="item", time="time", max_len=None)
    assert full.iloc[-1].tolist() == list(range(9))


def test_users_are_separate():
    log = pd.DataFrame(
        {"user": ["a", "b"] * 5, "item": np.arange(10), "time": np.repeat(range(5), 2)}
    )
    history = history_column(log, user="user", item="item", time="time")
    assert as_lists(history[log["user"] == "a"]) == [
        [],
        [0],
        [0, 2],
        [0, 2, 4],
        [0, 2, 4, 6],
    ]
    assert history.iloc[-1].tolist() == [1, 3, 5, 7]


def test_arrays_datetimes_and_strings():
    users = np.array(["x", "y", "x", "x"], dtype=object)
    items = pd.Series(["p", "q", "r", "s"], index=[9, 8, 7, 6])  # index ignored
    times = pd.to_datetime(
        ["2024-01-01 10:00", "2024-01-01 09:00", "2024-01-01 09:00", "2024-01-02 00:00"]
    ).tz_localize("Europe/Paris")
    history = history_column(user=users, item=items, time=times, name="seen")
    assert history.name == "seen"
    assert history.index.equals(pd.RangeIndex(4))
    assert as_lists(history) == [["r"], [], [], ["r", "p"]]
    # Labels and arrays mix; an array keeps the frame's index.
    frame = pd.DataFrame({"u": users}, index=[4, 3, 2, 1])
    mixed = history_column(frame, user="u", item=items.to_numpy(), time=times)
    assert mixed.name == "history"
    assert mixed.index.tolist() == [4, 3, 2, 1]
    assert as_lists(mixed) == as_lists(history)


def test_ties_between_uncomparable_ids_do_not_depend_on_row_order():
    # Tuples and numbers cannot be sorted together: ties are ordered by type
    # name, then text.
    log = pd.DataFrame(
        {"user": 0, "item": pd.Series([3, (1, 2), 1, "a"]), "time": [0, 0, 0, 1]}
    )
    for rows in (log, log.iloc[::-1], log.iloc[[2, 0, 3, 1]]):
        history = history_column(rows, user="user", item="item", time="time")
        assert history.loc[3].tolist() == [1, 3, (1, 2)]


def test_histories_are_read_only_views():
    log = random_log(4)
    history = history_column(log, user="user", item="item", time="time")
    longest = max(history, key=len)
    with pytest.raises(ValueError, match="read-only"):
        longest[0] = -1


def test_polars_and_pyarrow_frames():
    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    log = random_log(5, n_rows=60)
    expected = as_lists(history_column(log, user="user", item="item", time="time"))
    frame = pl.from_pandas(log.reset_index(drop=True))
    got = history_column(frame, user="user", item=frame["item"], time="time")
    assert got.index.equals(pd.RangeIndex(len(log)))
    assert as_lists(got) == expected
    table = pa.Table.from_pandas(log, preserve_index=False)
    assert as_lists(history_column(table, user="user", item="item", time="time")) == (
        expected
    )
    # The column converts to an Arrow / polars list column.
    assert pa.array(got).type == pa.list_(pa.int64())
    assert pl.from_pandas(got.to_frame())["history"].dtype == pl.List(pl.Int64)


def test_empty_log():
    log = pd.DataFrame({"user": [], "item": [], "time": []}, dtype="int64")
    history = history_column(log, user="user", item="item", time="time")
    assert len(history) == 0 and history.dtype == object


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"user": "who"}, r"user='who' is not a column of frame"),
        ({"item": [1, 2]}, "item has 2 values but frame has 4; pass one value per row"),
        ({"item": np.zeros((4, 2))}, r"item must be a column label or a 1-D array"),
        ({"time": "when_text"}, "time must hold numbers or datetimes"),
        ({"time": "flag"}, "time must hold numbers or datetimes"),
        ({"max_len": 0}, "max_len"),
        ({"max_len": 2.5}, "max_len"),
    ],
)
def test_bad_input(kwargs, match):
    log = pd.DataFrame(
        {
            "user": [1, 1, 2, 2],
            "item": [1, 2, 3, 4],
            "time": [1, 2, 3, 4],
            "when_text": ["2024-01-01"] * 4,
            "flag": [True, False, True, False],
        }
    )
    params = {"user": "user", "item": "item", "time": "time", **kwargs}
    with pytest.raises(ValueError, match=match):
        history_column(log, **params)


@pytest.mark.parametrize("param", ["user", "item", "time"])
def test_missing_values_are_rejected(param):
    log = pd.DataFrame(
        {"user": [1.0, 1.0, 2.0], "item": [1.0, 2.0, 3.0], "time": [1.0, 2.0, 3.0]}
    )
    log.loc[1, param] = np.nan
    with pytest.raises(ValueError, match=rf"{param} has 1 missing values .*position 1"):
        history_column(log, user="user", item="item", time="time")


def test_arrays_without_frame_must_have_equal_lengths():
    with pytest.raises(ValueError, match="time has 1 values but user has 2"):
        history_column(user=[1, 2], item=[3, 4], time=[5])


def test_labels_need_a_frame():
    with pytest.raises(
        ValueError, match="user='user' names a column, but frame is None"
    ):
        history_column(user="user", item=[1], time=[1])


# ---------------------------------------------------------------------------
# The loaders' history option
# ---------------------------------------------------------------------------

LOADERS = {
    load_retailrocket: ("visitorid", "itemid"),
    load_taobao: ("user_id", "item_id"),
    load_kuairand: ("user_id", "video_id"),
}


@pytest.mark.parametrize("load", list(LOADERS), ids=lambda f: f.__name__)
def test_loader_history_column(load):
    user, item = LOADERS[load]
    plain = load()
    data = load(history=True, history_len=5)
    column = f"{item}_history"
    # The pair the experiment commands' --history feeds to the models.
    assert history_feature(load.__name__.removeprefix("load_")) == (column, item)
    assert data.feature_names == [*plain.feature_names, column]
    pd.testing.assert_frame_equal(data.X.drop(columns=column), plain.X)
    pd.testing.assert_frame_equal(data.y, plain.y)
    history = data.X[column]
    assert history.dtype == object and len(history) == len(plain.X)
    assert all(h.dtype == np.int64 for h in history.iloc[:100])
    lengths = history.map(len)
    assert lengths.max() == 5 and (lengths == 0).any()
    # Spot-check rows against a direct scan of the user's rows.
    log = pd.DataFrame(
        {
            "user": data.X[user].astype(np.int64),
            "item": data.X[item].astype(np.int64),
            "time": data.timestamps,
        }
    )
    rng = np.random.default_rng(0)
    for i in rng.choice(len(log), 150, replace=False):
        row = log.iloc[i]
        earlier = log[(log["user"] == row["user"]) & (log["time"] < row["time"])]
        expected = earlier.sort_values(["time", "item"])["item"].to_list()[-5:]
        assert history.iloc[i].tolist() == expected, i


def test_loader_history_len_none_and_return_X_y():
    X, *_ = load_kuairand(history=True, history_len=None, return_X_y=True)
    lengths = X["video_id_history"].map(len)
    # Without a cap, a row sees all of its user's rows at earlier times.
    earlier = X.groupby("user_id", observed=True).cumcount()
    assert (lengths <= earlier).all() and lengths.max() > 50


def test_loader_history_uses_only_the_past(tmp_path):
    frame = pd.read_csv(_retailrocket.open_bundled(_retailrocket.BUNDLED))
    cut_time = frame["timestamp"].median()
    for name, part in [("full", frame), ("cut", frame[frame["timestamp"] <= cut_time])]:
        (tmp_path / name).mkdir()
        part.to_csv(tmp_path / name / "events.csv", index=False)
    full = load_retailrocket(tmp_path / "full", history=True)
    cut = load_retailrocket(tmp_path / "cut", history=True)
    keep = full.timestamps <= cut.timestamps.max()
    assert keep.sum() == len(cut.X) > 30_000
    before = full.X.loc[keep, "itemid_history"]
    assert as_lists(before) == as_lists(cut.X["itemid_history"])


@pytest.mark.parametrize("kwargs", [{"history_len": 0}, {"history": "yes"}])
def test_loader_history_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        load_retailrocket(**kwargs)


def test_large_id_ranges_use_the_same_slices():
    # Ranks too large for one int64 sort key take the lexsort path.
    rng = np.random.default_rng(6)
    users, times, items = (rng.integers(0, k, 300) for k in (5, 8, 20))

    def contents(scale):
        order, lo, hi = _history._history_slices(
            users * scale, times * scale, items * scale, 4
        )
        sorted_items = items[order]
        by_row = {}
        for p, row in enumerate(order):
            by_row[row] = sorted_items[lo[p] : hi[p]].tolist()
        return [by_row[row] for row in range(300)]

    assert 5 * 8 * 20 * (2**22) ** 3 >= 2**63
    assert contents(2**22) == contents(1)
