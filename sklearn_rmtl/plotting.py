"""Plots of fitted estimators, following scikit-learn's Display API.

Each display computes what it draws in a class method
(``from_estimator`` or ``from_estimators``) and draws it with ``plot``,
which can be called again on other axes. After ``plot`` the display holds
the matplotlib objects it made (``ax_``, ``figure_`` and the artists).

matplotlib is an optional dependency: ``pip install "sklearn-rmtl[plot]"``.
It is imported only when a display draws, so the rest of the library works
without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._mdp import build_transitions
from sklearn_rmtl._validation import binarize_labels, check_metadata, task_index
from sklearn_rmtl.metrics import METRICS, _check_targets, metric_spec

__all__ = [
    "LossWeightsDisplay",
    "MetricComparisonDisplay",
    "PerTaskCalibrationDisplay",
    "PerTaskPrecisionRecallDisplay",
    "PerTaskRocCurveDisplay",
    "TrainingCurvesDisplay",
]

_INSTALL = 'pip install "sklearn-rmtl[plot]"'


def _pyplot(caller: str) -> Any:
    """Import ``matplotlib.pyplot`` or say how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"{caller} needs matplotlib, an optional dependency of sklearn-rmtl. "
            f"Install it with: {_INSTALL}"
        ) from exc
    return plt


def _panels(
    ax: Any, n_panels: int, caller: str, *, width: float = 4.2, height: float = 3.4
) -> tuple[np.ndarray, Any]:
    """One Axes per panel: new ones in a row, or the user's ``ax``."""
    plt = _pyplot(caller)
    if ax is None:
        fig, axes = plt.subplots(
            1,
            n_panels,
            figsize=(width * n_panels, height),
            layout="constrained",
            squeeze=False,
        )
        return axes.ravel(), fig
    axes = np.asarray(ax, dtype=object).ravel()  # one Axes, or an array of them
    if axes.size != n_panels:
        raise ValueError(
            f"{caller} draws {n_panels} panel(s) and needs one Axes per panel; "
            f"ax holds {axes.size}."
        )
    return axes, axes[0].figure


def _default_name(estimator: Any) -> str:
    """``"RMTLClassifier (ple)"``: the class and its backbone's name."""
    actor = getattr(estimator, "actor", None)  # a given MTLClassifier
    backbone = getattr(estimator if actor is None else actor, "backbone", None)
    name = type(estimator).__name__
    return f"{name} ({backbone})" if isinstance(backbone, str) else name


