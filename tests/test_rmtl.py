"""RMTLClassifier end to end: phases, weighting variants, transfer, seeds."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL, make_session_data, tiny_critic_setup
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._rows import ArrayRows
from sklearn_rmtl._skorch_net import MultiTaskNet

CRITIC = {"hidden_dims": (16,), "max_epochs": 6}
FAST = {
    "backbone_params": SMALL,
    "critic": SessionCritic(**CRITIC),
    "max_epochs": 4,
    "refit_max_epochs": 3,
    "batch_size": 128,
    "random_state": 0,
}


def critic(**settings):
    """FAST's critic settings with ``settings`` on top."""
    return SessionCritic(**{**CRITIC, **settings})


@pytest.fixture(scope="module")
def sessions():
    return make_session_data()


@pytest.fixture(scope="module")
def fitted(sessions):
    X, Y, s, t = sessions
    return RMTLClassifier(backbone="mmoe", **FAST).fit(
        X, Y, session_ids=s, timestamps=t
    )


def test_phases_and_attributes(fitted, sessions):
    X, Y, _s, _t = sessions
    assert set(fitted.history_) == {"pretrain", "critic", "refit"}
    assert 1 <= len(fitted.history_["critic"]) <= 6
    assert {"epoch", "td_loss", "dur"} <= set(fitted.history_["critic"][0])
    assert fitted.n_iter_ == sum(len(v) for v in fitted.history_.values())
    assert isinstance(fitted.critic_, SessionCritic)
    assert list(fitted.critic_.task_names_) == ["click", "purchase"]
    assert fitted.critic_.encoder_ is fitted.encoder_
    # The settings' clone was fitted; the parameter is left as given.
    assert fitted.critic_.get_params() == FAST["critic"].get_params()
    assert not FAST["critic"].__sklearn_is_fitted__()
    assert fitted.critic_.history_ == fitted.history_["critic"]
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 2)
    assert roc_auc_score(Y["click"], proba[:, 0]) > 0.7


def test_rmtl_weights_are_at_least_one_and_vary(fitted, sessions):
    X, Y, s, t = sessions
    w = fitted.loss_weights(X, Y, session_ids=s, timestamps=t)
    assert w.shape == (len(X), 2)
    assert (w >= 1).all()
    assert w.std(axis=0).min() > 1e-3
    # Longer remaining sessions accumulate more (negative) reward: rows early
    # in a session get larger weights than the last rows.
    first = X["position"].to_numpy() == 0
    assert w[first].mean() > w[~first].mean()


def test_loss_weights_follow_row_order(fitted, sessions):
    X, Y, _s, _t = sessions
    w = fitted.loss_weights(X, Y)
    perm = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(fitted.loss_weights(X.iloc[perm], Y.iloc[perm]), w[perm])


def test_loss_weights_validate_labels(fitted, sessions):
    X, Y, _s, _t = sessions
    with pytest.raises(ValueError, match=r"not among the estimator.s classes_"):
        fitted.loss_weights(X, Y.replace({1: 2}))
    with pytest.raises(ValueError, match="3 task columns"):
        fitted.loss_weights(X, Y.assign(extra=0))


@pytest.mark.parametrize("weighting", ["constant", "label_q", "neg_q"])
def test_ablation_variants_train(sessions, weighting):
    X, Y, s, t = sessions
    est = RMTLClassifier(backbone="sharedbottom", weighting=weighting, **FAST)
    est.fit(X, Y, session_ids=s, timestamps=t)
    w = est.loss_weights(X, Y)
    if weighting == "constant":
        assert est.critic_ is None and est.history_["critic"] == []
        np.testing.assert_array_equal(w, 1.0)
    elif weighting == "label_q":
        np.testing.assert_array_equal(w[Y.to_numpy() == 0], 1.0)
        assert (w[Y.to_numpy() == 1] > 1).all()
    else:
        assert (w > 0).all()
    assert np.isfinite(est.predict_proba(X)).all()


def test_zero_lambda_equals_constant_weighting(sessions):
    """w = 1 - 0 * Q = 1: the critic-weighted refit reduces to plain training."""
    X, Y, s, _t = sessions
    constant = RMTLClassifier(weighting="constant", **FAST).fit(X, Y, session_ids=s)
    zero = RMTLClassifier(q_lambda=0.0, **FAST).fit(X, Y, session_ids=s)
    np.testing.assert_allclose(
        zero.predict_proba(X), constant.predict_proba(X), rtol=1e-5
    )
    weighted = RMTLClassifier(**FAST).fit(X, Y, session_ids=s)
    assert not np.allclose(weighted.predict_proba(X), constant.predict_proba(X))


