"""MTLClassifier: training every backbone, the sklearn surface, errors."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL, make_mtl_data
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._rows import ArrayRows
from sklearn_rmtl._skorch_net import MultiTaskNet
from sklearn_rmtl.backbones import BACKBONES
from sklearn_rmtl.exceptions import DivergenceError


def _fit(X, Y, **params):
    defaults = {
        "backbone_params": SMALL,
        "max_epochs": 8,
        "batch_size": 128,
        "random_state": 0,
    }
    return MTLClassifier(**{**defaults, **params}).fit(X, Y)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("n_tasks", [1, 2, 3])
def test_every_backbone_learns(backbone, n_tasks):
    X, Y = make_mtl_data(n_samples=1500, n_tasks=n_tasks, seed=n_tasks)
    train, test = slice(0, 1000), slice(1000, None)
    if n_tasks < BACKBONES[backbone].min_tasks:
        with pytest.raises(ValueError, match="needs at least 2 tasks"):
            _fit(X[train], Y[train], backbone=backbone)
        return
    clf = _fit(X[train], Y[train], backbone=backbone, max_epochs=15, lr=3e-3)
    proba = clf.predict_proba(X[test])
    assert proba.shape == (500, n_tasks)
    assert ((proba >= 0) & (proba <= 1)).all()
    aucs = [roc_auc_score(Y.iloc[test, k], proba[:, k]) for k in range(n_tasks)]
    assert min(aucs) > 0.75, aucs


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_trains_in_bfloat16_with_weights_and_missing_labels(backbone):
    """bf16 autocast, per-row weights, missing labels and a balancer at once."""
    X, Y = make_mtl_data(n_samples=300, n_tasks=2)
    rng = np.random.default_rng(0)
    Y = Y.astype(float)
    Y.loc[rng.random(300) < 0.3, "task1"] = np.nan
    est = MTLClassifier(
        backbone=backbone,
        backbone_params=SMALL,
        precision="bfloat16",
        task_balancing="gradnorm",
        max_epochs=2,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated on some CPUs
        est.fit(X, Y, sample_weight=rng.uniform(0.0, 2.0, 300))
    assert {p.dtype for p in est.net_.module_.parameters()} == {torch.float32}
    assert np.isfinite(est.predict_proba(X)).all()


def test_fitted_attributes(mtl_data):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="ple", max_epochs=2)
    assert clf.n_tasks_ == 2
    assert list(clf.task_names_) == ["task0", "task1"]
    assert clf.classes_.shape == (2, 2) and clf.classes_.tolist() == [[0, 1], [0, 1]]
    assert clf.n_features_in_ == 4
    assert list(clf.feature_names_in_) == list(X.columns)
    assert clf.n_iter_ == len(clf.history_["pretrain"]) <= 2
    row = clf.history_["pretrain"][0]
    assert {"epoch", "train_loss", "valid_loss", "dur"} <= set(row)
    assert clf.backbone_params_["embedding_dim"] == SMALL["embedding_dim"]
    assert clf.backbone_params_["n_shared_experts"] == 4
    assert clf.device_ == "cpu"
    pred = clf.predict(X)
    assert pred.shape == (len(X), 2)
    np.testing.assert_array_equal(pred, (clf.predict_proba(X) > 0.5).astype(int))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ((False, True), [False, True]),
        ((1, 2), [1, 2]),
        (("no", "yes"), ["no", "yes"]),
    ],
)
def test_any_two_labels(mtl_data, labels, expected):
    X, Y = mtl_data
    Yl = (
        Y.replace({0: labels[0], 1: labels[1]})
        if not isinstance(labels[0], bool)
        else Y.astype(bool)
    )
    clf = _fit(X, Yl, backbone="sharedbottom", max_epochs=1)
    assert clf.classes_.tolist() == [expected, expected]
    pred = clf.predict(X)
    assert set(np.unique(pred)) <= set(expected)
    positive = clf.predict_proba(X) > 0.5
    np.testing.assert_array_equal(pred == expected[1], positive)


def test_numpy_input_and_single_task():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int).reshape(-1, 1)
    clf = _fit(X, y, backbone="mmoe", max_epochs=10)
    assert list(clf.task_names_) == ["task_0"]
    assert roc_auc_score(y[:, 0], clf.predict_proba(X)[:, 0]) > 0.9
    assert not hasattr(clf, "feature_names_in_")


def test_one_d_target_is_rejected_with_advice(mtl_data):
    X, Y = mtl_data
    with pytest.raises(ValueError, match="reshape\\(-1, 1\\)"):
        MTLClassifier().fit(X, Y["task0"].to_numpy())


@pytest.mark.parametrize(
    ("y_col", "match"),
    [
        (np.tile([0, 1, 2], 500), "Only binary classification is supported"),
        (np.linspace(0, 1, 1500), "Unknown label type"),
        (np.full(1500, np.nan), "Task .task1. has no observed label"),
    ],
)
def test_bad_targets(mtl_data, y_col, match):
    X, Y = mtl_data
    Y = Y.assign(task1=y_col)
    with pytest.raises(ValueError, match=match):
        MTLClassifier().fit(X, Y)


def test_task_without_positives_warns_and_fits(mtl_data):
    X, Y = mtl_data
    with pytest.warns(UserWarning, match="no positive label"):
        clf = _fit(X, Y.assign(task1=0), backbone="sharedbottom", max_epochs=1)
    assert clf.classes_.tolist() == [[0, 1], [0, 1]]


def test_random_state_gives_identical_predictions(mtl_data):
    X, Y = mtl_data
    p1 = _fit(X, Y, backbone="ple", max_epochs=2).predict_proba(X)
    p2 = _fit(X, Y, backbone="ple", max_epochs=2).predict_proba(X)
    p3 = _fit(X, Y, backbone="ple", max_epochs=2, random_state=1).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


def test_fit_does_not_touch_global_torch_rng(mtl_data):
    X, Y = mtl_data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _fit(X, Y, backbone="sharedbottom", max_epochs=1)
    torch.testing.assert_close(torch.rand(3), expected)


def test_clone_and_nested_params():
    clf = MTLClassifier(
        backbone="mmoe", backbone_params={"n_experts": 4, "bottom_dims": (8,)}
    )
    params = clf.get_params()
    assert params["backbone_params"] == {"n_experts": 4, "bottom_dims": (8,)}
    cloned = clone(clf)
    assert cloned.get_params()["backbone_params"] == params["backbone_params"]
    assert cloned.backbone_params is not clf.backbone_params
    cloned.set_params(backbone="ple", backbone_params={"n_shared_experts": 2})
    assert cloned.backbone == "ple" and cloned.backbone_params == {
        "n_shared_experts": 2
    }
    assert clf.backbone == "mmoe"


def test_unknown_backbone_param_fails_before_training(mtl_data):
    X, Y = mtl_data
    clf = MTLClassifier(backbone="sharedbottom", backbone_params={"n_experts": 3})
    with pytest.raises(ValueError, match="does not use"):
        clf.fit(X, Y)
    assert not hasattr(clf, "net_")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"backbone": "transformer"}, "'backbone' parameter"),
        ({"lr": -1.0}, "'lr' parameter"),
        ({"device": "tpu"}, "'device' parameter"),
        ({"task_weights": [1.0]}, "one entry per task"),
        ({"task_weights": [1.0, -1.0]}, "non-negative"),
    ],
)
def test_invalid_parameters(mtl_data, params, match):
    X, Y = mtl_data
    with pytest.raises(ValueError, match=match):
        MTLClassifier(**params).fit(X, Y)


def test_task_weights_change_the_loss(mtl_data):
    X, Y = mtl_data
    base = _fit(X, Y, backbone="sharedbottom", max_epochs=1, early_stopping=False)
    only_first = _fit(
        X,
        Y,
        backbone="sharedbottom",
        max_epochs=1,
        early_stopping=False,
        task_weights=[1.0, 0.0],
    )
    assert not np.allclose(base.predict_proba(X), only_first.predict_proba(X))
    # With zero weight the second tower gets no gradient: it keeps its init.
    init = MTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        max_epochs=1,
        random_state=0,
        task_weights=[1.0, 0.0],
        lr=1e-12,
        early_stopping=False,
    ).fit(X, Y)
    head = only_first.net_.module_.backbone.towers.head
    head0 = init.net_.module_.backbone.towers.head
    torch.testing.assert_close(head.weight[1], head0.weight[1])


def test_early_stopping_holds_out_latest_rows(mtl_data, monkeypatch):
    X, Y = mtl_data
    times = np.arange(len(X))[::-1]  # the first rows are the latest
    clf = MTLClassifier(validation_fraction=0.2, random_state=0)
    data = clf._prepare(ArrayRows(X, Y, timestamps=times.astype(float)))
    mask = data.block_labels(0).valid
    assert mask.sum() == 300 and mask[:300].all()
    fitted = _fit(X, Y, backbone="sharedbottom", max_epochs=30, n_iter_no_change=1)
    assert fitted.n_iter_ < 30  # stopped early
    fitted = MTLClassifier(
        backbone="sharedbottom", backbone_params=SMALL, max_epochs=2
    ).fit(
        X,
        Y,
        timestamps=pd.to_datetime(times, unit="s"),
        session_ids=np.arange(len(X)) // 5,
    )
    assert fitted.n_iter_ == 2


def test_metadata_length_checked(mtl_data):
    X, Y = mtl_data
    with pytest.raises(
        ValueError, match="timestamps must be 1-D with one entry per row"
    ):
        MTLClassifier().fit(X, Y, timestamps=np.arange(3))
    with pytest.raises(ValueError, match="session_ids must be 1-D"):
        MTLClassifier().fit(X, Y, session_ids=np.arange(3))


def test_predict_checks_columns(mtl_data):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="sharedbottom", max_epochs=1)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict_proba(X[X.columns[::-1]])
    with pytest.raises(ValueError, match="Feature names"):
        clf.predict_proba(X.drop(columns="age"))
    with pytest.raises(ValueError, match="Reshape your data"):
        clf.predict_proba(X["age"].to_numpy())


def test_unseen_and_missing_categories_at_predict(mtl_data):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="mmoe", max_epochs=1)
    new = X.head(4).copy()
    new["user"] = ["never-seen", None, "1", "2"]
    new["item"] = pd.Categorical(["zz", None, "a", "a"])
    new.loc[0, "price"] = np.nan
    proba = clf.predict_proba(new)
    assert np.isfinite(proba).all() and proba.shape == (4, 2)


def test_device_cuda_without_gpu(mtl_data, monkeypatch):
    X, Y = mtl_data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    clf = MTLClassifier(device="cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        clf.fit(X, Y)
    assert not hasattr(clf, "net_")
    clf = _fit(X, Y, backbone="sharedbottom", max_epochs=1, device="auto")
    assert clf.device_ == "cpu"


def test_verbose_zero_prints_nothing(mtl_data, capsys):
    X, Y = mtl_data
    _fit(X, Y, backbone="sharedbottom", max_epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    _fit(X, Y, backbone="sharedbottom", max_epochs=2, verbose=1)
    assert "train_loss" in capsys.readouterr().out


def test_callbacks_are_passed_to_skorch(mtl_data):
    X, Y = mtl_data
    epochs = []

    class Record(Callback):
        def on_epoch_end(self, net, **kwargs):
            epochs.append(len(net.history))

    _fit(
        X,
        Y,
        backbone="sharedbottom",
        max_epochs=2,
        early_stopping=False,
        callbacks=[Record()],
    )
    assert epochs == [1, 2]


def test_failed_refit_keeps_previous_fit(mtl_data):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="sharedbottom", max_epochs=1)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError):
        clf.fit(X, Y.assign(task1=np.linspace(0, 1, len(Y))))
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_pickle_round_trip(mtl_data):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="aitm", max_epochs=1)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert vars(clf).keys() == vars(again).keys()  # pickling adds no attribute


def test_predict_in_chunks_matches_whole(mtl_data, monkeypatch):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="ple", max_epochs=1)
    whole = clf.predict_proba(X)
    monkeypatch.setattr("sklearn_rmtl._mtl._PREDICT_CHUNK", 97)
    np.testing.assert_allclose(clf.predict_proba(X), whole, rtol=1e-6)


def test_divergence_stops_with_a_clear_error(mtl_data):
    X, Y = mtl_data
    clf = _fit(X, Y, backbone="sharedbottom", max_epochs=1)
    before = clf.predict_proba(X)
    with pytest.raises(DivergenceError, match=r"pretrain loss became nan.*Lower lr"):
        clf.set_params(lr=1e20, max_epochs=3).fit(X, Y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_keyboard_interrupt_propagates_and_keeps_previous_fit(mtl_data):
    X, Y = mtl_data

    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            raise KeyboardInterrupt

    clf = _fit(X, Y, backbone="sharedbottom", max_epochs=1)
    before = clf.predict_proba(X)
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(callbacks=[Interrupt()]).fit(X, Y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    fresh = MTLClassifier(callbacks=[Interrupt()], backbone_params=SMALL)
    with pytest.raises(KeyboardInterrupt):
        fresh.fit(X, Y)
    assert not hasattr(fresh, "net_")


def test_net_is_a_plain_fitted_attribute(mtl_data):
    X, Y = mtl_data
    clf = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL)
    assert not hasattr(clf, "net_") and not clf.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    clf = _fit(X, Y, backbone="sharedbottom", max_epochs=1)
    assert isinstance(vars(clf)["net_"], MultiTaskNet)
    assert clf.__sklearn_is_fitted__()
    assert not hasattr(clf, "backbone_")  # its former name is gone


@pytest.mark.parametrize("device", ["cuda:1", "cuda:0"])
def test_device_accepts_torch_device_strings(mtl_data, monkeypatch, device):
    X, Y = mtl_data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=f"device='{device}'.*no CUDA GPU"):
        MTLClassifier(device=device).fit(X, Y)


def test_device_rejects_other_strings(mtl_data):
    X, Y = mtl_data
    with pytest.raises(ValueError, match="torch device string"):
        MTLClassifier(device="gpu").fit(X, Y)
