"""The Display classes of sklearn_rmtl.plotting draw what the estimators hold."""

from __future__ import annotations

import importlib
import inspect
import sys

import matplotlib

matplotlib.use("Agg")  # no display in tests; must precede pyplot's import

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import make_session_data

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.metrics import (
    per_task_log_loss,
    per_task_roc_auc,
    session_log_loss,
)
from sklearn_rmtl.plotting import (
    LossWeightsDisplay,
    MetricComparisonDisplay,
    TrainingCurvesDisplay,
)

TINY = {
    "backbone_params": {
        "embedding_dim": 4,
        "bottom_dims": (8,),
        "tower_dims": (4,),
        "n_experts": 2,
    },
    "max_epochs": 2,
    "batch_size": 128,
    "random_state": 0,
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def sessions():
    return make_session_data(n_sessions=80)


@pytest.fixture(scope="module")
def mtl(sessions):
    X, Y, _s, t = sessions
    return MTLClassifier(backbone="mmoe", **TINY).fit(X, Y, timestamps=t)


@pytest.fixture(scope="module")
def rmtl(sessions, mtl):
    X, Y, s, t = sessions
    est = RMTLClassifier(
        backbone="mmoe", critic=SessionCritic(hidden_dims=(8,), max_epochs=2), **TINY
    )
    return est.fit(X, Y, session_ids=s, timestamps=t)


def _data(line):
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


# ---------------------------------------------------------- training curves
def test_training_curves_plot_every_phase_of_rmtl(rmtl):
    display = TrainingCurvesDisplay.from_estimator(rmtl)
    assert display.phases_ == ["pretrain", "critic", "refit"]
    assert display.ax_.shape == (3,)
    assert len(display.figure_.axes) == 3
    assert display.figure_.get_suptitle() == "RMTLClassifier (mmoe)"
    titles = [ax.get_title() for ax in display.ax_]
    assert titles[0] == "pretrain"
    assert titles[1].startswith("critic")
    assert titles[2].startswith("refit")
    expected = {
        "pretrain": {"train loss": "train_loss", "validation loss": "valid_loss"},
        "critic": {"TD loss": "td_loss"},
        "refit": {"train loss": "train_loss", "validation loss": "valid_loss"},
    }
    for ax, phase in zip(display.ax_, display.phases_, strict=True):
        lines = display.lines_[phase]
        assert ax.get_lines() == lines
        assert [line.get_label() for line in lines] == list(expected[phase])
        assert ax.get_xlabel() == "epoch"
        rows = rmtl.history_[phase]
        for line in lines:
            x, y = _data(line)
            key = expected[phase][line.get_label()]
            np.testing.assert_array_equal(x, [r["epoch"] for r in rows])
            np.testing.assert_allclose(y, [r[key] for r in rows])


def test_a_one_epoch_phase_has_an_integer_epoch_axis():
    history = {"pretrain": [{"epoch": 1, "train_loss": 0.5, "valid_loss": 0.6}]}
    display = TrainingCurvesDisplay(history=history).plot()
    display.figure_.canvas.draw()
    assert list(display.ax_[0].get_xticks()) == [1]


def test_training_curves_draw_one_curve_per_fold_of_cross_fitted_critics():
    rows = [
        {"fold": f, "epoch": e, "td_loss": 1.0 / e + f, "steps": 3 * e}
        for f in (0, 1)
        for e in (1, 2, 3)
    ]
    display = TrainingCurvesDisplay(history={"critic": rows}).plot()
    lines = display.lines_["critic"]
    labels = [line.get_label() for line in lines]
    assert labels == ["TD loss, fold 0", "TD loss, fold 1"]
    for f, line in enumerate(lines):
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(line.get_ydata(), [1 + f, 0.5 + f, 1 / 3 + f])


def test_training_curves_of_an_mtl_classifier_have_one_panel(mtl):
    display = TrainingCurvesDisplay.from_estimator(mtl, name="baseline")
    assert display.phases_ == ["pretrain"]
    assert display.ax_.shape == (1,)
    assert display.figure_.get_suptitle() == "baseline"
    _, y = _data(display.lines_["pretrain"][0])
    np.testing.assert_allclose(y, [r["train_loss"] for r in mtl.history_["pretrain"]])


def test_default_name_gives_a_given_actors_backbone():
    from sklearn_rmtl.plotting import _default_name

    given = RMTLClassifier(actor=MTLClassifier(backbone="esmm"))
    assert _default_name(given) == "RMTLClassifier (esmm)"
    assert _default_name(RMTLClassifier(backbone="mmoe")) == "RMTLClassifier (mmoe)"
    assert _default_name(MTLClassifier(backbone="ple")) == "MTLClassifier (ple)"


def test_training_curves_skip_empty_phases_unless_asked():
    history = {
        "pretrain": [{"epoch": 1, "train_loss": 0.7, "dur": 0.1}],
        "critic": [],
        "refit": [
            {"epoch": 1, "train_loss": 0.9, "valid_loss": 0.6, "dur": 0.1},
            {"epoch": 2, "train_loss": 0.8, "valid_loss": 0.7, "restored_start": True},
        ],
    }
    display = TrainingCurvesDisplay(history=history).plot()
    assert display.phases_ == ["pretrain", "refit"]
    assert "pretrained weights kept" in display.ax_[1].get_title()
    assert display.figure_.get_suptitle() == ""
    asked = TrainingCurvesDisplay(history=history).plot(phases=["critic"])
    assert asked.lines_ == {"critic": []}
    assert [t.get_text() for t in asked.ax_[0].texts] == ["no epochs"]
    with pytest.raises(ValueError, match="available phases"):
        TrainingCurvesDisplay(history=history).plot(phases=["actor"])


def test_training_curves_of_dple_plot_the_actor_but_not_its_selection():
    critic = [
        {"epoch": 1, "td_loss": 1.3, "actor_loss": 2.7, "actor_valid_loss": 0.31},
        {"epoch": 2, "td_loss": 1.2},  # the actor has stopped stepping
        {
            "epoch": 3,
            "td_loss": 1.1,
            "actor_best_at": 0.0,
            "actor_best_step": 0,
            "actor_restored_start": True,
        },
    ]
    display = TrainingCurvesDisplay(history={"critic": critic}).plot()
    labels = [line.get_label() for line in display.lines_["critic"]]
    assert labels == ["TD loss", "actor loss", "actor validation loss"]
    assert "pretrained actor kept" in display.ax_[0].get_title()


def test_training_curves_draw_on_given_axes_and_check_their_number(rmtl):
    fig, axes = plt.subplots(2, 2)
    display = TrainingCurvesDisplay.from_estimator(
        rmtl, phases=["pretrain", "refit"], ax=axes[0]
    )
    assert display.figure_ is fig
    assert list(display.ax_) == list(axes[0])
    assert not axes[1, 0].get_lines()
    with pytest.raises(ValueError, match="needs one Axes per panel"):
        TrainingCurvesDisplay.from_estimator(rmtl, ax=axes[0])
    single = TrainingCurvesDisplay.from_estimator(rmtl, phases="critic", ax=axes[1, 1])
    assert single.ax_[0] is axes[1, 1]


def test_training_curves_need_a_fitted_estimator_with_history():
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(NotFittedError):
        TrainingCurvesDisplay.from_estimator(MTLClassifier())
    fitted = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with pytest.raises(TypeError, match="history_"):
        TrainingCurvesDisplay.from_estimator(fitted)


# ------------------------------------------------------------- loss weights
def test_loss_weights_display_plots_the_weights(rmtl, sessions):
    X, Y, s, t = sessions
    display = LossWeightsDisplay.from_estimator(
        rmtl, X, Y, session_ids=s, timestamps=t, bins=12
    )
    weights = rmtl.loss_weights(X, Y)
    assert display.ax_.shape == (2,)
    assert len(display.figure_.axes) == 2
    hist_ax, pos_ax = display.ax_
    assert [t.get_text() for t in hist_ax.get_legend().get_texts()] == [
        "click",
        "purchase",
    ]
    assert hist_ax.get_xlabel() == "loss weight"
    edges = np.histogram_bin_edges(weights, bins=12)
    for k, (counts, bins, _patches) in enumerate(display.hist_):
        np.testing.assert_array_equal(bins, edges)
        np.testing.assert_array_equal(counts, np.histogram(weights[:, k], edges)[0])

    # Reference: position = rank of the row's time within its session.
    frame = pd.DataFrame({"s": s, "t": t, "click": weights[:, 0]})
    frame["purchase"] = weights[:, 1]
    frame["position"] = frame.groupby("s")["t"].rank(method="first").astype(int)
    reference = frame.groupby("position")[["click", "purchase"]].mean()
    reference = reference.loc[reference.index <= 20]
    assert [line.get_label() for line in display.lines_] == ["click", "purchase"]
    assert pos_ax.get_lines() == display.lines_
    for line, task in zip(display.lines_, ["click", "purchase"], strict=True):
        x, y = _data(line)
        np.testing.assert_array_equal(x, reference.index)
        np.testing.assert_allclose(y, reference[task])
    pd.testing.assert_frame_equal(
        display.mean_by_position_, reference, check_names=False
    )
    assert display.rows_by_position_.sum() == (frame["position"] <= 20).sum()


def test_loss_weights_display_max_position_and_no_sessions(rmtl, sessions):
    X, Y, s, t = sessions
    display = LossWeightsDisplay.from_estimator(
        rmtl, X, Y, session_ids=s, timestamps=t, max_position=3
    )
    assert list(display.mean_by_position_.index) == [1, 2, 3]
    no_sessions = LossWeightsDisplay.from_estimator(rmtl, X, Y)
    assert list(no_sessions.mean_by_position_.index) == [1]
    np.testing.assert_allclose(
        no_sessions.mean_by_position_.iloc[0], rmtl.loss_weights(X, Y).mean(axis=0)
    )
    with pytest.raises(ValueError, match="session_ids must be 1-D"):
        LossWeightsDisplay.from_estimator(rmtl, X, Y, session_ids=s[:5])


def test_loss_weights_display_needs_an_rmtl_classifier(mtl, sessions):
    X, Y, _s, _t = sessions
    with pytest.raises(TypeError, match="RMTLClassifier"):
        LossWeightsDisplay.from_estimator(mtl, X, Y)


# -------------------------------------------------------- metric comparison
def test_metric_comparison_bars_hold_the_metrics(mtl, rmtl, sessions):
    X, Y, s, _t = sessions
    estimators = {"MMoE": mtl, "RMTL-MMoE": rmtl}
    display = MetricComparisonDisplay.from_estimators(estimators, X, Y, session_ids=s)
    assert display.ax_.shape == (3,)
    assert display.bars_.shape == (3, 2)
    titles = [ax.get_title() for ax in display.ax_]
    assert titles == [
        "AUC (higher is better)",
        "Logloss (lower is better)",
        "s-Logloss (lower is better)",
    ]
    for ax in display.ax_:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["click", "purchase"]
        assert len(ax.patches) == 2 * 2  # estimators x tasks
    (legend,) = display.figure_.legends  # one legend above the panels
    assert [t.get_text() for t in legend.get_texts()] == ["MMoE", "RMTL-MMoE"]
    y = Y.to_numpy()
    for j, est in enumerate(estimators.values()):
        proba = est.predict_proba(X)
        expected = [
            per_task_roc_auc(y, proba),
            per_task_log_loss(y, proba),
            session_log_loss(y, proba, session_ids=s),
        ]
        for i in range(3):
            heights = [bar.get_height() for bar in display.bars_[i, j]]
            np.testing.assert_allclose(heights, expected[i])
            np.testing.assert_allclose(display.scores[i, j], expected[i])
    assert len(display.scores_) == 3 * 2 * 2
    # Value labels above the bars.
    assert len(display.ax_[0].texts) == 4


def test_metric_comparison_options_and_errors(mtl, sessions):
    X, Y, s, _t = sessions
    display = MetricComparisonDisplay.from_estimators(
        {"a": mtl}, X, Y.to_numpy(), metrics=["AUC"], annotate=False
    )
    assert display.bars_.shape == (1, 1)
    assert not display.ax_[0].texts
    # On the caller's axes the legend goes into the first panel.
    fig, ax = plt.subplots()
    on_ax = MetricComparisonDisplay.from_estimators(
        {"a": mtl}, X, Y, metrics=["Logloss"], ax=ax
    )
    assert on_ax.figure_ is fig and not fig.legends
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a"]
    # Task names come from the estimator when y has no column names.
    assert display.task_names == ["click", "purchase"]
    gauc = MetricComparisonDisplay.from_estimators(
        {"a": mtl}, X, Y, session_ids=s, metrics="GAUC"
    )
    assert gauc.ax_[0].get_title() == "GAUC (higher is better)"
    # The scorer names of the metric registry name the same metrics.
    by_scorer = MetricComparisonDisplay.from_estimators(
        {"a": mtl}, X, Y, session_ids=s, metrics="group_roc_auc"
    )
    np.testing.assert_array_equal(by_scorer.scores, gauc.scores)
    assert by_scorer.ax_[0].get_title() == "group_roc_auc (higher is better)"
    with pytest.raises(ValueError, match="need session_ids"):
        MetricComparisonDisplay.from_estimators({"a": mtl}, X, Y)
    with pytest.raises(ValueError, match="not supported"):
        MetricComparisonDisplay.from_estimators({"a": mtl}, X, Y, metrics=["F1"])
    with pytest.raises(TypeError, match="dict"):
        MetricComparisonDisplay.from_estimators([mtl], X, Y, metrics=["AUC"])
    with pytest.raises(ValueError, match="did not see in fit"):
        MetricComparisonDisplay.from_estimators(
            {"a": mtl}, X, Y.replace({1: 2}), metrics=["AUC"]
        )


# ------------------------------------------------------ optional dependency
def test_plotting_imports_without_matplotlib_and_says_how_to_install(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    monkeypatch.delitem(sys.modules, "sklearn_rmtl.plotting")
    plotting = importlib.import_module("sklearn_rmtl.plotting")
    history = {"pretrain": [{"epoch": 1, "train_loss": 0.5}]}
    message = r'needs matplotlib.*pip install "sklearn-rmtl\[plot\]"'
    with pytest.raises(ImportError, match=message):
        plotting.TrainingCurvesDisplay(history=history).plot()
    with pytest.raises(ImportError, match=message):
        plotting.LossWeightsDisplay(
            weights=np.ones((2, 1)), positions=np.zeros(2, int), task_names=["a"]
        ).plot()
    with pytest.raises(ImportError, match=message):
        plotting.MetricComparisonDisplay(
            scores=np.ones((1, 1, 1)),
            metric_names=["AUC"],
            estimator_names=["a"],
            task_names=["t"],
        ).plot()


# --------------------------------------------------------------- docstrings
def _public_names():
    from sklearn_rmtl import plotting

    for name in plotting.__all__:
        obj = getattr(plotting, name)
        yield f"{obj.__module__}.{obj.__qualname__}"
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            if inspect.isfunction(member) or isinstance(member, classmethod):
                yield f"{obj.__module__}.{obj.__qualname__}.{attr}"


@pytest.mark.parametrize("name", sorted(_public_names()))
def test_docstring(name):
    # The checks of tests/test_docstrings.py.
    validate = pytest.importorskip("numpydoc.validate").validate
    checked = {"GL08", "PR01", "PR02", "PR03", "PR07", "RT01", "SS01", "SS03", "SS05"}
    errors = [(c, m) for c, m in validate(name)["errors"] if c in checked]
    assert not errors, f"{name}: {errors}"
