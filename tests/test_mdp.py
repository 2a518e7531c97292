"""The session MDP: next-row links, done flags, positions, rewards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl._mdp import build_transitions, rewards
from sklearn_rmtl._validation import check_metadata


def _reference(session_ids, keys):
    """Slow per-session loop: the definition the vectorised code must match."""
    n = len(session_ids)
    next_row, done, position = np.arange(n), np.zeros(n, bool), np.zeros(n, int)
    for s in sorted(set(session_ids.tolist())):
        rows = [i for i in range(n) if session_ids[i] == s]
        rows.sort(key=lambda i: (keys[i], i))  # ties keep row order
        for p, i in enumerate(rows):
            position[i] = p
            if p + 1 < len(rows):
                next_row[i] = rows[p + 1]
            else:
                done[i] = True
    return next_row, done, position


def test_hand_built_sessions():
    s = np.array(["b", "a", "b", "a", "c", "b"])
    t = np.array([3.0, 2.0, 1.0, 1.0, 5.0, 3.0])
    tr = build_transitions(s, t, 6)
    # a: rows 3 -> 1; b: rows 2 -> 0 -> 5 (0 and 5 tied: row order); c: row 4
    assert tr.next_row[[3, 2, 0]].tolist() == [1, 0, 5]
    assert tr.done.tolist() == [False, True, False, False, True, True]
    assert tr.position.tolist() == [1, 1, 0, 0, 0, 2]
    assert tr.n_sessions == 3


def test_without_sessions_every_row_ends():
    tr = build_transitions(None, None, 4)
    assert tr.done.all() and tr.position.tolist() == [0, 0, 0, 0]


def test_without_timestamps_row_order_is_used():
    tr = build_transitions(np.array([1, 1, 1]), None, 3)
    assert tr.next_row.tolist() == [1, 2, 2] and tr.done.tolist() == [
        False,
        False,
        True,
    ]


@pytest.mark.parametrize("seed", range(5))
def test_matches_slow_reference_and_is_order_independent(seed):
    rng = np.random.default_rng(seed)
    n = 200
    sessions = rng.integers(0, 30, n)
    keys = rng.integers(0, 1000, n).astype(float)  # distinct enough, no ties
    keys += np.arange(n) * 1e-3
    tr = build_transitions(sessions, keys, n)
    ref = _reference(sessions, keys)
    np.testing.assert_array_equal(tr.next_row[~tr.done], ref[0][~ref[1]])
    np.testing.assert_array_equal(tr.done, ref[1])
    np.testing.assert_array_equal(tr.position, ref[2])
    # Shuffling the input rows permutes the links and nothing else.
    perm = rng.permutation(n)
    shuffled = build_transitions(sessions[perm], keys[perm], n)
    np.testing.assert_array_equal(shuffled.done, tr.done[perm])
    np.testing.assert_array_equal(shuffled.position, tr.position[perm])
    linked = ~shuffled.done
    np.testing.assert_array_equal(
        perm[shuffled.next_row[linked]], tr.next_row[perm][linked]
    )


def test_string_ids_and_datetime_timestamps():
    sessions = check_metadata(
        pd.Series(["u1", "u2", "u1"]), 3, name="session_ids", sortable=False
    )
    times = check_metadata(
        pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-01"]),
        3,
        name="timestamps",
        sortable=True,
    )
    tr = build_transitions(sessions, times, 3)
    assert tr.next_row[2] == 0 and tr.done.tolist() == [True, True, False]


def test_missing_timestamps_are_rejected():
    with pytest.raises(ValueError, match="timestamps contains missing values"):
        check_metadata(np.array([1.0, np.nan]), 2, name="timestamps", sortable=True)


def test_rewards_are_negative_bce_with_clipped_actions():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    a = np.array([[0.8, 0.3], [0.0, 1.0]])
    r = rewards(y, a)
    expected = np.array(
        [
            [np.log(0.8), np.log(0.7)],
            [np.log1p(-1e-4), np.log(1 - 1e-4)],
        ]
    )
    np.testing.assert_allclose(r, expected, rtol=1e-6)
    assert (rewards(y, np.zeros_like(y)) >= np.log(1e-4) - 1e-6).all()
