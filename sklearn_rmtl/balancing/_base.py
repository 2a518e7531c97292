"""The interface every task-balancing method implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from numbers import Real
from typing import ClassVar

import torch
from torch import Tensor, nn


class TaskBalancer(ABC):
    """Base class: turns a step's per-task losses into parameter gradients.

    A balancer replaces ``loss.backward()`` in a training step. It receives
    the per-task losses ``L_k`` (row weights such as RMTL's ``1 - lambda Q``
    already inside them) and fills ``.grad`` of the network's parameters.
    Its per-task weights multiply the estimator's ``task_weights`` ``c_k``
    where :attr:`uses_task_weights` is True: the step minimises
    ``sum_k c_k b_k L_k`` for the method's balance weights ``b_k``.

    Under ``precision="float16"`` the training step sets :attr:`grad_scaler`
    and the ``.grad`` a method fills must be those of the *scaled*
    objective, which the step unscales before the optimiser's step (and
    skips where they overflowed): call ``backward`` on :meth:`scaled` losses,
    or, when computing gradients with :func:`task_gradients` (which returns
    them unscaled, for norms and projections), add :meth:`scaled` results.

    Subclasses take the keywords below plus their own hyper-parameters, all
    keyword-only; the estimators fill the hyper-parameters from
    ``task_balancing_params``.

    Parameters
    ----------
    task_weights : sequence of float
        The estimator's fixed per-task weights ``c_k`` (``1 / K`` each by
        default).
    lr : float
        The network's learning rate; methods with learnable weights use it
        for their own optimiser unless told otherwise.
    generator : torch.Generator, default=None
        The fit's seeded generator, for methods that draw random numbers.
    """

    #: Whether ``task_weights`` keep an effect; the estimators refuse a
    #: user's ``task_weights`` for methods where they have none.
    uses_task_weights: ClassVar[bool] = True

    def __init__(
        self,
        *,
        task_weights: Sequence[float],
        lr: float,
        generator: torch.Generator | None = None,
    ) -> None:
        # The criterion's conversion, so that "fixed" reproduces its loss bit
        # for bit.
        self.task_weights = torch.as_tensor(list(task_weights), dtype=torch.float32)
        self.n_tasks = len(self.task_weights)
        self.lr = lr
        self.generator = generator
        #: The step's loss scaler under float16, set by the training loop.
        self.grad_scaler: torch.amp.GradScaler | None = None
        # Which parameters are shared, once :meth:`_task_gradients` decided.
        self._shared: list[bool] | None = None

    def scaled(self, value: Tensor) -> Tensor:
        """``value`` times the loss scale of :attr:`grad_scaler`, if any.

        Parameters
        ----------
        value : Tensor
            A loss to call ``backward`` on, or a gradient to add to ``.grad``.

        Returns
        -------
        scaled : Tensor
            ``value`` itself without a scaler.
        """
        return value if self.grad_scaler is None else self.grad_scaler.scale(value)

    def unscale_own_grad(self, weights: Tensor) -> bool:
        """Unscale the ``.grad`` of the method's own learnable ``weights``.

        Their gradient came from a :meth:`scaled` backward pass; a method
        with learnable weights calls this before its own optimiser's step
        and skips that step when it returns False (gradients not finite:
        the network's step is skipped too).

        Parameters
        ----------
        weights : Tensor
            A leaf tensor with a ``.grad``.

        Returns
        -------
        finite : bool
            Whether the unscaled gradient is finite (always True without a
            scaler, which leaves the gradient as it is).
        """
        if self.grad_scaler is None or weights.grad is None:
            return True
        weights.grad.div_(self.grad_scaler.get_scale())
        return bool(torch.isfinite(weights.grad).all())

    def backward_with(
        self,
        task_losses: Tensor,
        params: Sequence[nn.Parameter],
        extra: Tensor | None = None,
    ) -> Tensor:
        """:meth:`backward`, plus the gradients of a term outside the balancing.

        ``extra`` is no task's loss (ESMM's ESCM2 regulariser, see
        :meth:`MultiTaskNet.extra_loss
        <sklearn_rmtl._skorch_net.MultiTaskNet.extra_loss>`): its gradients
        are added to the method's as they are, never weighted, projected or
        normalised by it.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses, attached to the graph.
        params : sequence of Parameter
            Every learnable parameter of the network.
        extra : Tensor, default=None
            A scalar attached to the same graph; None is :meth:`backward`.

        Returns
        -------
        loss : Tensor
            The method's loss plus ``extra``, detached.
        """
        if extra is None:
            return self.backward(task_losses, params)
        # First, keeping the graph that the method's backward passes read.
        self.scaled(extra).backward(retain_graph=True)
        return self.backward(task_losses, params) + extra.detach()

    def _backward_weighted(self, task_losses: Tensor, weights: Tensor) -> Tensor:
        """Fill the gradients of ``sum_k weights_k L_k``; return it, detached."""
        loss = (weights.to(task_losses.device) * task_losses).sum()
        self.scaled(loss).backward()
        return loss.detach()

    def _task_gradients(
        self, task_losses: Tensor, params: Sequence[nn.Parameter]
    ) -> tuple[list[tuple[Tensor | None, ...]], list[bool], bool]:
        """:func:`task_gradients`, which parameters are shared, whether all finite.

        The shared parameters (:func:`shared_parameters`) are decided by the
        first step and kept, except that a float16 step whose gradients
        overflowed (skipped by the loss scaler) decides nothing.
        """
        grads = task_gradients(task_losses, params, self.grad_scaler)  # unscaled
        finite = self.grad_scaler is None or all_finite(grads)
        is_shared = shared_parameters(grads) if self._shared is None else self._shared
        if finite:
            self._shared = is_shared
        return grads, is_shared, finite

    @abstractmethod
    def backward(self, task_losses: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
        """Fill the gradients of ``params`` for one training step.

        Parameters
        ----------
        task_losses : Tensor of shape (n_tasks,)
            The step's per-task losses, attached to the graph.
        params : sequence of Parameter
            Every learnable parameter of the network; their ``.grad`` are
            added to (the optimiser zeroed them before the step).

        Returns
        -------
        loss : Tensor
            The scalar loss reported as the step's ``train_loss``: the
            weighted sum ``sum_k w_k L_k`` of :meth:`weights`, detached.
        """

    @abstractmethod
    def weights(self) -> Tensor:
        """The effective weights ``c_k b_k`` of the task losses now.

        Returns
        -------
        weights : Tensor of shape (n_tasks,)
            Detached, on the CPU.
        """

    def end_epoch(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Hook called at the end of every training epoch (after recording)."""


