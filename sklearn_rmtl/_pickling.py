"""Pickles of fitted estimators: a version stamp, and networks as plain arrays.

Fitted networks pickle as their configuration and NumPy weights (see
``MultiTaskNet.__getstate__`` and ``SessionCritic.__getstate__``), so a
pickle of a fitted estimator holds plain values, arrays and this library's
classes only, and skops can store it with nothing else trusted.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import torch
from skorch.exceptions import DeviceWarning
from torch import nn

from sklearn_rmtl._version import __version__
from sklearn_rmtl.exceptions import InconsistentVersionWarning

_VERSION_KEY = "_sklearn_rmtl_version"
# Fitted attributes renamed since pickles were first written: old name -> new.
_RENAMED = {"backbone_": "net_"}


class VersionedPickleMixin:
    """Stamp fitted estimators' pickles with ``sklearn_rmtl.__version__``.

    Unpickling a stamp of another version warns with
    :class:`~sklearn_rmtl.exceptions.InconsistentVersionWarning`, as
    scikit-learn does for its own estimators, and gives renamed fitted
    attributes their current names (``backbone_`` is ``net_``). Goes before
    ``BaseEstimator`` in the bases, whose ``__getstate__`` / ``__setstate__``
    it extends.
    """

    def __getstate__(self) -> dict[str, Any]:
        # A copy: object.__getstate__ returns the instance's own __dict__.
        state = dict(cast(dict[str, Any], super().__getstate__()))
        if getattr(self, "__sklearn_is_fitted__", lambda: False)():
            state[_VERSION_KEY] = __version__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.pop(_VERSION_KEY, __version__)
        if saved != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    f"This {type(self).__name__} was saved with sklearn_rmtl "
                    f"{saved} and is loaded with {__version__}; predictions may "
                    "differ or fail. Refit it with the installed version if you "
                    "can.",
                    original_version=str(saved),
                    current_version=__version__,
                ),
                stacklevel=2,
            )
        for old, new in _RENAMED.items():
            if old in state and new not in state:
                state[new] = state.pop(old)
        super().__setstate__(state)  # type: ignore[misc]


def module_weights(module: nn.Module) -> dict[str, np.ndarray]:
    """``module``'s state dict as NumPy arrays on the CPU.

    What the pickled state of a network holds instead of the module: arrays
    are plain data to pickle and to skops, tensors are not (skops cannot
    rebuild them, and torch's own pickling runs code on load).
    """
    return {k: t.detach().cpu().numpy() for k, t in module.state_dict().items()}


def load_module_weights(module: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Copy ``weights`` (from :func:`module_weights`) into ``module``, exactly."""
    module.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=True
    )


def available_device(device: str) -> str:
    """``device``, or the CPU with a warning where it is CUDA and there is none.

    A model pickled on a GPU loads on a CPU-only machine, as skorch's own
    pickles do (with the same warning category).
    """
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"This network was saved on {device!r}, but CUDA is not available: "
            "it is loaded on the CPU.",
            DeviceWarning,
            stacklevel=3,
        )
        return "cpu"
    return device
