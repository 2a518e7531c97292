"""task_space: a task's labels count only where another task is positive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._task_space import apply_task_space, resolve_task_space
from sklearn_rmtl.balancing import BALANCINGS
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.persistence import load, save

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
FAST = {
    "backbone": "sharedbottom",
    "backbone_params": TINY,
    "max_epochs": 2,
    "batch_size": 64,
    "random_state": 0,
}
SPACE = {"purchase": "click"}
NAMES = np.array(["view", "click", "purchase"])


@pytest.fixture(scope="module")
def data():
    """make_sessions' click/purchase, and the same with purchase NaN off clicks."""
    d = make_sessions(n_sessions=40, random_state=0)
    Y = d.y.astype(float)
    Y.loc[d.y.index[::17], "click"] = np.nan  # a missing condition
    masked = Y.copy()
    masked.loc[masked["click"] != 1, "purchase"] = np.nan
    return d.X, Y, masked, d.session_ids, d.timestamps


def _history(est):
    """The fit's history without the epochs' durations."""
    return {
        phase: [{k: v for k, v in row.items() if k != "dur"} for row in rows]
        for phase, rows in est.history_.items()
    }


# ------------------------------------------------------------ the rule
def test_resolve_by_name_and_position_orders_a_chain_conditions_first():
    assert resolve_task_space(None, NAMES) == ()
    assert resolve_task_space({}, NAMES) == ()
    assert resolve_task_space({"purchase": "click"}, NAMES) == ((2, 1),)
    assert resolve_task_space({2: "click", "click": 0}, NAMES) == ((1, 0), (2, 1))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"buy": "click"}, r"'buy', which is not one of y's tasks \['view', 'click'"),
        ({"purchase": 3}, "the task 3, which is not"),
        ({"purchase": True}, "the task True, which is not"),
        ({"purchase": "purchase"}, "conditions task 'purchase' on itself"),
        ({"purchase": "click", 2: "view"}, "gives task 'purchase' twice"),
        (
            {"view": "purchase", "click": "view", "purchase": "click"},
            "cycle: view -> purchase -> click -> view",
        ),
    ],
)
def test_resolve_errors(space, message):
    with pytest.raises(ValueError, match=message):
        resolve_task_space(space, NAMES)


def test_a_label_outside_the_space_or_with_a_missing_condition_is_missing():
    nan = np.nan
    y = np.array(
        [[1, 1, 1], [1, 0, 0], [0, 1, 0], [1, nan, 1], [0, 0, 0]], dtype=np.float32
    )
    pairs = resolve_task_space({"purchase": "click", "click": "view"}, NAMES)
    expected = [[1, 1, 1], [1, 0, nan], [0, nan, nan], [1, nan, nan], [0, nan, nan]]
    assert_array_equal(apply_task_space(y, pairs), np.array(expected, np.float32))
    assert y[2, 1] == 1  # not modified


# --------------------------------------------------- as missing labels
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"backbone": "aitm", "validation_metric": "auc"},
        {"precision": "bfloat16", "retrain_on_all": True},
    ],
)
def test_the_fit_is_the_fit_with_labels_missing_outside_the_space(data, params):
    X, Y, masked, _, _ = data
    fast = {**FAST, **params}
    est = MTLClassifier(**fast, task_space=SPACE).fit(X, Y)
    ref = MTLClassifier(**fast).fit(X, masked)
    assert_array_equal(est.predict_proba(X), ref.predict_proba(X))
    # The validation loss and metrics read the same held-out labels.
    assert _history(est) == _history(ref)
    assert_array_equal(est.classes_, ref.classes_)
    # Without task_space purchase is learned on every row: another model.
    plain = MTLClassifier(**fast).fit(X, Y)
    assert np.abs(plain.predict_proba(X) - est.predict_proba(X)).max() > 1e-4


@pytest.mark.parametrize("balancing", sorted(BALANCINGS))
def test_sample_weight_and_every_balancer(data, balancing):
    X, Y, masked, _, _ = data
    rng = np.random.default_rng(0)
    weight = rng.uniform(0.0, 3.0, size=(len(X), 2))
    weight[::5] = 0.0
    fast = {**FAST, "task_balancing": balancing}
    est = MTLClassifier(**fast, task_space={1: 0}).fit(X, Y, sample_weight=weight)
    ref = MTLClassifier(**fast).fit(X, masked, sample_weight=weight)
    assert_array_equal(est.predict_proba(X), ref.predict_proba(X))


def test_a_parquet_source_fits_as_the_labels_missing_outside_the_space(data, tmp_path):
    pytest.importorskip("pyarrow")
    from sklearn_rmtl.parquet import ParquetSource

    X, Y, masked, sessions, times = data
    proba = []
    runs = [("given", Y, SPACE), ("masked", masked, None), ("plain", Y, None)]
    for name, labels, space in runs:
        path = tmp_path / f"{name}.parquet"
        frame = X.assign(session=sessions, time=times, **labels)
        frame.to_parquet(path, row_group_size=50)
        # Blocks of 64 rows: each block's mask comes from its own labels.
        source = ParquetSource(
            path,
            target=["click", "purchase"],
            session="session",
            time="time",
            block_rows=64,
        )
        est = MTLClassifier(**FAST, task_space=space).fit(source)
        proba.append(est.predict_proba(X))
    assert_array_equal(proba[0], proba[1])
    assert np.abs(proba[0] - proba[2]).max() > 1e-4


