"""Per-task and session metrics against plain loops over sklearn's metrics."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.utils.metadata_routing import UNCHANGED

from sklearn_rmtl.metrics import (
    group_roc_auc,
    group_roc_auc_scorer,
    make_task_scorer,
    per_task_log_loss,
    per_task_roc_auc,
    session_log_loss,
    session_log_loss_scorer,
)


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def make_data(n=240, n_tasks=3, seed=0, ties=False):
    """Labels, probabilities and interleaved sessions of 1 to 8 rows."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, size=n)
    sessions = np.repeat(np.arange(n), lengths)[:n]
    sessions = rng.permutation(sessions)  # rows of a session need not be adjacent
    p = rng.uniform(size=(n, n_tasks))
    if ties:
        p = np.round(p, 1)
    y = (rng.uniform(size=(n, n_tasks)) < 0.3 + 0.4 * p).astype(int)
    return y, p, sessions


# ---------------------------------------------------------------------------
# Reference computations
# ---------------------------------------------------------------------------


def ref_session_log_loss(y, p, s):
    per_session = [
        [log_loss(y[s == g, k], p[s == g, k], labels=[0, 1]) for g in np.unique(s)]
        for k in range(y.shape[1])
    ]
    return np.array([np.mean(v) for v in per_session])


def ref_group_auc(y, p, s):
    out = []
    for k in range(y.shape[1]):
        aucs, weights = [], []
        for g in np.unique(s):
            yg = y[s == g, k]
            if np.unique(yg).size == 2:
                aucs.append(roc_auc_score(yg, p[s == g, k]))
                weights.append(yg.size)
        out.append(np.average(aucs, weights=weights) if aucs else np.nan)
    return np.array(out)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def test_per_task_roc_auc_matches_loop():
    y, p, _ = make_data()
    expected = [roc_auc_score(y[:, k], p[:, k]) for k in range(3)]
    np.testing.assert_allclose(per_task_roc_auc(y, p), expected)
    assert per_task_roc_auc(y, p, average="macro") == pytest.approx(np.mean(expected))
    one = per_task_roc_auc(y[:, 1], p[:, 1])
    assert one.shape == (1,) and one[0] == pytest.approx(expected[1])


def test_per_task_log_loss_matches_loop_and_clips():
    y, p, _ = make_data(seed=1)
    p[:3] = [0.0, 1.0, 0.0]  # certain and wrong somewhere: needs clipping
    expected = [log_loss(y[:, k], p[:, k], labels=[0, 1]) for k in range(3)]
    np.testing.assert_allclose(per_task_log_loss(y, p), expected)
    assert np.isfinite(per_task_log_loss(y, p)).all()
    assert per_task_log_loss(y, p, average="macro") == pytest.approx(np.mean(expected))
    # sklearn's log_loss on the 2-D target ignores the negatives.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "do not sum to one"
        assert log_loss(y, p) != pytest.approx(np.mean(expected))


def test_one_class_task_auc_is_nan_with_warning():
    y, p, _ = make_data()
    y[:, 2] = 0
    with pytest.warns(UndefinedMetricWarning, match="task 2"):
        auc = per_task_roc_auc(y, p)
    assert np.isnan(auc[2]) and np.isfinite(auc[:2]).all()
    with pytest.warns(UndefinedMetricWarning):
        macro = per_task_roc_auc(y, p, average="macro")
    assert macro == pytest.approx(auc[:2].mean())


@pytest.mark.parametrize("seed", range(3))
def test_session_log_loss_matches_loop(seed):
    y, p, s = make_data(seed=seed)
    np.testing.assert_allclose(
        session_log_loss(y, p, session_ids=s), ref_session_log_loss(y, p, s)
    )


def test_session_log_loss_weighs_sessions_equally():
    y = np.array([1, 1, 1, 1])
    p = np.array([0.5, 0.5, 0.5, 0.9])
    got = session_log_loss(y, p, session_ids=["a", "a", "a", "b"], average="macro")
    assert got == pytest.approx((np.log(2) - np.log(0.9)) / 2)
    assert per_task_log_loss(y, p, average="macro") != pytest.approx(got)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_group_roc_auc_matches_loop(seed, ties):
    y, p, s = make_data(seed=seed, ties=ties)
    sessions = np.array([f"s{g}" for g in s], dtype=object)  # string ids
    np.testing.assert_allclose(
        group_roc_auc(y, p, session_ids=sessions), ref_group_auc(y, p, s)
    )


