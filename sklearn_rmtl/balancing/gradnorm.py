"""GradNorm: weights that equalise the tasks' gradient norms (Chen et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import ClassVar

import torch
from torch import Tensor, nn

from sklearn_rmtl.balancing._base import TaskBalancer, add_grad, check_positive


def _norm(grads: Sequence[Tensor | None], device: torch.device) -> Tensor:
    """The L2 norm of several gradients taken together (None counts as 0)."""
    total = torch.zeros((), device=device)
    for g in grads:
        if g is not None:
            total = total + g.pow(2).sum()
    return torch.sqrt(total)


class GradNorm(TaskBalancer):
    """Learn loss weights ``w_k`` so that the tasks train at similar rates.

    At every step, with ``W`` the shared parameters (those reached by more
    than one task's loss, see :func:`~sklearn_rmtl.balancing.shared_parameters`):

    - ``G_k = ||grad_W (w_k L_k)||_2`` and ``G_mean`` their mean;
    - the relative inverse training rate ``r_k = L~_k / mean_j L~_j`` with
      ``L~_k = L_k(t) / L_k(0)`` (``L_k(0)``: the loss of the first step);
    - the weights take an Adam step on ``L_grad = sum_k |G_k - [G_mean
      r_k^alpha]|`` (Eq. (2); the bracket is a constant), then are
      renormalised to ``sum_k w_k = K``;
    - the network takes its gradient of ``sum_k w_k L_k`` (at the weights
      before their step), scaled by the estimator's uniform ``1 / K``.

    ``alpha`` sets how strongly the tasks that train slower are pulled up;
    ``alpha = 0`` asks for equal gradient norms.

    Parameters
    ----------
    task_weights : sequence of float
        The estimator's weights, ``1 / K`` each: GradNorm learns the weights
        itself and would absorb any fixed scaling of a task, so the
        estimators refuse ``task_weights`` with it.
    lr : float
        The network's learning rate, the default of ``weight_lr``.
    generator : torch.Generator, default=None
        Unused.
    alpha : float, default=1.5
        The asymmetry hyper-parameter (the paper's value for its NYUv2
        experiments).
    weight_lr : float, default=None
        Adam learning rate of the weights; ``None`` means ``lr``.

    Attributes
    ----------
    task_weights_learned : Tensor of shape (n_tasks,)
        The current ``w_k`` (summing to K).

    Notes
    -----
    NOTE[DIFF]: the paper applies GradNorm to the last shared layer to save
    computation; here ``W`` is every shared parameter (one backward pass per
    task), which needs no per-architecture choice of layer. The weights are
    kept above ``1e-6`` before renormalising, so that a large ``weight_lr``
    cannot make them negative.

    References
    ----------
    Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich, "GradNorm:
    Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
    Networks", ICML 2018.
    """

    uses_task_weights: ClassVar[bool] = False

    def __init__(
        self,
        *,
        task_weights: Sequence[float],
        lr: float,
        generator: torch.Generator | None = None,
        alpha: float = 1.5,
        weight_lr: float | None = None,
    ) -> None:
        super().__init__(task_weights=task_weights, lr=lr, generator=generator)
        check_positive("gradnorm", "alpha", alpha, allow_zero=True)
        if weight_lr is not None:
            check_positive("gradnorm", "weight_lr", weight_lr, allow_zero=False)
        self.alpha = float(alpha)
        self.weight_lr = weight_lr
        self.task_weights_learned = torch.ones(self.n_tasks, requires_grad=True)
        self.initial_losses: Tensor | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def backward(self, task_losses: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
        """Fill the gradients of ``sum_k w_k L_k``; take one GradNorm step.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses.
        params : sequence of Parameter
            The network's parameters.

        Returns
        -------
        loss : Tensor
            ``sum_k c_k w_k L_k`` at the weights before the step, detached.
        """
        device = task_losses.device
        w = self.task_weights_learned
        if self._optimizer is None or w.device != device:
            w = self.task_weights_learned = w.detach().to(device).requires_grad_()
            lr = self.lr if self.weight_lr is None else self.weight_lr
            self._optimizer = torch.optim.Adam([w], lr=lr)
        losses = task_losses.detach()
        if self.initial_losses is None:
            self.initial_losses = losses.clone()
        # Float16 steps whose gradients overflowed are skipped by the loss
        # scaler: they leave the weights and the shared parameters alone.
        grads, is_shared, finite = self._task_gradients(task_losses, params)
        shared = [j for j, s in enumerate(is_shared) if s]
        # ||grad_W (w_k L_k)|| = w_k ||grad_W L_k|| for w_k >= 0: the norms
        # are differentiable in w without a second-order graph.
        norms = torch.stack([_norm([g[j] for j in shared], device) for g in grads])
        G = w * norms
        ratios = losses / self.initial_losses.clamp_min(1e-12)
        target = (G.mean() * (ratios / ratios.mean()) ** self.alpha).detach()
        self._optimizer.zero_grad()
        torch.abs(G - target).sum().backward()  # norms unscaled: w's own grad
        scale = self.task_weights.to(device) * w.detach()
        for j, p in enumerate(params):
            grads_of_p = [g[j] for g in grads]
            terms = [scale[k] * g for k, g in enumerate(grads_of_p) if g is not None]
            add_grad(p, self.scaled(reduce(torch.add, terms)) if terms else None)
        if finite:
            self._optimizer.step()
        with torch.no_grad():
            w.clamp_(min=1e-6)
            w.mul_(self.n_tasks / w.sum())
        return (scale * losses).sum()

    def weights(self) -> Tensor:
        """The effective weights ``c_k w_k``.

        Returns
        -------
        weights : Tensor of shape (n_tasks,)
            Detached, on the CPU.
        """
        return self.task_weights * self.task_weights_learned.detach().cpu()
