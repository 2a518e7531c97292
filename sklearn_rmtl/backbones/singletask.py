"""SingleTask: one independent network per task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, fill_doc


@fill_doc()
class SingleTask(Backbone):
    """One bottom MLP and one tower per task, sharing nothing but the input.

    Parameters
    ----------
    {in_features} {n_tasks}
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of each task's bottom MLP.
    tower_dims : sequence of int, default=(128, 64)
        Hidden sizes of each task's tower (a final layer maps to one logit).
    {dropout} {batch_norm}

    Notes
    -----
    NOTE[DIFF]: the feature embeddings are shared by the tasks (they live in
    the estimator's embedding layer, which the critics also start from);
    everything after them is independent per task.

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
        self.bottoms = self._mlps(n_tasks, in_features)
        self.towers = self._towers(self.bottoms.out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.towers(self.bottoms(x))
