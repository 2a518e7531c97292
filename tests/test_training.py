"""Validation checks inside epochs, checkpoint selection and the refit's settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL, make_session_data
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic, _training
from sklearn_rmtl._training import (
    SELECTION_METRICS,
    SELECTIONS,
    Selection,
    SelectionOption,
    check_selection,
)
from sklearn_rmtl.metrics import METRICS, per_task_log_loss, per_task_roc_auc

FAST = {
    "backbone": "sharedbottom",
    "backbone_params": SMALL,
    "critic": SessionCritic(hidden_dims=(16,), max_epochs=3),
    "max_epochs": 3,
    "refit_max_epochs": 2,
    "batch_size": 128,
    "random_state": 0,
}
#: A small MTLClassifier; tests add what they vary.
MTL_FAST = {
    "backbone": "sharedbottom",
    "backbone_params": SMALL,
    "batch_size": 128,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def sessions():
    return make_session_data(n_sessions=120, seed=0)


@pytest.fixture(scope="module")
def pretrained(sessions):
    X, Y, _s, t = sessions
    return MTLClassifier(**MTL_FAST, max_epochs=3).fit(X, Y, timestamps=t)


def _held_out(est, X, Y, t):
    """The rows early stopping held out: the latest validation_fraction."""
    n_valid = round(est.validation_fraction * len(X))
    rows = np.argsort(np.asarray(t), kind="stable")[-n_valid:]
    return X.iloc[rows], Y.iloc[rows]


def _valid_bce(est, X, Y, t):
    Xv, Yv = _held_out(est, X, Y, t)
    return float(per_task_log_loss(Yv, est.predict_proba(Xv)).mean())


class _Sabotage(Callback):
    """Wreck the network's output after a given training batch of epoch 1."""

    def __init__(self, after_batch):
        self.after_batch = after_batch

    def on_epoch_begin(self, net, **kwargs):
        self.batch = 0

    def on_batch_end(self, net, training=False, **kwargs):
        self.batch += 1
        if len(net.history) == 1 and self.batch == self.after_batch:
            with torch.no_grad():
                head = net.module_.backbone.towers.head
                head.bias.add_(50.0)  # predict 1 everywhere: a huge BCE


