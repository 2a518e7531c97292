"""Backbone networks: shapes, funnel structure, one evaluation per expert."""

from __future__ import annotations

import pytest
import torch

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS
from sklearn_rmtl._encoding import UNKNOWN_CODE
from sklearn_rmtl._seeding import init_parameters
from sklearn_rmtl._torch_module import FeatureEmbedding, MultiTaskModule
from sklearn_rmtl.backbones import BACKBONES, EMBEDDING_KEYS, resolve_backbone_params
from sklearn_rmtl.backbones._layers import (
    GroupedBatchNorm,
    GroupedLinear,
    grouped_matmul,
)
from sklearn_rmtl.backbones.esmm import ESMM

# Keys beyond the paper's sizes and their defaults (docs/backbone_quality.rst).
EXTRA_DEFAULTS = {
    k: BACKBONE_DEFAULTS[k]
    for k in (
        "batch_norm",
        "gate_batch_norm",
        "embedding_init_std",
        "sequence_pooling",
        "attention_dims",
    )
}
#: The paper's network: no batch normalisation, Xavier tables, linear numbers.
PAPER_NETWORK = {
    "batch_norm": False,
    "gate_batch_norm": False,
    "embedding_init_std": None,
}


def _build(name, n_tasks, in_features=12, **overrides):
    params = resolve_backbone_params(
        name, {"bottom_dims": (16, 8), "tower_dims": (4,), **overrides}
    )
    for key in EMBEDDING_KEYS:
        params.pop(key)
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
    paper = {
        "embedding_dim": 128,
        "n_shared_experts": 4,
        "n_specific_experts": 4,
        "bottom_dims": (512, 256),
        "tower_dims": (128, 64),
        "dropout": 0.2,
    }
    assert {k: params[k] for k in paper} == paper
    assert set(params) == {*paper, *EXTRA_DEFAULTS}
    assert {k: params[k] for k in EXTRA_DEFAULTS} == EXTRA_DEFAULTS
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


def test_ple_with_three_levels_trains():
    """A middle level's shared gate reads task experts laid out group-major."""
    net = _build("ple", 2, bottom_dims=(16, 8, 8)).train()
    net(torch.randn(5, 12)).sum().backward()


@pytest.mark.parametrize("shared_input", [True, False])
@pytest.mark.parametrize("group_major", [True, False])
def test_grouped_matmul_is_each_groups_product(shared_input, group_major):
    """Values and gradients are the per-group products' in either layout."""
    torch.manual_seed(0)
    shape = (6, 5) if shared_input else (6, 3, 5)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    out = grouped_matmul(x, w, b, group_major=group_major)
    rows = [x if shared_input else x[:, k] for k in range(3)]
    expected = torch.stack([rows[k] @ w[k] + b[k] for k in range(3)], dim=1)
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(
        lambda x, w, b: grouped_matmul(x, w, b, group_major=group_major), (x, w, b)
    )


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
        ({"bottom_dims": 8}, r"got 8; for one layer write \(8,\)"),
        ({"tower_dims": "64"}, "tower_dims must be a sequence of layer sizes"),
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


# ------------------------------------------------ batch normalisation, embedding
def _n_norms(net):
    return sum(isinstance(m, GroupedBatchNorm) for m in net.modules())


def _paper_build(name, n_tasks, **overrides):
    valid = resolve_backbone_params(name, None)
    paper = {k: v for k, v in PAPER_NETWORK.items() if k in valid}
    return _build(name, n_tasks, **{**paper, **overrides})


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_batch_norm_adds_norm_layers_only_when_on(name):
    torch.manual_seed(0)
    off = _paper_build(name, 2)
    assert _n_norms(off) == 0
    assert not any("running_mean" in k for k in off.state_dict())
    on = _paper_build(name, 2, batch_norm=True)
    # One norm per hidden layer of the bottoms/experts and of the towers.
    assert _n_norms(on) >= 2
    # The same layers plus a scale and a shift per norm.
    n_params = len(list(off.parameters())) + 2 * _n_norms(on)
    assert len(list(on.parameters())) == n_params


@pytest.mark.parametrize("name", ["mmoe", "omoe", "ple"])
def test_gate_batch_norm_normalises_the_gates(name):
    net = _paper_build(name, 2, gate_batch_norm=True)
    n_gate_norms = sum(
        isinstance(m, GroupedBatchNorm) and "gate" in n for n, m in net.named_modules()
    )
    assert n_gate_norms == _n_norms(net) > 0


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_batch_norm_off_changes_nothing(name):
    # Same seed, same draws: the switch off builds exactly the paper's net.
    torch.manual_seed(3)
    a = _paper_build(name, 2)
    torch.manual_seed(3)
    b = _paper_build(name, 2, batch_norm=False)
    x = torch.randn(7, 12)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mmoe", "ple", "esmm"])
