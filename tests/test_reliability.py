"""Bad input fails clearly and early; edge cases give correct results.

Every bad input below must raise before any training starts, with an
exception type and a message that says what is wrong.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import SMALL, make_mtl_data, make_session_data
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._validation import check_multitask_target
from sklearn_rmtl.metrics import per_task_roc_auc

FAST = {
    "backbone_params": SMALL,
    "critic": SessionCritic(hidden_dims=(8,), max_epochs=2),
    "max_epochs": 2,
    "batch_size": 256,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def data():
    return make_mtl_data(n_samples=300)


@pytest.fixture(scope="module")
def fitted(data):
    X, Y = data
    return RMTLClassifier(**FAST).fit(X, Y, session_ids=np.arange(300) // 5)


def _bad_inputs(X, Y):
    n = len(X)
    s = np.arange(n) // 5
    inf_X = X.copy()
    inf_X.loc[3, "price"] = -np.inf
    return {
        "three labels": (
            (X, Y.assign(task1=np.arange(n) % 3)),
            {},
            ValueError,
            "Only binary classification is supported",
        ),
        "task without labels": (
            (X, Y.astype(float).assign(task1=np.nan)),
            {},
            ValueError,
            "has no observed label",
        ),
        "continuous label": (
            (X, Y.assign(task1=0.5)),
            {},
            ValueError,
            "Unknown label type",
        ),
        "1-D y": ((X, Y["task0"].to_numpy()), {}, ValueError, "reshape"),
        "y rows": ((X, Y.iloc[:-1]), {}, ValueError, "inconsistent numbers of samples"),
        "session_ids length": (
            (X, Y),
            {"session_ids": s[:-1]},
            ValueError,
            "session_ids must be 1-D with one entry",
        ),
        "timestamps length": (
            (X, Y),
            {"timestamps": np.arange(n + 1)},
            ValueError,
            "timestamps must be 1-D with one entry",
        ),
        "NaN timestamp": (
            (X, Y),
            {"timestamps": np.where(np.arange(n) == 7, np.nan, 1.0)},
            ValueError,
            "timestamps contains missing values",
        ),
        "NaT timestamp": (
            (X, Y),
            {"timestamps": pd.to_datetime([None] + ["2024"] * (n - 1))},
            ValueError,
            "timestamps contains missing values",
        ),
        "missing session id": (
            (X, Y),
            {"session_ids": np.where(s == 3, None, s)},
            ValueError,
            "session_ids contains missing values",
        ),
        "infinite feature": (
            (inf_X, Y),
            {},
            ValueError,
            "infinity in numerical columns",
        ),
        "empty DataFrame": ((X.iloc[:0], Y.iloc[:0]), {}, ValueError, "0"),
        "sparse X": ((sp.csr_matrix(np.ones((n, 2))), Y), {}, TypeError, "Sparse data"),
        "string as number": (
            (X.assign(age="old"), Y),
            {"categorical": None},
            ValueError,
            "could not be converted to float",
        ),
    }


CASES = list(_bad_inputs(*make_mtl_data(n_samples=300)))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cls", [MTLClassifier, RMTLClassifier])
def test_bad_fit_inputs_raise_before_training(cls, case, data, monkeypatch):
    (X, Y), kwargs, exc, match = _bad_inputs(*data)[case]
    params = {
        k: v for k, v in FAST.items() if cls is RMTLClassifier or "critic" not in k
    }
    if kwargs.pop("categorical", "from_dtype") is None:
        params["categorical_features"] = None
    est = cls(**params)
    # Training must not start: fail loudly if it does.
    monkeypatch.setattr(type(est), "_train_net", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(exc, match=match):
        est.fit(X, Y, **kwargs)
    assert not hasattr(est, "net_")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"backbone": "resnet"}, "'backbone' parameter"),
        ({"critic": SessionCritic(gamma=1.5)}, "'gamma' parameter of Session"),
        ({"critic": SessionCritic(gamma=-0.1)}, "'gamma' parameter of Session"),
        ({"lr": -1e-3}, "'lr' parameter of RMTL"),
        ({"critic": SessionCritic(lr=-1e-3)}, "'lr' parameter of SessionCritic"),
        ({"batch_size": 0}, "'batch_size' parameter"),
        ({"weighting": "cubic"}, "'weighting' parameter"),
        (
            {"critic": SessionCritic(behavior_policy="greedy")},
            "'behavior_policy' parameter",
        ),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
    ],
)
def test_invalid_parameters_are_declared_errors(params, match, data):
    X, Y = data
    with pytest.raises(InvalidParameterError, match=match):
        RMTLClassifier(**params).fit(X, Y)


def test_predict_with_wrong_columns(fitted, data):
    X, _ = data
    with pytest.raises(ValueError, match="feature names should match"):
        fitted.predict_proba(X[X.columns[::-1]])
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        fitted.predict_proba(X.assign(extra=1.0))
    with pytest.raises(
        ValueError, match="Feature names seen at fit time, yet now missing"
    ):
        fitted.predict_proba(X.drop(columns="price"))


def test_predict_arrays_with_wrong_number_of_features():
    X = np.random.default_rng(0).normal(size=(100, 4))
    Y = (X[:, :2] > 0).astype(int)
    est = MTLClassifier(**{k: v for k, v in FAST.items() if "critic" not in k}).fit(
        X, Y
    )
    with pytest.raises(
        ValueError, match="X has 3 features, but MTLClassifier is expecting 4"
    ):
        est.predict_proba(X[:, :3])


def test_changed_number_of_tasks(fitted, data):
    X, Y = data
    with pytest.raises(ValueError, match="3 task columns"):
        fitted.loss_weights(X, Y.assign(extra=0))
    with pytest.raises(ValueError, match="critic was trained for 2 tasks"):
        RMTLClassifier(**{**FAST, "critic": fitted.critic_}).fit(X, Y[["task0"]])


def test_critic_on_other_features(fitted, data):
    X, Y = data
    with pytest.raises(ValueError, match="critic was fitted on other feature columns"):
        RMTLClassifier(**{**FAST, "critic": fitted.critic_}).fit(
            X.rename(columns={"age": "years"}), Y
        )


# ------------------------------------------------------------- edge cases
def test_datetime_and_numeric_timestamps_agree():
    X, Y, s, t = make_session_data(n_sessions=60)
    numeric = (t - t.min()) / np.timedelta64(1, "s")
    a = RMTLClassifier(**FAST).fit(X, Y, session_ids=s, timestamps=t)
    b = RMTLClassifier(**FAST).fit(X, Y, session_ids=s, timestamps=numeric)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_sessions_of_length_one_learn_immediate_rewards(data):
    X, Y = data
    est = RMTLClassifier(**FAST).fit(X, Y, session_ids=np.arange(len(X)))
    w = est.loss_weights(X, Y)
    assert np.isfinite(w).all() and (w >= 1).all()


def test_task_without_positives_warns_fits_and_metrics_say_undefined(data):
    X, Y = data
    Y0 = Y.assign(task1=0)
    with pytest.warns(UserWarning, match="no positive label"):
        est = RMTLClassifier(**FAST).fit(X, Y0, session_ids=np.arange(len(X)) // 5)
    proba = est.predict_proba(X)
    assert np.isfinite(proba).all()
    with pytest.warns(Warning, match="defined|undefined|one class"):
        auc = per_task_roc_auc(Y0.to_numpy(), proba)
    assert np.isnan(auc[1]) and np.isfinite(auc[0])


def test_bool_targets_and_single_task(data):
    X, Y = data
    est = RMTLClassifier(**FAST).fit(
        X, Y[["task0"]].astype(bool), session_ids=np.arange(300) // 5
    )
    assert est.classes_.tolist() == [[False, True]]
    assert est.predict(X).dtype == bool and est.predict(X).shape == (300, 1)
    assert est.loss_weights(X, Y[["task0"]].astype(bool)).shape == (300, 1)


# ------------------------------------------------------ property-based tests
@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1]), min_size=2, max_size=30),
    st.sampled_from([(0, 1), (False, True), (1, 2), ("no", "yes")]),
    st.integers(1, 3),
)
def test_target_validation_never_crashes_on_valid_labels(bits, labels, n_tasks):
    """Any two labels per task map to 0/1 with the larger label positive."""
    col = np.array(
        [labels[b] for b in bits], dtype=object if isinstance(labels[0], str) else None
    )
    y = np.column_stack([col] * n_tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a task may have one label
        try:
            y01, classes, _ = check_multitask_target(y)
        except ValueError as exc:  # only a one-label task of non-0/1 labels
            assert len(set(bits)) == 1 and "single label value" in str(exc)
            return
    assert y01.shape == (len(bits), n_tasks)
    np.testing.assert_array_equal(y01[:, 0], (col == classes[0, 1]).astype(np.float32))
    assert classes.shape == (n_tasks, 2)


def test_critic_divergence_names_the_phase(data):
    from sklearn_rmtl.exceptions import DivergenceError

    X, Y = data
    est = RMTLClassifier(**{**FAST, "critic": SessionCritic(lr=1e20, max_epochs=5)})
    with pytest.raises(DivergenceError, match="critic TD loss became"):
        est.fit(X, Y, session_ids=np.arange(len(X)) // 5)
    assert not hasattr(est, "net_")
