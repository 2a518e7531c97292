"""ESMM's ESCM2 regularisers (counterfactual="ipw" / "dr"): the loss by hand,
training-only, and with every option of the estimators."""

from __future__ import annotations

import copy
import json
import pickle
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_proba, make_mtl_data
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._fit_data import encode_with
from sklearn_rmtl._loss import WeightedMultiTaskBCE
from sklearn_rmtl._torch_module import MultiTaskModule
from sklearn_rmtl.backbones import resolve_backbone_params
from sklearn_rmtl.backbones.esmm import ESMM
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.persistence import load, save

SIZES = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
FAST = {"max_epochs": 2, "batch_size": 64, "random_state": 0}
ADDED = ("counterfactual", "counterfactual_weight", "min_propensity")


def _params(counterfactual, **extra):
    return {**SIZES, "counterfactual": counterfactual, **extra}


# ---------------------------------------------------------------------------
# The regulariser against a hand computation
# ---------------------------------------------------------------------------


def _known_esmm(n_tasks, counterfactual, **kw):
    """An ESMM whose tower logits are the input's first ``n_tasks`` columns and
    whose imputation towers' pre-activations are the next ``n_tasks - 1``."""
    width = 2 * n_tasks - 1
    net = ESMM(
        in_features=width,
        n_tasks=n_tasks,
        bottom_dims=(),
        tower_dims=(),
        dropout=0.0,
        counterfactual=counterfactual,
        **kw,
    )
    with torch.no_grad():
        head = net.towers.head
        head.weight.zero_()
        head.bias.zero_()
        for k in range(n_tasks):
            head.weight[k, k, 0] = 1.0
        if net.imputation is not None:
            imp = net.imputation.head
            imp.weight.zero_()
            imp.bias.zero_()
            for j in range(n_tasks - 1):
                imp.weight[j, n_tasks + j, 0] = 1.0
    return net.train()


# Eight rows: logits of 3 towers, imputation pre-activations of 2 steps.
LOGITS = np.array(
    [
        [2.0, 0.5, -1.0],
        [-3.5, 1.0, 0.3],  # a tiny pCTR: floored at min_propensity
        [0.1, -0.4, 2.0],
        [1.2, 2.2, -0.5],
        [-0.7, -1.5, 1.1],
        [0.0, 0.8, 0.0],
        [1.5, -2.0, 0.7],
        [-1.0, 0.2, -0.3],
    ]
)
IMPUTED = np.array(
    [
        [0.3, -0.2],
        [1.0, 0.4],
        [-1.5, 0.0],
        [0.2, 2.0],
        [0.7, -0.6],
        [-0.1, 0.5],
        [2.5, -1.0],
        [0.0, 0.9],
    ]
)
LABELS = np.array(
    [
        [1, 1, 0],
        [1, 0, 0],
        [0, 0, 0],
        [1, 1, 1],
        [0, 0, 0],
        [1, 0, 0],
        [1, 1, 1],
        [0, 0, 0],
    ],
    dtype=float,
)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _bce(logit, label):
    return -(label * np.log(_sigmoid(logit)) + (1 - label) * np.log(_sigmoid(-logit)))


def _by_hand(counterfactual, n_tasks, mask, weight=0.5, floor=0.05):
    """ESCM2's regulariser from its formula, in float64 NumPy, step by step."""
    z = LOGITS[:, :n_tasks]
    y = np.nan_to_num(LABELS[:, :n_tasks])
    total = 0.0
    for k in range(1, n_tasks):
        # Rows with both labels, weighted by their weight of task k.
        w = np.where(mask[:, k - 1] > 0, mask[:, k], 0.0)
        o = y[:, k - 1]
        p_hat = np.maximum(np.prod(_sigmoid(z[:, :k]), axis=1), floor)
        e = _bce(z[:, k], y[:, k])
        if counterfactual == "ipw":
            r = np.sum(w * o * e / p_hat) / np.sum(w)
        else:
            e_hat = np.log1p(np.exp(IMPUTED[:, k - 1]))  # softplus
            dr = np.sum(w * (e_hat + o * (e - e_hat) / p_hat)) / np.sum(w)
            imputation = np.sum(w * o * (e - e_hat) ** 2 / p_hat) / np.sum(w)
            r = dr + imputation
        total += r
    return weight * total