def test_batch_norm_eval_mode_uses_running_statistics(name):
    torch.manual_seed(0)
    gates = {"gate_batch_norm": True} if name != "esmm" else {}
    net = _paper_build(name, 2, batch_norm=True, **gates)
    x = torch.randn(64, 12) * 3 + 1
    net.train()
    for _ in range(3):
        net(x)  # updates the running statistics
    net.eval()
    out = net(x)
    torch.testing.assert_close(net(x), out, rtol=0, atol=0)
    # Rows are scored independently of the batch they come in.
    torch.testing.assert_close(net(x[5:6]), out[5:6], rtol=1e-5, atol=1e-6)
    # A one-row training batch is normalised with the running statistics.
    net.train()
    norm = next(m for m in net.modules() if isinstance(m, GroupedBatchNorm))
    before = norm.running_mean.clone()
    assert torch.isfinite(net(x[:1])).all()
    torch.testing.assert_close(norm.running_mean, before)


def test_grouped_batch_norm_is_per_group_and_feature():
    norm = GroupedBatchNorm(3, 4)
    x = torch.randn(256, 3, 4) * torch.arange(1.0, 13.0).view(1, 3, 4) + 5.0
    y = norm(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(0), torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        y.std(0, unbiased=False), torch.ones(3, 4), atol=1e-3, rtol=0
    )


def test_batch_norm_state_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    net = _paper_build("ple", 2, batch_norm=True, gate_batch_norm=True)
    net.train()
    net(torch.randn(32, 12) + 2.0)
    state = net.state_dict()
    assert any(k.endswith("running_var") for k in state)
    assert any(k.endswith("num_batches_tracked") for k in state)
    copy = _paper_build("ple", 2, batch_norm=True, gate_batch_norm=True)
    copy.load_state_dict(state)
    net.eval(), copy.eval()
    x = torch.randn(9, 12)
    torch.testing.assert_close(copy(x), net(x), rtol=0, atol=0)


def test_seeded_initialisation_covers_batch_norm():
    def make(seed):
        net = MultiTaskModule(
            cardinalities=[5, 7],
            n_numerical=2,
            n_tasks=2,
            backbone="mmoe",
            backbone_params=resolve_backbone_params(
                "mmoe",
                {
                    "embedding_dim": 4,
                    "bottom_dims": (8,),
                    "tower_dims": (4,),
                    "n_experts": 2,
                    "batch_norm": True,
                    "gate_batch_norm": True,
                    "embedding_init_std": 0.1,
                },
            ),
        )
        torch.manual_seed(seed)  # the global state must not matter
        net.train()
        net(torch.randint(0, 5, (16, 2)), torch.randn(16, 2))  # dirty the stats
        init_parameters(net, torch.Generator().manual_seed(42))
        return net

    a, b = make(0), make(1)
    for (k, va), vb in zip(
        a.state_dict().items(), b.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    norm = next(m for m in a.modules() if isinstance(m, GroupedBatchNorm))
    assert int(norm.num_batches_tracked) == 0
    torch.testing.assert_close(norm.running_mean, torch.zeros_like(norm.running_mean))


def test_embedding_init_std_is_honoured():
    emb = FeatureEmbedding(
        cardinalities=[3000, 2000],
        n_numerical=0,
        embedding_dim=16,
        embedding_init_std=0.05,
    )
    emb.reset_parameters(torch.Generator().manual_seed(0))
    w = emb.embedding.weight
    assert abs(w.std().item() - 0.05) < 0.002
    assert (w[emb.offsets + UNKNOWN_CODE] == 0).all()  # unknown codes stay 0
    xavier = FeatureEmbedding(
        cardinalities=[3000, 2000], n_numerical=0, embedding_dim=16
    )
    assert abs(xavier.embedding.weight.std().item() - (2 / 5016) ** 0.5) < 0.002
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="embedding_init_std"):
            FeatureEmbedding(
                cardinalities=[3],
                n_numerical=0,
                embedding_dim=2,
                embedding_init_std=bad,
            )


def test_invalid_batch_norm_flag():
    with pytest.raises(ValueError, match="batch_norm must be a bool"):
        _build("mmoe", 2, batch_norm="yes")
