"""Mixed precision: every phase's matrix products, loss scaling, files."""

from __future__ import annotations

import copy
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL, make_session_data, tiny_critic_setup
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import sklearn_rmtl._skorch_net
from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic, persistence
from sklearn_rmtl._precision import autocast
from sklearn_rmtl._td import TDConfig, actor_step, td_step
from sklearn_rmtl.balancing import BALANCINGS, make_balancer
from sklearn_rmtl.exceptions import InvalidFileError
from sklearn_rmtl.metrics import per_task_roc_auc

# float16 on a CPU is meant to warn (tested below); here it runs on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:precision='float16' on device")

ops = torch.ops.aten
#: The matrix products autocast runs in its low precision.
PRODUCTS = {ops.mm.default, ops.addmm.default, ops.bmm.default, ops.baddbmm.default}

MTL_FAST = {
    "backbone": "mmoe",
    "backbone_params": {**SMALL, "n_experts": 2},
    "max_epochs": 2,
    "batch_size": 128,
    "random_state": 0,
}
FAST = {
    **MTL_FAST,
    "critic": SessionCritic(hidden_dims=(16,), max_epochs=2),
    "refit_max_epochs": 1,
}


class ProductDtypes(TorchDispatchMode):
    """Record the dtype of every matrix product torch runs."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in PRODUCTS:
            self.dtypes.append(args[-1].dtype)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def sessions():
    return make_session_data(n_sessions=60, seed=0)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize(
    "extra",
    [{}, {"actor_update": True}, {"task_balancing": "pcgrad"}],
    ids=["paper", "actor_update", "pcgrad"],
)
def test_low_precision_reaches_every_product_of_fit_and_predict(
    sessions, extra, precision
):
    X, Y, s, t = sessions
    dtype = getattr(torch, precision)
    est = RMTLClassifier(**FAST, precision=precision, **extra)
    with ProductDtypes() as spy:
        est.fit(X, Y, session_ids=s, timestamps=t)
    # Forward and backward products of pretraining, validation, the
    # behaviour actor, the TD steps (and actor steps), the refit and its Q.
    assert len(spy.dtypes) > 100
    assert set(spy.dtypes) == {dtype}
    with ProductDtypes() as spy:
        proba = est.predict_proba(X)
        weights = est.loss_weights(X, Y)
    assert spy.dtypes and set(spy.dtypes) == {dtype}
    assert proba.dtype == np.float64 and np.isfinite(weights).all()
    # Master weights stay float32.
    assert {p.dtype for p in est.net_.module_.parameters()} == {torch.float32}
    assert {p.dtype for p in est.critic_.module_.parameters()} == {torch.float32}


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_low_precision_reaches_the_products_of_sequence_pooling(sessions, pooling):
    """A history's attention MLP and pooling products run in bfloat16 too."""
    X, Y, s, t = sessions
    rng = np.random.default_rng(0)
    items = X["item"].cat.categories.to_numpy(dtype=object)
    history = [list(rng.choice(items, rng.integers(0, 6))) for _ in range(len(X))]
    X = X.assign(history=pd.Series(history, index=X.index, dtype=object))
    params = {**FAST["backbone_params"], "sequence_pooling": pooling}
    est = RMTLClassifier(
        **{**FAST, "backbone_params": params},
        sequence_features={"history": "item"},
        max_sequence_length=5,
        precision="bfloat16",
    )
    with ProductDtypes() as spy:
        est.fit(X, Y, session_ids=s, timestamps=t)
        est.predict_proba(X)
    assert len(spy.dtypes) > 100
    assert set(spy.dtypes) == {torch.bfloat16}


