"""MTLClassifier: a multi-task backbone trained as a scikit-learn estimator."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_rmtl._defaults import BATCH_SIZE, LEARNING_RATE
from sklearn_rmtl._distributed import (
    DISTRIBUTED_BALANCINGS,
    agreed_seed,
    check_same_data,
    ensure_process_group,
    rank_device,
)
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._fit_data import FitData, encode_with, prepare_fit_data
from sklearn_rmtl._pickling import VersionedPickleMixin
from sklearn_rmtl._precision import PRECISIONS, check_precision
from sklearn_rmtl._rows import ArrayRows, Rows
from sklearn_rmtl._skorch_net import MultiTaskNet
from sklearn_rmtl._task_space import resolve_task_space, with_task_space
from sklearn_rmtl._task_view import TaskView
from sklearn_rmtl._training import (
    SelectionOption,
    check_selection,
    check_selections_defined,
    net_history,
    selected_steps,
    train_net,
)
from sklearn_rmtl._validation import (
    check_callbacks,
    check_task_weights,
    resolve_device,
    to_pandas,
)
from sklearn_rmtl.backbones import BACKBONES, resolve_backbone_params
from sklearn_rmtl.balancing import BALANCINGS, resolve_balancing_params
from sklearn_rmtl.parquet import ParquetSource

# Rows encoded and scored at a time in predict_proba: bounds the memory of the
# encoded copy for arbitrarily many rows.
_PREDICT_CHUNK = 65_536

# With retrain_on_all: the network chosen on the held-out rows, before the
# retraining (weights only; kept in pickles, not in saved files).
_HOLDOUT_KEY = "_holdout_state"


class MTLClassifier(VersionedPickleMixin, ClassifierMixin, BaseEstimator):
    """Multi-task classifier: one network predicts K binary tasks at once.

    The paper's baselines (SingleTask, SharedBottom, ESMM, MMoE, PLE, plus
    OMoE, AITM, PEPNet and STEM) trained with a fixed weighting of the per-task binary
    cross-entropies. It is also the pretraining step (the actor) of
    :class:`RMTLClassifier`.

    Features are encoded by a :class:`FeatureEncoder` (categorical columns to
    embedding codes, numerical columns standardised), embedded, and fed to the
    backbone; the network is a :class:`skorch.NeuralNet` built in :meth:`fit`.

    Parameters
    ----------
    backbone : {"singletask", "sharedbottom", "esmm", "mmoe", "ple", "omoe", \
            "aitm", "pepnet", "stem"}, default="ple"
        Multi-task architecture (see :mod:`sklearn_rmtl.backbones`). "esmm"
        and "aitm" model a funnel and need at least two tasks, in funnel
        order (e.g. click then purchase). "stem" holds the embedding tables
        K + 1 times (a shared set and one per task).
    backbone_params : dict, default=None
        Network sizes overriding the paper's defaults: ``embedding_dim``
        (128), ``bottom_dims`` ((512, 256)), ``tower_dims`` ((128, 64)),
        ``dropout`` (0.2), and where the backbone has experts ``n_experts``
        (8) or ``n_shared_experts`` / ``n_specific_experts`` (4 / 4 for PLE
        and STEM);
        PEPNet's prior fields ``gate_fields`` / ``ppnet_fields`` (column
        names; None: every categorical column) and ``gate_hidden_dim`` (64);
        ESMM's ESCM2 regulariser ``counterfactual`` (None, ``"ipw"`` or
        ``"dr"``), ``counterfactual_weight`` (0.5) and ``min_propensity``
        (0.05), see :class:`~sklearn_rmtl.backbones.ESMM`.
        Keys the backbone does not use raise an error.
    categorical_features : "from_dtype", array-like or None, default="from_dtype"
        Which columns are categorical; see :class:`FeatureEncoder`.
    min_frequency : int or float, default=None
        Categories rarer than this share one embedding; see
        :class:`FeatureEncoder`.
    max_categories : int, default=None
        Largest number of categories kept per column; see
        :class:`FeatureEncoder`.
    hash_buckets : dict of {str, int} to int, default=None
        Id columns encoded by hashing into a fixed number of buckets instead
        of a vocabulary, e.g. ``{"itemid": 2**18}``: memory bounded whatever
        the number of ids, unseen ids hashed like known ones, at the cost of
        shared embeddings where ids collide; see :class:`FeatureEncoder`.
    sequence_features : dict of str to str or None, default=None
        Columns whose cells are lists of ids, oldest first, each mapped to
        the categorical column whose vocabulary and embedding table it
        shares (a user's earlier items to the item column, e.g.
        ``{"item_history": "itemid"}``; see
        :func:`sklearn_rmtl.datasets.history_column`), or to ``None`` for a
        vocabulary of its own (a multi-valued field such as tags). Each is
        pooled into one embedding (``backbone_params["sequence_pooling"]``:
        target attention by the column it shares by default, the mean for
        a field of its own) that joins the state every backbone reads; see
        :class:`FeatureEncoder`.
    max_sequence_length : int, default=50
        Most recent elements kept per sequence cell.
    task_weights : array-like of shape (n_tasks,), default=None
        Fixed non-negative weight of each task's loss; the loss is
        ``sum_k task_weights[k] * BCE_k``. ``None`` means ``1 / n_tasks`` each
        (the mean over tasks). Task balancing multiplies them (see
        ``task_balancing``). Read by position, in y's column order: a pandas
        Series labelled with task names is refused.
    task_balancing : {"fixed", "uncertainty", "gradnorm", "dwa", "pcgrad"}, \
            default="fixed"
        How each training step combines the per-task losses (see
        :mod:`sklearn_rmtl.balancing` and the user guide): ``task_weights``
        as they are; learned homoscedastic-uncertainty weights (Kendall et
        al. 2018); GradNorm (Chen et al. 2018); Dynamic Weight Average (Liu
        et al. 2019); or PCGrad's projection of conflicting gradients on the
        shared parameters (Yu et al. 2020). The balance weights multiply
        ``task_weights`` (GradNorm learns all of them and refuses
        ``task_weights``) and any row weights. Validation losses stay the
        ``task_weights``-weighted BCE.
    task_balancing_params : dict, default=None
        Hyper-parameters of ``task_balancing``: ``weight_lr`` (uncertainty,
        gradnorm; ``None``: ``lr``), ``alpha`` (gradnorm, 1.5),
        ``temperature`` (dwa, 2.0). Keys the method does not use raise an
        error.
    task_space : dict or None, default=None
        Funnel-aware losses: ``{task: conditioning_task}`` trains ``task``
        only on the rows where ``conditioning_task`` is positive, e.g.
        ``{"purchase": "click"}`` learns conversion on clicks. Tasks are
        y's column names (``task_names_``) or positions in y's columns.
        Outside its space a label is treated exactly as a missing label
        (NaN) everywhere training reads labels: the loss and its sample
        weights, task balancing, and early stopping's validation loss and
        metrics, which are computed on the held-out rows of the task's
        space; a missing or negative conditioning label puts the row
        outside. Chains (purchase on cart on click) are followed, so the
        row must be positive at every earlier step; a task conditioned on
        itself, a cycle and the "esmm" backbone (which models the funnel
        over all rows itself) are refused. ``predict_proba`` still scores
        every row, but the task's probability is then conditional,
        P(purchase = 1 | click = 1, x) (a CVR, not ESMM's CTCVR); multiply
        it by the click probability for the entire-space P(click and
        purchase | x), and score it on the rows where click is positive
        only (see the user guide, "Funnel-aware losses").
    max_epochs : int, default=20
        Maximum number of passes over the training rows.
    batch_size : int, default=2048
        Rows per gradient step (the authors' code).
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=0.0
        Adam L2 penalty.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows, stop when the validation
        loss has not improved for ``n_iter_no_change`` epochs and restore the
        weights of the best validation check. With ``timestamps`` the latest
        rows are held out, otherwise a seeded random subset.
    validation_fraction : float, default=0.1
        Fraction of rows held out for early stopping.
    n_iter_no_change : int, default=3
        Epochs without improvement of the validation loss before stopping.
    validation_interval : float in (0, 1], default=1.0
        Fraction of an epoch between validation checks of early stopping:
        1.0 checks at every epoch's end, 0.25 every quarter epoch (and at
        the end), so that the kept weights can come from inside an epoch.
        Patience still counts epochs.
    validation_metric : {"loss", "auc", "gauc"} or str, default="loss"
        What early stopping's checks compare: the validation BCE (lower is
        better), the mean per-task ROC AUC, or the mean per-task session
        GAUC (needs ``session_ids``); ``"<metric>:<task>"`` (e.g.
        ``"auc:purchase"``, a task name of y) compares that task's value
        only. Stopping on the loss can end training before the ranking has
        peaked.
    retrain_on_all : bool, default=False
        After early stopping has chosen how long to train, train the network
        afresh on all rows, the held-out ones included, for as many
        optimizer steps as led to the kept weights, and keep that network.
        The held-out rows are the latest ones, so this trains on the data
        closest to what is predicted next, at about twice the cost (user
        guide, "Training on the held-out rows too"). Without early stopping
        it changes nothing.
    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Where to train: "auto" uses a CUDA GPU when torch sees one; a CUDA
        device string such as "cuda:1" is accepted (as by
        :func:`sklearn_rmtl.persistence.load`). Other torch devices ("mps",
        "xpu", "meta"), and a GPU this machine lacks, are refused when fit
        starts.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        The dtype of the network's matrix products in training and
        prediction: "bfloat16" runs the forward passes under
        :func:`torch.autocast` (weights, Adam's state and the loss stay
        float32), several times faster on processors with AVX512-BF16 or
        AMX and on recent GPUs, at a small cost in accuracy (see the user
        guide's "Mixed precision"). "float16" does the same in float16
        with loss scaling (:class:`torch.amp.GradScaler`, which keeps its
        small gradients from underflowing and skips a step whose gradients
        overflowed); it is meant for CUDA GPUs, including those without
        bfloat16. A warning says when the device would only emulate the
        dtype (float16 on any CPU). Reproducible for a seed like float32.
    distributed : bool, default=False
        Data-parallel training over the processes of ``torch.distributed``
        (one per GPU, launched with ``torchrun --nproc-per-node N
        script.py``; the process group is initialised from torchrun's
        environment unless the script did it). Every process calls ``fit``
        on the same full data; each takes its share of every batch, the
        gradients are combined into the whole batch's, and every process
        ends with the same fitted estimator, equal to a one-process fit up
        to float rounding (without dropout or batch normalisation). With
        ``device="cuda"`` each process uses ``cuda:LOCAL_RANK``. Only
        ``task_balancing="fixed"`` is supported. See the user guide's
        "Scaling" page, "Multi-GPU / multi-process training".
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling, dropout and the validation
        split. An int gives identical predictions across fits on CPU.
    verbose : int, default=0
        0 prints nothing; 1 shows a progress bar over each epoch's batches
        with the running loss, and a table of train and validation losses
        per epoch (skorch's).
    session_column : str or None, default=None
        Name of a column of X that holds each row's session: ``fit`` (and
        ``loss_weights``) read ``session_ids`` from it, and every method
        drops it from X before encoding, so that tools without metadata
        routing (Optuna, MLflow's autolog, imbalanced-learn pipelines) pass
        sessions with X. Giving ``session_ids`` as well is an error.
    time_column : str or None, default=None
        The same for the rows' ``timestamps``.
    callbacks : list of skorch callbacks or (name, callback) tuples, default=None
        Extra skorch callbacks, e.g. ``skorch.callbacks.LRScheduler``. They
        run after the library's own, so that in ``on_epoch_end`` the epoch's
        history row already holds ``valid_loss``, ``valid_loss_best`` (for
        ``skorch.callbacks.Checkpoint(monitor="valid_loss_best")``) and the
        selection metric's ``valid_<metric>``; early stopping ends training
        after they have seen the epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_tasks, 2)
        Sorted labels of each task, read from its observed (not missing)
        labels; ``classes_[k, 1]`` is the positive one.
    n_tasks_ : int
        Number of tasks K.
    task_names_ : ndarray of str of shape (n_tasks,)
        Column names of a DataFrame ``y``, else ``"task_0"``...
    n_features_in_ : int
        Number of input columns seen in :meth:`fit`.
    feature_names_in_ : ndarray of str of shape (n_features_in_,)
        Input column names, when X was a DataFrame with string names.
    encoder_ : FeatureEncoder
        The fitted feature encoder.
    net_ : skorch.NeuralNet
        The fitted skorch net; ``net_.module_`` is the torch network
        (:class:`~sklearn_rmtl._torch_module.MultiTaskModule`).
    backbone_params_ : dict
        The network sizes used (``backbone_params`` merged over the defaults).
    device_ : str
        The torch device trained on (this process's, with ``distributed``).
    history_ : dict
        ``{"pretrain": [...]}``, one dict per epoch with ``train_loss``,
        ``dur`` (seconds) and, with early stopping, at the epoch's end,
        ``valid_loss`` with ``valid_loss_per_task`` and, when
        ``validation_metric`` is a ranking metric, ``valid_auc`` /
        ``valid_gauc`` (mean over tasks) with ``valid_auc_per_task`` /
        ``valid_gauc_per_task``; the last row also has ``best_at``, the
        position of the kept weights in epochs (e.g. 2.25), and
        ``best_step``, the optimizer steps to them. With ``retrain_on_all``,
        ``"pretrain_all"`` has the rows of the retraining on all rows (its
        last row records ``steps``). Values that
        ``callbacks`` record (e.g. skorch's ``EpochScoring``) are kept too.
        Every row has ``task_balance``, the effective per-task loss weights
        at the epoch's end (see ``task_balancing``).
    n_iter_ : int
        Number of epochs run.

    See Also
    --------
    RMTLClassifier : The same backbones refit with RL-derived loss weights.
    FeatureEncoder : The feature encoding used in front of the network.

    Notes
    -----
    ``predict_proba`` returns an array of shape (n_samples, n_tasks) with the
    probability of each task's positive label, not sklearn's list of
    per-output (n, 2) arrays; ``predict`` returns (n_samples, n_tasks) labels.
    Predictions are computed in chunks, so memory stays bounded for any
    number of rows.

    References
    ----------
    Z. Liu et al., "Multi-Task Recommendations with Reinforcement Learning",
    WWW 2023.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import MTLClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"item": rng.choice(["a", "b", "c"], 200),
    ...                   "price": rng.normal(size=200)})
    >>> Y = np.column_stack([X["item"] == "a", (X["item"] == "a") & (X["price"] > 0)])
    >>> clf = MTLClassifier(backbone="mmoe", max_epochs=3, random_state=0,
    ...                     backbone_params={"embedding_dim": 8, "bottom_dims": (16,),
    ...                                      "tower_dims": (8,), "n_experts": 2})
    >>> clf.fit(X, Y).predict_proba(X).shape
    (200, 2)
    """

    # Routed meta-estimators pass these without ``set_fit_request``;
    # ``sample_weight`` follows sklearn's convention and must be requested.
    __metadata_request__fit = {"session_ids": True, "timestamps": True}

    _parameter_constraints: dict = {
        "backbone": [StrOptions(set(BACKBONES))],
        "backbone_params": [dict, None],
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "min_frequency": FeatureEncoder._parameter_constraints["min_frequency"],
        "max_categories": FeatureEncoder._parameter_constraints["max_categories"],
        "hash_buckets": FeatureEncoder._parameter_constraints["hash_buckets"],
        "sequence_features": FeatureEncoder._parameter_constraints["sequence_features"],
        "max_sequence_length": FeatureEncoder._parameter_constraints[
            "max_sequence_length"
        ],
        "task_weights": ["array-like", None],
        "task_balancing": [StrOptions(set(BALANCINGS))],
        "task_balancing_params": [dict, None],
        "task_space": [dict, None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "validation_interval": [Interval(Real, 0, 1, closed="right")],
        "validation_metric": [SelectionOption()],
        "retrain_on_all": ["boolean"],
        # Checked in fit (resolve_device): "auto", "cpu" or a CUDA device.
        "device": [str],
        "precision": [StrOptions(set(PRECISIONS))],
        "distributed": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [list, None],
        "session_column": [str, None],
        "time_column": [str, None],
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
    ) -> None:
        self.backbone = backbone
        self.backbone_params = backbone_params
        self.categorical_features = categorical_features
        self.min_frequency = min_frequency
        self.max_categories = max_categories
        self.hash_buckets = hash_buckets
        self.sequence_features = sequence_features
        self.max_sequence_length = max_sequence_length
        self.task_weights = task_weights
        self.task_balancing = task_balancing
        self.task_balancing_params = task_balancing_params
        self.task_space = task_space
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.validation_interval = validation_interval
        self.validation_metric = validation_metric
        self.retrain_on_all = retrain_on_all
        self.device = device
        self.precision = precision
        self.distributed = distributed
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks
        self.session_column = session_column
        self.time_column = time_column

    # ------------------------------------------------------------------ fit
    def _check_tasks(self, task_names: np.ndarray) -> None:
        """Check given fitted components against y's tasks (RMTL has some)."""

    def _check_task_space(self, task_names: np.ndarray) -> None:
        """Refuse a ``task_space`` that the backbone cannot train (y's tasks)."""
        if resolve_task_space(self.task_space, task_names) and (
            self._backbone_name() == "esmm"
        ):
            raise ValueError(
                "task_space cannot be combined with backbone='esmm': ESMM models "
                "the funnel itself, its later tasks being products of the "
                "earlier ones (P(click and purchase | x)) learned on every row, "
                "which training on a task's space only would contradict. Use "
                "ESMM without task_space (its labels over all rows), or another "
                "backbone with task_space."
            )

    def _check_params(self, n_tasks: int) -> tuple[dict[str, Any], np.ndarray]:
        """Cross-parameter checks that need the data; raise before training.

        Returns the full backbone sizes and the per-task loss weights.
        """
        params = self._network_params(n_tasks)
        task_weights = self._task_weights(n_tasks)
        self._check_balancing()
        return params, task_weights

    def _check_balancing(self) -> None:
        resolve_balancing_params(self.task_balancing, self.task_balancing_params)
        if self.distributed and self.task_balancing not in DISTRIBUTED_BALANCINGS:
            raise ValueError(
                f"task_balancing={self.task_balancing!r} is not supported with "
                "distributed=True: it combines whole-batch per-task gradients "
                "or learns weights of its own, which a process holding a share "
                "of each batch cannot reproduce. Use task_balancing='fixed' "
                "(with task_weights), or distributed=False."
            )
        if (
            self.task_weights is not None
            and not BALANCINGS[self.task_balancing].uses_task_weights
        ):
            raise ValueError(
                f"task_weights has no effect with task_balancing="
                f"{self.task_balancing!r}, which learns every task's weight "
                "(a fixed scaling of a task would be absorbed); leave "
                "task_weights=None or use another task_balancing."
            )

    def _network_params(self, n_tasks: int) -> dict[str, Any]:
        params = resolve_backbone_params(self.backbone, self.backbone_params)
        min_tasks = BACKBONES[self.backbone].min_tasks
        if n_tasks < min_tasks:
            raise ValueError(
                f"backbone={self.backbone!r} models a funnel and needs at least "
                f"{min_tasks} tasks (y columns in funnel order), got {n_tasks}. "
                "Use e.g. backbone='sharedbottom' or 'mmoe' for a single task."
            )
        return params

    def _task_weights(self, n_tasks: int) -> np.ndarray:
        if self.task_weights is None:
            return np.full(n_tasks, 1.0 / n_tasks)
        return check_task_weights(self.task_weights, n_tasks)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        y: Any = None,
        session_ids: Any = None,
        timestamps: Any = None,
        sample_weight: Any = None,
    ) -> MTLClassifier:
        """Train the network on all tasks at once.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features) or \
                ParquetSource
            Features; see ``categorical_features`` for which are categorical.
            A :class:`~sklearn_rmtl.parquet.ParquetSource` fits out of core,
            block by block, with its columns as y, session_ids, timestamps
            and sample_weight (pass none of them; see the docs' scaling page).
        y : {array-like, DataFrame} of shape (n_samples, n_tasks), default=None
            Required unless X is a ParquetSource. Two labels per column
            (0/1, booleans, or any two labels; the larger one is positive).
            A missing label (NaN, None, or ``pd.NA`` in a nullable column)
            means "not observed for this task": it is left out of the loss
            and of early stopping's checks. Every task needs an observed
            label.
        session_ids : array-like of shape (n_samples,), default=None
            Session of each row. Validated and accepted so that the same call
            fits this and :class:`RMTLClassifier`; the baseline does not use
            sessions.
        timestamps : array-like of shape (n_samples,), default=None
            Time of each row (numbers or datetimes); with early stopping the
            latest rows are held out for validation.
        sample_weight : array-like of shape (n_samples,) or (n_samples, \
                n_tasks), default=None
            Non-negative weight of each row (or of each row and task),
            multiplying its loss; each task's loss is normalised by the sum
            of its weights (user guide, "Sample weights"). A row that weighs
            0 in every task is as if dropped. Meta-estimators route it only
            after ``set_fit_request(sample_weight=True)``.

        Returns
        -------
        self : MTLClassifier
            The fitted estimator.
        """
        return self._fit(
            X,
            y,
            session_ids=session_ids,
            timestamps=timestamps,
            sample_weight=sample_weight,
        )

    def _fit(self, X: Any, y: Any, **fit_params: Any) -> Any:
        """Fit from arrays or a source, then set the fitted attributes at once.

        Nothing is assigned until training has succeeded, so a failing fit
        leaves a previous fit intact.
        """
        return self._fit_rows(self._rows(X, y, **fit_params))

    def _rows(self, X: Any, y: Any, **fit_params: Any) -> Rows:
        """The rows of ``fit``'s arguments: a source, or arrays in memory."""
        if isinstance(X, ParquetSource):
            given = [
                name for name, v in {"y": y, **fit_params}.items() if v is not None
            ]
            if given:
                raise TypeError(
                    f"fit got a ParquetSource and {given}; with a source, the "
                    "labels, sessions, times and weights are its columns (target=, "
                    "session=, time=, sample_weight=), so pass none of them to fit."
                )
            return X
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target "
                "y is None."
            )
        X, fit_params["session_ids"], fit_params["timestamps"] = self._meta_columns(
            X, fit_params.get("session_ids"), fit_params.get("timestamps")
        )
        return ArrayRows(X, y, **fit_params)

    def _meta_columns(
        self, X: Any, session_ids: Any = None, timestamps: Any = None
    ) -> tuple[Any, Any, Any]:
        """X without ``session_column`` / ``time_column``, and the session ids
        and timestamps read from them (or as given when they are None)."""
        named = {
            "session_column": ("session_ids", session_ids),
            "time_column": ("timestamps", timestamps),
        }
        columns = {p: getattr(self, p) for p in named if getattr(self, p) is not None}
        if not columns:
            return X, session_ids, timestamps
        if len(set(columns.values())) < len(columns):
            raise ValueError(
                f"session_column and time_column are both {self.session_column!r}; "
                "they must name two different columns."
            )
        X = to_pandas(X)
        if not isinstance(X, pd.DataFrame):
            raise ValueError(
                f"{' and '.join(f'{p}={c!r}' for p, c in columns.items())} read X's "
                f"columns by name, so X must be a DataFrame; got {type(X).__name__}."
            )
        out = {}
        for param, (name, given) in named.items():
            column = columns.get(param)
            if column is None:
                out[name] = given
                continue
            if column not in X.columns:
                raise ValueError(
                    f"{param}={column!r} is not a column of X; X's columns are "
                    f"{list(X.columns)}."
                )
            if given is not None:
                raise ValueError(
                    f"{name} was given both as an argument and as X's column "
                    f"{column!r} ({param}); give it once."
                )
            out[name] = X[column]
        return X.drop(columns=list(columns.values())), *out.values()

    def _fit_rows(self, rows: Rows) -> Any:
        state = self._fit_state(rows)
        for key in ("feature_names_in_", _HOLDOUT_KEY):  # a previous fit's
            self.__dict__.pop(key, None)
        self.__dict__.update(state)
        return self

    def _fit_state(self, rows: Rows) -> dict[str, Any]:
        """Fit everything and return the fitted attributes without setting them.

        Nothing is assigned to ``self`` until training has succeeded, so a
        failing fit leaves a previous fit intact.
        """
        data = self._prepare(rows)
        params, task_weights = self._check_params(data.n_tasks)
        encoder, net = self._fit_backbone(data, params, task_weights)
        history = {"pretrain": net_history(net)}
        extra = {}
        if self.retrain_on_all and data.has_holdout:
            # RMTL given this actor chooses its refit with these weights,
            # which have not seen the held-out rows (see _pretrained_on).
            extra[_HOLDOUT_KEY] = {
                k: v.detach().clone() for k, v in net.module_.state_dict().items()
            }
            net = self._on_all_rows(data, history, "pretrain", params, task_weights)
        return fitted_mtl_state(data, encoder, net, params, history, **extra)

    def _on_all_rows(
        self,
        data: FitData,
        history: dict[str, list[dict[str, Any]]],
        phase: str,
        params: dict[str, Any],
        task_weights: np.ndarray,
        net_cls: type[MultiTaskNet] = MultiTaskNet,
        **kwargs: Any,
    ) -> MultiTaskNet:
        """Retrain ``phase`` on all rows for the steps early stopping chose.

        Adds the retraining's rows to ``history`` under ``phase + "_all"``;
        ``kwargs`` go to :meth:`_train_net`. Without early stopping in
        ``history[phase]`` the phase already trained on all rows: an error.
        """
        steps = selected_steps(history[phase])
        if steps is None:
            raise RuntimeError(f"The {phase} ran without early stopping.")
        kwargs.setdefault("max_epochs", self.max_epochs)  # covered by ``steps``
        net = self._train_net(
            data, net_cls, params, task_weights, steps=steps, **kwargs
        )
        history[phase + "_all"] = net_history(net)
        return net

    def _fit_backbone(
        self, data: FitData, params: dict[str, Any], task_weights: np.ndarray
    ) -> tuple[FeatureEncoder, MultiTaskNet]:
        """Fit the feature encoder on ``data`` and train the network."""
        encoder = FeatureEncoder(
            categorical_features=self.categorical_features,
            min_frequency=self.min_frequency,
            max_categories=self.max_categories,
            hash_buckets=self.hash_buckets,
            sequence_features=self.sequence_features,
            max_sequence_length=self.max_sequence_length,
        )
        data.fit_encoder(encoder)
        return encoder, self._pretrain_net(data, params, task_weights)

    def _pretrain_net(
        self, data: FitData, params: dict[str, Any], task_weights: np.ndarray
    ) -> MultiTaskNet:
        """Train the network on encoded ``data``."""
        return self._train_net(
            data,
            MultiTaskNet,
            params,
            task_weights,
            max_epochs=self.max_epochs,
            selection=check_selection(
                "validation_metric", self.validation_metric, data.task_names
            ),
        )

    def _pretrained_on(
        self, data: FitData, *, name: str
    ) -> tuple[FeatureEncoder, torch.nn.Module, dict[str, list[dict[str, Any]]]]:
        """This estimator as RMTL's pretrained actor (parameter ``name``).

        Fitted, it is used as is; unfitted, a clone is fitted on ``data``.
        Returns its encoder (which encodes ``data``), the network trained
        without the held-out rows (with ``retrain_on_all``, the one early
        stopping chose before retraining) and its history.
        """
        actor = self
        if not self.__sklearn_is_fitted__():
            # RMTL retrains on all rows itself, after choosing on held-out ones.
            actor = clone(self).set_params(retrain_on_all=False)
            actor._fit_rows(data.rows)
        try:
            X = data.block_labels(0).X
            validate_data(actor, X, reset=False, skip_check_array=True)
        except ValueError as exc:
            raise ValueError(
                f"{name} was fitted on other features than X: {exc}"
            ) from exc
        module = actor.net_.module_
        if "pretrain_all" in actor.history_:
            if _HOLDOUT_KEY not in actor.__dict__:
                raise ValueError(
                    f"{name} was retrained on all rows (retrain_on_all=True) and "
                    "loaded from a file, which keeps only the retrained network: "
                    "RMTL needs the network chosen on the held-out rows. Pass "
                    f"{name} unfitted, or fitted with retrain_on_all=False."
                )
            module = copy.deepcopy(module)
            module.load_state_dict(actor.__dict__[_HOLDOUT_KEY])
        data.set_encoder(actor.encoder_)
        return actor.encoder_, module, dict(actor.history_)

    def _prepare(self, rows: Rows) -> FitData:
        """Validate the rows of fit; raise before any training starts."""
        device, random_state = self.device, self.random_state
        if self.distributed:
            # Before asking for a process group, whose NCCL backend would
            # report a missing GPU as a build problem.
            self._check_balancing()
            resolve_device(self.device)
            ensure_process_group(self.device)
            device, random_state = rank_device(device), agreed_seed(random_state)
        data = prepare_fit_data(
            self,
            # Labels outside a task's space read as missing, block by block.
            with_task_space(rows, self.task_space),
            check_params=self._check_data_params,
            validation_fraction=(
                self.validation_fraction if self.early_stopping else None
            ),
            device=device,
            random_state=random_state,
        )
        if self.distributed:
            check_same_data(data.n_samples, data.n_tasks, data.n_positive)
        check_selections_defined(data, self._selection_params())
        return data

    def _check_data_params(self, task_names: np.ndarray, has_sessions: bool) -> None:
        self._check_params(len(task_names))
        self._check_tasks(task_names)
        self._check_task_space(task_names)
        check_callbacks(self.callbacks)
        check_precision(self.precision, resolve_device(self.device))
        for name, value in self._selection_params().items():
            selection = check_selection(name, value, task_names)
            if selection.needs_sessions and self.early_stopping and not has_sessions:
                raise ValueError(
                    f"{name}={value!r} ranks the predictions within sessions and "
                    f"needs session_ids; pass session_ids to fit, or use "
                    f"{name}={value.replace('gauc', 'auc', 1)!r}."
                )

    def _train_net(
        self,
        data: FitData,
        net_cls: type[MultiTaskNet],
        backbone_params: dict[str, Any],
        task_weights: np.ndarray,
        *,
        max_epochs: int,
        lr: float | None = None,
        interval: float | None = None,
        **kwargs: Any,
    ) -> MultiTaskNet:
        """:func:`~sklearn_rmtl._training.train_net` with this estimator's settings.

        ``lr`` and ``interval`` override ``lr`` and ``validation_interval``
        (the refit's own settings); ``kwargs`` go to ``train_net``.
        """
        return train_net(
            data,
            net_cls,
            backbone=self._backbone_name(),
            backbone_params=backbone_params,
            task_weights=task_weights,
            max_epochs=max_epochs,
            lr=self.lr if lr is None else lr,
            lr_name="lr" if lr is None else "refit_lr",
            balancing=self.task_balancing,
            balancing_params=self.task_balancing_params,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            interval=self.validation_interval if interval is None else interval,
            patience=self.n_iter_no_change,
            callbacks=self.callbacks,
            verbose=self.verbose,
            precision=self.precision,
            distributed=self.distributed,
            **kwargs,
        )

    def _backbone_name(self) -> str:
        return str(self.backbone)

    def _selection_params(self) -> dict[str, str]:
        """The early-stopping selection parameters this fit uses, by name."""
        return {"validation_metric": self.validation_metric}

    # -------------------------------------------------------------- predict
    def _iter_logits(self, X: Any) -> Iterator[np.ndarray]:
        """The logits of ``X``'s rows, a block at a time, in row order.

        Arrays are scored in blocks of ``_PREDICT_CHUNK`` rows and a source
        in its own blocks, so memory beyond the result stays one block's.
        """
        check_is_fitted(self)
        if isinstance(X, ParquetSource):
            X._check_predict()
            columns = _feature_columns(self, X)
            blocks = (to_pandas(X.read_block(i, columns)) for i in range(X.n_blocks))
        else:
            rows = ArrayRows(self._features(X), block_rows=_PREDICT_CHUNK)
            blocks = (rows._block(i).X for i in range(rows.n_blocks))
        for features in blocks:
            validate_data(self, features, reset=False, skip_check_array=True)
            yield np.asarray(
                self.net_.predict_proba(encode_with(self.encoder_, features)),
                dtype=np.float64,
            )

    def _features(self, X: Any) -> Any:
        """X without the ``session_column`` / ``time_column`` it holds."""
        meta = [c for c in (self.session_column, self.time_column) if c is not None]
        X = to_pandas(X) if meta else X
        if isinstance(X, pd.DataFrame):
            return X.drop(columns=[c for c in meta if c in X.columns])
        return X

    def _logits(self, X: Any) -> np.ndarray:
        return np.concatenate([*self._iter_logits(X)]).reshape(-1, self.n_tasks_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each task's positive label.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_) or \
                ParquetSource
            Features with the columns seen in :meth:`fit`; a
            :class:`~sklearn_rmtl.parquet.ParquetSource` is scored block by
            block (:func:`~sklearn_rmtl.parquet.predict_proba_to_parquet`
            writes the result to a file instead).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_tasks)
            ``proba[i, k]`` is P(task k = ``classes_[k, 1]``) for row i.
        """
        logits = self._logits(X)
        return expit(logits, out=logits)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted label of every task (positive when its probability > 0.5).

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_) or \
                ParquetSource
            Features with the columns seen in :meth:`fit`, or a source
            scored block by block.

        Returns
        -------
        y_pred : ndarray of shape (n_samples, n_tasks)
            Labels from ``classes_``.
        """
        positive = self._logits(X) > 0
        columns = [
            self.classes_[k][positive[:, k].astype(int)] for k in range(self.n_tasks_)
        ]
        return np.column_stack(columns)

    def task_estimator(self, task: str | int) -> TaskView:
        """One task of the fitted estimator, as a binary classifier.

        The view has ``classes_`` of shape (2,) and ``predict_proba`` of
        shape (n_samples, 2), so scikit-learn's tools for binary classifiers
        take it: calibration, decision thresholds and the ROC /
        precision-recall / calibration displays.

        Parameters
        ----------
        task : str or int
            The task's name in ``task_names_``, or its index.

        Returns
        -------
        view : TaskView
            A view of this estimator (nothing is copied). Wrap it in
            :class:`~sklearn.frozen.FrozenEstimator` for meta-estimators
            that fit, such as
            :class:`~sklearn.calibration.CalibratedClassifierCV`.

        See Also
        --------
        sklearn_rmtl.TaskView : The view, and what ``clone`` does to it.

        Examples
        --------
        >>> from sklearn.metrics import RocCurveDisplay
        >>> from sklearn_rmtl import MTLClassifier
        >>> from sklearn_rmtl.datasets import make_sessions
        >>> X, Y, s, t = make_sessions(30, return_X_y=True, random_state=0)
        >>> est = MTLClassifier(backbone="sharedbottom", max_epochs=2,
        ...                     random_state=0).fit(X, Y)
        >>> view = est.task_estimator("purchase")
        >>> view.predict_proba(X).shape
        (212, 2)
        >>> display = RocCurveDisplay.from_estimator(view, X, Y["purchase"])
        """
        view = TaskView(estimator=self, task=task)
        view.task_index_  # noqa: B018 (checks the fit and the task now)
        return view

    def __sklearn_is_fitted__(self) -> bool:
        return "net_" in vars(self)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.classifier_tags.multi_label = True
        tags.classifier_tags.multi_class = False
        return tags


