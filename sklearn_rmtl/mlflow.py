"""Log a fit to MLflow: parameters, every phase's curves, per-task metrics.

Needs MLflow (``pip install "sklearn-rmtl[mlflow]"``). :func:`log_fit`
logs to the active MLflow run what ``mlflow.sklearn.autolog`` cannot see in
a multi-task fit; :func:`autolog` does it after every ``fit``, as MLflow's
autologging of LightGBM and XGBoost does. The model itself is logged by
MLflow's scikit-learn flavor, trusting
:func:`~sklearn_rmtl.persistence.skops_trusted_types` (see
docs/persistence.rst).

Names
-----
parameters
    ``get_params(deep=True)``, nested estimators by their own parameters
    (``critic__gamma``, ``actor__lr``).
``{phase}/{key}`` and ``{phase}/{key}/{task}``
    One value per row of ``history_[phase]`` (``pretrain``, ``retrain``,
    ``critic``, ``refit``: the phases the estimator ran), at the row's
    index as the step: ``pretrain/valid_loss``, ``critic/td_loss``,
    ``refit/valid_loss_per_task/click``.
``{dataset}/{task}/{metric}``
    Given ``X`` and ``Y``: ``auc``, ``logloss`` and (given ``session_ids``)
    ``s_logloss`` per task, e.g. ``test/click/auc``.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl.metrics import per_task_log_loss, per_task_roc_auc, session_log_loss

__all__ = ["autolog", "log_fit"]

#: The estimators' own ``fit`` methods while :func:`autolog` has replaced them.
_ORIGINAL_FITS: dict[type, Callable[..., Any]] = {}

_EXTRA = (
    "sklearn_rmtl.mlflow needs MLflow: pip install 'sklearn-rmtl[mlflow]' "
    "(or pip install mlflow)."
)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError(_EXTRA) from exc
    return mlflow


def log_fit(
    estimator: MTLClassifier,
    X: Any = None,
    Y: Any = None,
    *,
    session_ids: Any = None,
    dataset: str = "test",
) -> dict[str, float]:
    """Log a fitted estimator's parameters, curves and per-task metrics to MLflow.

    Logs to the active MLflow run (MLflow starts one if none is): the
    parameters, every value of every phase's per-epoch history, and, given
    ``X`` and ``Y``, each task's AUC, logloss and s-Logloss on them. The
    names are in this module's docstring.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator.
    X : array-like or DataFrame of shape (n_samples, n_features), default=None
        Rows to compute the final metrics on; None logs no final metrics.
    Y : array-like or DataFrame of shape (n_samples, n_tasks), default=None
        Their labels (NaN where missing); required with ``X``.
    session_ids : array-like of shape (n_samples,), default=None
        Session of each row of ``X``; given, the s-Logloss is logged too.
    dataset : str, default="test"
        First part of the final metrics' names (``test/click/auc``).

    Returns
    -------
    metrics : dict of str to float
        The final metrics logged, by name (empty without ``X``).

    Raises
    ------
    ImportError
        If MLflow is not installed.
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If only one of ``X`` and ``Y`` is given.

    See Also
    --------
    sklearn_rmtl.persistence.skops_trusted_types : Trust list for logging the
        model with ``mlflow.sklearn.log_model``.

    Notes
    -----
    Each history row is logged at its index in the phase as the step; values
    that are not numbers (flags, text) are left out, and lists of one number
    per task (``valid_loss_per_task``, ``task_balance``) become one curve
    per task.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.mlflow import log_fit
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(100, 3)), rng.integers(0, 2, size=(100, 2))
    >>> clf = MTLClassifier(backbone="sharedbottom", max_epochs=2, random_state=0,
    ...                     backbone_params={"embedding_dim": 4, "bottom_dims": (8,),
    ...                                      "tower_dims": (4,)}).fit(X, Y)
    >>> import mlflow  # doctest: +SKIP
    >>> with mlflow.start_run():  # doctest: +SKIP
    ...     metrics = log_fit(clf, X, Y)
    >>> sorted(metrics)  # doctest: +SKIP
    ['test/task0/auc', 'test/task0/logloss', 'test/task1/auc', 'test/task1/logloss']
    """
    mlflow = _mlflow()
    check_is_fitted(estimator)
    if (X is None) != (Y is None):
        raise ValueError("log_fit computes final metrics from X and Y: give both.")
    params = {
        key: value
        for key, value in estimator.get_params(deep=True).items()
        # A nested estimator is logged by its own parameters (critic__gamma).
        if not isinstance(value, BaseEstimator)
    }
    mlflow.log_params(params)
    tasks = [str(t) for t in estimator.task_names_]
    for phase, rows in estimator.history_.items():
        for step, row in enumerate(rows):
            curves = _history_values(phase, row, tasks)
            if curves:
                mlflow.log_metrics(curves, step=step)
    metrics = {} if X is None else _final_metrics(estimator, X, Y, session_ids)
    named = {f"{dataset}/{name}": value for name, value in metrics.items()}
    if named:
        mlflow.log_metrics(named)
    return named


def _history_values(
    phase: str, row: dict[str, Any], tasks: list[str]
) -> dict[str, float]:
    """The numbers of one history row, by their metric names."""
    values = {}
    for key, value in row.items():
        if key == "epoch":  # the step
            continue
        if _is_number(value):
            values[f"{phase}/{key}"] = float(value)
        elif (
            isinstance(value, list)
            and len(value) == len(tasks)
            and all(_is_number(v) for v in value)
        ):
            per_task = zip(tasks, value, strict=True)
            values.update({f"{phase}/{key}/{t}": float(v) for t, v in per_task})
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _final_metrics(
    estimator: MTLClassifier, X: Any, Y: Any, session_ids: Any
) -> dict[str, float]:
    proba = estimator.predict_proba(X)
    per_metric = {
        "auc": per_task_roc_auc(Y, proba),
        "logloss": per_task_log_loss(Y, proba),
    }
    if session_ids is not None:
        per_metric["s_logloss"] = session_log_loss(Y, proba, session_ids=session_ids)
    return {
        f"{task}/{metric}": float(values[k])
        for metric, values in per_metric.items()
        for k, task in enumerate(str(t) for t in estimator.task_names_)
    }


def autolog(*, disable: bool = False) -> None:
    """Log every fit of ``MTLClassifier`` and ``RMTLClassifier`` to MLflow.

    After each successful ``fit`` (a search's candidates and refit
    included), :func:`log_fit` logs the estimator's parameters and its
    phases' curves in a run of their own: a new run, or a run nested in
    the active one (so a search's fits do not overwrite each other's
    parameters). A failed fit logs nothing. Per-task metrics need scored
    rows: log them with :func:`log_fit` (``X``, ``Y``) where you have them.

    Parameters
    ----------
    disable : bool, default=False
        Restore the estimators' own ``fit``: nothing is logged any more.

    Examples
    --------
    >>> import sklearn_rmtl.mlflow
    >>> sklearn_rmtl.mlflow.autolog()  # doctest: +SKIP
    >>> MTLClassifier().fit(X, Y)  # doctest: +SKIP
    >>> sklearn_rmtl.mlflow.autolog(disable=True)  # doctest: +SKIP
    """
    from sklearn_rmtl._rmtl import RMTLClassifier

    for cls in (MTLClassifier, RMTLClassifier):
        original = _ORIGINAL_FITS.pop(cls, None)
        if original is not None:
            cls.fit = original  # type: ignore[method-assign]
        if disable:
            continue
        _mlflow()  # the ImportError naming the extra, now rather than in fit
        own = cls.__dict__["fit"]
        _ORIGINAL_FITS[cls] = own
        cls.fit = _logged(own)  # type: ignore[method-assign]


def _logged(fit: Callable[..., Any]) -> Callable[..., Any]:
    """``fit``, then :func:`log_fit` in a new (or nested) MLflow run."""

    @functools.wraps(fit)
    def logged_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        fitted = fit(self, *args, **kwargs)
        mlflow = _mlflow()
        with mlflow.start_run(nested=mlflow.active_run() is not None):
            log_fit(fitted)
        return fitted

    return logged_fit
