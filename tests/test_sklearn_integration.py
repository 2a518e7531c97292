"""The estimators inside scikit-learn's model selection, routing and joblib."""

from __future__ import annotations

import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import sklearn
from conftest import SMALL, make_session_data
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    cross_val_predict,
    cross_validate,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.metrics import (
    group_roc_auc_scorer,
    make_task_scorer,
    session_log_loss_scorer,
)
from sklearn_rmtl.model_selection import SessionTimeSeriesSplit

FAST = {
    "backbone_params": SMALL,
    "critic": SessionCritic(hidden_dims=(8,), max_epochs=2),
    "max_epochs": 2,
    "batch_size": 256,
    "random_state": 0,
}

FAST_MTL = {k: v for k, v in FAST.items() if k != "critic"}


@pytest.fixture(scope="module")
def data():
    return make_session_data(n_sessions=120)


def test_grid_search_with_routing_group_kfold_and_session_scorer(data):
    X, Y, s, t = data
    search = GridSearchCV(
        Pipeline([("rmtl", RMTLClassifier(**FAST))]),
        {"rmtl__backbone": ["mmoe", "sharedbottom"], "rmtl__q_lambda": [0.0, 0.7]},
        cv=GroupKFold(n_splits=2),
        scoring={"s_logloss": session_log_loss_scorer, "gauc": group_roc_auc_scorer},
        refit="s_logloss",
        error_score="raise",
    )
    with sklearn.config_context(enable_metadata_routing=True):
        # No set_fit_request: the estimators request session_ids/timestamps.
        search.fit(X, Y, groups=s, session_ids=s, timestamps=t)
    results = search.cv_results_
    assert len(results["params"]) == 4
    assert np.isfinite(results["mean_test_s_logloss"]).all()
    assert (results["mean_test_s_logloss"] < 0).all()  # negated loss
    assert np.isfinite(results["mean_test_gauc"]).all()
    assert search.best_estimator_.predict_proba(X).shape == (len(X), 2)


def test_grid_search_over_the_critic_settings(data):
    """The critic phase's settings are searched as ``critic__<name>``."""
    X, Y, s, t = data
    est = RMTLClassifier(backbone="sharedbottom", **FAST)
    params = est.get_params()
    assert params["critic__gamma"] == 0.95 and params["critic__max_epochs"] == 2
    assert "gamma" not in est.get_params(deep=False)
    search = GridSearchCV(
        est,
        {"critic__gamma": [0.5, 0.9]},
        cv=GroupKFold(n_splits=2),
        scoring=session_log_loss_scorer,
        error_score="raise",
    )
    with sklearn.config_context(enable_metadata_routing=True):
        search.fit(X, Y, groups=s, session_ids=s, timestamps=t)
    assert [p["critic__gamma"] for p in search.cv_results_["params"]] == [0.5, 0.9]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    gamma = search.best_params_["critic__gamma"]
    # The searched setting trained the kept critics; the given one is as it was.
    assert best.critic.gamma == best.critic_.gamma == gamma
    assert best.critic_.__sklearn_is_fitted__()
    assert FAST["critic"].gamma == 0.95
    assert not FAST["critic"].__sklearn_is_fitted__()


def test_a_frozen_actor_is_pretrained_once_for_a_whole_search(data, monkeypatch):
    """actor=FrozenEstimator(fitted) survives clone: no candidate pretrains."""
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    X, Y, s, t = data
    actor = MTLClassifier(backbone="sharedbottom", **FAST_MTL).fit(X, Y)
    pretrainings = []
    fit_backbone = MTLClassifier._fit_backbone

    def counted(self, *args, **kwargs):
        pretrainings.append(type(self).__name__)
        return fit_backbone(self, *args, **kwargs)

    monkeypatch.setattr(MTLClassifier, "_fit_backbone", counted)
    frozen = RMTLClassifier(**{**FAST, "actor": FrozenEstimator(actor)})
    assert clone(frozen).actor.estimator is actor
    search = GridSearchCV(frozen, {"q_lambda": [0.0, 0.7]}, cv=2, error_score="raise")
    search.fit(X, Y, session_ids=s, timestamps=t)
    assert pretrainings == []
    assert search.best_estimator_.actor.estimator is actor
    # A plain fitted actor is unfitted by clone: every fit pretrains again.
    plain = GridSearchCV(
        RMTLClassifier(**{**FAST, "actor": actor}), {"q_lambda": [0.0]}, cv=2
    )
    plain.fit(X, Y, session_ids=s, timestamps=t)
    assert len(pretrainings) == 3  # 2 folds and the refit on all rows

    unfitted = RMTLClassifier(**{**FAST, "actor": FrozenEstimator(MTLClassifier())})
    with pytest.raises(ValueError, match="must wrap a fitted MTLClassifier"):
        unfitted.fit(X, Y, session_ids=s, timestamps=t)


