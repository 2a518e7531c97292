"""From critic values to per-row, per-task loss weights (Eqs. 7, 10, 16-17).

``Q <= 0`` by construction, so the RMTL weight ``1 - lambda * Q`` is >= 1:
rows whose predicted action the critic expects to lead to a worse session
return get more weight. The other variants are the paper's Table 2
ablations, and one control of our own ("label_mean").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sklearn_rmtl._data import forward_batches
from sklearn_rmtl._precision import autocast

WeightFn = Callable[[Tensor, Tensor, float], Tensor]


def _rmtl(q: Tensor, y: Tensor, lam: float) -> Tensor:
    return 1.0 - lam * q


@dataclass(frozen=True)
class Weighting:
    """How a refit turns critic values into loss weights.

    Parameters
    ----------
    fn : callable
        ``w(Q, y, q_lambda)``, shapes (batch, n_tasks).
    label_mean : bool, default=False
        Replace each row's weight by the mean of ``fn`` over the training
        rows with the same label of that task, computed once at the
        pretrained actor before the refit (fixed weights, no critic in the
        refit steps).
    """

    fn: WeightFn
    label_mean: bool = False


#: ``weighting`` name -> :class:`Weighting`.
WEIGHTINGS: dict[str, Weighting] = {
    # RMTL, Eq. (17): w = 1 - lambda * Q
    "rmtl": Weighting(_rmtl),
    # CW: constant weights, i.e. keep training the baseline
    "constant": Weighting(lambda q, y, lam: torch.ones_like(q)),
    # WL: only positive labels are re-weighted, w = 1 - lambda * y * Q
    "label_q": Weighting(lambda q, y, lam: 1.0 - lam * y * q),
    # NLC: the negative critic value alone, w = -Q
    "neg_q": Weighting(lambda q, y, lam: -q),
    # A control, not in the paper: RMTL's weights averaged per task and
    # label. It keeps how much RMTL up-weights positives or negatives on
    # average and drops what Q says about individual rows, so RMTL beating
    # it shows an effect of Q beyond a re-balancing of the labels.
    "label_mean": Weighting(_rmtl, label_mean=True),
}


def label_mean_weights(
    weights: Tensor, y01: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Mean weight per task and label: shape (n_tasks, 2), [k, 0] for label 0.

    With ``mask`` (sample weights, 0 for a missing label) the means are
    weighted by it, over the observed labels only. A label absent from a
    task gets weight 1.
    """
    pos = y01 > 0.5
    if mask is None:
        n_pos = pos.sum(0)
        n_neg = y01.shape[0] - n_pos
        sum_pos = torch.where(pos, weights, 0.0).sum(0)
        sum_neg = weights.sum(0) - sum_pos
        mean_pos = torch.where(n_pos > 0, sum_pos / n_pos.clamp(min=1), 1.0)
        mean_neg = torch.where(n_neg > 0, sum_neg / n_neg.clamp(min=1), 1.0)
        return torch.stack([mean_neg, mean_pos], dim=1)
    n_pos = torch.where(pos, mask, 0.0).sum(0)
    n_neg = torch.where(pos, 0.0, mask).sum(0)
    sum_pos = torch.where(pos, weights * mask, 0.0).sum(0)
    sum_neg = torch.where(pos, 0.0, weights * mask).sum(0)
    tiny = torch.finfo(mask.dtype).tiny
    mean_pos = torch.where(n_pos > 0, sum_pos / n_pos.clamp(min=tiny), 1.0)
    mean_neg = torch.where(n_neg > 0, sum_neg / n_neg.clamp(min=tiny), 1.0)
    return torch.stack([mean_neg, mean_pos], dim=1)


def critic_row_weights(
    critic: nn.Module,
    inputs: dict[str, Tensor],
    proba: Tensor,
    y01: Tensor,
    weighting: str,
    q_lambda: float,
    precision: str = "float32",
) -> Tensor:
    """The weighting's weights of every row, Q taken at actions ``proba``.

    Parameters
    ----------
    critic : Critic
        ``(x_cat, x_num, actions) -> Q``; set to eval mode.
    inputs : dict of str to Tensor
        The critic's encoding of the rows (``x_cat``, ``x_num``).
    proba : Tensor of shape (n_samples, n_tasks)
        The actions at which Q is evaluated (the actor's predictions).
    y01 : Tensor of shape (n_samples, n_tasks)
        0/1 labels.
    weighting : str
        Key of :data:`WEIGHTINGS`.
    q_lambda : float
        The paper's lambda.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        The dtype of the critic's matrix products.

    Returns
    -------
    Tensor of shape (n_samples, n_tasks)
    """
    critic.eval()
    fn = WEIGHTINGS[weighting].fn
    x_cat, x_num = inputs["x_cat"], inputs["x_num"]
    with autocast(precision, x_cat.device):
        return forward_batches(
            lambda rows: fn(
                critic(x_cat[rows], x_num[rows], proba[rows]).float(),
                y01[rows],
                q_lambda,
            ),
            len(proba),
        )
