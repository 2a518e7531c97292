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


def test_the_session_scorers_score_as_sklearns_make_scorer_where_both_apply(routing):
    """With 0/1 labels in the fitted task order, the library's session scorer
    gives the fold scores of sklearn's public make_scorer; it is kept for
    what make_scorer cannot do (labels mapped by classes_, tasks by name, a
    direct call with session_ids when routing is off)."""
    from sklearn.metrics import make_scorer

    X, Y, s = make_task_data()

    def neg_macro_s_logloss(y, proba, session_ids):
        return -session_log_loss(y, proba, session_ids=session_ids, average="macro")

    public = make_scorer(neg_macro_s_logloss, response_method="predict_proba")
    public.set_score_request(session_ids=True)
    scores = {}
    for name, scorer in {"ours": session_log_loss_scorer, "sklearn": public}.items():
        res = cross_validate(
            TinyMultiTask(),
            X,
            Y,
            cv=GroupKFold(n_splits=3),
            scoring=scorer,
            params={"session_ids": s, "groups": s},
            error_score="raise",
        )
        scores[name] = res["test_score"]
    np.testing.assert_allclose(scores["ours"], scores["sklearn"], rtol=0, atol=1e-12)


def test_per_task_auc_is_sklearns_where_every_task_has_both_labels():
    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, (50, 3))
    P = rng.random((50, 3))
    np.testing.assert_array_equal(
        per_task_roc_auc(Y, P), roc_auc_score(Y, P, average=None)
    )
