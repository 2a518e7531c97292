"""PEPNet: parameter and embedding personalised network."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._base import Backbone, StateFields, check_count, fill_doc
from sklearn_rmtl.backbones._layers import (
    GroupedLinear,
    ReLUDropout,
    optional_batch_norm,
)

#: The paper's scale gamma of the gate NU's sigmoid: gates lie in (0, 2), and
#: a gate of 1 (a zero pre-activation) leaves its input as it is.
GATE_SCALE = 2.0


class GateNU(nn.Module):
    """Gate neural units reading one input: ``gamma * sigmoid(W2 relu(W1 x))``.

    The paper's gate NU (biases included), with ``gamma = 2``: a two-layer
    MLP, ReLU after the first layer, a scaled sigmoid after the second. The
    units' first layers run as one batched product.

    Parameters
    ----------
    in_features : int
        Size of the input all units read.
    hidden_dim : int
        Hidden size of each unit.
    out_features : sequence of int
        Output size of each unit (its number of gates).

    Shape: ``(batch, in_features) -> [(batch, out_features[g]) for each g]``.
    """

    def __init__(
        self, in_features: int, hidden_dim: int, out_features: Sequence[int]
    ) -> None:
        super().__init__()
        self.hidden = GroupedLinear(len(out_features), in_features, hidden_dim)
        self.out = nn.ModuleList(nn.Linear(hidden_dim, n) for n in out_features)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = torch.relu(self.hidden(x))  # (batch, n_units, hidden_dim)
        return [
            GATE_SCALE * torch.sigmoid(out(h[:, g])) for g, out in enumerate(self.out)
        ]


def _take(x: Tensor, spans: Sequence[tuple[int, int]]) -> list[Tensor]:
    """The columns ``spans`` of ``x``, as static slices (traceable)."""
    return [x[:, start:stop] for start, stop in spans]


@fill_doc(
    fields="""\