# ---------------------------------------------------------------- training
_PHASE_TITLES = {
    "pretrain": "pretrain",
    "critic": "critic (TD learning)",
    "refit": "refit (Q-weighted)",
}
# Curve labels other than the key's words (train_loss: "train loss").
_CURVE_LABELS = {
    "valid_loss": "validation loss",
    "valid_auc": "validation AUC",
    "valid_gauc": "validation GAUC",
    "td_loss": "TD loss",
    "actor_valid_loss": "actor validation loss",
}
# Per-epoch entries that are not curves.
_SELECTION = {"best_at", "best_step", "restored_start"}
_NOT_CURVES = {
    "epoch",
    "dur",
    "steps",
    "fold",
    *_SELECTION,
    *(f"actor_{k}" for k in _SELECTION),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(
        value, bool | np.bool_
    )


class TrainingCurvesDisplay:
    """Training curves of every phase of a fit, one panel per phase.

    Build it with :meth:`from_estimator`; the constructor takes a history
    already extracted. Each panel plots, against the epoch, every numerical
    per-epoch entry of a phase: ``train_loss`` and ``valid_loss`` (held-out
    BCE) for ``"pretrain"`` and ``"refit"``, ``td_loss`` (and ``actor_loss``
    and ``actor_valid_loss`` with ``actor_update=True``) for ``"critic"``.

    Parameters
    ----------
    history : dict of str to list of dict
        Per-phase, per-epoch records, as in the ``history_`` attribute of
        :class:`~sklearn_rmtl.MTLClassifier` and
        :class:`~sklearn_rmtl.RMTLClassifier`.
    estimator_name : str, default=None
        Name shown as the figure title; ``None`` shows none.

    Attributes
    ----------
    ax_ : ndarray of matplotlib Axes of shape (n_panels,)
        One Axes per plotted phase, in the order of ``history``.
    figure_ : matplotlib Figure
        The figure holding the panels.
    lines_ : dict of str to list of matplotlib Line2D
        The curves of each plotted phase.
    phases_ : list of str
        The plotted phases.

    See Also
    --------
    LossWeightsDisplay : The refit's loss weights.
    MetricComparisonDisplay : Test metrics of several estimators.

    Notes
    -----
    A phase without epochs (the critic phase when a fitted ``critic`` was
    given, or with ``weighting="constant"``) has no panel unless it is
    requested through ``phases``. When the refit kept the pretrained weights
    (``refit_improved_`` is False) the refit panel's title says so.

    Examples
    --------
    >>> from sklearn_rmtl import RMTLClassifier, SessionCritic
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> from sklearn_rmtl.plotting import TrainingCurvesDisplay
    >>> X, Y, s, t = make_sessions(30, return_X_y=True, random_state=0)
    >>> clf = RMTLClassifier(
    ...     backbone="sharedbottom", max_epochs=2, random_state=0,
    ...     backbone_params={"embedding_dim": 4, "bottom_dims": (8,),
    ...                      "tower_dims": (4,)},
    ...     critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
    ... ).fit(X, Y, session_ids=s, timestamps=t)
    >>> display = TrainingCurvesDisplay.from_estimator(clf)
    >>> display.phases_
    ['pretrain', 'critic', 'refit']
    >>> [line.get_label() for line in display.lines_["refit"]]
    ['train loss', 'validation loss']
    """

    def __init__(
        self,
        *,
        history: Mapping[str, Sequence[Mapping[str, Any]]],
        estimator_name: str | None = None,
    ) -> None:
        self.history = history
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        *,
        phases: Sequence[str] | None = None,
        ax: Any = None,
        name: str | None = None,
    ) -> TrainingCurvesDisplay:
        """Plot the training curves of a fitted estimator.

        Parameters
        ----------
        estimator : MTLClassifier or RMTLClassifier
            A fitted estimator with a ``history_`` attribute.
        phases : sequence of str, default=None
            Phases to plot, from ``"pretrain"``, ``"critic"`` and ``"refit"``
            (the keys of ``history_``). ``None`` plots every phase that ran
            at least one epoch.
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per plotted phase. ``None`` makes a new figure with the
            panels in a row.
        name : str, default=None
            Figure title; ``None`` uses the estimator's class and backbone.

        Returns
        -------
        display : TrainingCurvesDisplay
            The display, with the drawn objects in ``ax_``, ``figure_`` and
            ``lines_``.
        """
        check_is_fitted(estimator)
        history = getattr(estimator, "history_", None)
        if not isinstance(history, Mapping):
            raise TypeError(
                "TrainingCurvesDisplay needs an estimator with a history_ dict "
                f"(MTLClassifier or RMTLClassifier); got {type(estimator).__name__}."
            )
        name = _default_name(estimator) if name is None else name
        display = cls(history=history, estimator_name=name)
        return display.plot(ax=ax, phases=phases)

    def plot(
        self,
        ax: Any = None,
        *,
        phases: Sequence[str] | None = None,
        name: str | None = None,
    ) -> TrainingCurvesDisplay:
        """Draw one panel of curves per phase.

        Parameters
        ----------
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per plotted phase. ``None`` makes a new figure with the
            panels in a row.
        phases : sequence of str, default=None
            Phases to plot (keys of ``history``). ``None`` plots every phase
            with at least one epoch.
        name : str, default=None
            Figure title; ``None`` uses ``estimator_name``.

        Returns
        -------
        display : TrainingCurvesDisplay
            This display, with ``ax_``, ``figure_``, ``lines_`` and
            ``phases_`` set.
        """
        if phases is None:
            chosen = [p for p, rows in self.history.items() if len(rows)]
            if not chosen:
                raise ValueError("The history has no epoch in any phase to plot.")
        else:
            chosen = [phases] if isinstance(phases, str) else list(phases)
            unknown = [p for p in chosen if p not in self.history]
            if unknown or not chosen:
                raise ValueError(
                    f"phases {unknown or chosen} are not in the history; "
                    f"available phases are {list(self.history)}."
                )
        axes, fig = _panels(ax, len(chosen), "TrainingCurvesDisplay")
        lines: dict[str, list[Any]] = {}
        for axis, phase in zip(axes, chosen, strict=True):
            lines[phase] = self._plot_phase(axis, phase)
        name = self.estimator_name if name is None else name
        if name:
            fig.suptitle(name)
        self.ax_, self.figure_, self.lines_, self.phases_ = axes, fig, lines, chosen
        return self

    def _plot_phase(self, axis: Any, phase: str) -> list[Any]:
        from matplotlib.ticker import MaxNLocator

        rows = list(self.history[phase])
        title = _PHASE_TITLES.get(phase, phase)
        if rows and rows[-1].get("restored_start"):
            title += "\npretrained weights kept"
        if rows and rows[-1].get("actor_restored_start"):
            title += "\npretrained actor kept"
        axis.set(title=title, xlabel="epoch", ylabel="loss")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not rows:
            axis.text(
                0.5,
                0.5,
                "no epochs",
                ha="center",
                va="center",
                transform=axis.transAxes,
            )
            return []
        keys = dict.fromkeys(k for row in rows for k in row if k not in _NOT_CURVES)
        # Cross-fitted critics (SessionCritic's cv): one curve per fold.
        folds = dict.fromkeys(row.get("fold") for row in rows)
        drawn = []
        for fold in folds:
            part = [row for row in rows if row.get("fold") == fold]
            epochs = [row.get("epoch", i + 1) for i, row in enumerate(part)]
            for key in keys:
                values = [row.get(key) for row in part]
                if not all(v is None or _is_number(v) for v in values):
                    continue
                y = np.array([np.nan if v is None else float(v) for v in values])
                label = _CURVE_LABELS.get(key, key.replace("_", " "))
                (line,) = axis.plot(
                    epochs,
                    y,
                    marker="o",
                    label=label if fold is None else f"{label}, fold {fold}",
                )
                drawn.append(line)
        epochs = sorted({row.get("epoch", i + 1) for i, row in enumerate(rows)})
        if epochs[-1] - epochs[0] < 1:
            # One epoch: MaxNLocator's integer ticks need a range of 1 at least.
            axis.set_xticks(epochs)
        axis.legend()
        return drawn