def test_validation_interval_keeps_the_best_check_inside_an_epoch(sessions):
    X, Y, _s, t = sessions
    n_train = len(X) - round(0.1 * len(X))
    n_batches = -(-n_train // 128)
    params = {
        **MTL_FAST,
        "max_epochs": 1,
        "callbacks": [_Sabotage(after_batch=n_batches - 1)],
    }
    # Checked at epoch ends only, the sabotaged end of epoch 1 is all there is.
    per_epoch = MTLClassifier(**params).fit(X, Y, timestamps=t)
    assert per_epoch.history_["pretrain"][-1]["best_at"] == 1.0
    quarter = MTLClassifier(validation_interval=0.25, **params).fit(X, Y, timestamps=t)
    best_at = quarter.history_["pretrain"][-1]["best_at"]
    assert 0 < best_at < 1 and (best_at * 4) % 1 == 0  # a quarter-epoch check
    # The kept weights are the pre-sabotage ones: far better than the end's.
    end_loss = quarter.history_["pretrain"][-1]["valid_loss"]
    assert _valid_bce(quarter, X, Y, t) < 0.5 * end_loss
    assert _valid_bce(per_epoch, X, Y, t) > 10 * _valid_bce(quarter, X, Y, t)


def test_patience_counts_epochs_with_checks_inside_them(sessions):
    X, Y, _s, t = sessions
    params = {
        **MTL_FAST,
        "lr": 3e-2,  # overfits fast, so early stopping ends the fit
        "max_epochs": 30,
        "n_iter_no_change": 2,
    }
    est = MTLClassifier(validation_interval=0.25, **params).fit(X, Y, timestamps=t)
    history = est.history_["pretrain"]
    assert len(history) < 30
    # It stopped 2 epochs (8 checks) after the best one, not 2 checks after.
    assert len(history) - history[-1]["best_at"] >= 2 - 0.25


def test_refit_lr_changes_only_the_refit(sessions, pretrained):
    X, Y, s, t = sessions
    fits = [
        RMTLClassifier(**{**FAST, "refit_lr": lr, "refit_keep_pretrained": False}).fit(
            X, Y, session_ids=s, timestamps=t
        )
        for lr in (1e-4, 3e-3)
    ]
    slow, fast = (f.history_ for f in fits)

    def losses(rows):
        return [(r["train_loss"], r.get("valid_loss")) for r in rows]

    assert losses(slow["pretrain"]) == losses(fast["pretrain"])
    assert slow["critic"][-1]["td_loss"] == fast["critic"][-1]["td_loss"]
    assert slow["refit"][0]["train_loss"] != fast["refit"][0]["train_loss"]


def test_pretrained_weights_are_a_candidate_only_when_asked(sessions, pretrained):
    X, Y, s, t = sessions
    # A refit learning rate far too large makes every refit check worse.
    common = {**FAST, "refit_lr": 5.0}
    kept = RMTLClassifier(**{**common, "actor": pretrained})
    kept.fit(X, Y, session_ids=s, timestamps=t)
    assert kept.refit_improved_ is False
    assert kept.history_["refit"][-1]["best_at"] == 0.0
    np.testing.assert_allclose(
        kept.predict_proba(X), pretrained.predict_proba(X), rtol=1e-6
    )
    refit = RMTLClassifier(
        **{**common, "actor": pretrained, "refit_keep_pretrained": False}
    ).fit(X, Y, session_ids=s, timestamps=t)
    assert refit.refit_improved_ is True
    assert refit.history_["refit"][-1]["best_at"] >= 1.0
    assert not np.allclose(refit.predict_proba(X), pretrained.predict_proba(X))


@pytest.mark.parametrize("selection", ["auc", "gauc"])
def test_refit_validation_metric_by_ranking_metric(sessions, pretrained, selection):
    X, Y, s, t = sessions
    est = RMTLClassifier(
        **{
            **FAST,
            "actor": pretrained,
            "refit_lr": 1e-2,
            "refit_max_epochs": 4,
            "refit_validation_interval": 0.5,
            "refit_validation_metric": selection,
        }
    ).fit(X, Y, session_ids=s, timestamps=t)
    history = est.history_["refit"]
    key = f"valid_{selection}"
    assert all(key in row for row in history)
    if selection == "auc":
        # The kept weights score the best AUC of the checks on the held-out rows.
        Xv, Yv = _held_out(est, X, Y, t)
        kept = float(per_task_roc_auc(Yv, est.predict_proba(Xv)).mean())
        assert kept >= max(row[key] for row in history) - 1e-9


def test_gauc_selection_needs_sessions(sessions):
    X, Y, _s, t = sessions
    est = RMTLClassifier(**{**FAST, "refit_validation_metric": "gauc"})
    with pytest.raises(ValueError, match="needs session_ids"):
        est.fit(X, Y, timestamps=t)
    assert not hasattr(est, "net_")


def test_label_mean_control_uses_fixed_per_label_weights(sessions, pretrained):
    X, Y, s, t = sessions
    rmtl = RMTLClassifier(**{**FAST, "actor": pretrained}).fit(
        X, Y, session_ids=s, timestamps=t
    )
    control = RMTLClassifier(
        **{
            **FAST,
            "actor": pretrained,
            "weighting": "label_mean",
            "critic": rmtl.critic_,
        }
    ).fit(X, Y, session_ids=s, timestamps=t)
    means = control.label_weights_
    assert means.shape == (2, 2) and (means >= 1).all()
    assert rmtl.label_weights_ is None
    # The means are RMTL's weights at the pretrained actor, per task and label,
    # over the rows the refit trains on.
    at_start = {"actor": pretrained, "critic": rmtl.critic_, "refit_max_epochs": 0}
    rmtl_at_start = RMTLClassifier(**{**FAST, **at_start}).fit(
        X, Y, session_ids=s, timestamps=t
    )
    n_valid = round(0.1 * len(X))
    train_rows = np.argsort(np.asarray(t), kind="stable")[:-n_valid]
    w = rmtl_at_start.loss_weights(X.iloc[train_rows], Y.iloc[train_rows])
    y = Y.iloc[train_rows].to_numpy()
    for k in range(2):
        for label in (0, 1):
            expected = w[y[:, k] == label, k].mean()
            assert means[k, label] == pytest.approx(expected, rel=1e-4)
    weights = control.loss_weights(X, Y)
    np.testing.assert_allclose(weights, np.where(Y == 1, means[:, 1], means[:, 0]))


def test_dple_with_behaviour_cloning_stays_calibrated(sessions, pretrained):
    X, Y, s, t = sessions
    params = {
        **FAST,
        "actor": pretrained,
        "actor_update": True,
        "weighting": "constant",
        "refit_max_epochs": 0,
        "critic": SessionCritic(hidden_dims=(16,), max_epochs=6),
    }
    pure_q = RMTLClassifier(**{**params, "bc_alpha": None}).fit(
        X, Y, session_ids=s, timestamps=t
    )
    with_bc = RMTLClassifier(**params).fit(X, Y, session_ids=s, timestamps=t)
    loss = {
        name: float(per_task_log_loss(Y, est.predict_proba(X)).mean())
        for name, est in {"q": pure_q, "bc": with_bc}.items()
    }
    base = float(per_task_log_loss(Y, pretrained.predict_proba(X)).mean())
    assert loss["bc"] < loss["q"]
    assert loss["bc"] < 1.5 * base
    assert not np.allclose(with_bc.predict_proba(X), pretrained.predict_proba(X))


def test_label_mean_weights_survive_the_safe_format(sessions, pretrained, tmp_path):
    from sklearn_rmtl import persistence

    X, Y, s, t = sessions
    control = RMTLClassifier(
        **{**FAST, "actor": pretrained, "weighting": "label_mean"}
    ).fit(X, Y, session_ids=s, timestamps=t)
    persistence.save(control, tmp_path / "model.rmtl")
    loaded = persistence.load(tmp_path / "model.rmtl")
    np.testing.assert_array_equal(loaded.label_weights_, control.label_weights_)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), control.loss_weights(X, Y))


