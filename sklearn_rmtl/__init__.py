"""Reinforcement-learning-enhanced multi-task learning (RMTL) for scikit-learn."""

from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._rmtl import RMTLClassifier
from sklearn_rmtl.backbones import BACKBONES

__version__ = "0.1.0.dev0"

__all__ = [
    "BACKBONES",
    "FeatureEncoder",
    "MTLClassifier",
    "RMTLClassifier",
    "SessionCritic",
    "__version__",
    "exceptions",
    "metrics",
    "model_selection",
    "persistence",
    "plotting",
]