def test_float32_runs_no_bfloat16_product(sessions):
    X, Y, s, t = sessions
    with ProductDtypes() as spy:
        RMTLClassifier(**FAST).fit(X, Y, session_ids=s, timestamps=t)
    assert set(spy.dtypes) == {torch.float32}


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_low_precision_is_reproducible_and_close_to_float32(sessions, precision):
    X, Y, s, t = sessions
    fits = [
        RMTLClassifier(**FAST, precision=p).fit(X, Y, session_ids=s, timestamps=t)
        for p in (precision, precision, "float32")
    ]
    low, again, full = (f.predict_proba(X) for f in fits)
    np.testing.assert_array_equal(low, again)
    assert not np.array_equal(low, full)
    auc_low, auc_full = per_task_roc_auc(Y, low), per_task_roc_auc(Y, full)
    np.testing.assert_allclose(auc_low, auc_full, atol=0.02)
    w_low, w_full = (f.loss_weights(X, Y) for f in (fits[0], fits[2]))
    assert np.corrcoef(w_low.ravel(), w_full.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_precision_is_saved_and_loaded(sessions, tmp_path, precision):
    X, Y, _s, t = sessions
    est = MTLClassifier(**MTL_FAST, precision=precision).fit(X, Y, timestamps=t)
    persistence.save(est, tmp_path / "m.rmtl")
    loaded = persistence.load(tmp_path / "m.rmtl", device="cpu")
    assert loaded.precision == precision and loaded.net_.precision == precision
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def edited_copy(src, dst, edit):
    """A copy of a saved model whose network arguments ``edit`` changed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                manifest = json.loads(data)
                edit(manifest["estimator"]["fitted"]["net_"]["kwargs"])
                data = json.dumps(manifest).encode()
            zout.writestr(name, data)
    return dst


def test_saved_precision_is_checked_and_defaults_to_float32(sessions, tmp_path):
    X, Y, _s, _t = sessions
    est = MTLClassifier(**MTL_FAST, precision="float16").fit(X, Y)
    path = tmp_path / "m.rmtl"
    persistence.save(est, path)
    # A file written before precision existed: float32.
    old = edited_copy(path, tmp_path / "old.rmtl", lambda kw: kw.pop("precision"))
    assert persistence.load(old).net_.precision == "float32"
    bad = edited_copy(
        path, tmp_path / "bad.rmtl", lambda kw: kw.update(precision="float8")
    )
    with pytest.raises(InvalidFileError, match="unknown precision 'float8'"):
        persistence.load(bad)


def test_float16_loss_scaling_keeps_small_gradients(sessions, monkeypatch):
    # Task weights of 1e-5 make the logits' gradients ~1e-8, below float16's
    # smallest number: unscaled, the backward passes flush them to zero.
    X, Y, _s, _t = sessions
    params = {**MTL_FAST, "task_weights": [1e-5] * Y.shape[1]}

    def proba(**extra):
        return MTLClassifier(**params, **extra).fit(X, Y).predict_proba(X)

    untrained = proba(lr=1e-30)  # the initial weights, unchanged
    full, half = proba(), proba(precision="float16")
    learned = np.abs(full - untrained).max()
    assert learned > 1e-3
    # With loss scaling float16 learns what float32 learns ...
    assert np.abs(half - full).max() < 0.05 * learned
    # ... which it does not without.
    monkeypatch.setattr(
        sklearn_rmtl._skorch_net,
        "grad_scaler",
        lambda precision, device: torch.amp.GradScaler("cpu", enabled=False),
    )
    unscaled = proba(precision="float16")
    assert np.abs(unscaled - full).max() > 0.3 * learned


class GradNorms(Callback):
    """Record the gradient norm that ``on_grad_computed`` callbacks see."""

    def __init__(self, norms: list[float]) -> None:
        self.norms = norms

    def on_grad_computed(self, net, named_parameters, **kwargs):
        grads = [p.grad.norm() for _, p in named_parameters if p.grad is not None]
        self.norms.append(float(torch.stack(grads).norm()))


def test_gradient_callbacks_see_unscaled_float16_gradients(sessions):
    # What gradient clipping (skorch's GradientNormClipping) reads.
    X, Y, _s, _t = sessions
    norms: dict[str, list[float]] = {"float32": [], "float16": []}
    for precision, seen in norms.items():
        params = {**MTL_FAST, "max_epochs": 1, "precision": precision}
        MTLClassifier(**params, callbacks=[GradNorms(seen)]).fit(X, Y)
    assert len(norms["float16"]) == len(norms["float32"]) > 0
    np.testing.assert_allclose(norms["float16"], norms["float32"], rtol=0.05)


class TwoTasks(nn.Module):
    """A shared layer and one head per task."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(4, 8)
        self.heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.shared(x))
        return torch.cat([head(h) for head in self.heads], 1)


def balanced_step(name, precision, scaler=None):
    """One step of balancer ``name``; the true gradients and the balancer."""
    net = TwoTasks()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    balancer = make_balancer(name, None, task_weights=[0.5, 0.5], lr=1e-2, generator=g)
    balancer.grad_scaler = scaler
    x, y = torch.randn(16, 4, generator=g), (torch.rand(16, 2, generator=g) > 0.5)
    with autocast(precision, "cpu"):
        logits = net(x).float()
    losses = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
    opt.zero_grad()
    balancer.backward(losses.mean(0), list(net.parameters()))
    if scaler is None:
        grads = [p.grad.clone() for p in net.parameters()]
        opt.step()
    else:
        scaler.unscale_(opt)
        grads = [p.grad.clone() for p in net.parameters()]
        scaler.step(opt)
        scaler.update()
    return net, balancer, grads