def test_rmtl_critics_and_refit_read_the_space_as_missing_labels(data):
    X, Y, masked, sessions, times = data
    rmtl = {**FAST, "critic": SessionCritic(hidden_dims=(8,), max_epochs=2)}
    fit = {"session_ids": sessions, "timestamps": times}
    est = RMTLClassifier(**rmtl, task_space=SPACE).fit(X, Y, **fit)
    ref = RMTLClassifier(**rmtl).fit(X, masked, **fit)
    assert_array_equal(est.predict_proba(X), ref.predict_proba(X))
    weights = est.loss_weights(X, Y, session_ids=sessions)
    assert_array_equal(weights, ref.loss_weights(X, masked, session_ids=sessions))
    assert np.isnan(weights[(Y["click"] != 1).to_numpy(), 1]).all()
    assert not np.isnan(weights[(Y["click"] == 1).to_numpy(), 1]).any()
    # A given unfitted actor with the same space pretrains on the same rows.
    actor = MTLClassifier(**FAST, task_space=SPACE)
    given = RMTLClassifier(**rmtl, actor=actor, task_space=SPACE).fit(X, Y, **fit)
    assert_array_equal(given.predict_proba(X), est.predict_proba(X))


# ------------------------------------------------------------- errors
@pytest.mark.filterwarnings("ignore:Task 'click' has no positive label")
def test_fit_errors(data):
    X, Y, _, sessions, _ = data
    with pytest.raises(ValueError, match=r"'buy', which is not one of y's tasks"):
        MTLClassifier(**FAST, task_space={"buy": "click"}).fit(X, Y)
    with pytest.raises(ValueError, match="backbone='esmm'"):
        MTLClassifier(**{**FAST, "backbone": "esmm"}, task_space=SPACE).fit(X, Y)
    with pytest.raises(ValueError, match="actor's task_space"):
        RMTLClassifier(**FAST, actor=MTLClassifier(**FAST), task_space=SPACE).fit(
            X, Y, session_ids=sessions
        )
    never = Y.assign(click=0.0)
    with pytest.raises(ValueError, match="only on the rows where 'click' is positive"):
        MTLClassifier(**FAST, task_space=SPACE).fit(X, never)
    with pytest.raises(ValueError, match="'task_space' parameter"):
        MTLClassifier(**FAST, task_space=[("purchase", "click")]).fit(X, Y)


# ----------------------------------------------- signal and persistence
def test_the_conditional_probability_is_learned_on_the_space():
    rng = np.random.default_rng(1)
    n = 3000
    X = pd.DataFrame({"item": rng.choice(list("abcd"), n), "price": rng.normal(size=n)})
    click = rng.random(n) < np.where(X["item"].isin(["a", "b"]), 0.6, 0.2)
    # Conversion given a click depends on the price only.
    buy = click & (rng.random(n) < 1 / (1 + np.exp(-3 * X["price"].to_numpy())))
    Y = pd.DataFrame({"click": click.astype(int), "purchase": buy.astype(int)})
    train, test = np.arange(n) < 2400, np.arange(n) >= 2400
    est = MTLClassifier(**{**FAST, "max_epochs": 8}, task_space=SPACE)
    est.fit(X[train], Y[train])
    clicked = test & click
    proba = est.predict_proba(X[clicked])[:, 1]
    auc = roc_auc_score(Y["purchase"][clicked], proba)
    print(f"AUC on clicked held-out rows: {auc:.3f}")
    assert auc > 0.75, auc


def test_persistence_keeps_the_task_space(data, tmp_path):
    X, Y, _, _, _ = data
    est = MTLClassifier(**FAST, task_space={1: 0}).fit(X, Y)
    save(est, tmp_path / "model.rmtl")
    loaded = load(tmp_path / "model.rmtl")
    assert loaded.task_space == {1: 0}
    assert type(next(iter(loaded.task_space))) is int
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


def test_cli_fit_task_space(tmp_path, data, capsys):
    from sklearn_rmtl.cli import main

    X, Y, _, _, _ = data
    path, model = tmp_path / "log.csv", tmp_path / "model.rmtl"
    X.assign(**Y).to_csv(path, index=False)
    argv = ["fit", "--data", str(path), "--target", "click", "purchase"]
    argv += ["--method", "mtl", "--backbone", "sharedbottom", "--max-epochs", "1"]
    argv += ["--backbone-params", '{"bottom_dims": [8], "tower_dims": [4]}']
    assert main([*argv, "--task-space", "purchase=click", "--model", str(model)]) == 0
    assert load(model).task_space == {"purchase": "click"}
    for bad, message in [("purchase", "TASK=CONDITION"), ("buy=click", "'buy'")]:
        with pytest.raises(SystemExit):
            main([*argv, "--task-space", bad, "--model", str(model)])
        assert message in capsys.readouterr().err
