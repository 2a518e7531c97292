"""The paper's default hyper-parameters, kept in one place.

Liu et al., "Multi-Task Recommendations with Reinforcement Learning", WWW 2023,
Sec. 3.2; see docs/user_guide.rst.
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
    # Not in the paper (docs/backbone_quality.rst); these defaults are the
    # paper's networks.
    "batch_norm": False,
    "gate_batch_norm": False,
    # Std of the normal the embedding tables start from; None: Xavier uniform.
    "embedding_init_std": None,
    # Sequence columns (not in the paper): DIN's target attention, with the
    # attention MLP sizes of DeepCTR's DIN.
    "sequence_pooling": "attention",
    "attention_dims": (80, 40),
    # PEPNet: the prior fields of its gates (None: every categorical column)
    # and the hidden size of each gate NU (the paper does not give one).
    "gate_fields": None,
    "ppnet_fields": None,
    "gate_hidden_dim": 64,
    # ESMM's ESCM2 regulariser (Wang et al., SIGIR 2022): off by default; its
    # weight is PaddleRec's counterfactual_w for Ali-CCP; the propensity
    # floor bounds the inverse-propensity weights at 20.
    "counterfactual": None,
    "counterfactual_weight": 0.5,
    "min_propensity": 0.05,
}

BATCH_SIZE = 2048
LEARNING_RATE = 1e-3
# NOTE[DIFF]: the paper refits at the pretraining rate (1e-3); restarting
# Adam at that rate on a fitted network undid part of the fit (docs/
# user_guide.rst, "Choosing the refit's settings").
REFIT_LEARNING_RATE = 1e-4

# RMTL (paper Sec. 2.5-2.6).
GAMMA = 0.95  # discount; the authors' code used 0.9
TAU = 0.2  # soft-update rate beta of Eq. (18)
SOFT_UPDATE_FREQ = 2  # steps between soft updates
Q_LAMBDA = 0.7  # lambda of Eq. (17)
CRITIC_HIDDEN_DIMS = (512, 256)
#: Std of the Gaussian noise added to the actor's actions in the buffer.
ACTION_NOISE = 0.1
#: Weight of the Q term against behaviour cloning in the D-PLE actor step
#: (TD3+BC's default).
BC_ALPHA = 2.5
