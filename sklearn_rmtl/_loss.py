"""The multi-task training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightedMultiTaskBCE(nn.Module):
    """Per-task binary cross-entropy, weighted per task and optionally per row.

    ``loss = sum_k task_weights[k] * L_k`` with the per-task losses
    ``L_k = mean_n w[n, k] * BCE(logits[n, k], y[n, k])`` of
    :meth:`task_losses`.

    With the default task weights ``1 / K`` and no row weights this is the
    equal-weight BCE averaged over tasks used for pretraining (user guide,
    phase 1); RMTL's refit passes the Q-derived row weights ``w`` (Eq. 17).

    Parameters
    ----------
    task_weights : sequence of float
        Non-negative weight of each task.
    """

    task_weights: Tensor

    def __init__(self, task_weights: list[float] | Tensor) -> None:
        super().__init__()
        self.register_buffer(
            "task_weights", torch.as_tensor(task_weights, dtype=torch.float32)
        )

    def task_losses(
        self, logits: Tensor, y: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        """The per-task losses ``L_k`` before task weighting, shape (n_tasks,).

        Task-balancing methods combine these instead of ``task_weights``.
        """
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if sample_weight is not None:
            loss = loss * sample_weight
        return loss.mean(0)

    def forward(
        self, logits: Tensor, y: Tensor, sample_weight: Tensor | None = None
    ) -> Tensor:
        return (self.task_losses(logits, y, sample_weight) * self.task_weights).sum()
