"""STEM: shared and task-specific embeddings (STEM-Net)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, check_count, check_flag, fill_doc
from sklearn_rmtl.backbones._layers import (
    GroupedLinear,
    GroupedMLP,
    ReLUDropout,
    optional_batch_norm,
)


@fill_doc()
class STEM(Backbone):
    """Shared and task-specific embeddings, all forward, task-specific backward.

    Every feature has ``n_tasks + 1`` embeddings: a shared one and one per
    task, each in its own tables
    (:class:`~sklearn_rmtl._torch_module.MultiTaskModule` builds them and
    passes this network one state per table). Task ``k``'s experts read
    task ``k``'s state, the shared experts the shared state. Task ``k``'s
    gate reads the sum of its state and the shared one (as the authors'
    code does) and mixes every expert: its own and the shared ones with
    their gradients, the other tasks' experts with their gradients stopped
    (the paper's "All Forward Task-specific Backward"). So task ``k``'s loss
    trains task ``k``'s tables, experts, gate and tower plus the shared
    tables and experts, never another task's tables or experts; each task's
    tables learn for that task alone, the shared ones for all. Each task's
    tower reads its mixture.

    Parameters
    ----------
    {in_features} {n_tasks}
    n_shared_experts : int, default=4
        Shared experts (reading the shared embeddings).
    n_specific_experts : int, default=4
        Task-specific experts per task (reading that task's embeddings).
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each expert MLP.
    {tower_dims} {dropout} {batch_norm} {gate_batch_norm}

    Notes
    -----
    Memory grows with the number of tasks K: the embedding tables (and the
    numerical projection, and the sequence columns' attention) are held
    ``K + 1`` times, where the other backbones hold them once; and there are
    ``K * n_specific_experts + n_shared_experts`` experts. With large id
    vocabularies the tables dominate, so a STEM network is about ``K + 1``
    times the size of an MMoE network of the same ``embedding_dim``
    (``benchmarks/bench_params.py`` prints both for K = 2, 3, 5). Lower
    ``embedding_dim`` to hold the memory of a single-table network.

    RMTL's critics (:class:`~sklearn_rmtl.SessionCritic`) copy the shared
    tables of a STEM actor (``MultiTaskModule.embedding``), not the
    task-specific ones.

    NOTE[DIFF]: each gate is one linear layer and a softmax (as MMoE's and
    PLE's here); the authors' code uses an MLP. NOTE[DIFF]: one STEM layer
    (the authors' default); their code can stack several.

    Shape: ``(batch, n_tasks + 1, in_features) -> (batch, n_tasks)`` logits,
    where ``x[:, 0]`` is the shared state and ``x[:, 1 + k]`` task ``k``'s;
    a ``(batch, in_features)`` input is every state at once (the tables
    tied).

    References
    ----------
    L. Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task
    Recommendation", AAAI 2024.
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
        self.n_shared_experts, self.n_specific_experts = n_shared, n_specific
        first, *rest = self.bottom_dims
        # Task k's experts' first layers are one group of n_specific * first
        # outputs reading task k's state; their further layers run as
        # n_tasks * n_specific groups.
        self.specific = GroupedLinear(n_tasks, in_features, n_specific * first)
        self.specific_norm = optional_batch_norm(
            self.batch_norm, n_tasks, n_specific * first
        )
        self.act = ReLUDropout(self.dropout)
        self.specific_rest = GroupedMLP(
            n_tasks * n_specific, first, rest, self.dropout, batch_norm=self.batch_norm
        )
        self.shared = self._mlps(n_shared, in_features)
        n_all = n_tasks * n_specific + n_shared
        self.gates = GroupedLinear(n_tasks, in_features, n_all)
        self.gate_norm = optional_batch_norm(gate_batch_norm, n_tasks, n_all)
        self.towers = self._towers(self.shared.out_features)

    @classmethod
    def n_embeddings(cls, n_tasks: int) -> int:
        """One shared state and one per task."""
        return n_tasks + 1

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.n_tasks, self.n_specific_experts
        if x.dim() == 2:
            x = x.unsqueeze(1).expand(-1, k + 1, -1)
        x_shared, x_tasks = x[:, 0], x[:, 1:]
        spec = self.act(self.specific_norm(self.specific(x_tasks)))
        spec = self.specific_rest(spec.reshape(x.shape[0], k * s, -1))
        spec = spec.unflatten(1, (k, s))  # (batch, task, expert, dim)
        shared = self.shared(x_shared)  # (batch, n_shared, dim)
        gates = self.gate_norm(self.gates(x_tasks + x_shared.unsqueeze(1)))
        weights = torch.softmax(gates, dim=-1)  # (batch, k, k * s + n_shared)
        w_spec = weights[..., : k * s].unflatten(-1, (k, s))  # (batch, k, j, s)
        eye = torch.eye(k, dtype=w_spec.dtype, device=w_spec.device)
        w_own = w_spec * eye.unsqueeze(-1)
        # All forward: every expert enters every task's mixture; task-specific
        # backward: another task's experts with their gradient stopped.
        mixed = (
            torch.einsum("bks,bksh->bkh", w_own.sum(2), spec)
            + torch.einsum("bkjs,bjsh->bkh", w_spec - w_own, spec.detach())
            + torch.einsum("bkm,bmh->bkh", weights[..., k * s :], shared)
        )
        return self.towers(mixed)
