"""AITM: adaptive information transfer between consecutive tasks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sklearn_rmtl.backbones._base import SimpleBackbone, fill_doc


@fill_doc()
class AITM(SimpleBackbone):
    """Per-task bottoms with attention-based transfer from task k-1 to task k.

    Task ``k``'s representation attends over its own bottom output and a
    transferred copy of task ``k-1``'s (updated) representation, so the
    information of earlier funnel steps (click) flows into later ones
    (purchase).

    Parameters
    ----------
    {in_features}
    n_tasks : int
        Number of funnel steps K >= 2, in funnel order.
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each task's bottom MLP.
    {tower_dims} {dropout} {batch_norm}

    Notes
    -----
    NOTE[DIFF]: AITM's behavioural expectation calibrator (a penalty when
    task k's prediction exceeds task k-1's) is not part of the network; the
    estimators train every backbone with the same per-task BCE.

    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.

    References
    ----------
    D. Xi et al., "Modeling the Sequential Dependence among Audience
    Multi-step Conversions with Multi-task Learning in Targeted Display
    Advertising", KDD 2021.
    """

    min_tasks = 2

    def _build(self) -> None:
        d = self.bottom_dims[-1]
        self.bottoms = self._mlps(self.n_tasks, self.in_features)
        self.transfer = nn.ModuleList(nn.Linear(d, d) for _ in range(self.n_tasks - 1))
        # Value, key and query maps of the attention unit, shared by tasks.
        self.attention = nn.Linear(d, 3 * d)
        self.towers = self._towers(d)
        self._scale = 1.0 / math.sqrt(d)

    def forward(self, x: Tensor) -> Tensor:
        fea = self.bottoms(x)  # (batch, n_tasks, d)
        out = [fea[:, 0]]
        for k in range(1, self.n_tasks):
            transferred = self.transfer[k - 1](out[-1])
            pair = torch.stack([transferred, fea[:, k]], dim=1)  # (batch, 2, d)
            v, key, q = self.attention(pair).chunk(3, dim=-1)
            w = torch.softmax((q * key).sum(-1) * self._scale, dim=1)
            out.append((w.unsqueeze(-1) * v).sum(1))
        return self.towers(torch.stack(out, dim=1))