# ------------------------------------------------------------ loss weights
class LossWeightsDisplay:
    """The refit's loss weights: their distribution and their trend in sessions.

    The left panel shows a histogram of the per-row weights of each task;
    the right one the mean weight of each task at each position in the
    session (1 = a session's first row). Build it with
    :meth:`from_estimator`.

    Parameters
    ----------
    weights : ndarray of shape (n_samples, n_tasks)
        Per-row, per-task loss weights, as from
        :meth:`RMTLClassifier.loss_weights <sklearn_rmtl.RMTLClassifier.loss_weights>`.
    positions : ndarray of shape (n_samples,)
        0-based position of each row in its session.
    task_names : array-like of str of shape (n_tasks,)
        Task names, for the legends.
    estimator_name : str, default=None
        Name shown as the figure title; ``None`` shows none.

    Attributes
    ----------
    ax_ : ndarray of matplotlib Axes of shape (2,)
        The histogram panel and the by-position panel.
    figure_ : matplotlib Figure
        The figure holding the panels.
    hist_ : list of tuple
        Per task, what :meth:`matplotlib.axes.Axes.hist` returned
        (counts, bin edges, patches).
    lines_ : list of matplotlib Line2D
        Per task, the mean weight by position.
    mean_by_position_ : DataFrame of shape (n_positions, n_tasks)
        The plotted means, indexed by 1-based position, over the rows with a
        label of the task (NaN weights, missing labels, are left out here and
        in the histograms); positions without rows are left out.
    rows_by_position_ : Series of shape (n_positions,)
        Number of rows at each plotted position.

    See Also
    --------
    TrainingCurvesDisplay : Losses of every phase of the fit.
    sklearn_rmtl.RMTLClassifier.loss_weights : The weights plotted here.

    Notes
    -----
    With ``weighting="rmtl"`` the weight is ``1 - q_lambda * Q`` with
    ``Q <= 0``, so weights are at least 1, and larger where the critic
    expects a lower (worse) discounted session return from that row on.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import RMTLClassifier, SessionCritic
    >>> from sklearn_rmtl.plotting import LossWeightsDisplay
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"item": rng.choice(["a", "b", "c"], 300),
    ...                   "position": np.tile(np.arange(10), 30)})
    >>> click = X["item"] == "a"
    >>> Y = np.column_stack([click, click & (rng.random(300) < 0.5)])
    >>> sessions = np.repeat(np.arange(30), 10)
    >>> small = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> clf = RMTLClassifier(backbone="sharedbottom", backbone_params=small,
    ...                      critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
    ...                      max_epochs=2, random_state=0)
    >>> clf = clf.fit(X, Y, session_ids=sessions, timestamps=X["position"])
    >>> display = LossWeightsDisplay.from_estimator(
    ...     clf, X, Y, session_ids=sessions, timestamps=X["position"])
    >>> display.mean_by_position_.shape
    (10, 2)
    """

    def __init__(
        self,
        *,
        weights: np.ndarray,
        positions: np.ndarray,
        task_names: Sequence[str],
        estimator_name: str | None = None,
    ) -> None:
        self.weights = weights
        self.positions = positions
        self.task_names = task_names
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        y: Any,
        *,
        session_ids: Any = None,
        timestamps: Any = None,
        bins: int | Sequence[float] = 30,
        max_position: int = 20,
        ax: Any = None,
        name: str | None = None,
    ) -> LossWeightsDisplay:
        """Plot the loss weights a fitted RMTLClassifier gives these rows.

        Parameters
        ----------
        estimator : RMTLClassifier
            A fitted estimator with a ``loss_weights`` method.
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Features of the rows to weigh (e.g. the training rows).
        y : {array-like, DataFrame} of shape (n_samples, n_tasks)
            Their labels.
        session_ids : array-like of shape (n_samples,), default=None
            Session of each row. ``None``: every row is the first of its
            own session.
        timestamps : array-like of shape (n_samples,), default=None
            Time of each row (numbers or datetimes), ordering the rows of a
            session; ``None``: row order.
        bins : int or sequence of float, default=30
            Histogram bins, shared by the tasks (see
            :func:`numpy.histogram_bin_edges`).
        max_position : int, default=20
            Largest position in the session (1-based) in the right panel;
            deeper rows are left out there, as few sessions reach them.
        ax : array-like of 2 matplotlib Axes, default=None
            Axes of the histogram and of the by-position panel. ``None``
            makes a new figure.
        name : str, default=None
            Figure title; ``None`` uses the estimator's class and backbone.

        Returns
        -------
        display : LossWeightsDisplay
            The display, with the drawn objects in ``ax_``, ``figure_``,
            ``hist_`` and ``lines_``.
        """
        check_is_fitted(estimator)
        if not callable(getattr(estimator, "loss_weights", None)):
            raise TypeError(
                "LossWeightsDisplay needs an estimator with loss_weights "
                f"(an RMTLClassifier); got {type(estimator).__name__}."
            )
        weights = np.asarray(estimator.loss_weights(X, y), dtype=float)
        n_samples = weights.shape[0]
        sessions = check_metadata(
            session_ids, n_samples, name="session_ids", sortable=False
        )
        times = check_metadata(timestamps, n_samples, name="timestamps", sortable=True)
        positions = build_transitions(sessions, times, n_samples).position
        display = cls(
            weights=weights,
            positions=positions,
            task_names=[str(t) for t in estimator.task_names_],
            estimator_name=_default_name(estimator) if name is None else name,
        )
        return display.plot(ax=ax, bins=bins, max_position=max_position)

    def plot(
        self,
        ax: Any = None,
        *,
        bins: int | Sequence[float] = 30,
        max_position: int = 20,
        name: str | None = None,
    ) -> LossWeightsDisplay:
        """Draw the weight histograms and the mean weight by position.

        Parameters
        ----------
        ax : array-like of 2 matplotlib Axes, default=None
            Axes of the histogram and of the by-position panel. ``None``
            makes a new figure.
        bins : int or sequence of float, default=30
            Histogram bins, shared by the tasks.
        max_position : int, default=20
            Largest 1-based position in the session plotted on the right.
        name : str, default=None
            Figure title; ``None`` uses ``estimator_name``.

        Returns
        -------
        display : LossWeightsDisplay
            This display, with ``ax_``, ``figure_``, ``hist_``, ``lines_``,
            ``mean_by_position_`` and ``rows_by_position_`` set.
        """
        weights = np.asarray(self.weights, dtype=float)
        if weights.ndim == 1:
            weights = weights.reshape(-1, 1)
        positions = np.asarray(self.positions, dtype=np.int64)
        names = [str(t) for t in self.task_names]
        if positions.shape != (weights.shape[0],) or len(names) != weights.shape[1]:
            raise ValueError(
                f"weights of shape {weights.shape} need one position per row and "
                f"one task name per column; got {positions.shape[0]} positions "
                f"and {len(names)} task names."
            )
        if int(max_position) < 1:
            raise ValueError(f"max_position must be at least 1, got {max_position}.")
        axes, fig = _panels(ax, 2, "LossWeightsDisplay")
        hist_ax, pos_ax = axes
        # NaN weights (missing labels, see loss_weights) are left out.
        labelled = ~np.isnan(weights)
        edges = np.histogram_bin_edges(weights[labelled], bins=bins)
        hists = [
            hist_ax.hist(
                weights[labelled[:, k], k],
                bins=edges,
                histtype="step",
                lw=1.5,
                label=task,
            )
            for k, task in enumerate(names)
        ]
        hist_ax.set(title="loss weight by task", xlabel="loss weight", ylabel="rows")
        hist_ax.legend()

        shown = positions < max_position
        at, size = positions[shown], int(max_position)
        counts = np.bincount(at, minlength=size)
        filled = np.where(labelled, weights, 0.0)[shown]
        sums = np.column_stack([np.bincount(at, col, size) for col in filled.T])
        observed = labelled[shown].astype(float)
        task_counts = np.column_stack(
            [np.bincount(at, col, size) for col in observed.T]
        )
        present = counts > 0
        index = pd.Index(np.flatnonzero(present) + 1, name="position")
        with np.errstate(invalid="ignore", divide="ignore"):
            task_means = sums[present] / task_counts[present]
        means = pd.DataFrame(task_means, index=index, columns=names)
        lines = [
            pos_ax.plot(index, means[task], marker="o", label=task)[0] for task in names
        ]
        pos_ax.set(
            title="mean loss weight by position in session",
            xlabel="position in session (1 = first row)",
            ylabel="mean loss weight",
        )
        pos_ax.legend()
        name = self.estimator_name if name is None else name
        if name:
            fig.suptitle(name)
        self.ax_, self.figure_, self.hist_, self.lines_ = axes, fig, hists, lines
        self.mean_by_position_ = means
        self.rows_by_position_ = pd.Series(counts[present], index=index, name="rows")
        return self


