"""Missing labels per task: NaN / None / pd.NA in y mean "not observed"."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._loss import WeightedMultiTaskBCE
from sklearn_rmtl._mdp import rewards
from sklearn_rmtl._validation import binarize_labels, check_multitask_target
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.metrics import (
    group_roc_auc,
    group_roc_auc_scorer,
    make_task_scorer,
    per_task_log_loss,
    per_task_roc_auc,
    session_log_loss,
)
from sklearn_rmtl.persistence import load, save

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
FAST = {
    "backbone": "sharedbottom",
    "backbone_params": TINY,
    "max_epochs": 2,
    "batch_size": 64,
    "random_state": 0,
}
CRITIC = {"max_epochs": 2, "hidden_dims": (8,)}
RMTL_FAST = {"critic": SessionCritic(**CRITIC)}


@pytest.fixture(scope="module")
def data():
    """make_sessions' click/purchase with purchase observed only after a click."""
    d = make_sessions(n_sessions=40, random_state=0)
    Y = d.y.astype(float)
    Y.loc[Y["click"] == 0, "purchase"] = np.nan
    return d.X, Y, d.session_ids, d.timestamps


def _filled(Y, value):
    """Y with the missing labels filled, and weights that are 0 there."""
    weight = Y.notna().to_numpy().astype(float)
    return Y.fillna(value).astype(int), weight


# ----------------------------------------------------------------- the loss
def test_a_masked_label_has_no_effect_on_the_loss_or_its_gradient():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 2, generator=gen, requires_grad=True)
    y = (torch.rand(8, 2, generator=gen) > 0.5).float()
    mask = torch.ones(8, 2)
    mask[[0, 5], 1] = 0.0
    loss = WeightedMultiTaskBCE([0.5, 0.5])
    values = []
    for fill in (0.0, 1.0, float("nan")):
        y_fill = y.clone()
        y_fill[[0, 5], 1] = fill
        logits.grad = None
        total = loss(logits, y_fill, None, mask)
        total.backward()
        values.append(float(total.detach()))
        assert torch.isfinite(logits.grad).all()
        assert (logits.grad[[0, 5], 1] == 0).all()
    assert values[0] == values[1] == values[2]
    observed = torch.ones(8, dtype=torch.bool)
    observed[[0, 5]] = False
    per_task = loss.task_losses(logits, y, mask=mask).detach()
    assert_allclose(
        float(per_task[1]),
        float(loss.task_losses(logits[observed], y[observed]).detach()[1]),
        rtol=1e-6,
    )


def test_rewards_of_missing_labels_are_zero():
    y01 = np.array([[1.0, 0.0], [0.0, 0.0]])
    observed = np.array([[True, False], [True, True]])
    r = rewards(y01, np.full((2, 2), 0.3), observed)
    assert r[0, 1] == 0.0 and (r[observed] < 0).all()


# ---------------------------------------------------------------- the target
def test_classes_come_from_observed_labels_of_every_missing_kind():
    y = pd.DataFrame(
        {
            "float": [0.0, np.nan, 1.0, 1.0],
            "int64": pd.array([3, pd.NA, 7, 3], dtype="Int64"),
            "boolean": pd.array([True, False, pd.NA, pd.NA], dtype="boolean"),
            "text": ["no", None, "yes", np.nan],
        }
    )
    y01, classes, names = check_multitask_target(y)
    assert list(names) == ["float", "int64", "boolean", "text"]
    assert classes.tolist() == [[0.0, 1.0], [3, 7], [False, True], ["no", "yes"]]
    expected = [
        [0, 0, 1, 0],
        [np.nan, np.nan, 0, np.nan],
        [1, 1, np.nan, 1],
        [1, 0, np.nan, np.nan],
    ]
    assert_array_equal(y01, np.array(expected, dtype=np.float32))
    assert_array_equal(
        binarize_labels(y.iloc[:, 1:], classes[1:]), np.array(expected)[:, 1:]
    )


def test_a_task_without_observed_labels_is_an_error(data):
    X, Y, _, _ = data
    with pytest.raises(ValueError, match="Task 'purchase' has no observed label"):
        MTLClassifier(**FAST).fit(X, Y.assign(purchase=np.nan))


# --------------------------------------------------------------- estimators
def _assert_missing_equals_zero_weight(params, X, Y, s):
    """Missing labels fit exactly like any filled value with weight 0."""
    nan = MTLClassifier(**params).fit(X, Y, session_ids=s).predict_proba(X)
    for value in (0, 1):
        y_fill, weight = _filled(Y, value)
        filled = MTLClassifier(**params).fit(
            X, y_fill, session_ids=s, sample_weight=weight
        )
        assert_allclose(filled.predict_proba(X), nan, atol=1e-6)
    return nan


