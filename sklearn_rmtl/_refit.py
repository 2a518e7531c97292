"""Phase 4 set-up: which skorch net and row weights a refit trains with.

The refit continues the pretrained actor; its ``weighting`` decides how rows
are weighted (docs/user_guide.rst, phase 4):

- no critic (``weighting="constant"``): plain continued training;
- ``"label_mean"``: fixed per-task, per-label weights computed once at the
  pretrained actor (means over the observed labels, weighted by the sample
  weights), carried as the rows' ``sample_weight``;
- every other weighting: :class:`~sklearn_rmtl._skorch_net.QWeightedNet`,
  which asks the critics for the weights in every step.

In every case the user's sample weights and missing labels (``loss_mask``,
added by :func:`~sklearn_rmtl._training.train_net`) multiply these weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._fit_data import FitData
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
    extra_inputs : dict of str to ndarray
        Per-row inputs riding next to the features (for the loss).
    net_kwargs : dict
        Keyword arguments of ``net_cls``.
    label_weights : ndarray of shape (n_tasks, 2) or None
        The fixed weights of label 0 and 1 per task (``"label_mean"`` only).
    """

    net_cls: type[MultiTaskNet]
    extra_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    net_kwargs: dict[str, Any] = field(default_factory=dict)
    label_weights: np.ndarray | None = None


def plan_refit(
    data: FitData,
    encoder: FeatureEncoder,
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
        The encoded training rows; ``data.valid`` marks the held-out ones,
        which ``"label_mean"`` leaves out of its means.
    encoder : FeatureEncoder
        The actor's encoder (the critics may have their own).
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
    critic_inputs = critic.encode(data.X, encoder=encoder, inputs=data.inputs)
    if WEIGHTINGS[weighting].label_mean:
        y01 = torch.as_tensor(data.y01)
        proba = actor_proba(
            actor,
            torch.as_tensor(data.inputs["x_cat"]),
            torch.as_tensor(data.inputs["x_num"]),
            precision,
        ).cpu()
        weights = critic.row_weights(
            critic_inputs, proba, y01, weighting, q_lambda, precision
        )
        fit_rows = slice(None) if data.valid is None else ~data.valid
        mask = data.loss_mask
        means = label_mean_weights(
            weights[fit_rows],
            y01[fit_rows],
            None if mask is None else torch.as_tensor(mask)[fit_rows],
        )
        per_row = torch.where(y01 > 0.5, means[:, 1], means[:, 0])
        return RefitPlan(
            MultiTaskNet,
            extra_inputs={"sample_weight": per_row.numpy()},
            label_weights=means.numpy().astype(np.float64),
        )
    return RefitPlan(
        QWeightedNet,
        extra_inputs={f"critic_{k}": v for k, v in critic_inputs.items()},
        net_kwargs={
            "critic": critic.to(data.device),
            "weighting": weighting,
            "q_lambda": q_lambda,
        },
    )
