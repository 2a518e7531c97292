"""Building blocks shared by the backbones.

Every block runs several independent networks ("groups": tasks or experts) as
one batched matrix product instead of a Python loop over small ``nn.Linear``
layers, so each expert and tower is evaluated exactly once per input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def grouped_matmul(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    group_major: bool = False,
) -> Tensor:
    """``x`` times each group's matrix, plus ``bias``: :class:`GroupedLinear`.

    Parameters
    ----------
    x : Tensor of shape (batch, in) or (batch, n_groups, in)
        One input for every group, or one per group.
    weight : Tensor of shape (n_groups, in, out)
    bias : Tensor of shape (n_groups, out), optional
    group_major : bool, default=False
        Lay out the result of a shared input (``x`` of shape (batch, in))
        group-major in memory, as the result of an input per group always
        is: the order in which another grouped product reads it without a
        copy. Only the memory order differs, not the values.

    Returns
    -------
    Tensor of shape (batch, n_groups, out)
    """
    n_groups, n_in, n_out = weight.shape
    if x.dim() == 2 and torch.is_grad_enabled():
        device = x.device.type
        if torch.is_autocast_enabled(device):
            # _SharedInputProduct's products are no autocast ops: cast as
            # autocast would (autograd casts the gradients back).
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        out = _SharedInputProduct.apply(x, weight, bias, group_major)
        return out.transpose(0, 1)
    if x.dim() == 2:
        # Shared input, no gradients (inference, export): a single
        # (in, groups * out) product, bias fused in.
        w = weight.permute(1, 0, 2).reshape(n_in, -1)
        out = x @ w if bias is None else torch.addmm(bias.reshape(-1), x, w)
        return out.view(x.shape[0], n_groups, n_out)
    # The products run group-major, on a contiguous (groups, batch, in) copy
    # of ``x``: then neither they nor the backward's ``x^T @ grad`` make a
    # strided copy of their own, which in bfloat16 costs more than the
    # product. The result is a group-major view: a stack of grouped layers
    # (and the element-wise work between them) stays in that memory order,
    # so the copy is made once per stack, not around every product. The
    # bias goes into the product, so under autocast the output stays in the
    # autocast dtype as ``nn.Linear``'s does.
    xg = x.transpose(0, 1).contiguous()
    if bias is None:
        out = torch.bmm(xg, weight)
    else:
        out = torch.baddbmm(bias.unsqueeze(1), xg, weight)
    return out.transpose(0, 1)


class _SharedInputProduct(torch.autograd.Function):
    """``x`` of shape (batch, in) times each group's matrix, plus the bias.

    Returns the products indexed (groups, batch, out), laid out group-major
    or batch-major in memory. One product per group writes its part of the
    result, and the backward writes the weight's gradient group by group in
    the weight's own layout; a single product with the (in, groups * out)
    matrix would copy the weight into that layout in every step and its
    gradient back.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, group_major: bool
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        n_groups, batch, n_out = weight.shape[0], x.shape[0], weight.shape[2]
        if group_major:
            out = x.new_empty(n_groups, batch, n_out)
        else:
            out = x.new_empty(batch, n_groups, n_out).transpose(0, 1)
        for k, w in enumerate(weight):
            if bias is None:
                torch.mm(x, w, out=out[k])
            else:
                torch.addmm(bias[k], x, w, out=out[k])
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # The groups' products summed in place by the matrix routine.
            grad_x = grad[0] @ weight[0].T
            for g, w in zip(grad[1:], weight[1:], strict=True):
                grad_x.addmm_(g, w.T)
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
            for k, g in enumerate(grad):
                torch.mm(x.T, g, out=grad_w[k])
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(1)
        return grad_x, grad_w, grad_b, None