def _batch(n_tasks):
    x = np.concatenate([LOGITS[:, :n_tasks], IMPUTED[:, : n_tasks - 1]], axis=1)
    return torch.tensor(x, dtype=torch.float32, requires_grad=True)


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
@pytest.mark.parametrize("n_tasks", [2, 3])
def test_regulariser_equals_the_hand_computation(counterfactual, n_tasks):
    net = _known_esmm(n_tasks, counterfactual)
    x = _batch(n_tasks)
    logits = net(x)
    # The known logits are the towers': the output is ESMM's product.
    proba = torch.sigmoid(logits).detach().double().numpy()
    expected_p = np.cumprod(_sigmoid(LOGITS[:, :n_tasks]), axis=1)
    np.testing.assert_allclose(proba, expected_p, rtol=1e-5)
    y = torch.tensor(LABELS[:, :n_tasks], dtype=torch.float32)
    loss = net.extra_loss(y)
    ones = np.ones((len(LABELS), n_tasks))
    np.testing.assert_allclose(
        loss.item(), _by_hand(counterfactual, n_tasks, ones), rtol=1e-5
    )
    assert net.extra_loss(y) is None  # read once per forward pass


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
def test_missing_labels_and_sample_weights_by_hand(counterfactual):
    n_tasks = 3
    net = _known_esmm(n_tasks, counterfactual, counterfactual_weight=0.3)
    mask = np.ones((len(LABELS), n_tasks))
    mask[0, 0] = 0.0  # click missing: no step of row 0
    mask[3, 1] = 0.0  # purchase missing: neither step 1 nor step 2 of row 3
    mask[[1, 6]] *= 2.5  # sample weights
    mask[5] *= 0.5
    labels = LABELS[:, :n_tasks].copy()
    labels[mask == 0] = np.nan  # never reaches the loss or its gradient
    net(_batch(n_tasks))
    loss = net.extra_loss(
        torch.tensor(labels, dtype=torch.float32),
        torch.tensor(mask, dtype=torch.float32),
    )
    expected = _by_hand(counterfactual, n_tasks, mask, weight=0.3)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    loss.backward()
    assert torch.isfinite(net.towers.head.weight.grad).all()


def _hand_torch(x, n_tasks, counterfactual, floor=0.05):
    """The regulariser written out in torch, with the paper's detachments."""
    z, imp = x[:, :n_tasks], x[:, n_tasks:]
    y = torch.tensor(LABELS[:, :n_tasks], dtype=torch.float32)
    total = 0
    for k in range(1, n_tasks):
        p_hat = torch.sigmoid(z[:, :k]).prod(1).detach().clamp(min=floor)
        o = y[:, k - 1]
        e = torch.nn.functional.binary_cross_entropy_with_logits(
            z[:, k], y[:, k], reduction="none"
        )
        if counterfactual == "ipw":
            total = total + (o * e / p_hat).mean()
        else:
            e_hat = torch.nn.functional.softplus(imp[:, k - 1])
            dr = e_hat.detach() + o * (e - e_hat.detach()) / p_hat
            total = total + dr.mean() + (o * (e.detach() - e_hat) ** 2 / p_hat).mean()
    return 0.5 * total


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
@pytest.mark.parametrize("n_tasks", [2, 3])
def test_gradients_equal_the_hand_computation(counterfactual, n_tasks):
    """The propensity is detached; the imputed error is the DR term's
    constant and the imputation loss's only trained side."""
    net = _known_esmm(n_tasks, counterfactual)
    x = _batch(n_tasks)
    net(x)
    y = torch.tensor(LABELS[:, :n_tasks], dtype=torch.float32)
    (grad,) = torch.autograd.grad(net.extra_loss(y), x)
    x2 = x.detach().clone().requires_grad_()
    (hand,) = torch.autograd.grad(_hand_torch(x2, n_tasks, counterfactual), x2)
    torch.testing.assert_close(grad, hand, rtol=1e-5, atol=1e-7)
    assert (grad[:, 0] == 0).all()  # no gradient into the CTR tower


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
def test_shards_sum_to_the_whole_batch(counterfactual):
    """Under data parallelism each shard's term is its share of the batch's:
    normalised by the weights of every shard (``total``)."""
    net = _known_esmm(3, counterfactual)
    y = torch.tensor(LABELS[:, :3], dtype=torch.float32)
    mask = torch.ones_like(y)
    mask[2, 1] = 0.0
    mask[5] = 2.0
    x = _batch(3)
    net(x)
    whole = net.extra_loss(y, mask)
    shards = [slice(0, 3), slice(3, None)]
    weights = [torch.where(mask[s, :-1] > 0, mask[s, 1:], 0).sum(0) for s in shards]
    parts = []
    for s in shards:
        net(x[s])
        parts.append(net.extra_loss(y[s], mask[s], total=lambda _: sum(weights)))
    torch.testing.assert_close(parts[0] + parts[1], whole)


