"""Per-task ROC, precision-recall and calibration displays."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display in tests; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    roc_auc_score,
)

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.plotting import (
    PerTaskCalibrationDisplay,
    PerTaskPrecisionRecallDisplay,
    PerTaskRocCurveDisplay,
)

DISPLAYS = [
    (PerTaskRocCurveDisplay, RocCurveDisplay),
    (PerTaskPrecisionRecallDisplay, PrecisionRecallDisplay),
    (PerTaskCalibrationDisplay, CalibrationDisplay),
]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted():
    X, Y, _, _ = make_sessions(40, return_X_y=True, random_state=0)
    est = MTLClassifier(
        backbone="sharedbottom",
        backbone_params={"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)},
        max_epochs=2,
        random_state=0,
    ).fit(X, Y)
    return est, X, Y


@pytest.mark.parametrize(("cls", "sklearn_cls"), DISPLAYS)
def test_one_sklearn_display_per_task(fitted, cls, sklearn_cls):
    est, X, Y = fitted
    display = cls.from_estimator(est, X, Y)
    assert display.tasks_ == ["click", "purchase"]
    assert display.ax_.shape == (2,) and display.figure_ is display.ax_[0].figure
    for axis, task in zip(display.ax_, display.tasks_, strict=True):
        assert isinstance(display.displays_[task], sklearn_cls)
        assert display.displays_[task].ax_ is axis and axis.get_title() == task
    # A second estimator drawn on the same panels, for comparison.
    again = cls.from_estimator(est, X, Y, ax=display.ax_[1], name="again", tasks=[1])
    assert again.tasks_ == ["purchase"] and again.ax_[0] is display.ax_[1]


def test_roc_panels_match_sklearn_and_skip_missing_labels(fitted):
    est, X, Y = fitted
    P = est.predict_proba(X)
    Y_missing = Y.astype(float)
    Y_missing.iloc[::3, 1] = np.nan
    display = PerTaskRocCurveDisplay.from_predictions(Y_missing, P)
    observed = Y_missing["purchase"].notna().to_numpy()
    expected = roc_auc_score(Y["purchase"][observed], P[observed, 1])
    assert display.displays_["purchase"].roc_auc == pytest.approx(expected)
    assert display.displays_["click"].roc_auc == pytest.approx(
        roc_auc_score(Y["click"], P[:, 0])
    )
    # The estimator's labels are mapped to 0/1 with its classes_.
    labels = Y.replace({0: "no", 1: "yes"}).astype(str)
    named = MTLClassifier(backbone="sharedbottom", max_epochs=1, random_state=0).fit(
        X, labels
    )
    shown = PerTaskRocCurveDisplay.from_estimator(named, X, labels, tasks="click")
    assert shown.displays_["click"].roc_auc == pytest.approx(
        roc_auc_score(Y["click"], named.predict_proba(X)[:, 0])
    )


def test_calibration_kwargs_reach_sklearn(fitted):
    est, X, Y = fitted
    display = PerTaskCalibrationDisplay.from_estimator(est, X, Y, n_bins=3)
    assert len(display.displays_["click"].prob_true) <= 3


def test_errors_name_the_tasks_and_panels(fitted):
    est, X, Y = fitted
    with pytest.raises(ValueError, match=r"'cart' is not one of the tasks"):
        PerTaskRocCurveDisplay.from_estimator(est, X, Y, tasks=["cart"])
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="one Axes per panel"):
        PerTaskRocCurveDisplay.from_estimator(est, X, Y, ax=ax)
    with pytest.raises(ValueError, match="3 task names"):
        PerTaskRocCurveDisplay.from_predictions(
            Y, est.predict_proba(X), task_names=["a", "b", "c"]
        )
    with pytest.raises(ValueError, match="binary labels"):
        PerTaskRocCurveDisplay.from_predictions(
            pd.DataFrame({"a": [0, 2]}), np.array([[0.2], [0.4]])
        )
