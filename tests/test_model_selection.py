"""Temporal, session-preserving splits: wholeness, order, sizes, sklearn CV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit, cross_validate

from sklearn_rmtl.model_selection import (
    SessionTimeSeriesSplit,
    TemporalSplit,
    temporal_train_test_split,
)


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def make_sessions(n_sessions=120, seed=0):
    """Rows of interleaved sessions (1 to 9 rows), shuffled, with timestamps."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, size=n_sessions)
    sessions = np.repeat(np.arange(n_sessions), lengths)
    starts = rng.uniform(0, 1000, size=n_sessions)
    times = starts[sessions] + rng.uniform(0, 30, size=sessions.size)
    order = rng.permutation(sessions.size)
    sessions, times = sessions[order], times[order]
    X = rng.normal(size=(sessions.size, 3))
    y = (X[:, 0] + rng.normal(size=sessions.size) > 0).astype(int)
    return X, y, sessions, times


def session_starts(sessions, times):
    return pd.Series(times).groupby(sessions).min()


def assert_whole_and_ordered(parts, sessions, times):
    """No session in two parts; each part's sessions start after the last."""
    starts = session_starts(sessions, times)
    seen = [set(sessions[idx]) for idx in parts]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not seen[i] & seen[j]
            assert starts[list(seen[i])].max() <= starts[list(seen[j])].min()


# ---------------------------------------------------------------------------
# temporal_train_test_split
# ---------------------------------------------------------------------------


def test_split_without_sessions_is_exact_and_ordered():
    rng = np.random.default_rng(0)
    t = rng.permutation(100).astype(float)
    X = np.arange(100)
    train, valid, test = temporal_train_test_split(X, timestamps=t)
    assert (len(train), len(valid), len(test)) == (60, 20, 20)
    assert t[train].max() < t[valid].min() and t[valid].max() < t[test].min()
    assert np.all(np.diff(train) > 0)  # original row order is kept


def test_split_keeps_sessions_whole_with_approximate_sizes():
    _X, _y, s, t = make_sessions()
    parts = temporal_train_test_split(np.arange(len(s)), timestamps=t, session_ids=s)
    assert sum(len(p) for p in parts) == len(s)
    assert_whole_and_ordered(parts, s, t)
    fractions = np.array([len(p) for p in parts]) / len(s)
    np.testing.assert_allclose(fractions, [0.6, 0.2, 0.2], atol=9 / len(s))


def test_split_several_arrays_and_types():
    X, y, s, t = make_sessions(n_sessions=40)
    frame = pd.DataFrame(X, index=np.arange(len(s)) * 10 + 3, columns=list("abc"))
    out = temporal_train_test_split(
        frame, list(y), s, timestamps=pd.Series(t), session_ids=s, sizes=(0.5, 0.5)
    )
    assert len(out) == 6
    f_train, _f_test, y_train, _y_test, s_train, s_test = out
    assert isinstance(f_train, pd.DataFrame) and isinstance(y_train, list)
    rows = (f_train.index.to_numpy() - 3) // 10  # the original index is kept
    np.testing.assert_array_equal(s_train, s[rows])
    np.testing.assert_array_equal(y_train, y[rows])
    assert not set(s_train) & set(s_test)


def test_split_accepts_datetimes():
    t = pd.date_range("2024-01-01", periods=10, freq="h", tz="UTC")[::-1]
    train, _valid, test = temporal_train_test_split(np.arange(10), timestamps=t)
    np.testing.assert_array_equal(test, [0, 1])
    np.testing.assert_array_equal(train, [4, 5, 6, 7, 8, 9])


def test_integer_times_nanoseconds_apart_keep_their_order():
    # 1 ns apart at today's epoch nanoseconds: float64 would tie them all.
    t = np.int64(1_764_547_200_000_000_000) + np.arange(10)[::-1]
    train, _valid, test = temporal_train_test_split(np.arange(10), timestamps=t)
    np.testing.assert_array_equal(test, [0, 1])
    np.testing.assert_array_equal(train, [4, 5, 6, 7, 8, 9])
    # The session links of the MDP follow the times too, not the row order.
    from sklearn_rmtl._mdp import build_transitions
    from sklearn_rmtl._validation import check_metadata

    keys = check_metadata(t[:3], 3, name="timestamps", sortable=True)
    links = build_transitions(np.zeros(3, dtype=int), keys, 3)
    # Row 2 is the earliest, then row 1, then row 0 (the last step).
    np.testing.assert_array_equal(links.next_row, [0, 0, 1])
    np.testing.assert_array_equal(links.done, [True, False, False])


