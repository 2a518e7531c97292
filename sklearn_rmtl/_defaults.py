"""The paper's default hyper-parameters, kept in one place.

Liu et al., "Multi-Task Recommendations with Reinforcement Learning", WWW 2023,
Sec. 3.2; see ``ALGORITHM.md`` ("Default hyper-parameters").
"""

from __future__ import annotations

from typing import Any

#: Network sizes shared by every backbone (a backbone takes the keys it uses).
BACKBONE_DEFAULTS: dict[str, Any] = {
    "embedding_dim": 128,
    "bottom_dims": (512, 256),
    "tower_dims": (128, 64),
    "dropout": 0.2,
    "n_experts": 8,
    # PLE: 4 shared + 4 task-specific experts per task, one extraction layer
    # per entry of ``bottom_dims``.
    "n_shared_experts": 4,
    "n_specific_experts": 4,
}

BATCH_SIZE = 2048
LEARNING_RATE = 1e-3