def test_constant_weighting_is_continued_baseline_training(sessions):
    X, Y, _s, _t = sessions
    common = {
        k: v for k, v in FAST.items() if "critic" not in k and k != "refit_max_epochs"
    }
    rmtl = RMTLClassifier(weighting="constant", refit_max_epochs=2, **common).fit(X, Y)
    mtl = MTLClassifier(backbone="ple", **common).fit(X, Y)
    assert (
        rmtl.history_["pretrain"][0]["train_loss"]
        == mtl.history_["pretrain"][0]["train_loss"]
    )
    # Continue the baseline by hand, with the refit's seed.
    data = mtl._prepare(ArrayRows(X, Y))
    data.set_encoder(mtl.encoder_)
    params, task_weights = mtl._check_params(2)
    net = mtl._train_net(
        data,
        MultiTaskNet,
        params,
        task_weights,
        max_epochs=2,
        seed_offset=2,
        init_module=copy.deepcopy(mtl.net_.module_),
        lr=rmtl.refit_lr,
        interval=rmtl.refit_validation_interval,
        start_is_candidate=rmtl.refit_keep_pretrained,
    )
    mtl.net_ = net
    np.testing.assert_allclose(rmtl.predict_proba(X), mtl.predict_proba(X), rtol=1e-5)


def test_random_state_reproducible(sessions, fitted):
    X, Y, s, t = sessions
    again = RMTLClassifier(backbone="mmoe", **FAST).fit(
        X, Y, session_ids=s, timestamps=t
    )
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(again.loss_weights(X, Y), fitted.loss_weights(X, Y))


def test_input_row_order_does_not_change_the_transitions(sessions):
    """Critic training sees the same transitions whatever the row order."""
    X, Y, s, t = sessions
    params = {
        **FAST,
        "critic": critic(max_epochs=1),
        "max_epochs": 1,
        "batch_size": 10**6,
        "early_stopping": False,
        "backbone_params": {**SMALL, "dropout": 0.0},
    }
    a = RMTLClassifier(backbone="sharedbottom", **params).fit(
        X, Y, session_ids=s, timestamps=t
    )
    perm = np.random.default_rng(2).permutation(len(X))
    b = RMTLClassifier(backbone="sharedbottom", **params).fit(
        X.iloc[perm], Y.iloc[perm], session_ids=s[perm], timestamps=t[perm]
    )
    # Full-batch steps: only the order inside the batch differs (float sums).
    assert a.history_["critic"][0]["td_loss"] == pytest.approx(
        b.history_["critic"][0]["td_loss"], rel=1e-3
    )


def test_without_sessions_warns(sessions):
    X, Y, _s, _t = sessions
    with pytest.warns(UserWarning, match="session_ids is None"):
        RMTLClassifier(**{**FAST, "critic": critic(max_epochs=1)}).fit(X, Y)


def test_critic_transfer_across_backbones(sessions, fitted):
    X, Y, s, t = sessions
    est = RMTLClassifier(backbone="esmm", **{**FAST, "critic": fitted.critic_})
    est.fit(X, Y, session_ids=s, timestamps=t)
    assert est.history_["critic"] == []
    assert est.critic_ is fitted.critic_
    assert (est.loss_weights(X, Y) >= 1).all()
    # A clone (as in GridSearchCV) transfers the same fitted critics.
    cloned = clone(est)
    assert isinstance(cloned.critic, SessionCritic)
    assert cloned.critic.__sklearn_is_fitted__()
    assert cloned.critic.module_ is fitted.critic_.module_
    assert cloned.critic.get_params() == fitted.critic_.get_params()


def test_critic_none_trains_the_default_critic(sessions):
    X, Y, s, t = sessions
    est = RMTLClassifier(
        backbone="sharedbottom", **{**FAST, "critic": None, "max_epochs": 1}
    )
    assert not any(k.startswith("critic__") for k in est.get_params())
    est.fit(X, Y, session_ids=s, timestamps=t)
    assert est.critic is None
    assert est.critic_.get_params() == SessionCritic().get_params()
    assert est.critic_.module_.hidden_dims == SessionCritic().hidden_dims


def test_unfitted_critic_has_no_critics():
    from sklearn.exceptions import NotFittedError

    spec = SessionCritic()
    assert not spec.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError, match="holds critic settings only"):
        spec.to("cpu")
    assert clone(spec).get_params() == spec.get_params()


def test_critic_transfer_needs_same_features(sessions, fitted):
    X, Y, s, _t = sessions
    est = RMTLClassifier(**{**FAST, "critic": fitted.critic_})
    with pytest.raises(ValueError, match="critic was fitted on other feature columns"):
        est.fit(X.drop(columns="price"), Y, session_ids=s)
    with pytest.raises(ValueError, match="critic was trained for 2 tasks"):
        est.fit(X, Y.assign(extra=Y["click"]), session_ids=s)
    assert not hasattr(est, "net_")


