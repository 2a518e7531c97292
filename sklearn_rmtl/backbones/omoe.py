"""OMoE: one-gate mixture-of-experts."""

from __future__ import annotations

from sklearn_rmtl.backbones.mmoe import MMoE


class OMoE(MMoE):
    """Shared experts mixed by a single softmax gate shared by all tasks.

    Takes the parameters of :class:`MMoE`; the only difference is the one
    gate, so every tower reads the same mixture.

    Parameters
    ----------
    in_features : int
        Size of the state vector.
    n_tasks : int
        Number of tasks.
    n_experts : int, default=8
        Number of shared experts.
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each expert MLP.
    tower_dims : sequence of int, default=(128, 64)
        Hidden sizes of each task's tower.
    dropout : float, default=0.2
        Dropout after every hidden activation.
    batch_norm : bool, default=False
        Batch normalisation (per group and feature) before every hidden
        activation of the bottoms/experts and towers. NOTE[DIFF]: the paper's
        networks have none; torch-rechub's MLPs have it.
    gate_batch_norm : bool, default=False
        Batch normalisation of the gate scores before the softmax, as in
        torch-rechub's gates. NOTE[DIFF]: not in the paper's networks.

    Notes
    -----
    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.
    """

    one_gate = True
