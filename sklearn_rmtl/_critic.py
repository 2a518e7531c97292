"""Per-task critics Q_k(s, a_k) (ALGORITHM.md Sec. 4, paper Sec. 2.5.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._network import FeatureEmbedding
from sklearn_rmtl.backbones._layers import GroupedLinear, GroupedMLP


class Critic(nn.Module):
    """One Q-function per task over the state and that task's action.

    ``Q_k(s, a_k) = -ReLU(head_k(MLP([embed(s), action_layer_k(a_k)])))``, so
    ``Q <= 0`` like the rewards. The action layer maps the scalar action to
    ``embedding_dim`` (the paper's "1 x 128 action layer").

    Parameters
    ----------
    cardinalities : sequence of int
        Embedding table sizes of the categorical columns.
    n_numerical : int
        Number of numerical inputs.
    n_tasks : int
        Number of tasks K (one critic each).
    embedding_dim : int
        Size of each embedding and of the action embedding.
    hidden_dims : sequence of int
        Hidden sizes of the critic MLP.
    shared : bool
        True: one embedding and MLP shared by the tasks, one head per task
        (the paper). False: K fully independent critics, each with its own
        embedding tables (the authors' code).

    Shape
    -----
    ``x_cat (batch, n_cat), x_num (batch, n_num), actions (batch, n_tasks)
    -> (batch, n_tasks)`` Q-values.
    """

    def __init__(
        self,
        *,
        cardinalities: Sequence[int],
        n_numerical: int,
        n_tasks: int,
        embedding_dim: int,
        hidden_dims: Sequence[int],
        shared: bool,
    ) -> None:
        super().__init__()
        self.n_tasks = n_tasks
        self.shared = shared
        n_embeddings = 1 if shared else n_tasks
        embeddings = [
            FeatureEmbedding(
                cardinalities=cardinalities,
                n_numerical=n_numerical,
                embedding_dim=embedding_dim,
            )
            for _ in range(n_embeddings)
        ]
        self.embeddings = nn.ModuleList(embeddings)
        in_features = embeddings[0].out_features + embedding_dim
        self.action_layer = GroupedLinear(n_tasks, 1, embedding_dim)
        self.mlp = GroupedMLP(n_embeddings, in_features, hidden_dims, dropout=0.0)
        self.head = GroupedLinear(n_tasks, self.mlp.out_features, 1)

    def init_embeddings_from(self, embedding: FeatureEmbedding) -> None:
        """Start every critic's embedding tables as copies of the actor's."""
        for own in self.embeddings:
            own.load_state_dict(embedding.state_dict())

    def init_output(self, q_start: Tensor) -> None:
        """Start every critic's output near ``q_start`` (shape (n_tasks,), <= 0).

        With the ``-ReLU`` output, a head whose pre-activation starts negative
        has zero gradient and stays at ``Q = 0`` for good; starting the bias at
        the expected return keeps the critics in their active region.
        """
        with torch.no_grad():
            self.head.bias.copy_(-q_start.reshape(-1, 1).clamp(max=0.0))

    def forward(self, x_cat: Tensor, x_num: Tensor, actions: Tensor) -> Tensor:
        batch = actions.shape[0]
        act = self.action_layer(actions.unsqueeze(-1))  # (batch, K, d)
        states = torch.stack([e(x_cat, x_num) for e in self.embeddings], dim=1)
        if self.shared:
            # One MLP applied to K (state, action_k) pairs: fold tasks into batch.
            pairs = torch.cat([states.expand(-1, self.n_tasks, -1), act], dim=-1)
            hidden = self.mlp(pairs.reshape(batch * self.n_tasks, 1, -1))
            hidden = hidden.view(batch, self.n_tasks, -1)
        else:
            hidden = self.mlp(torch.cat([states, act], dim=-1))
        return -torch.relu(self.head(hidden).squeeze(-1))


@dataclass
class SessionCritic:
    """Fitted critics with the feature encoding they read (``critic_``).

    Reusable across estimators and backbones (paper Sec. 3.4): pass it as
    ``RMTLClassifier(critic=other.critic_)``. It keeps its own encoder, so the
    receiving estimator may encode features differently.

    Parameters
    ----------
    encoder : FeatureEncoder
        The encoder whose codes the critic's embeddings read.
    module : Critic
        The trained critic network (on CPU, in eval mode).
    task_names : ndarray of str
        Tasks the critics were trained for, in order.
    history : list of dict
        Mean TD loss per critic epoch.
    """

    encoder: FeatureEncoder
    module: Critic
    task_names: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_tasks(self) -> int:
        """Number of tasks the critics evaluate."""
        return len(self.task_names)