def test_no_regulariser_outside_training():
    net = _known_esmm(2, "dr")
    y = torch.tensor(LABELS[:, :2], dtype=torch.float32)
    net.eval()(_batch(2))
    assert net.extra_loss(y) is None
    with torch.no_grad():
        net.train()(_batch(2))
    assert net.extra_loss(y) is None
    # A training pass, then eval(), copies and pickles drop the stored graph.
    net(_batch(2))
    assert copy.deepcopy(net)._train_outputs is None
    assert pickle.loads(pickle.dumps(net))._train_outputs is None
    net.eval()(_batch(2))
    assert net.extra_loss(y) is None
    plain = _known_esmm(2, None)
    plain(_batch(2))
    assert plain.extra_loss(y) is None


def test_settings_are_checked():
    for value, match in [
        ({"counterfactual": "ips"}, "counterfactual must be None, 'ipw' or 'dr'"),
        ({"counterfactual_weight": -1.0}, "counterfactual_weight must be"),
        ({"counterfactual_weight": float("inf")}, "counterfactual_weight must be"),
        ({"min_propensity": 0.0}, r"min_propensity must be a float in \(0, 1\]"),
        ({"min_propensity": 1.5}, "min_propensity must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            ESMM(in_features=4, n_tasks=2, **value)
    # An ESMM key given to another backbone names the backbone that takes it.
    with pytest.raises(
        ValueError,
        match=r"does not use; valid keys are .*'counterfactual' is a key of "
        r"backbone 'esmm'",
    ):
        resolve_backbone_params("mmoe", {"counterfactual": "ipw"})


def test_defaults_and_the_network_without_counterfactual():
    params = resolve_backbone_params("esmm", None)
    assert {k: params[k] for k in ADDED} == {
        "counterfactual": None,
        "counterfactual_weight": 0.5,
        "min_propensity": 0.05,
    }
    modules = {}
    for option in (None, "ipw", "dr"):
        torch.manual_seed(0)
        modules[option] = MultiTaskModule(
            cardinalities=[5, 4],
            n_numerical=2,
            n_tasks=2,
            backbone="esmm",
            backbone_params=resolve_backbone_params("esmm", _params(option)),
        ).eval()
    plain = modules[None].state_dict()
    assert modules["ipw"].state_dict().keys() == plain.keys()
    dr = modules["dr"].state_dict()
    extra = set(dr) - set(plain)
    assert extra and all(k.startswith("backbone.imputation.") for k in extra)
    x_cat, x_num = torch.randint(0, 4, (6, 2)), torch.randn(6, 2)
    for option in ("ipw", "dr"):  # the same draws and the same outputs
        state = modules[option].state_dict()
        assert all(torch.equal(state[k], v) for k, v in plain.items())
        torch.testing.assert_close(
            modules[option](x_cat, x_num), modules[None](x_cat, x_num)
        )


# ---------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------


@pytest.fixture
def regularised(monkeypatch):
    """The regulariser's values in the training steps of the test's fits."""
    values = []
    original = ESMM.extra_loss

    def spy(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        if loss is not None:
            values.append(loss.item())
        return loss

    monkeypatch.setattr(ESMM, "extra_loss", spy)
    return values


def _check(values):
    assert values and np.isfinite(values).all() and min(values) > 0
    values.clear()


@pytest.fixture(scope="module")
def funnel():
    X, Y = make_mtl_data(n_samples=2400, n_tasks=2, seed=1)
    return X.iloc[:1800], Y.iloc[:1800], X.iloc[1800:], Y.iloc[1800:]


def test_the_loss_without_counterfactual_is_unchanged(funnel):
    X, Y, *_ = funnel
    est = MTLClassifier(backbone="esmm", backbone_params=SIZES, **FAST).fit(X, Y)
    net = est.net_
    net.criterion_ = WeightedMultiTaskBCE([0.5, 0.5])  # trimmed after the fit
    inputs = {k: torch.as_tensor(v) for k, v in encode_with(est.encoder_, X).items()}
    y = torch.tensor(Y.to_numpy(), dtype=torch.float32)
    net.module_.train()
    y_pred = net.infer(inputs)
    loss = net.get_loss(y_pred, y, X=inputs, training=True)
    assert torch.equal(loss, net.criterion_(y_pred, y))
    assert net.extra_loss(y_pred, y, inputs, training=True) is None


def test_a_training_step_adds_the_weighted_regulariser(funnel):
    X, Y, *_ = funnel
    est = MTLClassifier(
        backbone="esmm", backbone_params=_params("ipw"), **{**FAST, "max_epochs": 1}
    ).fit(X, Y)
    net = est.net_
    net.criterion_ = WeightedMultiTaskBCE([0.5, 0.5])  # trimmed after the fit
    backbone = net.module_.backbone
    inputs = {k: torch.as_tensor(v) for k, v in encode_with(est.encoder_, X).items()}
    y = torch.tensor(Y.to_numpy(), dtype=torch.float32)
    net.module_.train()
    y_pred = net.infer(inputs)
    z = backbone._train_outputs[0].detach()
    loss = net.get_loss(y_pred, y, X=inputs, training=True)
    p_hat = torch.sigmoid(z[:, 0]).clamp(min=0.05)
    e = torch.nn.functional.binary_cross_entropy_with_logits(
        z[:, 1], y[:, 1], reduction="none"
    )
    regulariser = 0.5 * (y[:, 0] * e / p_hat).mean()
    torch.testing.assert_close(loss, net.criterion_(y_pred, y) + regulariser)
    # Validation losses are the criterion's.
    net.module_.eval()
    y_pred = net.infer(inputs)
    assert torch.equal(
        net.get_loss(y_pred, y, X=inputs, training=False), net.criterion_(y_pred, y)
    )


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
def test_fit_learns_the_conversion(funnel, counterfactual, regularised):
    X, Y, X_test, Y_test = funnel
    est = MTLClassifier(
        backbone="esmm",
        backbone_params=_params(counterfactual),
        **{**FAST, "max_epochs": 6},
    ).fit(X, Y)
    _check(regularised)
    assert est.net_.module_.backbone._train_outputs is None
    history = est.history_["pretrain"]
    assert all(np.isfinite(row["train_loss"]) for row in history)
    proba = est.predict_proba(X_test)
    clicked = Y_test["task0"].to_numpy() == 1
    cvr = proba[clicked, 1] / proba[clicked, 0]
    assert roc_auc_score(Y_test["task1"].to_numpy()[clicked], cvr) > 0.6


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
def test_three_tasks_missing_labels_sample_weights_and_balancing(
    counterfactual, regularised
):
    X, Y = make_mtl_data(n_samples=600, n_tasks=3, seed=2)
    Y = Y.astype(float)
    rng = np.random.default_rng(0)
    Y = Y.mask(rng.random(Y.shape) < 0.1)  # missing labels
    weight = rng.uniform(0.5, 2.0, len(X))
    for balancing in ("fixed", "uncertainty", "pcgrad"):
        est = MTLClassifier(
            backbone="esmm",
            backbone_params=_params(counterfactual),
            task_balancing=balancing,
            **FAST,
        ).fit(X, Y, sample_weight=weight)
        _check(regularised)
        history = est.history_["pretrain"]
        assert all(np.isfinite(row["train_loss"]) for row in history)
        assert np.isfinite(est.predict_proba(X)).all()


def test_fixed_balancing_takes_one_backward_pass_with_the_same_gradients():
    """FixedWeights sums the regulariser into its loss; the generic path of
    the other methods (the regulariser's own pass first) gives the same."""
    from sklearn_rmtl.balancing import FixedWeights
    from sklearn_rmtl.balancing._base import TaskBalancer

    grads = []
    for generic in (False, True):
        net = _known_esmm(2, "dr")
        x = _batch(2)
        logits = net(x)
        y = torch.tensor(LABELS[:, :2], dtype=torch.float32)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none"
        ).mean(0)
        balancer = FixedWeights(task_weights=[0.5, 0.5], lr=1e-3)
        method = TaskBalancer.backward_with if generic else FixedWeights.backward_with
        loss = method(balancer, losses, list(net.parameters()), net.extra_loss(y))
        grads.append((loss, x.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
def test_low_precision_fit(funnel, counterfactual, precision, regularised):
    X, Y, *_ = funnel
    est = MTLClassifier(
        backbone="esmm",
        backbone_params=_params(counterfactual),
        precision=precision,
        **FAST,
    )
    with warnings.catch_warnings():
        # bfloat16 may be emulated, float16 is meant for GPUs: both warn here.
        warnings.simplefilter("ignore")
        est.fit(X, Y)
    _check(regularised)
    assert all(np.isfinite(row["train_loss"]) for row in est.history_["pretrain"])
    assert np.isfinite(est.predict_proba(X)).all()


def test_parquet_fit(tmp_path, funnel, regularised):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from sklearn_rmtl import ParquetSource

    X, Y, *_ = funnel
    frame = pd.concat([X.reset_index(drop=True), Y.reset_index(drop=True)], axis=1)
    frame["user"] = frame["user"].astype(str)
    frame["item"] = frame["item"].astype(str)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    source = ParquetSource(
        path, target=["task0", "task1"], features=list(X.columns), block_rows=500
    )
    est = MTLClassifier(
        backbone="esmm",
        backbone_params=_params("dr"),
        categorical_features=["item", "user"],
        **FAST,
    ).fit(source)
    _check(regularised)
    assert all(np.isfinite(row["train_loss"]) for row in est.history_["pretrain"])
    assert est.predict_proba(frame[list(X.columns)]).shape == (len(frame), 2)


@pytest.mark.parametrize("counterfactual", ["ipw", "dr"])
def test_safe_files_round_trip(funnel, tmp_path, counterfactual):
    X, Y, X_test, _ = funnel
    est = MTLClassifier(
        backbone="esmm", backbone_params=_params(counterfactual), **FAST
    ).fit(X, Y)
    save(est, tmp_path / "m.rmtl")
    loaded = load(tmp_path / "m.rmtl")
    assert loaded.backbone_params["counterfactual"] == counterfactual
    assert loaded.net_.module_.backbone.counterfactual == counterfactual
    assert_same_proba(loaded.predict_proba(X_test), est.predict_proba(X_test))
    again = pickle.loads(pickle.dumps(est))
    assert_same_proba(again.predict_proba(X_test), est.predict_proba(X_test))


def _drop_added(node):
    """A manifest as written before ESMM had the counterfactual keys."""
    if isinstance(node, dict):
        return {k: _drop_added(v) for k, v in node.items() if k not in ADDED}
    if isinstance(node, list):
        return [_drop_added(v) for v in node]
    return node


def test_files_written_before_the_keys_still_load(funnel, tmp_path):
    X, Y, X_test, _ = funnel
    est = MTLClassifier(backbone="esmm", backbone_params=SIZES, **FAST).fit(X, Y)
    save(est, tmp_path / "new.rmtl")
    old = tmp_path / "old.rmtl"
    with zipfile.ZipFile(tmp_path / "new.rmtl") as zin, zipfile.ZipFile(old, "w") as z:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                manifest = json.loads(data)
                assert "counterfactual" in json.dumps(manifest)
                data = json.dumps(_drop_added(manifest)).encode()
            z.writestr(name, data)
    loaded = load(old)
    assert loaded.net_.module_.backbone.counterfactual is None
    assert_same_proba(loaded.predict_proba(X_test), est.predict_proba(X_test))


def test_onnx_export_is_the_plain_esmm_network(funnel):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sklearn_rmtl.export import onnx_inputs, to_onnx

    X, Y, X_test, _ = funnel
    graphs = {}
    for option in (None, "ipw", "dr"):
        est = MTLClassifier(
            backbone="esmm", backbone_params=_params(option), **FAST
        ).fit(X, Y)
        model = to_onnx(est)
        session = ort.InferenceSession(model.SerializeToString())
        served = session.run(["probabilities"], onnx_inputs(est, X_test))[0]
        np.testing.assert_allclose(served, est.predict_proba(X_test), rtol=0, atol=1e-5)
        graph = model.graph
        graphs[option] = (
            [node.op_type for node in graph.node],
            sorted(tuple(init.dims) for init in graph.initializer),
        )
    assert graphs["ipw"] == graphs[None]
    assert graphs["dr"] == graphs[None]  # no imputation tower in the export


def test_rmtl_with_an_esmm_actor(regularised):
    data = make_sessions(n_sessions=40, random_state=0)
    est = RMTLClassifier(
        backbone="esmm",
        backbone_params=_params("ipw"),
        critic=SessionCritic(max_epochs=1, hidden_dims=(8,)),
        max_epochs=1,
        random_state=0,
    ).fit(data.X, data.y, session_ids=data.session_ids, timestamps=data.timestamps)
    _check(regularised)
    for phase in ("pretrain", "refit"):
        rows = est.history_[phase]
        assert rows and all(np.isfinite(row["train_loss"]) for row in rows)
    assert est.net_.module_.backbone.counterfactual == "ipw"
    assert np.isfinite(est.predict_proba(data.X)).all()
