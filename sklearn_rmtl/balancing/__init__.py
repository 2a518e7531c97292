"""Task-balancing methods, registered by name.

A method decides how a training step combines the per-task losses into the
network's gradients: fixed weights (the default), learned uncertainty
weights, GradNorm, Dynamic Weight Average or PCGrad. The estimators accept
its name as ``task_balancing`` and its hyper-parameters as
``task_balancing_params``. Adding a method is one module defining a
:class:`TaskBalancer` subclass and one line in :data:`BALANCINGS`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sklearn_rmtl.balancing._base import TaskBalancer, shared_parameters
from sklearn_rmtl.balancing.dwa import DynamicWeightAverage
from sklearn_rmtl.balancing.fixed import FixedWeights
from sklearn_rmtl.balancing.gradnorm import GradNorm
from sklearn_rmtl.balancing.pcgrad import PCGrad, project_conflicting
from sklearn_rmtl.balancing.uncertainty import UncertaintyWeighting

#: Balancing classes by the name the estimators accept as ``task_balancing``.
BALANCINGS: dict[str, type[TaskBalancer]] = {
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeighting,
    "gradnorm": GradNorm,
    "dwa": DynamicWeightAverage,
    "pcgrad": PCGrad,
}

# Keywords every balancer takes from the training loop, not from the user.
_TRAINING_KEYS = ("task_weights", "lr", "generator")


def balancing_keys(name: str) -> list[str]:
    """Hyper-parameters that balancing method ``name`` accepts."""
    params = inspect.signature(BALANCINGS[name]).parameters
    return [p for p in params if p not in _TRAINING_KEYS]


def resolve_balancing_params(
    name: str, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Check ``params`` against the hyper-parameters of method ``name``.

    Unknown keys raise a ``ValueError`` listing the valid ones, so that a typo
    never silently falls back to a default; values are checked by building
    the method once.

    Parameters
    ----------
    name : str
        A key of :data:`BALANCINGS`.
    params : mapping or None
        User settings (the estimators' ``task_balancing_params``).

    Returns
    -------
    params : dict
        The given settings (the method's defaults fill the others).

    Examples
    --------
    >>> from sklearn_rmtl.balancing import resolve_balancing_params
    >>> resolve_balancing_params("gradnorm", {"alpha": 0.5})
    {'alpha': 0.5}
    """
    valid = balancing_keys(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"task_balancing_params has keys {unknown} that task_balancing="
            f"{name!r} does not use; valid keys are {valid}."
        )
    BALANCINGS[name](task_weights=[1.0], lr=1.0, **params)  # checks the values
    return params


def make_balancer(
    name: str,
    params: Mapping[str, Any] | None,
    *,
    task_weights: Sequence[float],
    lr: float,
    generator: torch.Generator | None = None,
) -> TaskBalancer:
    """Build balancing method ``name`` for one training run.

    Parameters
    ----------
    name : str
        A key of :data:`BALANCINGS`.
    params : mapping or None
        Its hyper-parameters (``task_balancing_params``).
    task_weights : sequence of float
        The estimator's per-task weights.
    lr : float
        The network's learning rate.
    generator : torch.Generator, default=None
        The fit's seeded generator.

    Returns
    -------
    balancer : TaskBalancer
        A fresh balancer (its learned weights start over).
    """
    params = resolve_balancing_params(name, params)
    return BALANCINGS[name](
        task_weights=task_weights, lr=lr, generator=generator, **params
    )


__all__ = [
    "BALANCINGS",
    "DynamicWeightAverage",
    "FixedWeights",
    "GradNorm",
    "PCGrad",
    "TaskBalancer",
    "UncertaintyWeighting",
    "make_balancer",
    "project_conflicting",
    "resolve_balancing_params",
    "shared_parameters",
]
