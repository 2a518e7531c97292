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

import torch
from torch import nn

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
