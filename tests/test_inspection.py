"""critic_diagnostics: what a fit's critics learnt, on sessions they did not see."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl._mdp import rewards
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.inspection import critic_diagnostics

SMALL = {"embedding_dim": 8, "bottom_dims": (16,), "tower_dims": (8,)}


@pytest.fixture(scope="module")
def split():
    X, y, s, t = make_sessions(400, return_X_y=True, random_state=0)
    return (X, y, s, t), s < 280


def _fit(data, rows, **params):
    X, y, s, t = data
    clf = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        critic=SessionCritic(hidden_dims=(16,), max_epochs=20),
        max_epochs=5,
        random_state=0,
        **params,
    )
    return clf.fit(X[rows], y[rows], session_ids=s[rows], timestamps=t[rows])


@pytest.fixture(scope="module")
def fitted(split):
    data, train = split
    return _fit(data, train)


def test_critics_predict_the_returns_of_sessions_they_did_not_see(split, fitted):
    (X, y, s, t), train = split
    clf = fitted
    held = ~train
    report = critic_diagnostics(
        clf, X[held], y[held], session_ids=s[held], timestamps=t[held]
    )
    assert list(report.index) == ["click", "purchase"]
    assert (report["n_rows"] == held.sum()).all()
    # The synthetic sessions' returns depend on how many rows are left and on
    # the latent intent: a critic that learnt a value ranks them.
    assert (report["q_return_spearman"] > 0.3).all()
    assert (report["q_return_pearson"] > 0.3).all()
    nested = (
        "weight_r2_label_free",
        "weight_r2_both",
        "weight_r2_own_reward",
        "weight_r2_later_return",
    )
    for column in ("weight_r2_label", *nested):
        assert report[column].between(0, 1).all()
    # Each column's regressors contain the previous column's.
    for smaller, larger in itertools.pairwise(nested):
        assert (report[larger] >= report[smaller] - 1e-9).all()
    # y's task columns are matched by name, whatever their order.
    swapped = y[held][["purchase", "click"]]
    pd.testing.assert_frame_equal(
        critic_diagnostics(
            clf, X[held], swapped, session_ids=s[held], timestamps=t[held]
        ),
        report,
    )
    # Shuffling the rows' sessions breaks the returns the critics predict.
    shuffled = np.random.default_rng(0).permutation(s[held])
    broken = critic_diagnostics(
        clf, X[held], y[held], session_ids=shuffled, timestamps=t[held]
    )
    assert (broken["q_return_spearman"] < report["q_return_spearman"]).all()


def test_diagnostics_need_critics_and_sessions(split):
    (X, y, s, t), _ = split
    rows = s < 40
    constant = _fit((X, y, s, t), rows, weighting="constant")
    with pytest.raises(ValueError, match="has no critics to inspect"):
        critic_diagnostics(constant, X, y, session_ids=s)
    clf = _fit((X, y, s, t), rows)
    with pytest.raises(ValueError, match="needs session_ids"):
        critic_diagnostics(clf, X, y, session_ids=None)
    with pytest.raises(ValueError, match="one label per row and task"):
        critic_diagnostics(clf, X, y.iloc[:-1], session_ids=s)
    with pytest.raises(ValueError, match="fitted on 2 tasks"):
        critic_diagnostics(clf, X, y.iloc[:, :1], session_ids=s)


def _later_returns(s, t, reward, gamma):
    """``sum_{j > i} gamma**(j - i) r_j`` over each row's session, by a plain loop."""
    later = np.zeros_like(reward)
    frame = pd.DataFrame({"s": s, "t": t})
    for _, group in frame.groupby("s"):
        order = group.sort_values("t", kind="stable").index.to_numpy()
        running = np.zeros(reward.shape[1])
        for i in order[::-1]:
            later[i] = running
            running = gamma * (reward[i] + running)
    return later


@pytest.mark.parametrize("source", ["own", "later"])
def test_weight_r2_columns_tell_the_rows_own_reward_from_the_sessions_later_return(
    split, fitted, monkeypatch, source
):
    # Critics whose -Q is exactly one of the two parts of the realised return:
    # the column that adds that part explains all of the weights, the one
    # before it does not.
    (X, y, s, t), train = split
    clf = fitted
    rows = ~train
    Xh, yh, sh, th = X[rows], y[rows].to_numpy(float), s[rows], t[rows]
    own = rewards(yh, clf.predict_proba(Xh)).astype(float)
    later = _later_returns(sh, th, own, clf.critic_.gamma)
    target = own if source == "own" else later
    monkeypatch.setattr(
        clf.critic_,
        "row_weights",
        lambda *args, **kwargs: torch.as_tensor(-target),
    )
    report = critic_diagnostics(clf, Xh, y[rows], session_ids=sh, timestamps=th)
    np.testing.assert_allclose(report["weight_r2_later_return"], 1.0, atol=1e-9)
    # On these sessions the label, the entropy and the rows left explain most
    # of either part, so the column without it falls short by a little.
    short = "weight_r2_both" if source == "own" else "weight_r2_own_reward"
    assert (report[short] < 1.0 - 1e-3).all()
    if source == "own":
        np.testing.assert_allclose(report["weight_r2_own_reward"], 1.0, atol=1e-9)
