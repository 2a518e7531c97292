"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sklearn_rmtl.balancing._base import TaskBalancer, check_positive


class DynamicWeightAverage(TaskBalancer):
    """Weigh each task by how slowly its loss fell over the last epochs.

    Eq. (7) of Liu et al.: in epoch ``t``

    ``lambda_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T)``,
    ``r_k(t-1) = L_k(t-1) / L_k(t-2)``,

    with ``L_k(t)`` the mean of task ``k``'s training loss over the steps of
    epoch ``t``; the first two epochs have ``lambda_k = 1``. A task whose
    loss fell less gets more weight. The step minimises
    ``sum_k c_k lambda_k L_k``.

    Parameters
    ----------
    task_weights : sequence of float
        The estimator's ``c_k``, multiplying ``lambda_k``.
    lr : float
        Unused.
    generator : torch.Generator, default=None
        Unused.
    temperature : float, default=2.0
        The paper's ``T``: larger values make the weights more equal.

    Attributes
    ----------
    balance : Tensor of shape (n_tasks,)
        The ``lambda_k`` of the current epoch.
    epoch_losses : list of Tensor
        The mean per-task losses of the epochs finished so far.

    References
    ----------
    S. Liu, E. Johns, A. J. Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019.
    """

    def __init__(
        self,
        *,
        task_weights: Sequence[float],
        lr: float,
        generator: torch.Generator | None = None,
        temperature: float = 2.0,
    ) -> None:
        super().__init__(task_weights=task_weights, lr=lr, generator=generator)
        check_positive("dwa", "temperature", temperature, allow_zero=False)
        self.temperature = float(temperature)
        self.balance = torch.ones(self.n_tasks)
        self.epoch_losses: list[Tensor] = []
        self._sum: Tensor | None = None
        self._steps = 0

    def backward(self, task_losses: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
        """Fill the gradients of ``sum_k c_k lambda_k L_k``; add to the epoch mean.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses.
        params : sequence of Parameter
            The network's parameters (reached through ``backward``).

        Returns
        -------
        loss : Tensor
            ``sum_k c_k lambda_k L_k``, detached.
        """
        losses = task_losses.detach()
        self._sum = losses.clone() if self._sum is None else self._sum + losses
        self._steps += 1
        return self._backward_weighted(task_losses, self.task_weights * self.balance)

    def end_epoch(self) -> None:
        """Store the epoch's mean losses and set the next epoch's ``lambda_k``."""
        if self._sum is None:
            return
        self.epoch_losses.append((self._sum / self._steps).cpu())
        self._sum, self._steps = None, 0
        if len(self.epoch_losses) >= 2:
            previous, before = self.epoch_losses[-1], self.epoch_losses[-2]
            ratios = previous / before.clamp_min(1e-12)
            self.balance = self.n_tasks * torch.softmax(ratios / self.temperature, 0)

    def weights(self) -> Tensor:
        """The effective weights ``c_k lambda_k`` of the current epoch.

        Returns
        -------
        weights : Tensor of shape (n_tasks,)
            Detached, on the CPU.
        """
        return self.task_weights * self.balance