class GroupedLinear(nn.Module):
    """``n_groups`` independent affine maps applied in one batched product.

    Parameters
    ----------
    n_groups : int
        Number of independent maps.
    in_features, out_features : int
        Sizes of each map.

    Shape
    -----
    - input: ``(batch, in_features)`` (every group reads the same input) or
      ``(batch, n_groups, in_features)`` (group ``g`` reads ``x[:, g]``).
    - output: ``(batch, n_groups, out_features)``.

    Attributes
    ----------
    group_major : bool
        Passed to :func:`grouped_matmul`: :class:`GroupedMLP` sets it, so
        that each of its layers hands the next one a group-major input.
    """

    def __init__(self, n_groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        if min(n_groups, in_features, out_features) < 1:
            raise ValueError(
                "n_groups, in_features and out_features must be >= 1, got "
                f"{n_groups}, {in_features}, {out_features}"
            )
        self.n_groups = n_groups
        self.in_features = in_features
        self.out_features = out_features
        self.group_major = False
        self.weight = nn.Parameter(torch.empty(n_groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_groups, out_features))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        # Same distribution as ``nn.Linear``'s default, group by group.
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound, generator=generator)
        nn.init.uniform_(self.bias, -bound, bound, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return grouped_matmul(x, self.weight, self.bias, group_major=self.group_major)

    def extra_repr(self) -> str:
        return (
            f"n_groups={self.n_groups}, in_features={self.in_features}, "
            f"out_features={self.out_features}"
        )


class GroupedBatchNorm(nn.BatchNorm1d):
    """Batch normalisation of every group and feature separately.

    A ``BatchNorm1d`` over ``n_groups * n_features`` channels: each group's
    features have their own statistics, scale and shift, as if every group
    (expert, tower, gate) had its own ``BatchNorm1d`` (torch-rechub's MLP
    layer). In eval mode the running statistics are used.

    Parameters
    ----------
    n_groups : int
        Number of groups.
    n_features : int
        Features of each group.

    Shape
    -----
    - input: ``(batch, n_groups, n_features)``.
    - output: same shape.

    Notes
    -----
    A training batch of one row has no batch statistics; it is normalised
    with the running statistics, which it leaves unchanged (``BatchNorm1d``
    raises instead, and a fit's last batch may hold a single row).
    """

    def __init__(self, n_groups: int, n_features: int) -> None:
        if min(n_groups, n_features) < 1:
            raise ValueError(
                f"n_groups and n_features must be >= 1, got {n_groups}, {n_features}"
            )
        super().__init__(n_groups * n_features)
        self.n_groups = n_groups
        self.n_features = n_features

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if self.training and flat.shape[0] < 2:
            out = nn.functional.batch_norm(
                flat,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        else:
            out = super().forward(flat)
        return out.view(x.shape)

    def extra_repr(self) -> str:
        return f"n_groups={self.n_groups}, n_features={self.n_features}"


def optional_batch_norm(enabled: bool, n_groups: int, n_features: int) -> nn.Module:
    """A :class:`GroupedBatchNorm`, or the identity when ``enabled`` is False.

    The identity holds no state, so networks without batch normalisation keep
    the state-dict keys they always had.
    """
    return GroupedBatchNorm(n_groups, n_features) if enabled else nn.Identity()


class ReLUDropout(nn.Module):
    """ReLU followed by inverted dropout, as one mask.

    ``relu(x) * keep / (1 - p)`` equals ``x * m`` with
    ``m = (x > 0) * keep / (1 - p)``: one mask serves the activation and
    the dropout, in the forward and in the backward pass (no separate
    ReLU gradient), and the mask costs one random byte per element (one
    64-bit draw yields eight; ``torch.nn.Dropout`` draws 32 bits per
    element on CPU, about a third of a training step at the paper's sizes).
    On GPUs and in eval mode this is ``relu`` then native dropout.

    Parameters
    ----------
    p : float
        Probability of zeroing an element. NOTE[DIFF]: on CPU it is rounded
        to a multiple of 1/256 (0.2 becomes 0.19921875); the scaling uses the
        rounded value, so activations keep their expectation.

    Shape: any; the output has the input's shape.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}")
        self.p = p
        #: Source of the masks; None uses torch's global generator.
        self.generator: torch.Generator | None = None
        self._threshold = round(p * 256)
        self._scale = 1.0 / (1.0 - self._threshold / 256)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return torch.relu(x)
        if x.device.type != "cpu":
            return nn.functional.dropout(torch.relu(x), self.p, training=True)
        n = x.numel()
        words = torch.randint(
            -(2**63),
            2**63 - 1,
            ((n + 7) // 8,),
            dtype=torch.int64,
            device=x.device,
            generator=self.generator,
        )
        noise = words.view(torch.uint8)[:n].view(x.shape)
        # Masks as bytes (torch's bool kernels are several times slower), in
        # ``x``'s memory order (group-major after a grouped product): the
        # element-wise work below is several times slower on operands of two
        # orders, and reordering bytes is the cheapest place to pay for it.
        keep = torch.empty_like(x, dtype=torch.bool)
        torch.ge(noise, self._threshold, out=keep)
        keep = keep.view(torch.uint8)
        keep.mul_((x > 0).view(torch.uint8))
        return x * keep.to(x.dtype).mul_(self._scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GroupedMLP(nn.Module):
    """``n_groups`` independent MLPs (Linear [-> BatchNorm] -> ReLU -> Dropout).

    Parameters
    ----------
    n_groups : int
        Number of independent MLPs.
    in_features : int
        Input size of each MLP.
    hidden_dims : sequence of int
        Output size of each layer; empty means the identity.
    dropout : float
        Dropout probability after each activation.
    batch_norm : bool, default=False
        Normalise each layer's pre-activations (:class:`GroupedBatchNorm`,
        per group and feature) before the ReLU.

    Shape
    -----
    - input: ``(batch, in_features)`` or ``(batch, n_groups, in_features)``.
    - output: ``(batch, n_groups, hidden_dims[-1])``.
    """

    def __init__(
        self,
        n_groups: int,
        in_features: int,
        hidden_dims: Sequence[int],
        dropout: float,
        *,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for h in hidden_dims:
            linear = GroupedLinear(n_groups, d, h)
            # The next layer reads group-major inputs without a copy;
            # GroupedBatchNorm reads batch-major ones.
            linear.group_major = not batch_norm
            layers += [
                linear,
                *([GroupedBatchNorm(n_groups, h)] if batch_norm else []),
                ReLUDropout(dropout),
            ]
            d = h
        self.n_groups = n_groups
        self.out_features = d
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if not len(self.layers):
            return x if x.dim() == 3 else x.unsqueeze(1).expand(-1, self.n_groups, -1)
        return self.layers(x)


class Towers(nn.Module):
    """One tower per task: an MLP followed by a linear map to one logit.

    Parameters
    ----------
    n_tasks : int
        Number of towers.
    in_features : int
        Input size of each tower.
    hidden_dims : sequence of int
        Hidden sizes of each tower (paper: 128, 64).
    dropout : float
        Dropout probability after each hidden activation.
    batch_norm : bool, default=False
        Batch normalisation in the hidden layers (not the output layer).

    Shape
    -----
    - input: ``(batch, in_features)`` or ``(batch, n_tasks, in_features)``.
    - output: ``(batch, n_tasks)`` logits.
    """

    def __init__(
        self,
        n_tasks: int,
        in_features: int,
        hidden_dims: Sequence[int],
        dropout: float,
        *,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.mlp = GroupedMLP(
            n_tasks, in_features, hidden_dims, dropout, batch_norm=batch_norm
        )
        self.head = GroupedLinear(n_tasks, self.mlp.out_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.mlp(x)).squeeze(-1)
