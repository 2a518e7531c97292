"""ESMM: entire-space multi-task model (CTCVR = CTR x CVR)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sklearn_rmtl.backbones._base import fill_doc
from sklearn_rmtl.backbones.singletask import SingleTask


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends."""
    return torch.where(
        x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x))
    )


@fill_doc()
class ESMM(SingleTask):
    """Entire-space multi-task model, generalised to a K-step funnel.

    Task ``k``'s probability is the product of the sigmoids of towers
    ``1..k`` (with K = 2: pCTCVR = pCTR x pCVR), so every task is learned over
    the full sample space. Each task has its own bottom MLP and tower, as in
    :class:`SingleTask`, whose parameters it takes.

    Parameters
    ----------
    {in_features}
    n_tasks : int
        Number of funnel steps K >= 2, in funnel order (e.g. click, purchase).
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each task's bottom MLP.
    {tower_dims} {dropout} {batch_norm}

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

    def forward(self, x: Tensor) -> Tensor:
        # log p_k = sum_{i<=k} log sigmoid(z_i); logit = log p - log(1 - p).
        # The clamp keeps p < 1 so the logit stays finite.
        log_p = torch.cumsum(F.logsigmoid(super().forward(x)), dim=1)
        log_p = log_p.clamp(max=-1e-7)
        return log_p - _log1mexp(log_p)