def test_fitted_mtl_backbone_is_the_starting_point(sessions):
    X, Y, s, t = sessions
    mtl = MTLClassifier(
        backbone="sharedbottom", backbone_params=SMALL, max_epochs=3, random_state=0
    ).fit(X, Y)
    before = mtl.predict_proba(X)
    est = RMTLClassifier(actor=mtl, **FAST).fit(X, Y, session_ids=s, timestamps=t)
    np.testing.assert_array_equal(mtl.predict_proba(X), before)  # not modified
    assert est.history_["pretrain"] == mtl.history_["pretrain"]
    assert est.encoder_ is mtl.encoder_
    assert est.backbone_params_ == mtl.backbone_params_


def test_mtl_as_backbone_is_refused_naming_actor(sessions):
    X, Y, s, _t = sessions
    mtl = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, max_epochs=2)
    for est in (
        RMTLClassifier(backbone=mtl, **FAST),
        RMTLClassifier(backbone=mtl, actor=mtl, **FAST),
    ):
        with pytest.raises(InvalidParameterError, match=r"as actor=\.\.\. instead"):
            est.fit(X, Y, session_ids=s)
        assert not hasattr(est, "net_")
    assert not hasattr(mtl, "net_")


def test_unfitted_mtl_backbone_is_fitted_as_pretraining(sessions):
    X, Y, s, _t = sessions
    mtl = MTLClassifier(
        backbone="sharedbottom", backbone_params=SMALL, max_epochs=2, random_state=0
    )
    est = RMTLClassifier(actor=mtl, **FAST).fit(X, Y, session_ids=s)
    assert not hasattr(mtl, "net_")
    assert len(est.history_["pretrain"]) == 2


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        ({}, {"shared": False}),
        ({}, {"double_q": True, "balance_labels": True}),
        ({}, {"behavior_policy": "uniform"}),
        ({"actor_update": True}, {}),
    ],
    ids=["independent", "double_q+balance_labels", "uniform", "actor_update"],
)
def test_critic_options_train(sessions, options, settings):
    X, Y, s, t = sessions
    est = RMTLClassifier(
        backbone="sharedbottom", **{**FAST, **options, "critic": critic(**settings)}
    )
    est.fit(X, Y, session_ids=s, timestamps=t)
    assert (est.loss_weights(X, Y) >= 1).all()
    if options.get("actor_update"):
        assert "actor_loss" in est.history_["critic"][0]
    if settings.get("shared") is False:
        assert len(est.critic_.module_.embeddings) == 2


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"critic": critic(gamma=1.5)}, "'gamma' parameter of SessionCritic"),
        ({"weighting": "softmax"}, "'weighting' parameter"),
        ({"q_lambda": -1.0}, "'q_lambda' parameter"),
        ({"critic": critic(lr=0.0)}, "'lr' parameter of SessionCritic"),
        ({"critic": critic(hidden_dims=(0,))}, "hidden_dims must be"),
        ({"backbone": "esmm", "critic": "nope"}, "'critic' parameter"),
    ],
)
def test_invalid_parameters(sessions, params, match):
    X, Y, s, _t = sessions
    with pytest.raises(ValueError, match=match):
        RMTLClassifier(**params).fit(X, Y, session_ids=s)


def test_pickle_round_trip(fitted, sessions):
    X, Y, _s, _t = sessions
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(again.loss_weights(X, Y), fitted.loss_weights(X, Y))


def test_ddpg_baseline_actor_trained_by_q_gradient_only(sessions):
    """refit_max_epochs=0 with actor_update=True: the paper's D-PLE baseline."""
    X, Y, s, t = sessions
    params = {**FAST, "refit_max_epochs": 0}
    ddpg = RMTLClassifier(
        actor_update=True,
        weighting="constant",
        refit_keep_pretrained=False,  # an update is kept, whatever it scores
        **params,
    )
    ddpg.fit(X, Y, session_ids=s, timestamps=t)
    assert ddpg.history_["refit"] == [] and "actor_loss" in ddpg.history_["critic"][0]
    frozen = RMTLClassifier(weighting="constant", **params).fit(X, Y, session_ids=s)
    pretrained_only = MTLClassifier(
        **{k: v for k, v in params.items() if "critic" not in k and "refit" not in k}
    ).fit(X, Y)
    # Without actor updates and refit, the actor is the pretrained network ...
    np.testing.assert_allclose(
        frozen.predict_proba(X), pretrained_only.predict_proba(X), rtol=1e-6
    )
    # ... and the Q-gradient steps moved it.
    assert not np.allclose(ddpg.predict_proba(X), frozen.predict_proba(X))


