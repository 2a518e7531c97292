"""RMTLClassifier: pretrain, session MDP, per-task critics, Q-weighted refit."""

from __future__ import annotations

import copy
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import _fit_context, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl._critic import (
    FORMER_RMTL_PARAMETERS,
    SessionCritic,
    check_critic_features,
    fit_critics,
    former_critic,
)
from sklearn_rmtl._defaults import (
    BATCH_SIZE,
    BC_ALPHA,
    LEARNING_RATE,
    Q_LAMBDA,
    REFIT_LEARNING_RATE,
)
from sklearn_rmtl._distributed import DataParallel
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._fit_data import FitData
from sklearn_rmtl._loss import WeightedMultiTaskBCE
from sklearn_rmtl._mtl import MTLClassifier, fitted_mtl_state
from sklearn_rmtl._refit import plan_refit
from sklearn_rmtl._rows import Rows, labeled_rows
from sklearn_rmtl._skorch_net import MultiTaskNet
from sklearn_rmtl._task_space import resolve_task_space, task_space_labels
from sklearn_rmtl._td import TDConfig
from sklearn_rmtl._training import (
    SelectionOption,
    check_selection,
    held_out_checkpoint,
    net_history,
    selected_steps,
)
from sklearn_rmtl._validation import check_metadata, check_same_tasks
from sklearn_rmtl._weighting import WEIGHTINGS
from sklearn_rmtl.backbones import BACKBONES

# Seeds of the phases derive from one seed, so each phase's random stream
# does not depend on how much randomness the earlier phases consumed.
_CRITIC_SEED, _REFIT_SEED = 1, 2


