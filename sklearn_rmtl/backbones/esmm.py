"""ESMM: entire-space multi-task model (CTCVR = CTR x CVR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, check_dims, check_dropout
from sklearn_rmtl.backbones._layers import GroupedMLP, Towers


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends."""
    return torch.where(
        x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x))
    )


class ESMM(Backbone):
    """Entire-space multi-task model, generalised to a K-step funnel.

    Task ``k``'s probability is the product of the sigmoids of towers
    ``1..k`` (with K = 2: pCTCVR = pCTR x pCVR), so every task is learned over
    the full sample space. Each task has its own bottom MLP and tower.

    Parameters
    ----------
    in_features : int
        Size of the state vector.
    n_tasks : int
        Number of funnel steps K >= 2, in funnel order (e.g. click, purchase).
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each task's bottom MLP.
    tower_dims : sequence of int, default=(128, 64)
        Hidden sizes of each task's tower.
    dropout : float, default=0.2
        Dropout after every hidden activation.

    Notes
    -----
    The products are formed in log space and returned as logits, so the
    loss stays a numerically stable BCE-with-logits.

    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits of the
    cumulative probabilities.

    References
    ----------
    X. Ma et al., "Entire Space Multi-Task Model", SIGIR 2018.
    """

    min_tasks = 2

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
    ) -> None:
        super().__init__(in_features=in_features, n_tasks=n_tasks)
        bottom_dims = check_dims("bottom_dims", bottom_dims, allow_empty=True)
        tower_dims = check_dims("tower_dims", tower_dims, allow_empty=True)
        dropout = check_dropout(dropout)
        self.bottoms = GroupedMLP(n_tasks, in_features, bottom_dims, dropout)
        self.towers = Towers(n_tasks, self.bottoms.out_features, tower_dims, dropout)

    def forward(self, x: Tensor) -> Tensor:
        # log p_k = sum_{i<=k} log sigmoid(z_i); logit = log p - log(1 - p).
        # The clamp keeps p < 1 so the logit stays finite.
        log_p = torch.cumsum(F.logsigmoid(self.towers(self.bottoms(x))), dim=1)
        log_p = log_p.clamp(max=-1e-7)
        return log_p - _log1mexp(log_p)
