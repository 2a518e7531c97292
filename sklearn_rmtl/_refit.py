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
import torch
from torch import Tensor, nn

from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._fit_data import EncodedBlock, Extra, FitData
from sklearn_rmtl._skorch_net import MultiTaskNet, QWeightedNet
from sklearn_rmtl._torch_module import actor_proba
from sklearn_rmtl._weighting import WEIGHTINGS, label_mean_weights


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
    """
    if critic is None:
        return RefitPlan(MultiTaskNet)

    def critic_inputs(block: EncodedBlock) -> dict[str, np.ndarray]:
        return critic.encode(block.X, encoder=data.encoder, inputs=block.inputs)

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
        proba = actor_proba(
            actor,
            torch.as_tensor(block.inputs["x_cat"]),
            torch.as_tensor(block.inputs["x_num"]),
            precision,
        ).cpu()
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
