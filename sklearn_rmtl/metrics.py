"""Multi-task and session-aware metrics and scorers (paper Sec. 3.1.3).

Every metric takes ``y_true`` of 0/1 labels and ``y_proba`` of P(y = 1), both
1-D (one task) or 2-D of shape (n_samples, n_tasks), and returns one value
per task or their macro average. A NaN in ``y_true`` is a missing label: each
task is scored on its observed rows only. The scorers wrap them for
:class:`~sklearn.model_selection.GridSearchCV` and
:func:`~sklearn.model_selection.cross_validate`; those that need
``session_ids`` receive them through metadata routing.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn import get_config
from sklearn.base import is_classifier
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils._param_validation import StrOptions, validate_params
from sklearn.utils.metadata_routing import UNCHANGED, MetadataRequest
from sklearn.utils.multiclass import type_of_target

from sklearn_rmtl._validation import binarize_labels

__all__ = [
    "METRICS",
    "group_roc_auc",
    "group_roc_auc_scorer",
    "make_task_scorer",
    "metric_spec",
    "per_task_log_loss",
    "per_task_roc_auc",
    "session_log_loss",
    "session_log_loss_scorer",
]

#: Parameter constraints of the metrics, with and without ``session_ids``.
_TARGETS: dict[str, list[Any]] = {
    "y_true": ["array-like"],
    "y_proba": ["array-like"],
    "average": [StrOptions({"macro"}), None],
}
_SESSION_TARGETS = {**_TARGETS, "session_ids": ["array-like"]}

_MISSING_SESSIONS = (
    "The {name} scorer needs the session_ids of the scored rows but received "
    "none. scikit-learn passes metadata to scorers only when metadata routing "
    "is enabled: call sklearn.set_config(enable_metadata_routing=True) and pass "
    "session_ids as fit/cross-validation params, e.g. "
    "cross_validate(est, X, Y, scoring=scorer, params={{'session_ids': s}}) or "
    "GridSearchCV(...).fit(X, Y, session_ids=s). Without routing, keep the "
    "sessions as a column of X and name it in the estimator's session_column. "
    "A direct call takes them as scorer(est, X, Y, session_ids=s)."
)


def _sessions_in_x(estimator: Any, X: Any) -> Any:
    """The session ids in X's column named by the estimator's (or a pipeline's
    last step's) ``session_column``; None when there is none."""
    final = getattr(estimator, "_final_estimator", estimator)
    column = getattr(final, "session_column", None)
    if column is None or not isinstance(X, pd.DataFrame) or column not in X.columns:
        return None
    return X[column].to_numpy()


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _to_2d(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as an (n_samples, n_tasks) array."""
    arr: np.ndarray
    if isinstance(values, pd.DataFrame | pd.Series):
        arr = values.to_numpy()
    else:
        if hasattr(values, "toarray"):
            raise TypeError(f"{name} must be a dense array-like, got a sparse matrix.")
        arr = np.asarray(values)
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (one task) or 2-D of shape (n_samples, n_tasks), "
            f"got shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one sample is required.")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"{name} has no task columns; at least one is required.")
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


def _as_float(arr: np.ndarray, name: str, what: str) -> np.ndarray:
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must hold {what}, got values of dtype {arr.dtype}."
        ) from None


def _check_targets(y_true: Any, y_proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and probabilities; return both as float (n, n_tasks)."""
    y, p = _to_2d(y_true, "y_true"), _to_2d(y_proba, "y_proba")
    if y.dtype == object:  # a missing label (NaN, None, ``pd.NA``) becomes NaN
        y = np.where(pd.isna(y), np.nan, y)
    y = _as_float(y, "y_true", "binary labels 0/1 (or bool)")
    p = _as_float(p, "y_proba", "probabilities")
    if y.shape[0] != p.shape[0]:
        raise ValueError(
            "y_true and y_proba have different numbers of samples: "
            f"{y.shape[0]} and {p.shape[0]}."
        )
    if y.shape[1] != p.shape[1]:
        raise ValueError(
            "y_true and y_proba have different numbers of tasks: "
            f"{y.shape[1]} and {p.shape[1]}."
        )
    bad_mask = (y != 0) & (y != 1) & ~np.isnan(y)
    if bad_mask.any():
        bad = np.unique(y[bad_mask])[:5]
        raise ValueError(
            "y_true must hold binary labels 0/1 (or bool) in every task, NaN "
            f"for a missing label; got values such as {bad.tolist()}."
        )
    if np.isnan(p).any():
        raise ValueError("y_proba contains NaN; every sample needs a probability.")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            "y_proba must hold probabilities in [0, 1]; got values in "
            f"[{p.min():.6g}, {p.max():.6g}]."
        )
    return y, p


def _per_task(
    score: Callable[..., float],
    y: np.ndarray,
    p: np.ndarray,
    codes: np.ndarray | None = None,
) -> np.ndarray:
    """``score`` of each task on its rows with an observed label (not NaN).

    A task without one gets NaN. With session ``codes``, ``score`` also gets
    those of the task's rows, renumbered 0, 1...: sessions (groups) without
    an observed label of the task are left out.
    """
    values = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        rows = ~np.isnan(y[:, k])
        if not rows.any():
            continue
        args = [y[rows, k], p[rows, k]]
        if codes is not None:
            args.append(np.unique(codes[rows], return_inverse=True)[1])
        values[k] = score(*args)
    return values


def _session_codes(session_ids: Any, n_samples: int) -> np.ndarray:
    """Integer code 0..n_sessions-1 of each sample's session."""
    if session_ids is None:
        raise ValueError("session_ids is required: one session id per sample.")
    if isinstance(session_ids, pd.Series | pd.Index):
        arr = session_ids.to_numpy()
    else:
        arr = np.asarray(session_ids)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(
            "session_ids must be 1-D with one entry per sample of y_true "
            f"({n_samples}), got shape {arr.shape}."
        )
    codes, _ = pd.factorize(arr, use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError("session_ids contains missing values (NaN/None).")
    return codes


def _warn_undefined(values: np.ndarray, cause: str, metric: str) -> None:
    """Warn of each task whose value is NaN: ``cause`` in its labels."""
    for task in np.flatnonzero(np.isnan(values)):
        warnings.warn(
            f"{cause} in y_true of task {task}; its {metric} is not defined and "
            "is set to nan.",
            UndefinedMetricWarning,
            stacklevel=4,  # the caller of the public metric
        )


def _reduce(values: np.ndarray, average: str | None) -> np.ndarray | float:
    """Per-task values, or their mean over the tasks where they are defined."""
    if average is None:
        return values
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def _roc_auc_one_task(y: np.ndarray, p: np.ndarray) -> float:
    """:func:`sklearn.metrics.roc_auc_score`, NaN where one class is missing.

    The one-class case is caught here so that the only warning is ours,
    which names the task (:func:`_warn_undefined`).
    """
    return np.nan if np.unique(y).size < 2 else roc_auc_score(y, p)


@validate_params(_TARGETS, prefer_skip_nested_validation=True)
def per_task_roc_auc(y_true, y_proba, *, average=None):
    """Area under the ROC curve of each task.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Binary labels 0/1 (or bool), one column per task; NaN marks a
        missing label, which the task's value skips.
    y_proba : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Predicted probability of label 1, e.g. ``est.predict_proba(X)``.
    average : {"macro"} or None, default=None
        ``None`` returns one AUC per task; ``"macro"`` their unweighted mean
        over the tasks where the AUC is defined.

    Returns
    -------
    auc : ndarray of shape (n_tasks,) or float
        AUC of each task (an array of one value for 1-D input), or their mean
        when ``average="macro"``.

    Warns
    -----
    UndefinedMetricWarning
        When a task's ``y_true`` holds a single class; that task's AUC is
        then ``nan`` (and left out of the macro average).

    See Also
    --------
    group_roc_auc : AUC computed within sessions or users (GAUC).
    sklearn.metrics.roc_auc_score : The single-task metric applied per task.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.metrics import per_task_roc_auc
    >>> y_true = np.array([[0, 0], [1, 0], [1, 1], [0, 1]])
    >>> y_proba = np.array([[0.1, 0.2], [0.8, 0.3], [0.7, 0.9], [0.4, 0.1]])
    >>> per_task_roc_auc(y_true, y_proba)
    array([1. , 0.5])
    >>> per_task_roc_auc(y_true, y_proba, average="macro")
    0.75
    """
    values = _per_task(_roc_auc_one_task, *_check_targets(y_true, y_proba))
    _warn_undefined(values, "Only one class is present", "ROC AUC")
    return _reduce(values, average)


@validate_params(_TARGETS, prefer_skip_nested_validation=True)
def per_task_log_loss(y_true, y_proba, *, average=None):
    """Binary cross-entropy (logloss) of each task.

    Unlike ``sklearn.metrics.log_loss(Y, P)`` on a 2-D target, which treats
    the columns as classes of one multilabel problem and ignores the
    negatives, this is the binary logloss of every task on its own.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Binary labels 0/1 (or bool), one column per task; NaN marks a
        missing label, which the task's value skips.
    y_proba : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Predicted probability of label 1. Probabilities are clipped to
        ``[eps, 1 - eps]`` (``eps`` the float64 machine epsilon), as
        :func:`sklearn.metrics.log_loss` does.
    average : {"macro"} or None, default=None
        ``None`` returns one logloss per task; ``"macro"`` their mean.

    Returns
    -------
    loss : ndarray of shape (n_tasks,) or float
        Logloss of each task (an array of one value for 1-D input), or their
        mean when ``average="macro"``. Lower is better.

    See Also
    --------
    session_log_loss : The paper's s-Logloss, averaged per session first.
    sklearn.metrics.log_loss : The single-task metric applied per task.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.metrics import per_task_log_loss
    >>> y_true = np.array([[1, 0], [0, 0]])
    >>> y_proba = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> per_task_log_loss(y_true, y_proba).round(4)
    array([0.6931, 0.6931])
    """
    score = partial(log_loss, labels=[0, 1])
    return _reduce(_per_task(score, *_check_targets(y_true, y_proba)), average)


def _session_log_loss_one_task(
    y: np.ndarray, p: np.ndarray, codes: np.ndarray
) -> float:
    """Mean over sessions of the mean logloss of their rows.

    That is :func:`sklearn.metrics.log_loss` with each row weighted by one
    over its session's length: every session then weighs 1 in total.
    """
    weights = 1.0 / np.bincount(codes)[codes]
    return float(log_loss(y, p, sample_weight=weights, labels=[0, 1]))


@validate_params(_SESSION_TARGETS, prefer_skip_nested_validation=True)
def session_log_loss(y_true, y_proba, *, session_ids, average=None):
    """Session logloss (the paper's s-Logloss) of each task.

    The logloss is averaged over the rows of each session, then over the
    sessions, so that every session weighs the same whatever its length.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Binary labels 0/1 (or bool), one column per task; NaN marks a
        missing label, which the task's value skips.
    y_proba : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Predicted probability of label 1, clipped as in
        :func:`per_task_log_loss`.
    session_ids : array-like of shape (n_samples,)
        Session of each row (ints or strings); rows of a session need not be
        contiguous.
    average : {"macro"} or None, default=None
        ``None`` returns one value per task; ``"macro"`` their mean.

    Returns
    -------
    loss : ndarray of shape (n_tasks,) or float
        The s-Logloss of each task, or their mean when ``average="macro"``.
        Lower is better.

    See Also
    --------
    per_task_log_loss : The logloss averaged over rows.
    session_log_loss_scorer : This metric as a scorer for model selection.

    References
    ----------
    .. [1] Liu, Z. et al. "Multi-Task Recommendations with Reinforcement
       Learning." WWW 2023, Sec. 3.1.3.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.metrics import session_log_loss
    >>> y_true = np.array([1, 0, 1])
    >>> y_proba = np.array([0.5, 0.5, 0.9])
    >>> round(float(session_log_loss(y_true, y_proba, session_ids=[0, 0, 1])[0]), 4)
    0.3993
    """
    y, p = _check_targets(y_true, y_proba)
    codes = _session_codes(session_ids, y.shape[0])
    return _reduce(_per_task(_session_log_loss_one_task, y, p, codes), average)


def _group_auc_one_task(y: np.ndarray, p: np.ndarray, codes: np.ndarray) -> float:
    """Row-weighted mean over groups with both classes of the per-group AUC.

    Each group's AUC is the Mann-Whitney statistic on within-group average
    ranks (ties share their mean rank, as in ``roc_auc_score``), computed for
    all groups at once from a single sort.
    """
    n = y.shape[0]
    counts = np.bincount(codes).astype(np.float64)
    order = np.lexsort((p, codes))
    c, s, yy = codes[order], p[order], y[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = c[1:] != c[:-1]
    new_run = new_group.copy()
    new_run[1:] |= s[1:] != s[:-1]
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n)
    # 1-based average position of each run of equal (group, score) rows.
    run_rank = (run_start + run_end + 1) / 2
    group_start = np.flatnonzero(new_group)[np.cumsum(new_group) - 1]
    ranks = run_rank[np.cumsum(new_run) - 1] - group_start
    n_pos = np.bincount(c, weights=yy, minlength=counts.size)
    n_neg = counts - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    rank_sum = np.bincount(c, weights=ranks * yy, minlength=counts.size)
    auc = (rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2) / (
        n_pos[valid] * n_neg[valid]
    )
    return float(np.average(auc, weights=counts[valid]))


@validate_params(_SESSION_TARGETS, prefer_skip_nested_validation=True)
def group_roc_auc(y_true, y_proba, *, session_ids, average=None):
    """Group AUC (GAUC): ROC AUC within each session or user, row-weighted.

    The AUC is computed within every group whose labels hold both classes
    (groups with a single class are skipped), then averaged with weights
    equal to the number of rows of each group. Ties in ``y_proba`` get their
    average rank, as in :func:`sklearn.metrics.roc_auc_score`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Binary labels 0/1 (or bool), one column per task; NaN marks a
        missing label, which the task's value skips.
    y_proba : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Predicted probability of label 1.
    session_ids : array-like of shape (n_samples,)
        Group of each row: session ids, or user ids for the per-user GAUC.
    average : {"macro"} or None, default=None
        ``None`` returns one GAUC per task; ``"macro"`` their mean over the
        tasks where it is defined.

    Returns
    -------
    gauc : ndarray of shape (n_tasks,) or float
        GAUC of each task, or their mean when ``average="macro"``.

    Warns
    -----
    UndefinedMetricWarning
        When no group of a task holds both classes; that task's GAUC is then
        ``nan``.

    See Also
    --------
    per_task_roc_auc : The AUC over all rows.
    group_roc_auc_scorer : This metric as a scorer for model selection.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_rmtl.metrics import group_roc_auc
    >>> y_true = np.array([1, 0, 0, 1, 1, 1])
    >>> y_proba = np.array([0.9, 0.2, 0.4, 0.3, 0.8, 0.5])
    >>> group_roc_auc(y_true, y_proba, session_ids=[0, 0, 1, 1, 2, 2])
    array([0.5])
    """
    y, p = _check_targets(y_true, y_proba)
    codes = _session_codes(session_ids, y.shape[0])
    values = _per_task(_group_auc_one_task, y, p, codes)
    _warn_undefined(values, "No group holds both classes", "group ROC AUC")
    return _reduce(values, average)


# ---------------------------------------------------------------------------
# Scorers
# ---------------------------------------------------------------------------


class MetricSpec(NamedTuple):
    """A built-in metric: its function and what the library reads from it.

    :data:`METRICS` holds one per metric; the scorers, the plots, early
    stopping's selection and the ``rmtl`` command's tables all read these
    fields, so a new metric is one entry there.

    Attributes
    ----------
    func : callable
        ``func(y_true, y_proba, **kwargs)`` -> per-task values.
    greater_is_better : bool
        Whether higher values are better.
    needs_sessions : bool
        Whether ``func`` needs ``session_ids``.
    display_name : str
        The paper's name (Sec. 3.1.3), used in tables and plots.
    selection_name : str or None, default=None
        The short name by which ``validation_metric`` and
        ``refit_validation_metric`` select a checkpoint with this metric
        (e.g. ``"auc"``, or ``"auc:<task>"`` for one task); None when it
        cannot select one.
    in_tables : bool, default=False
        Whether it is a column of the paper's tables (Tables 1-2) that the
        ``rmtl`` command writes.
    """

    func: Callable[..., Any]
    greater_is_better: bool
    needs_sessions: bool
    display_name: str
    selection_name: str | None = None
    in_tables: bool = False

    def per_task(
        self, y_true: Any, y_proba: Any, session_ids: Any = None
    ) -> np.ndarray:
        """The metric of each task, given ``session_ids`` when it needs them.

        Parameters
        ----------
        y_true : array-like of shape (n_samples, n_tasks)
            Binary labels 0/1, NaN for a missing label.
        y_proba : array-like of shape (n_samples, n_tasks)
            Predicted probabilities of label 1.
        session_ids : array-like of shape (n_samples,), default=None
            The rows' sessions; passed on only when ``needs_sessions``.

        Returns
        -------
        values : ndarray of shape (n_tasks,)
            The metric of each task, NaN where it is not defined.
        """
        extra = {"session_ids": session_ids} if self.needs_sessions else {}
        return np.asarray(self.func(y_true, y_proba, **extra), dtype=np.float64)


#: The one registry of the built-in metrics, by scorer name: it feeds the
#: validation of ``metric`` and the scorers here, the panels of
#: :class:`~sklearn_rmtl.plotting.MetricComparisonDisplay`, the
#: ``validation_metric`` options of early stopping (``selection_name``) and
#: the tables of the ``rmtl`` command (``in_tables``, in this order).
METRICS: dict[str, MetricSpec] = {
    "roc_auc": MetricSpec(
        per_task_roc_auc, True, False, "AUC", selection_name="auc", in_tables=True
    ),
    "log_loss": MetricSpec(per_task_log_loss, False, False, "Logloss", in_tables=True),
    "session_log_loss": MetricSpec(
        session_log_loss, False, True, "s-Logloss", in_tables=True
    ),
    "group_roc_auc": MetricSpec(
        group_roc_auc, True, True, "GAUC", selection_name="gauc"
    ),
}

_BY_DISPLAY_NAME = {spec.display_name: spec for spec in METRICS.values()}


def metric_spec(name: str) -> MetricSpec:
    """Look up a built-in metric by scorer name or display name.

    Parameters
    ----------
    name : str
        A key of :data:`METRICS` ("roc_auc", "log_loss",
        "session_log_loss", "group_roc_auc") or a display name ("AUC",
        "Logloss", "s-Logloss", "GAUC").

    Returns
    -------
    MetricSpec
        The metric's function, ``greater_is_better``, ``needs_sessions``,
        ``display_name``, ``selection_name`` and ``in_tables``.

    Raises
    ------
    KeyError
        If ``name`` is neither.

    Examples
    --------
    >>> from sklearn_rmtl.metrics import metric_spec
    >>> metric_spec("AUC") == metric_spec("roc_auc")
    True
    >>> metric_spec("s-Logloss").greater_is_better
    False
    """
    return METRICS[name] if name in METRICS else _BY_DISPLAY_NAME[name]


def _positive_proba(estimator: Any, X: Any) -> np.ndarray:
    """``estimator.predict_proba(X)`` as (n_samples, n_tasks) P(y_k = 1).

    A multi-task model returns that shape already; a single-output binary
    classifier's (n_samples, 2) array gives its column of ``classes_[-1]``
    (sklearn's positive class), and a list of one (n_samples, 2) array per
    output (as ``MultiOutputClassifier`` returns) gives each one's last column.
    """
    proba = estimator.predict_proba(X)
    if isinstance(proba, list):
        return np.column_stack([np.asarray(p)[:, -1] for p in proba])
    proba = np.asarray(proba)
    classes = getattr(estimator, "classes_", None)
    if (
        proba.ndim == 2
        and classes is not None
        and is_classifier(estimator)
        and type_of_target(classes) == "binary"
    ):
        if proba.shape[1] < 2:
            raise ValueError(
                f"Got predict_proba of shape {proba.shape}, but need a "
                "classifier with two classes."
            )
        proba = proba[:, -1]
    return proba.reshape(-1, 1) if proba.ndim == 1 else proba


class _TaskScorer:
    """Scorer of a per-task metric on ``predict_proba`` of a multi-task model.

    A plain callable ``scorer(estimator, X, y_true, **metadata)`` that
    speaks scikit-learn's public metadata-routing protocol
    (``get_metadata_routing`` and ``set_score_request``), so that
    ``check_scoring``, dict scoring, ``cross_validate`` and the searches
    route ``session_ids`` to it as to one of sklearn's own scorers. It is
    built by :func:`make_task_scorer`.
    """

    def __init__(
        self,
        score_func: Callable[..., Any],
        sign: int,
        *,
        metric_name: str,
        builtin: bool,
        task: int | str | None,
        average: Any,
        needs_sessions: bool,
    ) -> None:
        self._score_func = score_func
        self._sign = sign
        self._metric_name = metric_name
        self._builtin = builtin
        self._task = task
        self._average = average
        self._needs_sessions = needs_sessions
        # The session metrics request their sessions by default, so that
        # routing needs no set_score_request call.
        self._score_request: dict[str, Any] = (
            {"session_ids": True} if needs_sessions else {}
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Scorers pickled by earlier versions subclassed sklearn's private
        # _BaseScorer: their requests were a MetadataRequest, or implied by
        # the class.
        if "_score_request" not in state:
            old = state.pop("_metadata_request", None)
            if old is not None:
                state["_score_request"] = dict(old.score.requests)
            else:
                needs = state.get("_needs_sessions", False)
                state["_score_request"] = {"session_ids": True} if needs else {}
            state.pop("_kwargs", None)
            state.pop("_response_method", None)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"make_task_scorer({self._metric_name!r}, task={self._task!r}, "
            f"average={self._average!r})"
        )

    def _accepted_metadata(self) -> set[str]:
        return {"session_ids"} if self._needs_sessions else set()

    def get_metadata_routing(self) -> MetadataRequest:
        """Get the metadata this scorer requests, as sklearn's routing reads it.

        Please check scikit-learn's User Guide on metadata routing for how
        the routing mechanism works.

        Returns
        -------
        routing : MetadataRequest
            The requests of the ``score`` method: ``session_ids`` (requested
            by default) for a scorer that needs sessions, nothing otherwise.
        """
        # The owner names the scorer in sklearn's routing error messages.
        request = MetadataRequest(owner=repr(self))
        for param, alias in self._score_request.items():
            request.score.add_request(param=param, alias=alias)
        return request

    def set_score_request(self, **kwargs: Any) -> _TaskScorer:
        """Set which metadata this scorer requests from a meta-estimator.

        Only available when metadata routing is enabled
        (``sklearn.set_config(enable_metadata_routing=True)``).

        Parameters
        ----------
        **kwargs : {True, False, None, str}
            ``session_ids=alias`` for a scorer that needs sessions: ``True``
            requests ``session_ids``, a string requests the metadata of that
            name instead (e.g. ``session_ids="users"`` for a per-user GAUC),
            ``False`` requests none and ``None`` raises if it is passed.

        Returns
        -------
        self : object
            The scorer, with its request updated.

        Raises
        ------
        RuntimeError
            If metadata routing is not enabled.
        TypeError
            If a keyword is metadata that this scorer does not take.
        """
        if not get_config().get("enable_metadata_routing", False):
            raise RuntimeError(
                "This method is only available when metadata routing is enabled. "
                "You can enable it using "
                "sklearn.set_config(enable_metadata_routing=True)."
            )
        allowed = self._accepted_metadata()
        if unexpected := set(kwargs) - allowed:
            raise TypeError(
                f"The {self._metric_name} scorer cannot request "
                f"{sorted(unexpected)}; it accepts {sorted(allowed) or 'no metadata'}."
            )
        # Validate every alias before changing anything.
        request = self.get_metadata_routing()
        for param, alias in kwargs.items():
            if alias is not UNCHANGED:
                request.score.add_request(param=param, alias=alias)
        self._score_request = dict(request.score.requests)
        return self

    def _accept_sample_weight(self) -> bool:
        # Read by GridSearchCV and dict scoring when sample_weight is fitted
        # without routing (they call it on every scorer of a dict, a plain
        # function raising AttributeError there): the metrics take no weights.
        return False

    def __call__(self, estimator: Any, X: Any, y_true: Any, **kwargs: Any) -> float:
        """Score ``estimator`` on ``X`` against ``y_true``.

        Parameters
        ----------
        estimator : object
            Fitted estimator with ``predict_proba`` returning (n_samples,
            n_tasks) probabilities of the positive labels.
        X : array-like or DataFrame of shape (n_samples, n_features)
            Test data.
        y_true : array-like of shape (n_samples, n_tasks)
            True labels, in the estimator's label encoding (``classes_``);
            a missing label (NaN, None, ``pd.NA``) is skipped by its task.
            A DataFrame's columns are matched to the estimator's
            ``task_names_`` by name.
        **kwargs : dict
            ``session_ids`` for session metrics. Accepted here even without
            metadata routing, since a direct call cannot drop them silently.

        Returns
        -------
        score : float
            The metric, negated for losses (greater is better).
        """
        allowed = self._accepted_metadata()
        if unexpected := set(kwargs) - allowed:
            raise TypeError(
                f"The {self._metric_name} scorer got unexpected metadata "
                f"{sorted(unexpected)}; it accepts {sorted(allowed) or 'none'}."
            )
        if self._needs_sessions and kwargs.get("session_ids") is None:
            # Sessions kept as a column of X travel where routing does not.
            kwargs["session_ids"] = _sessions_in_x(estimator, X)
            if kwargs["session_ids"] is None:
                raise ValueError(_MISSING_SESSIONS.format(name=self._metric_name))
        # From here ``kwargs`` holds exactly the metadata that the metric takes.
        proba = _positive_proba(estimator, X)
        y01 = binarize_labels(
            y_true,
            getattr(estimator, "classes_", None),
            getattr(estimator, "task_names_", None),
        )
        columns = self._columns(estimator, y_true, proba.shape[1])
        y_sel, p_sel = y01[:, columns], proba[:, columns]
        if self._builtin:
            values = np.asarray(self._score_func(y_sel, p_sel, **kwargs), dtype=float)
        else:
            values = np.array(
                [
                    self._score_one(y_sel[:, j], p_sel[:, j], kwargs)
                    for j in range(len(columns))
                ]
            )
        return self._sign * self._combine(values, estimator, y_true)

    def _score_one(
        self, y: np.ndarray, p: np.ndarray, metadata: dict[str, Any]
    ) -> float:
        """A callable metric of one task on its rows with an observed label."""
        rows = ~pd.isna(y)
        if not rows.all():
            metadata = {k: np.asarray(v)[rows] for k, v in metadata.items()}
            y, p = y[rows], p[rows]
        return float(self._score_func(y, p, **metadata))

    @staticmethod
    def _task_names(estimator: Any, y_true: Any, why: str) -> list[str]:
        """The tasks' names: the estimator's ``task_names_``, else y's columns."""
        names = getattr(estimator, "task_names_", None)
        if names is None and isinstance(y_true, pd.DataFrame):
            names = y_true.columns
        if names is None:
            raise ValueError(
                f"{why}, but the estimator has no task_names_ attribute and "
                "y_true is not a DataFrame."
            )
        return [str(name) for name in names]

    def _columns(self, estimator: Any, y_true: Any, n_tasks: int) -> list[int]:
        """Indices of the scored tasks: all, or the one named by ``task``."""
        task = self._task
        if task is None:
            return list(range(n_tasks))
        if isinstance(task, str):
            names = self._task_names(
                estimator,
                y_true,
                f"task={task!r} is a name (select the task by integer index)",
            )
            if task not in names:
                raise ValueError(f"task={task!r} is not one of the tasks {names}.")
            return [names.index(task)]
        if not -n_tasks <= task < n_tasks:
            raise ValueError(
                f"task={task} is out of range for a model with {n_tasks} tasks."
            )
        return [int(task) % n_tasks]

    def _weights(self, estimator: Any, y_true: Any, n_tasks: int) -> np.ndarray:
        """The task weights of ``average``, in the order of the model's tasks."""
        if not isinstance(self._average, dict):
            weights = np.asarray(self._average, dtype=float)
            if weights.size != n_tasks:
                raise ValueError(
                    f"average has {weights.size} task weights but the model has "
                    f"{n_tasks} tasks."
                )
            return weights
        names = self._task_names(
            estimator, y_true, "average gives task weights by task name"
        )
        if sorted(names) != sorted(self._average):
            raise ValueError(
                f"average names the tasks {sorted(self._average)} but the model's "
                f"tasks are {names}; give one weight per task."
            )
        return np.array([self._average[name] for name in names])

    def _combine(self, values: np.ndarray, estimator: Any, y_true: Any) -> float:
        if self._task is not None:
            return float(values[0])
        if isinstance(self._average, str):  # "macro"
            return float(_reduce(values, "macro"))
        weights = self._weights(estimator, y_true, values.size)
        defined = ~np.isnan(values)
        if not defined.any() or weights[defined].sum() == 0:
            return float("nan")
        return float(np.average(values[defined], weights=weights[defined]))


#: Scorers pickled by earlier versions name this class; it is the same one.
_SessionTaskScorer = _TaskScorer


@validate_params(
    {
        "metric": [StrOptions(set(METRICS)), callable],
        "task": [Integral, str, None],
        "average": [StrOptions({"macro"}), "array-like", dict],
        "greater_is_better": ["boolean", None],
        "needs_sessions": ["boolean", None],
    },
    prefer_skip_nested_validation=True,
)
def make_task_scorer(
    metric,
    *,
    task=None,
    average="macro",
    greater_is_better=None,
    needs_sessions=None,
):
    """Make a scorer of a per-task metric for multi-task classifiers.

    The scorer calls ``estimator.predict_proba(X)`` (an (n_samples, n_tasks)
    array of P(y_k = 1)), maps ``y_true`` to 0/1 with the estimator's
    ``classes_``, computes the metric per task and returns one task's value
    or an average over tasks. Losses are negated, so greater is better.

    Parameters
    ----------
    metric : {"roc_auc", "log_loss", "session_log_loss", "group_roc_auc"} \
            or callable
        The metric. A callable is called once per scored task as
        ``metric(y_true_k, y_proba_k)`` (plus ``session_ids=...`` when
        ``needs_sessions``) on 1-D 0/1 labels and probabilities and returns
        a float.
    task : int, str or None, default=None
        Score one task only: its index, or its name as found in the fitted
        estimator's ``task_names_`` when scoring. ``None`` scores all tasks.
    average : {"macro"}, array-like of shape (n_tasks,), dict or Series, \
            default="macro"
        How to combine the tasks when ``task=None``: their unweighted mean,
        or a mean weighted by non-negative task weights, given in the
        order of the model's tasks (an array-like) or by task name (a dict,
        or a Series indexed by name, matched to the fitted estimator's
        ``task_names_``, or to the columns of a ``y_true`` DataFrame; it
        must name every task). Tasks whose metric is undefined (``nan``)
        are left out.
    greater_is_better : bool, default=None
        Whether higher metric values are better. ``None`` infers it for the
        named metrics; it must be given for a callable.
    needs_sessions : bool, default=None
        Whether the metric needs ``session_ids``. ``None`` infers it: true
        for the session metrics and for a callable with a ``session_ids``
        parameter.

    Returns
    -------
    scorer : callable
        A scorer ``scorer(estimator, X, y_true, **metadata)``, with
        ``get_metadata_routing`` and ``set_score_request`` for metadata
        routing. A scorer that needs sessions requests ``session_ids`` by
        default; if it receives none, and the estimator's
        ``session_column`` names no column of ``X``, it raises a
        ``ValueError`` instead of scoring.

    See Also
    --------
    session_log_loss_scorer : Ready-made negated s-Logloss scorer.
    group_roc_auc_scorer : Ready-made GAUC scorer.

    Notes
    -----
    scikit-learn hands metadata such as ``session_ids`` to scorers only when
    routing is enabled: call ``sklearn.set_config(enable_metadata_routing=True)``
    and pass ``params={"session_ids": s}`` to ``cross_validate`` (or
    ``session_ids=s`` to ``GridSearchCV.fit``); each fold's scorer then gets
    the session ids of its test rows.

    Where the estimator's labels are 0/1 in the order of its tasks and one
    scores every task, a scorer of a session metric scores as
    ``sklearn.metrics.make_scorer(metric_func, response_method="predict_proba")
    .set_score_request(session_ids=True)``. This one adds what that cannot
    do: labels mapped through ``classes_``, ``y_true`` columns and
    ``task`` matched to the tasks by name, task weights, and sessions read
    from ``X``'s ``session_column`` or taken by a direct call when routing
    is off. Unlike sklearn's own scorers, scorers of a dict do not share
    one ``predict_proba`` call: each one predicts.

    Examples
    --------
    >>> from sklearn_rmtl.metrics import make_task_scorer
    >>> make_task_scorer("roc_auc", task="purchase")
    make_task_scorer('roc_auc', task='purchase', average='macro')
    >>> make_task_scorer("log_loss", average=[0.7, 0.3])
    make_task_scorer('log_loss', task=None, average=[0.7, 0.3])
    >>> make_task_scorer("roc_auc", average={"click": 1, "purchase": 3})
    make_task_scorer('roc_auc', task=None, average={'click': 1.0, 'purchase': 3.0})
    """
    if isinstance(metric, str):
        spec = METRICS[metric]
        name, func, builtin = metric, spec.func, True
        given = {
            "greater_is_better": greater_is_better,
            "needs_sessions": needs_sessions,
        }
        for option, value in given.items():
            if value is not None and value != getattr(spec, option):
                raise ValueError(
                    f"{option}={value} contradicts metric={metric!r}, for which "
                    f"{option}={getattr(spec, option)}."
                )
        greater_is_better = spec.greater_is_better
        needs_sessions = spec.needs_sessions
    else:
        name = getattr(metric, "__name__", repr(metric))
        func, builtin = metric, False
        if greater_is_better is None:
            raise ValueError(
                "greater_is_better must be given for a callable metric: True "
                "for a score, False for a loss."
            )
        if needs_sessions is None:
            try:
                needs_sessions = "session_ids" in inspect.signature(metric).parameters
            except (TypeError, ValueError):
                needs_sessions = False
    if not isinstance(average, str):
        names, values = None, average
        if isinstance(average, pd.Series):
            names, values = list(average.index), average.to_numpy()
        elif isinstance(average, Mapping):
            names, values = list(average), list(average.values())
        try:
            weights = np.asarray(values, dtype=float)
        except (TypeError, ValueError):
            weights = np.array([np.nan])  # not numbers: reported just below
        if weights.ndim != 1 or not (np.isfinite(weights) & (weights >= 0)).all():
            raise ValueError(
                "average must be 'macro' or non-negative task weights (a 1-D "
                f"array, or a dict by task name), got {average!r}."
            )
        if names is None:
            average = weights.tolist()
        else:
            # Stored by name: matched to the fitted model's tasks when scoring.
            average = dict(zip(map(str, names), weights.tolist(), strict=True))
            if len(average) != len(names):
                raise ValueError(f"average names a task twice: {names}.")
    return _TaskScorer(
        func,
        1 if greater_is_better else -1,
        metric_name=name,
        builtin=builtin,
        task=task,
        average=average,
        needs_sessions=needs_sessions,
    )


#: Negated macro s-Logloss over tasks; requests ``session_ids``.
session_log_loss_scorer = make_task_scorer("session_log_loss")

#: Macro GAUC over tasks (groups = the routed ``session_ids``).
group_roc_auc_scorer = make_task_scorer("group_roc_auc")