def test_group_roc_auc_skips_one_class_groups_and_weights_by_rows():
    y = np.array([1, 0, 0, 1, 0, 1, 1, 1, 1])
    p = np.array([0.9, 0.2, 0.4, 0.3, 0.1, 0.8, 0.1, 0.2, 0.3])
    s = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2])  # group 2 has positives only
    # group 0: AUC 1 on 2 rows; group 1: 3 of 4 pairs ordered, 0.75 on 4 rows
    assert group_roc_auc(y, p, session_ids=s, average="macro") == pytest.approx(
        (2 * 1.0 + 4 * 0.75) / 6
    )


def test_group_roc_auc_nan_when_every_group_has_one_class():
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    p = np.full((4, 2), 0.5)
    with pytest.warns(UndefinedMetricWarning, match="task 0"):
        gauc = group_roc_auc(y, p, session_ids=[0, 0, 1, 1])
    assert np.isnan(gauc[0]) and gauc[1] == pytest.approx(0.5)


def test_accepts_bool_and_dataframes():
    y, p, s = make_data(n=60)
    expected = per_task_roc_auc(y, p)
    frame = pd.DataFrame(y.astype(bool), columns=["click", "cart", "buy"])
    np.testing.assert_allclose(per_task_roc_auc(frame, pd.DataFrame(p)), expected)
    np.testing.assert_allclose(
        session_log_loss(frame, p, session_ids=pd.Series(s)),
        session_log_loss(y, p, session_ids=s),
    )


Y2 = np.array([[0, 1], [1, 0], [1, 1]])
P2 = np.full((3, 2), 0.5)


@pytest.mark.parametrize(
    ("y_true", "y_proba", "kwargs", "match"),
    [
        (Y2, P2[:2], {}, "different numbers of samples: 3 and 2"),
        (Y2, P2[:, :1], {}, "different numbers of tasks: 2 and 1"),
        (Y2 + 1, P2, {}, "y_true must hold binary labels"),
        (Y2, P2 + 0.6, {}, r"y_proba must hold probabilities in \[0, 1\]"),
        (Y2, np.where(Y2 == 1, np.nan, 0.5), {}, "y_proba contains NaN"),
        (Y2, P2[..., None], {}, "y_proba must be 1-D"),
        (Y2[:0], P2[:0], {}, "y_true is empty"),
        (Y2, P2, {"session_ids": [0, 1]}, "session_ids must be 1-D with one entry"),
        (Y2, P2, {"session_ids": [0, None, 1]}, "session_ids contains missing"),
        (np.array([["a", "b"]] * 3), P2, {}, "y_true must hold binary labels"),
    ],
)
def test_validation_errors_name_the_argument(y_true, y_proba, kwargs, match):
    func = group_roc_auc if kwargs else per_task_log_loss
    with pytest.raises(ValueError, match=match):
        func(y_true, y_proba, **kwargs)


def test_invalid_average_and_missing_session_ids():
    with pytest.raises(ValueError, match="average"):
        per_task_roc_auc(Y2, P2, average="micro")
    with pytest.raises(ValueError, match="session_ids"):
        session_log_loss(Y2, P2, session_ids=None)


# ---------------------------------------------------------------------------
# Scorers
# ---------------------------------------------------------------------------


