"""PEPNet: EPNet and PPNet gates fed by named prior fields."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_onnx_parity, assert_same_proba, make_session_data
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import MTLClassifier, ParquetSource, RMTLClassifier, SessionCritic
from sklearn_rmtl._torch_module import MultiTaskModule
from sklearn_rmtl.backbones import PEPNet, StateFields, resolve_backbone_params
from sklearn_rmtl.persistence import load, save

SIZES = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
FAST = {"max_epochs": 2, "random_state": 0}


def _data(n_samples=600, n_tasks=2, seed=0):
    """Tasks whose item effect flips with the domain: a gate-field interaction.

    Task k's logit is ``3 * sign(domain) * effect_k(item)``: neither field
    predicts anything alone, their product everything.
    """
    rng = np.random.default_rng(seed)
    domain = rng.integers(0, 2, n_samples)
    item = rng.integers(0, 12, n_samples)
    X = pd.DataFrame(
        {
            "domain": pd.Categorical(np.array(["a", "b"])[domain]),
            "item": pd.Categorical([f"i{v}" for v in item]),
            "user": pd.Categorical(rng.integers(0, 20, n_samples).astype(str)),
            "price": rng.normal(size=n_samples),
        }
    )
    sign = np.where(domain == 1, 1.0, -1.0)
    Y = {}
    for k in range(n_tasks):
        effect = rng.choice([-1.0, 1.0], 12)
        logit = 3.0 * sign * effect[item] - 0.5 * k
        Y[f"task{k}"] = (rng.random(n_samples) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, pd.DataFrame(Y)


@pytest.fixture(scope="module")
def fitted():
    X, Y = _data(n_tasks=3)
    est = MTLClassifier(
        backbone="pepnet",
        backbone_params={**SIZES, "gate_fields": ["domain"]},
        **FAST,
    )
    return est.fit(X, Y), X


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_fits_and_predicts_any_number_of_tasks(n_tasks):
    X, Y = _data(300, n_tasks)
    est = MTLClassifier(backbone="pepnet", backbone_params=SIZES, **FAST).fit(X, Y)
    proba = est.predict_proba(X)
    assert proba.shape == (300, n_tasks)
    assert np.isfinite(proba).all() and ((proba > 0) & (proba < 1)).all()
    assert est.predict(X).shape == (300, n_tasks)
    net = est.net_.module_.backbone
    # The state's fields are the encoder's columns; by default every
    # categorical column feeds both gates.
    assert net.fields.names == ("domain", "item", "user", "numerical")
    assert net.gate_fields == net.ppnet_fields == ("domain", "item", "user")
    assert est.backbone_params_["gate_fields"] is None


def test_learns_the_interaction_of_the_gate_field():
    X, Y = _data(2400, 2, seed=1)
    train, test = slice(0, 1800), slice(1800, None)
    est = MTLClassifier(
        backbone="pepnet",
        backbone_params={
            "embedding_dim": 8,
            "bottom_dims": (16,),
            "tower_dims": (8,),
            "dropout": 0.0,
            "gate_fields": ["domain"],
            "ppnet_fields": ["domain", "item"],
        },
        max_epochs=30,
        batch_size=128,
        lr=3e-3,
        early_stopping=False,
        random_state=0,
    ).fit(X.iloc[train], Y.iloc[train])
    proba = est.predict_proba(X.iloc[test])
    aucs = [roc_auc_score(Y.iloc[test, k], proba[:, k]) for k in range(2)]
    assert min(aucs) > 0.7, aucs


def test_gate_inputs_are_the_prior_fields_and_the_stopped_state():
    """The prior fields get gradients through the gates, the rest does not."""
    fields = StateFields(names=("a", "b", "c"), n_categorical=2, dim=2)
    torch.manual_seed(0)

    def gate_gradients(**params):
        net = PEPNet(
            in_features=6,
            n_tasks=2,
            bottom_dims=(4,),
            tower_dims=(),
            fields=fields,
            **params,
        )
        outputs = {}
        for name in ("epnet", "ppnet"):
            getattr(net, name).register_forward_hook(
                lambda _m, _i, out, n=name: outputs.__setitem__(n, out)
            )
        x = torch.randn(5, 6, requires_grad=True)
        net(x)
        grads = {}
        for name, out in outputs.items():
            total = sum(g.sum() for g in out)
            (grad,) = torch.autograd.grad(total, x, allow_unused=True)
            grads[name] = None if grad is None else grad.abs().sum(0) > 0
        return grads

    # No prior fields: the gates read the state with its gradient stopped.
    assert gate_gradients(gate_fields=[], ppnet_fields=[]) == {
        "epnet": None,
        "ppnet": None,
    }
    grads = gate_gradients(gate_fields=["c"], ppnet_fields=["a", "c"])
    assert grads["epnet"].tolist() == [False] * 4 + [True] * 2
    assert grads["ppnet"].tolist() == [True] * 2 + [False] * 2 + [True] * 2
    # None: the categorical fields.
    net = PEPNet(in_features=6, n_tasks=2, fields=fields)
    assert net.gate_fields == net.ppnet_fields == ("a", "b")


def test_gates_lie_between_0_and_2_one_unit_per_layer():
    net = PEPNet(in_features=12, n_tasks=3, bottom_dims=(8,), tower_dims=(4,))
    x = torch.randn(16, 12)
    (delta,) = net.epnet(x)
    assert delta.shape == (16, 1)  # one field without a layout
    gates = net.ppnet(x)
    assert [g.shape[1] for g in gates] == [3 * 12, 3 * 8, 3 * 4]
    for g in (delta, *gates):
        assert ((g > 0) & (g < 2)).all()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"gate_fields": ["nope"]}, r"gate_fields'\] names \['nope'\].*valid names"),
        ({"ppnet_fields": ["item", 3]}, r"ppnet_fields'\] names \[3\]"),
        ({"gate_fields": "domain"}, "must be a list of field names"),
        ({"ppnet_fields": ["item", "item"]}, "names a field twice"),
        ({"gate_hidden_dim": 0}, "gate_hidden_dim must be a positive int"),
    ],
)
def test_bad_gate_fields_are_errors_at_fit(params, match):
    X, Y = _data(60)
    est = MTLClassifier(
        backbone="pepnet", backbone_params={**SIZES, **params}, max_epochs=1
    )
    with pytest.raises(ValueError, match=match):
        est.fit(X, Y)


def test_the_error_lists_the_valid_field_names():
    X, Y = _data(60)
    X["history"] = [["i1", "i2"]] * len(X)
    est = MTLClassifier(
        backbone="pepnet",
        backbone_params={**SIZES, "gate_fields": ["users"]},
        sequence_features={"history": None},
        max_epochs=1,
    )
    valid = re.escape("valid names are ['domain', 'item', 'user', 'history', 'num")
    with pytest.raises(ValueError, match=valid):
        est.fit(X, Y)


def test_sequence_and_numerical_fields_feed_the_gates():
    X, Y = _data(200)
    X["history"] = [["i1", "i2"], ["i3"], []] * 66 + [["i4"], ["i5"]]
    est = MTLClassifier(
        backbone="pepnet",
        backbone_params={
            **SIZES,
            "gate_fields": ["history"],
            "ppnet_fields": ["numerical", "user"],
        },
        sequence_features={"history": "item"},
        **FAST,
    ).fit(X, Y)
    net = est.net_.module_.backbone
    assert net._gate_spans == ((12, 16),)
    assert net._ppnet_spans == ((16, 20), (8, 12))
    assert np.isfinite(est.predict_proba(X)).all()


def test_module_without_field_names_names_the_columns():
    params = resolve_backbone_params("pepnet", {**SIZES, "gate_fields": ["numerical"]})
    module = MultiTaskModule(
        cardinalities=[5, 7],
        n_numerical=2,
        n_tasks=2,
        backbone="pepnet",
        backbone_params=params,
    )
    names = ("categorical_0", "categorical_1", "numerical")
    assert module.backbone.fields.names == names
    with pytest.raises(ValueError, match="field_names must name"):
        MultiTaskModule(
            cardinalities=[5, 7],
            n_numerical=2,
            n_tasks=2,
            backbone="pepnet",
            backbone_params=params,
            field_names=["a"],
        )


def test_safe_file_and_pickle_round_trips(fitted, tmp_path):
    est, X = fitted
    save(est, tmp_path / "pepnet.rmtl")
    loaded = load(tmp_path / "pepnet.rmtl")
    assert_same_proba(loaded.predict_proba(X), est.predict_proba(X))
    assert loaded.net_.module__field_names == ["domain", "item", "user"]
    assert loaded.backbone_params_ == est.backbone_params_
    unpickled = pickle.loads(pickle.dumps(est))
    assert_same_proba(unpickled.predict_proba(X), est.predict_proba(X))


def test_onnx_matches_predict_proba(fitted, tmp_path):
    est, X = fitted
    assert_onnx_parity(est, X, tmp_path)


def test_rmtl_with_pepnet_as_the_actor():
    X, Y, sessions, times = make_session_data(n_sessions=40)
    est = RMTLClassifier(
        backbone="pepnet",
        backbone_params={**SIZES, "ppnet_fields": ["item"]},
        critic=SessionCritic(max_epochs=1, hidden_dims=(8,)),
        max_epochs=1,
        refit_max_epochs=1,
        random_state=0,
    ).fit(X, Y, session_ids=sessions, timestamps=times)
    assert est.net_.module_.backbone.ppnet_fields == ("item",)
    assert np.isfinite(est.predict_proba(X)).all()
    assert np.isfinite(est.loss_weights(X, Y)).all()


def test_parquet_fit(tmp_path):
    X, Y = _data(300)
    path = tmp_path / "rows.parquet"
    X.assign(**Y).to_parquet(path, row_group_size=100)
    params = {
        "backbone": "pepnet",
        "backbone_params": {**SIZES, "gate_fields": ["domain"]},
        "early_stopping": False,
        **FAST,
    }
    source = ParquetSource(
        path, target=list(Y.columns), features=list(X.columns), block_rows=100
    )
    streamed = MTLClassifier(**params).fit(source)
    assert streamed.net_.module_.backbone.gate_fields == ("domain",)
    assert np.isfinite(streamed.predict_proba(X)).all()
