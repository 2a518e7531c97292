"""Fixed task weights: ``sum_k task_weights[k] * L_k`` (the default)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sklearn_rmtl.balancing._base import TaskBalancer


class FixedWeights(TaskBalancer):
    """The estimator's ``task_weights``, unchanged through training.

    The step minimises ``sum_k c_k L_k``, exactly the criterion's loss
    (:class:`~sklearn_rmtl._loss.WeightedMultiTaskBCE`); fits are identical
    to those before task balancing existed.

    Parameters
    ----------
    task_weights : sequence of float
        The weights ``c_k``.
    lr : float
        Unused.
    generator : torch.Generator, default=None
        Unused.
    """

    def backward(self, task_losses: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
        """Fill the gradients of ``params`` with those of ``sum_k c_k L_k``.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses.
        params : sequence of Parameter
            The network's parameters (reached through ``backward``).

        Returns
        -------
        loss : Tensor
            ``sum_k c_k L_k``, detached.
        """
        return self._backward_weighted(task_losses, self.task_weights)

    def backward_with(
        self,
        task_losses: Tensor,
        params: Sequence[nn.Parameter],
        extra: Tensor | None = None,
    ) -> Tensor:
        """:meth:`backward` of ``sum_k c_k L_k + extra``, in one pass.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses.
        params : sequence of Parameter
            The network's parameters (reached through ``backward``).
        extra : Tensor, default=None
            A scalar term outside the task weights (see
            :meth:`TaskBalancer.backward_with`).

        Returns
        -------
        loss : Tensor
            ``sum_k c_k L_k + extra``, detached.
        """
        if extra is None:
            return self.backward(task_losses, params)
        weights = self.task_weights.to(task_losses.device)
        loss = (weights * task_losses).sum() + extra
        self.scaled(loss).backward()
        return loss.detach()

    def weights(self) -> Tensor:
        """The fixed weights ``c_k``.

        Returns
        -------
        weights : Tensor of shape (n_tasks,)
            ``task_weights``.
        """
        return self.task_weights.clone()
