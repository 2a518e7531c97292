"""PerTaskThresholdClassifier: a decision threshold per task for ``predict``.

The multi-task ``predict`` labels a task positive where its probability is
above 0.5. The thresholds that serve each task (a rare purchase, a frequent
click) differ; as scikit-learn does with
:class:`~sklearn.model_selection.FixedThresholdClassifier`, they are set by a
meta-estimator around the model rather than by a parameter of it, so that the
model's own ``predict`` never changes meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    process_routing,
)
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._validation import task_index

__all__ = ["PerTaskThresholdClassifier"]


class PerTaskThresholdClassifier(ClassifierMixin, BaseEstimator):
    """A multi-task classifier whose ``predict`` uses a threshold per task.

    ``predict_proba`` is the wrapped estimator's; ``predict`` labels task k
    positive (``classes_[k, 1]``) where its probability is above
    ``thresholds_[k]``. With every threshold at 0.5 it predicts what the
    estimator predicts.

    Parameters
    ----------
    estimator : MTLClassifier, RMTLClassifier or FrozenEstimator
        The multi-task classifier: cloned and fitted by :meth:`fit`, or,
        wrapped in :class:`~sklearn.frozen.FrozenEstimator`, a fitted one
        used as it is.
    thresholds : float, dict of str to float or array-like of shape \
            (n_tasks,), default=0.5
        Probability above which each task is predicted positive: one for
        every task, a dict by task name (tasks it does not name keep 0.5),
        or one per task in the order of ``task_names_``. Each in [0, 1].

    Attributes
    ----------
    estimator_ : estimator
        The fitted estimator.
    thresholds_ : ndarray of shape (n_tasks,)
        The threshold of each task.
    classes_ : ndarray of shape (n_tasks, 2)
        The estimator's labels of each task.
    task_names_ : ndarray of str of shape (n_tasks,)
        The estimator's task names.
    n_features_in_ : int
        Number of input columns seen in :meth:`fit`.
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        Input column names, when the estimator has them.

    See Also
    --------
    sklearn.model_selection.FixedThresholdClassifier : The same for one
        binary task.
    sklearn.model_selection.TunedThresholdClassifierCV : Chooses the
        threshold of one task; apply it to :meth:`MTLClassifier.task_estimator
        <sklearn_rmtl.MTLClassifier.task_estimator>` views to tune each task.

    Notes
    -----
    Fit parameters (``session_ids``, ``timestamps``...) reach the estimator
    through metadata routing when it is enabled, and as they are otherwise.

    Examples
    --------
    >>> from sklearn.frozen import FrozenEstimator
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> from sklearn_rmtl.model_selection import PerTaskThresholdClassifier
    >>> X, Y, s, t = make_sessions(30, return_X_y=True, random_state=0)
    >>> est = MTLClassifier(backbone="sharedbottom", max_epochs=2,
    ...                     random_state=0).fit(X, Y)
    >>> clf = PerTaskThresholdClassifier(FrozenEstimator(est),
    ...                                  thresholds={"purchase": 0.2}).fit(X, Y)
    >>> clf.thresholds_
    array([0.5, 0.2])
    >>> clf.predict(X).shape
    (212, 2)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "thresholds": [Interval(Real, 0, 1, closed="both"), dict, "array-like"],
    }

    def __init__(self, estimator: Any, *, thresholds: Any = 0.5) -> None:
        self.estimator = estimator
        self.thresholds = thresholds

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, **fit_params: Any) -> PerTaskThresholdClassifier:
        """Fit the estimator and check the thresholds against its tasks.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Training features.
        y : {DataFrame, array-like} of shape (n_samples, n_tasks)
            Training labels.
        **fit_params : dict
            Passed to the estimator's ``fit`` (routed when metadata routing
            is enabled).

        Returns
        -------
        self : PerTaskThresholdClassifier
            The fitted classifier.
        """
        if get_config()["enable_metadata_routing"]:
            fit_params = process_routing(self, "fit", **fit_params).estimator.fit
        self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        self.thresholds_ = self._check_thresholds(self.estimator_.task_names_)
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, name):
                setattr(self, name, getattr(self.estimator_, name))
        return self

    def _check_thresholds(self, task_names: Any) -> np.ndarray:
        """One threshold in [0, 1] per task, from any accepted form."""
        names = [str(t) for t in task_names]
        given = self.thresholds
        if isinstance(given, Mapping):
            values = np.full(len(names), 0.5)
            for task, value in given.items():
                values[task_index(task, names)] = value
        elif isinstance(given, Real):
            values = np.full(len(names), float(given))
        else:
            values = np.asarray(given, dtype=float)
            if values.shape != (len(names),):
                raise ValueError(
                    f"thresholds has shape {values.shape} but the model has "
                    f"{len(names)} tasks {names}; give one threshold per task, "
                    "or a dict by task name."
                )
        bad = ~((values >= 0) & (values <= 1))  # NaN included
        if bad.any():
            shown = {names[k]: float(values[k]) for k in np.flatnonzero(bad)}
            raise ValueError(
                f"thresholds must be probabilities in [0, 1]; got {shown}."
            )
        return values

    @property
    def classes_(self) -> np.ndarray:
        """The estimator's labels of each task."""
        check_is_fitted(self)
        return self.estimator_.classes_

    @property
    def task_names_(self) -> np.ndarray:
        """The estimator's task names."""
        check_is_fitted(self)
        return self.estimator_.task_names_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each task's positive label (the estimator's).

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_)
            Features with the columns seen in :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_tasks)
            ``proba[i, k]`` is P(task k = ``classes_[k, 1]``) for row i.
        """
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """Label of every task: positive where its probability is above its threshold.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_)
            Features with the columns seen in :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples, n_tasks)
            Labels from ``classes_``.
        """
        positive = self.predict_proba(X) > self.thresholds_
        classes = self.classes_
        return np.column_stack(
            [classes[k][positive[:, k].astype(int)] for k in range(len(classes))]
        )

    def get_metadata_routing(self) -> MetadataRouter:
        """Route ``fit``'s metadata to the estimator's ``fit``.

        Returns
        -------
        routing : MetadataRouter
            The routing of this meta-estimator.
        """
        return MetadataRouter(owner=self).add(
            estimator=self.estimator,
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.input_tags = inner.input_tags
        tags.target_tags = inner.target_tags
        tags.classifier_tags = inner.classifier_tags
        return tags
