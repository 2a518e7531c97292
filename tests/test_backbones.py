"""Backbone networks: shapes, funnel structure, one evaluation per expert."""

from __future__ import annotations

import pytest
import torch

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS
from sklearn_rmtl.backbones import BACKBONES, resolve_backbone_params
from sklearn_rmtl.backbones._layers import GroupedLinear
from sklearn_rmtl.backbones.esmm import ESMM


def _build(name, n_tasks, in_features=12, **overrides):
    params = resolve_backbone_params(
        name, {"bottom_dims": (16, 8), "tower_dims": (4,), **overrides}
    )
    params.pop("embedding_dim")
    return BACKBONES[name](in_features=in_features, n_tasks=n_tasks, **params)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("n_tasks", [1, 2, 3])
def test_output_shape_and_gradients(name, n_tasks):
    if n_tasks < BACKBONES[name].min_tasks:
        with pytest.raises(ValueError, match="needs at least 2 tasks"):
            _build(name, n_tasks)
        return
    torch.manual_seed(0)
    net = _build(name, n_tasks)
    x = torch.randn(5, 12)
    out = net(x)
    assert out.shape == (5, n_tasks)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_grouped_layer_runs_once_per_forward(name):
    """Experts and towers are evaluated once per input, never recomputed."""
    net = _build(name, 3)
    calls: dict[str, int] = {}
    for module_name, module in net.named_modules():
        if isinstance(module, GroupedLinear):
            module.register_forward_hook(
                lambda *_, n=module_name: calls.__setitem__(n, calls.get(n, 0) + 1)
            )
    net(torch.randn(4, 12))
    n_grouped = sum(isinstance(m, GroupedLinear) for m in net.modules())
    assert len(calls) == n_grouped and set(calls.values()) == {1}


def test_paper_defaults():
    params = resolve_backbone_params("ple", None)
    assert params == {
        "embedding_dim": 128,
        "n_shared_experts": 4,
        "n_specific_experts": 4,
        "bottom_dims": (512, 256),
        "tower_dims": (128, 64),
        "dropout": 0.2,
    }
    assert resolve_backbone_params("mmoe", None)["n_experts"] == 8
    assert BACKBONE_DEFAULTS["dropout"] == 0.2


def test_unknown_backbone_param_is_an_error():
    with pytest.raises(ValueError, match="does not use; valid keys are"):
        resolve_backbone_params("sharedbottom", {"n_experts": 4})


def test_ple_expert_counts():
    net = _build("ple", 2, n_shared_experts=3, n_specific_experts=2)
    first = net.levels[0]
    assert first.specific.weight.shape == (2, 12, 2 * 16)
    assert first.shared.weight.shape == (1, 12, 3 * 16)
    assert first.shared_gate is not None and net.levels[-1].shared_gate is None


def test_esmm_is_a_funnel():
    """p_k = prod_{i<=k} sigmoid(tower_i): later tasks never exceed earlier ones."""
    torch.manual_seed(0)
    net = ESMM(in_features=6, n_tasks=3, bottom_dims=(8,), tower_dims=(4,), dropout=0.0)
    x = torch.randn(50, 6)
    p = torch.sigmoid(net(x))
    towers = torch.sigmoid(net.towers(net.bottoms(x)))
    torch.testing.assert_close(p, torch.cumprod(towers, dim=1), rtol=1e-4, atol=1e-6)
    assert (p[:, 1:] <= p[:, :-1] + 1e-6).all()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"bottom_dims": (0,)}, "bottom_dims must be"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"n_experts": 0}, "n_experts must be a positive int"),
    ],
)
def test_invalid_sizes(overrides, match):
    with pytest.raises(ValueError, match=match):
        _build("mmoe", 2, **overrides)


def test_relu_dropout_rate_scale_and_eval():
    from sklearn_rmtl.backbones._layers import ReLUDropout

    torch.manual_seed(0)
    drop = ReLUDropout(0.2)
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    assert abs((y == 0).float().mean().item() - 51 / 256) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient uses the same mask
    drop.eval()
    torch.testing.assert_close(drop(x), x)
    with pytest.raises(ValueError, match="dropout must be in"):
        ReLUDropout(1.0)


def test_relu_dropout_equals_relu_then_the_same_mask():
    # The fused mask must give ReLU-then-dropout exactly, gradients included,
    # for negative, zero and positive inputs.
    from sklearn_rmtl.backbones._layers import ReLUDropout

    x = torch.randn(64, 3, 50)
    x[0, 0, :10] = 0.0
    drop = ReLUDropout(0.3)
    drop.generator = torch.Generator().manual_seed(1)
    xa = x.clone().requires_grad_(True)
    fused = drop(xa)
    # The same draws, applied the plain way.
    drop.generator = torch.Generator().manual_seed(1)
    ones = torch.ones_like(x)
    keep_scaled = drop(ones).detach()  # scale where kept, 0 where dropped
    xb = x.clone().requires_grad_(True)
    plain = torch.relu(xb) * keep_scaled
    torch.testing.assert_close(fused, plain, rtol=0, atol=0)
    g = torch.randn_like(x)
    fused.backward(g)
    plain.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    assert 0.25 < (keep_scaled == 0).float().mean() < 0.35
    drop.eval()
    torch.testing.assert_close(drop(x), torch.relu(x))
