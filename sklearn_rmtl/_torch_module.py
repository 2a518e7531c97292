"""The torch side of the actor: feature embedding followed by a backbone."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sklearn_rmtl._data import forward_batches
from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl._encoding import MISSING_CODE, UNKNOWN_CODE
from sklearn_rmtl._precision import autocast
from sklearn_rmtl.backbones import BACKBONES, EMBEDDING_KEYS, StateFields

#: How a sequence column's element embeddings become one vector.
SEQUENCE_POOLINGS = ("attention", "mean", "sum")


class TargetAttention(nn.Module):
    """DIN's attention of a sequence by a candidate (Zhou et al., KDD 2018).

    Each element ``h`` of the sequence gets the weight ``MLP([h, c, h - c,
    h * c])`` for the candidate ``c``; the output is the weighted sum of the
    elements, padding left out. As in DIN the weights are not normalised
    (no softmax), so the output keeps how much of the history matches.

    Shape: ``history (batch, L, d), candidate (batch, d), mask (batch, L)
    -> (batch, d)``.
    """

    def __init__(self, embedding_dim: int, hidden_dims: Sequence[int]) -> None:
        super().__init__()
        widths = [4 * embedding_dim, *hidden_dims, 1]
        # The MLP: ``first``, then ``rest`` (ReLU and the other layers).
        self.first = nn.Linear(widths[0], widths[1])
        layers: list[nn.Module] = []
        for width, size in itertools.pairwise(widths[1:]):
            layers += [nn.ReLU(), nn.Linear(width, size)]
        self.rest = nn.Sequential(*layers)

    def forward(self, history: Tensor, candidate: Tensor, mask: Tensor) -> Tensor:
        # The first layer on [h, c, h - c, h * c] is W_h h + W_c c + W_d (h - c)
        # + W_p (h * c): the candidate's part is computed once per row, not
        # once per element, and [h, h * c] is half the input per element.
        # The same function and parameters as the concatenation.
        w_h, w_c, w_d, w_p = self.first.weight.chunk(4, dim=1)
        c = candidate.unsqueeze(1)
        per_row = nn.functional.linear(candidate, w_c - w_d, self.first.bias)
        per_element = nn.functional.linear(
            torch.cat([history, history * c], dim=-1), torch.cat([w_h + w_d, w_p], 1)
        )
        scores = self.rest(per_element + per_row.unsqueeze(1))
        weights = scores.squeeze(-1) * mask
        return torch.einsum("bl,bld->bd", weights.to(history.dtype), history)


class FeatureEmbedding(nn.Module):
    """State representation: categorical embeddings plus a numerical projection.

    Each categorical column has its own embedding table (stored as one table
    with per-column offsets, so a batch is one lookup); the numerical columns
    are mapped together by one linear layer to ``embedding_dim``
    (the paper's state representation), or passed on as they are. Each
    sequence column's elements are looked up in a table (the one of the
    categorical column whose vocabulary it shares, or its own) and pooled
    into one vector. The outputs are concatenated.

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
    sequences : sequence of (int, int, int), default=()
        Per sequence column, ``(table, candidate, length)``: the index in
        ``cardinalities`` of the table its codes index, the categorical
        column whose embedding attends it (-1: none, a multi-valued field
        with a table of its own) and its number of code columns. The tables
        of the categorical columns come first in ``cardinalities``, then
        those of the sequences' own vocabularies. NOTE[DIFF]: the paper's
        state has no behaviour sequences.
    sequence_pooling : {"attention", "mean", "sum"}, default="attention"
        How a sequence's element embeddings become one vector: target
        attention by its candidate (:class:`TargetAttention`; a sequence
        without a candidate is averaged), their mean, or their sum; padding
        (code 0) is left out.
    attention_dims : sequence of int, default=(80, 40)
        Hidden sizes of each attention MLP (DIN's defaults in DeepCTR).

    Shape
    -----
    - ``x_cat``: ``(batch, n_categorical + sum of the sequences' lengths)``
      int64 codes: the categorical columns', then each sequence's.
    - ``x_num``: ``(batch, n_numerical)`` float32.
    - output: ``(batch, out_features)`` with ``out_features = embedding_dim *
      (n_categorical + len(sequences) + (n_numerical > 0))``.
    """

    offsets: Tensor

    def __init__(
        self,
        *,
        cardinalities: Sequence[int],
        n_numerical: int,
        embedding_dim: int,
        embedding_init_std: float | None = None,
        sequences: Sequence[Sequence[int]] = (),
        sequence_pooling: str = D["sequence_pooling"],
        attention_dims: Sequence[int] = D["attention_dims"],
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
        if sequence_pooling not in SEQUENCE_POOLINGS:
            raise ValueError(
                f"sequence_pooling must be one of {SEQUENCE_POOLINGS}, got "
                f"{sequence_pooling!r}"
            )
        self.sequences = [tuple(int(v) for v in spec) for spec in sequences]
        own = sorted({t for t, c, _ in self.sequences if c < 0})
        self.n_categorical = len(cardinalities) - len(own)
        if (
            own != list(range(self.n_categorical, len(cardinalities)))
            or any(
                not 0 <= c < self.n_categorical or t != c
                for t, c, _ in self.sequences
                if c >= 0
            )
            or any(length < 1 for *_, length in self.sequences)
        ):
            raise ValueError(
                "sequences must be (table, candidate, length) with a shared "
                "table equal to its categorical candidate, own tables after the "
                f"categorical ones, lengths >= 1; got {self.sequences}"
            )
        cards = torch.as_tensor(list(cardinalities), dtype=torch.long)
        self.n_numerical = n_numerical
        self.embedding_dim = embedding_dim
        self.embedding_init_std = (
            None if embedding_init_std is None else float(embedding_init_std)
        )
        self.sequence_pooling = sequence_pooling
        self.attention_dims = tuple(int(d) for d in attention_dims)
        self.attention = nn.ModuleList(
            TargetAttention(embedding_dim, self.attention_dims)
            for _, c, _ in self.sequences
            if c >= 0 and sequence_pooling == "attention"
        )
        self.out_features = embedding_dim * (
            self.n_categorical + len(self.sequences) + (n_numerical > 0)
        )
        self.register_buffer(
            "offsets", torch.cumsum(cards, 0) - cards if len(cards) else cards
        )
        self.embedding = (
            nn.Embedding(int(cards.sum()), embedding_dim) if len(cards) else None
        )
        self.numerical = nn.Linear(n_numerical, embedding_dim) if n_numerical else None
        self.reset_parameters()

    def fields(self, column_names: Sequence[str] | None = None) -> StateFields:
        """The fields of the output, in order: where each column's vector lies.

        Parameters
        ----------
        column_names : sequence of str, default=None
            The categorical columns' names, then the sequence columns'; None
            names them ``categorical_<i>`` and ``sequence_<j>``. The
            numerical inputs' vector is the field ``"numerical"``.

        Returns
        -------
        StateFields
        """
        n_columns = self.n_categorical + len(self.sequences)
        if column_names is None:
            column_names = [
                *(f"categorical_{i}" for i in range(self.n_categorical)),
                *(f"sequence_{j}" for j in range(len(self.sequences))),
            ]
        elif len(column_names) != n_columns:
            raise ValueError(
                f"field_names must name the {self.n_categorical} categorical and "
                f"{len(self.sequences)} sequence columns, got {list(column_names)}"
            )
        numerical = ["numerical"] if self.numerical is not None else []
        return StateFields(
            names=(*(str(name) for name in column_names), *numerical),
            n_categorical=self.n_categorical,
            dim=self.embedding_dim,
        )

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
            n = self.n_categorical
            scalars = self.embedding(x_cat[:, :n] + self.offsets[:n])
            parts.append(scalars.flatten(1))
            attention = iter(self.attention)
            start = n
            for table, candidate, length in self.sequences:
                codes = x_cat[:, start : start + length]
                start += length
                history = self.embedding(codes + self.offsets[table])
                mask = (codes != MISSING_CODE).to(history.dtype)
                if candidate >= 0 and self.sequence_pooling == "attention":
                    pooled = next(attention)(history, scalars[:, candidate], mask)
                else:
                    pooled = torch.einsum("bl,bld->bd", mask, history)
                    if self.sequence_pooling != "sum":
                        pooled = pooled / mask.sum(1, keepdim=True).clamp(min=1.0)
                parts.append(pooled)
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
    sequences : sequence of (int, int, int), default=()
        The sequence columns' tables, candidates and lengths; see
        :class:`FeatureEmbedding`.
    field_names : sequence of str, default=None
        The categorical columns' names, then the sequence columns' (the
        encoder's ``categorical_features_`` and ``sequence_features_``):
        the names of the state's fields (:meth:`FeatureEmbedding.fields`)
        given to backbones that declare ``needs_fields``. None: generic
        names.

    Attributes
    ----------
    embedding : FeatureEmbedding
        The state's tables (for STEM the shared ones); RMTL's critics start
        from copies of them.
    task_embeddings : nn.ModuleList of FeatureEmbedding
        Further tables, one set per further state the backbone reads
        (:meth:`~sklearn_rmtl.backbones.Backbone.n_embeddings`; STEM: one per
        task); empty for the other backbones. The backbone then reads
        ``(batch, 1 + len(task_embeddings), in_features)``, ``embedding``'s
        state first.

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
        sequences: Sequence[Sequence[int]] = (),
        field_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        params = dict(backbone_params)
        embedding = {k: params.pop(k) for k in EMBEDDING_KEYS if k in params}
        backbone_cls = BACKBONES[backbone]

        def make_embedding() -> FeatureEmbedding:
            return FeatureEmbedding(
                cardinalities=cardinalities,
                n_numerical=n_numerical,
                sequences=sequences,
                **embedding,
            )

        self.embedding = make_embedding()
        # The further tables of a backbone that reads several states (STEM:
        # one per task); empty for the others, whose state dicts keep their
        # keys.
        self.task_embeddings = nn.ModuleList(
            make_embedding() for _ in range(backbone_cls.n_embeddings(n_tasks) - 1)
        )
        if backbone_cls.needs_fields:
            params["fields"] = self.embedding.fields(field_names)
        self.backbone = backbone_cls(
            in_features=self.embedding.out_features, n_tasks=n_tasks, **params
        )

    def forward(self, x_cat: Tensor, x_num: Tensor, **_: Tensor) -> Tensor:
        state = self.embedding(x_cat, x_num)
        if len(self.task_embeddings):
            others = [e(x_cat, x_num) for e in self.task_embeddings]
            state = torch.stack([state, *others], dim=1)
        return self.backbone(state)


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
