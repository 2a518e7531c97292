"""PLE: progressive layered extraction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, check_count, check_flag, fill_doc
from sklearn_rmtl.backbones._layers import (
    GroupedLinear,
    ReLUDropout,
    optional_batch_norm,
)


class _ExtractionLayer(nn.Module):
    """One PLE level: task-specific and shared experts with their gates.

    Shape: ``(x_tasks, x_shared) -> (y_tasks, y_shared)`` where ``x_tasks`` is
    ``(batch, in_features)`` (first level) or ``(batch, n_tasks,
    in_features)``, ``x_shared`` is ``(batch, in_features)``, ``y_tasks`` is
    ``(batch, n_tasks, out_features)`` and ``y_shared`` is ``(batch,
    out_features)`` or ``None`` on the last level.
    """

    def __init__(
        self,
        *,
        n_tasks: int,
        in_features: int,
        out_features: int,
        n_specific: int,
        n_shared: int,
        dropout: float,
        last: bool,
        batch_norm: bool,
        gate_batch_norm: bool,
    ) -> None:
        super().__init__()
        self.n_tasks, self.n_specific, self.n_shared = n_tasks, n_specific, n_shared
        self.out_features = out_features
        # Task k's experts are one group of n_specific * out outputs reading
        # task k's input; every expert runs once per input.
        self.specific = GroupedLinear(n_tasks, in_features, n_specific * out_features)
        self.shared = GroupedLinear(1, in_features, n_shared * out_features)
        # Normalisation per expert and feature: group k's n_specific * out
        # outputs are n_specific experts' features.
        self.specific_norm = optional_batch_norm(
            batch_norm, n_tasks, n_specific * out_features
        )
        self.shared_norm = optional_batch_norm(batch_norm, 1, n_shared * out_features)
        self.act = ReLUDropout(dropout)
        self.task_gates = GroupedLinear(n_tasks, in_features, n_specific + n_shared)
        self.task_gate_norm = optional_batch_norm(
            gate_batch_norm, n_tasks, n_specific + n_shared
        )
        n_all = n_tasks * n_specific + n_shared
        self.shared_gate = None if last else GroupedLinear(1, in_features, n_all)
        self.shared_gate_norm = optional_batch_norm(
            gate_batch_norm and not last, 1, n_all
        )

    def forward(
        self, x_tasks: Tensor, x_shared: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        b, k, s, h = x_shared.shape[0], self.n_tasks, self.n_specific, self.out_features
        spec = self.specific_norm(self.specific(x_tasks))
        spec = self.act(spec).view(b, k, s, h)
        shared = self.shared_norm(self.shared(x_shared))
        shared = self.act(shared).view(b, self.n_shared, h)
        g = torch.softmax(self.task_gate_norm(self.task_gates(x_tasks)), -1)
        y_tasks = torch.einsum("bks,bksh->bkh", g[..., :s], spec) + torch.einsum(
            "bkj,bjh->bkh", g[..., s:], shared
        )
        if self.shared_gate is None:
            return y_tasks, None
        g_sh = self.shared_gate_norm(self.shared_gate(x_shared))
        g_sh = torch.softmax(g_sh.squeeze(1), dim=-1)
        y_shared = torch.einsum(
            "bks,bksh->bh", g_sh[:, : k * s].view(b, k, s), spec
        ) + torch.einsum("bj,bjh->bh", g_sh[:, k * s :], shared)
        return y_tasks, y_shared


@fill_doc()
class PLE(Backbone):
    """Progressive layered extraction: stacked task-specific and shared experts.

    One extraction layer per entry of ``bottom_dims``; in each, task ``k``'s
    gate mixes its own experts with the shared ones, and a shared gate mixes
    all experts as the input of the next layer's shared experts.

    Parameters
    ----------
    {in_features} {n_tasks}
    n_shared_experts : int, default=4
        Shared experts per extraction layer.
    n_specific_experts : int, default=4
        Task-specific experts per task and extraction layer.
    bottom_dims : sequence of int, default=(512, 256)
        Output size of the experts of each extraction layer (its length is
        the number of layers).
    {tower_dims} {dropout} {batch_norm} {gate_batch_norm}

    Notes
    -----
    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.

    References
    ----------
    H. Tang et al., "Progressive Layered Extraction (PLE)", RecSys 2020.
    """

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        n_shared_experts: int = D["n_shared_experts"],
        n_specific_experts: int = D["n_specific_experts"],
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
        batch_norm: bool = D["batch_norm"],
        gate_batch_norm: bool = D["gate_batch_norm"],
    ) -> None:
        super().__init__(in_features=in_features, n_tasks=n_tasks)
        n_shared = check_count("n_shared_experts", n_shared_experts)
        n_specific = check_count("n_specific_experts", n_specific_experts)
        self._check_sizes(bottom_dims, tower_dims, dropout, batch_norm)
        gate_batch_norm = check_flag("gate_batch_norm", gate_batch_norm)
        dims = (in_features, *self.bottom_dims)
        self.levels = nn.ModuleList(
            _ExtractionLayer(
                n_tasks=n_tasks,
                in_features=dims[i],
                out_features=dims[i + 1],
                n_specific=n_specific,
                n_shared=n_shared,
                dropout=self.dropout,
                last=i == len(dims) - 2,
                batch_norm=self.batch_norm,
                gate_batch_norm=gate_batch_norm,
            )
            for i in range(len(dims) - 1)
        )
        self.towers = self._towers(dims[-1])

    def forward(self, x: Tensor) -> Tensor:
        x_tasks, x_shared = x, x
        for level in self.levels:
            x_tasks, shared = level(x_tasks, x_shared)
            if shared is not None:
                x_shared = shared
        return self.towers(x_tasks)
