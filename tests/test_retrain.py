"""``retrain_on_all``: early stopping chooses a length, all rows are trained on."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMALL, make_session_data

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.cli import main as cli_main
from sklearn_rmtl.persistence import load, save

#: One batch holds every row, so an epoch is one step on the fit part and on
#: all rows alike.
ONE_BATCH = {
    "backbone": "sharedbottom",
    "backbone_params": SMALL,
    "batch_size": 4096,
    "lr": 1e-2,
    "max_epochs": 12,
    "n_iter_no_change": 2,
    "validation_fraction": 0.3,
    "random_state": 0,
}
RMTL_FAST = {
    **ONE_BATCH,
    "critic": SessionCritic(hidden_dims=(16,), max_epochs=2),
    "refit_max_epochs": 4,
    "refit_lr": 1e-2,
}


@pytest.fixture(scope="module")
def sessions():
    return make_session_data(n_sessions=120, seed=0)


@pytest.fixture(scope="module")
def retrained(sessions):
    X, Y, _s, t = sessions
    return MTLClassifier(**ONE_BATCH, retrain_on_all=True).fit(X, Y, timestamps=t)


def test_retraining_replays_the_chosen_steps_on_all_rows(sessions, retrained):
    X, Y, _s, t = sessions
    best_step = retrained.history_["pretrain"][-1]["best_step"]
    assert retrained.history_["pretrain_all"][-1]["steps"] == best_step
    assert len(retrained.history_["pretrain_all"]) == best_step  # one step an epoch
    # The same as training on every row for that many epochs from the start.
    direct = MTLClassifier(
        **{**ONE_BATCH, "max_epochs": best_step}, early_stopping=False
    ).fit(X, Y, timestamps=t)
    np.testing.assert_allclose(
        retrained.predict_proba(X), direct.predict_proba(X), rtol=0, atol=1e-6
    )
    held_out = MTLClassifier(**ONE_BATCH).fit(X, Y, timestamps=t)
    assert held_out.history_.keys() == {"pretrain"}
    assert np.abs(held_out.predict_proba(X) - retrained.predict_proba(X)).max() > 1e-3


def test_steps_inside_an_epoch(sessions):
    """A chosen length that ends inside an epoch of all rows stops there."""
    X, Y, _s, t = sessions
    est = MTLClassifier(
        **{**ONE_BATCH, "batch_size": 64}, validation_interval=0.5, retrain_on_all=True
    ).fit(X, Y, timestamps=t)
    n_fit = len(X) - round(0.3 * len(X))
    best = est.history_["pretrain"][-1]
    assert best["best_step"] == round(best["best_at"] * -(-n_fit // 64))
    assert est.history_["pretrain_all"][-1]["steps"] == best["best_step"]


def test_without_early_stopping_nothing_changes(sessions):
    X, Y, _s, t = sessions
    kwargs = {**ONE_BATCH, "max_epochs": 3, "early_stopping": False}
    plain = MTLClassifier(**kwargs).fit(X, Y, timestamps=t)
    retrained = MTLClassifier(**kwargs, retrain_on_all=True).fit(X, Y, timestamps=t)
    np.testing.assert_array_equal(plain.predict_proba(X), retrained.predict_proba(X))
    assert retrained.history_.keys() == {"pretrain"}


def test_rmtl_retrains_pretraining_and_refit(sessions):
    X, Y, s, t = sessions
    est = RMTLClassifier(**RMTL_FAST, retrain_on_all=True).fit(
        X, Y, session_ids=s, timestamps=t
    )
    history = est.history_
    assert history["pretrain_all"][-1]["steps"] == history["pretrain"][-1]["best_step"]
    refit_steps = history["refit"][-1]["best_step"]
    if refit_steps:
        assert history["refit_all"][-1]["steps"] == refit_steps
    else:  # the pretrained weights were kept: no refit step on all rows
        assert history["refit_all"] == []
    # Choosing with the actor's held-out network: RMTL on the same fit part
    # without retraining refits the same number of steps.
    held_out = RMTLClassifier(**RMTL_FAST).fit(X, Y, session_ids=s, timestamps=t)
    for a, b in zip(held_out.history_["refit"], history["refit"], strict=True):
        assert {**a, "dur": 0} == {**b, "dur": 0}


def test_rmtl_given_a_retrained_actor_chooses_with_its_held_out_network(
    sessions, retrained
):
    X, Y, s, t = sessions
    kwargs = {k: v for k, v in RMTL_FAST.items() if k not in ("backbone",)}
    own = RMTLClassifier(**RMTL_FAST, retrain_on_all=True).fit(
        X, Y, session_ids=s, timestamps=t
    )
    given = RMTLClassifier(**kwargs, actor=retrained, retrain_on_all=True).fit(
        X, Y, session_ids=s, timestamps=t
    )
    np.testing.assert_array_equal(own.predict_proba(X), given.predict_proba(X))
    # Without retraining, RMTL refits the held-out network, as with an actor
    # that was never retrained.
    plain = MTLClassifier(**ONE_BATCH).fit(X, Y, timestamps=t)
    a = RMTLClassifier(**kwargs, actor=retrained).fit(X, Y, session_ids=s, timestamps=t)
    b = RMTLClassifier(**kwargs, actor=plain).fit(X, Y, session_ids=s, timestamps=t)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_a_loaded_retrained_actor_is_refused(sessions, retrained, tmp_path):
    X, Y, s, t = sessions
    save(retrained, tmp_path / "actor.rmtl")
    actor = load(tmp_path / "actor.rmtl")
    np.testing.assert_array_equal(actor.predict_proba(X), retrained.predict_proba(X))
    kwargs = {k: v for k, v in RMTL_FAST.items() if k != "backbone"}
    with pytest.raises(ValueError, match="retrain_on_all=False"):
        RMTLClassifier(**kwargs, actor=actor).fit(X, Y, session_ids=s, timestamps=t)


def test_actor_update_is_refused(sessions):
    X, Y, s, t = sessions
    est = RMTLClassifier(**RMTL_FAST, retrain_on_all=True, actor_update=True)
    with pytest.raises(ValueError, match="actor_update"):
        est.fit(X, Y, session_ids=s, timestamps=t)
    assert not hasattr(est, "net_")


def test_cli_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["reproduce", "--help"])
    assert exc.value.code == 0
    assert "--retrain-on-all" in capsys.readouterr().out


def test_training_curves_show_the_retraining(retrained):
    pytest.importorskip("matplotlib")
    from sklearn_rmtl.plotting import TrainingCurvesDisplay

    display = TrainingCurvesDisplay.from_estimator(retrained)
    assert display.phases_ == ["pretrain", "pretrain_all"]
    labels = {k: [line.get_label() for line in v] for k, v in display.lines_.items()}
    assert labels == {
        "pretrain": ["train loss", "validation loss"],
        "pretrain_all": ["train loss"],
    }
