"""The torch side of the actor: feature embedding followed by a backbone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sklearn_rmtl._data import forward_batches
from sklearn_rmtl._encoding import UNKNOWN_CODE
from sklearn_rmtl._precision import autocast
from sklearn_rmtl.backbones import BACKBONES, EMBEDDING_KEYS


class FeatureEmbedding(nn.Module):
    """State representation: categorical embeddings plus a numerical projection.

    Each categorical column has its own embedding table (stored as one table
    with per-column offsets, so a batch is one lookup); the numerical columns
    are mapped together by one linear layer to ``embedding_dim``
    (the paper's state representation), or passed on as they are. The
    outputs are concatenated.

    Parameters
    ----------
    cardinalities : sequence of int
        Table size of each categorical column (reserved codes included).
    n_numerical : int
        Number of numerical inputs (scaled numbers and missing indicators).
    embedding_dim : int
        Size of each embedding (paper: 128).
    embedding_init_std : float or None, default=None
        The tables start from ``N(0, embedding_init_std**2)``; None: Xavier
        uniform (``std = sqrt(2 / (n_rows + embedding_dim))``, small for
        large tables). NOTE[DIFF]: a fixed small std (torch-rechub uses
        1e-4) is not the paper's.

    Shape
    -----
    - ``x_cat``: ``(batch, len(cardinalities))`` int64 codes.
    - ``x_num``: ``(batch, n_numerical)`` float32.
    - output: ``(batch, out_features)`` with ``out_features = embedding_dim *
      (len(cardinalities) + (n_numerical > 0))``.
    """

    offsets: Tensor

    def __init__(
        self,
        *,
        cardinalities: Sequence[int],
        n_numerical: int,
        embedding_dim: int,
        embedding_init_std: float | None = None,
    ) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if embedding_init_std is not None and not (
            isinstance(embedding_init_std, int | float)
            and not isinstance(embedding_init_std, bool)
            and 0 < embedding_init_std < float("inf")
        ):
            raise ValueError(
                "embedding_init_std must be None or a positive float, got "
                f"{embedding_init_std!r}"
            )
        if not cardinalities and n_numerical < 1:
            raise ValueError("FeatureEmbedding needs at least one input column.")
        cards = torch.as_tensor(list(cardinalities), dtype=torch.long)
        self.n_categorical = len(cards)
        self.n_numerical = n_numerical
        self.embedding_dim = embedding_dim
        self.embedding_init_std = (
            None if embedding_init_std is None else float(embedding_init_std)
        )
        self.out_features = embedding_dim * (self.n_categorical + (n_numerical > 0))
        self.register_buffer(
            "offsets", torch.cumsum(cards, 0) - cards if len(cards) else cards
        )
        self.embedding = (
            nn.Embedding(int(cards.sum()), embedding_dim) if len(cards) else None
        )
        self.numerical = nn.Linear(n_numerical, embedding_dim) if n_numerical else None
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise the embedding tables (the numerical layer is an nn.Linear)."""
        if self.embedding is not None:
            if self.embedding_init_std is None:
                nn.init.xavier_uniform_(self.embedding.weight, generator=generator)
            else:
                nn.init.normal_(
                    self.embedding.weight,
                    0.0,
                    self.embedding_init_std,
                    generator=generator,
                )
            # Values unseen in training never receive a gradient: a zero
            # vector is a neutral representation for them.
            with torch.no_grad():
                self.embedding.weight[self.offsets + UNKNOWN_CODE] = 0.0

    def forward(self, x_cat: Tensor, x_num: Tensor) -> Tensor:
        parts = []
        if self.embedding is not None:
            parts.append(self.embedding(x_cat + self.offsets).flatten(1))
        if self.numerical is not None:
            parts.append(self.numerical(x_num))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class MultiTaskModule(nn.Module):
    """Embedding plus a registered backbone: features -> one logit per task.

    Parameters
    ----------
    cardinalities : sequence of int
        Embedding table size of each categorical column.
    n_numerical : int
        Number of numerical inputs.
    n_tasks : int
        Number of tasks K.
    backbone : str
        A key of :data:`sklearn_rmtl.backbones.BACKBONES`.
    backbone_params : mapping
        Full size keywords of the backbone plus the embedding keywords
        (:data:`sklearn_rmtl.backbones.EMBEDDING_KEYS`, see
        :func:`sklearn_rmtl.backbones.resolve_backbone_params`); missing
        embedding keywords take :class:`FeatureEmbedding`'s defaults.

    Shape: ``x_cat (batch, n_cat), x_num (batch, n_num) -> (batch, n_tasks)``
    logits. Extra keyword inputs (such as per-row loss weights riding in the
    skorch input dict) are accepted and ignored.
    """

    def __init__(
        self,
        *,
        cardinalities: Sequence[int],
        n_numerical: int,
        n_tasks: int,
        backbone: str,
        backbone_params: Mapping[str, Any],
    ) -> None:
        super().__init__()
        params = dict(backbone_params)
        embedding = {k: params.pop(k) for k in EMBEDDING_KEYS if k in params}
        self.embedding = FeatureEmbedding(
            cardinalities=cardinalities, n_numerical=n_numerical, **embedding
        )
        self.backbone = BACKBONES[backbone](
            in_features=self.embedding.out_features, n_tasks=n_tasks, **params
        )

    def forward(self, x_cat: Tensor, x_num: Tensor, **_: Tensor) -> Tensor:
        return self.backbone(self.embedding(x_cat, x_num))


def actor_proba(
    actor: nn.Module, x_cat: Tensor, x_num: Tensor, precision: str = "float32"
) -> Tensor:
    """The actor's probabilities for every row (eval mode), where the inputs are.

    Parameters
    ----------
    actor : MultiTaskModule
        The actor network; moved to the inputs' device and set to eval mode.
    x_cat : Tensor of shape (n_samples, n_categorical)
        Categorical codes.
    x_num : Tensor of shape (n_samples, n_numerical)
        Numerical inputs.
    precision : {"float32", "bfloat16", "float16"}, default="float32"
        The dtype of the forward pass's matrix products.

    Returns
    -------
    Tensor of shape (n_samples, n_tasks)
        ``sigmoid`` of the actor's logits (float32), computed in batches.
    """
    actor.eval().to(x_cat.device)
    with autocast(precision, x_cat.device):
        return forward_batches(
            lambda rows: torch.sigmoid(actor(x_cat[rows], x_num[rows]).float()),
            len(x_cat),
        )
