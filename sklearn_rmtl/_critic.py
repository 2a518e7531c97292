"""Per-task critics Q_k(s, a_k): the network, its set-up and the fitted container.

Paper Sec. 2.5.2; docs/user_guide.rst, phase 3. The TD training loop that
fits them is :mod:`sklearn_rmtl._td`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import validate_data
from torch import Tensor, nn

from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._fit_data import FitData, encode_with
from sklearn_rmtl._seeding import (
    init_parameters,
    isolated_global_rng,
    set_dropout_generator,
)
from sklearn_rmtl._td import SessionChunks, TDConfig, train_critic
from sklearn_rmtl._torch_module import FeatureEmbedding
from sklearn_rmtl._weighting import critic_row_weights
from sklearn_rmtl.backbones._layers import GroupedLinear, GroupedMLP, grouped_matmul


class Critic(nn.Module):
    """One Q-function per task over the state and that task's action.

    ``Q_k(s, a_k) = -ReLU(head_k(MLP([embed(s), action_layer_k(a_k)])))``, so
    ``Q <= 0`` like the rewards. The action layer maps the scalar action to
    ``embedding_dim`` (the paper's "1 x 128 action layer").

    The first affine map after the concatenation (``input_layer``) is split
    into its state and action halves: the state half is computed once per
    row, not once per task, and the action half, a linear function of the
    scalar ``a_k``, costs one multiply-add per unit. The result is the same
    function with the same parameters; only the redundant work is gone.

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
        Hidden sizes of the critic MLP; empty means a linear critic head on
        the concatenation.
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
        self.hidden_dims = tuple(hidden_dims)
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
        self.state_features = embeddings[0].out_features
        self.action_layer = GroupedLinear(n_tasks, 1, embedding_dim)
        # Without hidden layers the first map is the per-task head itself.
        first_out, first_groups = (
            (self.hidden_dims[0], n_embeddings) if self.hidden_dims else (1, n_tasks)
        )
        self.input_layer = GroupedLinear(
            first_groups, self.state_features + embedding_dim, first_out
        )
        self.mlp = GroupedMLP(n_embeddings, first_out, self.hidden_dims[1:], 0.0)
        self.head = (
            GroupedLinear(n_tasks, self.mlp.out_features, 1)
            if self.hidden_dims
            else None
        )

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this critic, as plain values.

        Returns
        -------
        config : dict
            ``Critic(**config)`` has the same layers and state-dict shapes.
        """
        emb = self.embeddings[0]
        assert isinstance(emb, FeatureEmbedding)
        offsets = emb.offsets.cpu().numpy()
        total = emb.embedding.num_embeddings if emb.embedding is not None else 0
        return {
            "cardinalities": [int(c) for c in np.diff(np.append(offsets, total))],
            "n_numerical": int(emb.n_numerical),
            "n_tasks": int(self.n_tasks),
            "embedding_dim": int(emb.embedding_dim),
            "hidden_dims": tuple(int(h) for h in self.hidden_dims),
            "shared": bool(self.shared),
        }

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
        out = self.head if self.head is not None else self.input_layer
        with torch.no_grad():
            out.bias.copy_(-q_start.reshape(-1, 1).clamp(max=0.0))

    def _first_layer(self, states: Tensor, actions: Tensor) -> Tensor:
        """``input_layer([states, action_layer(actions)])``: (batch, K, out)."""
        layer = self.input_layer
        w_state = layer.weight[:, : self.state_features]
        w_action = layer.weight[:, self.state_features :]
        h_state = grouped_matmul(states, w_state)  # (batch, 1 or K, out)
        # action_layer_k(a) = a * u_k + c_k is affine in the scalar a, so its
        # image under w_action is a * (u_k @ w) + (c_k @ w).
        w_action = w_action.expand(self.n_tasks, -1, -1)
        slope = torch.bmm(self.action_layer.weight, w_action).squeeze(1)
        offset = torch.bmm(self.action_layer.bias.unsqueeze(1), w_action).squeeze(1)
        offset = offset + layer.bias
        return torch.addcmul(h_state + offset, actions.unsqueeze(-1), slope)

    def forward(self, x_cat: Tensor, x_num: Tensor, actions: Tensor) -> Tensor:
        if self.shared:
            states = self.embeddings[0](x_cat, x_num)  # (batch, d_state)
        else:
            states = torch.stack([e(x_cat, x_num) for e in self.embeddings], dim=1)
        out = self._first_layer(states, actions)
        if self.head is None:
            return -torch.relu(out.squeeze(-1))
        hidden = torch.relu(out)
        if self.shared:
            # One MLP for the K (state, action_k) pairs: fold tasks into batch.
            batch = actions.shape[0]
            hidden = self.mlp(hidden.reshape(batch * self.n_tasks, 1, -1))
            hidden = hidden.view(batch, self.n_tasks, -1)
        else:
            hidden = self.mlp(hidden)
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

    def encode(
        self,
        X: Any,
        *,
        encoder: FeatureEncoder | None = None,
        inputs: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """The critics' encoding of X.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Rows with the feature columns the critics were fitted on.
        encoder : FeatureEncoder, default=None
            The encoder of ``inputs``.
        inputs : dict of str to ndarray, default=None
            X already encoded by ``encoder``; returned as is when ``encoder``
            is the critics' own encoder.

        Returns
        -------
        inputs : dict of str to ndarray
            ``x_cat`` (int64 codes) and ``x_num`` (float32).
        """
        if inputs is not None and encoder is self.encoder:
            return inputs
        return encode_with(self.encoder, X)

    def row_weights(
        self,
        inputs: dict[str, np.ndarray],
        proba: Any,
        y01: Any,
        weighting: str,
        q_lambda: float,
        precision: str = "float32",
    ) -> Tensor:
        """The weighting's loss weights of rows with actions ``proba``.

        Parameters
        ----------
        inputs : dict of str to ndarray
            The rows as encoded by :meth:`encode`.
        proba : array-like of shape (n_samples, n_tasks)
            The actions at which Q is evaluated (an actor's predictions).
        y01 : array-like of shape (n_samples, n_tasks)
            0/1 labels.
        weighting : str
            A refit weighting of :class:`RMTLClassifier` (e.g. "rmtl").
        q_lambda : float
            The paper's lambda.
        precision : {"float32", "bfloat16", "float16"}, default="float32"
            The dtype of the critic's matrix products.

        Returns
        -------
        weights : Tensor of shape (n_samples, n_tasks)
        """
        return critic_row_weights(
            self.module,
            {k: torch.as_tensor(v) for k, v in inputs.items()},
            torch.as_tensor(proba, dtype=torch.float32),
            torch.as_tensor(y01, dtype=torch.float32),
            weighting,
            q_lambda,
            precision,
        )

    def to(self, device: str) -> SessionCritic:
        """These critics with the module on ``device``.

        Parameters
        ----------
        device : str
            A torch device; the module stays where it is for "cpu".

        Returns
        -------
        critic : SessionCritic
            ``self`` for "cpu", else a copy whose module is on ``device``.
        """
        if device == "cpu":
            return self
        return replace(self, module=copy.deepcopy(self.module).to(device))


def check_critic_features(critic: SessionCritic, X: Any) -> None:
    """Raise if ``critic`` was not fitted on X's feature columns."""
    try:
        validate_data(critic.encoder, X, reset=False, skip_check_array=True)
    except ValueError as exc:
        raise ValueError(
            "critic was fitted on other feature columns than X; a critic "
            f"transfers only between estimators fitted on the same features. {exc}"
        ) from exc


def new_critic(
    data: FitData,
    actor: nn.Module,
    *,
    seed: int,
    start_value: np.ndarray,
    embedding_dim: int,
    hidden_dims: Sequence[int],
    shared: bool,
) -> tuple[Critic, torch.Generator]:
    """The critics of ``data``'s features, and the generator they came from.

    Parameters are drawn from a generator seeded with ``seed``, which the
    caller's training goes on drawing from; the embedding tables start as
    copies of the actor's and the output bias at ``start_value`` (per task).
    """
    generator = torch.Generator().manual_seed(seed)
    with isolated_global_rng(data.device):
        critic = Critic(
            cardinalities=data.cardinalities,
            n_numerical=data.n_numerical,
            n_tasks=data.n_tasks,
            embedding_dim=embedding_dim,
            hidden_dims=tuple(hidden_dims),
            shared=shared,
        )
    init_parameters(critic, generator)
    critic.init_embeddings_from(actor.embedding)  # type: ignore[arg-type]
    critic.init_output(torch.as_tensor(start_value))
    return critic, generator


def fit_critics(
    data: FitData,
    actor: nn.Module,
    *,
    embedding_dim: int,
    hidden_dims: Sequence[int],
    shared: bool,
    behavior_policy: str,
    action_noise: float,
    config: TDConfig,
    seed: int,
    actor_checkpoint: Any = None,
    criterion: nn.Module | None = None,
) -> SessionCritic:
    """Build the session MDP's transitions and fit the critics on them.

    Phases 2 and 3 of RMTL's fit, a chunk of whole sessions at a time
    (:class:`~sklearn_rmtl._td.SessionChunks`): the behaviour actions around
    the frozen ``actor`` (see :func:`~sklearn_rmtl._mdp.behavior_actions`),
    the rewards of Eq. (2), a :class:`Critic` started from the actor's
    embeddings, trained by :func:`~sklearn_rmtl._td.train_critic`.

    Parameters
    ----------
    data : FitData
        The fit's rows (the held-out rows included), encoded by the actor's
        encoder, which the critics keep.
    actor : MultiTaskModule
        A copy of the pretrained actor; trained only with
        ``config.actor_update``.
    embedding_dim : int
        Embedding size of the critics (the actor's).
    hidden_dims : sequence of int
        Hidden sizes of the critic MLP.
    shared : bool
        One shared critic body with per-task heads, or K independent critics.
    behavior_policy : {"actor", "uniform"}
        The actions stored in the transitions.
    action_noise : float
        Exploration noise of ``behavior_policy="actor"``.
    config : TDConfig
        TD training settings.
    seed : int
        Seed of the action draws, initialisation and batch order.
    actor_checkpoint : ValidationCheckpoint, default=None
        With ``config.actor_update`` and held-out rows: selects the actor on
        them, and the actor learns from the other rows only.
    criterion : WeightedMultiTaskBCE, default=None
        The validation loss of ``actor_checkpoint``.

    Returns
    -------
    SessionCritic
        The critics (on CPU, in eval mode) with the encoder and the history.
    """
    chunks = SessionChunks(
        data,
        actor,
        behavior_policy=behavior_policy,
        action_noise=action_noise,
        config=config,
        seed=seed,
    )
    critic, generator = new_critic(
        data,
        actor,
        seed=seed,
        start_value=chunks.start_value(config.gamma),
        embedding_dim=embedding_dim,
        hidden_dims=hidden_dims,
        shared=shared,
    )
    critic.to(data.device)
    actor.to(data.device)
    set_dropout_generator(actor, generator)  # the actor trains with actor_update
    history = train_critic(
        critic,
        chunks,
        actor=actor,
        config=config,
        generator=generator,
        seed=seed,
        actor_checkpoint=actor_checkpoint,
        criterion=None if criterion is None else criterion.to(data.device),
    )
    set_dropout_generator(actor, None)
    assert data.encoder is not None
    return SessionCritic(
        encoder=data.encoder,
        module=critic.cpu().eval(),
        task_names=data.task_names,
        history=history,
    )
