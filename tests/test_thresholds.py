"""Per-task decision thresholds (PerTaskThresholdClassifier)."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import TunedThresholdClassifierCV

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl.model_selection import PerTaskThresholdClassifier

SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}


def test_default_predicts_as_the_estimator(two_task_sessions, two_task_mtl):
    X, Y, _, _ = two_task_sessions
    clf = PerTaskThresholdClassifier(FrozenEstimator(two_task_mtl)).fit(X, Y)
    np.testing.assert_array_equal(clf.thresholds_, [0.5, 0.5])
    np.testing.assert_array_equal(clf.predict(X), two_task_mtl.predict(X))
    np.testing.assert_array_equal(clf.predict_proba(X), two_task_mtl.predict_proba(X))
    np.testing.assert_array_equal(clf.classes_, two_task_mtl.classes_)
    np.testing.assert_array_equal(clf.task_names_, ["click", "purchase"])
    np.testing.assert_array_equal(clf.feature_names_in_, X.columns)


@pytest.mark.parametrize(
    "thresholds",
    [{"purchase": 0.1}, {1: 0.1}, [0.5, 0.1], np.array([0.5, 0.1])],
)
def test_thresholds_by_name_index_or_array(two_task_sessions, two_task_mtl, thresholds):
    X, Y, _, _ = two_task_sessions
    clf = PerTaskThresholdClassifier(
        FrozenEstimator(two_task_mtl), thresholds=thresholds
    )
    pred = clf.fit(X, Y).predict(X)
    proba = two_task_mtl.predict_proba(X)
    np.testing.assert_array_equal(clf.thresholds_, [0.5, 0.1])
    np.testing.assert_array_equal(pred[:, 0], two_task_mtl.predict(X)[:, 0])
    np.testing.assert_array_equal(pred[:, 1], (proba[:, 1] > 0.1).astype(int))


@pytest.mark.parametrize(
    ("thresholds", "error", "match"),
    [
        ({"cart": 0.3}, ValueError, r"'cart' is not one of the tasks \['click', "),
        ([0.5, 0.5, 0.5], ValueError, "one threshold per task"),
        ({"click": 1.5}, ValueError, r"in \[0, 1\]; got \{'click': 1.5\}"),
        (1.5, ValueError, "thresholds"),
    ],
)
def test_invalid_thresholds(two_task_sessions, two_task_mtl, thresholds, error, match):
    X, Y, _, _ = two_task_sessions
    clf = PerTaskThresholdClassifier(
        FrozenEstimator(two_task_mtl), thresholds=thresholds
    )
    with pytest.raises(error, match=match):
        clf.fit(X, Y)


def test_thresholds_tuned_per_task_on_views(two_task_sessions, two_task_mtl):
    # The documented recipe: tune each task's threshold on its view.
    X, Y, _, _ = two_task_sessions
    tuned = {
        task: TunedThresholdClassifierCV(
            FrozenEstimator(two_task_mtl.task_estimator(task)),
            scoring="balanced_accuracy",
            cv="prefit",
            refit=False,
        )
        .fit(X, Y[task])
        .best_threshold_
        for task in two_task_mtl.task_names_
    }
    clf = PerTaskThresholdClassifier(FrozenEstimator(two_task_mtl), thresholds=tuned)
    clf.fit(X, Y)
    np.testing.assert_allclose(clf.thresholds_, list(tuned.values()))


def test_fits_a_clone_and_routes_fit_params(two_task_sessions):
    X, Y, s, t = two_task_sessions
    est = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        critic=SessionCritic(hidden_dims=(8,), max_epochs=1),
        max_epochs=1,
        random_state=0,
    )
    clf = PerTaskThresholdClassifier(est, thresholds={"click": 0.4})
    clf.fit(X, Y, session_ids=s, timestamps=t)  # routing off: passed through
    assert "estimator_" not in vars(est) and hasattr(clf.estimator_, "net_")
    with sklearn.config_context(enable_metadata_routing=True):
        routed = clone(clf).fit(X, Y, session_ids=s, timestamps=t)
    np.testing.assert_allclose(routed.predict_proba(X), clf.predict_proba(X))
