"""Critics: structure, TD target, soft update, and that they learn returns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl._critic import Critic
from sklearn_rmtl._mdp import build_transitions
from sklearn_rmtl._td import TDConfig, ips_weights, soft_update, td_target, train_critic
from sklearn_rmtl._torch_module import FeatureEmbedding
from sklearn_rmtl.backbones._layers import GroupedLinear


def _critic(shared=True, n_tasks=2):
    torch.manual_seed(0)
    return Critic(
        cardinalities=[5, 4],
        n_numerical=2,
        n_tasks=n_tasks,
        embedding_dim=3,
        hidden_dims=(6,),
        shared=shared,
    )


def _batch(n=7):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 4, (n, 2), generator=g),
        torch.randn(n, 2, generator=g),
        torch.rand(n, 2, generator=g),
    )


@pytest.mark.parametrize("shared", [True, False])
def test_critic_outputs_non_positive_q_per_task(shared):
    critic = _critic(shared)
    critic.init_output(torch.tensor([-1.0, -2.0]))
    q = critic(*_batch())
    assert q.shape == (7, 2) and (q <= 0).all() and (q < 0).any()
    assert len(critic.embeddings) == (1 if shared else 2)


def test_each_task_critic_reads_its_own_action():
    critic = _critic()
    critic.init_output(torch.tensor([-1.0, -1.0]))
    x_cat, x_num, a = _batch()
    q = critic(x_cat, x_num, a)
    a2 = a.clone()
    a2[:, 1] = 1 - a2[:, 1]
    q2 = critic(x_cat, x_num, a2)
    torch.testing.assert_close(q[:, 0], q2[:, 0])
    assert not torch.allclose(q[:, 1], q2[:, 1])


def test_embeddings_start_from_the_actors():
    actor_embedding = FeatureEmbedding(
        cardinalities=[5, 4], n_numerical=2, embedding_dim=3
    )
    critic = _critic(shared=False)
    critic.init_embeddings_from(actor_embedding)
    for own in critic.embeddings:
        torch.testing.assert_close(
            own.embedding.weight, actor_embedding.embedding.weight
        )
    # copies, not shared tensors
    assert critic.embeddings[0].embedding.weight.data_ptr() != (
        actor_embedding.embedding.weight.data_ptr()
    )


def test_td_target_by_hand():
    r = torch.tensor([[-0.5, -1.0], [-0.2, -0.1]])
    q_next = torch.tensor([[-2.0, -3.0], [-4.0, -5.0]])
    done = torch.tensor([0.0, 1.0])
    out = td_target(r, done, q_next, gamma=0.9)
    expected = torch.tensor([[-0.5 - 1.8, -1.0 - 2.7], [-0.2, -0.1]])
    torch.testing.assert_close(out, expected)


def test_soft_update_by_hand():
    target, source = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.fill_(1.0)
        target.bias.fill_(0.0)
        source.weight.fill_(3.0)
        source.bias.fill_(10.0)
    soft_update(target, source, tau=0.2)
    torch.testing.assert_close(target.weight, torch.full((1, 2), 0.2 * 3 + 0.8 * 1))
    torch.testing.assert_close(target.bias, torch.tensor([2.0]))
    torch.testing.assert_close(source.weight, torch.full((1, 2), 3.0))  # untouched


def test_ips_weights_balance_classes():
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    w = ips_weights(y)
    torch.testing.assert_close(w.mean(0), torch.ones(2))
    assert w[0, 0] == pytest.approx(2.0) and w[1, 0] == pytest.approx(2 / 3)
    torch.testing.assert_close(w[:, 1], torch.ones(4))  # one class: no reweighting


class _OneChunk:
    """The transitions of train_critic as one chunk of sessions."""

    device, n_rows = "cpu", 0

    def __init__(self, chunk):
        n = len(chunk["actions"])
        self.data = {
            "td_rows": torch.arange(n),
            "held_out_rows": torch.arange(0),
            **chunk,
        }
        self.n_rows = n

    def __len__(self):
        return 1

    def chunk(self, c, epoch=1):
        return self.data

    def ips(self, chunk):
        raise AssertionError("ips is off")


class _ConstantActor(torch.nn.Module):
    def forward(self, x_cat, x_num):
        return torch.zeros(len(x_cat), 2)


def test_td_config_reads_the_critic_and_the_estimator():
    """The critic's settings and RMTL's shared ones make the TD settings."""
    critic = SessionCritic(
        gamma=0.5, tau=0.1, lr=0.01, max_epochs=3, balance_labels=True
    ).set_params(use_sample_weight=True, tol=0.0, patience=4, double_q=True)
    rmtl = RMTLClassifier(
        batch_size=64, actor_update=True, bc_alpha=None, refit_lr=None, lr=0.2
    ).set_params(precision="bfloat16", distributed=True, verbose=1)
    config = TDConfig.from_params(critic.get_params(), rmtl.get_params(deep=False))
    assert config == TDConfig(
        gamma=0.5,
        tau=0.1,
        soft_update_freq=2,
        lr=0.01,
        batch_size=64,
        max_epochs=3,
        tol=0.0,
        patience=4,
        double_q=True,
        balance_labels=True,
        actor_update=True,
        verbose=1,
        bc_alpha=None,
        actor_lr=0.2,  # refit_lr=None: the actor's lr
        precision="bfloat16",
        use_sample_weight=True,
        distributed=True,
    )
    config = TDConfig.from_params(
        critic.get_params(), rmtl.set_params(refit_lr=1e-4).get_params(deep=False)
    )
    assert config.actor_lr == 1e-4 and config.lr == 0.01


def test_critic_learns_the_discounted_session_return():
    """Q(s_t, a_t) tracks the Monte-Carlo return G_t of known reward streams."""
    rng = np.random.default_rng(0)
    gamma = 0.9
    lengths = rng.integers(1, 9, 400)
    sessions = np.repeat(np.arange(len(lengths)), lengths)
    position = np.concatenate([np.arange(k) for k in lengths])
    steps_left = np.concatenate([np.arange(k)[::-1] for k in lengths])
    n = len(sessions)
    kind = rng.integers(0, 3, n)  # a categorical feature that sets the reward
    reward = -(0.2 + 0.4 * kind)[:, None] * np.array([1.0, 0.5])
    tr = build_transitions(sessions, position.astype(float), n)
    # Monte-Carlo returns, computed backwards along the session links.
    ret = reward.copy()
    for p in range(position.max() - 1, -1, -1):
        rows = np.flatnonzero((position == p) & ~tr.done)
        ret[rows] += gamma * ret[tr.next_row[rows]]
    critic = Critic(
        cardinalities=[5],
        n_numerical=1,
        n_tasks=2,
        embedding_dim=8,
        hidden_dims=(32, 16),
        shared=True,
    )
    torch.manual_seed(0)
    critic.init_output(torch.tensor(reward.mean(0) * 3))
    inputs = {
        "x_cat": torch.as_tensor(kind[:, None] + 2),
        "x_num": torch.as_tensor(steps_left[:, None] / 8.0, dtype=torch.float32),
    }
    actions = torch.rand(n, 2, generator=torch.Generator().manual_seed(0))
    config = TDConfig(
        gamma=gamma,
        tau=0.2,
        soft_update_freq=2,
        lr=3e-3,
        batch_size=64,
        max_epochs=60,
        tol=0.0,
        patience=1,
        double_q=False,
        balance_labels=False,
        actor_update=False,
        verbose=0,
    )
    chunk = {
        **inputs,
        "actions": actions,
        "rewards": torch.as_tensor(reward, dtype=torch.float32),
        "next_row": torch.as_tensor(tr.next_row),
        "done": torch.as_tensor(tr.done, dtype=torch.float32),
        "y01": torch.zeros(n, 2),
        "policy": torch.full((n, 2), 0.5),  # the constant actor's probabilities
        "mask": None,
    }
    history = train_critic(
        critic,
        _OneChunk(chunk),
        actor=_ConstantActor(),
        config=config,
        generator=torch.Generator().manual_seed(0),
        seed=0,
    )
    assert history[-1]["td_loss"] < history[0]["td_loss"] / 5
    with torch.no_grad():
        q = critic(inputs["x_cat"], inputs["x_num"], actions).numpy()
    for k in range(2):
        rho = spearmanr(q[:, k], ret[:, k]).statistic
        assert rho > 0.9, (k, rho)
    assert np.abs(q - ret).mean() < 0.25 * np.abs(ret).mean()


def _concatenating_critic(c: Critic, x_cat, x_num, actions):
    """The critic as the paper writes it: MLP over [state, action_k] per task."""
    act = c.action_layer(actions.unsqueeze(-1))  # (batch, K, d)
    states = torch.stack([e(x_cat, x_num) for e in c.embeddings], dim=1)
    pairs = torch.cat([states.expand(-1, c.n_tasks, -1), act], dim=-1)
    w, b = c.input_layer.weight, c.input_layer.bias
    w, b = w.expand(c.n_tasks, -1, -1), b.expand(c.n_tasks, -1)
    out = torch.einsum("bki,kio->bko", pairs, w) + b
    if c.head is None:
        return -torch.relu(out.squeeze(-1))
    hidden = torch.relu(out)
    for layer in c.mlp.layers:  # every group reads its task's row
        if isinstance(layer, GroupedLinear):
            lw = layer.weight.expand(c.n_tasks, -1, -1)
            hidden = torch.einsum("bki,kio->bko", hidden, lw) + layer.bias
        else:  # activation, dropout
            hidden = layer(hidden)
    return -torch.relu(c.head(hidden).squeeze(-1))


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("hidden_dims", [(16, 8), (16,), ()])
def test_split_first_layer_equals_the_concatenating_critic(shared, hidden_dims):
    # Computing the state half of the first layer once per row (not per
    # task) is an implementation detail: Q and its gradients must match.
    torch.manual_seed(0)
    critic = Critic(
        cardinalities=[5, 7],
        n_numerical=1,
        n_tasks=3,
        embedding_dim=4,
        hidden_dims=hidden_dims,
        shared=shared,
    )
    with torch.no_grad():  # a bias that keeps -ReLU active, so grads flow
        out = critic.head if critic.head is not None else critic.input_layer
        out.bias.fill_(1.0)
    x_cat = torch.randint(0, 5, (32, 2))
    x_num = torch.randn(32, 1)
    actions = torch.rand(32, 3)
    got = critic(x_cat, x_num, actions)
    want = _concatenating_critic(critic, x_cat, x_num, actions)
    torch.testing.assert_close(got, want)
    assert (got < 0).any()
    grads = torch.autograd.grad(got.sum(), list(critic.parameters()))
    want_grads = torch.autograd.grad(want.sum(), list(critic.parameters()))
    for g, h in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, h)


@pytest.mark.parametrize("redraw", [False, True])
def test_redraw_actions_draws_new_actions_each_epoch(redraw):
    from conftest import SMALL, make_session_data

    from sklearn_rmtl import RMTLClassifier, SessionCritic
    from sklearn_rmtl._rows import ArrayRows
    from sklearn_rmtl._td import SessionChunks, TDConfig

    X, Y, s, t = make_session_data(n_sessions=30)
    critic = SessionCritic(hidden_dims=(8,), max_epochs=3, redraw_actions=redraw)
    clf = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        max_epochs=1,
        critic=critic,
        random_state=0,
    ).fit(X, Y, session_ids=s, timestamps=t)
    assert clf.critic_.redraw_actions is redraw
    data = clf._prepare(ArrayRows(X, Y, session_ids=s, timestamps=t))
    data.set_encoder(clf.encoder_)
    chunks = SessionChunks(
        data,
        clf.net_.module_,
        behavior_policy="actor",
        action_noise=0.1,
        config=TDConfig.from_params(critic.get_params(), clf.get_params()),
        seed=0,
        redraw_actions=redraw,
    )
    first, second = chunks.chunk(0, 1), chunks.chunk(0, 2)
    assert torch.equal(chunks.chunk(0, 1)["actions"], first["actions"])
    assert torch.equal(first["actions"], second["actions"]) is not redraw
    assert torch.equal(first["rewards"], second["rewards"]) is not redraw
    # The states and links never change.
    assert torch.equal(first["next_row"], second["next_row"])


def test_softplus_output_is_never_flat_and_starts_at_the_start_value():
    """output="softplus": Q <= 0 everywhere, a gradient at every row (where
    -ReLU has none), and init_output puts Q at the start value."""
    x_cat, x_num, actions = _batch(64)
    for hidden in [(6,), ()]:
        critics = {}
        for output in ("relu", "softplus"):
            torch.manual_seed(0)
            critics[output] = Critic(
                cardinalities=[5, 4],
                n_numerical=2,
                n_tasks=2,
                embedding_dim=3,
                hidden_dims=hidden,
                shared=True,
                output=output,
            )
            # A head biased far negative: -ReLU is dead at every row.
            out = critics[output].head or critics[output].input_layer
            with torch.no_grad():
                out.bias.fill_(-50.0)
        grads = {}
        for output, critic in critics.items():
            q = critic(x_cat, x_num, actions)
            assert (q <= 0).all()
            q.sum().backward()
            grads[output] = sum(p.grad.abs().sum() for p in critic.parameters())
        assert grads["relu"] == 0 and grads["softplus"] > 0
        critic = critics["softplus"]
        critic.init_output(torch.tensor([-2.0, -0.5]))
        torch.nn.init.zeros_((critic.head or critic.input_layer).weight)
        with torch.no_grad():
            q = critic(x_cat, x_num, actions)
        torch.testing.assert_close(q, torch.tensor([-2.0, -0.5]).expand(64, 2))
    with pytest.raises(ValueError, match="output must be one of"):
        Critic(
            cardinalities=[2],
            n_numerical=0,
            n_tasks=1,
            embedding_dim=2,
            hidden_dims=(),
            shared=True,
            output="tanh",
        )


def test_session_uniforms_are_one_number_per_session_whatever_the_chunk():
    from sklearn_rmtl._mdp import session_uniforms

    ids = np.repeat(np.arange(2000), 3).astype(str)
    whole = session_uniforms(ids, 0, len(ids), seed=7)
    parts = np.concatenate(
        [session_uniforms(ids[a : a + 999], a, 999, seed=7) for a in (0, 999)]
        + [session_uniforms(ids[1998:], 1998, len(ids) - 1998, seed=7)]
    )
    np.testing.assert_array_equal(
        whole, np.concatenate([parts[:1998], parts[-len(ids) + 1998 :]])
    )
    assert (whole.reshape(-1, 3) == whole[::3, None]).all()  # one per session
    assert 0.07 < (whole[::3] < 0.1).mean() < 0.13
    assert not np.array_equal(whole, session_uniforms(ids, 0, len(ids), seed=8))
    # Without sessions each row is a session named by its position.
    np.testing.assert_array_equal(
        session_uniforms(None, 5, 3, seed=1), session_uniforms(None, 0, 8, seed=1)[5:]
    )


def _fit_critic(**critic_params):
    from conftest import SMALL, make_session_data

    X, Y, s, t = make_session_data(n_sessions=60)
    critic = SessionCritic(hidden_dims=(8,), **critic_params)
    return RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        max_epochs=1,
        batch_size=32,
        critic=critic,
        random_state=0,
    ).fit(X, Y, session_ids=s, timestamps=t)


def test_max_steps_is_a_budget_in_td_steps_across_epochs():
    history = _fit_critic(max_epochs=None, max_steps=25, tol=0.0).critic_.history_
    assert history[-1]["steps"] == 25
    assert [row["steps"] for row in history] == sorted(row["steps"] for row in history)
    assert len(history) >= 2  # 25 steps span more than one epoch on these rows
    # Whichever budget ends first: here the epochs.
    assert len(_fit_critic(max_epochs=1, max_steps=10**6).critic_.history_) == 1
    with pytest.raises(ValueError, match="max_epochs and max_steps are both None"):
        _fit_critic(max_epochs=None)


def test_validation_fraction_stops_on_held_out_td_loss_and_keeps_the_best():
    clf = _fit_critic(
        max_epochs=12, validation_fraction=0.3, lr=0.05, tol=0.0, patience=3
    )
    history = clf.critic_.history_
    valid = [row["valid_td_loss"] for row in history]
    best = history[-1]["best_epoch"]
    assert valid[best - 1] == min(valid)
    # Stopped by the rule (3 epochs without a new best) or at the cap.
    assert len(history) == 12 or len(history) - best == 3
    # The held-out sessions trained nothing: fewer TD steps than without.
    full = _fit_critic(max_epochs=1).critic_.history_[0]["steps"]
    assert history[0]["steps"] < full


def test_validation_fraction_that_leaves_a_side_empty_is_refused():
    with pytest.raises(ValueError, match="the held-out and the training sessions"):
        _fit_critic(max_epochs=1, validation_fraction=1e-9)


def _cross_fitted(Y, actor, X, s, t, **critic_params):
    return RMTLClassifier(
        actor=actor,
        refit_max_epochs=0,
        batch_size=32,
        critic=SessionCritic(hidden_dims=(8,), max_epochs=2, cv=2, **critic_params),
        random_state=0,
    ).fit(X, Y, session_ids=s, timestamps=t)


def test_cross_fitted_critics_learn_nothing_from_their_folds_sessions():
    """cv: the critics of fold f are the same whatever fold f's labels are."""
    from conftest import SMALL, make_session_data

    from sklearn_rmtl import MTLClassifier
    from sklearn_rmtl._mdp import session_folds

    X, Y, s, t = make_session_data(n_sessions=60)
    actor = MTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        max_epochs=1,
        batch_size=32,
        random_state=0,
    ).fit(X, Y)
    fold = session_folds(s, 0, len(s), 2)
    changed = Y.copy()
    changed.loc[fold == 0] = 1 - changed.loc[fold == 0]  # fold 0's labels flipped
    before = _cross_fitted(Y, actor, X, s, t).critic_
    after = _cross_fitted(changed, actor, X, s, t).critic_
    for f, same in ((0, True), (1, False)):
        a = before.module_.folds[f].state_dict()
        b = after.module_.folds[f].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a) is same, f
    assert [row["fold"] for row in before.history_] == [0, 0, 1, 1]

    # Each row is weighted by its fold's critics (as in the refit) when its
    # session is given, by the mean of the folds' critics otherwise.
    clf = _cross_fitted(Y, actor, X, s, t, output="softplus")
    routed = clf.loss_weights(X, Y, session_ids=s)
    for f in (0, 1):
        one = copy.copy(clf.critic_)  # fold f's critics alone
        one.module_ = clf.critic_.module_.folds[f]
        w = one.row_weights(
            one.encode(X),
            clf.predict_proba(X),
            np.array(Y, float),
            "rmtl",
            clf.q_lambda,
        )
        np.testing.assert_allclose(routed[fold == f], w.numpy()[fold == f], rtol=1e-6)
    assert not np.allclose(clf.loss_weights(X, Y), routed)


def test_cross_fitting_is_refused_where_it_cannot_work():
    from conftest import make_session_data

    X, Y, s, t = make_session_data(n_sessions=20)
    with pytest.raises(ValueError, match="actor_update=True cannot be combined"):
        RMTLClassifier(actor_update=True, critic=SessionCritic(cv=2)).fit(
            X, Y, session_ids=s, timestamps=t
        )
    one_session = np.zeros(len(X), dtype=int)
    with pytest.raises(ValueError, match=r"cv=2, fold \d\) have no session to learn"):
        _fit_critic_on(X, Y, one_session, t, cv=2)
    with pytest.raises(ValueError, match="'cv' parameter of SessionCritic"):
        _fit_critic_on(X, Y, s, t, cv=1)


def _fit_critic_on(X, Y, s, t, **critic_params):
    from conftest import SMALL

    return RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SMALL,
        max_epochs=1,
        refit_max_epochs=0,
        critic=SessionCritic(hidden_dims=(8,), max_epochs=1, **critic_params),
        random_state=0,
    ).fit(X, Y, session_ids=s, timestamps=t)
