"""The experiments' split and paired statistics, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl import _experiments as ex
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.metrics import (
    METRICS,
    per_task_log_loss,
    per_task_roc_auc,
    session_log_loss,
)


def test_split_scores_on_the_requested_part():
    data = make_sessions(n_sessions=60, random_state=0)
    test = ex.split_dataset(data)
    valid = ex.split_dataset(data, evaluate_on="valid")
    sizes = test.sizes
    assert sizes == valid.sizes and sum(sizes.values()) == len(data.X)
    assert len(test.X_fit) == sizes["train"] + sizes["valid"]
    assert len(test.X_eval) == sizes["test"]
    assert len(valid.X_fit) == sizes["train"] and len(valid.X_eval) == sizes["valid"]
    # Validation mode never touches the test rows; its fit rows come first.
    assert not set(valid.X_fit.index) & set(test.X_eval.index)
    assert not set(valid.X_eval.index) & set(test.X_eval.index)
    assert set(valid.X_fit.index) < set(test.X_fit.index)
    assert len(valid.s_eval) == len(valid.y_eval) == sizes["valid"]
    with pytest.raises(ValueError, match="evaluate_on must be one of"):
        ex.split_dataset(data, evaluate_on="train")


def test_paired_difference_matches_a_hand_computation():
    treated = {0: 0.70, 1: 0.72, 2: 0.71, 3: 0.99}  # seed 3 has no pair
    control = {0: 0.69, 1: 0.70, 2: 0.72}
    d = [0.01, 0.02, -0.01]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t = mean / (sd / math.sqrt(3))
    p = 1 - abs(t) / math.sqrt(2 + t * t)  # two-sided, Student t with 2 dof
    row = ex.paired_difference(treated, control, greater_is_better=True)
    assert row["n_seeds"] == 3
    assert row["mean_diff"] == pytest.approx(mean)
    assert row["std_diff"] == pytest.approx(sd)
    assert row["t"] == pytest.approx(t)
    assert row["p_value"] == pytest.approx(p)
    assert (row["wins"], row["ties"], row["wins_label"]) == (2, 0, "2/3")
    # Lower is better (Logloss): the same differences win once.
    lower = ex.paired_difference(treated, control, greater_is_better=False)
    assert lower["wins_label"] == "1/3" and lower["mean_diff"] == row["mean_diff"]


def test_paired_difference_without_a_spread():
    same = ex.paired_difference({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}, True)
    assert math.isnan(same["p_value"]) and same["ties"] == 2
    assert same["wins_label"] == "0/2" and same["mean_diff"] == 0
    one = ex.paired_difference({0: 0.5}, {0: 0.4}, True)
    assert math.isnan(one["p_value"]) and one["wins_label"] == "1/1"


def _run(variant, seed, auc, backbone="mmoe"):
    kind = {"backbone": "baseline", "rmtl": "rmtl", "outcome": "rmtl"}.get(
        variant, "control"
    )
    scores = {"AUC": auc, "Logloss": 1 - auc, "s-Logloss": 1 - auc}
    return {
        "method": f"{variant}-{backbone}",
        "kind": kind,
        "backbone": backbone,
        "variant": variant,
        "seed": seed,
        "scores": {"click": scores},
    }


def test_summarise_study_reports_worse_results_as_worse():
    rng = np.random.default_rng(0)
    results = []
    for seed in range(5):
        base = 0.70 + rng.normal(0, 0.01)  # shared by the seed: pairing removes it
        results += [
            _run("backbone", seed, base),
            _run("rmtl", seed, base + 0.01 + rng.normal(0, 0.001)),
            _run("constant", seed, base + 0.02 + rng.normal(0, 0.001)),
            _run("label_mean", seed, base + 0.01 + rng.normal(0, 0.01)),
        ]
    diffs = ex.summarise_study(results).set_index(["comparison", "metric"])
    assert len(diffs) == 3 * 3
    better = diffs.loc[("RMTL - backbone", "AUC")]
    assert better["mean_diff"] > 0 and better["p_value"] < 0.05
    assert better["verdict"] == "RMTL better" and better["wins_label"] == "5/5"
    loss = diffs.loc[("RMTL - backbone", "Logloss")]
    assert loss["mean_diff"] < 0 and loss["verdict"] == "RMTL better"
    worse = diffs.loc[("RMTL - constant", "AUC")]
    assert worse["mean_diff"] < 0 and worse["verdict"] == "RMTL worse"
    assert worse["wins_label"] == "0/5"
    text = "\n".join(ex.study_verdicts(diffs.reset_index()))
    assert "MMoE, RMTL - constant: RMTL is significantly better in 0 and " in text
    assert "significantly worse in 3 of 3 columns" in text
    table = ex.study_markdown(diffs.reset_index())
    assert f"| MMoE | RMTL - constant | {worse['mean_diff']:+.4f} (p " in table
    assert ", 0/5) |" in table


def test_study_methods_pair_the_variants():
    methods = ex.study_methods(["esmm", "ple"])
    assert [m.name for m in methods[:4]] == [
        "ESMM",
        "RMTL-ESMM",
        "ESMM constant refit",
        "ESMM label-mean refit",
    ]
    assert [m.variant for m in methods] == list(ex.STUDY_DEFAULT) * 2
    assert {m.backbone for m in methods} == {"esmm", "ple"}
    assert pd.Series([m.name for m in methods]).is_unique
    every = ex.study_methods(["mmoe"], ex.STUDY_VARIANTS)
    assert [m.variant for m in every] == list(ex.STUDY_VARIANTS)
    with pytest.raises(ValueError, match="Unknown study variants"):
        ex.study_methods(["mmoe"], ["rmtl", "nope"])


def test_summarise_study_pairs_each_treatment_with_its_controls():
    results = []
    for seed in range(3):
        for variant, auc in (
            ("backbone", 0.70),
            ("rmtl", 0.71),
            ("rmtl_shuffled", 0.71),
            ("outcome", 0.72),
            ("outcome_shuffled", 0.70),
        ):
            results.append(
                _run(variant, seed, auc + 0.001 * seed * (variant == "rmtl"))
            )
    diffs = ex.summarise_study(results)
    assert set(diffs["comparison"]) == {
        "RMTL - backbone",
        "RMTL - rmtl_shuffled",
        "Outcome - backbone",
        "Outcome - outcome_shuffled",
    }
    auc = diffs[diffs["metric"] == "AUC"].set_index("comparison")
    assert auc.loc["Outcome - outcome_shuffled", "wins_label"] == "3/3"
    text = "\n".join(ex.study_verdicts(diffs))
    assert "MMoE, Outcome - outcome_shuffled: Outcome is significantly better" in text


def test_ddpg_takes_settings_on_top_of_the_baseline():
    # D-PLE of the experiments, with a study's bc_alpha on top: trained from
    # the context's PLE actor, by the Q-gradient only, never retrained.
    split = ex.split_dataset(make_sessions(n_sessions=60, random_state=0))
    settings = ex.Settings(
        max_epochs=1,
        critic_max_epochs=1,
        backbone_params={"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)},
        rmtl_params={"retrain_on_all": True},
    )
    context = ex.Context(settings, split, seed=0)
    est = ex.ddpg(context, bc_alpha=0.5)
    assert est.actor is context.actor("ple")
    assert est.bc_alpha == 0.5 and est.actor_update
    assert est.retrain_on_all is False and est.refit_max_epochs == 0
    assert est.predict_proba(split.X_eval).shape == (len(split.X_eval), 2)


def test_table_columns_are_the_metric_registrys():
    tabled = [spec for spec in METRICS.values() if spec.in_tables]
    assert tuple(spec.display_name for spec in tabled) == ex.METRICS
    assert ex.METRICS == ("AUC", "Logloss", "s-Logloss")  # the paper's columns
    assert {
        spec.display_name: spec.greater_is_better for spec in tabled
    } == ex.GREATER_IS_BETTER


class _FixedProba:
    """A fitted model's stand-in: the same probabilities for any X."""

    def __init__(self, proba):
        self.proba = proba

    def predict_proba(self, X):
        return self.proba[: len(X)]