def test_unsigned_times_beyond_int64_are_rejected():
    t = np.array([2**63 + 1, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match="unsigned integers above"):
        temporal_train_test_split(np.arange(2), timestamps=t)


def test_split_timestamps_none_means_row_order():
    train, valid = temporal_train_test_split(
        list("abcde"), timestamps=None, sizes=(0.6, 0.4)
    )
    assert (train, valid) == (["a", "b", "c"], ["d", "e"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": (0.6, 0.2)}, "summing to 1"),
        ({"sizes": (1.0,)}, "at least two"),
        ({"sizes": (0.8, -0.1, 0.3)}, "positive"),
        ({"sizes": "abc"}, "fractions"),
        ({"timestamps": np.arange(9)}, "timestamps must be 1-D"),
        ({"timestamps": np.r_[np.nan, np.arange(9.0)]}, "missing values"),
        ({"session_ids": np.zeros(10)}, "empty"),
    ],
)
def test_split_errors(kwargs, match):
    kwargs = {"timestamps": np.arange(10), **kwargs}
    with pytest.raises(ValueError, match=match):
        temporal_train_test_split(np.arange(10), **kwargs)


def test_split_requires_arrays_of_equal_length():
    with pytest.raises(ValueError, match="At least one array"):
        temporal_train_test_split(timestamps=[1, 2])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        temporal_train_test_split(np.arange(5), np.arange(4), timestamps=np.arange(5))


# ---------------------------------------------------------------------------
# TemporalSplit
# ---------------------------------------------------------------------------


def test_temporal_split_default_is_train_valid_then_test():
    X, _y, s, t = make_sessions()
    cv = TemporalSplit()
    folds = list(cv.split(X, session_ids=s, timestamps=t))
    assert len(folds) == cv.get_n_splits() == 1
    train, test = folds[0]
    assert len(train) + len(test) == len(s)
    assert_whole_and_ordered([train, test], s, t)
    assert len(test) / len(s) == pytest.approx(0.2, abs=9 / len(s))
    # Same cut as the function's last part.
    _, _, last = temporal_train_test_split(
        np.arange(len(s)), timestamps=t, session_ids=s
    )
    np.testing.assert_array_equal(test, last)


def test_temporal_split_train_then_validation_leaves_test_unused():
    X, _y, s, t = make_sessions()
    train, test = next(
        TemporalSplit(train_size=0.6, test_size=0.2).split(X, groups=s, timestamps=t)
    )
    p_train, p_valid, _p_test = temporal_train_test_split(
        np.arange(len(s)), timestamps=t, session_ids=s
    )
    np.testing.assert_array_equal(train, p_train)
    np.testing.assert_array_equal(test, p_valid)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"test_size": 1.0}, "test_size must be a float"),
        ({"train_size": 0}, "train_size must be a float"),
        ({"train_size": 0.9, "test_size": 0.2}, "at most 1"),
    ],
)
def test_temporal_split_errors(params, match):
    with pytest.raises(ValueError, match=match):
        next(TemporalSplit(**params).split(np.zeros((10, 1))))


def test_temporal_split_too_few_sessions_and_conflicting_ids():
    with pytest.raises(ValueError, match="test fold empty"):
        next(TemporalSplit().split(np.zeros((5, 1)), groups=[0, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="differ"):
        next(
            TemporalSplit().split(
                np.zeros((4, 1)), groups=[0, 0, 1, 1], session_ids=[0, 1, 1, 1]
            )
        )


# ---------------------------------------------------------------------------
# SessionTimeSeriesSplit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"n_splits": 3, "max_train_size": 10},
        {"n_splits": 4, "test_size": 5, "gap": 2},
    ],
)
def test_session_ts_split_equals_time_series_split_on_single_rows(params):
    X = np.zeros((40, 1))
    ours = list(SessionTimeSeriesSplit(**params).split(X))
    ref = list(TimeSeriesSplit(**params).split(X))
    assert len(ours) == len(ref)
    for (tr, te), (rtr, rte) in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(tr, rtr)
        np.testing.assert_array_equal(te, rte)


