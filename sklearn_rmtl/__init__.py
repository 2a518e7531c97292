"""Reinforcement-learning-enhanced multi-task learning (RMTL) for scikit-learn."""

import importlib
from typing import TYPE_CHECKING, Any

from sklearn_rmtl._version import __version__

if TYPE_CHECKING:  # imported on first access below, so that ``import
    # sklearn_rmtl`` and ``rmtl --version`` do not load torch
    from sklearn_rmtl._critic import SessionCritic
    from sklearn_rmtl._encoding import FeatureEncoder
    from sklearn_rmtl._mtl import MTLClassifier
    from sklearn_rmtl._rmtl import RMTLClassifier
    from sklearn_rmtl._task_view import TaskView
    from sklearn_rmtl.backbones import BACKBONES
    from sklearn_rmtl.parquet import ParquetSource

# The public classes by the module that defines each, imported on first
# access (as scikit-learn does for its submodules).
_CLASSES = {
    "BACKBONES": "backbones",
    "FeatureEncoder": "_encoding",
    "MTLClassifier": "_mtl",
    "ParquetSource": "parquet",
    "RMTLClassifier": "_rmtl",
    "SessionCritic": "_critic",
    "TaskView": "_task_view",
}

# Public submodules, imported on first access, so that ``import
# sklearn_rmtl`` does not load matplotlib or the dataset loaders.
_SUBMODULES = (
    "backbones",
    "balancing",
    "datasets",
    "exceptions",
    "metrics",
    "model_selection",
    "parquet",
    "persistence",
    "plotting",
)

__all__ = [
    "BACKBONES",
    "FeatureEncoder",
    "MTLClassifier",
    "ParquetSource",
    "RMTLClassifier",
    "SessionCritic",
    "TaskView",
    "__version__",
    *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        module = importlib.import_module(f"sklearn_rmtl.{_CLASSES[name]}")
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"sklearn_rmtl.{name}")
    raise AttributeError(f"module 'sklearn_rmtl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
