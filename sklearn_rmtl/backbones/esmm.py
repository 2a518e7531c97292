"""ESMM: entire-space multi-task model (CTCVR = CTR x CVR), with ESCM2's
counterfactual regularisers as an option."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import fill_doc
from sklearn_rmtl.backbones._layers import Towers
from sklearn_rmtl.backbones.singletask import SingleTask

#: The values of ``counterfactual``: none, ESCM2-IPW or ESCM2-DR.
COUNTERFACTUALS = (None, "ipw", "dr")


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate at both ends."""
    return torch.where(
        x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x))
    )


def _check_counterfactual(
    counterfactual: str | None, weight: float, min_propensity: float
) -> tuple[str | None, float, float]:
    """Validate ESMM's counterfactual settings and return them as plain values."""
    if counterfactual not in COUNTERFACTUALS:
        raise ValueError(
            "counterfactual must be None, 'ipw' or 'dr' (ESCM2's regularisers "
            f"of the conversion towers), got {counterfactual!r}."
        )
    if (
        not isinstance(weight, Real)
        or isinstance(weight, bool)
        or not 0 <= weight < math.inf
    ):
        raise ValueError(
            f"counterfactual_weight must be a finite float >= 0, got {weight!r}."
        )
    if (
        not isinstance(min_propensity, Real)
        or isinstance(min_propensity, bool)
        or not 0 < min_propensity <= 1
    ):
        raise ValueError(
            f"min_propensity must be a float in (0, 1], got {min_propensity!r}."
        )
    return counterfactual, float(weight), float(min_propensity)


