"""Task balancing: each method's defining property, and the estimators' use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, GroupKFold
from torch import nn

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._loss import WeightedMultiTaskBCE
from sklearn_rmtl._torch_module import MultiTaskModule
from sklearn_rmtl.backbones import resolve_backbone_params
from sklearn_rmtl.balancing import (
    BALANCINGS,
    DynamicWeightAverage,
    FixedWeights,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    make_balancer,
    project_conflicting,
    resolve_balancing_params,
    shared_parameters,
)
from sklearn_rmtl.balancing._base import task_gradients
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.persistence import load, save

SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
METHODS = sorted(BALANCINGS)


class TwoHeads(nn.Module):
    """A shared linear bottom and one linear head per task."""

    def __init__(self, n_in: int = 4, hidden: int = 6, n_tasks: int = 2) -> None:
        super().__init__()
        self.bottom = nn.Linear(n_in, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bottom(x))
        return torch.cat([head(h) for head in self.heads], dim=1)


def _bce_task_losses(model, x, y):
    return WeightedMultiTaskBCE([0.5, 0.5]).task_losses(model(x), y)


# --------------------------------------------------------------- registry
def test_registry_and_params():
    assert METHODS == ["dwa", "fixed", "gradnorm", "pcgrad", "uncertainty"]
    assert resolve_balancing_params("dwa", {"temperature": 1.0}) == {"temperature": 1.0}
    with pytest.raises(ValueError, match=r"valid keys are \['alpha', 'weight_lr'\]"):
        resolve_balancing_params("gradnorm", {"alpah": 1.0})
    with pytest.raises(ValueError, match=r"temperature.*> 0"):
        resolve_balancing_params("dwa", {"temperature": 0})
    with pytest.raises(ValueError, match=r"valid keys are \[\]"):
        resolve_balancing_params("fixed", {"alpha": 1.0})


def test_shared_parameters_follow_the_graph():
    # Seeded: with some draws a ReLU unit of the bottom is dead on these rows
    # and its weights get no gradient from either task.
    torch.manual_seed(0)
    params = resolve_backbone_params("sharedbottom", SMALL)
    module = MultiTaskModule(
        cardinalities=[5],
        n_numerical=1,
        n_tasks=2,
        backbone="sharedbottom",
        backbone_params=params,
    )
    x_cat, x_num = torch.tensor([[2], [3], [4]]), torch.randn(3, 1)
    losses = WeightedMultiTaskBCE([0.5, 0.5]).task_losses(
        module(x_cat, x_num), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    )
    named = list(module.named_parameters())
    shared = shared_parameters(task_gradients(losses, [p for _, p in named]))
    by_name = dict(zip([n for n, _ in named], shared, strict=True))
    assert by_name["embedding.embedding.weight"]
    towers = [n for n in by_name if "tower" in n]
    assert towers and not any(by_name[n] for n in towers)
    assert any(by_name[n] for n in by_name if "bottom" in n)


# ------------------------------------------------------------------ fixed
def test_fixed_is_the_criterion_loss():
    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(16, 4)
    y = (torch.rand(16, 2) > 0.5).float()
    criterion = WeightedMultiTaskBCE([0.3, 0.7])
    reference = criterion(model(x), y)
    reference.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    balancer = FixedWeights(task_weights=[0.3, 0.7], lr=1e-3)
    loss = balancer.backward(criterion.task_losses(model(x), y), model.parameters())
    assert torch.equal(loss, reference.detach())
    for p, g in zip(model.parameters(), expected, strict=True):
        assert torch.equal(p.grad, g)
    assert balancer.weights().tolist() == pytest.approx([0.3, 0.7])


# ------------------------------------------------------------ uncertainty
def test_uncertainty_reaches_its_stationary_point():
    # For fixed losses the optimum of exp(-s) L + s / 2 is exp(-s) = 1 / (2 L).
    losses = torch.tensor([0.2, 0.8])
    balancer = UncertaintyWeighting(task_weights=[1.0, 1.0], lr=1e-3, weight_lr=0.05)
    for _ in range(600):
        balancer.backward(losses.clone().requires_grad_(), [])
    np.testing.assert_allclose(balancer.weights(), 1 / (2 * losses), rtol=1e-3)


def test_uncertainty_weighs_the_noisier_task_less():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 4, generator=gen)
    clean = (x[:, 0] > 0).float()
    flip = torch.rand(512, generator=gen) < 0.3  # 30% label noise on task 1
    y = torch.stack([clean, torch.where(flip, 1 - clean, clean)], 1)
    torch.manual_seed(0)
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    balancer = UncertaintyWeighting(task_weights=[1.0, 1.0], lr=0.02)
    for _ in range(300):
        optimizer.zero_grad()
        losses = _bce_task_losses(model, x, y)
        balancer.backward(losses, list(model.parameters()))
        optimizer.step()
    weights = balancer.weights()
    final = _bce_task_losses(model, x, y).detach()
    assert weights[0] > 1.5 * weights[1]  # the clean task counts more
    # ... in proportion to the inverse losses (the noise), approximately.
    np.testing.assert_allclose(weights, 1 / (2 * final), rtol=0.25)


# ----------------------------------------------------------------- pcgrad
def test_pcgrad_removes_conflicting_components():
    g = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]])  # g1 . g2 = -1 < 0
    update = project_conflicting(g, torch.Generator().manual_seed(0))
    g1p = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    g2p = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
    assert abs(float(g1p @ g[1])) < 1e-6 and abs(float(g2p @ g[0])) < 1e-6
    torch.testing.assert_close(update, g1p + g2p)
    # The update conflicts with neither task.
    assert float(update @ g[0]) >= 0 and float(update @ g[1]) >= 0
    assert float(g.sum(0) @ g[1]) < float(update @ g[1])


def test_pcgrad_leaves_agreeing_gradients_alone():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 3.0], [0.0, 1.0, 1.0]])
    update = project_conflicting(g, torch.Generator().manual_seed(0))
    assert torch.equal(update, g.sum(0))


def test_pcgrad_step_projects_shared_and_keeps_heads():
    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(8, 4)
    y = torch.stack([torch.ones(8), torch.zeros(8)], 1)
    params = list(model.parameters())
    losses = _bce_task_losses(model, x, y) * torch.tensor([0.5, 0.5])
    plain = [
        torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
        for k in range(2)
    ]
    balancer = PCGrad(
        task_weights=[0.5, 0.5], lr=1e-3, generator=torch.Generator().manual_seed(0)
    )
    balancer.backward(_bce_task_losses(model, x, y), params)
    shared = [0, 1]  # the bottom's weight and bias
    flat = torch.stack([torch.cat([g[j].reshape(-1) for j in shared]) for g in plain])
    expected = project_conflicting(flat, torch.Generator().manual_seed(0))
    got = torch.cat([params[j].grad.reshape(-1) for j in shared])
    torch.testing.assert_close(got, expected)
    for j in range(2, len(params)):  # each head: its task's plain gradient
        k = (j - 2) // 2
        torch.testing.assert_close(params[j].grad, plain[k][j])


# --------------------------------------------------------------- gradnorm
def _gradient_norm_ratio(balancer, steps=60):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=gen)
    y = torch.stack([(x[:, 0] > 0).float(), (x[:, 1] > 0).float()], 1)
    torch.manual_seed(0)
    model = TwoHeads()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scale = torch.tensor([1.0, 20.0])  # task 1's loss is on a larger scale

    def task_losses():
        return _bce_task_losses(model, x, y) * scale

    for _ in range(steps):
        optimizer.zero_grad()
        balancer.backward(task_losses(), list(model.parameters()))
        optimizer.step()
    shared = list(model.bottom.parameters())
    losses = task_losses()
    weights = balancer.weights()
    norms = [
        weights[k]
        * torch.cat(
            [
                g.reshape(-1)
                for g in torch.autograd.grad(losses[k], shared, retain_graph=True)
            ]
        ).norm()
        for k in range(2)
    ]
    return float(max(norms) / min(norms)), weights


def test_gradnorm_equalises_gradient_norms():
    fixed, _ = _gradient_norm_ratio(FixedWeights(task_weights=[0.5, 0.5], lr=0.01))
    balanced, weights = _gradient_norm_ratio(
        GradNorm(task_weights=[0.5, 0.5], lr=0.01, alpha=0.0, weight_lr=0.05)
    )
    assert fixed > 5
    assert balanced < 1.5 < fixed
    assert weights[0] > weights[1]  # the small-scale task is weighed up
    assert float(weights.sum()) == pytest.approx(1.0)  # w sums to K, times 1/K


def _gradnorm_weights_after_loss_drop(alpha):
    # A shared scalar q; task 0's loss fell to 0.2 of its start, task 1's
    # to 0.8, and their gradients on q are 0.2 and 0.8.
    q = nn.Parameter(torch.tensor(1.0))
    balancer = GradNorm(task_weights=[0.5, 0.5], lr=1e-3, alpha=alpha, weight_lr=0.01)
    balancer.backward(torch.stack([q * 1.0, q * 1.0]), [q])  # records L(0)
    assert balancer.initial_losses.tolist() == [1.0, 1.0]
    for _ in range(50):
        q.grad = None
        balancer.backward(torch.stack([q * 0.2, q * 0.8]), [q])
    w = balancer.task_weights_learned.detach()
    assert float(w.sum()) == pytest.approx(2.0)  # renormalised to K
    return w


def test_gradnorm_alpha_pulls_up_the_slower_task():
    # alpha = 0 equalises the norms 0.2 w_0 and 0.8 w_1: w_0 grows; alpha
    # > 0 targets G_mean r_k^alpha, and task 1 trains slower (larger r_k).
    equal = _gradnorm_weights_after_loss_drop(0.0)
    assert equal[0] > equal[1]
    rate = _gradnorm_weights_after_loss_drop(1.5)
    assert rate[1] > rate[0]


# -------------------------------------------------------------------- dwa
def test_dwa_follows_the_loss_ratio_formula():
    balancer = DynamicWeightAverage(task_weights=[0.5, 0.5], lr=1e-3, temperature=2)
    epochs = [
        [[1.0, 2.0], [1.0, 2.0]],
        [[0.5, 1.8], [0.3, 1.8]],
        [[0.35, 0.9], [0.35, 0.9]],
        [[0.3, 0.9], [0.3, 0.9]],
    ]
    seen = []
    for steps in epochs:
        for losses in steps:
            balancer.backward(torch.tensor(losses, requires_grad=True), [])
        seen.append(balancer.weights())
        balancer.end_epoch()
    means = [torch.tensor(e).mean(0) for e in epochs]
    torch.testing.assert_close(seen[0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(seen[1], torch.tensor([0.5, 0.5]))
    for t in (2, 3):
        ratio = means[t - 1] / means[t - 2]
        expected = 2 * torch.exp(ratio / 2) / torch.exp(ratio / 2).sum()
        torch.testing.assert_close(seen[t], 0.5 * expected)
    assert seen[2][1] > seen[2][0]  # task 1's loss fell less


def test_dwa_loss_uses_the_epoch_weights():
    balancer = DynamicWeightAverage(task_weights=[0.25, 0.75], lr=1e-3)
    balancer.balance = torch.tensor([1.5, 0.5])
    losses = torch.tensor([2.0, 4.0], requires_grad=True)
    loss = balancer.backward(losses, [])
    assert float(loss) == pytest.approx(0.25 * 1.5 * 2 + 0.75 * 0.5 * 4)
    torch.testing.assert_close(losses.grad, torch.tensor([0.375, 0.375]))


# -------------------------------------------------------------- estimators
@pytest.fixture(scope="module")
def data():
    return make_sessions(n_sessions=40, random_state=0)


def _fit(cls, data, method, **params):
    settings = {
        "backbone": "sharedbottom",
        "backbone_params": SMALL,
        "max_epochs": 2,
        "task_balancing": method,
        "random_state": 0,
    }
    if cls is RMTLClassifier:
        settings.update(critic=SessionCritic(hidden_dims=(8,), max_epochs=2))
    est = cls(**{**settings, **params})
    return est.fit(
        data.X, data.y, session_ids=data.session_ids, timestamps=data.timestamps
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cls", [MTLClassifier, RMTLClassifier])
def test_estimators_fit_reproducibly(cls, method, data):
    a, b = _fit(cls, data, method), _fit(cls, data, method)
    proba = a.predict_proba(data.X)
    assert proba.shape == (len(data.X), 2) and np.isfinite(proba).all()
    np.testing.assert_array_equal(proba, b.predict_proba(data.X))
    phases = ["pretrain", "refit"] if cls is RMTLClassifier else ["pretrain"]
    for phase in phases:
        rows = a.history_[phase]
        assert rows and all(len(r["task_balance"]) == 2 for r in rows)
        without_time = [{k: v for k, v in r.items() if k != "dur"} for r in rows]
        assert without_time == [
            {k: v for k, v in r.items() if k != "dur"} for r in b.history_[phase]
        ]


def test_methods_train_differently(data):
    fixed = _fit(MTLClassifier, data, "fixed").predict_proba(data.X)
    for method in ("uncertainty", "gradnorm", "pcgrad"):
        other = _fit(MTLClassifier, data, method).predict_proba(data.X)
        assert not np.array_equal(fixed, other), method


def test_history_records_balance_weights(data):
    est = _fit(
        MTLClassifier,
        data,
        "uncertainty",
        task_weights=[0.2, 0.8],
        task_balancing_params={"weight_lr": 0.1},
        max_epochs=3,
        early_stopping=False,
    )
    balance = np.array([r["task_balance"] for r in est.history_["pretrain"]])
    assert balance.shape == (3, 2)
    # The uncertainty weights move away from c_k * exp(0) as s_k is learned.
    assert not np.allclose(balance[-1], [0.2, 0.8])
    fixed = _fit(MTLClassifier, data, "fixed", task_weights=[0.2, 0.8])
    assert fixed.history_["pretrain"][0]["task_balance"] == pytest.approx([0.2, 0.8])


@pytest.mark.parametrize("method", ["gradnorm", "dwa"])
def test_save_load_round_trip(method, data, tmp_path):
    est = _fit(RMTLClassifier, data, method)
    save(est, tmp_path / "model.rmtl")
    loaded = load(tmp_path / "model.rmtl")
    np.testing.assert_array_equal(
        loaded.predict_proba(data.X), est.predict_proba(data.X)
    )
    assert loaded.task_balancing == method
    assert loaded.history_ == est.history_


def test_grid_search_over_task_balancing(data):
    search = GridSearchCV(
        MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, max_epochs=2),
        {"task_balancing": ["fixed", "dwa", "pcgrad"]},
        cv=GroupKFold(n_splits=2),
        error_score="raise",
    )
    search.fit(data.X, data.y, groups=data.session_ids)
    assert search.best_params_["task_balancing"] in {"fixed", "dwa", "pcgrad"}
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_bad_balancing_settings_raise(data):
    with pytest.raises(ValueError, match="valid keys are"):
        _fit(MTLClassifier, data, "dwa", task_balancing_params={"T": 2.0})
    with pytest.raises(ValueError, match="alpha"):
        _fit(MTLClassifier, data, "gradnorm", task_balancing_params={"alpha": -1})
    with pytest.raises(ValueError, match="task_weights has no effect"):
        _fit(RMTLClassifier, data, "gradnorm", task_weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="task_balancing"):
        _fit(MTLClassifier, data, "magic")


def test_make_balancer_starts_fresh():
    a = make_balancer("gradnorm", None, task_weights=[0.5, 0.5], lr=1e-3)
    assert isinstance(a, GradNorm) and a.alpha == 1.5
    assert a.weights().tolist() == pytest.approx([0.5, 0.5])


def test_balance_multiplies_the_row_weights():
    from sklearn_rmtl._skorch_net import MultiTaskNet, make_net

    torch.manual_seed(0)
    net = make_net(
        MultiTaskNet,
        device="cpu",
        module__cardinalities=[4],
        module__n_numerical=1,
        module__n_tasks=2,
        module__backbone="sharedbottom",
        module__backbone_params=resolve_backbone_params("sharedbottom", SMALL),
        criterion__task_weights=[0.25, 0.75],
    )
    net.initialize()
    balancer = DynamicWeightAverage(task_weights=[0.25, 0.75], lr=1e-3)
    balancer.balance = torch.tensor([1.5, 0.5])
    net.balancer = balancer
    X = {
        "x_cat": torch.tensor([[2], [3], [2]]),
        "x_num": torch.randn(3, 1),
        "sample_weight": torch.tensor([[1.0, 2.0], [0.5, 1.0], [3.0, 1.0]]),
    }
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    net.optimizer_.zero_grad()
    step = net.train_step_single((X, y))
    bce = nn.functional.binary_cross_entropy_with_logits(
        step["y_pred"].detach(), y, reduction="none"
    )
    per_task = (X["sample_weight"] * bce).mean(0)
    expected = (torch.tensor([0.25 * 1.5, 0.75 * 0.5]) * per_task).sum()
    torch.testing.assert_close(step["loss"], expected)
    assert all(p.grad is not None for p in net.module_.parameters())