def test_evaluate_scores_each_table_column_by_its_registry_metric():
    split = ex.split_dataset(make_sessions(n_sessions=80, random_state=0))
    y = split.y_eval.to_numpy()
    proba = np.random.default_rng(0).uniform(0.05, 0.95, y.shape)
    scores = ex.evaluate(_FixedProba(proba), split)
    expected = {
        "AUC": per_task_roc_auc(y, proba),
        "Logloss": per_task_log_loss(y, proba),
        "s-Logloss": session_log_loss(y, proba, session_ids=split.s_eval),
    }
    assert list(scores) == [str(c) for c in split.y_eval.columns]
    for k, task_scores in enumerate(scores.values()):
        assert list(task_scores) == list(ex.METRICS)
        for metric, value in task_scores.items():
            assert value == pytest.approx(expected[metric][k])


def test_data_fingerprint_changes_with_any_cell_of_any_column_kind():
    """A run key's data part: ids, strings, numbers, histories, sessions, times."""
    data = make_sessions(n_sessions=20, random_state=0)
    X = data.X.copy()
    X["history"] = [np.arange(i % 4) for i in range(len(X))]  # some empty
    X["label"] = [f"s{i % 3}" for i in range(len(X))]
    number = X.select_dtypes("number").columns[0]

    def key(frame=X, **changes):
        return ex.data_fingerprint(type(data)(**{**data, "X": frame, **changes}))

    base = key()
    assert key(X.copy()) == base
    for column, value in [
        ("history", np.array([7, 8])),
        ("label", "other"),
        (number, X[number].iloc[1] + 1),
    ]:
        edited = X.copy()
        edited.at[edited.index[1], column] = value
        assert key(edited) != base, column
    for name in ("session_ids", "timestamps"):
        values = np.asarray(data[name]).copy()
        values[[0, -1]] = values[[-1, 0]]
        assert key(**{name: values}) != base, name
