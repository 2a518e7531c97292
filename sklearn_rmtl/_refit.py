"""Phase 4 set-up: which skorch net and row weights a refit trains with.

The refit continues the pretrained actor; its ``weighting`` decides how rows
are weighted (docs/user_guide.rst, phase 4):

- no critic (``weighting="constant"``): plain continued training;
- ``"label_mean"``: fixed per-task, per-label weights computed once at the
  pretrained actor (means over the observed labels, weighted by the sample
  weights, in one pass over the blocks), carried as the rows'
  ``sample_weight``;
- every other weighting: :class:`~sklearn_rmtl._skorch_net.QWeightedNet`,
  which asks the critics for the weights in every step.

In every case the user's sample weights and missing labels (``loss_mask``,
added by :func:`~sklearn_rmtl._training.train_net`) multiply these weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._fit_data import EncodedBlock, Extra, FitData
from sklearn_rmtl._mdp import build_transitions, rewards
from sklearn_rmtl._outcome import discounted_later, rows_left_bucket, surprise
from sklearn_rmtl._skorch_net import MultiTaskNet, QWeightedNet
from sklearn_rmtl._torch_module import actor_proba
from sklearn_rmtl._weighting import (
    WEIGHTINGS,
    Weighting,
    control,
    label_mean_weights,
    outcome_weights,
)


@dataclass
class RefitPlan:
    """What :func:`~sklearn_rmtl._training.train_net` needs for one refit.

    Parameters
    ----------
    net_cls : type of MultiTaskNet
        The skorch net to train.
    extra : callable, default=None
        Per-row inputs of an encoded block riding next to the features (for
        the loss); see :data:`~sklearn_rmtl._fit_data.Extra`.
    net_kwargs : dict
        Keyword arguments of ``net_cls``.
    label_weights : ndarray of shape (n_tasks, 2) or None
        The fixed weights of label 0 and 1 per task (``"label_mean"`` only).
    """

    net_cls: type[MultiTaskNet]
    extra: Extra | None = None
    net_kwargs: dict[str, Any] = field(default_factory=dict)
    label_weights: np.ndarray | None = None


def plan_refit(
    data: FitData,
    actor: nn.Module,
    critic: SessionCritic | None,
    *,
    weighting: str,
    q_lambda: float,
    precision: str,
    gamma: float,
    seed: int,
) -> RefitPlan:
    """The refit's net and row weights for ``weighting``.

    Parameters
    ----------
    data : FitData
        The fit's rows, encoded by the actor's encoder (the critics may have
        their own); ``"label_mean"`` leaves the held-out ones out of its
        means.
    actor : MultiTaskModule
        The pretrained actor, where ``"label_mean"`` evaluates Q.
    critic : SessionCritic or None
        The critics; None trains with constant weights.
    weighting : str
        Key of :data:`~sklearn_rmtl._weighting.WEIGHTINGS`.
    q_lambda : float
        The paper's lambda.
    precision : {"float32", "bfloat16", "float16"}
        The dtype of the matrix products where Q is evaluated.
    gamma : float
        The discount of the outcome weightings' realised returns.
    seed : int
        Seed of the shuffled controls' permutations.
    """
    spec = WEIGHTINGS[weighting]
    if (spec.fixed and not spec.label_mean) or spec.outcome is not None:
        weights = _fixed_weights(
            data, actor, critic, spec, weighting, q_lambda, precision, gamma, seed
        )

        def fixed(block: EncodedBlock) -> dict[str, np.ndarray]:
            return {"sample_weight": weights[block.start : block.start + len(block)]}

        return RefitPlan(MultiTaskNet, extra=fixed)
    if critic is None:
        return RefitPlan(MultiTaskNet)

    def critic_inputs(block: EncodedBlock) -> dict[str, np.ndarray]:
        inputs = critic.encode(block.X, encoder=data.encoder, inputs=block.inputs)
        return critic.route(inputs, block.session_ids, block.start)

    if WEIGHTINGS[weighting].label_mean:
        means = _label_means(
            data, actor, critic, critic_inputs, weighting, q_lambda, precision
        )

        def label_weights(block: EncodedBlock) -> dict[str, np.ndarray]:
            y = torch.as_tensor(block.y01) > 0.5
            return {"sample_weight": torch.where(y, means[:, 1], means[:, 0]).numpy()}

        return RefitPlan(
            MultiTaskNet,
            extra=label_weights,
            label_weights=means.numpy().astype(np.float64),
        )

    def q_inputs(block: EncodedBlock) -> dict[str, np.ndarray]:
        return {f"critic_{k}": v for k, v in critic_inputs(block).items()}

    return RefitPlan(
        QWeightedNet,
        extra=q_inputs,
        net_kwargs={
            "critic": critic.to(data.device),
            "weighting": weighting,
            "q_lambda": q_lambda,
        },
    )


def _proba(actor: nn.Module, block: EncodedBlock, precision: str) -> Tensor:
    """The pretrained actor's probabilities of an encoded block's rows, on CPU."""
    x_cat, x_num = (torch.as_tensor(block.inputs[k]) for k in ("x_cat", "x_num"))
    return actor_proba(actor, x_cat, x_num, precision).cpu()


def _label_means(
    data: FitData,
    actor: nn.Module,
    critic: SessionCritic,
    critic_inputs: Callable[[EncodedBlock], dict[str, np.ndarray]],
    weighting: str,
    q_lambda: float,
    precision: str,
) -> Tensor:
    """The critics' weights at the pretrained actor, averaged per task and label.

    Over the training rows, weighted by the loss mask: one block gives
    :func:`~sklearn_rmtl._weighting.label_mean_weights` exactly; over many
    blocks its sums are merged in float64.
    """
    sums: list[Any] = [0.0, 0.0, 0.0, 0.0]  # n_neg, n_pos, sum_neg, sum_pos
    for b in range(data.rows.n_blocks):
        block = data.block(b)
        y = torch.as_tensor(block.y01)
        proba = _proba(actor, block, precision)
        w = critic.row_weights(
            critic_inputs(block), proba, y, weighting, q_lambda, precision
        )
        train = torch.as_tensor(~block.valid)
        mask = block.loss_mask
        m = None if mask is None else torch.as_tensor(mask)[train]
        if data.rows.n_blocks == 1:
            return label_mean_weights(w[train], y[train], m)
        pos = y[train] > 0.5
        m = torch.ones_like(y[train]) if m is None else m
        wm = w[train] * m
        for i, part in enumerate(
            (
                torch.where(pos, 0.0, m),
                torch.where(pos, m, 0.0),
                torch.where(pos, 0.0, wm),
                torch.where(pos, wm, 0.0),
            )
        ):
            sums[i] = sums[i] + part.sum(0).double()
    n_neg, n_pos, sum_neg, sum_pos = sums
    tiny = torch.finfo(torch.float32).tiny
    mean_pos = torch.where(n_pos > 0, sum_pos / n_pos.clamp(min=tiny), 1.0)
    mean_neg = torch.where(n_neg > 0, sum_neg / n_neg.clamp(min=tiny), 1.0)
    return torch.stack([mean_neg, mean_pos], dim=1).float()


def _fixed_weights(
    data: FitData,
    actor: nn.Module,
    critic: SessionCritic | None,
    spec: Weighting,
    weighting: str,
    q_lambda: float,
    precision: str,
    gamma: float,
    seed: int,
) -> np.ndarray:
    """Every row's fixed refit weights, (n_rows, n_tasks), at the pretrained actor.

    Read a chunk of whole sessions at a time: the critics' weights (RMTL's
    at the actor's prediction) or the realised outcomes of the sessions
    (:mod:`sklearn_rmtl._outcome`), then the weighting's control within
    task x label x rows-left strata. Keeps 4 bytes per row and task for the
    refit; computing them holds a few such arrays more.
    """
    n, k = data.n_samples, data.n_tasks
    raw, returns = np.zeros((n, k)), np.zeros((n, k))
    y01 = np.zeros((n, k), np.float32)
    train = np.zeros((n, k))
    bucket = np.zeros(n, np.int64)
    for start, stop in data.rows.session_bounds():
        block = data.chunk(start, stop)
        rows = slice(start, stop)
        proba = _proba(actor, block, precision)
        transitions = build_transitions(block.session_ids, block.timestamps, len(block))
        mask = block.loss_mask
        entries = np.ones((len(block), k)) if mask is None else (mask > 0)
        train[rows] = entries * ~block.valid[:, None]
        y01[rows] = block.y01
        bucket[rows] = rows_left_bucket(transitions)
        if spec.outcome is None:
            assert critic is not None
            inputs = critic.encode(block.X, encoder=data.encoder, inputs=block.inputs)
            inputs = critic.route(inputs, block.session_ids, block.start)
            raw[rows] = critic.row_weights(
                inputs, proba, block.y01, weighting, q_lambda, precision
            ).numpy()
            continue
        p = proba.numpy()
        loss = -rewards(block.y01, p, block.observed)
        returns[rows] = discounted_later(transitions, loss, gamma, include_own=True)
        d = surprise(block.y01, p, block.observed)
        if spec.outcome == "later":
            raw[rows] = discounted_later(transitions, d, gamma, include_own=False)
        elif block.session_ids is not None:  # the session's other rows
            codes = pd.factorize(block.session_ids)[0]
            for task in range(k):
                total = np.bincount(codes, weights=d[:, task])
                raw[rows, task] = total[codes] - d[:, task]
    if spec.outcome is not None:
        raw = outcome_weights(
            returns, raw, y01, train, q_lambda, label_mean_only=spec.label_mean
        )
    if spec.control is not None:
        rng = np.random.default_rng([seed, 26])
        raw = control(spec.control, raw, y01, bucket, rng)
    return raw.astype(np.float32)
