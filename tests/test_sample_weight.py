"""``sample_weight`` of fit: normalisation, zero weights, shapes, errors, routing."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._loss import WeightedMultiTaskBCE
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.metrics import make_task_scorer
from sklearn_rmtl.persistence import load, save

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
# One batch, no dropout: the setting where a zero weight can equal dropping
# the row exactly (with several batches the shuffled batches differ).
EXACT = {
    "backbone": "sharedbottom",
    "backbone_params": {**TINY, "dropout": 0.0},
    "max_epochs": 2,
    "batch_size": 4096,
    "random_state": 0,
}
CRITIC = {"max_epochs": 2, "hidden_dims": (8,)}
RMTL_FAST = {"critic": SessionCritic(**CRITIC)}
#: RMTL_FAST whose critics also weigh their TD loss by the sample weights.
RMTL_WEIGHTED = {"critic": SessionCritic(**CRITIC, use_sample_weight=True)}


@pytest.fixture(scope="module")
def data():
    d = make_sessions(n_sessions=40, random_state=0)
    return d.X, d.y, d.session_ids, d.timestamps


def _zero_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.5, 2.0, n)
    drop = rng.random(n) < 0.2
    weight[drop] = 0.0
    return weight, drop


# ----------------------------------------------------------------- the loss
def test_loss_mask_zero_equals_dropping_rows_and_ones_equal_none():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 2, generator=gen)
    y = (torch.rand(10, 2, generator=gen) > 0.5).float()
    loss = WeightedMultiTaskBCE([0.5, 0.5])
    mask = torch.ones(10, 2)
    assert_allclose(
        loss.task_losses(logits, y, mask=mask), loss.task_losses(logits, y), rtol=1e-6
    )
    mask[[1, 4], :] = 0.0
    kept = torch.tensor([i not in (1, 4) for i in range(10)])
    assert_allclose(
        loss.task_losses(logits, y, mask=mask),
        loss.task_losses(logits[kept], y[kept]),
        rtol=1e-6,
    )
    # A weight of 2 counts as two copies of the row.
    mask = torch.ones(10, 2)
    mask[3] = 2.0
    twice = torch.cat([logits, logits[3:4]]), torch.cat([y, y[3:4]])
    assert_allclose(
        loss.task_losses(logits, y, mask=mask), loss.task_losses(*twice), rtol=1e-6
    )


def test_label_mean_weights_are_weighted_by_the_mask():
    from sklearn_rmtl._weighting import label_mean_weights

    weights = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    y01 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [3.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    means = label_mean_weights(weights, y01, mask).numpy()
    # Task 0: positives 1 (x1) and 3 (x3); the only negative weighs 1.
    # Task 1: negatives: only row 3 (row 0 is masked); positives 4 and 6.
    assert_allclose(means, [[5.0, (1 + 9) / 4], [8.0, 5.0]])
    assert_allclose(
        label_mean_weights(weights, y01, torch.ones(4, 2)),
        label_mean_weights(weights, y01),
    )


# --------------------------------------------------------------- estimators
@pytest.mark.parametrize("early_stopping", [False, True])
def test_zero_weight_equals_dropping_the_row(data, early_stopping):
    X, Y, _, t = data
    weight, drop = _zero_rows(len(X))
    weight[~drop] = 1.0
    params = {**EXACT, "early_stopping": early_stopping, "validation_fraction": 0.2}
    weighted = MTLClassifier(**params).fit(X, Y, timestamps=t, sample_weight=weight)
    dropped = MTLClassifier(**params).fit(X[~drop], Y[~drop], timestamps=t[~drop])
    assert_allclose(weighted.predict_proba(X), dropped.predict_proba(X), atol=1e-6)
    # The encoder did not see the zero-weight rows either.
    assert_array_equal(weighted.encoder_.mean_, dropped.encoder_.mean_)


def test_zero_weight_equals_dropping_the_row_in_the_rmtl_refit(data):
    # weighting="constant" trains no critic: pretraining and refit only.
    X, Y, _, _ = data
    weight, drop = _zero_rows(len(X), seed=1)
    weight[~drop] = 1.0
    params = {**EXACT, "weighting": "constant", "early_stopping": False}
    weighted = RMTLClassifier(**params).fit(X, Y, sample_weight=weight)
    dropped = RMTLClassifier(**params).fit(X[~drop], Y[~drop])
    assert_allclose(weighted.predict_proba(X), dropped.predict_proba(X), atol=1e-6)


def test_weights_of_ones_are_the_unweighted_fit(data):
    X, Y, _, _ = data
    params = {**EXACT, "batch_size": 64, "max_epochs": 1}
    plain = MTLClassifier(**params).fit(X, Y)
    ones = MTLClassifier(**params).fit(X, Y, sample_weight=np.ones(len(X)))
    assert_array_equal(plain.predict_proba(X), ones.predict_proba(X))


def test_row_weights_broadcast_over_tasks_and_change_the_fit(data):
    X, Y, _, _ = data
    weight, _ = _zero_rows(len(X), seed=2)
    params = {**EXACT, "batch_size": 64, "max_epochs": 1}
    per_row = MTLClassifier(**params).fit(X, Y, sample_weight=weight)
    per_task = MTLClassifier(**params).fit(
        X, Y, sample_weight=np.column_stack([weight, weight])
    )
    assert_array_equal(per_row.predict_proba(X), per_task.predict_proba(X))
    plain = MTLClassifier(**params).fit(X, Y)
    assert np.abs(per_row.predict_proba(X) - plain.predict_proba(X)).max() > 1e-4


@pytest.mark.parametrize(
    ("make_weight", "match"),
    [
        (lambda n: -np.ones(n), "negative"),
        (lambda n: np.r_[np.nan, np.ones(n - 1)], "NaN or infinite"),
        (lambda n: np.r_[np.inf, np.ones(n - 1)], "NaN or infinite"),
        (lambda n: np.ones(n + 1), r"shape \(n_samples,\)"),
        (lambda n: np.ones((n, 3)), r"\(n_samples, n_tasks\)"),
        (lambda n: np.zeros(n), "zero for every row"),
        (lambda n: np.c_[np.ones(n), np.zeros(n)], "Task 'purchase' has no"),
        (lambda n: np.array(["a"] * n), "must hold numbers"),
    ],
)
def test_bad_sample_weight_raises_before_training(data, make_weight, match):
    X, Y, _, _ = data
    with pytest.raises(ValueError, match=match):
        MTLClassifier(**EXACT).fit(X, Y, sample_weight=make_weight(len(X)))


def test_critic_use_sample_weight_weighs_the_td_loss(data):
    X, Y, s, t = data
    weight, _ = _zero_rows(len(X), seed=3)
    params = {**EXACT, **RMTL_FAST, "early_stopping": False}
    paper = RMTLClassifier(**params).fit(
        X, Y, session_ids=s, timestamps=t, sample_weight=weight
    )
    weighted = RMTLClassifier(**{**params, **RMTL_WEIGHTED}).fit(
        X, Y, session_ids=s, timestamps=t, sample_weight=weight
    )
    td = [[row["td_loss"] for row in m.history_["critic"]] for m in (paper, weighted)]
    assert td[0] != td[1]
    # The pretrained actors are the same: only the critics' loss changed.
    assert_array_equal(
        [r["train_loss"] for r in paper.history_["pretrain"]],
        [r["train_loss"] for r in weighted.history_["pretrain"]],
    )


def test_save_load_round_trip_of_a_weighted_fit(data, tmp_path):
    X, Y, s, t = data
    weight, _ = _zero_rows(len(X), seed=4)
    est = RMTLClassifier(**EXACT, **RMTL_WEIGHTED).fit(
        X, Y, session_ids=s, timestamps=t, sample_weight=weight
    )
    save(est, tmp_path / "m.rmtl")
    loaded = load(tmp_path / "m.rmtl")
    assert loaded.get_params()["critic__use_sample_weight"] is True
    assert loaded.critic_.use_sample_weight is True
    assert_allclose(loaded.predict_proba(X), est.predict_proba(X), atol=1e-6)


# ------------------------------------------------------------------ routing
class RecordingMTL(MTLClassifier):
    """Records the sample weights each fit received (per process)."""

    received: list = []

    def fit(self, X, y, session_ids=None, timestamps=None, sample_weight=None):
        RecordingMTL.received.append(None if sample_weight is None else sample_weight)
        return super().fit(
            X,
            y,
            session_ids=session_ids,
            timestamps=timestamps,
            sample_weight=sample_weight,
        )


def _search(est, **extra):
    return GridSearchCV(
        est,
        {"lr": [1e-2]},
        cv=KFold(2),
        scoring=make_task_scorer("log_loss"),
        error_score="raise",
        refit=False,
        **extra,
    )


def test_grid_search_routes_each_folds_weights(data):
    X, Y, s, _ = data
    weight = np.arange(1.0, len(X) + 1.0)
    RecordingMTL.received = []
    params = {**EXACT, "max_epochs": 3, "early_stopping": False}
    with sklearn.config_context(enable_metadata_routing=True):
        est = RecordingMTL(**params).set_fit_request(sample_weight=True)
        weighted = _search(est).fit(X, Y, session_ids=s, sample_weight=weight)
        folds = [train for train, _ in KFold(2).split(X)]
        assert len(RecordingMTL.received) == 2
        for got, train in zip(RecordingMTL.received, folds, strict=True):
            assert_array_equal(got, weight[train])
        plain = _search(RecordingMTL(**params)).fit(X, Y, session_ids=s)
    assert (
        weighted.cv_results_["mean_test_score"] != plain.cv_results_["mean_test_score"]
    )


def test_grid_search_without_a_request_refuses_weights(data):
    X, Y, _, _ = data
    with sklearn.config_context(enable_metadata_routing=True):
        search = _search(RMTLClassifier(**EXACT, **RMTL_FAST))
        with pytest.raises(UnsetMetadataPassedError, match="sample_weight"):
            search.fit(X, Y, sample_weight=np.ones(len(X)))


def test_rmtl_grid_search_with_weights(data):
    X, Y, s, t = data
    weight, _ = _zero_rows(len(X), seed=5)
    with sklearn.config_context(enable_metadata_routing=True):
        est = RMTLClassifier(**EXACT, **RMTL_FAST).set_fit_request(sample_weight=True)
        search = _search(est).fit(
            X, Y, session_ids=s, timestamps=t, sample_weight=weight
        )
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
