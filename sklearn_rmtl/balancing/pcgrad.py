"""PCGrad: project conflicting task gradients (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sklearn_rmtl.balancing._base import TaskBalancer, add_grad, flatten, unflatten


def project_conflicting(
    grads: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """The PCGrad update of per-task gradients (Algorithm 1 of Yu et al.).

    For each task ``i``, ``g_i`` is projected onto the normal plane of every
    other task's original gradient ``g_j`` it conflicts with
    (``g_i . g_j < 0``): ``g_i <- g_i - (g_i . g_j) / ||g_j||^2 g_j``, the
    ``j`` taken in a random order; the projected gradients are summed.

    Parameters
    ----------
    grads : Tensor of shape (n_tasks, n_params)
        One flattened gradient per task.
    generator : torch.Generator, default=None
        Draws the order of the other tasks for every task.

    Returns
    -------
    update : Tensor of shape (n_params,)
        ``sum_i g_i`` after projection; ``grads.sum(0)`` when no two
        gradients conflict.

    Examples
    --------
    >>> import torch
    >>> from sklearn_rmtl.balancing import project_conflicting
    >>> project_conflicting(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.5000, 1.5000])
    """
    n_tasks = len(grads)
    squared = (grads * grads).sum(1)
    projected = grads.clone()
    for i in range(n_tasks):
        order = torch.randperm(n_tasks, generator=generator).tolist()
        for j in order:
            if j == i or squared[j] == 0:
                continue
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / squared[j] * grads[j]
    return projected.sum(0)


class PCGrad(TaskBalancer):
    """Remove the components by which task gradients conflict, then sum them.

    The gradients of the tasks' losses ``c_k L_k`` on the shared parameters
    (those reached by more than one task's loss, see
    :func:`~sklearn_rmtl.balancing.shared_parameters`) are combined by
    :func:`project_conflicting`, over all shared parameters at once as one
    vector; task-specific parameters (a task's tower) get their plain
    gradient, which only their own task has. The random task order is drawn
    from the fit's seeded generator.

    Parameters
    ----------
    task_weights : sequence of float
        The estimator's ``c_k``; they scale each task's gradient before the
        projection.
    lr : float
        Unused.
    generator : torch.Generator, default=None
        The fit's generator, drawing the task orders.

    References
    ----------
    T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn, "Gradient
    Surgery for Multi-Task Learning", NeurIPS 2020.
    """

    def backward(self, task_losses: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
        """Fill the gradients with the PCGrad update.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses.
        params : sequence of Parameter
            The network's parameters.

        Returns
        -------
        loss : Tensor
            ``sum_k c_k L_k``, detached.
        """
        weighted = task_losses * self.task_weights.to(task_losses.device)
        grads, is_shared, _ = self._task_gradients(weighted, params)
        shared = [p for p, s in zip(params, is_shared, strict=True) if s]
        if shared:
            stacked = torch.stack(
                [
                    flatten([g[j] for j, s in enumerate(is_shared) if s], shared)
                    for g in grads
                ]
            )
            update = project_conflicting(stacked, self.generator)
            for p, g in zip(shared, unflatten(update, shared), strict=True):
                add_grad(p, self.scaled(g))
        for j, (p, on_shared) in enumerate(zip(params, is_shared, strict=True)):
            if not on_shared:
                # One task reaches it, or each task its own block of it.
                for task_grads in grads:
                    grad = task_grads[j]
                    add_grad(p, None if grad is None else self.scaled(grad))
        return weighted.detach().sum()

    def weights(self) -> Tensor:
        """The weights ``c_k`` of the task losses (PCGrad does not reweigh).

        Returns
        -------
        weights : Tensor of shape (n_tasks,)
            ``task_weights``.
        """
        return self.task_weights.clone()
