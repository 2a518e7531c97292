"""The critic phase: the critic network, its set-up and :class:`SessionCritic`.

Paper Sec. 2.5.2; docs/user_guide.rst, phase 3. The TD training loop that
fits the critics is :mod:`sklearn_rmtl._td`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, cast

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data
from torch import Tensor, nn

from sklearn_rmtl._defaults import (
    ACTION_NOISE,
    CRITIC_HIDDEN_DIMS,
    GAMMA,
    LEARNING_RATE,
    SOFT_UPDATE_FREQ,
    TAU,
)
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._fit_data import FitData, encode_with
from sklearn_rmtl._mdp import BEHAVIOR_POLICIES, session_folds
from sklearn_rmtl._pickling import (
    VersionedPickleMixin,
    available_device,
    load_module_weights,
    module_weights,
)
from sklearn_rmtl._seeding import (
    init_parameters,
    isolated_global_rng,
    set_dropout_generator,
    skipped_random_init,
)
from sklearn_rmtl._td import SessionChunks, TDConfig, train_critic
from sklearn_rmtl._torch_module import FeatureEmbedding
from sklearn_rmtl._weighting import critic_row_weights
from sklearn_rmtl.backbones._base import check_dims
from sklearn_rmtl.backbones._layers import GroupedLinear, GroupedMLP, grouped_matmul

#: Accepted values of the critics' ``output``.
CRITIC_OUTPUTS = ("relu", "softplus")


class Critic(nn.Module):
    """One Q-function per task over the state and that task's action.

    ``Q_k(s, a_k) = -ReLU(head_k(MLP([embed(s), action_layer_k(a_k)])))``, so
    ``Q <= 0`` like the rewards (``-softplus`` instead of ``-ReLU`` with
    ``output="softplus"``). The action layer maps the scalar action to
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
    output : {"relu", "softplus"}, default="relu"
        The map of the head's output to ``Q <= 0``: ``-ReLU`` (the paper) or
        ``-softplus``, whose gradient is nowhere zero.
    sequences : sequence of (int, int, int), default=()
        The sequence columns' tables, candidates and lengths (see
        ``FeatureEmbedding``); a critic's state averages each sequence's
        element embeddings.

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
        output: str = "relu",
        sequences: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__()
        if output not in CRITIC_OUTPUTS:
            raise ValueError(f"output must be one of {CRITIC_OUTPUTS}, got {output!r}.")
        self.n_tasks = n_tasks
        self.shared = shared
        self.output = output
        self.hidden_dims = tuple(hidden_dims)
        n_embeddings = 1 if shared else n_tasks
        embeddings = [
            FeatureEmbedding(
                cardinalities=cardinalities,
                n_numerical=n_numerical,
                embedding_dim=embedding_dim,
                # The state of a sequence column is the mean of its
                # elements' embeddings, in tables copied from the actor's.
                sequences=sequences,
                sequence_pooling="mean",
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
            "output": self.output,
            "sequences": [list(spec) for spec in emb.sequences],
        }

    def init_embeddings_from(self, embedding: FeatureEmbedding) -> None:
        """Start every critic's embedding tables as copies of the actor's."""
        # The tables and the numerical layer; the actor's attention (if any)
        # has no counterpart here, as the critics average their sequences.
        state = {
            key: value
            for key, value in embedding.state_dict().items()
            if not key.startswith("attention.")
        }
        for own in self.embeddings:
            own.load_state_dict(state)

    def init_output(self, q_start: Tensor) -> None:
        """Start every critic's output near ``q_start`` (shape (n_tasks,), <= 0).

        With the ``-ReLU`` output, a head whose pre-activation starts negative
        has zero gradient and stays at ``Q = 0`` for good; starting the bias at
        the expected return keeps the critics in their active region. With
        ``-softplus`` the bias is the inverse softplus of ``-q_start``.
        """
        out = self.head if self.head is not None else self.input_layer
        bias = -q_start.reshape(-1, 1).clamp(max=0.0)
        if self.output == "softplus":
            # softplus(b) = -q_start: b = y + log(1 - exp(-y)), y > 0.
            y = bias.clamp(min=1e-3)
            bias = y + torch.log(-torch.expm1(-y))
        with torch.no_grad():
            out.bias.copy_(bias)

    def _q(self, out: Tensor) -> Tensor:
        """The head's output (batch, K, 1) as Q-values (batch, K), ``<= 0``."""
        out = out.squeeze(-1)
        # NOTE[DIFF]: the paper's -ReLU leaves the rows whose pre-activation
        # is negative at Q = 0 with no gradient (1.7-34 % of the rows,
        # measured); -softplus (output="softplus") is never flat.
        if self.output == "softplus":
            return -nn.functional.softplus(out)
        return -torch.relu(out)

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
            return self._q(out)
        hidden = torch.relu(out)
        if self.shared:
            # One MLP for the K (state, action_k) pairs: fold tasks into batch.
            batch = actions.shape[0]
            hidden = self.mlp(hidden.reshape(batch * self.n_tasks, 1, -1))
            hidden = hidden.view(batch, self.n_tasks, -1)
        else:
            hidden = self.mlp(hidden)
        return self._q(self.head(hidden))


class FoldCritics(nn.Module):
    """Cross-fitted critics: one :class:`Critic` per fold of the sessions.

    The critics of fold ``f`` were trained on the other folds' sessions, so
    a row of fold ``f`` (:func:`~sklearn_rmtl._mdp.session_folds`) read by
    them is scored by critics that never saw its session.

    Parameters
    ----------
    critics : sequence of Critic
        The critics of each fold, in fold order, of the same configuration.

    Shape
    -----
    ``x_cat (batch, n_cat), x_num (batch, n_num), actions (batch, n_tasks),
    fold (batch,) or None -> (batch, n_tasks)``: each row's Q from its
    fold's critics; with ``fold=None`` (rows of no fitted session) the mean
    over the folds.
    """

    def __init__(self, critics: Sequence[Critic]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(critics)

    @classmethod
    def from_config(cls, *, n_folds: int, **config: Any) -> FoldCritics:
        """New critics of :meth:`get_config`'s output (a saved file's)."""
        return cls([Critic(**config) for _ in range(n_folds)])

    def get_config(self) -> dict[str, Any]:
        """The arguments of :meth:`from_config` that rebuild these critics."""
        first = cast(Critic, self.folds[0])
        return {"n_folds": len(self.folds), **first.get_config()}

    def forward(
        self, x_cat: Tensor, x_num: Tensor, actions: Tensor, fold: Tensor | None = None
    ) -> Tensor:
        if fold is None:
            return torch.stack([c(x_cat, x_num, actions) for c in self.folds]).mean(0)
        out = torch.empty_like(actions)
        for f, critic in enumerate(self.folds):
            rows = torch.nonzero(fold == f).squeeze(1)
            if len(rows):
                out[rows] = critic(x_cat[rows], x_num[rows], actions[rows]).to(
                    out.dtype
                )
        return out


def critic_from_config(config: dict[str, Any]) -> Critic | FoldCritics:
    """New critics of a ``get_config()`` output (a pickle's or a saved file's)."""
    if "n_folds" in config:  # cross-fitted critics (SessionCritic's cv)
        return FoldCritics.from_config(**config)
    return Critic(**config)


#: The fitted attributes of a :class:`SessionCritic`, set by :func:`fit_critics`.
FITTED_ATTRIBUTES = ("encoder_", "module_", "task_names_", "history_")

#: RMTLClassifier parameters of the critic phase before it became one
#: ``critic`` parameter, by the SessionCritic parameter each became. Read
#: where estimators of earlier versions are rebuilt (safe files of format
#: versions 1-3, pickles).
FORMER_RMTL_PARAMETERS = {
    "critic_hidden_dims": "hidden_dims",
    "shared_critic": "shared",
    "behavior_policy": "behavior_policy",
    "action_noise": "action_noise",
    "gamma": "gamma",
    "tau": "tau",
    "soft_update_freq": "soft_update_freq",
    "double_q": "double_q",
    "ips_weighting": "balance_labels",
    "critic_sample_weight": "use_sample_weight",
    "critic_lr": "lr",
    "critic_max_epochs": "max_epochs",
    "critic_tol": "tol",
    "critic_patience": "patience",
}


class SessionCritic(VersionedPickleMixin, BaseEstimator):
    """The critic phase of RMTL: per-task critics ``Q_k(s, a_k)`` of the sessions.

    Its parameters are the settings of RMTL's phases 2 and 3 (the session
    MDP's behaviour actions, the critic network, TD learning and its
    stopping rule); :class:`RMTLClassifier` takes it as one parameter,
    ``critic``, so that the settings are searchable as ``critic__<name>``
    (e.g. ``critic__gamma``) the way scikit-learn composes estimators.

    An unfitted SessionCritic is a specification: ``RMTLClassifier.fit``
    trains a clone of it around the pretrained actor (the critics start
    from the actor's embeddings and read its encoding) and keeps the fitted
    clone as ``critic_``. A fitted one (another estimator's ``critic_``)
    transfers: the critic phase is skipped and the refit uses it (paper
    Sec. 3.4), whatever the receiving estimator's backbone, as long as the
    feature columns and tasks are the same. It keeps its own encoder, so
    the receiving estimator may encode features differently.

    Parameters
    ----------
    hidden_dims : tuple of int, default=(512, 256)
        Hidden sizes of the critic MLP over ``[state embedding, action
        embedding]``.
    shared : bool, default=True
        True: the critics share the embedding and MLP, each task has its own
        head (the paper). False: K independent critics with their own
        embeddings (the authors' code). Embeddings start as copies of the
        actor's either way.
    behavior_policy : {"actor", "actor_logit", "uniform"}, default="actor"
        Actions stored in the transitions: the pretrained actor's predictions
        plus Gaussian noise (std ``action_noise``, clipped at two std, then
        clipped to [0, 1]; the paper), the same noise added to the
        prediction's logit (no action pinned at 0 or 1; an ``action_noise``
        around 0.5 explores comparably), or uniform draws from [0, 1] (the
        authors' code).
    action_noise : float, default=0.1
        Std of the exploration noise of the "actor" policies (in probability,
        or in logit for ``"actor_logit"``).
    gamma : float, default=0.95
        Discount factor of the session return.
    tau : float, default=0.2
        Soft-update rate of the target networks (the paper's beta, Eq. 18).
    soft_update_freq : int, default=2
        Critic steps between soft updates.
    double_q : bool, default=False
        Bootstrap from the minimum of the target and current critics at the
        next state (clipped double Q, the authors' final code).
    balance_labels : bool, default=False
        Weight the TD loss by inverse label frequency per task (the
        authors' "IPS" weights), so rare positives count as much as
        negatives.
    use_sample_weight : bool, default=False
        Also weight the TD loss by ``fit``'s ``sample_weight`` (normalised
        by the weights' sum, like the actor's loss). False: the critics
        weigh every transition equally, as in the paper. Missing labels are
        masked in the TD loss either way.
    lr : float, default=1e-3
        Adam learning rate of the critics.
    max_epochs : int or None, default=20
        Maximum passes over the transitions; None: no limit in epochs
        (``max_steps`` must then be set).
    max_steps : int or None, default=None
        Maximum TD gradient steps, counted over all epochs; training stops
        at whichever of ``max_epochs`` and ``max_steps`` comes first. None:
        no limit in steps. A budget in steps means the same amount of
        training whatever the number of rows (a small sample has few steps
        an epoch).
    tol : float, default=1e-3
        Convergence: without ``validation_fraction``, the epoch's mean TD
        loss changed by at most ``tol`` times the previous one ...; with it,
        the held-out TD loss did not fall below ``1 - tol`` times its best ...
    patience : int, default=2
        ... for this many consecutive epochs.
    validation_fraction : float or None, default=None
        Share of the sessions (drawn by a hash of the session id, so whole
        sessions) held out of TD learning. After every epoch the mean
        squared TD error of their transitions is measured (``valid_td_loss``
        in ``history_``), training stops by ``tol`` and ``patience`` on it,
        and the critics end with the weights of its best epoch. None: every
        session trains the critics and the rule reads the training loss.
    redraw_actions : bool, default=False
        Draw the behaviour actions (and their rewards) anew in every epoch
        after the first, rather than once for all epochs (the paper's
        buffer): the critics then see several actions per state.
    output : {"relu", "softplus"}, default="relu"
        The map of the critic head to ``Q <= 0``: ``-ReLU`` (the paper),
        under which a row whose head output is negative sits at ``Q = 0``
        with no gradient (weight 1) for good, or ``-softplus``, which is
        never flat.
    cv : int or None, default=None
        Cross-fitting: the sessions are dealt into ``cv`` folds by a hash of
        the session id (the same folds in every fit of the same sessions),
        ``cv`` critics are trained, each on the sessions of the other folds,
        and the refit weighs a row with the critics of its session's fold,
        which never saw that session: its weight carries what the critics
        learnt from other sessions, not a memory of its own return. Costs
        ``cv`` critic trainings. None: one critic, trained on every session,
        scores its own training rows (the paper).

    Attributes
    ----------
    encoder_ : FeatureEncoder
        The encoder whose codes the critics' embeddings read (the actor's
        encoder of the fit that trained them).
    module_ : Critic or FoldCritics
        The trained critic network (on CPU, in eval mode); with ``cv``, one
        network per fold.
    task_names_ : ndarray of str of shape (n_tasks,)
        Tasks the critics were trained for, in order.
    history_ : list of dict
        Per critic epoch: ``epoch``, ``td_loss`` (mean TD loss), ``steps``
        (TD steps so far), ``dur``; with ``validation_fraction``,
        ``valid_td_loss`` (and ``best_epoch`` on the last row); with
        RMTLClassifier's ``actor_update``, the ``actor_*`` entries (see
        ``RMTLClassifier.history_["critic"]``). With ``cv``, the rows of
        every fold's critics in turn, each with its ``fold``.

    See Also
    --------
    RMTLClassifier : Trains the critics and refits its actor with them.

    Notes
    -----
    A SessionCritic has no ``fit`` of its own: critics are trained around a
    pretrained actor, inside :meth:`RMTLClassifier.fit`, as scikit-learn's
    Gaussian-process kernels are parameters of the regressor that fits
    them. ``clone`` of a fitted SessionCritic keeps its fitted critics (as
    :class:`sklearn.frozen.FrozenEstimator` does), so that meta-estimators
    that clone ``RMTLClassifier(critic=other.critic_)`` transfer them rather
    than train new ones; ``SessionCritic(**critic.get_params())`` is an
    unfitted one with the same settings.

    References
    ----------
    Z. Liu et al., "Multi-Task Recommendations with Reinforcement Learning",
    WWW 2023, Sec. 2.5.

    Examples
    --------
    >>> from sklearn_rmtl import RMTLClassifier, SessionCritic
    >>> from sklearn_rmtl.datasets import make_sessions
    >>> X, Y, sessions, times = make_sessions(30, return_X_y=True, random_state=0)
    >>> tiny = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> clf = RMTLClassifier(backbone="sharedbottom", backbone_params=tiny,
    ...                      critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
    ...                      max_epochs=2, random_state=0)
    >>> clf.get_params()["critic__gamma"]
    0.95
    >>> critic = clf.fit(X, Y, session_ids=sessions).critic_
    >>> critic.task_names_.tolist(), len(critic.history_)
    (['click', 'purchase'], 2)
    >>> other = RMTLClassifier(backbone="mmoe", backbone_params=tiny,
    ...                        critic=critic, max_epochs=2, random_state=0)
    >>> other.fit(X, Y, session_ids=sessions).critic_ is critic
    True
    """

    _parameter_constraints: dict = {
        "hidden_dims": [tuple, list],
        "shared": ["boolean"],
        "behavior_policy": [StrOptions(set(BEHAVIOR_POLICIES))],
        "action_noise": [Interval(Real, 0, None, closed="left")],
        "gamma": [Interval(Real, 0, 1, closed="both")],
        "tau": [Interval(Real, 0, 1, closed="right")],
        "soft_update_freq": [Interval(Integral, 1, None, closed="left")],
        "double_q": ["boolean"],
        "balance_labels": ["boolean"],
        "use_sample_weight": ["boolean"],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "max_steps": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "redraw_actions": ["boolean"],
        "output": [StrOptions(set(CRITIC_OUTPUTS))],
        "cv": [Interval(Integral, 2, None, closed="left"), None],
    }

    def __init__(
        self,
        *,
        hidden_dims: tuple[int, ...] = CRITIC_HIDDEN_DIMS,
        shared: bool = True,
        behavior_policy: str = "actor",
        action_noise: float = ACTION_NOISE,
        gamma: float = GAMMA,
        tau: float = TAU,
        soft_update_freq: int = SOFT_UPDATE_FREQ,
        double_q: bool = False,
        balance_labels: bool = False,
        use_sample_weight: bool = False,
        lr: float = LEARNING_RATE,
        max_epochs: int | None = 20,
        max_steps: int | None = None,
        tol: float = 1e-3,
        patience: int = 2,
        validation_fraction: float | None = None,
        redraw_actions: bool = False,
        output: str = "relu",
        cv: int | None = None,
    ) -> None:
        self.hidden_dims = hidden_dims
        self.shared = shared
        self.behavior_policy = behavior_policy
        self.action_noise = action_noise
        self.gamma = gamma
        self.tau = tau
        self.soft_update_freq = soft_update_freq
        self.double_q = double_q
        self.balance_labels = balance_labels
        self.use_sample_weight = use_sample_weight
        self.lr = lr
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.tol = tol
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.redraw_actions = redraw_actions
        self.output = output
        self.cv = cv

    def _check_params(self) -> None:
        """Raise for settings outside their declared ranges, before any training."""
        self._validate_params()
        check_dims("hidden_dims", self.hidden_dims, allow_empty=True)
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError(
                "SessionCritic needs a training budget: max_epochs and max_steps "
                "are both None. Set one of them (e.g. max_steps=20000)."
            )

    def __sklearn_is_fitted__(self) -> bool:
        return "module_" in vars(self)

    def _check_fitted(self) -> None:
        # sklearn's check_is_fitted refuses objects without ``fit``.
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {self!r} holds critic settings only: RMTLClassifier.fit "
                "trains critics with them (its critic_)."
            )

    def __sklearn_clone__(self) -> SessionCritic:
        twin = cast(SessionCritic, super().__sklearn_clone__())
        if self.__sklearn_is_fitted__():
            # Trained critics are read, never trained further: the clone
            # shares them (a transfer survives a meta-estimator's clone).
            twin.__dict__.update({k: vars(self)[k] for k in FITTED_ATTRIBUTES})
        return twin

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        module = state.get("module_")
        if isinstance(module, Critic | FoldCritics):
            # Configuration and NumPy weights: plain data to pickle and skops.
            state["module_"] = {
                "config": module.get_config(),
                "device": str(next(module.parameters()).device),
                "training": module.training,
                "weights": module_weights(module),
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if "module" in state and "module_" not in state:
            # Pickled when a SessionCritic held only fitted critics (no
            # settings): those kept their names without "_"; the settings
            # are the defaults (RMTLClassifier.__setstate__ sets its own).
            for attr in FITTED_ATTRIBUTES:
                state[attr] = state.pop(attr.removesuffix("_"), [])
            for key, value in SessionCritic().get_params().items():
                state.setdefault(key, value)
        plain = state.get("module_")
        if isinstance(plain, dict):  # see __getstate__
            with isolated_global_rng("cpu"), skipped_random_init():
                module = critic_from_config(plain["config"])  # weights: next
            load_module_weights(module, plain["weights"])
            module.train(plain["training"])
            state["module_"] = module.to(available_device(plain["device"]))
        super().__setstate__(state)

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
        self._check_fitted()
        if inputs is not None and encoder is self.encoder_:
            return inputs
        return encode_with(self.encoder_, X)

    def route(
        self,
        inputs: dict[str, np.ndarray],
        session_ids: np.ndarray | None,
        first_row: int = 0,
    ) -> dict[str, np.ndarray]:
        """``inputs`` with each row's fold, for cross-fitted critics (``cv``).

        Parameters
        ----------
        inputs : dict of str to ndarray
            The rows as encoded by :meth:`encode`.
        session_ids : ndarray of shape (n_samples,) or None
            Session of each row; None: the rows of a fit without sessions,
            each its own session named by its position.
        first_row : int, default=0
            Position of the first row among the fit's rows (without
            ``session_ids``).

        Returns
        -------
        inputs : dict of str to ndarray
            With ``fold`` (int64 per row) when the critics are cross-fitted;
            ``inputs`` itself otherwise. Rows without a fold are scored by
            the mean of every fold's critics.
        """
        self._check_fitted()
        if not isinstance(self.module_, FoldCritics):
            return inputs
        n_folds = len(self.module_.folds)
        n = len(inputs["x_cat"])
        return {**inputs, "fold": session_folds(session_ids, first_row, n, n_folds)}

    def row_weights(
        self,
        inputs: dict[str, np.ndarray],
        proba: Any,
        y01: Any,
        weighting: str,
        q_lambda: float,
        precision: str = "float32",
    ) -> Tensor:
        """The refit weighting's loss weights of rows with actions ``proba``.

        Parameters
        ----------
        inputs : dict of str to ndarray
            The rows as encoded by :meth:`encode`, with their folds
            (:meth:`route`) for cross-fitted critics.
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
            The per-row, per-task loss weights.
        """
        self._check_fitted()
        return critic_row_weights(
            self.module_,
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
            ``self`` for "cpu", else a fitted clone whose module is a copy
            on ``device``.
        """
        self._check_fitted()
        if device == "cpu":
            return self
        twin = self.__sklearn_clone__()
        twin.module_ = copy.deepcopy(self.module_).to(device)
        return twin


def former_critic(
    critic: SessionCritic | None,
    critic_: SessionCritic | None,
    settings: SessionCritic,
) -> SessionCritic | None:
    """The ``critic`` of an RMTLClassifier stored before it held the settings.

    Estimators stored then (safe files of format versions 1-3, pickles) had
    the critic settings as their own parameters (:data:`FORMER_RMTL_PARAMETERS`),
    here ``settings``, and critics without settings. Critics trained by the
    estimator (``critic_`` without a given ``critic``) take ``settings``,
    which become ``critic`` (``None`` where they are the defaults). Given
    fitted critics keep theirs: the estimator's settings trained nothing.
    """
    if critic is not None:
        return critic
    if critic_ is not None:
        critic_.set_params(**settings.get_params())
    if settings.get_params() == SessionCritic().get_params():
        return None
    return settings


def check_critic_features(critic: SessionCritic, X: Any) -> None:
    """Raise if ``critic`` was not fitted on X's feature columns."""
    try:
        validate_data(critic.encoder_, X, reset=False, skip_check_array=True)
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
    output: str = "relu",
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
            sequences=data.sequences,
            n_tasks=data.n_tasks,
            embedding_dim=embedding_dim,
            hidden_dims=tuple(hidden_dims),
            shared=shared,
            output=output,
        )
    init_parameters(critic, generator)
    # A STEM actor's ``embedding`` is its shared tables: the critics start
    # from those, not from the task-specific ``task_embeddings``.
    critic.init_embeddings_from(actor.embedding)  # type: ignore[arg-type]
    critic.init_output(torch.as_tensor(start_value))
    return critic, generator


def set_fitted_critics(
    critic: SessionCritic,
    *,
    encoder: FeatureEncoder,
    module: Critic | FoldCritics,
    task_names: np.ndarray,
    history: list[dict[str, Any]],
) -> SessionCritic:
    """Give ``critic`` its fitted attributes (from a fit or a saved file)."""
    critic.encoder_ = encoder
    critic.module_ = module
    critic.task_names_ = task_names
    critic.history_ = history
    return critic


def fit_critics(
    critic: SessionCritic,
    data: FitData,
    actor: nn.Module,
    *,
    embedding_dim: int,
    config: TDConfig,
    seed: int,
    actor_checkpoint: Any = None,
    criterion: nn.Module | None = None,
) -> SessionCritic:
    """Build the session MDP's transitions and fit ``critic`` on them.

    Phases 2 and 3 of RMTL's fit, a chunk of whole sessions at a time
    (:class:`~sklearn_rmtl._td.SessionChunks`): the behaviour actions around
    the frozen ``actor`` (see :func:`~sklearn_rmtl._mdp.behavior_actions`),
    the rewards of Eq. (2), a :class:`Critic` started from the actor's
    embeddings, trained by :func:`~sklearn_rmtl._td.train_critic`.

    Parameters
    ----------
    critic : SessionCritic
        The unfitted critics whose settings shape the buffer and the
        network; their fitted attributes are set here.
    data : FitData
        The fit's rows (the held-out rows included), encoded by the actor's
        encoder, which the critics keep.
    actor : MultiTaskModule
        A copy of the pretrained actor; trained only with
        ``config.actor_update``.
    embedding_dim : int
        Embedding size of the critics (the actor's).
    config : TDConfig
        TD training settings (:meth:`~sklearn_rmtl._td.TDConfig.from_params`
        of ``critic`` and the estimator).
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
        ``critic``, fitted: the network (on CPU, in eval mode), the encoder,
        the tasks and the history.
    """
    chunks = SessionChunks(
        data,
        actor,
        behavior_policy=critic.behavior_policy,
        action_noise=critic.action_noise,
        config=config,
        seed=seed,
        redraw_actions=critic.redraw_actions,
    )
    assert config.cv is None or not config.actor_update, "refused by RMTLClassifier"
    modules, history = [], []
    for fold in [None] if config.cv is None else range(config.cv):
        chunks.fold = fold  # its sessions' rows train and stop nothing
        _check_training_rows(chunks, config)
        module, generator = new_critic(
            data,
            actor,
            seed=seed + (fold or 0),
            start_value=chunks.start_value(config.gamma),
            embedding_dim=embedding_dim,
            hidden_dims=critic.hidden_dims,
            shared=critic.shared,
            output=critic.output,
        )
        module.to(data.device)
        actor.to(data.device)
        set_dropout_generator(actor, generator)  # trained with actor_update
        rows = train_critic(
            module,
            chunks,
            actor=actor,
            config=config,
            generator=generator,
            seed=seed + (fold or 0),
            actor_checkpoint=actor_checkpoint,
            criterion=None if criterion is None else criterion.to(data.device),
        )
        set_dropout_generator(actor, None)
        modules.append(module.cpu().eval())
        history += rows if fold is None else [{"fold": fold, **row} for row in rows]
    assert data.encoder is not None
    return set_fitted_critics(
        critic,
        encoder=data.encoder,
        module=modules[0] if config.cv is None else FoldCritics(modules).eval(),
        task_names=data.task_names,
        history=history,
    )


def _check_training_rows(chunks: SessionChunks, config: TDConfig) -> None:
    """Raise if the critics of ``chunks.fold`` would have no rows to learn
    from, or none to stop on with ``validation_fraction``."""
    n_train, n_held_out = chunks.training_rows()
    which = "" if chunks.fold is None else f" (cv={config.cv}, fold {chunks.fold})"
    if n_train == 0:
        raise ValueError(
            f"The critics{which} have no session to learn from: every session "
            "is held out. Give more sessions, or lower the critic's cv or "
            "validation_fraction."
        )
    if config.validation_fraction is not None and n_held_out == 0:
        raise ValueError(
            f"The critic's validation_fraction={config.validation_fraction} held "
            f"out none of the {n_train} rows{which}; the held-out and the "
            "training sessions must both be non-empty. Give more sessions, "
            "change validation_fraction, or set it to None."
        )
