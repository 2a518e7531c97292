"""Inputs that used to be re-interpreted or refused late: now matched or refused early.

Task-named inputs are matched by name, selection metrics that the held-out
rows cannot compute are refused before training, the scale of
``sample_weight`` has no effect, unsupported devices and infinite balancer
settings are refused when fit starts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.metrics import make_task_scorer
from sklearn_rmtl.parquet import ParquetSource

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
FAST = {
    "backbone": "sharedbottom",
    "backbone_params": {**TINY, "dropout": 0.0},
    "max_epochs": 2,
    "batch_size": 4096,
    "random_state": 0,
}
CRITIC = SessionCritic(max_epochs=1, hidden_dims=(8,))


@pytest.fixture(scope="module")
def data():
    d = make_sessions(n_sessions=40, random_state=0)
    return d.X, d.y, d.session_ids, d.timestamps


@pytest.fixture(scope="module")
def weights(data):
    y = data[1]
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.uniform(0.5, 2.0, y.shape), columns=y.columns)


@pytest.fixture(scope="module")
def weighted_fit(data, weights):
    X, y, _, _ = data
    return MTLClassifier(**FAST).fit(X, y, sample_weight=weights)


# ------------------------------------------------------- task-named inputs
def test_sample_weight_frame_is_matched_to_the_tasks_by_name(
    data, weights, weighted_fit
):
    X, y, _, _ = data
    swapped = weights[weights.columns[::-1]]
    est = MTLClassifier(**FAST).fit(X, y, sample_weight=swapped)
    assert_allclose(est.predict_proba(X), weighted_fit.predict_proba(X), atol=1e-6)
    # Unnamed weights (an array, default integer columns) go by position.
    est = MTLClassifier(**FAST).fit(X, y, sample_weight=pd.DataFrame(weights.values))
    assert_allclose(est.predict_proba(X), weighted_fit.predict_proba(X), atol=1e-6)


def test_sample_weight_frame_with_other_names_is_refused(data, weights):
    X, y, _, _ = data
    other = weights.rename(columns={"click": "clicks"})
    with pytest.raises(
        ValueError, match=r"sample_weight has 2 task columns \['clicks'"
    ):
        MTLClassifier(**FAST).fit(X, y, sample_weight=other)


def test_scorer_matches_y_columns_by_name(data, weighted_fit):
    X, y, _, _ = data
    scorer = make_task_scorer("roc_auc", task="purchase")
    expected = scorer(weighted_fit, X, y)
    assert scorer(weighted_fit, X, y[y.columns[::-1]]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="matched to the tasks by name"):
        scorer(weighted_fit, X, y.set_axis(["a", "b"], axis=1))


def test_loss_weights_matches_y_columns_by_name_and_refuses_sources(data, tmp_path):
    X, y, s, _ = data
    est = RMTLClassifier(**FAST, critic=CRITIC).fit(X, y, session_ids=s)
    expected = est.loss_weights(X, y)
    assert_allclose(est.loss_weights(X, y[y.columns[::-1]]), expected)
    with pytest.raises(ValueError, match="matched to the tasks by name"):
        est.loss_weights(X, y.set_axis(["a", "b"], axis=1))
    path = tmp_path / "rows.parquet"
    pd.concat([X, y], axis=1).to_parquet(path)
    source = ParquetSource(path, target=list(y.columns))
    with pytest.raises(TypeError, match="sources are not accepted there"):
        est.loss_weights(source, y)


def test_task_weights_labelled_by_task_are_refused(data):
    X, y, _, _ = data
    weights = pd.Series([0.2, 0.8], index=["purchase", "click"])
    with pytest.raises(ValueError, match="task_weights is labelled"):
        MTLClassifier(**FAST, task_weights=weights).fit(X, y)
    MTLClassifier(**FAST, task_weights=pd.Series([0.8, 0.2])).fit(X, y)


# --------------------------------------------- selection on held-out rows
def _late_purchases_dropped(data):
    """y whose held-out (latest) rows have no purchase."""
    X, y, s, t = data
    y = y.copy()
    y.loc[t >= np.quantile(t, 0.7), "purchase"] = 0
    return X, y, s, t


@pytest.mark.parametrize(
    "rmtl, param, metric",
    [
        (False, "validation_metric", "auc"),  # pretraining
        (True, "refit_validation_metric", "gauc"),  # refit (and actor update)
        (True, "validation_metric", "auc"),  # RMTL's pretraining
    ],
)
def test_selection_undefined_on_held_out_rows_is_refused_before_training(
    data, rmtl, param, metric
):
    X, y, s, t = _late_purchases_dropped(data)
    params = {**FAST, "early_stopping": True, "validation_fraction": 0.2}
    params[param] = f"{metric}:purchase"
    est = (
        RMTLClassifier(**params, critic=CRITIC, retrain_on_all=True)
        if rmtl
        else MTLClassifier(**params)
    )
    with pytest.raises(ValueError, match=rf"'{metric}:purchase' cannot select") as e:
        est.fit(X, y, session_ids=s, timestamps=t)
    assert f"'{metric}:click'" in str(e.value)  # a task where it is defined
    assert not hasattr(est, "net_")  # refused before anything was fitted
    est.set_params(**{param: f"{metric}:click"}).fit(X, y, session_ids=s, timestamps=t)


# ------------------------------------------------------ sample_weight scale
@pytest.mark.parametrize("scale", [1e-50, 3e38, 1e300])
def test_sample_weight_scale_has_no_effect(data, weights, weighted_fit, scale):
    X, y, _, _ = data
    est = MTLClassifier(**FAST).fit(X, y, sample_weight=weights * scale)
    assert_allclose(est.predict_proba(X), weighted_fit.predict_proba(X), atol=1e-6)


def test_equal_sample_weights_are_the_unweighted_fit(data):
    X, y, _, _ = data
    plain = MTLClassifier(**FAST).fit(X, y).predict_proba(X)
    equal = MTLClassifier(**FAST).fit(X, y, sample_weight=np.full(len(X), 7.0))
    assert_allclose(equal.predict_proba(X), plain, atol=1e-6)


# ------------------------------------------------------ parameters at start
@pytest.mark.parametrize("device", ["mps", "meta", "xpu", "cuda:99"])
def test_unsupported_device_is_refused_at_fit_start(data, device):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="this machine has \\['cpu'"):
        MTLClassifier(**FAST, device=device).fit(X, y)


def test_unsupported_device_is_refused_at_load(tmp_path, weighted_fit):
    from sklearn_rmtl.persistence import load, save

    path = tmp_path / "model.skops"
    save(weighted_fit, path)
    with pytest.raises(ValueError, match="'meta' device"):
        load(path, device="meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_distributed_cuda_without_gpu_reports_no_gpu(data, monkeypatch):
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29531",
    }.items():
        monkeypatch.setenv(key, value)
    X, y, _, _ = data
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        MTLClassifier(**FAST, device="cuda", distributed=True).fit(X, y)


@pytest.mark.parametrize(
    "balancing, params",
    [
        ("dwa", {"temperature": np.inf}),
        ("gradnorm", {"alpha": float("inf")}),
        ("gradnorm", {"weight_lr": np.inf}),
        ("uncertainty", {"weight_lr": float("nan")}),
    ],
)
def test_infinite_balancer_parameters_are_refused_at_fit_start(data, balancing, params):
    X, y, _, _ = data
    est = MTLClassifier(**FAST, task_balancing=balancing, task_balancing_params=params)
    with pytest.raises(ValueError, match=f"{next(iter(params))}.*finite number"):
        est.fit(X, y)