class TinyMultiTask(ClassifierMixin, BaseEstimator):
    """One logistic regression per task, like the library's output contract."""

    __metadata_request__fit = {"session_ids": True}

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y, session_ids=None):
        names = getattr(y, "columns", None)
        y = np.asarray(y)
        self.classes_ = np.array([np.unique(y[:, k]) for k in range(y.shape[1])])
        self.models_ = [
            LogisticRegression(C=self.C).fit(X, y[:, k]) for k in range(y.shape[1])
        ]
        names = names if names is not None else [f"task_{k}" for k in range(y.shape[1])]
        self.task_names_ = np.array([str(c) for c in names], dtype=object)
        self.n_sessions_seen_ = None if session_ids is None else len(set(session_ids))
        return self

    def predict_proba(self, X):
        return np.column_stack([m.predict_proba(X)[:, 1] for m in self.models_])

    def predict(self, X):
        return np.where(
            self.predict_proba(X) > 0.5, self.classes_[:, 1], self.classes_[:, 0]
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.classifier_tags.multi_label = True
        return tags


def make_task_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    noise = rng.normal(size=(n, 2))
    Y = pd.DataFrame(
        {"click": X[:, 0] + noise[:, 0] > 0, "buy": X[:, 1] + noise[:, 1] > 0.5}
    ).astype(int)
    sessions = np.repeat(np.arange(n // 5), 5)
    return X, Y, sessions


def test_scorers_direct_call_match_metrics():
    X, Y, s = make_task_data()
    est = TinyMultiTask().fit(X, Y)
    P = est.predict_proba(X)
    assert session_log_loss_scorer(est, X, Y, session_ids=s) == pytest.approx(
        -session_log_loss(Y, P, session_ids=s, average="macro")
    )
    assert group_roc_auc_scorer(est, X, Y, session_ids=s) == pytest.approx(
        group_roc_auc(Y, P, session_ids=s, average="macro")
    )
    auc = per_task_roc_auc(Y, P)
    assert make_task_scorer("roc_auc", task="buy")(est, X, Y) == pytest.approx(auc[1])
    assert make_task_scorer("roc_auc", task=-2)(est, X, Y) == pytest.approx(auc[0])
    weighted = make_task_scorer("roc_auc", average=[3, 1])(est, X, Y)
    assert weighted == pytest.approx(0.75 * auc[0] + 0.25 * auc[1])
    losses = per_task_log_loss(Y, P)
    assert make_task_scorer("log_loss")(est, X, Y) == pytest.approx(-losses.mean())


def test_scorer_maps_labels_with_classes():
    X, Y, _ = make_task_data()
    est = TinyMultiTask().fit(X, Y + 1)  # labels {1, 2}, positive = 2
    scorer = make_task_scorer("log_loss")
    expected = -per_task_log_loss(Y, est.predict_proba(X), average="macro")
    assert scorer(est, X, Y + 1) == pytest.approx(expected)
    with pytest.raises(ValueError, match="not among the estimator's classes_"):
        scorer(est, X, Y + 2)


def test_scorer_with_callable_metrics():
    X, Y, s = make_task_data()
    est = TinyMultiTask().fit(X, Y)
    P = est.predict_proba(X)
    ap = make_task_scorer(average_precision_score, greater_is_better=True)
    expected = np.mean(
        [average_precision_score(Y.iloc[:, k], P[:, k]) for k in range(2)]
    )
    assert ap(est, X, Y) == pytest.approx(expected)

    def max_session_error(y_true, y_proba, *, session_ids):
        err = pd.Series(np.abs(y_true - y_proba)).groupby(session_ids).mean()
        return err.max()

    scorer = make_task_scorer(max_session_error, task=0, greater_is_better=False)
    assert scorer(est, X, Y, session_ids=s) == pytest.approx(
        -max_session_error(Y["click"].to_numpy(), P[:, 0], session_ids=s)
    )
    with pytest.raises(ValueError, match="session_ids"):
        scorer(est, X, Y)


def test_scorer_on_single_output_binary_classifier():
    X, Y, s = make_task_data()
    clf = LogisticRegression().fit(X, Y["click"])
    p = clf.predict_proba(X)[:, 1]
    assert make_task_scorer("log_loss")(clf, X, Y["click"]) == pytest.approx(
        -log_loss(Y["click"], p)
    )
    assert group_roc_auc_scorer(clf, X, Y["click"], session_ids=s) == pytest.approx(
        group_roc_auc(Y["click"], p, session_ids=s, average="macro")
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("roc_auc",), {"greater_is_better": False}, "contradicts"),
        (("session_log_loss",), {"needs_sessions": False}, "contradicts"),
        ((average_precision_score,), {}, "greater_is_better must be given"),
        (("roc_auc",), {"average": [1, -1]}, "non-negative task weights"),
        (("precision",), {}, "metric"),
    ],
)
def test_make_task_scorer_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_task_scorer(*args, **kwargs)


def test_scorer_task_resolution_errors():
    X, Y, _ = make_task_data(n=50)
    est = TinyMultiTask().fit(X, Y)
    with pytest.raises(ValueError, match="is not one of the tasks"):
        make_task_scorer("roc_auc", task="cart")(est, X, Y)
    with pytest.raises(ValueError, match="out of range"):
        make_task_scorer("roc_auc", task=2)(est, X, Y)
    with pytest.raises(TypeError, match="unexpected metadata"):
        make_task_scorer("roc_auc")(est, X, Y, session_ids=np.arange(50))


def test_scorers_pickle_and_repr():
    clone_ = pickle.loads(pickle.dumps(session_log_loss_scorer))
    assert repr(clone_) == repr(session_log_loss_scorer)
    assert "session_log_loss" in repr(clone_)


def _fold_scores(est, X, Y, s, test):
    P = est.predict_proba(X[test])
    return {
        "sll": -session_log_loss(Y.iloc[test], P, session_ids=s[test], average="macro"),
        "gauc": group_roc_auc(Y.iloc[test], P, session_ids=s[test], average="macro"),
        "buy_auc": per_task_roc_auc(Y.iloc[test], P)[1],
    }


SCORING = {
    "sll": session_log_loss_scorer,
    "gauc": group_roc_auc_scorer,
    "buy_auc": make_task_scorer("roc_auc", task="buy"),
}


def test_cross_validate_routes_test_fold_session_ids(routing):
    X, Y, s = make_task_data()
    res = cross_validate(
        TinyMultiTask(),
        X,
        Y,
        cv=GroupKFold(n_splits=3),
        scoring=SCORING,
        params={"session_ids": s, "groups": s},
        return_estimator=True,
        return_indices=True,
        error_score="raise",
    )
    for i, test in enumerate(res["indices"]["test"]):
        est = res["estimator"][i]
        assert est.n_sessions_seen_ == len(set(s[res["indices"]["train"][i]]))
        for name, value in _fold_scores(est, X, Y, s, test).items():
            assert res[f"test_{name}"][i] == pytest.approx(value)


def test_grid_search_multimetric_refit(routing):
    X, Y, s = make_task_data()
    search = GridSearchCV(
        TinyMultiTask(),
        {"C": [0.001, 1.0]},
        scoring=SCORING,
        refit="gauc",
        cv=GroupKFold(n_splits=3),
        error_score="raise",
    ).fit(X, Y, session_ids=s, groups=s)
    results = search.cv_results_
    assert search.best_index_ == int(np.argmax(results["mean_test_gauc"]))
    assert np.isfinite(results["mean_test_sll"]).all()
    assert search.score(X, Y, session_ids=s) == pytest.approx(
        group_roc_auc(Y, search.predict_proba(X), session_ids=s, average="macro")
    )


def test_score_request_alias_for_user_level_gauc(routing):
    X, Y, s = make_task_data()
    users = s % 7
    user_gauc = make_task_scorer("group_roc_auc").set_score_request(session_ids="users")
    res = cross_validate(
        TinyMultiTask(),
        X,
        Y,
        cv=GroupKFold(n_splits=2),
        scoring={"user_gauc": user_gauc},
        params={"users": users, "groups": s},
        return_estimator=True,
        return_indices=True,
        error_score="raise",
    )
    test, est = res["indices"]["test"][0], res["estimator"][0]
    expected = group_roc_auc(
        Y.iloc[test],
        est.predict_proba(X[test]),
        session_ids=users[test],
        average="macro",
    )
    assert res["test_user_gauc"][0] == pytest.approx(expected)


def test_session_scorer_without_routing_raises_instead_of_scoring():
    X, Y, s = make_task_data()
    with pytest.raises(ValueError, match="enable_metadata_routing=True"):
        cross_validate(
            TinyMultiTask(),
            X,
            Y,
            groups=s,
            cv=GroupKFold(n_splits=2),
            scoring=session_log_loss_scorer,
            error_score="raise",
        )
    # With sklearn's default error_score the fold gets nan and a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = cross_validate(
            TinyMultiTask(),
            X,
            Y,
            groups=s,
            cv=GroupKFold(2),
            scoring=group_roc_auc_scorer,
        )
    assert np.isnan(res["test_score"]).all()
    with pytest.raises(ValueError, match="needs the session_ids"):
        group_roc_auc_scorer(TinyMultiTask().fit(X, Y), X, Y)


