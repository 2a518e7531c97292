"""SharedBottom: a shared bottom MLP with one tower per task."""

from __future__ import annotations

from torch import Tensor

from sklearn_rmtl.backbones._base import SimpleBackbone, fill_doc


@fill_doc()
class SharedBottom(SimpleBackbone):
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

    def _build(self) -> None:
        self.bottom = self._mlps(1, self.in_features)
        self.towers = self._towers(self.bottom.out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.towers(self.bottom(x).squeeze(1))