@fill_doc()
class ESMM(SingleTask):
    """Entire-space multi-task model, generalised to a K-step funnel.

    Task ``k``'s probability is the product of the sigmoids of towers
    ``1..k`` (with K = 2: pCTCVR = pCTR x pCVR), so every task is learned over
    the full sample space. Each task has its own bottom MLP and tower, as in
    :class:`SingleTask`, whose parameters it takes.

    Parameters
    ----------
    {in_features}
    n_tasks : int
        Number of funnel steps K >= 2, in funnel order (e.g. click, purchase).
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each task's bottom MLP.
    {tower_dims} {dropout} {batch_norm}
    counterfactual : {None, "ipw", "dr"}, default=None
        ESCM2's counterfactual regulariser of the conversion towers, added
        to the training loss (see Notes); None trains plain ESMM.
    counterfactual_weight : float, default=0.5
        Its weight ``lambda`` in the loss: ESMM's loss ``+ lambda * R``
        (PaddleRec's ``counterfactual_w`` for Ali-CCP).
    min_propensity : float, default=0.05
        Floor of the propensities ``p_hat`` the regulariser divides by, so
        that an inverse-propensity weight is at most ``1 / min_propensity``.

    Notes
    -----
    The products are formed in log space and returned as logits, so the
    loss stays a numerically stable BCE-with-logits.

    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits of the
    cumulative probabilities.

    **ESCM2** (Wang et al. 2022). Tower ``k >= 2`` predicts the conditional
    rate ``P(y_k = 1 | y_{k-1} = 1, x)`` (the CVR), learned by ESMM only
    through the product. ESCM2 adds a counterfactual risk of that tower
    over the entire space: with the observation ``o = y_{k-1}`` (the
    click), its propensity ``p_hat = P(y_{k-1} = 1 | x)`` (task
    ``k - 1``'s prediction, pCTR for K = 2; detached and floored at
    ``min_propensity``) and ``e = BCE(tower_k, y_k)`` the tower's error,

    - ``"ipw"``: ``R = mean(o * e / p_hat)``;
    - ``"dr"``: an imputation tower (one per step ``k >= 2``, reading step
      ``k``'s bottom, softplus output) predicts ``e_hat`` on every row, and
      ``R = mean(e_hat + o * (e - e_hat) / p_hat) + mean(o * (e - e_hat)^2
      / p_hat)``: the doubly robust error plus the imputation tower's own
      loss.

    The means are over every row of the batch (the entire space) whose
    labels ``y_{k-1}`` and ``y_k`` are both present, each row counting
    with its sample weight of task ``k``; with K > 2 the steps' ``R`` are
    summed. The regulariser is training-only: :meth:`forward` returns the
    same logits, predictions and exports are those of ESMM, and the
    imputation towers are never evaluated outside training.

    NOTE[DIFF]: for ``"dr"``, ``e_hat`` is detached in the doubly robust
    error and ``e`` in the imputation loss (the alternating roles of the
    joint learning of Wang et al., ICML 2019); PaddleRec's ESCM2 lets both
    gradients through and detaches its propensity only for IPW. PaddleRec
    caps the IPW weights at 15 (with a propensity that its code rescales
    by the batch's clicks) and floors the DR propensity at 1e-6; here one
    floor, ``min_propensity``, serves both. PaddleRec's imputation output
    is a probability; ``softplus`` lets it reach errors above 1. K > 2 is
    this library's generalisation.

    References
    ----------
    X. Ma et al., "Entire Space Multi-Task Model", SIGIR 2018.

    H. Wang et al., "ESCM2: Entire Space Counterfactual Multi-Task Model for
    Post-Click Conversion Rate Estimation", SIGIR 2022.
    """

    min_tasks = 2

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
        batch_norm: bool = D["batch_norm"],
        counterfactual: str | None = D["counterfactual"],
        counterfactual_weight: float = D["counterfactual_weight"],
        min_propensity: float = D["min_propensity"],
    ) -> None:
        super().__init__(
            in_features=in_features,
            n_tasks=n_tasks,
            bottom_dims=bottom_dims,
            tower_dims=tower_dims,
            dropout=dropout,
            batch_norm=batch_norm,
        )
        (
            self.counterfactual,
            self.counterfactual_weight,
            self.min_propensity,
        ) = _check_counterfactual(counterfactual, counterfactual_weight, min_propensity)
        # Registered after the task towers, so that the other layers start
        # from the same draws with and without it.
        self.imputation = (
            self._towers_of(self.n_tasks - 1, self.bottoms.out_features)
            if self.counterfactual == "dr"
            else None
        )
        # What the last training forward pass left for :meth:`extra_loss`:
        # the task towers' logits and the imputed errors (DR), graphs
        # attached. Never persisted (see ``__getstate__``).
        self._train_outputs: tuple[Tensor, Tensor | None] | None = None

    def _towers_of(self, n: int, in_features: int) -> Towers:
        """``n`` towers of sizes ``tower_dims``: the imputation towers."""
        return Towers(
            n, in_features, self.tower_dims, self.dropout, batch_norm=self.batch_norm
        )

    def __getstate__(self) -> dict[str, Any]:
        # A copy or pickle never carries a training step's graph.
        state = dict(super().__getstate__())
        state["_train_outputs"] = None
        return state

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.bottoms(x)
        z = self.towers(hidden)
        if self.counterfactual is not None:
            if self.training and torch.is_grad_enabled():
                imputed = None
                if self.imputation is not None:
                    imputed = F.softplus(self.imputation(hidden[:, 1:]))
                self._train_outputs = (z, imputed)
            else:
                self._train_outputs = None
        # log p_k = sum_{i<=k} log sigmoid(z_i); logit = log p - log(1 - p).
        # The clamp keeps p < 1 so the logit stays finite.
        log_p = torch.cumsum(F.logsigmoid(z), dim=1)
        log_p = log_p.clamp(max=-1e-7)
        return log_p - _log1mexp(log_p)

    def extra_loss(
        self,
        y: Tensor,
        mask: Tensor | None = None,
        total: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor | None:
        """``counterfactual_weight * R`` of the last training forward pass.

        Reads (and forgets) the towers' outputs that :meth:`forward` kept in
        training mode; None without ``counterfactual`` or without such a
        pass (in eval mode, under ``torch.no_grad``).

        Parameters
        ----------
        y : Tensor of shape (batch, n_tasks)
            The batch's 0/1 labels; anything (NaN too) where ``mask`` is 0.
        mask : Tensor of shape (batch, n_tasks), default=None
            The loss mask (the user's sample weights, 0 where a label is
            missing); None: every label present, weight 1.
        total : callable, default=None
            Maps this batch's per-step sums of row weights to the
            normalisers (data parallelism: their sums over the ranks, so
            that each shard's loss is its share of the whole batch's).

        Returns
        -------
        loss : Tensor or None
            A float32 scalar attached to the graph.
        """
        stored, self._train_outputs = self._train_outputs, None
        if self.counterfactual is None or stored is None:
            return None
        z, imputed = stored
        z = z.float()
        present = torch.ones_like(z) if mask is None else mask.to(z)
        # Missing labels are replaced before the loss, so that neither their
        # value nor a NaN reaches the loss or its gradient.
        y = torch.where(present > 0, y.to(z), torch.zeros_like(z))
        # Step k (tower k >= 1, 0-based): rows with both labels, weighted
        # as in task k's loss.
        weight = torch.where(
            present[:, :-1] > 0, present[:, 1:], torch.zeros_like(z[:, 1:])
        )
        observed = y[:, :-1]
        # p_hat_k = P(y_{k-1} = 1 | x) = prod_{i<k} sigmoid(z_i), detached.
        log_p = torch.cumsum(F.logsigmoid(z.detach()), dim=1)[:, :-1]
        inverse = observed / log_p.exp().clamp(min=self.min_propensity)
        error = F.binary_cross_entropy_with_logits(z[:, 1:], y[:, 1:], reduction="none")
        if imputed is None:
            terms = inverse * error
        else:
            imputed = imputed.float()
            fixed = imputed.detach()
            terms = (
                fixed
                + inverse * (error - fixed)
                + inverse * (error.detach() - imputed) ** 2
            )
        terms = torch.where(weight > 0, terms * weight, torch.zeros_like(terms))
        norm = weight.sum(0)
        if total is not None:
            norm = total(norm)
        per_step = terms.sum(0) / norm.clamp(min=torch.finfo(norm.dtype).tiny)
        return self.counterfactual_weight * per_step.sum()