fields : StateFields, default=None
    Where each field lies in the state; given by
    :class:`~sklearn_rmtl._torch_module.MultiTaskModule` (the estimators
    pass the encoder's column names). None: the state is one field named
    ``"state"``, with no categorical columns."""
)
class PEPNet(Backbone):
    """Gates on the embedding (EPNet) and on every task layer (PPNet).

    EPNet scales each field of the state by a gate computed from prior
    fields (the paper's domain-side features, ``gate_fields``) and the
    state with its gradient stopped: ``O_ep = delta_domain * E``, one gate
    per field. Each task has its own MLP (``bottom_dims`` then
    ``tower_dims``, then its logit) reading ``O_ep``; PPNet multiplies the
    input of every layer of every task by a gate computed from other prior
    fields (the paper's user, item and author ids, ``ppnet_fields``) and
    ``O_ep`` with its gradient stopped: one gate NU per layer, with one
    output per task and unit of that layer's input. Every gate NU is the
    paper's two-layer MLP ``2 * sigmoid(W2 relu(W1 x + b1) + b2)``; the
    prior fields' embeddings get gradients through the gates.

    Parameters
    ----------
    {in_features} {n_tasks}
    gate_fields : list of str, default=None
        The prior fields of EPNet's gate, by name: categorical or sequence
        columns, or ``"numerical"`` (the numerical inputs' projection).
        None: every categorical column. For the paper's EPNet name the
        domain or scenario columns (such as KuaiRand's ``tab``). Unknown
        names raise a ``ValueError`` at fit, listing the valid ones.
    ppnet_fields : list of str, default=None
        The prior fields of PPNet's gates, by name as ``gate_fields``. None:
        every categorical column. For the paper's PPNet name the user, item
        and author id columns.
    gate_hidden_dim : int, default=64
        Hidden size of every gate NU (not given in the paper).
    bottom_dims : sequence of int, default=(512, 256)
        Hidden sizes of the first layers of each task's MLP; may be empty.
    tower_dims : sequence of int, default=(128, 64)
        Hidden sizes of the last layers of each task's MLP (after
        ``bottom_dims``). PPNet gates the input of every layer: each hidden
        layer's and the logit's.
    {dropout} {batch_norm}
    {fields}

    Notes
    -----
    NOTE[DIFF]: the prior fields stay part of the state ``E`` that EPNet
    scales and the task MLPs read; in the paper the domain-side features
    feed EPNet's gate only. NOTE[DIFF]: the paper's features are split by
    role (domain, user/item/author ids, the others); here every column is a
    field of the state and ``gate_fields``/``ppnet_fields`` name the roles,
    every categorical column by default.

    Shape: ``(batch, in_features) -> (batch, n_tasks)`` logits.

    References
    ----------
    J. Chang et al., "PEPNet: Parameter and Embedding Personalized Network
    for Infusing with Personalized Prior Information", KDD 2023.
    """

    allow_empty_bottom = True
    needs_fields = True

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        gate_fields: Sequence[str] | None = D["gate_fields"],
        ppnet_fields: Sequence[str] | None = D["ppnet_fields"],
        gate_hidden_dim: int = D["gate_hidden_dim"],
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
        batch_norm: bool = D["batch_norm"],
        fields: StateFields | None = None,
    ) -> None:
        super().__init__(in_features=in_features, n_tasks=n_tasks)
        self._check_sizes(bottom_dims, tower_dims, dropout, batch_norm)
        hidden = check_count("gate_hidden_dim", gate_hidden_dim)
        if fields is None:
            fields = StateFields(names=("state",), n_categorical=0, dim=in_features)
        if fields.in_features != in_features:
            raise ValueError(
                f"PEPNet: {len(fields.names)} fields of size {fields.dim} do not "
                f"make a state of {in_features} features."
            )
        self.fields = fields
        self.gate_fields = fields.select("gate_fields", gate_fields)
        self.ppnet_fields = fields.select("ppnet_fields", ppnet_fields)
        self._gate_spans = fields.spans(self.gate_fields)
        self._ppnet_spans = fields.spans(self.ppnet_fields)
        self._n_fields, self._dim = len(fields.names), fields.dim
        self.gate_hidden_dim = hidden
        # EPNet: one gate per field from E(gate_fields) + stop_gradient(E).
        n_gate_in = len(self.gate_fields) * fields.dim + in_features
        self.epnet = GateNU(n_gate_in, hidden, [self._n_fields])
        # Each task's MLP; layer l's input is gated by PPNet's unit l.
        self._widths = (in_features, *self.bottom_dims, *self.tower_dims)
        self.layers = nn.ModuleList(
            GroupedLinear(n_tasks, a, b) for a, b in itertools.pairwise(self._widths)
        )
        self.norms = nn.ModuleList(
            optional_batch_norm(self.batch_norm, n_tasks, b) for b in self._widths[1:]
        )
        self.act = ReLUDropout(self.dropout)
        self.head = GroupedLinear(n_tasks, self._widths[-1], 1)
        # PPNet: one unit per layer from E(ppnet_fields) + stop_gradient(O_ep).
        n_prior_in = len(self.ppnet_fields) * fields.dim + in_features
        self.ppnet = GateNU(n_prior_in, hidden, [n_tasks * w for w in self._widths])

    def forward(self, x: Tensor) -> Tensor:
        # EPNet: the prior fields with their gradient, the state without.
        gate_in = torch.cat([*_take(x, self._gate_spans), x.detach()], dim=1)
        (delta,) = self.epnet(gate_in)  # (batch, n_fields)
        fields = x.unflatten(1, (self._n_fields, self._dim))
        o_ep = (fields * delta.unsqueeze(-1)).flatten(1)
        prior_in = torch.cat([*_take(x, self._ppnet_spans), o_ep.detach()], dim=1)
        gates = [
            g.unflatten(1, (self.n_tasks, w))
            for g, w in zip(self.ppnet(prior_in), self._widths, strict=True)
        ]
        h = o_ep.unsqueeze(1)  # every task's MLP reads O_ep
        for layer, norm, gate in zip(self.layers, self.norms, gates[:-1], strict=True):
            h = self.act(norm(layer(h * gate)))
        return self.head(h * gates[-1]).squeeze(-1)