@pytest.mark.parametrize("validation_metric", ["loss", "auc", "gauc"])
def test_missing_label_equals_any_label_with_zero_weight(data, validation_metric):
    # Several batches and early stopping on held-out rows with missing labels.
    X, Y, s, _ = data
    params = {**FAST, "validation_metric": validation_metric}
    _assert_missing_equals_zero_weight(params, X, Y, s)


@pytest.mark.parametrize("balancing", ["uncertainty", "gradnorm", "dwa", "pcgrad"])
def test_missing_labels_are_masked_under_task_balancing(data, balancing):
    # The balancers' per-task losses carry the mask: filling the missing
    # labels with either value changes nothing.
    X, Y, s, _ = data
    params = {**FAST, "task_balancing": balancing}
    nan = _assert_missing_equals_zero_weight(params, X, Y, s)
    assert not np.allclose(
        MTLClassifier(**params).fit(X, Y.fillna(1), session_ids=s).predict_proba(X),
        nan,
        atol=1e-6,
    )


def test_rmtl_missing_label_equals_any_label_with_zero_weight(data):
    # label_q reads the labels in the refit weights; the critics' rewards
    # and TD loss see the same mask with the critic's use_sample_weight=True.
    X, Y, s, t = data
    balanced = SessionCritic(**CRITIC, balance_labels=True)
    params = {**FAST, "critic": balanced, "weighting": "label_q"}
    nan = RMTLClassifier(**params).fit(X, Y, session_ids=s, timestamps=t)
    weighted = SessionCritic(**CRITIC, balance_labels=True, use_sample_weight=True)
    for value in (0, 1):
        y_fill, weight = _filled(Y, value)
        filled = RMTLClassifier(**{**params, "critic": weighted}).fit(
            X, y_fill, session_ids=s, timestamps=t, sample_weight=weight
        )
        assert_allclose(filled.predict_proba(X), nan.predict_proba(X), atol=1e-6)
        assert_allclose(
            [r["td_loss"] for r in filled.history_["critic"]],
            [r["td_loss"] for r in nan.history_["critic"]],
            rtol=1e-5,
        )


def test_actor_update_with_missing_labels(data):
    # D-PLE's behaviour-cloning term masks the missing labels too.
    X, Y, s, t = data
    params = {**FAST, **RMTL_FAST, "weighting": "constant", "refit_max_epochs": 0}
    nan = RMTLClassifier(**params, actor_update=True).fit(
        X, Y, session_ids=s, timestamps=t
    )
    y_fill, weight = _filled(Y, 1)
    weighted = SessionCritic(**CRITIC, use_sample_weight=True)
    filled = RMTLClassifier(**{**params, "critic": weighted}, actor_update=True).fit(
        X, y_fill, session_ids=s, timestamps=t, sample_weight=weight
    )
    assert np.isfinite(nan.predict_proba(X)).all()
    assert_allclose(filled.predict_proba(X), nan.predict_proba(X), atol=1e-6)


def test_label_mean_weights_come_from_observed_labels(data):
    X, Y, s, t = data
    est = RMTLClassifier(**FAST, **RMTL_FAST, weighting="label_mean").fit(
        X, Y, session_ids=s, timestamps=t
    )
    assert np.isfinite(est.label_weights_).all()
    weights = est.loss_weights(X, Y)
    missing = Y.isna().to_numpy()
    assert np.isnan(weights[missing]).all() and np.isfinite(weights[~missing]).all()


def test_loss_weights_are_nan_where_the_label_is_missing(data):
    X, Y, s, t = data
    est = RMTLClassifier(**FAST, **RMTL_FAST).fit(X, Y, session_ids=s, timestamps=t)
    weights = est.loss_weights(X, Y)
    filled = est.loss_weights(X, Y.fillna(0))
    missing = Y.isna().to_numpy()
    assert np.isnan(weights[missing]).all()
    assert_array_equal(weights[~missing], filled[~missing])


def test_a_given_actor_is_fitted_on_the_same_missing_labels(data):
    X, Y, s, t = data
    est = RMTLClassifier(
        actor=MTLClassifier(**FAST), refit_max_epochs=0, weighting="constant"
    ).fit(X, Y, session_ids=s, timestamps=t)
    alone = MTLClassifier(**FAST).fit(X, Y, timestamps=t)
    assert_allclose(est.predict_proba(X), alone.predict_proba(X), atol=1e-6)