def fitted_mtl_state(
    data: FitData,
    encoder: FeatureEncoder,
    net: MultiTaskNet,
    params: dict[str, Any],
    history: dict[str, list[dict[str, Any]]],
    **extra: Any,
) -> dict[str, Any]:
    """The fitted attributes of a multi-task fit, in memory or out of core.

    ``extra`` holds the estimator's own fitted attributes (RMTL's critic,
    ``refit_improved_``...).
    """
    # Keep configuration and weights only: no optimizer state, callbacks,
    # validation data or (RMTL's) critic copy in the fitted (pickled) net.
    net.trim_for_prediction()
    return data.fitted_state(
        encoder_=encoder,
        net_=net,
        backbone_params_=params,
        history_=history,
        n_iter_=sum(len(h) for h in history.values()),
        **extra,
    )


def _feature_columns(estimator: Any, source: ParquetSource) -> list[str]:
    """The columns of ``source`` that a fitted ``estimator`` reads."""
    if source._features_given or not hasattr(estimator, "feature_names_in_"):
        return source.features
    names = [str(c) for c in estimator.feature_names_in_]
    missing = [c for c in names if c not in source.columns]
    if missing:
        raise ValueError(
            f"The Parquet data lacks the columns {missing} that the estimator "
            "was fitted on."
        )
    return names
