"""TaskView: one task of a fitted multi-task classifier as a binary classifier.

scikit-learn's tools for binary classifiers (calibration, decision
thresholds, ROC / precision-recall / calibration displays) read ``classes_``
of shape (2,) and ``predict_proba`` of shape (n_samples, 2); the multi-task
estimators have (n_tasks, 2) and (n_samples, n_tasks). The view reads one
column of the fitted model, without copying or refitting it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._validation import task_index

__all__ = ["TaskView"]


class TaskView(ClassifierMixin, BaseEstimator):
    """One task of a fitted multi-task classifier, as a binary classifier.

    Made by :meth:`MTLClassifier.task_estimator
    <sklearn_rmtl.MTLClassifier.task_estimator>` (or directly). It reads the
    task's column of the fitted estimator's predictions: nothing is copied
    and nothing is fitted, so a change to the estimator (a new ``fit``)
    shows in the view.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted multi-task classifier.
    task : str or int
        The task: its name in ``estimator.task_names_``, or its index
        (negative from the end).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The task's labels, ``estimator.classes_[k]``; ``classes_[1]`` is the
        positive one.
    task_name_ : str
        The task's name in ``estimator.task_names_``.
    task_index_ : int
        The task's column in ``estimator.predict_proba``.
    n_features_in_ : int
        Number of input columns the estimator was fitted on.
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        The estimator's input column names, when it was fitted on a
        DataFrame with string column names.

    See Also
    --------
    sklearn.frozen.FrozenEstimator : Wrap the view in it for meta-estimators
        that fit, such as ``CalibratedClassifierCV``.
    sklearn_rmtl.model_selection.PerTaskThresholdClassifier : Per-task
        decision thresholds for the multi-task ``predict``.

    Notes
    -----
    A view is not fitted on its own: :meth:`fit` raises. Meta-estimators
    that fit their estimator take it wrapped in
    :class:`~sklearn.frozen.FrozenEstimator`, which keeps it as it is
    (``CalibratedClassifierCV(FrozenEstimator(view))``,
    ``TunedThresholdClassifierCV(FrozenEstimator(view))``).

    ``clone(view)`` is a new view of the *same* fitted estimator, not a view
    of an unfitted copy: a view has nothing to fit, and it never modifies
    the estimator, so sharing it is safe. A pickled view carries its
    estimator.

    Examples
    --------
    >>> from sklearn.calibration import CalibratedClassifierCV
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> X, Y, s, t = make_sessions(30, return_X_y=True, random_state=0)
    >>> est = MTLClassifier(backbone="sharedbottom", max_epochs=2, random_state=0,
    ...                     backbone_params={"embedding_dim": 4}).fit(X, Y)
    >>> view = est.task_estimator("purchase")
    >>> view.classes_.tolist(), view.predict_proba(X).shape
    ([0, 1], (212, 2))
    >>> calibrated = CalibratedClassifierCV(FrozenEstimator(view)).fit(X, Y["purchase"])
    >>> calibrated.predict_proba(X).shape
    (212, 2)
    """

    def __init__(self, estimator: Any, task: str | int) -> None:
        self.estimator = estimator
        self.task = task

    def __sklearn_clone__(self) -> TaskView:
        # A view of the same fitted estimator: cloning it (sklearn's default)
        # would leave a view of an unfitted model, which no fit can restore.
        return type(self)(estimator=self.estimator, task=self.task)

    def __sklearn_is_fitted__(self) -> bool:
        return _is_fitted(self.estimator)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # The estimator's inputs (categories, strings, NaN), one binary target.
        tags.input_tags = get_tags(self.estimator).input_tags
        tags.classifier_tags.multi_class = False
        return tags

    # ------------------------------------------------------ fitted state
    @property
    def task_index_(self) -> int:
        """The task's column in the estimator's predictions."""
        check_is_fitted(self)
        return task_index(self.task, self.estimator.task_names_)

    @property
    def task_name_(self) -> str:
        """The task's name."""
        return str(self.estimator.task_names_[self.task_index_])

    @property
    def classes_(self) -> np.ndarray:
        """The task's labels, negative then positive."""
        return np.asarray(self.estimator.classes_[self.task_index_])

    @property
    def n_features_in_(self) -> int:
        """Number of input columns of the estimator."""
        check_is_fitted(self)
        return int(self.estimator.n_features_in_)

    @property
    def feature_names_in_(self) -> np.ndarray:
        """Input column names of the estimator (when it has them)."""
        check_is_fitted(self)
        return self.estimator.feature_names_in_  # AttributeError when none

    # ---------------------------------------------------------- methods
    def fit(self, X: Any = None, y: Any = None, **fit_params: Any) -> TaskView:
        """Refuse to fit: a view shows a fitted multi-task estimator.

        Parameters
        ----------
        X : object, default=None
            Ignored.
        y : object, default=None
            Ignored.
        **fit_params : dict
            Ignored.

        Returns
        -------
        self : TaskView
            Never returned.

        Raises
        ------
        TypeError
            Always: fit the multi-task estimator instead, or wrap the view in
            :class:`~sklearn.frozen.FrozenEstimator` for a meta-estimator that
            fits its estimator.
        """
        raise TypeError(
            "A TaskView shows one task of a fitted multi-task estimator and is "
            "not fitted on its own: fit the multi-task estimator, then take "
            "est.task_estimator(task). A meta-estimator that fits its "
            "estimator (CalibratedClassifierCV, TunedThresholdClassifierCV) "
            "takes the view wrapped in sklearn.frozen.FrozenEstimator."
        )

    def decision_function(self, X: Any) -> np.ndarray:
        """Compute the logit (log-odds) of the task's positive label.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_) or \
                ParquetSource
            Features with the columns the estimator was fitted on.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Positive for rows predicted ``classes_[1]``.
        """
        check_is_fitted(self)
        return self.estimator._logits(X)[:, self.task_index_]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Predict the probabilities of the task's two labels.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_) or \
                ParquetSource
            Features with the columns the estimator was fitted on.

        Returns
        -------
        proba : ndarray of shape (n_samples, 2)
            Columns in the order of ``classes_``; the second is column
            ``task_index_`` of ``estimator.predict_proba(X)``.
        """
        positive = expit(self.decision_function(X))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X: Any) -> np.ndarray:
        """Predict the task's label, as the estimator's ``predict`` does.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_) or \
                ParquetSource
            Features with the columns the estimator was fitted on.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            ``classes_[1]`` where the probability is above 0.5.
        """
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def _is_fitted(estimator: Any) -> bool:
    try:
        check_is_fitted(estimator)
    except (TypeError, ValueError, AttributeError):  # NotFittedError included
        return False
    return True
