"""The skorch net that trains a multi-task network (held, never exposed raw)."""

from __future__ import annotations

from typing import Any

from skorch import NeuralNet
from torch import Tensor


class MultiTaskNet(NeuralNet):
    """``NeuralNet`` whose loss reads optional per-row weights from the input.

    Row weights travel in the input dict under ``"sample_weight"`` (so skorch
    batches them together with the features), and :meth:`get_loss`, skorch's
    documented seam, hands them to the criterion. The module ignores them.
    """

    def get_loss(
        self, y_pred: Tensor, y_true: Tensor, X: Any = None, training: bool = False
    ) -> Tensor:
        weight = X.get("sample_weight") if isinstance(X, dict) else None
        if weight is not None:
            weight = weight.to(y_pred.device)
        return self.criterion_(y_pred, y_true.to(y_pred.device), weight)