# ------------------------------------------------------- metric comparison
def _is_metric(name: Any) -> bool:
    try:
        metric_spec(name)
    except (KeyError, TypeError):
        return False
    return True


class MetricComparisonDisplay:
    """Per-task test metrics of several estimators, as grouped bars.

    One panel per metric; in each, one group of bars per task and one bar
    per estimator. Build it with :meth:`from_estimators`.

    Parameters
    ----------
    scores : ndarray of shape (n_metrics, n_estimators, n_tasks)
        The metric values.
    metric_names : list of str of shape (n_metrics,)
        Metric names, one panel each (``"AUC"``, ``"Logloss"``,
        ``"s-Logloss"``, ``"GAUC"`` or any other label).
    estimator_names : list of str of shape (n_estimators,)
        Legend labels of the estimators.
    task_names : list of str of shape (n_tasks,)
        Tick labels of the tasks.

    Attributes
    ----------
    ax_ : ndarray of matplotlib Axes of shape (n_metrics,)
        One Axes per metric.
    figure_ : matplotlib Figure
        The figure holding the panels.
    bars_ : ndarray of matplotlib BarContainer of shape (n_metrics, n_estimators)
        The bars of each metric and estimator (one bar per task).
    scores_ : DataFrame
        The scores in long form, columns ``metric``, ``estimator``, ``task``
        and ``value``.

    See Also
    --------
    sklearn_rmtl.metrics.per_task_roc_auc : The "AUC" metric.
    sklearn_rmtl.metrics.session_log_loss : The "s-Logloss" metric.

    Notes
    -----
    The y-axis of each panel is zoomed on the range of its values, as the
    differences between models are often small next to the values
    themselves; read the values (``annotate=True``), not the bar lengths.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.plotting import MetricComparisonDisplay
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"item": rng.choice(["a", "b", "c"], 300),
    ...                   "price": rng.normal(size=300)})
    >>> click = (X["item"] == "a") | (X["price"] > 1)
    >>> Y = pd.DataFrame({"click": click, "buy": click & (X["price"] > 0)})
    >>> sessions = np.repeat(np.arange(30), 10)
    >>> small = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> models = {
    ...     name: MTLClassifier(backbone=name, backbone_params=small,
    ...                         max_epochs=2, random_state=0).fit(X, Y)
    ...     for name in ["sharedbottom", "esmm"]
    ... }
    >>> display = MetricComparisonDisplay.from_estimators(
    ...     models, X, Y, session_ids=sessions)
    >>> display.bars_.shape
    (3, 2)
    """

    def __init__(
        self,
        *,
        scores: np.ndarray,
        metric_names: Sequence[str],
        estimator_names: Sequence[str],
        task_names: Sequence[str],
    ) -> None:
        self.scores = scores
        self.metric_names = metric_names
        self.estimator_names = estimator_names
        self.task_names = task_names

    @classmethod
    def from_estimators(
        cls,
        estimators: Mapping[str, Any],
        X: Any,
        y: Any,
        *,
        session_ids: Any = None,
        metrics: Sequence[str] = ("AUC", "Logloss", "s-Logloss"),
        annotate: bool = True,
        ax: Any = None,
    ) -> MetricComparisonDisplay:
        """Score fitted estimators on the same rows and plot the metrics.

        Parameters
        ----------
        estimators : dict of str to estimator
            Fitted multi-task classifiers by display name; each has
            ``predict_proba`` returning (n_samples, n_tasks) and
            ``classes_`` of shape (n_tasks, 2).
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Test features.
        y : {array-like, DataFrame} of shape (n_samples, n_tasks)
            Test labels; a DataFrame's column names label the tasks.
        session_ids : array-like of shape (n_samples,), default=None
            Session of each row; needed by ``"s-Logloss"`` and ``"GAUC"``.
        metrics : sequence of {"AUC", "Logloss", "s-Logloss", "GAUC"}, \
                default=("AUC", "Logloss", "s-Logloss")
            The paper's metrics (Sec. 3.1.3), one panel each: per-task ROC
            AUC, logloss, session logloss, and group AUC over sessions. The
            scorer names of :data:`sklearn_rmtl.metrics.METRICS`
            ("roc_auc", "log_loss", "session_log_loss", "group_roc_auc")
            are accepted too; panels are titled by the names given.
        annotate : bool, default=True
            Write each value above its bar.
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per metric. ``None`` makes a new figure.

        Returns
        -------
        display : MetricComparisonDisplay
            The display, with the drawn objects in ``ax_``, ``figure_`` and
            ``bars_``.
        """
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in metrics if not _is_metric(m)]
        if unknown or not metrics:
            raise ValueError(
                f"metrics {unknown or metrics} are not supported; choose from "
                f"{[s.display_name for s in METRICS.values()]} or their scorer "
                f"names {list(METRICS)}."
            )
        if not isinstance(estimators, Mapping) or not estimators:
            raise TypeError(
                "estimators must be a non-empty dict of display name to fitted "
                "estimator."
            )
        needs_sessions = [m for m in metrics if metric_spec(m).needs_sessions]
        if needs_sessions and session_ids is None:
            raise ValueError(
                f"The metrics {needs_sessions} are computed per session and need "
                "session_ids; pass session_ids=... or drop them from metrics."
            )
        scores: list[list[np.ndarray]] = []  # per estimator, per metric
        for name, est in estimators.items():
            check_is_fitted(est)
            try:
                y01 = binarize_labels(
                    y, est.classes_, getattr(est, "task_names_", None)
                )
            except ValueError as exc:
                raise ValueError(f"estimator {name!r}: {exc}") from exc
            proba = np.asarray(est.predict_proba(X), dtype=float)
            if proba.ndim == 1:
                proba = proba.reshape(-1, 1)
            if not scores:
                n_tasks = y01.shape[1]
                task_names = (
                    [str(c) for c in y.columns]
                    if isinstance(y, pd.DataFrame)
                    else [str(t) for t in getattr(est, "task_names_", [])]
                    or [f"task_{k}" for k in range(n_tasks)]
                )
            elif y01.shape[1] != n_tasks:
                raise ValueError("All estimators must predict the same tasks.")
            scores.append(
                [metric_spec(m).per_task(y01, proba, session_ids) for m in metrics]
            )
        display = cls(
            scores=np.stack(scores, axis=1),
            metric_names=metrics,
            estimator_names=[str(n) for n in estimators],
            task_names=task_names,
        )
        return display.plot(ax=ax, annotate=annotate)

    def plot(self, ax: Any = None, *, annotate: bool = True) -> MetricComparisonDisplay:
        """Draw one panel of grouped bars per metric.

        Parameters
        ----------
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per metric. ``None`` makes a new figure.
        annotate : bool, default=True
            Write each value above its bar.

        Returns
        -------
        display : MetricComparisonDisplay
            This display, with ``ax_``, ``figure_``, ``bars_`` and
            ``scores_`` set.
        """
        scores = np.asarray(self.scores, dtype=float)
        metrics = [str(m) for m in self.metric_names]
        names = [str(n) for n in self.estimator_names]
        tasks = [str(t) for t in self.task_names]
        if scores.shape != (len(metrics), len(names), len(tasks)):
            raise ValueError(
                f"scores has shape {scores.shape}; expected (n_metrics, "
                f"n_estimators, n_tasks) = ({len(metrics)}, {len(names)}, "
                f"{len(tasks)})."
            )
        new_figure = ax is None
        axes, fig = _panels(
            ax,
            len(metrics),
            "MetricComparisonDisplay",
            width=max(4.2, 1.2 + 0.3 * len(names) * len(tasks)),
        )
        x = np.arange(len(tasks))
        width = 0.8 / len(names)
        bars = np.empty((len(metrics), len(names)), dtype=object)
        for i, (axis, metric) in enumerate(zip(axes, metrics, strict=True)):
            for j, name in enumerate(names):
                offset = (j - (len(names) - 1) / 2) * width
                bars[i, j] = axis.bar(x + offset, scores[i, j], width, label=name)
                if annotate:
                    axis.bar_label(
                        bars[i, j],
                        fmt="%.4f",
                        rotation=90,
                        padding=2,
                        fontsize="x-small",
                    )
            title = metric
            if _is_metric(metric):
                greater = metric_spec(metric).greater_is_better
                title += " (higher is better)" if greater else " (lower is better)"
            axis.set(title=title, ylabel=metric)
            axis.set_xticks(x, tasks)
            finite = scores[i][np.isfinite(scores[i])]
            if finite.size:
                low, high = float(finite.min()), float(finite.max())
                pad = max(high - low, 0.02 * max(abs(high), 1e-12))
                # Room above the bars for the rotated value labels.
                top = high + (1.6 if annotate else 0.3) * pad
                axis.set_ylim(max(0.0, low - pad) if low >= 0 else low - pad, top)
        if new_figure:  # one legend above the panels, clear of the bars
            handles, labels = axes[0].get_legend_handles_labels()
            ncols = min(len(names), 4)
            fig.legend(handles, labels, loc="outside upper center", ncols=ncols)
        else:
            axes[0].legend(fontsize="small")
        index = pd.MultiIndex.from_product(
            [metrics, names, tasks], names=["metric", "estimator", "task"]
        )
        self.ax_, self.figure_, self.bars_ = axes, fig, bars
        self.scores_ = pd.Series(scores.ravel(), index, name="value").reset_index()
        return self


