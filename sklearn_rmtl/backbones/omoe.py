"""OMoE: one-gate mixture-of-experts."""

from __future__ import annotations

from sklearn_rmtl.backbones._base import fill_doc, parameters_doc
from sklearn_rmtl.backbones.mmoe import MMoE


@fill_doc(mmoe_parameters=parameters_doc(MMoE))
class OMoE(MMoE):
    """Shared experts mixed by a single softmax gate shared by all tasks.

    Takes the parameters of :class:`MMoE`; the only difference is the one
    gate, so every tower reads the same mixture.

    Parameters
    ----------
    {mmoe_parameters}

    Notes
    -----
    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.
    """

    one_gate = True
