"""SharedBottom: a shared bottom MLP with one tower per task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, fill_doc


@fill_doc()
class SharedBottom(Backbone):
    """Hard parameter sharing: one bottom MLP feeds a tower per task.

    Parameters
    ----------
    {in_features} {n_tasks}
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of the shared bottom MLP.
    {tower_dims} {dropout} {batch_norm}

    Notes
    -----
    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.
    """

    allow_empty_bottom = True

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
        batch_norm: bool = D["batch_norm"],
    ) -> None:
        super().__init__(in_features=in_features, n_tasks=n_tasks)
        self._check_sizes(bottom_dims, tower_dims, dropout, batch_norm)
        self.bottom = self._mlps(1, in_features)
        self.towers = self._towers(self.bottom.out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.towers(self.bottom(x).squeeze(1))
