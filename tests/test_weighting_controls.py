"""Controls of RMTL's weights and weights from realised session outcomes."""

import numpy as np
import pytest
from conftest import SMALL, make_session_data

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl._mdp import build_transitions
from sklearn_rmtl._outcome import (
    discounted_later,
    rows_left,
    rows_left_bucket,
    surprise,
)
from sklearn_rmtl._refit import plan_refit
from sklearn_rmtl._rows import ArrayRows
from sklearn_rmtl._weighting import OUTCOME_ALPHA, control, outcome_weights


def _sessions(n=400, seed=0):
    rng = np.random.default_rng(seed)
    sessions = rng.integers(0, 60, n)
    times = rng.permutation(n).astype(float)
    return build_transitions(sessions, times, n), sessions, times


def test_discounted_later_is_the_loop_over_each_session():
    tr, sessions, times = _sessions()
    values = np.random.default_rng(1).normal(size=(len(sessions), 2))
    expected_later = np.zeros_like(values)
    for s in np.unique(sessions):
        rows = np.flatnonzero(sessions == s)
        rows = rows[np.argsort(times[rows], kind="stable")]
        for i, r in enumerate(rows):
            for j, later in enumerate(rows[i + 1 :], start=1):
                expected_later[r] += 0.9**j * values[later]
    got = discounted_later(tr, values, 0.9, include_own=False)
    np.testing.assert_allclose(got, expected_later, rtol=1e-12, atol=1e-12)
    own = discounted_later(tr, values, 0.9, include_own=True)
    np.testing.assert_allclose(own, expected_later + values, rtol=1e-12, atol=1e-12)
    counts = np.bincount(sessions)
    left = rows_left(tr)
    assert (left[tr.done] == 0).all()
    np.testing.assert_array_equal(left + tr.position + 1, counts[sessions])
    assert set(np.unique(rows_left_bucket(tr))) <= set(range(7))


def test_surprise_is_zero_in_expectation_under_calibrated_predictions():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, (200_000, 1))
    y = (rng.random(p.shape) < p).astype(np.float32)
    d = surprise(y, p, None)
    assert abs(d.mean()) < 5e-3
    observed = rng.random(p.shape) < 0.5
    assert (surprise(y, p, observed)[~observed] == 0).all()


@pytest.mark.parametrize("kind", ["shuffled", "flipped"])
def test_controls_keep_the_strata_and_destroy_the_alignment(kind):
    rng = np.random.default_rng(0)
    n = 6000
    y = (rng.random((n, 2)) < 0.3).astype(np.float32)
    bucket = rng.integers(0, 7, n)
    w = 1.0 + rng.gamma(2.0, 0.5, (n, 2)) + y  # labels shift the weights
    out = control(kind, w, y, bucket, np.random.default_rng(1))
    for k in range(2):
        for b in range(7):
            for label in (0, 1):
                rows = (bucket == b) & (y[:, k] == label)
                # The very same weights in every stratum, moved between rows.
                np.testing.assert_array_equal(
                    np.sort(out[rows, k]), np.sort(w[rows, k].astype(np.float32))
                )
                if kind == "flipped":  # ranks reversed
                    rank = np.argsort(np.argsort(w[rows, k]))
                    flipped = np.argsort(np.argsort(-out[rows, k]))
                    np.testing.assert_array_equal(rank, flipped)
        # Within the strata the alignment with the rows is gone (shuffled) or
        # reversed (flipped).
        strata = bucket * 2 + y[:, k].astype(int)
        means = np.bincount(strata, w[:, k]) / np.bincount(strata)
        centred = w[:, k] - means[strata]
        moved = out[:, k] - (w[:, k] - centred)
        rho = np.corrcoef(centred, moved)[0, 1]
        assert abs(rho) < 0.05 if kind == "shuffled" else rho < -0.5


def test_outcome_weights_nest_their_label_mean_control():
    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.random((n, 2)) < 0.2).astype(np.float32)
    returns = rng.gamma(2.0, 1.0, (n, 2)) + 2 * y
    later = rng.normal(size=(n, 2))
    train = (rng.random((n, 2)) < 0.9).astype(float)
    base = outcome_weights(returns, later, y, train, 0.7, label_mean_only=True)
    for k in range(2):
        for label in (0, 1):
            rows = y[:, k] == label
            m = train[rows, k] > 0
            assert np.allclose(base[rows, k], 1 + 0.7 * returns[rows, k][m].mean())
    w = outcome_weights(returns, later, y, train, 0.7)
    ratio = w / base
    assert ratio.min() >= 1 - 2 * OUTCOME_ALPHA - 1e-6
    assert ratio.max() <= 1 + 2 * OUTCOME_ALPHA + 1e-6
    # Monotone in the later rows' surprise, per task.
    for k in range(2):
        order = np.argsort(later[:, k])
        assert (np.diff(ratio[order, k]) >= -1e-6).all()


FAST = dict(
    backbone="sharedbottom",
    backbone_params=SMALL,
    max_epochs=2,
    refit_max_epochs=1,
    critic=SessionCritic(max_epochs=2, hidden_dims=(8,)),
    random_state=0,
)


@pytest.fixture(scope="module")
def sessions():
    X, Y, s, t = make_session_data(n_sessions=60)
    return X, Y, s, t


@pytest.mark.parametrize(
    "weighting",
    ["rmtl_fixed", "rmtl_shuffled", "rmtl_flipped", "outcome", "outcome_session"],
)
def test_every_weighting_fits_and_says_what_loss_weights_cannot(sessions, weighting):
    X, Y, s, t = sessions
    clf = RMTLClassifier(weighting=weighting, **FAST).fit(
        X, Y, session_ids=s, timestamps=t
    )
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.isfinite(proba).all()
    # The outcome weightings read realised sessions, not critics.
    assert (clf.critic_ is None) == weighting.startswith("outcome")
    with pytest.raises(ValueError, match="fixes each training row's weight"):
        clf.loss_weights(X, Y)


def test_shuffled_weights_are_the_fixed_weights_permuted(sessions):
    X, Y, s, t = sessions
    fitted = RMTLClassifier(weighting="rmtl_fixed", **FAST).fit(
        X, Y, session_ids=s, timestamps=t
    )
    data = fitted._prepare(ArrayRows(X, Y, session_ids=s, timestamps=t))
    data.set_encoder(fitted.encoder_)
    weights = {}
    for name in ("rmtl_fixed", "rmtl_shuffled", "outcome", "outcome_shuffled"):
        plan = plan_refit(
            data,
            fitted.net_.module_,
            fitted.critic_,
            weighting=name,
            q_lambda=0.7,
            precision="float32",
            gamma=0.95,
            seed=0,
        )
        weights[name] = plan.extra(data.block(0))["sample_weight"]
    for base, shuffled in (
        ("rmtl_fixed", "rmtl_shuffled"),
        ("outcome", "outcome_shuffled"),
    ):
        np.testing.assert_array_equal(
            np.sort(weights[shuffled], 0), np.sort(weights[base], 0)
        )
        assert not np.array_equal(weights[shuffled], weights[base])
