"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sklearn_rmtl.balancing._base import TaskBalancer, check_positive


class UncertaintyWeighting(TaskBalancer):
    """Learn each task's noise ``sigma_k`` and weigh its loss by ``1 / sigma_k^2``.

    With ``s_k = log sigma_k^2`` learned jointly with the network, the step
    minimises

    ``sum_k c_k (exp(-s_k) L_k + s_k / 2)``,

    the classification form of Kendall et al.'s objective (their Eq. (10)
    and (12): ``L / sigma^2 + log sigma`` for a softmax likelihood scaled by
    ``1 / sigma^2``; the regression form would halve the first term). For a
    fixed ``L_k`` the minimum over ``s_k`` is at ``exp(-s_k) = 1 / (2 L_k)``:
    the noisier a task (the larger its loss at convergence), the smaller its
    weight. The ``s_k`` start at 0 (weight 1) and take Adam steps of their
    own at ``weight_lr`` (Adam updates each parameter on its own, so this is
    the joint optimisation of the paper); the network's gradient uses the
    weights before the step.

    Parameters
    ----------
    task_weights : sequence of float
        The estimator's ``c_k``; they multiply each task's whole term (and
        so its effective weight ``c_k exp(-s_k)``).
    lr : float
        The network's learning rate, the default of ``weight_lr``.
    generator : torch.Generator, default=None
        Unused.
    weight_lr : float, default=None
        Adam learning rate of the log-variances; ``None`` means ``lr``.

    Attributes
    ----------
    log_vars : Tensor of shape (n_tasks,)
        The learnable ``s_k``.

    References
    ----------
    A. Kendall, Y. Gal, R. Cipolla, "Multi-Task Learning Using Uncertainty
    to Weigh Losses for Scene Geometry and Semantics", CVPR 2018.
    """

    def __init__(
        self,
        *,
        task_weights: Sequence[float],
        lr: float,
        generator: torch.Generator | None = None,
        weight_lr: float | None = None,
    ) -> None:
        super().__init__(task_weights=task_weights, lr=lr, generator=generator)
        if weight_lr is not None:
            check_positive("uncertainty", "weight_lr", weight_lr, allow_zero=False)
        self.weight_lr = weight_lr
        self.log_vars = torch.zeros(self.n_tasks, requires_grad=True)
        self._optimizer: torch.optim.Optimizer | None = None

    def backward(self, task_losses: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
        """Fill the gradients of the uncertainty objective; step ``s_k``.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses.
        params : sequence of Parameter
            The network's parameters (reached through ``backward``).

        Returns
        -------
        loss : Tensor
            ``sum_k c_k exp(-s_k) L_k`` (without the ``s_k / 2`` terms),
            detached.
        """
        if self._optimizer is None or self.log_vars.device != task_losses.device:
            self.log_vars = (
                self.log_vars.detach().to(task_losses.device).requires_grad_()
            )
            lr = self.lr if self.weight_lr is None else self.weight_lr
            self._optimizer = torch.optim.Adam([self.log_vars], lr=lr)
        c = self.task_weights.to(task_losses.device)
        precision = torch.exp(-self.log_vars)
        objective = (c * (precision * task_losses + self.log_vars / 2)).sum()
        self._optimizer.zero_grad()
        self.scaled(objective).backward()
        if self.unscale_own_grad(self.log_vars):
            self._optimizer.step()
        return (c * precision.detach() * task_losses.detach()).sum()

    def weights(self) -> Tensor:
        """The effective weights ``c_k exp(-s_k)``.

        Returns
        -------
        weights : Tensor of shape (n_tasks,)
            Detached, on the CPU.
        """
        return self.task_weights * torch.exp(-self.log_vars.detach().cpu())