def add_grad(param: nn.Parameter, grad: Tensor | None) -> None:
    """Accumulate ``grad`` into ``param.grad``, as ``backward`` would."""
    if grad is None:
        return
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad.add_(grad)


def task_gradients(
    task_losses: Tensor,
    params: Sequence[nn.Parameter],
    scaler: torch.amp.GradScaler | None = None,
) -> list[tuple[Tensor | None, ...]]:
    """The gradient of each task's loss with respect to every parameter.

    One backward pass per task. A parameter the task's loss does not reach
    in the autograd graph gets ``None`` (not zeros), which is what
    :func:`shared_parameters` reads. With a ``scaler`` (float16) each
    backward pass is of the scaled loss, so that small gradients survive
    float16, and the gradients are returned unscaled (inf or NaN where they
    overflowed), ready for norms and projections.

    Parameters
    ----------
    task_losses : Tensor of shape (n_tasks,)
        Per-task losses attached to the graph.
    params : sequence of Parameter
        The parameters to differentiate by.
    scaler : torch.amp.GradScaler, default=None
        The step's loss scaler.

    Returns
    -------
    grads : list of tuple of (Tensor or None)
        ``grads[k][j]`` is ``d task_losses[k] / d params[j]``.
    """
    n_tasks = len(task_losses)
    losses = task_losses if scaler is None else scaler.scale(task_losses)
    grads: list[tuple[Tensor | None, ...]] = [
        torch.autograd.grad(
            losses[k],
            list(params),
            retain_graph=k < n_tasks - 1,
            allow_unused=True,
        )
        for k in range(n_tasks)
    ]
    if scaler is None:
        return grads
    inverse = 1.0 / scaler.get_scale()  # a power of 2: unscaling is exact
    return [tuple(None if g is None else g * inverse for g in gs) for gs in grads]


