"""MMoE: multi-gate mixture-of-experts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, check_count, check_flag, fill_doc
from sklearn_rmtl.backbones._layers import GroupedLinear, optional_batch_norm


@fill_doc()
class MMoE(Backbone):
    """Shared experts mixed by one softmax gate per task.

    Parameters
    ----------
    {in_features} {n_tasks}
    n_experts : int, default=8
        Number of shared experts.
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each expert MLP.
    {tower_dims} {dropout} {batch_norm} {gate_batch_norm}

    Notes
    -----
    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.

    References
    ----------
    J. Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018.
    """

    #: One gate shared by all tasks (OMoE) instead of one per task.
    one_gate: bool = False

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        n_experts: int = D["n_experts"],
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
        batch_norm: bool = D["batch_norm"],
        gate_batch_norm: bool = D["gate_batch_norm"],
    ) -> None:
        super().__init__(in_features=in_features, n_tasks=n_tasks)
        n_experts = check_count("n_experts", n_experts)
        self._check_sizes(bottom_dims, tower_dims, dropout, batch_norm)
        gate_batch_norm = check_flag("gate_batch_norm", gate_batch_norm)
        n_gates = 1 if self.one_gate else n_tasks
        self.experts = self._mlps(n_experts, in_features)
        self.gates = GroupedLinear(n_gates, in_features, n_experts)
        # A separate module, so that state dicts without it keep their keys.
        self.gate_norm = optional_batch_norm(gate_batch_norm, n_gates, n_experts)
        self.towers = self._towers(self.experts.out_features)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.gate_norm(self.gates(x)), dim=-1)
        mixed = torch.bmm(weights, self.experts(x))  # (batch, n_gates, dim)
        # One gate: every tower reads the same (batch, dim) mixture.
        return self.towers(mixed.squeeze(1) if self.one_gate else mixed)
