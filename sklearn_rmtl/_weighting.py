"""From critic values to per-row, per-task loss weights (Eqs. 7, 10, 16-17).

``Q <= 0`` by construction, so the RMTL weight ``1 - lambda * Q`` is >= 1:
rows whose predicted action the critic expects to lead to a worse session
return get more weight. The other variants are the paper's Table 2
ablations; the controls that separate what the weights say about single
rows from a re-weighting (label means, shuffled and flipped weights); and
weights from realised session outcomes, which need no critic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sklearn_rmtl._data import forward_batches
from sklearn_rmtl._precision import autocast

WeightFn = Callable[[Tensor, Tensor, float], Tensor]


def _rmtl(q: Tensor, y: Tensor, lam: float) -> Tensor:
    return 1.0 - lam * q


@dataclass(frozen=True)
class Weighting:
    """How a refit weighs each row's loss, per task.

    Parameters
    ----------
    fn : callable or None
        ``w(Q, y, q_lambda)``, shapes (batch, n_tasks), from the critics'
        values; None for the weightings of realised outcomes.
    fixed : bool, default=False
        The weights are computed once, at the pretrained actor, before the
        refit, and ride with the rows (no critic in the refit steps).
        Otherwise ``fn`` is evaluated at the actor's current prediction in
        every refit step.
    label_mean : bool, default=False
        Replace each row's weight by the mean weight of the training rows
        with the same label of that task.
    outcome : {None, "later", "session"}, default=None
        Weights from the realised outcome of the row's session instead of a
        critic (:func:`outcome_weights`): the later rows' surprise, or the
        session's other rows' surprise.
    control : {None, "shuffled", "flipped"}, default=None
        A control of the weights: permuted, or with their ranks reversed,
        within each task x label x rows-left stratum (:func:`control`).
    """

    fn: WeightFn | None
    fixed: bool = False
    label_mean: bool = False
    outcome: str | None = None
    control: str | None = None

    @property
    def needs_critic(self) -> bool:
        """Whether the weights read the critics (which are then trained)."""
        return self.fn is not None and self.fn is not _constant


def _constant(q: Tensor, y: Tensor, lam: float) -> Tensor:
    return torch.ones_like(q)


#: ``weighting`` name -> :class:`Weighting`.
WEIGHTINGS: dict[str, Weighting] = {
    # RMTL, Eq. (17): w = 1 - lambda * Q
    "rmtl": Weighting(_rmtl),
    # CW: constant weights, i.e. keep training the baseline
    "constant": Weighting(_constant),
    # WL: only positive labels are re-weighted, w = 1 - lambda * y * Q
    "label_q": Weighting(lambda q, y, lam: 1.0 - lam * y * q),
    # NLC: the negative critic value alone, w = -Q
    "neg_q": Weighting(lambda q, y, lam: -q),
    # Controls, not in the paper. RMTL's weights averaged per task and
    # label: they keep how much RMTL up-weights positives or negatives on
    # average and drop what Q says about individual rows, so RMTL beating
    # them shows an effect of Q beyond a re-balancing of the labels.
    "label_mean": Weighting(_rmtl, fixed=True, label_mean=True),
    # RMTL's weights at the pretrained actor, fixed for the refit: the
    # counterpart of the two controls below.
    "rmtl_fixed": Weighting(_rmtl, fixed=True),
    # The same weights permuted within task x label x rows-left strata:
    # the same distribution, the alignment with the rows destroyed.
    "rmtl_shuffled": Weighting(_rmtl, fixed=True, control="shuffled"),
    # Their ranks reversed within the strata: the same distribution, the
    # alignment reversed.
    "rmtl_flipped": Weighting(_rmtl, fixed=True, control="flipped"),
    # The realised outcome of the later rows of the session (no critic).
    "outcome": Weighting(None, fixed=True, outcome="later"),
    "outcome_session": Weighting(None, fixed=True, outcome="session"),
    "outcome_label_mean": Weighting(None, fixed=True, outcome="later", label_mean=True),
    "outcome_shuffled": Weighting(
        None, fixed=True, outcome="later", control="shuffled"
    ),
    "outcome_flipped": Weighting(None, fixed=True, outcome="later", control="flipped"),
}

#: The strength and the clip of the outcome weights (:func:`outcome_weights`):
#: ``w = base * (1 + OUTCOME_ALPHA * clip(z, -OUTCOME_CLIP, OUTCOME_CLIP))``,
#: so ``w / base`` lies in [0.5, 1.5].
OUTCOME_ALPHA, OUTCOME_CLIP = 0.25, 2.0


def outcome_weights(
    returns: np.ndarray,
    later: np.ndarray,
    y01: np.ndarray,
    train: np.ndarray,
    q_lambda: float,
    *,
    label_mean_only: bool = False,
) -> np.ndarray:
    """Loss weights from realised session outcomes, nested on label means.

    The base weight of a row and task is RMTL's weight with the critic's
    estimate replaced by the realised discounted return,
    ``1 + q_lambda * returns`` (``returns`` is the realised discounted BCE
    from the row on, so ``-returns`` is what Q estimates), averaged over the
    training rows with the same label of that task (a label-mean weight:
    the control that the outcome weights contain). The row's own term is
    ``z``, the later rows' ``later`` (realised minus expected loss)
    standardised per task over the training rows:
    ``w = base * (1 + OUTCOME_ALPHA * clip(z, -OUTCOME_CLIP, OUTCOME_CLIP))``.

    Parameters
    ----------
    returns, later : ndarray of shape (n_rows, n_tasks)
        The realised discounted BCE from each row on, and the later rows'
        discounted surprise (:mod:`sklearn_rmtl._outcome`).
    y01 : ndarray of shape (n_rows, n_tasks)
        0/1 labels.
    train : ndarray of shape (n_rows, n_tasks)
        1 where the entry is a training entry (observed, weighed, not held
        out), else 0.
    q_lambda : float
        The paper's lambda.
    label_mean_only : bool, default=False
        Return the base weights alone (the nested control).

    Returns
    -------
    ndarray of shape (n_rows, n_tasks), float32
    """
    w_mc = 1.0 + q_lambda * returns
    pos = y01 > 0.5
    base = np.ones_like(w_mc)
    for label in (False, True):
        m = train * (pos == label)
        total = m.sum(0)
        mean = (w_mc * m).sum(0) / np.maximum(total, 1e-12)
        base = np.where(pos == label, np.where(total > 0, mean, 1.0), base)
    if label_mean_only:
        return base.astype(np.float32)
    n = np.maximum(train.sum(0), 1e-12)
    mu = (later * train).sum(0) / n
    sd = np.sqrt((((later - mu) ** 2) * train).sum(0) / n)
    z = np.where(sd > 0, (later - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    z = np.clip(z, -OUTCOME_CLIP, OUTCOME_CLIP)
    return (base * (1.0 + OUTCOME_ALPHA * z)).astype(np.float32)


def control(
    kind: str,
    weights: np.ndarray,
    y01: np.ndarray,
    bucket: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A control of ``weights`` within task x label x rows-left strata.

    Both keep each stratum's multiset of weights, so its distribution,
    exactly. ``"shuffled"`` permutes the weights within each stratum (the
    alignment with the rows destroyed); ``"flipped"`` reverses their ranks
    (the largest weight goes to the row that had the smallest: the
    alignment reversed, a sign flip that keeps the weights positive).

    Parameters
    ----------
    kind : {"shuffled", "flipped"}
        The control.
    weights : ndarray of shape (n_rows, n_tasks)
        The weights to control.
    y01 : ndarray of shape (n_rows, n_tasks)
        0/1 labels.
    bucket : ndarray of shape (n_rows,)
        Each row's rows-left bucket (:func:`~sklearn_rmtl._outcome.rows_left_bucket`).
    rng : numpy.random.Generator
        The source of the permutations.

    Returns
    -------
    ndarray of shape (n_rows, n_tasks), float32
    """
    out = np.array(weights, dtype=np.float32, copy=True)
    for k in range(weights.shape[1]):
        strata = bucket * 2 + (y01[:, k] > 0.5)
        order = np.argsort(strata, kind="stable")
        cuts = np.flatnonzero(np.diff(strata[order])) + 1
        for rows in np.split(order, cuts):
            w = weights[rows, k]
            if kind == "shuffled":
                out[rows, k] = w[rng.permutation(len(rows))]
            else:
                ranked = np.argsort(w, kind="stable")
                out[rows[ranked], k] = w[ranked[::-1]]
    return out


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
        The critic's encoding of the rows (``x_cat``, ``x_num``), and with
        cross-fitted critics each row's ``fold``.
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
    assert fn is not None, f"weighting={weighting!r} reads no critic"
    x_cat, x_num = inputs["x_cat"], inputs["x_num"]
    fold = inputs.get("fold")

    def q(rows: slice) -> Tensor:
        routed = () if fold is None else (fold[rows],)
        return critic(x_cat[rows], x_num[rows], proba[rows], *routed).float()

    with autocast(precision, x_cat.device):
        return forward_batches(
            lambda rows: fn(
                q(rows),
                y01[rows],
                q_lambda,
            ),
            len(proba),
        )
