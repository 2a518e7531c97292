"""Randomness owned by each fit, never torch's global generator.

Every random draw of a fit (weight initialisation, batch order, dropout)
comes from a ``torch.Generator`` seeded from ``random_state``, so fits with
the same seed give identical results on CPU even when several run at once in
threads (joblib's threading backend), where a seeded global generator would
be shared and interleaved.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sklearn_rmtl._torch_module import FeatureEmbedding
from sklearn_rmtl.backbones._layers import GroupedLinear, ReLUDropout


def _reset_linear(linear: nn.Linear, generator: torch.Generator) -> None:
    # torch's default initialisation of nn.Linear, drawn from ``generator``.
    nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
    if linear.bias is not None:
        bound = 1.0 / math.sqrt(linear.in_features)
        nn.init.uniform_(linear.bias, -bound, bound, generator=generator)


@torch.no_grad()
def init_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``module`` from ``generator``.

    Uses the same distributions as the modules' own initialisation. Batch
    normalisation layers draw nothing: they are reset to unit scale, zero
    shift and fresh running statistics.
    """
    for m in module.modules():
        if isinstance(m, FeatureEmbedding | GroupedLinear):
            m.reset_parameters(generator)
        elif isinstance(m, nn.Linear):
            _reset_linear(m, generator)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def set_dropout_generator(module: nn.Module, generator: torch.Generator | None) -> None:
    """Make every dropout layer of ``module`` draw its masks from ``generator``."""
    for m in module.modules():
        if isinstance(m, ReLUDropout):
            m.generator = generator


@contextlib.contextmanager
def isolated_global_rng(device: str) -> Iterator[None]:
    """Undo, on exit, the global RNG draws of module constructors.

    Constructors initialise weights from torch's global generator before
    :func:`init_parameters` redraws them; forking keeps the caller's global
    random state as it was.
    """
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        yield


class _NoRandomFill(TorchFunctionMode):
    # In-place random fills of the weights module constructors initialise.
    _FILLS = frozenset(
        {
            torch.Tensor.uniform_,
            torch.Tensor.normal_,
            torch.Tensor.bernoulli_,
            torch.Tensor.random_,
            torch.Tensor.exponential_,
            torch.Tensor.geometric_,
            torch.Tensor.log_normal_,
            torch.Tensor.cauchy_,
            # torch.nn.init dispatches itself before filling the tensor.
            nn.init.uniform_,
            nn.init.normal_,
            nn.init.trunc_normal_,
            nn.init.kaiming_uniform_,
            nn.init.kaiming_normal_,
            nn.init.xavier_uniform_,
            nn.init.xavier_normal_,
            nn.init.orthogonal_,
            nn.init.sparse_,
        }
    )

    def __torch_function__(
        self, func: Any, types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in self._FILLS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextlib.contextmanager
def skipped_random_init() -> Iterator[None]:
    """Build modules without drawing their initial weights.

    For modules whose every weight is loaded next (``load_state_dict`` with
    ``strict=True``): drawing tens of megabytes of random numbers only to
    overwrite them would dominate unpickling a fitted network.
    """
    with _NoRandomFill():
        yield