def test_loss_weights_display_leaves_missing_labels_out(data):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from sklearn_rmtl.plotting import LossWeightsDisplay

    X, Y, s, t = data
    est = RMTLClassifier(**FAST, **RMTL_FAST).fit(X, Y, session_ids=s, timestamps=t)
    display = LossWeightsDisplay.from_estimator(est, X, Y, session_ids=s, timestamps=t)
    weights = est.loss_weights(X, Y)
    first = display.positions == 0
    purchase = weights[first, 1]
    assert_allclose(display.mean_by_position_.loc[1, "purchase"], np.nanmean(purchase))
    assert np.isfinite(display.mean_by_position_["click"]).all()


def test_nullable_labels_fit_predict_and_round_trip(data, tmp_path):
    X, Y, s, t = data
    y_nullable = Y.astype("Int64").replace({0: 10, 1: 20}).astype("Int64")
    est = RMTLClassifier(**FAST, **RMTL_FAST).fit(
        X, y_nullable, session_ids=s, timestamps=t
    )
    assert est.classes_.tolist() == [[10, 20], [10, 20]]
    assert set(np.unique(est.predict(X))) <= {10, 20}
    save(est, tmp_path / "m.rmtl")
    loaded = load(tmp_path / "m.rmtl")
    assert_array_equal(loaded.classes_, est.classes_)
    assert_allclose(loaded.predict_proba(X), est.predict_proba(X), atol=1e-6)


# ------------------------------------------------------------------ metrics
def _reference(y, p, sessions, metric):
    """The metric per task on the observed rows, by plain loops."""
    out = []
    for k in range(y.shape[1]):
        rows = ~np.isnan(y[:, k])
        yk, pk, sk = y[rows, k], p[rows, k], sessions[rows]
        if metric == "auc":
            out.append(roc_auc_score(yk, pk))
        elif metric == "logloss":
            out.append(log_loss(yk, pk, labels=[0, 1]))
        elif metric == "slogloss":
            out.append(
                np.mean(
                    [
                        log_loss(yk[sk == g], pk[sk == g], labels=[0, 1])
                        for g in np.unique(sk)
                    ]
                )
            )
        else:
            aucs, sizes = [], []
            for g in np.unique(sk):
                if np.unique(yk[sk == g]).size == 2:
                    aucs.append(roc_auc_score(yk[sk == g], pk[sk == g]))
                    sizes.append((sk == g).sum())
            out.append(np.average(aucs, weights=sizes))
    return np.array(out)


def test_metrics_skip_missing_labels():
    rng = np.random.default_rng(0)
    n = 300
    y = (rng.random((n, 2)) < 0.4).astype(float)
    y[rng.random(n) < 0.3, 1] = np.nan
    p = rng.uniform(0.01, 0.99, (n, 2))
    sessions = rng.integers(0, 20, n)
    assert_allclose(per_task_roc_auc(y, p), _reference(y, p, sessions, "auc"))
    assert_allclose(per_task_log_loss(y, p), _reference(y, p, sessions, "logloss"))
    assert_allclose(
        session_log_loss(y, p, session_ids=sessions),
        _reference(y, p, sessions, "slogloss"),
    )
    assert_allclose(
        group_roc_auc(y, p, session_ids=sessions),
        _reference(y, p, sessions, "gauc"),
    )


def test_a_task_without_observed_labels_has_an_undefined_metric():
    y = np.array([[0, np.nan], [1, np.nan], [1, np.nan]])
    p = np.full((3, 2), 0.5)
    with pytest.warns(UserWarning, match="task 1"):
        auc = per_task_roc_auc(y, p)
    assert auc[0] == 0.5 and np.isnan(auc[1])
    assert np.isnan(per_task_log_loss(y, p)[1])
    assert per_task_log_loss(y, p, average="macro") == per_task_log_loss(y, p)[0]


def test_scorers_skip_missing_labels(data):
    X, Y, s, _ = data
    est = MTLClassifier(**FAST).fit(X, Y)
    proba, y = est.predict_proba(X), Y.to_numpy()
    auc = make_task_scorer("roc_auc", task="purchase")(est, X, Y)
    assert_allclose(auc, _reference(y, proba, s, "auc")[1])
    custom = make_task_scorer(roc_auc_score, greater_is_better=True)(est, X, Y)
    assert_allclose(custom, _reference(y, proba, s, "auc").mean())
    gauc = group_roc_auc_scorer(est, X, Y, session_ids=s)
    assert_allclose(gauc, _reference(y, proba, s, "gauc").mean())


def test_grid_search_with_missing_labels(data):
    X, Y, s, t = data
    search = GridSearchCV(
        RMTLClassifier(**FAST, **RMTL_FAST),
        {"q_lambda": [0.0, 0.7]},
        cv=GroupKFold(2),
        scoring=group_roc_auc_scorer,
        error_score="raise",
    )
    with (
        sklearn.config_context(enable_metadata_routing=True),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error", RuntimeWarning)  # no NaN arithmetic
        search.fit(X, Y, groups=s, session_ids=s, timestamps=t)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
