"""Temporal-difference training of the critics (Eqs. 11-14 and 18).

The critics read the session MDP a chunk of whole sessions at a time
(:class:`SessionChunks`): in-memory rows are one chunk, a Parquet source
many.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sklearn_rmtl._distributed import DataParallel, GradientSync
from sklearn_rmtl._fit_data import loss_mask
from sklearn_rmtl._mdp import (
    behavior_actions,
    build_transitions,
    rewards,
    session_folds,
    session_uniforms,
)
from sklearn_rmtl._precision import (
    autocast,
    grad_scaler,
    optimizer_step,
    scaled_backward,
)
from sklearn_rmtl._torch_module import actor_proba
from sklearn_rmtl.exceptions import DivergenceError

if TYPE_CHECKING:  # _critic builds its critics with train_critic from here
    from sklearn_rmtl._critic import Critic
    from sklearn_rmtl._fit_data import FitData


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Eq. (18): ``theta' <- tau * theta + (1 - tau) * theta'`` in place."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.mul_(1.0 - tau).add_(s, alpha=tau)


def td_target(reward: Tensor, done: Tensor, q_next: Tensor, gamma: float) -> Tensor:
    """Eq. (11): ``r + gamma * (1 - done) * Q'(s_{t+1}, pi'(s_{t+1}))``.

    Shapes: ``reward`` and ``q_next`` (batch, K), ``done`` (batch,).
    """
    return reward + gamma * (1.0 - done.unsqueeze(1)) * q_next


def ips_weights(
    y01: Tensor, mask: Tensor | None = None, *, rate: Tensor | None = None
) -> Tensor:
    """Inverse label-frequency weights per row and task, mean 1 per task.

    A positive of task k gets ``0.5 / p_k`` and a negative ``0.5 / (1 - p_k)``
    where ``p_k`` is the positive rate, so both classes weigh the same in
    total (the authors' "IPS" weights). A task with one class gets weight 1.
    With ``mask`` (the TD loss mask) the rate is that of the entries it
    weighs; ``rate`` (shape (1, n_tasks)) gives it instead (the rate of
    every chunk of sessions, not of these rows only).
    """
    if rate is not None:
        p = rate
    elif mask is None:
        p = y01.mean(0, keepdim=True)
    else:
        p = (y01 * mask).sum(0, keepdim=True) / mask.sum(0, keepdim=True).clamp(
            min=torch.finfo(mask.dtype).tiny
        )
    w = torch.where(y01 > 0.5, 0.5 / p.clamp(min=1e-12), 0.5 / (1 - p).clamp(min=1e-12))
    both_classes = (p > 0) & (p < 1)
    return torch.where(both_classes, w, torch.ones_like(w))


def squared_td_errors(
    critic: Critic | nn.Module,
    target_critic: Critic,
    state: tuple[Tensor, Tensor],
    action: Tensor,
    reward: Tensor,
    done: Tensor,
    next_state: tuple[Tensor, Tensor],
    next_action: Tensor,
    config: TDConfig,
) -> Tensor:
    """``(Q(s, a) - target)^2`` per transition and task (batch, K), Eq. (12).

    Products in ``config.precision``; Q-values, targets and errors in float32.
    """
    with autocast(config.precision, action.device):
        with torch.no_grad():
            q_next = target_critic(*next_state, next_action).float()
            if config.double_q:  # clipped double Q (authors' final code)
                q_next = torch.minimum(q_next, critic(*next_state, next_action).float())
            target = td_target(reward, done, q_next, config.gamma)
        return (critic(*state, action).float() - target) ** 2


def td_step(
    critic: Critic,
    target_critic: Critic,
    optimizer: torch.optim.Optimizer,
    *,
    state: tuple[Tensor, Tensor],
    action: Tensor,
    reward: Tensor,
    done: Tensor,
    next_state: tuple[Tensor, Tensor],
    next_action: Tensor,
    weight: Tensor | None,
    config: TDConfig,
    mask: Tensor | None = None,
    scaler: torch.amp.GradScaler | None = None,
    sync: GradientSync | None = None,
) -> Tensor:
    """One gradient step of the critics on a batch of transitions (Eqs. 11-14).

    ``mask`` (batch, K) weighs each task's TD error of each transition, 0
    for a missing label (its reward is unknown); the loss is then
    normalised by the mask's sum. ``scaler`` (float16, see
    :func:`~sklearn_rmtl._precision.grad_scaler`) scales the loss's
    backward pass and steps ``optimizer`` through it. Returns the batch's
    (weighted) mean squared TD error, detached. With ``sync`` (data
    parallelism, ``critic`` its module) the batch is this rank's shard: the
    forward pass goes through ``sync.model``, the loss is normalised by the
    whole batch's mask sum (or entry count) and the gradients and the loss
    are summed over the ranks.
    """
    data_parallel = None if sync is None else sync.data_parallel
    err = squared_td_errors(
        critic if sync is None else sync.model,
        target_critic,
        state,
        action,
        reward,
        done,
        next_state,
        next_action,
        config,
    )
    if data_parallel is not None:
        mask = torch.ones_like(err) if mask is None else mask
        w = mask if weight is None else mask * weight
        loss = (err * w).sum() / data_parallel.total(mask.sum()).clamp(
            min=torch.finfo(mask.dtype).tiny
        )
    elif mask is None:
        loss = (err * weight).mean() if weight is not None else err.mean()
    else:
        # NOTE[DIFF]: the paper has a reward for every task of every row.
        # Where a label is missing the reward of Eq. (2) is unknown, so that
        # (row, task) TD error is dropped from the loss; Q_k at that row is
        # still a bootstrap target of the previous row of the session
        # (Eq. 11), where it is the critic's generalisation from the
        # observed rows. Transitions are never cut.
        w = mask if weight is None else mask * weight
        loss = (err * w).sum() / mask.sum().clamp(min=torch.finfo(mask.dtype).tiny)
    return _step(loss, optimizer, scaler, sync)


def _step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    sync: GradientSync | None,
) -> Tensor:
    """Backward ``loss`` and step the ``optimizer``; the loss, detached.

    Under data parallelism (``sync``) the ranks' gradients and losses are
    summed.
    """
    optimizer.zero_grad()
    if sync is None:
        scaled_backward(loss, scaler)
    else:  # summed still scaled: overflows reach all
        sync.backward(loss, scaler)
        loss = sync.data_parallel.total(loss)
    optimizer_step(optimizer, scaler)
    return loss.detach()


def actor_step(
    actor: nn.Module,
    critic: Critic,
    optimizer: torch.optim.Optimizer,
    state: tuple[Tensor, Tensor],
    y01: Tensor,
    bc_alpha: float | None,
    precision: str = "float32",
    mask: Tensor | None = None,
    scaler: torch.amp.GradScaler | None = None,
    sync: GradientSync | None = None,
    rows: Tensor | None = None,
) -> Tensor:
    """Eq. (15): one step of the actor up the critics' Q; returns its loss.

    ``scaler`` is the actor optimiser's loss scaler under float16 (see
    :func:`td_step`). With ``sync`` (data parallelism, ``actor`` its module)
    the batch is this rank's shard, the actor's forward pass goes through
    ``sync.model``, and the means (of Q, of ``|Q|`` and of the BCE) are over
    the whole batch.
    ``rows`` (0/1 per row; None: all 1) leaves rows out of the loss: the
    held-out rows that select the actor.

    With ``bc_alpha`` the step is TD3+BC's (Fujimoto and Gu, 2021): the Q
    term, scaled by ``bc_alpha / mean|Q|`` so that its size does not depend
    on the reward scale, plus the BCE of the actor's predictions to the
    labels, which keeps the actor near the data the critics were fitted on.
    """
    actor.train()
    with autocast(precision, y01.device):
        logits = (actor if sync is None else sync.model)(*state).float()
        q = critic(*state, torch.sigmoid(logits)).float()
    # Sums over the whole batch: this shard's, or all shards' under data
    # parallelism (each rank's loss is then its share of the batch's).
    total = (lambda t: t) if sync is None else sync.data_parallel.total
    row_w = torch.ones_like(q) if rows is None else rows.unsqueeze(1).expand_as(q)
    n = total(row_w.sum()).clamp(min=1.0)
    q_term = (q * row_w).sum() / n
    if bc_alpha is None:
        loss = -q_term
    else:
        # NOTE[DIFF]: the paper's DDPG baseline ascends Q alone; the
        # authors' code is a TD3+BC agent. Without the BC term the critics'
        # gradient drives predictions to 0 or 1 (logloss ~3.8, observed).
        scale = bc_alpha / (total((q.abs() * row_w).sum()) / n).detach().clamp(
            min=1e-12
        )
        entries = nn.functional.binary_cross_entropy_with_logits(
            logits, y01, reduction="none"
        )
        if mask is None:  # the entries' weights are the rows': their sum is n
            bce = (entries * row_w).sum() / n
        else:
            weight = mask * row_w
            bce = (entries * weight).sum() / total(weight.sum()).clamp(
                min=torch.finfo(weight.dtype).tiny
            )
        loss = -scale * q_term + bce
    return _step(loss, optimizer, scaler, sync)


@dataclass
class TDConfig:
    """Hyper-parameters of the critic phase's TD learning.

    The critics' settings are :class:`~sklearn_rmtl.SessionCritic`
    parameters of the same name; the others are ``RMTLClassifier``'s (see
    :meth:`from_params`).
    """

    gamma: float
    tau: float
    soft_update_freq: int
    lr: float
    batch_size: int
    max_epochs: int | None
    tol: float
    patience: int
    double_q: bool
    balance_labels: bool
    actor_update: bool
    verbose: int
    bc_alpha: float | None = None
    #: The actor's learning rate under ``actor_update`` (None: ``lr``).
    actor_lr: float | None = None
    precision: str = "float32"
    use_sample_weight: bool = False
    distributed: bool = False
    max_steps: int | None = None
    validation_fraction: float | None = None
    cv: int | None = None

    #: The fields set by an RMTLClassifier parameter, by its name; every
    #: other field is the SessionCritic parameter of the same name.
    _ESTIMATOR_PARAMETERS: ClassVar[dict[str, str]] = {
        "batch_size": "batch_size",
        "actor_update": "actor_update",
        "bc_alpha": "bc_alpha",
        # NOTE[DIFF]: the paper's DDPG actor learns at the critics' rate; here
        # it learns at the refit's, since it too continues a fitted network.
        "actor_lr": "refit_lr",
        "precision": "precision",
        "distributed": "distributed",
        "verbose": "verbose",
    }

    @classmethod
    def from_params(
        cls, critic: Mapping[str, Any], estimator: Mapping[str, Any]
    ) -> TDConfig:
        """The TD settings of a SessionCritic's and an RMTLClassifier's parameters."""
        values = {
            f.name: estimator[cls._ESTIMATOR_PARAMETERS[f.name]]
            if f.name in cls._ESTIMATOR_PARAMETERS
            else critic[f.name]
            for f in fields(cls)
        }
        if values["actor_lr"] is None:  # refit_lr=None: the estimator's lr
            values["actor_lr"] = estimator["lr"]
        return cls(**values)


class EpochRule:
    """The critics' end of epoch: a divergence check and the convergence rule.

    Without held-out sessions, training stops once the epoch's mean TD loss
    has changed by at most ``config.tol`` (relative) for ``config.patience``
    epochs in a row. With them (``config.validation_fraction``), once the
    held-out TD loss has not fallen below ``1 - config.tol`` times its best
    for ``config.patience`` epochs; :attr:`improved` says whether the last
    epoch set a new best.
    """

    def __init__(self, config: TDConfig) -> None:
        self.config = config
        self.previous: float | None = None
        self.best: float | None = None
        self.improved = False
        self.stable = 0

    def done(self, epoch: int, mean: float, valid: float | None = None) -> bool:
        """Whether training stops after ``epoch``.

        ``mean`` is the epoch's mean TD loss, ``valid`` the held-out one.
        Raises :class:`~sklearn_rmtl.exceptions.DivergenceError` when either
        is not finite.
        """
        for value in (mean, valid):
            if value is not None and not math.isfinite(value):
                raise DivergenceError(
                    f"The critic TD loss became {value} in critic epoch {epoch}. "
                    "Lower the critic's lr (critic__lr), check the features for "
                    "extreme values, or set critic__double_q=True."
                )
        tol = self.config.tol
        if valid is not None:
            self.improved = self.best is None or valid < (1.0 - tol) * self.best
            if self.improved:
                self.best = valid
            self.stable = 0 if self.improved else self.stable + 1
            return self.stable >= self.config.patience
        previous, self.previous = self.previous, mean
        # NOTE[DIFF]: relative rather than absolute change, so one tolerance
        # suits any reward scale.
        if previous is not None and abs(previous - mean) <= tol * abs(previous):
            self.stable += 1
        else:
            self.stable = 0
        return self.stable >= self.config.patience


class SessionChunks:
    """The session MDP of a fit's rows, a chunk of whole sessions at a time.

    Chunk ``c`` holds the rows of ``bounds[c]`` (:meth:`Rows.session_bounds
    <sklearn_rmtl._rows.Rows.session_bounds>`), encoded, on the device, with
    the frozen pretrained actor's probabilities (``policy``), the
    transitions to each row's next row of its session, the behaviour
    actions and their rewards (Eq. 2). A transition never leaves its chunk.
    A chunk's actions are drawn from a seed of its own, the same in every
    epoch (with ``redraw_actions``, drawn anew for every epoch after the
    first); the first chunk's seed is the fit's, so one chunk (in-memory
    rows) gives every draw of a fit over all rows at once. One chunk is
    built once; more are rebuilt when visited, in bounded memory. With
    ``config.validation_fraction`` a chunk's ``td_rows`` are the rows of
    the sessions that train the critics and ``held_out_rows`` the others
    (:func:`~sklearn_rmtl._mdp.session_uniforms`). With ``config.cv`` each
    row also has its session's ``fold``
    (:func:`~sklearn_rmtl._mdp.session_folds`); setting :attr:`fold` leaves
    that fold's rows out of both, for the critics that must not see them.
    """

    def __init__(
        self,
        data: FitData,
        actor: nn.Module,
        *,
        behavior_policy: str,
        action_noise: float,
        config: TDConfig,
        seed: int,
        redraw_actions: bool = False,
    ) -> None:
        self.data = data
        self.actor = copy.deepcopy(actor).eval()  # the policy stays pretrained
        self.behavior_policy = behavior_policy
        self.action_noise = action_noise
        self.redraw_actions = redraw_actions
        self.config = config
        self.seed = seed
        self.bounds = data.rows.session_bounds()
        self.device, self.n_rows = data.device, data.n_samples
        self._cached: dict[str, Any] | None = None
        self.positive_rate: Tensor | None = None  # per task, over every chunk
        # Rows that train the critics (0) and held-out rows (1) of each
        # cross-fitting fold (one column without cv), set by start_value.
        self.rows_by_fold = np.zeros((2, 1), dtype=np.int64)
        self.fold: int | None = None  # the cross-fitting fold left out
        self._stats: dict[str, Any] | None = None  # per fold, by start_value

    def __len__(self) -> int:
        return len(self.bounds)

    def chunk(self, c: int, epoch: int = 1) -> dict[str, Any]:
        """Chunk ``c``'s states, actions, rewards and links, on the device.

        ``epoch`` (from 1) picks the actions' draw with ``redraw_actions``.
        """
        ch = self._build(c)
        if self.fold is not None:
            kept = ch["fold"] != self.fold
            ch = {
                **ch,
                "td_rows": ch["td_rows"][kept[ch["td_rows"]]],
                "held_out_rows": ch["held_out_rows"][kept[ch["held_out_rows"]]],
            }
        if self.redraw_actions and epoch > 1:
            # NOTE[DIFF]: the paper's buffer keeps one action per row; new
            # draws every epoch show the critics more than one action per
            # state, so Q can learn how the return depends on the action.
            ch = {**ch, **self._draw(ch, np.random.default_rng([self.seed, c, epoch]))}
            ch.pop("ips", None)
        return ch

    def _draw(self, ch: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Behaviour actions from ``rng`` and their rewards, as tensors."""
        actions = behavior_actions(
            ch["policy_np"],
            ch["order"],
            behavior_policy=self.behavior_policy,
            action_noise=self.action_noise,
            rng=rng,
        )
        reward = rewards(ch["y01_np"], actions, ch["observed"])
        device = self.data.device
        return {
            "actions": torch.as_tensor(actions, dtype=torch.float32, device=device),
            "rewards": torch.as_tensor(reward, dtype=torch.float32, device=device),
            "reward_np": reward,
        }

    def _build(self, c: int) -> dict[str, Any]:
        if self._cached is not None:
            return self._cached
        device, config = self.data.device, self.config
        block = self.data.chunk(*self.bounds[c])

        def tensor(a: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        x_cat = tensor(block.inputs["x_cat"], torch.long)
        x_num = tensor(block.inputs["x_num"])
        policy = actor_proba(self.actor, x_cat, x_num, config.precision)
        transitions = build_transitions(block.session_ids, block.timestamps, len(block))
        held = np.zeros(len(block), dtype=bool)
        if config.validation_fraction is not None:
            u = session_uniforms(
                block.session_ids, self.bounds[c][0], len(block), self.seed
            )
            held = u < config.validation_fraction
        # Weight of each (row, task) TD error: 0 for a missing label (no
        # reward); the sample weights with the critic's ``use_sample_weight``.
        mask = loss_mask(
            block.observed, block.sample_weight if config.use_sample_weight else None
        )
        out = {
            "x_cat": x_cat,
            "x_num": x_num,
            "policy": policy,
            "next_row": tensor(transitions.next_row, torch.long),
            "done": tensor(transitions.done),
            "y01": tensor(block.y01),
            "train_rows": tensor(~block.valid),
            "td_rows": tensor(np.flatnonzero(~held), torch.long),
            "held_out_rows": tensor(np.flatnonzero(held), torch.long),
            "fold": None
            if config.cv is None
            else tensor(
                session_folds(
                    block.session_ids, self.bounds[c][0], len(block), config.cv
                ),
                torch.long,
            ),
            "mask_np": mask,
            "mask": None if mask is None else tensor(mask),
            # What the actions' draws read.
            "policy_np": policy.cpu().numpy().astype(np.float64),
            "order": transitions.order,
            "y01_np": block.y01,
            "observed": block.observed,
        }
        # The in-memory fit's generator for the first chunk, a seed of its
        # own for each other chunk.
        out.update(
            self._draw(
                out, np.random.default_rng(self.seed if c == 0 else [self.seed, c])
            )
        )
        if len(self.bounds) == 1:
            self._cached = out
        return out

    def ips(self, ch: dict[str, Any]) -> Tensor:
        """The chunk's IPS weights (:func:`ips_weights`) at every chunk's rate."""
        if "ips" not in ch:
            # One chunk's rates are its own, unless a fold is left out.
            rate = None if len(self) == 1 and self.fold is None else self.positive_rate
            ch["ips"] = ips_weights(ch["y01"], ch["mask"], rate=rate)
        return ch["ips"]

    def training_rows(self) -> tuple[int, int]:
        """The rows that train the critics and the held-out rows, without
        :attr:`fold`'s."""
        if self._stats is None:
            self._stats = self._fold_statistics()
        counts = self.rows_by_fold.sum(1)
        if self.fold is not None:
            counts = counts - self.rows_by_fold[:, self.fold]
        return int(counts[0]), int(counts[1])

    def start_value(self, gamma: float) -> np.ndarray:
        """The critics' starting output: mean reward times the mean horizon.

        Also sets :attr:`positive_rate`, each task's positive rate (for the
        IPS weights). Both are statistics of every chunk's rows but those of
        :attr:`fold`, read once and kept per fold. Each chunk's float32
        statistic is merged in float64, so one chunk gives its own
        statistic exactly.
        """
        if self._stats is None:
            self._stats = self._fold_statistics()
        keep = np.ones(len(self._stats["n_rows"]), dtype=bool)
        if self.fold is not None:
            keep[self.fold] = False
        n_rows, n_done, num, den = (
            self._stats[key][keep].sum(0) for key in ("n_rows", "n_done", "num", "den")
        )
        positives, weighed = (
            self._stats[key][torch.as_tensor(keep)].sum(0)
            for key in ("positives", "weighed")
        )
        # NOTE[DIFF]: the paper does not say how critics start. With the
        # -ReLU output a head that starts negative is dead (Q = 0, w = 1
        # everywhere, observed); start near the expected discounted return.
        horizon = 1.0 / (1.0 - gamma * (1.0 - np.float64(n_done) / n_rows))
        tiny = np.float64(np.finfo(np.float32).tiny)
        mean_reward = (num / np.maximum(den, tiny)).astype(np.float32)
        rate = (positives / weighed.clamp(min=tiny)).float()[None, :]
        self.positive_rate = rate.to(self.device)
        return mean_reward * horizon

    def _fold_statistics(self) -> dict[str, Any]:
        """Per fold (one without cv): rows, session ends, reward sums and
        weights, positives and weighed labels; also sets :attr:`rows_by_fold`."""
        n_folds = self.config.cv or 1
        stats: dict[str, Any] = {
            "n_rows": np.zeros(n_folds, np.int64),
            "n_done": np.zeros(n_folds, np.int64),
            "num": np.zeros((n_folds, self.data.n_tasks)),
            "den": np.zeros((n_folds, self.data.n_tasks)),
            "positives": torch.zeros(n_folds, self.data.n_tasks, dtype=torch.float64),
            "weighed": torch.zeros(n_folds, self.data.n_tasks, dtype=torch.float64),
        }
        self.rows_by_fold = np.zeros((2, n_folds), dtype=np.int64)
        for c in range(len(self)):
            ch = self._build(c)  # every fold's rows, whatever fold is left out
            folds = np.zeros(len(ch["reward_np"]), np.int64)
            if ch["fold"] is not None:
                folds = ch["fold"].cpu().numpy()
            for side, rows in enumerate((ch["td_rows"], ch["held_out_rows"])):
                self.rows_by_fold[side] += np.bincount(
                    folds[rows.cpu().numpy()], minlength=n_folds
                )
            for f in np.unique(folds):
                rows = slice(None) if n_folds == 1 else folds == f
                rows_t = rows if n_folds == 1 else torch.as_tensor(rows)
                reward: np.ndarray = ch["reward_np"][rows]
                mask: np.ndarray | None = ch["mask_np"]
                y01 = ch["y01"][rows_t]
                m = torch.ones_like(y01) if mask is None else ch["mask"][rows_t]
                stats["positives"][f] += (y01 * m).sum(0).double().cpu()
                stats["weighed"][f] += m.sum(0).double().cpu()
                stats["n_rows"][f] += len(reward)
                stats["n_done"][f] += int(ch["done"][rows_t].sum())
                if mask is None:
                    stats["num"][f] += reward.mean(0).astype(np.float64) * len(reward)
                    stats["den"][f] += np.float64(len(reward))
                else:
                    stats["num"][f] += (reward * mask[rows]).sum(0).astype(np.float64)
                    stats["den"][f] += mask[rows].sum(0).astype(np.float64)
        return stats


def train_critic(
    critic: Critic,
    chunks: SessionChunks,
    *,
    actor: nn.Module,
    config: TDConfig,
    generator: torch.Generator,
    seed: int,
    actor_checkpoint: Any = None,
    criterion: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Fit the critics by TD learning on the session transitions.

    The behaviour actions, rewards and next-row links are fixed. With the
    actor frozen (``config.actor_update=False``, the paper's setting), the
    target actor equals the actor, so ``pi'(s_{t+1})`` is read from the
    chunk's ``policy``. With ``actor_update=True`` the actor also takes the
    Q-gradient step of Eq. (15) after every critic step, and next actions
    come from the soft-updated target actor, batch by batch. Each epoch
    visits the chunks in an order drawn from ``seed`` and a chunk's
    transitions in an order drawn from ``generator``.

    Parameters
    ----------
    critic : Critic
        Critic to train in place (embeddings already initialised).
    chunks : SessionChunks
        The transitions: ``len(chunks)`` chunks, ``chunks.chunk(c)`` one's
        tensors on ``chunks.device`` (``n_rows`` in all), ``chunks.ips(...)``
        its IPS weights.
    actor : nn.Module
        The pretrained actor (returns logits); trained in place only when
        ``config.actor_update``.
    config : TDConfig
        Hyper-parameters.
    generator : torch.Generator
        Source of the batch order.
    seed : int
        Seed of the chunks' order.
    actor_checkpoint : ValidationCheckpoint, default=None
        With ``config.actor_update``: selects the actor on the held-out rows
        (see :class:`ActorUpdate`), scored by ``criterion``; the actor then
        steps on the other rows only.
    criterion : WeightedMultiTaskBCE, default=None
        The validation loss of ``actor_checkpoint``.

    Returns
    -------
    history : list of dict
        Per epoch: ``epoch``, ``td_loss`` (mean over batches), ``dur``, and
        ``actor_loss`` in epochs where the actor stepped; with ``actor_checkpoint``
        also the checkpoint's records prefixed ``actor_`` (e.g.
        ``actor_valid_loss``; the last row's ``actor_best_at``).

    Notes
    -----
    With ``config.distributed`` every rank draws the same batches and steps
    on its shard of each (:mod:`sklearn_rmtl._distributed`); the stopping
    test reads rank 0's epoch loss, and the critics (and an updated actor)
    end as rank 0's.
    """
    dp = DataParallel.current(config.distributed)
    device = chunks.device
    actor.eval()  # no dropout in the actor's actions
    update = (
        ActorUpdate(
            actor,
            critic,
            config,
            device,
            dp,
            checkpoint=actor_checkpoint,
            criterion=criterion,
            n_rows=chunks.n_rows,
        )
        if config.actor_update
        else None
    )
    chunk_rng = np.random.default_rng(seed)

    def batches(
        ch: dict[str, Any], rows: Tensor, epoch: int | None
    ) -> Iterator[dict[str, Any]]:
        """The transitions of ``rows`` of chunk ``ch`` in batches (td_step's
        arguments); ``epoch`` None: the held-out rows, no extra entries."""
        # Frozen actor: pi'(s_{t+1}) of every row, looked up once.
        next_actions = None if update is not None else ch["policy"][ch["next_row"]]
        weights = chunks.ips(ch) if config.balance_labels and epoch else None
        x_cat, x_num, mask = ch["x_cat"], ch["x_num"], ch["mask"]
        starts: Iterable[int] = range(0, len(rows), config.batch_size)
        if config.verbose and epoch is not None:
            starts = tqdm(starts, desc=f"critic epoch {epoch}", leave=False)
        for b in starts:
            idx = rows[b : b + config.batch_size]
            idx = idx if dp is None or epoch is None else dp.shard(idx)
            nxt = ch["next_row"][idx]
            s_next = (x_cat[nxt], x_num[nxt])  # gathered once per batch
            if next_actions is not None:
                a_next = next_actions[idx]
            else:
                assert update is not None
                a_next = update.next_action(s_next)
            batch = {
                "state": (x_cat[idx], x_num[idx]),
                "action": ch["actions"][idx],
                "reward": ch["rewards"][idx],
                "done": ch["done"][idx],
                "next_state": s_next,
                "next_action": a_next,
                "weight": None if weights is None else weights[idx],
                "mask": None if mask is None else mask[idx],
            }
            if update is not None and epoch is not None:  # the actor's BC labels
                batch["y01"] = ch["y01"][idx]
                if actor_checkpoint is not None:
                    batch["rows"] = ch["train_rows"][idx]
            yield batch

    def epoch_batches(epoch: int) -> Iterator[dict[str, Any]]:
        order = chunk_rng.permutation(len(chunks)) if len(chunks) > 1 else [0]
        for c in order:
            ch = chunks.chunk(int(c), epoch)
            td_rows = ch["td_rows"]
            perm = torch.randperm(len(td_rows), generator=generator).to(device)
            yield from batches(ch, td_rows[perm], epoch)

    def held_out_batches() -> Iterator[dict[str, Any]]:
        for c in range(len(chunks)):
            ch = chunks.chunk(c)
            yield from batches(ch, ch["held_out_rows"], None)

    history = td_epochs(
        critic,
        config,
        epoch_batches,
        device,
        data_parallel=dp,
        update=update,
        held_out_batches=held_out_batches if config.validation_fraction else None,
    )
    if dp is not None:
        dp.broadcast_module(critic)
        if update is not None:
            dp.broadcast_module(actor)
    critic.eval()
    actor.eval()
    return history


class _ActorNet:
    """What a :class:`~sklearn_rmtl._training.ValidationCheckpoint` reads of
    a skorch net, for the actor that :class:`ActorUpdate` trains."""

    def __init__(
        self, module: nn.Module, criterion: nn.Module, precision: str, batch_size: int
    ) -> None:
        self.module_, self.criterion_ = module, criterion
        self.precision, self.batch_size = precision, batch_size
        self.history = _Record()


class _Record(dict[str, Any]):
    """A history row: what the checkpoint records, read by :func:`td_epochs`."""

    def record(self, key: str, value: Any) -> None:
        self[key] = value


class ActorUpdate:
    """Eq. (15) during critic training: an actor step after each critic step.

    Holds the actor's optimiser (at ``config.actor_lr``; None:
    ``config.lr``), its loss scaler and the soft-updated target actor that
    gives the next actions ``pi'(s_{t+1})``.

    With ``checkpoint`` (a ``ValidationCheckpoint`` on the held-out rows)
    the actor steps on the other rows only (the batches' ``rows``), is checked on
    the held-out rows as the checkpoint says (its interval in fractions of
    a critic epoch of ``n_rows`` rows), stops stepping after the
    checkpoint's patience without an improving check, and ends with the
    weights of the best check.
    """

    def __init__(
        self,
        actor: nn.Module,
        critic: Critic,
        config: TDConfig,
        device: torch.device | str,
        data_parallel: DataParallel | None,
        *,
        checkpoint: Any = None,
        criterion: nn.Module | None = None,
        n_rows: int = 0,
    ) -> None:
        self.actor, self.critic, self.config = actor, critic, config
        # The actor's steps' gradients summed over the ranks (DDP after the
        # first step); the critic is called outside it, unsynchronised.
        self.sync = (
            None if data_parallel is None else GradientSync(data_parallel, actor)
        )
        self.target = copy.deepcopy(actor)
        lr = config.lr if config.actor_lr is None else config.actor_lr
        self.optimizer = torch.optim.Adam(actor.parameters(), lr=lr, fused=True)
        self.scaler = grad_scaler(config.precision, device)
        self.device, self.checkpoint, self.stepping = device, checkpoint, True
        self.steps = 0  # this epoch's actor steps (begin_epoch resets them)
        if checkpoint is not None:
            assert criterion is not None
            self.net = _ActorNet(actor, criterion, config.precision, config.batch_size)
            # The critics' epoch sets the checks' positions.
            checkpoint.on_train_begin(self.net, X={"rows": range(n_rows)})

    def next_action(self, next_state: tuple[Tensor, Tensor]) -> Tensor:
        """The target actor's probabilities at ``next_state``."""
        with torch.no_grad(), autocast(self.config.precision, next_state[0].device):
            return torch.sigmoid(self.target(*next_state).float())

    def begin_epoch(self) -> None:
        # Summed on the device, as td_epochs sums the TD loss.
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.steps = 0
        if self.checkpoint is not None and self.stepping:
            self.checkpoint.on_epoch_begin(self.net)

    def step(
        self, batch: dict[str, Any], y01: Tensor, rows: Tensor | None = None
    ) -> None:
        """The actor's step on ``batch`` (a :func:`td_epochs` batch).

        ``rows`` (1.0 per row the actor may learn from; None: all) leaves
        the held-out rows out.
        """
        if not self.stepping:
            return
        loss = actor_step(
            self.actor,
            self.critic,
            self.optimizer,
            batch["state"],
            y01,
            self.config.bc_alpha,
            self.config.precision,
            batch["mask"],
            self.scaler,
            self.sync,
            rows=rows,
        )
        self.loss_sum += loss
        self.steps += 1
        if self.checkpoint is not None:
            self.checkpoint.on_batch_end(self.net, training=True)

    def end_epoch(self) -> dict[str, Any]:
        """The epoch's ``actor_*`` history entries: the mean loss and the check.

        Empty once the actor has stopped stepping.
        """
        if not self.steps:
            return {}
        row = {"actor_loss": float(self.loss_sum) / self.steps}
        if self.checkpoint is not None:
            self.stepping = not self.checkpoint.end_epoch(self.net)
            row.update(self._records())
        return row

    def finish(self) -> dict[str, Any]:
        """Restore the best check's weights; their ``actor_best_at`` entries."""
        if self.checkpoint is None:
            return {}
        self.checkpoint.on_train_end(self.net)
        return self._records()

    def _records(self) -> dict[str, Any]:
        records = {f"actor_{k}": v for k, v in self.net.history.items()}
        self.net.history.clear()
        return records

    def soft_update(self) -> None:
        """Eq. (18) for the target actor."""
        soft_update(self.target, self.actor, self.config.tau)


def td_epochs(
    critic: Critic,
    config: TDConfig,
    epoch_batches: Callable[[int], Iterable[dict[str, Any]]],
    device: torch.device | str,
    *,
    data_parallel: DataParallel | None = None,
    update: ActorUpdate | None = None,
    held_out_batches: Callable[[], Iterable[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """The critics' epochs: TD steps until :class:`EpochRule` or the budget stops them.

    ``epoch_batches(epoch)`` yields the epoch's batches as :func:`td_step`'s
    keyword arguments, plus ``y01`` (the labels) when ``update`` is given
    and ``rows`` (see :meth:`ActorUpdate.step`) when it learns from some
    rows only; in memory or streamed. The target critic (and ``update``'s
    target actor) are soft-updated every ``config.soft_update_freq`` steps.
    Training ends after ``config.max_epochs`` epochs or ``config.max_steps``
    steps (mid-epoch), whichever comes first. ``held_out_batches()`` yields
    the held-out sessions' transitions: their mean squared TD error is
    measured after every epoch, the rule reads it, and the critics end with
    the weights of its best epoch. Returns the history that
    :func:`train_critic` documents.
    """
    target_critic = copy.deepcopy(critic)
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.lr, fused=True)
    # The TD steps' gradients summed over the ranks (DDP after the first).
    sync = None if data_parallel is None else GradientSync(data_parallel, critic)
    # float16 only: the critics' loss scaler (None otherwise).
    scaler = grad_scaler(config.precision, device)
    history: list[dict[str, Any]] = []
    step, rule = 0, EpochRule(config)
    best: tuple[int, dict[str, Tensor]] | None = None
    epochs = (
        itertools.count(1)
        if config.max_epochs is None
        else range(1, config.max_epochs + 1)
    )
    for epoch in epochs:
        start = time.perf_counter()
        critic.train()
        # Summed on the device (one synchronisation per epoch), in float64
        # like the Python floats they replace.
        total = torch.zeros((), dtype=torch.float64, device=device)
        batches = 0
        if update is not None:
            update.begin_epoch()
        for batch in epoch_batches(epoch):
            y01 = batch.pop("y01", None)
            rows = batch.pop("rows", None)
            total += td_step(
                critic,
                target_critic,
                optimizer,
                **batch,
                config=config,
                scaler=scaler,
                sync=sync,
            )
            if update is not None:
                assert y01 is not None
                update.step(batch, y01, rows)
            batches += 1
            step += 1
            if step % config.soft_update_freq == 0:
                soft_update(target_critic, critic, config.tau)
                if update is not None:
                    update.soft_update()
            if step == config.max_steps:
                break
        mean = float(total) / max(batches, 1)
        if data_parallel is not None:
            mean = data_parallel.agree(mean)
        row: dict[str, Any] = {"epoch": epoch, "td_loss": mean, "steps": step}
        valid = None
        if held_out_batches is not None:
            valid = held_out_td_loss(critic, target_critic, held_out_batches(), config)
            row["valid_td_loss"] = valid
        rule_says_stop = rule.done(epoch, mean, valid)
        if valid is not None and rule.improved:
            best = (epoch, copy.deepcopy(critic.state_dict()))
        row["dur"] = time.perf_counter() - start
        if update is not None:
            row.update(update.end_epoch())
        history.append(row)
        if config.verbose:
            print(
                f"critic epoch {epoch:3d}  td_loss {mean:.6f}"
                + ("" if valid is None else f"  valid_td_loss {valid:.6f}")
                + f"  {row['dur']:.1f}s"
            )
        if rule_says_stop or step == config.max_steps:
            break
    if best is not None:
        history[-1]["best_epoch"] = best[0]
        critic.load_state_dict(best[1])
    if update is not None:
        history[-1].update(update.finish())
    return history


def held_out_td_loss(
    critic: Critic,
    target_critic: Critic,
    batches: Iterable[dict[str, Any]],
    config: TDConfig,
) -> float:
    """The mean squared TD error of the held-out transitions, over their
    observed (row, task) entries, at the current critic and target critic."""
    critic.eval()
    total: Any = 0.0  # summed on the device: one synchronisation at the end
    count: Any = 0.0
    with torch.no_grad():
        for batch in batches:
            mask, _ = batch.pop("mask"), batch.pop("weight")
            err = squared_td_errors(critic, target_critic, **batch, config=config)
            m = torch.ones_like(err) if mask is None else mask
            total = total + (err * m).sum().double()
            count = count + m.sum().double()
    return float(total) / max(float(count), 1.0)