@pytest.mark.parametrize("name", sorted(BALANCINGS))
def test_balancers_fill_true_gradients_under_loss_scaling(name):
    _, reference, expected = balanced_step(name, "float32")
    _, balancer, grads = balanced_step(name, "float16", torch.amp.GradScaler("cpu"))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-4)
    torch.testing.assert_close(
        balancer.weights(), reference.weights(), rtol=1e-3, atol=0
    )
    # The learned weights' own gradients are the true ones too.
    for learned in ("log_vars", "task_weights_learned"):
        if hasattr(balancer, learned):
            torch.testing.assert_close(
                getattr(balancer, learned).grad,
                getattr(reference, learned).grad,
                rtol=2e-2,
                atol=1e-5,
            )


@pytest.mark.parametrize("name", sorted(BALANCINGS))
def test_balanced_step_that_overflows_is_skipped(name):
    start = [p.detach().clone() for p in TwoTasks().parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    net, balancer, grads = balanced_step(name, "float16", scaler)
    assert not all(bool(torch.isfinite(g).all()) for g in grads)
    for p, p0 in zip(net.parameters(), start, strict=True):
        torch.testing.assert_close(p.detach(), p0, rtol=0, atol=0)
    assert scaler.get_scale() == 2.0**39
    assert torch.isfinite(balancer.weights()).all()


@pytest.mark.parametrize(("init_scale", "skipped"), [(2.0**40, True), (2.0**8, False)])
def test_td_and_actor_steps_step_through_the_scaler(init_scale, skipped):
    actor, critic, state = tiny_critic_setup()
    config = TDConfig(
        gamma=0.9,
        tau=0.1,
        soft_update_freq=1,
        lr=1e-2,
        batch_size=8,
        max_epochs=1,
        tol=0.0,
        patience=1,
        double_q=False,
        balance_labels=False,
        actor_update=True,
        verbose=0,
        precision="float16",
    )
    g = torch.Generator().manual_seed(1)
    action, y01 = torch.rand(8, 2, generator=g), (torch.rand(8, 2, generator=g) > 0.5)
    modules = {"critic": critic, "actor": actor}
    before = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}
    scalers = {k: torch.amp.GradScaler("cpu", init_scale=init_scale) for k in modules}
    td_step(
        critic,
        copy.deepcopy(critic),
        torch.optim.Adam(critic.parameters(), lr=1e-2),
        state=state,
        action=action,
        reward=-torch.rand(8, 2, generator=g),
        done=torch.zeros(8),
        next_state=state,
        next_action=action,
        weight=None,
        config=config,
        scaler=scalers["critic"],
    )
    actor_step(
        actor,
        critic,
        torch.optim.Adam(actor.parameters(), lr=1e-2),
        state,
        y01.float(),
        2.5,
        "float16",
        scaler=scalers["actor"],
    )
    for key, module in modules.items():
        unchanged = all(
            torch.equal(v, before[key][k]) for k, v in module.state_dict().items()
        )
        assert unchanged == skipped, key
        assert scalers[key].get_scale() == (init_scale / 2 if skipped else init_scale)


def test_bfloat16_warns_where_it_is_emulated(sessions, monkeypatch):
    import sklearn_rmtl._precision as precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    X, Y, _s, _t = sessions
    with pytest.warns(UserWarning, match="no bfloat16 matrix units.*float32"):
        MTLClassifier(**MTL_FAST, precision="bfloat16").fit(X, Y)


@pytest.mark.filterwarnings("default:precision='float16' on device")
def test_float16_warns_on_cpu_and_points_to_bfloat16(sessions):
    X, Y, _s, _t = sessions
    with pytest.warns(UserWarning, match="meant for CUDA GPUs.*'bfloat16'"):
        MTLClassifier(**MTL_FAST, precision="float16").fit(X, Y)


def test_unknown_precision_is_a_parameter_error(sessions):
    X, Y, _s, _t = sessions
    with pytest.raises(InvalidParameterError, match="precision"):
        MTLClassifier(precision="float8").fit(X, Y)
