"""The multi-task training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightedMultiTaskBCE(nn.Module):
    """Per-task binary cross-entropy, weighted per task and optionally per row.

    ``loss = sum_k task_weights[k] * L_k`` with the per-task losses of
    :meth:`task_losses`,

    ``L_k = sum_n m[n, k] * w[n, k] * BCE(logits[n, k], y[n, k]) / sum_n m[n, k]``

    where ``w`` are row weights (RMTL's Q-derived weights, Eq. 17) and ``m``
    the mask (the user's sample weights, 0 where a label is missing). Without
    a mask ``L_k`` is the plain batch mean of ``w * BCE``, the loss of the
    paper.

    With the default task weights ``1 / K`` and no row weights this is the
    equal-weight BCE averaged over tasks used for pretraining (user guide,
    phase 1).

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
        self,
        logits: Tensor,
        y: Tensor,
        sample_weight: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """The per-task losses ``L_k`` before task weighting, shape (n_tasks,).

        Task-balancing methods combine these instead of ``task_weights``.

        Parameters
        ----------
        logits, y : Tensor of shape (batch, n_tasks)
            Predictions and 0/1 labels; ``y`` may hold anything (NaN too)
            where ``mask`` is 0.
        sample_weight : Tensor of shape (batch, n_tasks), default=None
            Row weights multiplying each entry's BCE (RMTL's weights).
        mask : Tensor of shape (batch, n_tasks), default=None
            Non-negative weight of each entry, 0 for an entry that must have
            no effect at all (a missing label, a zero sample weight). Each
            task's loss is normalised by the sum of its mask in the batch (0
            when that sum is 0), so a row of mask ``c`` counts as ``c``
            copies of the row.
        """
        if mask is None:
            loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
            if sample_weight is not None:
                loss = loss * sample_weight
            return loss.mean(0)
        # Masked labels are replaced before the BCE, so that neither their
        # value nor a NaN reaches the loss or its gradient.
        active = mask > 0
        y = torch.where(active, y, torch.zeros_like(y))
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        weight = mask if sample_weight is None else mask * sample_weight
        loss = torch.where(active, loss * weight, torch.zeros_like(loss))
        return loss.sum(0) / mask.sum(0).clamp(min=torch.finfo(mask.dtype).tiny)

    def forward(
        self,
        logits: Tensor,
        y: Tensor,
        sample_weight: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        losses = self.task_losses(logits, y, sample_weight, mask)
        return (losses * self.task_weights).sum()
