"""SingleTask: one independent network per task."""

from __future__ import annotations

from torch import Tensor

from sklearn_rmtl.backbones._base import SimpleBackbone, fill_doc


@fill_doc()
class SingleTask(SimpleBackbone):
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

    def _build(self) -> None:
        self.bottoms = self._mlps(self.n_tasks, self.in_features)
        self.towers = self._towers(self.bottoms.out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.towers(self.bottoms(x))