def test_pretraining_validation_metric(sessions):
    X, Y, s, t = sessions
    params = {**MTL_FAST, "max_epochs": 4}
    by_auc = MTLClassifier(validation_metric="auc", **params).fit(X, Y, timestamps=t)
    history = by_auc.history_["pretrain"]
    assert all("valid_auc" in row for row in history)
    Xv, Yv = _held_out(by_auc, X, Y, t)
    kept = float(per_task_roc_auc(Yv, by_auc.predict_proba(Xv)).mean())
    assert kept == pytest.approx(max(row["valid_auc"] for row in history), abs=1e-6)
    by_loss = MTLClassifier(**params).fit(X, Y, timestamps=t)
    assert "valid_auc" not in by_loss.history_["pretrain"][0]
    with pytest.raises(ValueError, match=r"validation_metric='gauc'.*session_ids"):
        MTLClassifier(validation_metric="gauc", **params).fit(X, Y, timestamps=t)
    by_gauc = MTLClassifier(validation_metric="gauc", **params)
    by_gauc.fit(X, Y, session_ids=s, timestamps=t)
    assert "valid_gauc" in by_gauc.history_["pretrain"][0]


def test_validation_metric_of_one_task_selects_by_that_task(sessions):
    X, Y, _s, t = sessions
    task = str(Y.columns[1])
    est = MTLClassifier(**MTL_FAST, max_epochs=4, validation_metric=f"auc:{task}")
    history = est.fit(X, Y, timestamps=t).history_["pretrain"]
    per_task = np.array([row["valid_auc_per_task"] for row in history])
    assert per_task.shape == (len(history), Y.shape[1])
    np.testing.assert_allclose([row["valid_auc"] for row in history], per_task.mean(1))
    Xv, Yv = _held_out(est, X, Y, t)
    kept = per_task_roc_auc(Yv, est.predict_proba(Xv))
    # The kept weights are the epoch with the best AUC of that task, which
    # need not be the one with the best mean.
    assert kept[1] == pytest.approx(per_task[:, 1].max(), abs=1e-6)
    assert history[-1]["best_at"] == 1 + int(np.argmax(per_task[:, 1]))