def test_session_ts_split_keeps_sessions_whole_and_expands():
    X, _y, s, t = make_sessions()
    cv = SessionTimeSeriesSplit(n_splits=4)
    folds = list(cv.split(X, session_ids=s, timestamps=t))
    assert len(folds) == cv.get_n_splits() == 4
    n_test_sessions = len(np.unique(s)) // 5
    previous = 0
    for train, test in folds:
        assert_whole_and_ordered([train, test], s, t)
        assert len(np.unique(s[test])) == n_test_sessions
        assert len(train) > previous  # expanding window
        previous = len(train)
    tests = np.concatenate([test for _, test in folds])
    assert len(np.unique(tests)) == len(tests)  # test folds are disjoint


def test_session_ts_split_max_train_size_and_gap_count_sessions():
    s = np.repeat(np.arange(12), 2)
    X = np.zeros((24, 1))
    cv = SessionTimeSeriesSplit(n_splits=2, max_train_size=3, test_size=2, gap=1)
    for train, test in cv.split(X, groups=s):
        train_s, test_s = np.unique(s[train]), np.unique(s[test])
        assert len(train_s) == 3 and len(test_s) == 2
        assert test_s.min() - train_s.max() == 2  # one session left out


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_splits": 1}, "n_splits must be an int >= 2"),
        ({"gap": -1}, "gap must be an int >= 0"),
        ({"test_size": 0}, "test_size must be None or an int >= 1"),
        ({"n_splits": 10}, "at least n_splits \\+ 1 sessions"),
        ({"n_splits": 3, "test_size": 3}, "Too many splits"),
    ],
)
def test_session_ts_split_errors(params, match):
    with pytest.raises(ValueError, match=match):
        list(
            SessionTimeSeriesSplit(**params).split(
                np.zeros((18, 1)), groups=np.arange(18) // 2
            )
        )


def test_splitters_repr():
    cv = SessionTimeSeriesSplit(3, gap=1)
    assert repr(cv) == (
        "SessionTimeSeriesSplit(gap=1, max_train_size=None, n_splits=3, test_size=None)"
    )
    assert repr(TemporalSplit()) == "TemporalSplit(test_size=0.2, train_size=None)"


# ---------------------------------------------------------------------------
# Inside scikit-learn's model selection
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cv", [TemporalSplit(), SessionTimeSeriesSplit(n_splits=3)])
def test_cross_validate_without_routing_uses_groups(cv):
    X, y, s, t = make_sessions()
    order = np.argsort(t)  # without routing rows must be in time order
    X, y, s, t = X[order], y[order], s[order], t[order]
    res = cross_validate(
        LogisticRegression(), X, y, groups=s, cv=cv, return_indices=True
    )
    for train, test in zip(
        res["indices"]["train"], res["indices"]["test"], strict=True
    ):
        assert_whole_and_ordered([train, test], s, t)
    assert np.isfinite(res["test_score"]).all()


@pytest.mark.parametrize("cv", [TemporalSplit(), SessionTimeSeriesSplit(n_splits=3)])
def test_cross_validate_with_routing_uses_timestamps(cv, routing):
    X, y, s, t = make_sessions()
    res = cross_validate(
        LogisticRegression(),
        X,
        y,
        cv=cv,
        params={"session_ids": s, "timestamps": t},
        return_indices=True,
    )
    expected = list(cv.split(X, session_ids=s, timestamps=t))
    assert len(res["indices"]["test"]) == len(expected)
    for (train, test), got_train, got_test in zip(
        expected, res["indices"]["train"], res["indices"]["test"], strict=True
    ):
        np.testing.assert_array_equal(got_train, train)
        np.testing.assert_array_equal(got_test, test)
        assert_whole_and_ordered([train, test], s, t)


def test_grid_search_with_routing(routing):
    X, y, s, t = make_sessions()
    search = GridSearchCV(
        LogisticRegression(),
        {"C": [0.01, 1.0]},
        cv=SessionTimeSeriesSplit(n_splits=3),
        error_score="raise",
    ).fit(X, y, session_ids=s, timestamps=t)
    assert search.n_splits_ == 3
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_split_request_can_be_switched_off(routing):
    X, y, s, t = make_sessions()
    cv = TemporalSplit().set_split_request(timestamps=False)
    with pytest.raises(TypeError, match="timestamps"):
        cross_validate(
            LogisticRegression(),
            X,
            y,
            cv=cv,
            params={"session_ids": s, "timestamps": t},
        )
