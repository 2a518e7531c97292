"""One task of a two_task_mtl multi-task estimator as a binary classifier (TaskView)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV, CalibrationDisplay
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import RocCurveDisplay, roc_auc_score
from sklearn.model_selection import TunedThresholdClassifierCV
from sklearn.utils import get_tags

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic, TaskView

SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}


def test_view_is_the_tasks_column(two_task_sessions, two_task_mtl):
    X = two_task_sessions[0]
    for task, k in [("purchase", 1), (0, 0), (-1, 1)]:
        view = two_task_mtl.task_estimator(task)
        assert view.task_index_ == k
        assert view.task_name_ == ["click", "purchase"][k]
        np.testing.assert_array_equal(view.classes_, two_task_mtl.classes_[k])
        proba = view.predict_proba(X)
        assert proba.shape == (len(X), 2)
        np.testing.assert_allclose(proba[:, 1], two_task_mtl.predict_proba(X)[:, k])
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(view.predict(X), two_task_mtl.predict(X)[:, k])
        assert (view.decision_function(X) > 0).sum() == (proba[:, 1] > 0.5).sum()
    view = two_task_mtl.task_estimator("purchase")
    assert view.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(view.feature_names_in_, X.columns)
    assert is_classifier(view)
    tags = get_tags(view)
    assert not tags.classifier_tags.multi_class
    assert not tags.target_tags.multi_output
    assert tags.input_tags.categorical  # X's categories reach the estimator


def test_task_errors_name_the_tasks(two_task_mtl):
    with pytest.raises(ValueError, match=r"'cart' is not one of the tasks \['click'"):
        two_task_mtl.task_estimator("cart")
    with pytest.raises(ValueError, match="out of range for a model with 2 tasks"):
        two_task_mtl.task_estimator(2)
    with pytest.raises(TypeError, match="task name"):
        two_task_mtl.task_estimator(1.5)


def test_unfitted_and_fit_refused(two_task_sessions, two_task_mtl):
    X, Y, _, _ = two_task_sessions
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MTLClassifier().task_estimator("click")
    assert not hasattr(TaskView(MTLClassifier(), "click"), "classes_")
    with pytest.raises(TypeError, match="FrozenEstimator"):
        two_task_mtl.task_estimator("click").fit(X, Y["click"])


def test_clone_and_pickle_keep_the_fitted_model(two_task_sessions, two_task_mtl):
    X = two_task_sessions[0]
    view = two_task_mtl.task_estimator("purchase")
    cloned = clone(view)
    assert cloned is not view and cloned.estimator is two_task_mtl
    restored = pickle.loads(pickle.dumps(view))
    np.testing.assert_allclose(restored.predict_proba(X), view.predict_proba(X))


def test_calibration_thresholds_and_displays(two_task_sessions, two_task_mtl):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    X, Y, _, _ = two_task_sessions
    y = Y["purchase"]
    view = two_task_mtl.task_estimator("purchase")
    calibrated = CalibratedClassifierCV(FrozenEstimator(view), method="sigmoid")
    calibrated.fit(X, y)
    p = calibrated.predict_proba(X)[:, 1]
    # Platt scaling on the logits is monotone: the ranking is the view's.
    assert roc_auc_score(y, p) == pytest.approx(
        roc_auc_score(y, view.predict_proba(X)[:, 1])
    )
    # Calibrated on these rows: the mean prediction meets the base rate.
    assert p.mean() == pytest.approx(y.mean(), abs=0.02)

    tuned = TunedThresholdClassifierCV(
        FrozenEstimator(view), scoring="balanced_accuracy", cv=2, random_state=0
    ).fit(X, y)
    assert 0 < tuned.best_threshold_ < 1
    assert set(np.unique(tuned.predict(X))) <= {0, 1}

    roc = RocCurveDisplay.from_estimator(view, X, y)
    assert roc.roc_auc == pytest.approx(roc_auc_score(y, view.predict_proba(X)[:, 1]))
    CalibrationDisplay.from_estimator(view, X, y, n_bins=5)
    plt.close("all")


def test_rmtl_task_estimator(two_task_sessions):
    X, Y, s, t = two_task_sessions
    est = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        critic=SessionCritic(hidden_dims=(8,), max_epochs=1),
        max_epochs=1,
        random_state=0,
    ).fit(X, Y, session_ids=s, timestamps=t)
    view = est.task_estimator("click")
    np.testing.assert_allclose(view.predict_proba(X)[:, 1], est.predict_proba(X)[:, 0])
    calibrated = CalibratedClassifierCV(FrozenEstimator(view)).fit(X, Y["click"])
    assert calibrated.predict_proba(X).shape == (len(X), 2)