def test_validation_loss_per_task_is_recorded(sessions):
    X, Y, _s, t = sessions
    est = MTLClassifier(**MTL_FAST, max_epochs=2).fit(X, Y, timestamps=t)
    last = est.history_["pretrain"][-1]
    Xv, Yv = _held_out(est, X, Y, t)
    reference = per_task_log_loss(Yv, est.predict_proba(Xv))
    np.testing.assert_allclose(last["valid_loss_per_task"], reference, rtol=1e-4)
    assert last["valid_loss"] == pytest.approx(np.mean(last["valid_loss_per_task"]))


def test_validation_metric_errors_name_the_tasks(sessions):
    X, Y, _s, t = sessions
    with pytest.raises(ValueError, match=r"names task 'nope'.*tasks of y are \["):
        MTLClassifier(**MTL_FAST, validation_metric="auc:nope").fit(X, Y)
    with pytest.raises(ValueError, match=r"validation_metric.*'<metric>:<task name>'"):
        MTLClassifier(**MTL_FAST, validation_metric="f1").fit(X, Y)
    task = str(Y.columns[0])
    with pytest.raises(ValueError, match=rf"'gauc:{task}'.*session_ids.*'auc:{task}'"):
        RMTLClassifier(**FAST, refit_validation_metric=f"gauc:{task}").fit(
            X, Y, timestamps=t
        )


def test_selection_options_are_the_metric_registrys(sessions):
    # "loss" and every metric of the registry with a selection name, no other.
    selectable = {
        spec.selection_name: spec
        for spec in METRICS.values()
        if spec.selection_name is not None
    }
    assert set(selectable) == {"auc", "gauc"}
    assert selectable == SELECTION_METRICS
    assert ("loss", *selectable) == SELECTIONS
    option = SelectionOption()
    for name, spec in selectable.items():
        assert option.is_satisfied_by(name) and option.is_satisfied_by(f"{name}:buy")
        selection = check_selection("validation_metric", f"{name}:buy", ["a", "buy"])
        assert selection == Selection(name, 1)
        assert Selection(name).greater_is_better == spec.greater_is_better
        assert Selection(name).needs_sessions == spec.needs_sessions
    assert not Selection("loss").greater_is_better
    assert not Selection("loss").needs_sessions
    assert not option.is_satisfied_by("roc_auc") and not option.is_satisfied_by("f1")
    # A bad value's error lists every option and what it means.
    X, Y, _s, _t = sessions
    for est in (
        MTLClassifier(validation_metric="f1"),
        RMTLClassifier(refit_validation_metric="f1"),
    ):
        with pytest.raises(InvalidParameterError) as info:
            est.fit(X, Y)
        message = str(info.value)
        assert "'<metric>:<task name>'" in message
        for name in SELECTIONS:
            assert repr(name) in message
        for spec in selectable.values():
            assert spec.display_name in message
        assert "'gauc': GAUC, needs session_ids" in message


@pytest.fixture
def logloss_selects(monkeypatch):
    """The registry's Logloss registered with a selection name, "logloss"."""
    spec = METRICS["log_loss"]._replace(selection_name="logloss")
    monkeypatch.setitem(METRICS, "log_loss", spec)
    # What _training derives from the registry when it is imported.
    derived = {s.selection_name: s for s in METRICS.values() if s.selection_name}
    monkeypatch.setattr(_training, "SELECTION_METRICS", derived)
    monkeypatch.setattr(_training, "SELECTIONS", ("loss", *derived))
    return spec