# ------------------------------------------------------- per-task curves
class _PerTaskCurveDisplay:
    """One of scikit-learn's binary-classifier displays per task, side by side.

    Subclasses name the scikit-learn display in ``_sklearn_display``; this
    class only splits the tasks, leaves out each task's missing labels and
    lays out the panels.
    """

    _sklearn_display: Any = None  # set by each subclass

    def __init__(
        self,
        *,
        y_true: Any,
        y_proba: Any,
        task_names: Sequence[str],
        estimator_name: str | None = None,
    ) -> None:
        self.y_true = y_true
        self.y_proba = y_proba
        self.task_names = task_names
        self.estimator_name = estimator_name

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        y: Any,
        *,
        tasks: Sequence[str | int] | None = None,
        name: str | None = None,
        ax: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Plot each task's curve of a fitted multi-task classifier.

        Parameters
        ----------
        estimator : MTLClassifier or RMTLClassifier
            A fitted multi-task classifier (``predict_proba`` of shape
            (n_samples, n_tasks), ``classes_`` of shape (n_tasks, 2)).
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Test features.
        y : {DataFrame, array-like} of shape (n_samples, n_tasks)
            Test labels in the estimator's labels; a missing label (NaN) is
            left out of its task's curve. A DataFrame's columns are matched
            to the tasks by name.
        tasks : sequence of str or int, default=None
            The tasks to plot, by name or index; ``None`` plots them all.
        name : str, default=None
            Label of the curves; ``None`` uses the estimator's class and
            backbone.
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per plotted task (e.g. another display's ``ax_``, to
            compare estimators); ``None`` makes a new figure.
        **kwargs : dict
            Passed to the scikit-learn display's ``from_predictions``.

        Returns
        -------
        display : object
            The display, with ``ax_``, ``figure_`` and ``displays_`` set.
        """
        check_is_fitted(estimator)
        task_names = [str(t) for t in estimator.task_names_]
        y01 = binarize_labels(y, estimator.classes_, task_names)
        display = cls(
            y_true=y01,
            y_proba=estimator.predict_proba(X),
            task_names=task_names,
            estimator_name=_default_name(estimator) if name is None else name,
        )
        return display.plot(ax=ax, tasks=tasks, **kwargs)

    @classmethod
    def from_predictions(
        cls,
        y_true: Any,
        y_proba: Any,
        *,
        task_names: Sequence[str] | None = None,
        tasks: Sequence[str | int] | None = None,
        name: str | None = None,
        ax: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Plot each task's curve from labels and predicted probabilities.

        Parameters
        ----------
        y_true : {DataFrame, array-like} of shape (n_samples, n_tasks)
            Labels 0/1 (or bool); NaN marks a missing label, left out of its
            task's curve.
        y_proba : array-like of shape (n_samples, n_tasks)
            Predicted probability of label 1, e.g. ``est.predict_proba(X)``.
        task_names : sequence of str, default=None
            Panel titles; ``None`` uses the columns of a DataFrame
            ``y_true``, else ``"task_0"``...
        tasks : sequence of str or int, default=None
            The tasks to plot, by name or index; ``None`` plots them all.
        name : str, default=None
            Label of the curves.
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per plotted task; ``None`` makes a new figure.
        **kwargs : dict
            Passed to the scikit-learn display's ``from_predictions``.

        Returns
        -------
        display : object
            The display, with ``ax_``, ``figure_`` and ``displays_`` set.
        """
        y, p = _check_targets(y_true, y_proba)
        if task_names is None:
            task_names = (
                [str(c) for c in y_true.columns]
                if isinstance(y_true, pd.DataFrame)
                else [f"task_{k}" for k in range(y.shape[1])]
            )
        display = cls(y_true=y, y_proba=p, task_names=task_names, estimator_name=name)
        return display.plot(ax=ax, tasks=tasks, **kwargs)

    def plot(
        self,
        ax: Any = None,
        *,
        tasks: Sequence[str | int] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Draw one panel per task with the scikit-learn display.

        Parameters
        ----------
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per plotted task; ``None`` makes a new figure.
        tasks : sequence of str or int, default=None
            The tasks to plot, by name or index; ``None`` plots them all.
        name : str, default=None
            Label of the curves; ``None`` uses ``estimator_name``.
        **kwargs : dict
            Passed to the scikit-learn display's ``from_predictions``.

        Returns
        -------
        display : object
            This display, with ``ax_``, ``figure_``, ``displays_`` and
            ``tasks_`` set.
        """
        caller = type(self).__name__
        y, p = _check_targets(self.y_true, self.y_proba)
        names = [str(t) for t in self.task_names]
        if len(names) != y.shape[1]:
            raise ValueError(
                f"{caller} has {y.shape[1]} task columns but {len(names)} task "
                f"names {names}."
            )
        if tasks is None:
            tasks = names
        elif isinstance(tasks, str | int):
            tasks = [tasks]
        chosen = [names[task_index(t, names)] for t in tasks]
        axes, fig = _panels(ax, len(chosen), caller)
        name = self.estimator_name if name is None else name
        displays = {}
        for axis, task in zip(axes, chosen, strict=True):
            k = names.index(task)
            rows = ~np.isnan(y[:, k])  # a missing label has no place on a curve
            displays[task] = self._sklearn_display().from_predictions(
                y[rows, k].astype(int), p[rows, k], name=name, ax=axis, **kwargs
            )
            axis.set_title(task)
        self.ax_, self.figure_, self.displays_, self.tasks_ = (
            axes,
            fig,
            displays,
            chosen,
        )
        return self


def _roc() -> Any:
    from sklearn.metrics import RocCurveDisplay

    return RocCurveDisplay


def _precision_recall() -> Any:
    from sklearn.metrics import PrecisionRecallDisplay

    return PrecisionRecallDisplay


def _calibration() -> Any:
    from sklearn.calibration import CalibrationDisplay

    return CalibrationDisplay


_CURVE_DOC = """{what} of each task, one panel per task.

    A thin layer over scikit-learn's
    :class:`~{sklearn_name}`: each panel is that display, drawn by its
    ``from_predictions`` on the task's rows with an observed label. Build it
    with :meth:`from_estimator` or :meth:`from_predictions`; pass another
    display's ``ax_`` as ``ax`` to compare estimators on the same panels.

    Parameters
    ----------
    y_true : ndarray of shape (n_samples, n_tasks)
        Labels 0/1, NaN for a missing label.
    y_proba : ndarray of shape (n_samples, n_tasks)
        Predicted probability of label 1.
    task_names : list of str of shape (n_tasks,)
        Panel titles.
    estimator_name : str, default=None
        Label of the curves; ``None`` shows none.

    Attributes
    ----------
    ax_ : ndarray of matplotlib Axes of shape (n_plotted_tasks,)
        One Axes per plotted task.
    figure_ : matplotlib Figure
        The figure holding the panels.
    displays_ : dict of str to {sklearn_short}
        The scikit-learn display of each plotted task, by task name.
    tasks_ : list of str
        The plotted tasks.

    See Also
    --------
    {sklearn_name} : The display of one task.
    sklearn_rmtl.MTLClassifier.task_estimator : One task as a binary
        classifier, for scikit-learn's own ``from_estimator``.

    Examples
    --------
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> from sklearn_rmtl.plotting import {cls}
    >>> X, Y, s, t = make_sessions(30, return_X_y=True, random_state=0)
    >>> est = MTLClassifier(backbone="sharedbottom", max_epochs=2,
    ...                     random_state=0).fit(X, Y)
    >>> display = {cls}.from_estimator(est, X, Y)
    >>> display.tasks_
    ['click', 'purchase']
    """


class PerTaskRocCurveDisplay(_PerTaskCurveDisplay):
    _sklearn_display = staticmethod(_roc)


class PerTaskPrecisionRecallDisplay(_PerTaskCurveDisplay):
    _sklearn_display = staticmethod(_precision_recall)


class PerTaskCalibrationDisplay(_PerTaskCurveDisplay):
    _sklearn_display = staticmethod(_calibration)


for _cls, _what, _sklearn in [
    (PerTaskRocCurveDisplay, "ROC curve", "sklearn.metrics.RocCurveDisplay"),
    (
        PerTaskPrecisionRecallDisplay,
        "Precision-recall curve",
        "sklearn.metrics.PrecisionRecallDisplay",
    ),
    (
        PerTaskCalibrationDisplay,
        "Calibration curve (reliability diagram)",
        "sklearn.calibration.CalibrationDisplay",
    ),
]:
    _cls.__doc__ = _CURVE_DOC.format(
        what=_what,
        sklearn_name=_sklearn,
        sklearn_short=_sklearn.rsplit(".", 1)[1],
        cls=_cls.__name__,
    )
