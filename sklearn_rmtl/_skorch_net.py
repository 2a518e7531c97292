"""The skorch net that trains a multi-task network (held, never exposed raw),
and :func:`make_net`, which builds it for training, for persistence and for
unpickling."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from skorch import NeuralNet
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator, to_tensor
from torch import Tensor, nn

from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._data import BatchLoader, as_dataset
from sklearn_rmtl._distributed import GradientSync
from sklearn_rmtl._loss import WeightedMultiTaskBCE
from sklearn_rmtl._pickling import (
    available_device,
    load_module_weights,
    module_weights,
)
from sklearn_rmtl._precision import autocast, grad_scaler, scaled_backward
from sklearn_rmtl._seeding import isolated_global_rng, skipped_random_init
from sklearn_rmtl._torch_module import MultiTaskModule
from sklearn_rmtl._weighting import WEIGHTINGS
from sklearn_rmtl.balancing import FixedWeights, TaskBalancer

if TYPE_CHECKING:
    from sklearn_rmtl._distributed import DataParallel

# Key of the pickled state of a net trimmed for prediction (plain values).
_PREDICTION_STATE = "prediction_state"


class MultiTaskNet(NeuralNet):
    """``NeuralNet`` whose loss reads optional per-row weights from the input.

    Row weights travel in the input dict under ``"sample_weight"`` (so skorch
    batches them together with the features), and :meth:`get_loss`, skorch's
    documented seam, hands them to the criterion. The loss mask (the user's
    sample weights, 0 for missing labels) travels the same way under
    ``"loss_mask"``. The module ignores both.

    Inputs become one :class:`~sklearn_rmtl._data.TensorDictDataset` on the
    net's device, read a whole batch at a time (see :mod:`sklearn_rmtl._data`).

    With a ``balancer`` (:mod:`sklearn_rmtl.balancing`), a training step
    hands the criterion's per-task losses to it instead of calling
    ``backward`` on the criterion's weighted sum (:meth:`train_step_single`,
    skorch's seam for a custom step); validation losses are the criterion's.

    Under ``precision="float16"`` the net holds a loss scaler
    (``grad_scaler_``, made with the optimiser) and :meth:`train_step`
    steps through it.

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`skorch.NeuralNet`.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        The dtype of the forward pass's matrix products (see
        :mod:`sklearn_rmtl._precision`); the output and the loss are float32.
    balancer : TaskBalancer, default=None
        How training steps combine the per-task losses; ``None`` is the
        criterion's own loss. Training-only, so not part of
        :meth:`get_config`: a net rebuilt for prediction has none.
    """

    #: Settings besides the module's and the criterion's arguments that a net
    #: trimmed for prediction still reports; ``make_net`` fixes the others.
    _config_settings = (
        "optimizer__weight_decay",
        "lr",
        "max_epochs",
        "batch_size",
        "iterator_train__shuffle",
        "verbose",
        "precision",
    )

    #: Under data parallelism, how the training steps sum their gradients
    #: over the ranks (made by the first step; training-only).
    gradient_sync: GradientSync | None = None

    def __init__(
        self,
        *args: Any,
        precision: str = "float32",
        balancer: TaskBalancer | None = None,
        data_parallel: DataParallel | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.precision = precision
        self.balancer = balancer
        self.data_parallel = data_parallel

    def initialize_optimizer(self, triggered_directly: Any = None) -> MultiTaskNet:
        """skorch's optimiser, and its loss scaler under float16 (else None)."""
        super().initialize_optimizer(triggered_directly=triggered_directly)
        self.grad_scaler_ = grad_scaler(self.precision, self.device)
        if self.balancer is not None:
            self.balancer.grad_scaler = self.grad_scaler_
        return self

    def trim_for_prediction(self) -> None:
        """skorch's trim, and the loss scaler, which prediction never uses."""
        super().trim_for_prediction()
        self.grad_scaler_ = None

    def __getstate__(self) -> dict[str, Any]:
        """A trimmed net as plain values: its configuration and its weights.

        skorch's state holds a ``functools.partial``, a ``torch.Generator``,
        the dataset and iterator classes and the module as torch-pickled
        bytes; a net trimmed for prediction (as ``fit`` leaves it) is fully
        described by :meth:`get_config` and its weights, which pickle and
        skops store as plain data. A net in training keeps skorch's state.
        """
        if not getattr(self, "_trimmed_for_prediction", False):
            state = cast(dict[str, Any], super().__getstate__())
            # The DDP wrapper holds the process group: remade by the next step.
            state.pop("gradient_sync", None)
            return state
        return {
            _PREDICTION_STATE: {
                "config": self.get_config(),
                "device": str(self.device),
                "weights": module_weights(self.module_),
            }
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        plain = state.get(_PREDICTION_STATE)
        if plain is None:  # a net in training, or a pickle of skorch's state
            super().__setstate__(state)
            return
        device = available_device(plain["device"])
        net = make_net(type(self), device=device, **plain["config"])
        with isolated_global_rng(device), skipped_random_init():
            net.initialize()  # its initial weights are overwritten next
        load_module_weights(net.module_, plain["weights"])
        net.trim_for_prediction()
        self.__dict__.update(vars(net))

    def train_step(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's step; under float16, one through the loss scaler.

        :meth:`train_step_single` fills the gradients of the scaled loss;
        they are unscaled before skorch's ``on_grad_computed`` callbacks
        (so that gradient clipping sees the true gradients), the optimiser
        steps only when they are finite, and the scale adapts. Float32 and
        bfloat16 take skorch's step unchanged.

        Parameters
        ----------
        batch : tuple
            ``(X, y)`` of one batch.
        **fit_params : dict
            Passed to the module's ``forward`` (as by skorch).

        Returns
        -------
        step : dict
            ``{"loss": loss, "y_pred": y_pred}``.
        """
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)
        # skorch hands the optimiser a closure, which GradScaler refuses.
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        self._zero_grad_optimizer()
        step = self.train_step_single(batch, **fit_params)
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        for optimizer in optimizers:
            scaler.step(optimizer)  # skipped where the gradients overflowed
        scaler.update()
        return step

    def get_config(self) -> dict[str, Any]:
        """The arguments of ``make_net`` that rebuild this net for prediction.

        Returns
        -------
        config : dict
            Every ``module__`` and ``criterion__`` argument and the settings
            in ``_config_settings``; plain values.
        """
        config = {
            k: v
            for k, v in vars(self).items()
            if k.startswith(("module__", "criterion__"))
        }
        config.update({k: getattr(self, k) for k in self._config_settings})
        return config

    def infer(self, x: Any, **fit_params: Any) -> Tensor:
        """skorch's forward pass, under autocast in ``precision``."""
        with autocast(self.precision, self.device):
            out = super().infer(x, **fit_params)
        return out.float()

    def get_dataset(self, X: Any, y: Any = None) -> torch.utils.data.Dataset:
        return as_dataset(X, y, device=self.device)

    def row_weights(
        self, y_pred: Tensor, y_true: Tensor, X: Any, training: bool
    ) -> Tensor | None:
        """Per-row, per-task loss weights of a batch, or None for equal weights."""
        weight = X.get("sample_weight") if isinstance(X, dict) else None
        return None if weight is None else weight.to(y_pred.device)

    def loss_mask(self, y_pred: Tensor, X: Any) -> Tensor | None:
        """The batch's per-entry loss mask (see ``WeightedMultiTaskBCE``), or None."""
        mask = X.get("loss_mask") if isinstance(X, dict) else None
        return None if mask is None else mask.to(y_pred.device)

    def task_losses(
        self, y_pred: Tensor, y_true: Tensor, X: Any = None, training: bool = False
    ) -> Tensor:
        """The batch's per-task losses, row weights and mask applied: (n_tasks,).

        What :meth:`get_loss` combines with the task weights; a custom
        ``train_step_single`` that weighs tasks itself starts from these.
        """
        mask = self.loss_mask(y_pred, X)
        losses = self.criterion_.task_losses(
            y_pred,
            y_true.to(y_pred.device),
            self.row_weights(y_pred, y_true, X, training),
            mask,
        )
        if training and self.data_parallel is not None:
            # This shard's part of the whole batch's loss: its losses are
            # normalised by its own weight, which is this share of the total.
            local = (
                torch.full_like(losses, len(y_pred)) if mask is None else mask.sum(0)
            )
            total = self.data_parallel.total(local)
            losses = losses * (local / total.clamp(min=torch.finfo(total.dtype).tiny))
        return losses

    def extra_loss(
        self, y_pred: Tensor, y_true: Tensor, X: Any = None, training: bool = False
    ) -> Tensor | None:
        """The backbone's training-only loss term of the step, or None.

        A backbone with an ``extra_loss(y, mask, total)`` method (ESMM with
        ESCM2's ``counterfactual``) computes it from what its last training
        forward pass kept; the term is added to the task losses' weighted
        sum, outside the task weights and the ``balancer``, and only in
        training steps (validation losses are the criterion's). It sees the
        loss mask (sample weights, missing labels) but not RMTL's row
        weights, which weigh the tasks' BCE.
        """
        if not training:
            return None
        extra = getattr(getattr(self.module_, "backbone", None), "extra_loss", None)
        if extra is None:
            return None
        total = None if self.data_parallel is None else self.data_parallel.total
        mask = self.loss_mask(y_pred, X)
        return cast(Tensor | None, extra(y_true.to(y_pred.device), mask, total))

    def get_loss(
        self, y_pred: Tensor, y_true: Tensor, X: Any = None, training: bool = False
    ) -> Tensor:
        if training and self.data_parallel is not None:
            weights = self.criterion_.task_weights
            loss = (self.task_losses(y_pred, y_true, X, training) * weights).sum()
        else:
            weight = self.row_weights(y_pred, y_true, X, training)
            mask = self.loss_mask(y_pred, X)
            loss = self.criterion_(y_pred, y_true.to(y_pred.device), weight, mask)
        extra = self.extra_loss(y_pred, y_true, X, training)
        return loss if extra is None else loss + extra

    def train_step_single(self, batch: Any, **fit_params: Any) -> dict[str, Any]:
        """skorch's training step, with the gradients from the ``balancer``.

        The per-task losses of :meth:`task_losses` (row weights and the
        loss mask applied, as in :meth:`get_loss`) go to :meth:`TaskBalancer.backward
        <sklearn_rmtl.balancing.TaskBalancer.backward>`, which fills the
        gradients (of the scaled losses under float16, see
        :meth:`train_step`); without a balancer this is skorch's step. The
        backbone's :meth:`extra_loss` (ESCM2) adds its own gradients beside
        the balancer's, unbalanced.

        Under data parallelism the gradients are summed over the ranks by
        :class:`~sklearn_rmtl._distributed.GradientSync`: from the second
        step on, by ``DistributedDataParallel`` during the backward pass (the
        forward pass through its wrapper of ``module_``, the losses times
        the number of ranks, since DDP averages), the first step by hand.

        Parameters
        ----------
        batch : tuple
            ``(X, y)`` of one batch.
        **fit_params : dict
            Passed to the module's ``forward`` (as by skorch).

        Returns
        -------
        step : dict
            ``{"loss": loss, "y_pred": y_pred}``, the loss being the
            balancer's weighted sum of the task losses plus the backbone's
            :meth:`extra_loss` (the whole batch's, under data parallelism).
        """
        scaler = getattr(self, "grad_scaler_", None)
        sync = self._gradient_sync()
        if self.balancer is None and scaler is None and sync is None:
            return cast(dict[str, Any], super().train_step_single(batch, **fit_params))
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        if sync is None:
            y_pred = self.infer(Xi, **fit_params)
        else:
            y_pred = self._infer_with(sync.model, Xi, **fit_params)
        # DDP averages the ranks' gradients: each rank's share of the whole
        # batch's loss is multiplied by the number of ranks (1 otherwise).
        scale = 1 if sync is None else sync.loss_scale
        context = contextlib.nullcontext() if sync is None else sync.backward_context()
        if self.balancer is None:
            loss = self.get_loss(y_pred, yi, X=Xi, training=True)
            # Gradients summed while still scaled: an overflow on any rank
            # reaches every rank, so all skip the same steps.
            with context:
                scaled_backward(loss if scale == 1 else loss * scale, scaler)
            return self._synced({"loss": loss, "y_pred": y_pred}, sync)
        task_losses = self.task_losses(y_pred, yi, Xi, training=True)
        # The backbone's own term (ESCM2) is no task's loss: the balancer
        # adds its gradients beside its own, unbalanced.
        extra = self.extra_loss(y_pred, yi, Xi, training=True)
        params = [p for _, p in self.get_all_learnable_params()]
        if scale == 1:
            with context:
                loss = self.balancer.backward_with(task_losses, params, extra)
        else:  # FixedWeights only (GradientSync): linear in the losses
            extra = None if extra is None else extra * scale
            with context:
                loss = self.balancer.backward_with(task_losses * scale, params, extra)
            loss = loss / scale
        return self._synced({"loss": loss, "y_pred": y_pred}, sync)

    def _gradient_sync(self) -> GradientSync | None:
        """How this fit's steps sum their gradients over the ranks (None: one process).

        Made at the first training step of ``module_``. DDP may take over
        only the steps of one ``backward`` pass: no balancer, or fixed
        weights (the only balancing that runs data-parallel; the others
        take per-task gradients with ``torch.autograd.grad`` or learn
        weights of their own).
        """
        if self.data_parallel is None:
            return None
        sync = self.gradient_sync
        if sync is None or sync.module is not self.module_:
            sync = GradientSync(
                self.data_parallel,
                self.module_,
                [p for _, p in self.get_all_learnable_params()],
                ddp=self.balancer is None or isinstance(self.balancer, FixedWeights),
            )
            self.gradient_sync = sync
        return sync

    def _infer_with(self, module: nn.Module, x: Any, **fit_params: Any) -> Tensor:
        """:meth:`infer` through ``module`` (DDP's wrapper of ``module_``)."""
        x = to_tensor(x, device=self.device)
        with autocast(self.precision, self.device):
            if isinstance(x, Mapping):
                out = module(**self._merge_x_and_fit_params(x, fit_params))
            else:
                out = module(x, **fit_params)
        return cast(Tensor, out).float()

    def _synced(
        self, step: dict[str, Any], sync: GradientSync | None
    ) -> dict[str, Any]:
        """A step's gradients and loss summed over the ranks (data parallelism)."""
        if sync is not None:
            sync.after_backward()
            step["loss"] = sync.data_parallel.total(step["loss"])
        return step


class QWeightedNet(MultiTaskNet):
    """The RMTL refit: per-row, per-task BCE weights from the critics (Eq. 17).

    In every training step the critic evaluates ``Q_k(s_t, pi(s_t)_k)`` at the
    actor's current, detached prediction, and :data:`WEIGHTINGS` turns it
    into weights. The critic reads its own encoding of the batch, carried in
    the input dict as ``critic_x_cat`` / ``critic_x_num``. Validation losses
    (early stopping) are the BCE without these weights, the metric that is
    reported (the user's sample weights and missing labels still apply).

    Parameters
    ----------
    *args, **kwargs
        Passed to :class:`MultiTaskNet`.
    critic : SessionCritic, default=None
        Fitted critics whose ``module_`` (``(x_cat, x_num, actions) -> Q``) is
        on the net's device. Held through the container because skorch only
        accepts torch modules it creates itself. None for a net rebuilt for
        prediction (the critic is dropped after the refit).
    weighting : str
        Key of :data:`WEIGHTINGS`.
    q_lambda : float
        The paper's lambda.
    """

    def __init__(
        self,
        *args: Any,
        critic: SessionCritic | None = None,
        weighting: str,
        q_lambda: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.critic = critic
        self.weighting = weighting
        self.q_lambda = q_lambda

    def get_config(self) -> dict[str, Any]:
        """The arguments of ``make_net`` that rebuild this net for prediction.

        Returns
        -------
        config : dict
            :meth:`MultiTaskNet.get_config` plus ``weighting`` and
            ``q_lambda``; the critic is not configuration (it is dropped
            after the refit).
        """
        return {
            **super().get_config(),
            "weighting": self.weighting,
            "q_lambda": self.q_lambda,
        }

    def trim_for_prediction(self) -> None:
        """skorch's trim, and the critic copy, which prediction never reads."""
        super().trim_for_prediction()
        self.critic = None

    def row_weights(
        self, y_pred: Tensor, y_true: Tensor, X: Any, training: bool
    ) -> Tensor | None:
        if not training or self.critic is None:
            # NOTE[DIFF]: early stopping monitors the unweighted BCE (the
            # reported metric) rather than the weighted training loss.
            return None
        device = y_pred.device
        # Cross-fitted critics read each row's fold (SessionCritic.route).
        fold = () if "critic_fold" not in X else (X["critic_fold"].to(device),)
        with torch.no_grad(), autocast(self.precision, device):
            q = self.critic.module_(
                X["critic_x_cat"].to(device),
                X["critic_x_num"].to(device),
                torch.sigmoid(y_pred.detach()),
                *fold,
            ).float()
        fn = WEIGHTINGS[self.weighting].fn
        assert fn is not None  # QWeightedNet serves the critics' weightings
        return fn(q, y_true.to(device), self.q_lambda)


def make_net(
    net_cls: type[MultiTaskNet],
    *,
    device: str,
    train_split: Any = None,
    callbacks: list[Any] | None = None,
    **params: Any,
) -> MultiTaskNet:
    """The skorch net of the actor; ``params`` are the fit-specific settings.

    Shared by training and by :mod:`sklearn_rmtl.persistence`, which rebuilds
    fitted nets from their saved ``params``.
    """
    return net_cls(
        module=MultiTaskModule,
        criterion=WeightedMultiTaskBCE,
        optimizer=torch.optim.Adam,
        # One fused kernel for all parameters instead of several ops each.
        optimizer__fused=True,
        train_split=train_split,
        callbacks=callbacks or [],
        predict_nonlinearity=None,
        device=device,
        iterator_train=BatchLoader,
        iterator_valid=BatchLoader,
        **params,
    )