def test_ddpg_actor_is_selected_on_the_held_out_rows(sessions):
    """D-PLE's actor updates are checked on the held-out rows like a refit."""
    X, Y, s, t = sessions
    params = {
        **FAST,
        "max_epochs": 2,
        "refit_max_epochs": 0,
        "critic": critic(max_epochs=2, tol=0.0),
        "refit_validation_interval": 0.5,
    }
    frozen = RMTLClassifier(weighting="constant", **params)
    frozen.fit(X, Y, session_ids=s, timestamps=t)
    # An actor learning rate far too large (refit_lr sets it) makes every
    # check worse than the pretrained actor, which is then kept ...
    kept = RMTLClassifier(
        actor_update=True, weighting="constant", **{**params, "refit_lr": 5.0}
    ).fit(X, Y, session_ids=s, timestamps=t)
    rows = kept.history_["critic"]
    assert all("actor_valid_loss" in row for row in rows)
    assert rows[-1]["actor_best_at"] == 0.0 and rows[-1]["actor_restored_start"]
    np.testing.assert_allclose(
        kept.predict_proba(X), frozen.predict_proba(X), rtol=1e-6
    )
    # ... unless the pretrained weights are not a candidate: the best check
    # (here after half a critic epoch or later) is kept.
    moved = clone(kept).set_params(refit_keep_pretrained=False)
    moved.fit(X, Y, session_ids=s, timestamps=t)
    assert moved.history_["critic"][-1]["actor_best_at"] >= 0.5
    assert not np.allclose(moved.predict_proba(X), frozen.predict_proba(X))


def test_actor_step_learns_nothing_from_rows_left_out():
    """The held-out rows' labels never reach D-PLE's actor update."""
    from sklearn_rmtl._td import actor_step

    g = torch.Generator().manual_seed(1)
    y01 = (torch.rand(8, 2, generator=g) > 0.5).float()
    rows = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
    flipped = y01.clone()
    flipped[4:] = 1 - flipped[4:]

    def stepped(labels):
        actor, critic, state = tiny_critic_setup()
        optimizer = torch.optim.SGD(actor.parameters(), lr=0.1)
        actor_step(actor, critic, optimizer, state, labels, 2.5, rows=rows)
        return actor.linear.weight.detach().clone()

    np.testing.assert_array_equal(stepped(y01), stepped(flipped))
    assert not torch.equal(stepped(y01), stepped(1 - y01))


def test_refit_keeps_pretrained_actor_when_validation_gets_worse(sessions, capsys):
    """Early stopping counts the pretrained weights as the refit's epoch 0."""
    X, Y, s, t = sessions
    mtl = MTLClassifier(
        backbone="sharedbottom", backbone_params=SMALL, max_epochs=3, random_state=0
    ).fit(X, Y, timestamps=t)
    # A learning rate far too large makes every refit epoch worse.
    est = RMTLClassifier(
        actor=mtl, **{**FAST, "refit_lr": 5.0, "refit_max_epochs": 2, "verbose": 1}
    )
    est.fit(X, Y, session_ids=s, timestamps=t)
    assert est.refit_improved_ is False
    assert "refit kept the pretrained weights" in capsys.readouterr().out
    assert est.history_["refit"][-1]["restored_start"] is True
    np.testing.assert_allclose(est.predict_proba(X), mtl.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_parallel_fits_match_sequential(sessions, backend):
    """Fits draw from their own generators, not torch's shared global one."""
    from joblib import Parallel, delayed

    X, Y, s, t = sessions
    params = {
        **FAST,
        "max_epochs": 2,
        "critic": critic(max_epochs=2),
        "refit_max_epochs": 1,
    }
    seeds = [0, 1, 0, 1]

    def fit(seed):
        est = RMTLClassifier(
            backbone="sharedbottom", **{**params, "random_state": seed}
        )
        return est.fit(X, Y, session_ids=s, timestamps=t).predict_proba(X)

    sequential = [fit(seed) for seed in seeds[:2]]
    parallel = Parallel(n_jobs=2, backend=backend)(delayed(fit)(seed) for seed in seeds)
    for seed, proba in zip(seeds, parallel, strict=True):
        np.testing.assert_array_equal(proba, sequential[seed])


def test_verbose_zero_is_silent_and_one_reports_every_phase(sessions, capsys):
    X, Y, s, t = sessions
    RMTLClassifier(**FAST).fit(X, Y, session_ids=s, timestamps=t)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    RMTLClassifier(**{**FAST, "verbose": 1}).fit(X, Y, session_ids=s, timestamps=t)
    out = capsys.readouterr().out
    for phase in ("pretrain", "critic", "refit"):
        assert f"[RMTLClassifier] {phase}" in out
    assert "critic epoch" in out and "train_loss" in out
