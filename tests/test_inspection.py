"""critic_diagnostics: what a fit's critics learnt, on sessions they did not see."""

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl import RMTLClassifier, SessionCritic
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


def test_critics_predict_the_returns_of_sessions_they_did_not_see(split):
    (X, y, s, t), train = split
    clf = _fit((X, y, s, t), train)
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
    for column in ("weight_r2_label", "weight_r2_label_free", "weight_r2_both"):
        assert report[column].between(0, 1).all()
    assert (report["weight_r2_both"] >= report["weight_r2_label_free"] - 1e-9).all()
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