def test_a_registered_metric_selects_in_its_direction(sessions, logloss_selects):
    # Early stopping reads the registry entry: its function, its name in the
    # history and its direction (lower is better for a loss).
    assert "'logloss': Logloss" in str(SelectionOption())
    X, Y, _s, t = sessions
    est = MTLClassifier(**MTL_FAST, max_epochs=4, validation_metric="logloss")
    history = est.fit(X, Y, timestamps=t).history_["pretrain"]
    values = [row["valid_logloss"] for row in history]
    per_task = np.array([row["valid_logloss_per_task"] for row in history])
    np.testing.assert_allclose(values, per_task.mean(1))
    assert min(values) < max(values)
    assert history[-1]["best_at"] == 1 + int(np.argmin(values))
    Xv, Yv = _held_out(est, X, Y, t)
    kept = float(per_task_log_loss(Yv, est.predict_proba(Xv)).mean())
    assert kept == pytest.approx(min(values), rel=1e-5)


class _RecordsLearningRate(Callback):
    def on_epoch_end(self, net, **kwargs):
        net.history.record("seen_lr", np.float32(net.lr))


class _RecordsAnObject(Callback):
    def on_epoch_end(self, net, **kwargs):
        net.history.record("thing", object())


def test_user_callback_records_reach_history(sessions, tmp_path):
    from skorch.callbacks import EpochScoring

    from sklearn_rmtl import persistence

    X, Y, s, t = sessions
    scoring = EpochScoring(
        lambda net, X, y: float(np.mean(net.predict_proba(X))),
        on_train=True,
        use_caching=False,
        name="mean_logit",
    )
    callbacks = [scoring, _RecordsLearningRate()]
    est = RMTLClassifier(**FAST, callbacks=callbacks).fit(
        X, Y, session_ids=s, timestamps=t
    )
    for phase in ("pretrain", "refit"):
        rows = est.history_[phase]
        assert all(isinstance(r["mean_logit"], float) for r in rows)
        assert all(isinstance(r["seen_lr"], float) for r in rows)
        assert "batches" not in rows[0]
    assert est.history_["refit"][0]["seen_lr"] == pytest.approx(est.refit_lr)
    persistence.save(est.set_params(callbacks=None), tmp_path / "m.rmtl")
    assert persistence.load(tmp_path / "m.rmtl").history_ == est.history_
    with pytest.raises(TypeError, match=r"recorded 'thing' = object.*float\(score\)"):
        MTLClassifier(**MTL_FAST, max_epochs=1, callbacks=[_RecordsAnObject()]).fit(
            X, Y
        )


class _Reader(Callback):
    """What a user's callback sees at each epoch's end."""

    def initialize(self):
        self.rows = []
        return self

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        self.rows.append(
            (row["epoch"], row.get("valid_loss"), row.get("valid_loss_best"))
        )


def test_user_callbacks_see_each_epochs_validation_records(sessions, tmp_path):
    """valid_loss is recorded before the user's callbacks run, the last epoch
    included, and skorch's Checkpoint can monitor valid_loss_best."""
    from skorch.callbacks import Checkpoint

    X, Y, _s, t = sessions
    reader = _Reader()
    checkpoint = Checkpoint(
        monitor="valid_loss_best",
        dirname=str(tmp_path),
        f_optimizer=None,
        f_criterion=None,
        f_history=None,
    )
    clf = MTLClassifier(
        **{**MTL_FAST, "lr": 0.05},
        max_epochs=30,
        n_iter_no_change=1,
        callbacks=[reader, checkpoint],
    ).fit(X, Y, timestamps=t)
    history = clf.history_["pretrain"]
    assert len(history) < 30  # early stopping ended it
    assert reader.rows == [
        (row["epoch"], row["valid_loss"], row["valid_loss_best"]) for row in history
    ]
    losses = [row["valid_loss"] for row in history]
    assert [row["valid_loss_best"] for row in history] == [
        loss < min(losses[:i], default=np.inf) for i, loss in enumerate(losses)
    ]
    assert [row["event_cp"] for row in history] == [
        row["valid_loss_best"] for row in history
    ]
    assert (tmp_path / "params.pt").exists()
