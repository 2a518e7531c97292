"""Training the actor's skorch nets: the driver and its callbacks.

:func:`train_net` is the one training loop of the actor, shared by
pretraining and the refit; the net comes from
:func:`~sklearn_rmtl._skorch_net.make_net`.

Early stopping here evaluates the held-out rows itself, as often as
``validation_interval`` asks (every epoch, or several times per epoch), keeps
the weights of the best check by a chosen selection metric, and restores
them when training ends. skorch's own ``EarlyStopping`` checks once per
epoch on the validation loss only, and signals with ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import StrOptions
from skorch.callbacks import Callback, ProgressBar
from torch import Tensor

from sklearn_rmtl._data import forward_batches
from sklearn_rmtl._distributed import DataParallel
from sklearn_rmtl._fit_data import Extra, FitData
from sklearn_rmtl._precision import autocast
from sklearn_rmtl._seeding import (
    init_parameters,
    isolated_global_rng,
    set_dropout_generator,
)
from sklearn_rmtl._skorch_net import MultiTaskNet, make_net
from sklearn_rmtl.balancing import make_balancer
from sklearn_rmtl.exceptions import DivergenceError
from sklearn_rmtl.metrics import METRICS, MetricSpec


class StopTraining(Exception):
    """Early stopping's signal to end the epoch loop.

    skorch stops training by raising ``KeyboardInterrupt``, which its
    ``partial_fit`` swallows, and so it would swallow a real Ctrl-C too and
    return a half-trained model. Training here runs ``fit_loop`` directly and
    only this signal ends it quietly.
    """


#: The metrics of :data:`~sklearn_rmtl.metrics.METRICS` a checkpoint can be
#: selected by, by their ``selection_name``: their per-task values on the
#: held-out rows (NaN where a task's metric is not defined) are compared in
#: their ``greater_is_better`` direction. "loss" (the unweighted validation
#: BCE, lower better) is computed by the checkpoint itself.
SELECTION_METRICS: dict[str, MetricSpec] = {
    spec.selection_name: spec
    for spec in METRICS.values()
    if spec.selection_name is not None
}

#: The metrics a selection parameter names, alone (over all tasks) or as
#: ``"<metric>:<task name>"`` (one task's).
SELECTIONS = ("loss", *SELECTION_METRICS)


@dataclass(frozen=True)
class Selection:
    """What early stopping compares: a metric, over all tasks or of one.

    Parameters
    ----------
    metric : {"loss", "auc", "gauc"}
        The validation BCE (task-weighted over tasks, or the task's own), or
        a key of :data:`SELECTION_METRICS` (the mean over the tasks where it
        is defined, or the task's own).
    task : int or None, default=None
        The task's position; None for all tasks.
    """

    metric: str
    task: int | None = None

    @property
    def greater_is_better(self) -> bool:
        """Whether a higher value of the metric is better ("loss": lower)."""
        spec = SELECTION_METRICS.get(self.metric)
        return spec is not None and spec.greater_is_better

    @property
    def needs_sessions(self) -> bool:
        """Whether the metric needs the held-out rows' sessions."""
        spec = SELECTION_METRICS.get(self.metric)
        return spec is not None and spec.needs_sessions


class SelectionOption(StrOptions):
    """Parameter constraint: a metric of :data:`SELECTIONS`, or ``"<metric>:<task>"``.

    A ``StrOptions`` (the kind scikit-learn's validation accepts) that also
    admits a task suffix; whether the task exists is checked in ``fit``
    (:func:`check_selection`), once y's task names are known.
    """

    def __init__(self) -> None:
        super().__init__(set(SELECTIONS))

    def is_satisfied_by(self, val: Any) -> bool:
        return isinstance(val, str) and val.partition(":")[0] in SELECTIONS

    def __str__(self) -> str:
        names = ", ".join(repr(m) for m in SELECTIONS)
        meanings = "; ".join(
            f"{name!r}: {spec.display_name}"
            + (", needs session_ids" if spec.needs_sessions else "")
            for name, spec in SELECTION_METRICS.items()
        )
        return (
            f"a str among {{{names}}} ('loss': the validation loss; {meanings}), "
            "or '<metric>:<task name>' for one task"
        )


def check_selection(name: str, value: str, task_names: np.ndarray) -> Selection:
    """Read a selection parameter: ``"auc"``, or ``"auc:<task>"`` for one task.

    Raises a ``ValueError`` naming the parameter ``name`` and y's tasks when
    the task is not one of ``task_names``.
    """
    metric, sep, task = value.partition(":")
    if not sep:
        return Selection(metric)
    tasks = [str(t) for t in task_names]
    if task not in tasks:
        raise ValueError(
            f"{name}={value!r} names task {task!r}, which y does not have; "
            f"the tasks of y are {tasks} (e.g. {metric + ':' + tasks[0]!r})."
        )
    return Selection(metric, tasks.index(task))


def check_selections_defined(data: FitData, selections: dict[str, str]) -> None:
    """Refuse, before any training, a selection the held-out rows cannot compute.

    A metric that is undefined on every check (an AUC of a task whose
    held-out labels are all 0, a GAUC without a held-out session holding
    both labels) would select nothing: pretraining, the refit and the
    actor's updates would each keep their last check, and ``retrain_on_all``
    would replay an arbitrary length. Every phase that selects by it is
    refused alike, naming the parameter, the metric and the task.

    Parameters
    ----------
    data : FitData
        The fit's rows, with the held-out rule decided (none: nothing to check).
    selections : dict of str to str
        The selection parameters of the fit by name, e.g.
        ``{"validation_metric": "auc:buy"}``.

    Raises
    ------
    ValueError
        When a metric is undefined for its task (for every task, when it is
        averaged over the tasks where it is defined).
    """
    chosen = {
        name: (value, check_selection(name, value, data.task_names))
        for name, value in selections.items()
    }
    chosen = {k: v for k, v in chosen.items() if v[1].metric != "loss"}
    if not chosen or not data.has_holdout:
        return
    y, groups = data.held_out_labels()
    tasks = [str(t) for t in data.task_names]
    for name, (value, selection) in chosen.items():
        spec = SELECTION_METRICS[selection.metric]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # undefined tasks are NaN here
            # Constant predictions: whether a ranking metric is defined
            # depends on the labels (and sessions) only.
            defined = np.isfinite(spec.per_task(y, np.full(y.shape, 0.5), groups))
        if defined.any() if selection.task is None else defined[selection.task]:
            continue
        which = (
            "every task"
            if selection.task is None
            else f"task {tasks[selection.task]!r}"
        )
        cause = (
            "no held-out session holds both labels"
            if spec.needs_sessions
            else "the held-out labels are of one class only"
        )
        others = [t for t, ok in zip(tasks, defined, strict=True) if ok]
        hint = f", or {selection.metric + ':' + others[0]!r}" if others else ""
        raise ValueError(
            f"{name}={value!r} cannot select on the held-out rows: the "
            f"{spec.display_name} of {which} is undefined there ({cause}, among "
            f"the {data.n_valid} rows that early stopping holds out; missing "
            "labels and zero weights do not count). Every check would tie and "
            f"nothing would be selected. Use {name}='loss'{hint}, or a larger "
            "validation_fraction."
        )


class DivergenceGuard(Callback):
    """Stop with a clear error as soon as an epoch's training loss is not finite.

    Parameters
    ----------
    phase : str
        The training phase named in the error ("pretrain" or "refit").
    lr_name : str
        The parameter that sets this phase's learning rate, named in the error.
    """

    def __init__(self, phase: str, lr_name: str) -> None:
        self.phase = phase
        self.lr_name = lr_name

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        loss = net.history[-1, "train_loss"]
        if not np.isfinite(loss):
            raise diverged(self.phase, self.lr_name, "loss", loss, len(net.history))

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        # An epoch's loss is computed before its last step, which can still
        # leave non-finite weights behind (seen without early stopping).
        with torch.no_grad():
            finite = all(bool(p.isfinite().all()) for p in net.module_.parameters())
        if not finite:
            raise diverged(
                self.phase, self.lr_name, "weights", math.nan, len(net.history)
            )


class TaskBalanceRecorder(Callback):
    """Record the task-balance weights per epoch and run the balancer's hook.

    Each epoch's history row gets ``task_balance``, the effective weights of
    the task losses at the epoch's end (for DWA, those the epoch used);
    then :meth:`~sklearn_rmtl.balancing.TaskBalancer.end_epoch` lets the
    method prepare the next epoch. Placed before early stopping, which may
    end training in the same ``on_epoch_end``.
    """

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        balancer = net.balancer
        net.history.record("task_balance", balancer.weights().tolist())
        balancer.end_epoch()


def diverged(
    phase: str, lr_name: str, what: str, value: float, epoch: int
) -> DivergenceError:
    """The error of a phase whose loss or weights stopped being finite."""
    refit = ", or lower q_lambda" if phase == "refit" else ""
    return DivergenceError(
        f"The {phase} {what} became {value} in epoch {epoch}. Lower {lr_name}, "
        f"check the features for extreme values (scale or clip them){refit}."
    )


class ValidationCheckpoint(Callback):
    """Early stopping with validation checks inside epochs and best weights.

    Every ``interval`` of an epoch (and at every epoch end) the network is
    evaluated on the held-out rows; the weights of the best check so far are
    kept, training stops when ``patience`` epochs' worth of checks brought no
    improvement, and the best weights are restored when training ends.

    Per epoch the history records ``valid_loss`` (the BCE at the epoch's end,
    without RMTL's weights but with the loss mask) with
    ``valid_loss_per_task`` and, when selecting by a ranking metric,
    ``valid_<metric>`` (its mean over the tasks where it is defined) with
    ``valid_<metric>_per_task``, and ``valid_loss_best`` (skorch's name:
    whether ``valid_loss`` is the lowest of the epochs so far, e.g. for
    ``skorch.callbacks.Checkpoint``); the last row records ``best_at`` (the epoch
    position of the kept weights, 0.0 being the starting weights),
    ``best_step`` (the optimizer steps that led to them) and
    ``restored_start`` when the starting weights were kept.

    Parameters
    ----------
    inputs : dict of str to Tensor
        The held-out rows' network inputs (``x_cat``, ``x_num``).
    y01 : Tensor of shape (n_valid, n_tasks)
        Their 0/1 labels, on the inputs' device.
    mask : Tensor of shape (n_valid, n_tasks) or None
        Their loss mask (sample weights, 0 for missing labels): the
        validation loss is weighted by it, and the ranking metrics skip the
        entries where it is 0.
    groups : ndarray of shape (n_valid,) or None
        Their sessions, for a selection metric that needs them (``"gauc"``).
    selection : Selection
        What "best" means: the lowest validation loss, or the highest
        per-task AUC or session GAUC, over all tasks or of one task.
    interval : float in (0, 1]
        Fraction of an epoch between checks.
    patience : int
        Epochs without an improving check before training stops.
    start_is_candidate : bool
        Evaluate the starting weights first, as the check at position 0, so
        that they are kept when no later check beats them.
    phase : str
        Name of the phase in error messages.
    lr_name : str
        The parameter that sets this phase's learning rate, for error messages.
    sink : callable
        Receives a line per stop (``print`` when verbose).
    data_parallel : DataParallel, default=None
        Under data-parallel training, the ranks take rank 0's validation
        loss and score, so that all keep the same checks and stop together.
    """

    best_score_: float
    best_at_: float
    best_state_: dict[str, Tensor] | None

    def __init__(
        self,
        *,
        inputs: dict[str, Tensor],
        y01: Tensor,
        mask: Tensor | None = None,
        groups: np.ndarray | None,
        selection: Selection,
        interval: float,
        patience: int,
        start_is_candidate: bool,
        phase: str,
        lr_name: str,
        sink: Callable[..., None],
        data_parallel: DataParallel | None = None,
    ) -> None:
        self.inputs = inputs
        self.y01 = y01
        self.mask = mask
        self.groups = groups
        self.selection = selection
        self.interval = interval
        self.patience = patience
        self.start_is_candidate = start_is_candidate
        self.phase = phase
        self.lr_name = lr_name
        self.sink = sink
        self.data_parallel = data_parallel

    # ------------------------------------------------------------- checks
    @torch.no_grad()
    def evaluate(self, net: Any) -> dict[str, Any]:
        """Validation loss (and the selection metric) of the current weights."""
        module = net.module_
        was_training = module.training
        module.eval()
        x_cat, x_num = self.inputs["x_cat"], self.inputs["x_num"]
        with autocast(net.precision, x_cat.device):
            logits = forward_batches(
                lambda r: module(x_cat[r], x_num[r]).float(), len(x_cat)
            )
        module.train(was_training)
        per_task = net.criterion_.task_losses(logits, self.y01, None, self.mask)
        out: dict[str, Any] = {
            "valid_loss": float(net.criterion_(logits, self.y01, None, self.mask)),
            "valid_loss_per_task": per_task.tolist(),
        }
        metric = self.selection.metric
        if metric != "loss":
            proba = torch.sigmoid(logits).double().cpu().numpy()
            y = self.y01.cpu().numpy()
            if self.mask is not None:
                # Metrics skip missing labels (NaN); positive weights do not
                # weigh the ranking metrics.
                y = np.where(self.mask.cpu().numpy() > 0, y, np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a one-class task is NaN, not fatal
                scores = SELECTION_METRICS[metric].per_task(y, proba, self.groups)
            defined = scores[np.isfinite(scores)]
            out[f"valid_{metric}"] = float(defined.mean()) if defined.size else math.nan
            out[f"valid_{metric}_per_task"] = scores.tolist()
        return out

    def _score(self, values: dict[str, Any]) -> float:
        metric, task = self.selection.metric, self.selection.task
        score = (
            values[f"valid_{metric}"]
            if task is None
            else values[f"valid_{metric}_per_task"][task]
        )
        if not np.isfinite(score):  # undefined on the held-out rows (one class)
            return -math.inf
        return score if self.selection.greater_is_better else -score

    def _check(self, net: Any, position: float) -> dict[str, Any]:
        values = self.evaluate(net)
        if self.data_parallel is not None:
            values["valid_loss"] = self.data_parallel.agree(values["valid_loss"])
        if not np.isfinite(values["valid_loss"]):
            raise diverged(
                self.phase,
                self.lr_name,
                "validation loss",
                values["valid_loss"],
                math.ceil(position),
            )
        score = self._score(values)
        if self.data_parallel is not None:
            score = self.data_parallel.agree(score)
        if score > self.best_score_:
            self.best_score_, self.best_at_ = score, position
            self.best_state_ = {
                k: v.detach().clone() for k, v in net.module_.state_dict().items()
            }
            self.since_best_ = 0
        else:
            self.since_best_ += 1
        return values

    # ---------------------------------------------------------- callbacks
    def on_train_begin(self, net: Any, X: Any = None, **kwargs: Any) -> None:
        # A BlockStream of the training rows, or a dict of arrays.
        n_rows = len(X) if hasattr(X, "batches") else len(next(iter(X.values())))
        self.n_batches_ = max(1, -(-n_rows // net.batch_size))
        self.every_ = max(1, round(self.interval * self.n_batches_))
        self.checks_per_epoch_ = (self.n_batches_ - 1) // self.every_ + 1
        self.best_score_, self.best_at_ = -math.inf, math.nan
        self.best_state_ = None
        self.since_best_ = 0
        self.lowest_valid_loss_ = math.inf
        self.stop_ = False
        self.epoch_, self.batch_ = 0, 0
        if self.start_is_candidate:
            self._check(net, 0.0)

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.epoch_ += 1
        self.batch_ = 0

    def on_batch_end(self, net: Any, training: bool = False, **kwargs: Any) -> None:
        if not training:
            return
        self.batch_ += 1
        if self.batch_ % self.every_ == 0 and self.batch_ < self.n_batches_:
            self._check(net, self.epoch_ - 1 + self.batch_ / self.n_batches_)

    def end_epoch(self, net: Any) -> bool:
        """The epoch's last check, recorded in the history; whether to stop."""
        values = self._check(net, float(self.epoch_))
        for key, value in values.items():
            net.history.record(key, value)
        lowest = values["valid_loss"] < self.lowest_valid_loss_
        self.lowest_valid_loss_ = min(self.lowest_valid_loss_, values["valid_loss"])
        net.history.record("valid_loss_best", bool(lowest))
        if self.since_best_ < self.patience * self.checks_per_epoch_:
            return False
        self.sink(
            f"Stopping: no validation improvement in the last {self.patience} "
            f"epoch(s); the best weights are those at epoch {self.best_at_:g}."
        )
        return True

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        # The epoch's records are made here, before the user's callbacks read
        # them; the stop comes after those (StopAfterEpoch).
        self.stop_ = self.end_epoch(net)

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        if self.best_state_ is None:
            return
        net.module_.load_state_dict(self.best_state_)
        net.history.record("best_at", self.best_at_)
        net.history.record("best_step", round(self.best_at_ * self.n_batches_))
        if self.best_at_ == 0.0:
            net.history.record("restored_start", True)
        self.best_state_ = None  # the weights live in the module now


class StopAfterEpoch(Callback):
    """End training when ``checkpoint`` asked to, after every callback before
    this one (the user's included) has seen the epoch."""

    def __init__(self, checkpoint: ValidationCheckpoint) -> None:
        self.checkpoint = checkpoint

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if self.checkpoint.stop_:
            raise StopTraining


class StepLimit(Callback):
    """End training after ``steps`` optimizer steps, inside an epoch if need be.

    Retraining on all rows replays the number of steps that early stopping
    chose (:func:`train_net`'s ``steps``, with ``max_epochs`` covering
    them); the last history row records ``steps``.

    Parameters
    ----------
    steps : int
        Optimizer steps to take.
    n_batches : int
        Steps per epoch: a limit at an epoch's end is left to ``max_epochs``,
        so that the epoch's records are made.
    """

    def __init__(self, steps: int, n_batches: int) -> None:
        self.steps = steps
        self.n_batches = n_batches

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        self.taken_ = 0

    def on_batch_end(self, net: Any, training: bool = False, **kwargs: Any) -> None:
        if not training:
            return
        self.taken_ += 1
        if self.taken_ == self.steps and self.taken_ % self.n_batches:
            raise StopTraining

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        net.history.record("steps", self.taken_)


def selected_steps(history: list[dict[str, Any]]) -> int | None:
    """The optimizer steps to the weights that early stopping kept, or None.

    None when ``history`` (of one :func:`train_net` call) had no early
    stopping.
    """
    step = history[-1].get("best_step") if history else None
    return None if step is None else int(step)


# ------------------------------------------------------------------ driver
def _silent(*_: Any) -> None:
    """A print sink that drops the message (``verbose=0``)."""


#: What skorch records for itself: per-batch rows, batch counts and the flag
#: of its default train-loss scoring. Everything else a history row holds
#: (this module's records and user callbacks', e.g. ``EpochScoring``) is kept.
_SKORCH_BOOKKEEPING = frozenset(
    {"batches", "train_batch_count", "valid_batch_count", "train_loss_best"}
)


def _plain(key: str, value: Any) -> Any:
    """A history value as a plain Python value, or a clear error."""
    if isinstance(value, np.generic | Tensor) and np.ndim(value) == 0:
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(key, v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"A callback recorded {key!r} = {type(value).__name__} in the history; "
        "record numbers, strings, booleans or lists of them (e.g. float(score))."
    )


def net_history(net: MultiTaskNet) -> list[dict[str, Any]]:
    """Plain per-epoch records of a skorch history, user callbacks' included."""
    return [
        {k: _plain(k, v) for k, v in row.items() if k not in _SKORCH_BOOKKEEPING}
        for row in net.history
    ]


def held_out_checkpoint(
    data: FitData, *, verbose: int, **settings: Any
) -> ValidationCheckpoint:
    """A :class:`ValidationCheckpoint` on ``data``'s held-out rows.

    ``settings`` are its other parameters (``selection``, ``interval``...).
    """
    held_out, device = data.held_out(), data.device
    assert held_out is not None
    return ValidationCheckpoint(
        inputs={
            k: torch.as_tensor(v, device=device) for k, v in held_out.inputs.items()
        },
        y01=torch.as_tensor(held_out.y01, device=device),
        mask=None
        if held_out.mask is None
        else torch.as_tensor(held_out.mask, device=device),
        groups=held_out.session_ids,
        sink=print if verbose else _silent,
        **settings,
    )


def train_net(
    data: FitData,
    net_cls: type[MultiTaskNet],
    *,
    backbone: str,
    backbone_params: dict[str, Any],
    task_weights: np.ndarray,
    max_epochs: int,
    lr: float,
    lr_name: str,
    balancing: str = "fixed",
    balancing_params: dict[str, Any] | None = None,
    weight_decay: float,
    batch_size: int,
    interval: float,
    patience: int,
    selection: Selection = Selection("loss"),
    start_is_candidate: bool = False,
    seed_offset: int = 0,
    init_module: torch.nn.Module | None = None,
    extra: Extra | None = None,
    callbacks: list[Any] | None = None,
    verbose: int = 0,
    precision: str = "float32",
    steps: int | None = None,
    distributed: bool = False,
    **net_kwargs: Any,
) -> MultiTaskNet:
    """Build a skorch net for ``data`` and train it.

    ``init_module`` starts training from a copy of those weights (RMTL's
    refit continues the pretrained actor); with early stopping (held-out rows)
    and ``start_is_candidate`` the starting weights are the first validation
    check: if no later check beats them by ``selection`` they are restored,
    and the last history row records ``restored_start=True``. ``lr_name``
    is the estimator parameter that set ``lr``, named in divergence errors.
    The training rows are read block by block (:meth:`FitData.train_set
    <sklearn_rmtl._fit_data.FitData.train_set>`); ``extra`` adds per-row
    inputs next to the features (for ``get_loss``, not the module), as do
    the loss mask (sample weights and missing labels) under
    ``"loss_mask"``. ``balancing`` and
    ``balancing_params`` choose how each step combines the task losses
    (:mod:`sklearn_rmtl.balancing`; a fresh balancer per call, learning at
    ``lr``, drawing from the fit's generator); the history records its
    weights per epoch. ``steps`` trains on every row, the held-out ones
    included, for that many optimizer steps without early stopping (the
    retraining of ``retrain_on_all``; 0 returns the starting weights), in
    as many epochs as that takes, whatever ``max_epochs``. With
    ``distributed`` (an initialised
    ``torch.distributed``; :mod:`sklearn_rmtl._distributed`) every rank
    steps on its shard of each batch with the gradients summed over the
    ranks, and ends with rank 0's weights. ``net_kwargs`` go to ``net_cls``.
    """
    train = data.train_set(
        seed=data.seed + seed_offset, extra=extra, all_rows=steps is not None
    )
    validate = data.has_holdout and steps is None
    phase = "refit" if init_module is not None else "pretrain"
    dp = DataParallel.current(distributed)
    # Initialisation, batch order and dropout of this fit draw from here.
    generator = torch.Generator().manual_seed(data.seed + seed_offset)
    # The library's records come first, so that the user's callbacks see
    # each epoch's validation loss and task balance in its on_epoch_end.
    all_callbacks: list[Any] = [
        ("divergence_guard", DivergenceGuard(phase, lr_name)),
        ("task_balance", TaskBalanceRecorder()),
    ]
    if steps is not None:
        n_batches = max(1, -(-len(train) // batch_size))
        max_epochs = -(-steps // n_batches)
        all_callbacks.append(("step_limit", StepLimit(steps, n_batches)))
    if validate:
        checkpoint = held_out_checkpoint(
            data,
            selection=selection,
            interval=interval,
            patience=patience,
            start_is_candidate=start_is_candidate,
            phase=phase,
            lr_name=lr_name,
            verbose=verbose,
            data_parallel=dp,
        )
        all_callbacks.append(("early_stopping", checkpoint))
    all_callbacks += callbacks or []
    if validate:
        all_callbacks.append(("stop_after_epoch", StopAfterEpoch(checkpoint)))
    if verbose:
        # A bar per epoch over its batches, with the running train loss.
        all_callbacks.append(("progress", ProgressBar(postfix_keys=["train_loss"])))
    net = make_net(
        net_cls,
        device=data.device,
        callbacks=all_callbacks,
        module__cardinalities=data.cardinalities,
        module__n_numerical=data.n_numerical,
        module__sequences=data.sequences,
        module__field_names=data.field_names,
        module__n_tasks=data.n_tasks,
        module__backbone=backbone,
        module__backbone_params=backbone_params,
        criterion__task_weights=task_weights.tolist(),
        optimizer__weight_decay=weight_decay,
        lr=lr,
        max_epochs=max_epochs,
        batch_size=batch_size,
        iterator_train__shuffle=True,
        iterator_train__generator=generator,
        **({} if dp is None else {"iterator_train__data_parallel": dp}),
        data_parallel=dp,
        verbose=verbose,
        precision=precision,
        balancer=make_balancer(
            balancing,
            balancing_params,
            task_weights=task_weights.tolist(),
            lr=lr,
            generator=generator,
        ),
        **net_kwargs,
    )
    with isolated_global_rng(data.device):
        net.initialize()
    if init_module is not None:
        net.module_.load_state_dict(init_module.state_dict())
    else:
        init_parameters(net.module_, generator)
    set_dropout_generator(
        net.module_,
        generator if dp is None else dp.own_generator(data.seed + seed_offset),
    )
    y_train = None  # in the stream's batches
    if max_epochs > 0:  # 0: the initial weights as they are
        # partial_fit without its ``except KeyboardInterrupt: pass``: an
        # interrupted fit must raise, not return a half-trained model.
        net.notify("on_train_begin", X=train, y=y_train)
        with contextlib.suppress(StopTraining):
            net.fit_loop(train, y_train)
        net.notify("on_train_end", X=train, y=y_train)
    if dp is not None:
        dp.broadcast_module(net.module_)
        # Training-only, like the balancer: a pickled fit holds no ranks
        # (nor the DDP wrapper of its module, whose hooks go with it).
        net.data_parallel = net.iterator_train__data_parallel = None
        net.gradient_sync = None
    set_dropout_generator(net.module_, None)
    net.balancer = None  # training-only; its weights are in the history
    return net