def all_finite(grads: Sequence[Sequence[Tensor | None]]) -> bool:
    """Whether every gradient of :func:`task_gradients` is finite.

    Under float16 an overflowed step (skipped by the loss scaler) must not
    update a method's state, such as its learned weights or the shared
    parameters it reads from the first step.
    """
    return all(
        bool(torch.isfinite(g).all()) for gs in grads for g in gs if g is not None
    )


def shared_parameters(grads: Sequence[Sequence[Tensor | None]]) -> list[bool]:
    """Which parameters are shared: reached by more than one task's loss.

    A parameter is shared when the losses of two or more tasks reach it in
    the autograd graph (their gradients are not ``None``, see
    :func:`task_gradients`) and at least two of those gradients are nonzero
    at a common entry. The second condition recognises a tensor that stacks
    one block per task, as the batched towers (and PLE's last task-specific
    experts) do: each task's gradient fills its own block only, so the
    tensor is a set of task-specific parameters. The rule reads the graph
    and the gradients of one step, so it holds for every backbone without a
    list per architecture: the embeddings and the shared bottom or experts
    are shared, a task's tower and gate are not; ESMM's and AITM's later
    tasks reach the earlier towers, which are then shared.

    Parameters
    ----------
    grads : sequence of sequence of (Tensor or None)
        Per-task gradients, as returned by :func:`task_gradients`.

    Returns
    -------
    shared : list of bool
        One entry per parameter.

    Examples
    --------
    >>> import torch
    >>> from sklearn_rmtl.balancing import shared_parameters
    >>> both, blocks = torch.tensor([1.0, 2.0]), torch.tensor([[1.0], [0.0]])
    >>> shared_parameters([(both, blocks, None), (both, blocks.flip(0), both)])
    [True, False, False]
    """
    n_params = len(grads[0]) if grads else 0
    shared = []
    for j in range(n_params):
        reached = [g[j] for g in grads if g[j] is not None]
        if len(reached) < 2:
            shared.append(False)
            continue
        touched = torch.stack([r != 0 for r in reached if r is not None]).sum(0)
        shared.append(bool((touched > 1).any()))
    return shared


def flatten(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    """One vector of ``grads`` (zeros where a gradient is None)."""
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def unflatten(vector: Tensor, params: Sequence[nn.Parameter]) -> list[Tensor]:
    """Split a vector made by :func:`flatten` back into ``params``' shapes."""
    parts = vector.split([p.numel() for p in params])
    return [part.view_as(p) for part, p in zip(parts, params, strict=True)]


def check_positive(owner: str, name: str, value: object, *, allow_zero: bool) -> None:
    """Raise a ``ValueError`` naming ``task_balancing_params[name]`` if invalid.

    The value must be finite: an infinite rate or temperature would only
    surface later as a diverged loss blamed on ``lr``.
    """
    ok = isinstance(value, Real) and not isinstance(value, bool)
    if ok:
        positive = value >= 0 if allow_zero else value > 0  # type: ignore[operator]
        ok = positive and math.isfinite(value)  # type: ignore[arg-type]
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"task_balancing_params[{name!r}] of {owner!r} must be a finite "
            f"number {bound}, got {value!r}."
        )