def _public_session_scorers():
    """sklearn's make_scorer of the session metrics, requesting session_ids."""
    from sklearn.metrics import make_scorer

    def neg_macro_s_logloss(y, proba, session_ids):
        return -session_log_loss(y, proba, session_ids=session_ids, average="macro")

    def macro_gauc(y, proba, session_ids):
        return group_roc_auc(y, proba, session_ids=session_ids, average="macro")

    return {
        name: make_scorer(func, response_method="predict_proba").set_score_request(
            session_ids=True
        )
        for name, func in {"sll": neg_macro_s_logloss, "gauc": macro_gauc}.items()
    }


def test_the_session_scorers_score_as_sklearns_make_scorer_where_both_apply(routing):
    """With 0/1 labels in the fitted task order, the library's session scorers
    give the fold scores of sklearn's public make_scorer, alone or in one
    dict with it and a string scorer; they are kept for what make_scorer
    cannot do (labels mapped by classes_, tasks by name, a direct call with
    session_ids when routing is off)."""
    X, Y, s = make_task_data()
    public = _public_session_scorers()
    ours = {"sll": session_log_loss_scorer, "gauc": group_roc_auc_scorer}
    kwargs = {
        "cv": GroupKFold(n_splits=3),
        "params": {"session_ids": s, "groups": s},
        "error_score": "raise",
    }
    for name in ours:
        alone = {
            who: cross_validate(TinyMultiTask(), X, Y, scoring=scorer, **kwargs)
            for who, scorer in {"ours": ours[name], "sklearn": public[name]}.items()
        }
        np.testing.assert_array_equal(
            alone["ours"]["test_score"], alone["sklearn"]["test_score"]
        )
    scoring = {
        **{f"ours_{k}": v for k, v in ours.items()},
        **{f"sklearn_{k}": v for k, v in public.items()},
        "accuracy": "accuracy",
    }
    mixed = cross_validate(TinyMultiTask(), X, Y, scoring=scoring, **kwargs)
    for name in ours:
        np.testing.assert_array_equal(
            mixed[f"test_ours_{name}"], mixed[f"test_sklearn_{name}"]
        )
    assert np.isfinite(mixed["test_accuracy"]).all()
    search = GridSearchCV(
        TinyMultiTask(), {"C": [0.01, 1.0]}, scoring=scoring, refit="ours_gauc", cv=3
    ).fit(X, Y, session_ids=s)
    results = search.cv_results_
    for name in ours:
        np.testing.assert_array_equal(
            results[f"split0_test_ours_{name}"], results[f"split0_test_sklearn_{name}"]
        )


