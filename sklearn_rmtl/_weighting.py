"""From critic values to per-row, per-task loss weights (Eqs. 7, 10, 16-17).

``Q <= 0`` by construction, so the RMTL weight ``1 - lambda * Q`` is >= 1:
rows whose predicted action the critic expects to lead to a worse session
return get more weight. The other variants are the paper's Table 2
ablations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

WeightFn = Callable[[Tensor, Tensor, float], Tensor]

#: ``weighting`` name -> ``w(Q, y, q_lambda)``; shapes (batch, n_tasks).
WEIGHTINGS: dict[str, WeightFn] = {
    # RMTL, Eq. (17): w = 1 - lambda * Q
    "rmtl": lambda q, y, lam: 1.0 - lam * q,
    # CW: constant weights, i.e. keep training the baseline
    "constant": lambda q, y, lam: torch.ones_like(q),
    # WL: only positive labels are re-weighted, w = 1 - lambda * y * Q
    "label_q": lambda q, y, lam: 1.0 - lam * y * q,
    # NLC: the negative critic value alone, w = -Q
    "neg_q": lambda q, y, lam: -q,
}
