"""sklearn_rmtl.mlflow.log_fit: parameters, every phase's curves, task metrics."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from conftest import make_session_data

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.metrics import per_task_log_loss, per_task_roc_auc, session_log_loss
from sklearn_rmtl.mlflow import log_fit

SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}


@pytest.fixture(scope="module")
def fitted():
    X, Y, sessions, _ = make_session_data(n_sessions=40, seed=0)
    est = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
        max_epochs=3,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est.fit(X, Y, session_ids=sessions)
    return est, X, Y, sessions


def test_log_fit_logs_params_phase_curves_and_task_metrics(fitted, mlflow_file_store):
    mlflow = mlflow_file_store
    est, X, Y, sessions = fitted
    with mlflow.start_run() as run:
        logged = log_fit(est, X, Y, session_ids=sessions, dataset="valid")
    client = mlflow.tracking.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["critic__gamma"] == str(est.critic.gamma)
    assert data.params["backbone"] == "sharedbottom"
    assert "critic" not in data.params  # logged by its own parameters
    for phase in ("pretrain", "critic", "refit"):
        assert est.history_[phase], phase
    curves = {
        "pretrain/valid_loss": [r["valid_loss"] for r in est.history_["pretrain"]],
        "critic/td_loss": [r["td_loss"] for r in est.history_["critic"]],
        "refit/valid_loss_per_task/purchase": [
            r["valid_loss_per_task"][1] for r in est.history_["refit"]
        ],
    }
    for name, values in curves.items():
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(len(values))), name
        np.testing.assert_allclose([m.value for m in history], values, rtol=1e-6)
    proba = est.predict_proba(X)
    expected = {
        "auc": per_task_roc_auc(Y, proba),
        "logloss": per_task_log_loss(Y, proba),
        "s_logloss": session_log_loss(Y, proba, session_ids=sessions),
    }
    for metric, values in expected.items():
        for k, task in enumerate(["click", "purchase"]):
            name = f"valid/{task}/{metric}"
            assert logged[name] == pytest.approx(values[k])
            assert data.metrics[name] == pytest.approx(values[k])
    assert not any(k.endswith("/restored_start") for k in data.metrics)  # a flag


def test_log_fit_without_data_logs_no_final_metrics(fitted, mlflow_file_store):
    est = fitted[0]
    with mlflow_file_store.start_run():
        assert log_fit(est) == {}
    with pytest.raises(ValueError, match="give both"):
        log_fit(est, fitted[1])


def test_log_fit_refuses_unfitted_estimators_and_names_the_extra(monkeypatch):
    pytest.importorskip("mlflow")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        log_fit(MTLClassifier())
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"sklearn-rmtl\[mlflow\]"):
        log_fit(MTLClassifier())


def test_autolog_logs_every_fit_in_its_own_run(mlflow_file_store):
    import sklearn_rmtl.mlflow as rmtl_mlflow

    mlflow = mlflow_file_store
    X, Y, _, _ = make_session_data(n_sessions=30, seed=1)
    params = {"backbone": "sharedbottom", "backbone_params": SMALL, "max_epochs": 2}
    fit = MTLClassifier.fit
    rmtl_mlflow.autolog()
    try:
        with mlflow.start_run() as parent:
            MTLClassifier(**params, lr=0.01).fit(X, Y)
            MTLClassifier(**params, lr=0.02).fit(X, Y)
    finally:
        rmtl_mlflow.autolog(disable=True)
    assert MTLClassifier.fit is fit  # restored
    client = mlflow.tracking.MlflowClient()
    runs = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(r.data.params["lr"] for r in runs) == ["0.01", "0.02"]
    assert all("pretrain/train_loss" in r.data.metrics for r in runs)
    MTLClassifier(**params).fit(X, Y)  # disabled: no new run
    assert len(client.search_runs([parent.info.experiment_id])) == 3