def test_scorers_are_plain_callables_on_public_routing_api():
    """The scorers no longer subclass sklearn's private _BaseScorer: they work
    through the public protocol, in a dict beside sklearn's string scorers
    with routing on or off."""
    from sklearn.metrics import _scorer

    scorer = make_task_scorer("roc_auc", task="buy")
    assert not isinstance(scorer, _scorer._BaseScorer)
    assert not isinstance(session_log_loss_scorer, _scorer._BaseScorer)
    assert session_log_loss_scorer.get_metadata_routing().score.requests == {
        "session_ids": True
    }
    assert scorer.get_metadata_routing().score.requests == {}
    X, Y, _ = make_task_data()
    scoring = {"buy_auc": scorer, "log_loss": make_task_scorer("log_loss")}
    scoring["accuracy"] = "accuracy"
    for enabled in (False, True):
        with sklearn.config_context(enable_metadata_routing=enabled):
            res = cross_validate(
                TinyMultiTask(),
                X,
                Y,
                cv=3,
                scoring=scoring,
                return_estimator=True,
                return_indices=True,
                error_score="raise",
            )
        for i, test in enumerate(res["indices"]["test"]):
            P = res["estimator"][i].predict_proba(X[test])
            assert res["test_buy_auc"][i] == roc_auc_score(Y["buy"].iloc[test], P[:, 1])
            assert res["test_log_loss"][i] == pytest.approx(
                -per_task_log_loss(Y.iloc[test], P, average="macro")
            )
        assert np.isfinite(res["test_accuracy"]).all()


def test_dict_of_scorers_with_sample_weight_without_routing():
    """GridSearchCV asks every scorer of a dict whether it takes
    sample_weight when one is fitted without routing (a plain function
    fails there): the scorers say no, with sklearn's warning."""
    X, Y, _ = make_task_data()

    class Weighted(TinyMultiTask):
        def fit(self, X, y, session_ids=None, sample_weight=None):
            return super().fit(X, y, session_ids=session_ids)

    scoring = {"auc": make_task_scorer("roc_auc"), "accuracy": "accuracy"}
    search = GridSearchCV(Weighted(), {"C": [1.0]}, scoring=scoring, refit="auc", cv=2)
    with pytest.warns(UserWarning, match="does not support sample_weight"):
        search.fit(X, Y, sample_weight=np.ones(len(X)))
    assert np.isfinite(search.best_score_)