class RMTLClassifier(MTLClassifier):
    """Reinforcement-learning-enhanced multi-task classifier (RMTL).

    Liu et al., WWW 2023. ``fit`` runs four phases:

    1. **Pretrain** the actor, a multi-task backbone, exactly as
       :class:`MTLClassifier` (or take a given ``actor``).
    2. **Session MDP**: rows are ordered by session and time; each row is a
       transition to the next row of its session, with per-task rewards equal
       to the negative BCE of the behaviour action (Eq. 2).
    3. **Critics**: one ``Q_k(s, a_k) <= 0`` per task, trained by TD learning
       with target networks and soft updates (Eqs. 11-14, 18), the actor
       frozen; their settings are one parameter, ``critic``, a
       :class:`SessionCritic`.
    4. **Refit** the pretrained actor with per-row, per-task BCE weights
       ``w = 1 - q_lambda * Q_k(s, pi(s)_k)`` (Eq. 17), Q evaluated at the
       actor's current prediction and detached.

    Parameters
    ----------
    backbone : str, default="ple"
        The actor's backbone name (see :class:`MTLClassifier`); ignored when
        ``actor`` is given.
    backbone_params : dict, default=None
        Network sizes; see :class:`MTLClassifier`.
    categorical_features : "from_dtype", array-like or None, default="from_dtype"
        Which columns are categorical; see :class:`FeatureEncoder`.
    min_frequency : int or float, default=None
        Categories rarer than this share one embedding.
    max_categories : int, default=None
        Largest number of categories kept per column.
    hash_buckets : dict of {str, int} to int, default=None
        Id columns encoded by hashing into this many buckets instead of a
        vocabulary; see :class:`MTLClassifier`.
    sequence_features : dict of str to str or None, default=None
        List-valued columns of ids and the categorical column whose
        vocabulary each shares (or ``None``); see :class:`MTLClassifier`.
        The critics' state averages each sequence's embeddings.
    max_sequence_length : int, default=50
        Most recent elements kept per sequence cell.
    task_weights : array-like of shape (n_tasks,), default=None
        Fixed per-task loss weights of pretraining and refit (``None``:
        ``1 / n_tasks`` each); RMTL's row weights multiply them.
    task_balancing : {"fixed", "uncertainty", "gradnorm", "dwa", "pcgrad"}, \
            default="fixed"
        How pretraining and the refit combine the per-task losses (see
        :class:`MTLClassifier`); each phase starts a fresh balancer. In the
        refit the task-level balance multiplies the per-row weights ``w``
        (they are inside each task's loss). A given ``actor`` pretrains with
        its own.
    task_balancing_params : dict, default=None
        Hyper-parameters of ``task_balancing``; see :class:`MTLClassifier`.
    task_space : dict or None, default=None
        Funnel-aware losses, ``{task: conditioning_task}`` (e.g.
        ``{"purchase": "click"}``); see :class:`MTLClassifier`. A label
        outside its task's space is a missing label in every phase: it is
        left out of the pretraining and refit losses and their early
        stopping, its reward is 0 and out of the critics' TD loss of its
        task (the row stays a state of its session), and
        :meth:`loss_weights` gives it a NaN weight. A given ``actor`` must
        have the same ``task_space``. ``predict_proba`` of such a task is
        conditional on the conditioning task being positive.
    max_epochs : int, default=20
        Maximum pretraining epochs.
    batch_size : int, default=2048
        Rows per step in every phase.
    lr : float, default=1e-3
        Adam learning rate of the actor (pretraining and refit).
    weight_decay : float, default=0.0
        Adam L2 penalty of the actor.
    early_stopping : bool, default=True
        Early stopping on held-out rows in pretraining and refit; see
        :class:`MTLClassifier`. Refit stops on the validation BCE without
        RMTL's weights (``sample_weight`` and missing labels still apply).
    validation_fraction : float, default=0.1
        Fraction of rows held out (the latest ones when ``timestamps`` are
        given). Held-out rows still serve as transitions for the critics.
    n_iter_no_change : int, default=3
        Patience of early stopping, in epochs.
    validation_interval : float in (0, 1], default=1.0
        Fraction of an epoch between pretraining's validation checks (see
        :class:`MTLClassifier`); the refit has ``refit_validation_interval``.
    validation_metric : {"loss", "auc", "gauc"} or str, default="loss"
        What pretraining's early stopping compares (see
        :class:`MTLClassifier`); the refit has ``refit_validation_metric``.
    retrain_on_all : bool, default=False
        After the pretraining and the refit have been chosen on the held-out
        rows, train both again on all rows, each for as many steps as early
        stopping chose (0 refit steps when the pretrained weights were kept),
        with the critics already trained; see :class:`MTLClassifier`. A given
        ``actor`` is chosen with its network from before any retraining.
        Not with ``actor_update=True``.
    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Where to train; see :class:`MTLClassifier`.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        The dtype of the matrix products of every phase (pretraining, the
        behaviour actor, the critics' TD steps, the refit and its Q
        evaluations, prediction); "float16" scales the losses of every
        training step (pretraining, TD and actor steps, refit). See
        :class:`MTLClassifier`.
    distributed : bool, default=False
        Data-parallel training of every phase (pretraining, the critics' TD
        learning, the refit) over the processes of ``torch.distributed``;
        see :class:`MTLClassifier`. A given unfitted ``actor`` pretrains
        with its own setting; the critics and the refit start from rank 0's
        actor.
    random_state : int, RandomState instance or None, default=None
        Seeds every phase; an int gives identical predictions on CPU.
    verbose : int, default=0
        0 prints nothing; 1 prints the losses of every phase.
    session_column : str or None, default=None
        Name of X's column of sessions, read as ``session_ids`` and dropped
        before encoding; see :class:`MTLClassifier`.
    time_column : str or None, default=None
        Name of X's column of times, read as ``timestamps``; the same.
    callbacks : list of skorch callbacks, default=None
        Extra skorch callbacks for pretraining and refit, each phase a net of
        its own (see :class:`MTLClassifier`): a callback sees the
        pretraining's epochs, then the refit's, from epoch 1 again.
    refit_max_epochs : int, default=None
        The ``refit_*`` parameters govern every continued training of the
        pretrained actor: the refit (phase 4) and, with
        ``actor_update=True``, the actor's steps in the critic phase.
        This one is the maximum refit epochs; ``None`` means ``max_epochs``
        (``actor_update``'s steps last as long as the critics train).
        ``0`` skips the refit: with ``actor_update=True`` the result is the
        paper's DDPG baseline (D-PLE with ``backbone="ple"``), an actor
        trained by the critics' Q-gradient (and ``bc_alpha``'s BC term).
    refit_lr : float or None, default=1e-4
        Adam learning rate of every continued training of the actor: the
        refit and ``actor_update``'s actor steps in the critic phase;
        ``None`` means ``lr``. Each starts a new Adam on an already fitted
        network, and at the pretraining rate its first steps undo part of
        the fit.
    refit_validation_interval : float in (0, 1], default=0.25
        Fraction of an epoch between the validation checks of every
        continued training of the actor: the refit's epochs and, with
        ``actor_update``, the critic phase's epochs. At ``refit_lr`` the
        best weights often come within the first epoch, so checks inside
        epochs find them.
    refit_validation_metric : {"loss", "auc", "gauc"} or str, default="loss"
        How early stopping picks the weights of every continued training of
        the actor (the refit and ``actor_update``'s steps in the critic
        phase) among its validation checks: the lowest validation BCE
        without RMTL's weights, the highest mean per-task ROC AUC, or the
        highest mean session GAUC (needs ``session_ids``);
        ``"<metric>:<task>"`` (e.g. ``"auc:click"``) uses that task's value
        only.
    refit_keep_pretrained : bool, default=True
        Whether the pretrained weights are a candidate of the selection of
        every continued training of the actor (the refit and
        ``actor_update``'s steps in the critic phase; checked before the
        first step): when no check beats them, they are kept (for the refit,
        ``refit_improved_`` is then False). False keeps the best check even
        if it is worse (the paper always refits).
    actor_update : bool, default=False
        Also train the actor by the critics' Q-gradient (Eq. 15) during the
        critic phase, with a soft-updated target actor. The paper keeps the
        actor frozen. The actor learns at ``refit_lr``; with held-out rows
        it learns from the others only and is selected on them like a
        refit: checked every ``refit_validation_interval`` of a critic
        epoch by ``refit_validation_metric``, the pretrained weights a
        candidate with ``refit_keep_pretrained``, its updates stopped after
        ``n_iter_no_change`` epochs without a better check, and the best
        check's weights kept. The steps end with the critics' training (the
        critic's ``max_epochs``, ``tol`` and ``patience``).
    bc_alpha : float or None, default=2.5
        With ``actor_update``, the actor's step minimises
        ``-bc_alpha * mean(Q) / mean|Q| + BCE(actor, y)`` (TD3+BC, the
        authors' agent; 2.5 is TD3+BC's default): the behaviour-cloning term
        keeps the actor's predictions calibrated. ``None``: ascend Q alone
        (the paper's Eq. 15).
    weighting : str, default="rmtl"
        The refit's row weights (paper Table 2, then controls and outcome
        weights of our own; user guide, "Controls and session outcomes"):

        - ``"rmtl"``: ``1 - q_lambda * Q`` at the actor's current prediction
          (Eq. 17); ``"label_q"``: ``1 - q_lambda * y * Q``; ``"neg_q"``:
          ``-Q``; ``"constant"``: 1 (continue training the baseline; no
          critic is trained unless ``actor_update``).
        - Controls of RMTL's weights, computed once at the pretrained actor
          and fixed for the refit: ``"label_mean"`` (each row weighs the
          mean RMTL weight of the training rows with its label, per task),
          ``"rmtl_fixed"`` (RMTL's weights themselves),
          ``"rmtl_shuffled"`` (permuted within task x label x rows-left
          strata: the same distribution, the alignment destroyed) and
          ``"rmtl_flipped"`` (reflected about the stratum's mean).
        - Weights from the realised outcome of each row's session, which
          need no critic: ``"outcome"`` (the later rows' realised minus
          expected loss under the pretrained actor, standardised per task,
          clipped, around the label-mean weights of the realised returns),
          ``"outcome_session"`` (the session's other rows instead of the
          later ones), and its controls ``"outcome_label_mean"``,
          ``"outcome_shuffled"``, ``"outcome_flipped"``.
    q_lambda : float, default=0.7
        The paper's lambda.
    critic : SessionCritic, default=None
        The critic phase (phases 2 and 3) as one object. Unfitted: its
        parameters are the critics' settings (behaviour policy, network, TD
        learning and its stopping rule; see :class:`SessionCritic`), and
        ``fit`` trains a clone of it, ``critic_``. ``None`` means
        ``SessionCritic()``, the paper's settings. Searchable as
        ``critic__<name>`` (e.g. ``{"critic__gamma": [0.5, 0.9]}`` in
        :class:`~sklearn.model_selection.GridSearchCV`) once ``critic`` is a
        SessionCritic. Fitted (another RMTLClassifier's ``critic_``,
        possibly with another backbone, on the same feature columns and
        tasks): the critic phase is skipped and the refit uses it as is
        (paper Sec. 3.4).
    actor : MTLClassifier or FrozenEstimator, default=None
        The pretraining step given as an estimator. A fitted one is used as
        the pretrained actor as is (its encoder and network; its weights are
        not modified); an unfitted one is fitted on the same data as the
        pretraining step. Then ``backbone`` and the pretraining parameters
        (``backbone_params`` ... ``max_epochs``) are ignored. ``clone``
        (and so every search) unfits a fitted MTLClassifier; wrap it as
        ``sklearn.frozen.FrozenEstimator(fitted)`` to keep it through
        ``clone``, so that the candidates of a search share one pretraining.

    Attributes
    ----------
    classes_ : ndarray of shape (n_tasks, 2)
        Sorted observed labels of each task.
    n_tasks_ : int
        Number of tasks.
    task_names_ : ndarray of str of shape (n_tasks,)
        Task names (column names of a DataFrame ``y``).
    n_features_in_ : int
        Number of input columns.
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        Input column names, when X was a DataFrame with string names.
    encoder_ : FeatureEncoder
        The actor's feature encoder.
    net_ : skorch.NeuralNet
        The refitted actor (predictions come from it).
    backbone_params_ : dict
        Network sizes of the actor.
    device_ : str
        Torch device used.
    refit_improved_ : bool
        Whether the refit's weights were kept: False when, with early stopping
        and ``refit_keep_pretrained``, no refit check beat the pretrained
        weights by ``refit_validation_metric`` (the last ``history_["refit"]`` row
        then has ``restored_start=True``). Always True without early
        stopping or with ``refit_keep_pretrained=False``. False means the
        fitted model is the pretrained backbone: RMTL's weights changed
        nothing (``verbose`` says so at the end of the refit).
    label_weights_ : ndarray of shape (n_tasks, 2) or None
        With ``weighting="label_mean"``, the fixed weight of label 0 and
        label 1 of each task; None otherwise.
    critic_ : SessionCritic or None
        The fitted critics used in the refit: a fitted clone of ``critic``
        trained here, or the fitted ``critic`` given; ``None`` with
        ``weighting="constant"`` (without ``actor_update``) and no fitted
        ``critic``.
    history_ : dict
        Per-phase curves: ``"pretrain"`` and ``"refit"`` (per epoch
        ``train_loss``, ``valid_loss``, ``dur``, ``task_balance``) and
        ``"critic"`` (per epoch ``td_loss``; empty when the critic was given;
        with ``actor_update`` also ``actor_loss`` and, when rows are held
        out, ``actor_valid_loss`` and the last row's ``actor_best_at``);
        with ``retrain_on_all``, ``"pretrain_all"`` and ``"refit_all"`` hold
        the retraining on all rows.
    n_iter_ : int
        Epochs run in all phases together.

    See Also
    --------
    MTLClassifier : The baselines and the pretraining step.
    SessionCritic : The critic phase's settings and fitted critics.

    Notes
    -----
    The critics see each row's features and action only, so transitions need
    sessions to carry information across rows: without ``session_ids`` every
    row is a one-step session and Q reduces to the immediate reward.

    References
    ----------
    Z. Liu, J. Tian, Q. Cai, X. Zhao, J. Gao, S. Liu, D. Chen, T. He, D. Zheng,
    P. Jiang, K. Gai, "Multi-Task Recommendations with Reinforcement
    Learning", WWW 2023.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import RMTLClassifier, SessionCritic
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"item": rng.choice(["a", "b", "c"], 300),
    ...                   "position": np.tile(np.arange(10), 30)})
    >>> click = X["item"] == "a"
    >>> Y = np.column_stack([click, click & (rng.random(300) < 0.5)])
    >>> sessions = np.repeat(np.arange(30), 10)
    >>> small = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> clf = RMTLClassifier(backbone="sharedbottom", backbone_params=small,
    ...                      critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
    ...                      max_epochs=2, random_state=0)
    >>> clf.fit(X, Y, session_ids=sessions, timestamps=X["position"])
    RMTLClassifier(...)
    >>> clf.predict_proba(X).shape
    (300, 2)
    >>> bool((clf.loss_weights(X, Y) >= 1).all())
    True
    """

    _parameter_constraints: dict = {
        **MTLClassifier._parameter_constraints,
        "refit_max_epochs": [Interval(Integral, 0, None, closed="left"), None],
        "refit_lr": [Interval(Real, 0, None, closed="neither"), None],
        "refit_validation_interval": [Interval(Real, 0, 1, closed="right")],
        "refit_validation_metric": [SelectionOption()],
        "refit_keep_pretrained": ["boolean"],
        "actor_update": ["boolean"],
        "bc_alpha": [Interval(Real, 0, None, closed="left"), None],
        "weighting": [StrOptions(set(WEIGHTINGS))],
        "q_lambda": [Interval(Real, 0, None, closed="left")],
        "critic": [SessionCritic, None],
        "actor": [MTLClassifier, FrozenEstimator, None],
    }

    def __init__(
        self,
        *,
        backbone: str = "ple",
        backbone_params: dict[str, Any] | None = None,
        categorical_features: Any = "from_dtype",
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
        hash_buckets: dict[Any, int] | None = None,
        sequence_features: dict[Any, Any] | None = None,
        max_sequence_length: int = 50,
        task_weights: Any = None,
        task_balancing: str = "fixed",
        task_balancing_params: dict[str, Any] | None = None,
        task_space: dict[Any, Any] | None = None,
        max_epochs: int = 20,
        batch_size: int = BATCH_SIZE,
        lr: float = LEARNING_RATE,
        weight_decay: float = 0.0,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 3,
        validation_interval: float = 1.0,
        validation_metric: str = "loss",
        retrain_on_all: bool = False,
        device: str = "cpu",
        precision: str = "float32",
        distributed: bool = False,
        random_state: Any = None,
        verbose: int = 0,
        session_column: str | None = None,
        time_column: str | None = None,
        callbacks: list[Any] | None = None,
        refit_max_epochs: int | None = None,
        refit_lr: float | None = REFIT_LEARNING_RATE,
        refit_validation_interval: float = 0.25,
        refit_validation_metric: str = "loss",
        refit_keep_pretrained: bool = True,
        actor_update: bool = False,
        bc_alpha: float | None = BC_ALPHA,
        weighting: str = "rmtl",
        q_lambda: float = Q_LAMBDA,
        critic: SessionCritic | None = None,
        actor: MTLClassifier | None = None,
    ) -> None:
        super().__init__(
            backbone=backbone,
            backbone_params=backbone_params,
            categorical_features=categorical_features,
            min_frequency=min_frequency,
            max_categories=max_categories,
            hash_buckets=hash_buckets,
            sequence_features=sequence_features,
            max_sequence_length=max_sequence_length,
            task_weights=task_weights,
            task_balancing=task_balancing,
            task_balancing_params=task_balancing_params,
            task_space=task_space,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            validation_interval=validation_interval,
            validation_metric=validation_metric,
            retrain_on_all=retrain_on_all,
            device=device,
            precision=precision,
            distributed=distributed,
            random_state=random_state,
            verbose=verbose,
            callbacks=callbacks,
            session_column=session_column,
            time_column=time_column,
        )
        self.refit_max_epochs = refit_max_epochs
        self.refit_lr = refit_lr
        self.refit_validation_interval = refit_validation_interval
        self.refit_validation_metric = refit_validation_metric
        self.refit_keep_pretrained = refit_keep_pretrained
        self.actor_update = actor_update
        self.bc_alpha = bc_alpha
        self.weighting = weighting
        self.q_lambda = q_lambda
        self.critic = critic
        self.actor = actor

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        settings = {
            new: state.pop(old)
            for old, new in FORMER_RMTL_PARAMETERS.items()
            if old in state
        }
        if settings:  # pickled when the critic settings were parameters here
            state["critic"] = former_critic(
                state.get("critic"), state.get("critic_"), SessionCritic(**settings)
            )
        super().__setstate__(state)

    # ---------------------------------------------------------- parameters
    def _validate_params(self) -> None:
        if isinstance(self.backbone, MTLClassifier):
            # Before scikit-learn's check, whose message cannot name the fix.
            raise InvalidParameterError(
                f"The 'backbone' parameter of {type(self).__name__} must be a "
                f"backbone name among {sorted(BACKBONES)}, got an estimator "
                f"({type(self.backbone).__name__}). Pass a fitted or unfitted "
                "MTLClassifier as actor=... instead."
            )
        super()._validate_params()

    def _given_actor(self) -> MTLClassifier | None:
        """The given actor (``actor``, unwrapped from a FrozenEstimator), if any."""
        if not isinstance(self.actor, FrozenEstimator):
            return self.actor
        actor = self.actor.estimator
        if not (isinstance(actor, MTLClassifier) and actor.__sklearn_is_fitted__()):
            raise ValueError(
                "actor=FrozenEstimator(...) must wrap a fitted MTLClassifier, got "
                f"{'an unfitted ' if isinstance(actor, MTLClassifier) else ''}"
                f"{type(actor).__name__}. Fit it first, or pass it unwrapped to "
                "have it fitted here."
            )
        return actor

    def _critic_spec(self) -> SessionCritic:
        """The ``critic`` parameter; ``None`` is ``SessionCritic()``."""
        return SessionCritic() if self.critic is None else self.critic

    def _given_critic(self) -> SessionCritic | None:
        """The fitted critics given as ``critic``, if any (no critic phase)."""
        critic = self.critic
        fitted = critic is not None and critic.__sklearn_is_fitted__()
        return critic if fitted else None

    def _backbone_name(self) -> str:
        given = self._given_actor()
        return str(self.backbone if given is None else given.backbone)

    def _selection_params(self) -> dict[str, str]:
        # A given MTLClassifier pretrains with its own settings.
        given = self._given_actor() is not None
        names = {} if given else super()._selection_params()
        return {**names, "refit_validation_metric": self.refit_validation_metric}

    def _check_tasks(self, task_names: np.ndarray) -> None:
        # A given actor or critic must model y's tasks in y's order: with
        # only their number compared, (buy, click) would silently reuse the
        # heads of (click, buy).
        critic = self._given_critic()
        given = [("critic", None if critic is None else critic.task_names_)]
        actor = self._given_actor()
        if actor is not None:
            given.append(("actor", getattr(actor, "task_names_", None)))
        for name, fitted in given:
            if fitted is not None:
                check_same_tasks(name, fitted, task_names)

    def _check_task_space(self, task_names: np.ndarray) -> None:
        super()._check_task_space(task_names)
        actor = self._given_actor()
        if actor is None:
            return
        ours = resolve_task_space(self.task_space, task_names)
        theirs = resolve_task_space(actor.task_space, task_names)
        if ours != theirs:
            # The refit continues the actor's network: a task learned over
            # all rows and refit on its space only (or the reverse) would
            # change its meaning (P(purchase | x) vs P(purchase | click, x))
            # between the phases.
            raise ValueError(
                f"The actor's task_space ({actor.task_space!r}) differs from this "
                f"estimator's ({self.task_space!r}); the pretraining and the "
                "refit must train each task on the same rows. Give both the same "
                "task_space."
            )

    def _check_params(self, n_tasks: int) -> tuple[dict[str, Any], np.ndarray]:
        self._critic_spec()._check_params()
        if self.retrain_on_all and self.actor_update:
            raise ValueError(
                "retrain_on_all=True cannot be combined with actor_update=True: "
                "the critics' actor updates are not chosen on the held-out rows, "
                "so there is no length to replay on all rows. Set one of them "
                "to False."
            )
        if self.actor_update and self._critic_spec().cv is not None:
            raise ValueError(
                "actor_update=True cannot be combined with cross-fitted critics "
                f"(critic cv={self._critic_spec().cv}): the actor takes its steps "
                "against one critic, and cross-fitting trains one per fold. Set "
                "critic__cv=None or actor_update=False."
            )
        return super()._check_params(n_tasks)

    def _network_params(self, n_tasks: int) -> dict[str, Any]:
        given = self._given_actor()
        if given is None:
            return super()._network_params(n_tasks)
        # Its sizes; the refit uses our task weights.
        return given._network_params(n_tasks)  # its tasks: _check_tasks

    # ----------------------------------------------------------------- fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(
        self,
        X: Any,
        y: Any = None,
        session_ids: Any = None,
        timestamps: Any = None,
        sample_weight: Any = None,
    ) -> RMTLClassifier:
        """Pretrain, learn the critics on the session MDP, and refit.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features) or \
                ParquetSource
            Features; see ``categorical_features``. A
            :class:`~sklearn_rmtl.parquet.ParquetSource` fits out of core
            (its columns are y, session_ids, timestamps and sample_weight;
            the file sorted by session, then time; see the docs' scaling
            page for what is supported).
        y : {array-like, DataFrame} of shape (n_samples, n_tasks), default=None
            Required unless X is a ParquetSource. Two labels per column
            (the larger one is positive). A missing label (NaN, None,
            ``pd.NA``) is left out of the pretraining and refit losses and
            of the critics' TD loss of its task; the row stays a state of
            its session. So is a label outside its task's ``task_space``.
        session_ids : array-like of shape (n_samples,), default=None
            Session of each row (ints or strings). ``None``: every row is a
            one-step session (a warning says RMTL then has no sequence to
            learn from).
        timestamps : array-like of shape (n_samples,), default=None
            Time of each row (numbers or datetimes), ordering rows inside a
            session (ties keep row order); ``None``: row order.
        sample_weight : array-like of shape (n_samples,) or (n_samples, \
                n_tasks), default=None
            Non-negative weight of each row (or row and task) in pretraining
            and refit, multiplied with RMTL's weights, and in the critics'
            TD loss with the critic's ``use_sample_weight=True``. Each
            task's loss is normalised by the sum of its weights (user guide,
            "Sample weights"). Meta-estimators route it only after
            ``set_fit_request(sample_weight=True)``.

        Returns
        -------
        self : RMTLClassifier
            The fitted estimator.
        """
        return self._fit(
            X,
            y,
            session_ids=session_ids,
            timestamps=timestamps,
            sample_weight=sample_weight,
        )

    def _fit_state(self, rows: Rows) -> dict[str, Any]:
        data = self._prepare(rows)
        params, task_weights = self._check_params(data.n_tasks)
        given_critic = self._given_critic()
        if given_critic is not None:
            check_critic_features(given_critic, data.block_labels(0).X)
        train_critic_here = given_critic is None and (
            WEIGHTINGS[self.weighting].needs_critic or self.actor_update
        )
        if train_critic_here and not data.rows.has_sessions:
            warnings.warn(
                "session_ids is None: every row is treated as a one-step session, "
                "so the critics only learn immediate rewards and RMTL has no "
                "sequence to learn from. Pass session_ids (and timestamps).",
                UserWarning,
                stacklevel=3,
            )
        encoder, pretrained, history = self._pretrain(data, params, task_weights)
        actor = copy.deepcopy(pretrained)
        dp = DataParallel.current(self.distributed)
        if dp is not None:
            # A given actor may have been fitted apart on each process (its
            # own distributed=False and random_state=None): start from one.
            dp.broadcast_module(actor)

        session_critic = given_critic
        critic_history: list[dict[str, Any]] = []
        if train_critic_here:
            self._log("critic")
            session_critic = self._train_critics(data, actor, params, task_weights)
            critic_history = session_critic.history_

        self._log("refit")
        net, label_weights = self._refit(
            data, params, task_weights, actor, session_critic
        )
        refit_history = net_history(net)
        if any(row.get("restored_start") for row in refit_history):
            self._log(
                "refit kept the pretrained weights: no refit check beat them on "
                "the held-out rows (refit_improved_=False), so the model is the "
                "pretrained backbone"
            )
        history = {
            "pretrain": history["pretrain"],
            **{k: v for k, v in history.items() if k == "pretrain_all"},
            "critic": critic_history,
            "refit": refit_history,
        }
        if self.retrain_on_all and data.has_holdout:
            self._log("retrain on all rows")
            net, label_weights = self._retrain_on_all(
                data, params, task_weights, history, session_critic
            )
        return fitted_rmtl_state(
            data, encoder, net, params, session_critic, label_weights, history
        )

    def _log(self, phase: str) -> None:
        if self.verbose:
            print(f"[RMTLClassifier] {phase}")

    def _pretrain(
        self, data: FitData, params: dict[str, Any], task_weights: np.ndarray
    ) -> tuple[FeatureEncoder, torch.nn.Module, dict[str, list[dict[str, Any]]]]:
        """Phase 1: the actor, trained here or taken from ``actor``.

        Returns the encoder, the actor's network fitted without the held-out
        rows and its history (``"pretrain"``, and ``"pretrain_all"`` when a
        given actor was already retrained on all rows).
        """
        given = self._given_actor()
        if given is not None:
            self._log("pretrain (the given actor)")
            return given._pretrained_on(data, name="actor")
        self._log("pretrain")
        encoder, net = self._fit_backbone(data, params, task_weights)
        return encoder, net.module_, {"pretrain": net_history(net)}

    def _retrain_on_all(
        self,
        data: FitData,
        params: dict[str, Any],
        task_weights: np.ndarray,
        history: dict[str, list[dict[str, Any]]],
        critic: SessionCritic | None,
    ) -> tuple[MultiTaskNet, np.ndarray | None]:
        """``retrain_on_all``: pretraining and refit again, on all rows.

        Each phase takes as many steps as early stopping chose for it on the
        held-out rows; the critics are those trained for the first refit.
        A given actor already retrained on all rows is reused as it is.
        """
        given = self._given_actor()
        owner = self if given is None else given
        if "pretrain_all" in history:
            actor = copy.deepcopy(owner.net_.module_)
            dp = DataParallel.current(self.distributed)
            if dp is not None:  # as the held-out actor in _fit_state
                dp.broadcast_module(actor)
        else:
            owner_params, owner_weights = owner._check_params(data.n_tasks)
            actor = owner._on_all_rows(
                data, history, "pretrain", owner_params, owner_weights
            ).module_
        # A refit that kept the pretrained weights takes 0 steps.
        steps = selected_steps(history["refit"]) or 0
        net, label_weights = self._refit(
            data, params, task_weights, actor, critic, steps=steps
        )
        history["refit_all"] = net_history(net)
        return net, label_weights

    def _train_critics(
        self,
        data: FitData,
        actor: torch.nn.Module,
        params: dict[str, Any],
        task_weights: np.ndarray,
    ) -> SessionCritic:
        """Phases 2 and 3: build the transitions and fit a clone of ``critic``.

        With ``actor_update`` and held-out rows, the actor's updates are
        selected on them like a refit (its interval, metric and
        ``refit_keep_pretrained``; ``n_iter_no_change``).
        """
        critic = clone(self._critic_spec())
        checkpoint = None
        if self.actor_update and data.has_holdout:
            # NOTE[DIFF]: the paper's DDPG actor takes every update. Without a
            # hold-out check it keeps learning the training rows after early
            # stopping's epoch (D-PLE's validation logloss 0.35 -> 0.66 with
            # the BC term alone, observed), so it is selected like the refit.
            checkpoint = held_out_checkpoint(
                data,
                selection=check_selection(
                    "refit_validation_metric",
                    self.refit_validation_metric,
                    data.task_names,
                ),
                interval=self.refit_validation_interval,
                patience=self.n_iter_no_change,
                start_is_candidate=self.refit_keep_pretrained,
                phase="critic",
                lr_name="refit_lr",
                verbose=self.verbose,
                data_parallel=DataParallel.current(self.distributed),
            )
        return fit_critics(
            critic,
            data,
            actor,
            embedding_dim=params["embedding_dim"],
            config=TDConfig.from_params(
                critic.get_params(), self.get_params(deep=False)
            ),
            seed=data.seed + _CRITIC_SEED,
            actor_checkpoint=checkpoint,
            criterion=None
            if checkpoint is None
            else WeightedMultiTaskBCE(task_weights.tolist()),
        )

    def _refit(
        self,
        data: FitData,
        params: dict[str, Any],
        task_weights: np.ndarray,
        actor: torch.nn.Module,
        critic: SessionCritic | None,
        steps: int | None = None,
    ) -> tuple[MultiTaskNet, np.ndarray | None]:
        """Phase 4: continue training the actor with Q-derived weights.

        Returns the net and, for ``weighting="label_mean"``, the fixed
        per-task, per-label weights. ``steps`` refits on all rows for that
        many steps instead (``retrain_on_all``).
        """
        max_epochs = (
            self.max_epochs if self.refit_max_epochs is None else self.refit_max_epochs
        )
        refit: dict[str, Any] = {
            "max_epochs": max_epochs,
            "seed_offset": _REFIT_SEED,
            "init_module": actor,
            "lr": self.lr if self.refit_lr is None else self.refit_lr,
            "interval": self.refit_validation_interval,
            "selection": check_selection(
                "refit_validation_metric",
                self.refit_validation_metric,
                data.task_names,
            ),
            "start_is_candidate": self.refit_keep_pretrained,
            "steps": steps,
        }
        plan = plan_refit(
            data,
            actor,
            critic,
            weighting=self.weighting,
            q_lambda=self.q_lambda,
            precision=self.precision,
            gamma=self._critic_spec().gamma,
            seed=data.seed + _REFIT_SEED,
        )
        net = self._train_net(
            data,
            plan.net_cls,
            params,
            task_weights,
            extra=plan.extra,
            **plan.net_kwargs,
            **refit,
        )
        return net, plan.label_weights

    # ------------------------------------------------------------- inspect
    def loss_weights(
        self,
        X: Any,
        y: Any,
        session_ids: Any = None,
        timestamps: Any = None,
    ) -> np.ndarray:
        """Per-row, per-task BCE weights of the refit for these rows.

        The weights are ``w(Q_k(s, pi(s)_k), y)`` of the ``weighting``, with
        ``pi`` the fitted actor and ``Q`` the critics (``critic_``). They
        depend on each row's features, prediction and labels only; sessions
        entered the weights through the critics' training. With
        ``weighting="label_mean"`` they are the fixed ``label_weights_`` of
        each row's labels.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_)
            Features with the columns seen in :meth:`fit`, in memory (a
            ``ParquetSource`` is not accepted here).
        y : {array-like, DataFrame} of shape (n_samples, n_tasks)
            Labels, from ``classes_``; a missing label (NaN, None, ``pd.NA``)
            gets a NaN weight, as it has no loss to weigh, and so does a
            label outside its task's ``task_space``. A DataFrame's
            columns are matched to ``task_names_`` by name.
        session_ids : array-like of shape (n_samples,), default=None
            Session of each row. With cross-fitted critics (``critic`` with
            ``cv``) a row is weighted by the critics of its session's fold,
            as in the refit; without, by the mean of every fold's critics.
            Otherwise checked for length only.
        timestamps : array-like of shape (n_samples,), default=None
            Accepted for symmetry with :meth:`fit`; checked for length only.

        Returns
        -------
        weights : ndarray of shape (n_samples, n_tasks)
            In the input row order; all ones with ``weighting="constant"``
            and no critic; NaN where the label is missing. The user's
            ``sample_weight`` of fit is not included (it multiplies these).
        """
        check_is_fitted(self)
        spec = WEIGHTINGS[self.weighting]
        if (spec.fixed and not spec.label_mean) or spec.outcome is not None:
            raise ValueError(
                f"weighting={self.weighting!r} fixes each training row's weight "
                "from its session (a control or a realised outcome), so it is no "
                "function of a row's features, prediction and labels that "
                "loss_weights could evaluate; it describes 'rmtl', 'label_q', "
                "'neg_q', 'constant' and 'label_mean'."
            )
        X, session_ids, timestamps = self._meta_columns(X, session_ids, timestamps)
        X, y01 = labeled_rows(
            X,
            y,
            self.classes_,
            self.task_names_,
            session_ids=session_ids,
            timestamps=timestamps,
        )
        # Labels outside their task's space weigh nothing, as in the refit.
        y01 = task_space_labels(self, y01)
        missing = np.isnan(y01)
        y01 = np.where(missing, np.float32(0.0), y01)
        means = getattr(self, "label_weights_", None)  # absent in older pickles
        if means is not None:
            weights = np.where(y01 > 0.5, means[:, 1], means[:, 0])
        else:
            proba = self.predict_proba(X)
            if self.critic_ is None:
                weights = np.ones_like(proba)
            else:
                critic = self.critic_
                inputs = critic.encode(X)
                if session_ids is not None:
                    ids = check_metadata(
                        session_ids, len(y01), name="session_ids", sortable=False
                    )
                    inputs = critic.route(inputs, ids)
                weights = critic.row_weights(
                    inputs,
                    proba,
                    y01,
                    self.weighting,
                    self.q_lambda,
                    self.precision,
                )
                weights = weights.numpy().astype(np.float64)
        return np.where(missing, np.nan, weights)


def fitted_rmtl_state(
    data: FitData,
    encoder: FeatureEncoder,
    net: MultiTaskNet,
    params: dict[str, Any],
    critic: SessionCritic | None,
    label_weights: np.ndarray | None,
    history: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """An RMTL fit's fitted attributes."""
    return fitted_mtl_state(
        data,
        encoder,
        net,
        params,
        history,
        critic_=critic,
        refit_improved_=not any(r.get("restored_start") for r in history["refit"]),
        label_weights_=label_weights,
    )