def test_grid_search_without_routing_classic_fit_params(data):
    X, Y, s, t = data
    search = GridSearchCV(
        Pipeline(
            [
                (
                    "mtl",
                    MTLClassifier(
                        **{k: v for k, v in FAST.items() if "critic" not in k}
                    ),
                )
            ]
        ),
        {"mtl__backbone": ["esmm", "omoe"]},
        cv=GroupKFold(n_splits=2),
        scoring=make_task_scorer("roc_auc", task="purchase"),
        error_score="raise",
    )
    search.fit(X, Y, groups=s, mtl__session_ids=s, mtl__timestamps=t)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_session_scorer_without_routing_raises(data):
    X, Y, s, _t = data
    est = MTLClassifier(**{k: v for k, v in FAST.items() if "critic" not in k})
    with pytest.raises(ValueError, match="enable_metadata_routing=True"):
        cross_validate(
            est,
            X,
            Y,
            groups=s,
            cv=GroupKFold(2),
            scoring=session_log_loss_scorer,
            error_score="raise",
        )


def test_cross_validate_with_params_and_session_splitter(data):
    X, Y, s, t = data
    with sklearn.config_context(enable_metadata_routing=True):
        out = cross_validate(
            RMTLClassifier(**FAST),
            X,
            Y,
            cv=SessionTimeSeriesSplit(n_splits=2),
            scoring={"gauc": group_roc_auc_scorer},
            params={"session_ids": s, "timestamps": t},
            error_score="raise",
        )
    assert out["test_gauc"].shape == (2,) and np.isfinite(out["test_gauc"]).all()


def test_cross_val_predict_returns_n_by_k(data):
    X, Y, s, _t = data
    est = MTLClassifier(**{k: v for k, v in FAST.items() if "critic" not in k})
    proba = cross_val_predict(
        est, X, Y, groups=s, cv=GroupKFold(3), method="predict_proba"
    )
    assert proba.shape == (len(X), 2)
    assert ((proba > 0) & (proba < 1)).all()


def test_column_transformer_in_front_keeps_categories(data):
    X, Y, s, t = data
    pre = ColumnTransformer(
        [("scale", StandardScaler(), ["price", "position"])], remainder="passthrough"
    ).set_output(transform="pandas")
    pipe = Pipeline([("pre", pre), ("rmtl", RMTLClassifier(**FAST))])
    pipe.fit(X, Y, rmtl__session_ids=s, rmtl__timestamps=t)
    est = pipe.named_steps["rmtl"]
    assert list(est.encoder_.categorical_features_) == ["remainder__item"]
    assert pipe.predict_proba(X).shape == (len(X), 2)