def test_set_score_request(routing):
    scorer = make_task_scorer("group_roc_auc")
    assert scorer.set_score_request(session_ids="users") is scorer
    assert scorer.get_metadata_routing().score.requests == {"session_ids": "users"}
    scorer.set_score_request(session_ids=UNCHANGED)
    assert scorer.get_metadata_routing().score.requests == {"session_ids": "users"}
    with pytest.raises(ValueError, match="alias"):
        scorer.set_score_request(session_ids="not an identifier")
    assert scorer.get_metadata_routing().score.requests == {"session_ids": "users"}
    with pytest.raises(TypeError, match="cannot request"):
        scorer.set_score_request(sample_weight=True)
    with pytest.raises(TypeError, match="accepts no metadata"):
        make_task_scorer("roc_auc").set_score_request(session_ids=True)
    with (
        sklearn.config_context(enable_metadata_routing=False),
        pytest.raises(RuntimeError, match="enable_metadata_routing=True"),
    ):
        make_task_scorer("group_roc_auc").set_score_request(session_ids=True)
    # Not requested: the fold scorer gets no sessions and says so.
    X, Y, s = make_task_data()
    with pytest.raises(ValueError, match="needs the session_ids"):
        cross_validate(
            TinyMultiTask(),
            X,
            Y,
            cv=GroupKFold(n_splits=2),
            scoring=make_task_scorer("group_roc_auc").set_score_request(
                session_ids=False
            ),
            params={"session_ids": s, "groups": s},
            error_score="raise",
        )


# Scorers pickled by the version that subclassed sklearn's _BaseScorer: the
# GAUC scorer after set_score_request(session_ids="users"), then the
# ready-made session_log_loss_scorer.
_OLD_PICKLES = {
    "users": (
        "gASV0QIAAAAAAACMFHNrbGVhcm5fcm10bC5tZXRyaWNzlIwSX1Nlc3Npb25UYXNrU2NvcmVy"
        "lJOUKYGUfZQojAtfc2NvcmVfZnVuY5RoAIwNZ3JvdXBfcm9jX2F1Y5STlIwFX3NpZ26USwGM"
        "B19rd2FyZ3OUfZSMEF9yZXNwb25zZV9tZXRob2SUjA1wcmVkaWN0X3Byb2JhlIwMX21ldHJp"
        "Y19uYW1llGgGjAhfYnVpbHRpbpSIjAVfdGFza5ROjAhfYXZlcmFnZZSMBW1hY3JvlIwPX25l"
        "ZWRzX3Nlc3Npb25zlIiMEV9tZXRhZGF0YV9yZXF1ZXN0lIwgc2tsZWFybi51dGlscy5fbWV0"
        "YWRhdGFfcmVxdWVzdHOUjA9NZXRhZGF0YVJlcXVlc3SUk5QpgZR9lCiMBW93bmVylGgDjANm"
        "aXSUaBSMFU1ldGhvZE1ldGFkYXRhUmVxdWVzdJSTlCmBlH2UKIwJX3JlcXVlc3RzlH2UaBlo"
        "A4wGbWV0aG9klGgadWKMC3BhcnRpYWxfZml0lGgcKYGUfZQoaB99lGgZaANoIWgidWKMB3By"
        "ZWRpY3SUaBwpgZR9lChoH32UaBloA2ghaCZ1YmgMaBwpgZR9lChoH32UaBloA2ghaAx1YowR"
        "cHJlZGljdF9sb2dfcHJvYmGUaBwpgZR9lChoH32UaBloA2ghaC11YowRZGVjaXNpb25fZnVu"
        "Y3Rpb26UaBwpgZR9lChoH32UaBloA2ghaDF1YowFc2NvcmWUaBwpgZR9lChoH32UjAtzZXNz"
        "aW9uX2lkc5SMBXVzZXJzlHNoGWgDaCFoNXVijAVzcGxpdJRoHCmBlH2UKGgffZRoGWgDaCFo"
        "O3VijAl0cmFuc2Zvcm2UaBwpgZR9lChoH32UaBloA2ghaD91YowRaW52ZXJzZV90cmFuc2Zv"
        "cm2UaBwpgZR9lChoH32UaBloA2ghaEN1YnVidWIu"
    ),
    "default": (
        "gASV5AAAAAAAAACMFHNrbGVhcm5fcm10bC5tZXRyaWNzlIwSX1Nlc3Npb25UYXNrU2NvcmVy"
        "lJOUKYGUfZQojAtfc2NvcmVfZnVuY5RoAIwQc2Vzc2lvbl9sb2dfbG9zc5STlIwFX3NpZ26U"
        "Sv////+MB19rd2FyZ3OUfZSMEF9yZXNwb25zZV9tZXRob2SUjA1wcmVkaWN0X3Byb2JhlIwM"
        "X21ldHJpY19uYW1llGgGjAhfYnVpbHRpbpSIjAVfdGFza5ROjAhfYXZlcmFnZZSMBW1hY3Jv"
        "lIwPX25lZWRzX3Nlc3Npb25zlIh1Yi4="
    ),
}


