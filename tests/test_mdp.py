"""The session MDP: next-row links, done flags, positions, rewards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_session_data
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_rmtl._mdp import behavior_actions, build_transitions, rewards
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


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), min_size=1, max_size=40),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_mdp_matches_slow_reference(rows, as_strings, rnd):
    """Random sessions, tied times and any row order: the same transitions."""
    sessions = np.array([f"u{s}" if as_strings else s for s, _ in rows], dtype=object)
    keys = np.array([float(t) for _, t in rows])
    tr = build_transitions(sessions, keys, len(rows))
    next_row, done, position = _reference(sessions, keys)
    np.testing.assert_array_equal(tr.done, done)
    np.testing.assert_array_equal(tr.next_row[~done], next_row[~done])
    np.testing.assert_array_equal(tr.position, position)
    # Shuffled rows (ties broken by the new order) still chain every session.
    perm = np.array(rnd.sample(range(len(rows)), len(rows)))
    shuffled = build_transitions(sessions[perm], keys[perm], len(rows))
    linked = ~shuffled.done
    assert shuffled.done.sum() == done.sum()  # one end per session
    assert (keys[perm][shuffled.next_row[linked]] >= keys[perm][linked]).all()
    same_session = sessions[perm][shuffled.next_row[linked]] == sessions[perm][linked]
    assert same_session.all()


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


def test_string_and_integer_session_ids_give_the_same_sessions():
    _X, _Y, s, t = make_session_data(n_sessions=60)
    codes = pd.factorize(s)[0]
    keys = check_metadata(t, len(s), name="timestamps", sortable=True)
    a, b = build_transitions(s, keys, len(s)), build_transitions(codes, keys, len(s))
    np.testing.assert_array_equal(a.next_row, b.next_row)
    np.testing.assert_array_equal(a.done, b.done)


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


@pytest.mark.parametrize("policy_name", ["actor", "uniform"])
def test_behavior_actions_follow_the_canonical_order(policy_name):
    rng = np.random.default_rng(0)
    policy = rng.random((50, 2))
    order = rng.permutation(50)

    def draw(policy, order):
        return behavior_actions(
            policy,
            order,
            behavior_policy=policy_name,
            action_noise=0.1,
            rng=np.random.default_rng(1),
        )

    actions = draw(policy, order)
    assert ((actions >= 0) & (actions <= 1)).all()
    if policy_name == "actor":  # noise clipped at two std
        assert (np.abs(actions - policy) <= 0.2 + 1e-12).all()
    # Permuting the rows (and the order with them) permutes the actions.
    perm = rng.permutation(50)
    inverse = np.argsort(perm)
    np.testing.assert_array_equal(draw(policy[perm], inverse[order]), actions[perm])


def test_logit_exploration_never_pins_an_action_at_the_boundary():
    rng = np.random.default_rng(0)
    policy = np.concatenate(
        [rng.uniform(0, 0.02, (500, 1)), rng.uniform(0, 1, (500, 1))]
    )
    policy = np.hstack([policy, 1 - policy])
    order = np.arange(len(policy))
    draw = {
        name: behavior_actions(
            policy,
            order,
            behavior_policy=name,
            action_noise=0.1,
            rng=np.random.default_rng(1),
        )
        for name in ("actor", "actor_logit")
    }
    # Additive noise pins many near-0 predictions at exactly 0; in logit space
    # every action stays strictly inside (0, 1).
    assert (draw["actor"] == 0).sum() > 50
    assert ((draw["actor_logit"] > 0) & (draw["actor_logit"] < 1)).all()
    # The same draws: the noise moves each logit by at most two std.
    p = np.clip(policy, 1e-4, 1 - 1e-4)
    shift = np.log(draw["actor_logit"] / (1 - draw["actor_logit"])) - np.log(
        p / (1 - p)
    )
    assert np.abs(shift).max() <= 0.2 + 1e-9
    assert np.corrcoef(shift.ravel(), (draw["actor"] - policy).ravel())[0, 1] > 0.5