@pytest.fixture(scope="module")
def joblib_files(data, tmp_path_factory):
    """Both estimators (ple) fitted, dumped with joblib and loaded in one new
    process (starting one costs more than both fits): {cls: (est, path)} and
    what that process printed, one "<name>: ok" line per estimator."""
    X, Y, s, t = data
    folder = tmp_path_factory.mktemp("joblib")
    X.to_pickle(folder / "X.pkl")
    files = {}
    for cls in (MTLClassifier, RMTLClassifier):
        params = FAST if cls is RMTLClassifier else FAST_MTL
        est = cls(backbone="ple", **params).fit(X, Y, session_ids=s, timestamps=t)
        path = folder / f"{cls.__name__}.joblib"
        joblib.dump(est, path)
        np.save(folder / f"{cls.__name__}.npy", est.predict_proba(X))
        files[cls] = (est, path)
    code = (
        "import joblib, numpy as np, pandas as pd\n"
        f"X = pd.read_pickle({str(folder / 'X.pkl')!r})\n"
        f"for name in {[cls.__name__ for cls in files]!r}:\n"
        f"    est = joblib.load({str(folder)!r} + f'/{{name}}.joblib')\n"
        f"    expected = np.load({str(folder)!r} + f'/{{name}}.npy')\n"
        "    np.testing.assert_array_equal(est.predict_proba(X), expected)\n"
        "    print(f'{name}: ok', flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    return files, out


@pytest.mark.parametrize("cls", [MTLClassifier, RMTLClassifier])
def test_joblib_round_trip_in_a_new_process(cls, joblib_files):
    files, out = joblib_files
    est, path = files[cls]
    assert f"{cls.__name__}: ok" in out.stdout.splitlines(), out.stderr
    size = path.stat().st_size
    print(f"{cls.__name__} (ple, small) joblib file: {size / 1024:.1f} KiB")
    # Configuration and weights only: no optimizer state or training data.
    n_params = sum(p.numel() for p in est.net_.module_.parameters())
    if cls is RMTLClassifier:
        n_params += sum(p.numel() for p in est.critic_.module_.parameters())
    assert size < 4 * n_params + 200_000
    loaded = joblib.load(path)
    assert loaded.net_.optimizer_ is None
    assert len(loaded.net_.history) == 0 and loaded.net_.train_split is None


def test_unpickling_another_version_warns(data):
    X, Y, _s, _t = data
    est = MTLClassifier(**{k: v for k, v in FAST.items() if "critic" not in k}).fit(
        X, Y
    )
    state = est.__getstate__()
    state["_sklearn_rmtl_version"] = "0.0.1"
    clone_ = MTLClassifier.__new__(MTLClassifier)
    with pytest.warns(UserWarning, match="saved with sklearn_rmtl 0.0.1"):
        clone_.__setstate__(state)


def test_sessions_and_times_as_columns_of_x(data):
    """session_column/time_column: the same fit as session_ids/timestamps, and
    the columns are no features; tools without routing pass them with X."""
    X, Y, s, t = data
    with_columns = X.assign(session=s, time=t)
    by_name = RMTLClassifier(**FAST, session_column="session", time_column="time")
    by_name.fit(with_columns, Y)
    given = RMTLClassifier(**FAST).fit(X, Y, session_ids=s, timestamps=t)
    assert list(by_name.feature_names_in_) == list(X.columns)
    np.testing.assert_array_equal(by_name.predict_proba(X), given.predict_proba(X))
    np.testing.assert_array_equal(
        by_name.predict_proba(with_columns), given.predict_proba(X)
    )
    np.testing.assert_array_equal(
        by_name.loss_weights(with_columns, Y), given.loss_weights(X, Y)
    )
    # Without routing, cross_val_predict's folds get their sessions with X.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cross_val_predict(by_name, with_columns, Y, cv=GroupKFold(2), groups=s)
    assert not [w for w in record if "session_ids is None" in str(w.message)]

    for params, X_, kwargs, match in [
        ({"session_column": "nope"}, with_columns, {}, "not a column of X"),
        (
            {"session_column": "session"},
            with_columns,
            {"session_ids": s},
            "give it once",
        ),
        (
            {"session_column": "session"},
            with_columns.to_numpy(),
            {},
            "must be a DataFrame",
        ),
        (
            {"session_column": "x", "time_column": "x"},
            with_columns,
            {},
            "two different",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            RMTLClassifier(**FAST, **params).fit(X_, Y, **kwargs)


def test_session_scorers_read_the_session_column_without_routing(data):
    X, Y, s, t = data
    est = RMTLClassifier(**FAST, session_column="session", time_column="time")
    search = GridSearchCV(
        est,
        {"q_lambda": [0.0, 0.7]},
        cv=GroupKFold(n_splits=2),
        scoring={"s_logloss": session_log_loss_scorer, "gauc": group_roc_auc_scorer},
        refit="s_logloss",
        error_score="raise",
    )
    search.fit(X.assign(session=s, time=t), Y, groups=s)  # routing off
    scores = search.cv_results_["mean_test_s_logloss"]
    assert np.isfinite(scores).all()
    # The same as the sessions given by name.
    fitted = search.best_estimator_
    with_columns = X.assign(session=s, time=t)
    assert session_log_loss_scorer(fitted, with_columns, Y) == session_log_loss_scorer(
        fitted, X, Y, session_ids=s
    )


def test_successive_halving_over_epochs_keeps_sessions_whole(data):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV

    X, Y, s, t = data
    search = HalvingGridSearchCV(
        RMTLClassifier(**FAST, session_column="session", time_column="time"),
        {"q_lambda": [0.0, 0.5, 0.7, 0.9]},
        resource="max_epochs",
        min_resources=1,
        max_resources=2,
        factor=2,
        cv=GroupKFold(n_splits=2),
        scoring=session_log_loss_scorer,
        error_score="raise",
    )
    search.fit(X.assign(session=s, time=t), Y, groups=s)
    assert list(search.n_resources_) == [1, 2]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