def test_scorers_pickled_by_earlier_versions_load():
    import base64

    X, Y, s = make_task_data()
    est = TinyMultiTask().fit(X, Y)
    users = pickle.loads(base64.b64decode(_OLD_PICKLES["users"]))
    assert users.get_metadata_routing().score.requests == {"session_ids": "users"}
    assert users(est, X, Y, session_ids=s) == group_roc_auc_scorer(
        est, X, Y, session_ids=s
    )
    old = pickle.loads(base64.b64decode(_OLD_PICKLES["default"]))
    assert repr(old) == repr(session_log_loss_scorer)
    assert old.get_metadata_routing().score.requests == {"session_ids": True}
    assert old(est, X, Y, session_ids=s) == session_log_loss_scorer(
        est, X, Y, session_ids=s
    )


def test_average_weights_by_task_name():
    X, Y, _ = make_task_data()
    est = TinyMultiTask().fit(X, Y)
    positional = make_task_scorer("roc_auc", average=[3, 1])(est, X, Y)
    for weights in ({"buy": 1, "click": 3}, pd.Series([3, 1], index=["click", "buy"])):
        scorer = make_task_scorer("roc_auc", average=weights)
        assert scorer(est, X, Y) == pytest.approx(positional)
        assert scorer(est, X, Y[["buy", "click"]]) == pytest.approx(positional)
    scorer = make_task_scorer("log_loss", average={"click": 0, "buy": 2})
    assert repr(scorer) == (
        "make_task_scorer('log_loss', task=None, average={'click': 0.0, 'buy': 2.0})"
    )
    assert repr(pickle.loads(pickle.dumps(scorer))) == repr(scorer)
    assert scorer(est, X, Y) == pytest.approx(
        -per_task_log_loss(Y, est.predict_proba(X))[1]
    )
    with pytest.raises(ValueError, match="give one weight per task"):
        make_task_scorer("roc_auc", average={"click": 1})(est, X, Y)
    with pytest.raises(ValueError, match="give one weight per task"):
        make_task_scorer("roc_auc", average={"click": 1, "buy": 1, "cart": 1})(
            est, X, Y
        )
    with pytest.raises(ValueError, match="non-negative task weights"):
        make_task_scorer("roc_auc", average={"click": -1, "buy": 1})
    with pytest.raises(ValueError, match="non-negative task weights"):
        make_task_scorer("roc_auc", average={"click": "a lot", "buy": 1})
    # Without task names (a bare classifier, y an array) names cannot match.
    clf = LogisticRegression().fit(X, Y["click"])
    with pytest.raises(ValueError, match="no task_names_"):
        make_task_scorer("roc_auc", average={"click": 1})(clf, X, Y["click"])
    assert make_task_scorer("roc_auc", average={"click": 1})(
        clf, X, Y[["click"]]
    ) == pytest.approx(roc_auc_score(Y["click"], clf.predict_proba(X)[:, 1]))


def test_scorer_on_multi_output_classifier_with_a_list_of_probas():
    from sklearn.multioutput import MultiOutputClassifier

    X, Y, _ = make_task_data()
    est = MultiOutputClassifier(LogisticRegression()).fit(X, Y)
    P = np.column_stack([p[:, 1] for p in est.predict_proba(X)])
    assert make_task_scorer("log_loss")(est, X, Y) == pytest.approx(
        -per_task_log_loss(Y, P, average="macro")
    )


def test_per_task_auc_is_sklearns_where_every_task_has_both_labels():
    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, (50, 3))
    P = rng.random((50, 3))
    np.testing.assert_array_equal(
        per_task_roc_auc(Y, P), roc_auc_score(Y, P, average=None)
    )
