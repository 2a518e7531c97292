"""Critic training (TD learning) and the Q-weighted refit, vs the matmul limit.

For a PLE and an ESMM actor at the paper's sizes:

- the actor's forward pass over all rows (the behaviour actions);
- ``train_critic`` (shared critic, MLP 512-256 over [state, action]
  embeddings, target critic, soft updates; the actor frozen, as in the
  paper): transitions/s of the whole call and of its epoch loop;
- the refit, ``RMTLClassifier.fit`` with a fitted actor and the trained
  critic given (so it runs the refit only), one epoch without early
  stopping: samples/s of the epoch loop and of the call.

Limits: the bare matmuls of the Linear layers each phase needs (critic:
forward+backward of the critic and a forward of the target critic per
transition, plus one actor forward per row per call; refit: actor
forward+backward plus a critic forward per sample), timed in the same run.

Run: ``python benchmarks/bench_critic.py [--quick] [--actors ple,esmm]``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from _common import (
    BATCH_SIZE,
    PAPER_SIZES,
    REFERENCE,
    LinearShape,
    MatmulKernel,
    Report,
    capture_shapes,
    fmt_rate,
    make_data,
    median,
    op_breakdown,
    parse_args,
    repeat,
    timed,
)
from bench_mdp import vectorised_replay

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._critic import Critic, set_fitted_critics
from sklearn_rmtl._fit_data import encode_inputs
from sklearn_rmtl._mdp import build_transitions
from sklearn_rmtl._td import TDConfig, td_step, train_critic
from sklearn_rmtl._torch_module import actor_proba
from sklearn_rmtl._validation import check_metadata

GAMMA, TAU = 0.95, 0.2
CRITIC_HIDDEN = (512, 256)


def critic_shapes(
    critic: Critic,
    x_cat: torch.Tensor,
    x_num: torch.Tensor,
    actions: torch.Tensor,
    *,
    training: bool,
) -> list[LinearShape]:
    """The Linear shapes of one critic call: the work the critic needs.

    Hooks see the modules the critic calls (MLP, head); the first layer is
    applied from its weights, split into its state half (once per row: the
    needed work) and its action half (a rank-one update per task, a few
    multiply-adds per unit, not a matrix product), so it is added here.
    """
    critic.train(training)
    with torch.set_grad_enabled(training):
        shapes = capture_shapes(
            critic, lambda: critic(x_cat, x_num, actions), training=training
        )
    first = critic.input_layer
    state_half = LinearShape(
        groups=first.n_groups,
        rows=len(x_cat),
        k=critic.state_features,
        n=first.out_features,
        shared=critic.shared,
        input_grad=training,  # the critic's own embeddings learn
    )
    return [state_half, *shapes]


def td_config(epochs: int) -> TDConfig:
    """The paper's critic settings, run for exactly ``epochs`` epochs."""
    return TDConfig(
        gamma=GAMMA,
        tau=TAU,
        soft_update_freq=2,
        lr=1e-3,
        batch_size=BATCH_SIZE,
        max_epochs=epochs,
        tol=0.0,
        patience=epochs + 1,
        double_q=False,
        balance_labels=False,
        actor_update=False,
        verbose=0,
    )


def make_critic(cardinalities: list[int], actor: torch.nn.Module) -> Critic:
    critic = Critic(
        cardinalities=cardinalities,
        n_numerical=1,
        n_tasks=2,
        embedding_dim=PAPER_SIZES["embedding_dim"],
        hidden_dims=CRITIC_HIDDEN,
        shared=True,
    )
    critic.init_embeddings_from(actor.embedding)  # type: ignore[arg-type]
    critic.init_output(torch.tensor([-0.5, -0.1]))
    return critic


class CriticStep:
    """One ``td_step`` of ``train_critic``'s loop, on random rows of ready data."""

    def __init__(self, critic: Critic, tensors: dict[str, torch.Tensor]) -> None:
        self.critic = critic.train()
        self.target = copy.deepcopy(critic)
        self.opt = torch.optim.Adam(critic.parameters(), lr=1e-3, fused=True)
        self.t = tensors
        self.n = len(tensors["actions"])
        self.config = td_config(1)

    def __call__(self) -> None:
        # Random rows, as the epoch loop draws them (the gathers are included).
        idx = torch.randint(0, self.n, (BATCH_SIZE,))
        t = self.t
        nxt = t["next_row"][idx]
        td_step(
            self.critic,
            self.target,
            self.opt,
            state=(t["x_cat"][idx], t["x_num"][idx]),
            action=t["actions"][idx],
            reward=t["rewards"][idx],
            done=t["done"][idx],
            next_state=(t["x_cat"][nxt], t["x_num"][nxt]),
            next_action=t["next_actions"][idx],
            weight=None,
            config=self.config,
        )


def bench_actor(
    backbone: str, data: Any, n: int, epochs: int, rounds: int, profile: bool
) -> dict[str, Any]:
    X, Y = data.X.iloc[:n], data.Y.iloc[:n]
    sids = check_metadata(data.session_ids[:n], n, name="session_ids", sortable=False)
    keys = check_metadata(data.timestamps[:n], n, name="timestamps", sortable=True)
    # A fitted actor: two steps are enough for timing (weights do not matter).
    actor_est = MTLClassifier(
        backbone=backbone, max_epochs=1, early_stopping=False, random_state=0
    ).fit(X.iloc[: 2 * BATCH_SIZE], Y.iloc[: 2 * BATCH_SIZE])
    actor = actor_est.net_.module_
    cards = actor_est.encoder_.cardinalities_.tolist()
    inputs = encode_inputs(actor_est.encoder_._transform_parts(X))
    y01 = Y.to_numpy(np.float32)
    tr = build_transitions(sids, keys, n)

    x_cat = torch.as_tensor(inputs["x_cat"])
    x_num = torch.as_tensor(inputs["x_num"])
    xb_cat, xb_num = x_cat[:BATCH_SIZE], x_num[:BATCH_SIZE]
    actor.eval()
    with torch.no_grad():
        k_actor_fwd = MatmulKernel(
            capture_shapes(actor, lambda: actor(xb_cat, xb_num), training=False),
            backward=False,
        )
    critic0 = make_critic(cards, actor)
    actions_b = torch.rand(BATCH_SIZE, 2)
    k_critic_fb = MatmulKernel(
        critic_shapes(critic0, xb_cat, xb_num, actions_b, training=True),
        backward=True,
    )
    k_critic_f = MatmulKernel(
        critic_shapes(critic0, xb_cat, xb_num, actions_b, training=False),
        backward=False,
    )
    # Refit work per batch: actor forward+backward, critic forward.
    actor.train()
    k_refit = MatmulKernel(
        capture_shapes(actor, lambda: actor(xb_cat, xb_num), training=True),
        backward=True,
    )
    actor.eval()

    res_rounds = []
    critic = critic0
    tensors0 = None
    for r in range(rounds):
        # Limits, per batch of 2048 (seconds).
        t_af = k_actor_fwd.seconds(3, 1)
        t_cfb = k_critic_fb.seconds(3, 1)
        t_cf = k_critic_f.seconds(3, 1)
        t_rfb = k_refit.seconds(3, 1)
        batches = n / BATCH_SIZE

        # Behaviour actions: the actor's forward pass over all rows.
        t_proba, policy = timed(lambda: actor_proba(actor, x_cat, x_num))
        proba = policy.numpy().astype(np.float64)
        buf = vectorised_replay(proba, y01, tr, seed=r)
        critic = make_critic(cards, actor)
        config = td_config(epochs)
        t_td, hist = timed(
            lambda critic=critic, buf=buf, config=config, r=r: train_critic(
                critic,
                inputs={"x_cat": x_cat, "x_num": x_num},
                actions=buf["actions"],
                rewards=buf["rewards"],
                next_row=buf["next_row"],
                done=buf["done"],
                y01=torch.as_tensor(y01),
                actor=actor,
                policy=policy,  # noqa: B023 (called at once)
                config=config,
                generator=torch.Generator().manual_seed(r),
            )
        )
        t_epochs = sum(h["dur"] for h in hist)
        # The phase: the actor's pass over all rows (behaviour and target
        # actions), then train_critic.
        t_td += t_proba
        lim_call = epochs * batches * (t_cfb + t_cf) + batches * t_af
        lim_epochs = epochs * batches * (t_cfb + t_cf)

        # The refit alone: fitted actor + given critic, one epoch.
        sc = set_fitted_critics(
            SessionCritic(),
            encoder=actor_est.encoder_,
            module=critic.eval(),
            task_names=np.array(["click", "purchase"], dtype=object),
            history=[],
        )
        rmtl = RMTLClassifier(
            actor=actor_est,
            critic=sc,
            refit_max_epochs=1,
            early_stopping=False,
            random_state=r,
        )
        t_refit_call, _ = timed(
            lambda rmtl=rmtl: rmtl.fit(
                X, Y, session_ids=data.session_ids[:n], timestamps=data.timestamps[:n]
            )
        )
        t_refit = rmtl.history_["refit"][0]["dur"]
        lim_refit = batches * (t_rfb + t_cf)
        # A bare critic step (no loop) on the same data, for the loop's cost.
        tensors0 = {"x_cat": x_cat, "x_num": x_num, **buf}
        bare = CriticStep(make_critic(cards, actor), tensors0)
        t_bare = median(repeat(bare, 3, warmup=1))
        res_rounds.append(
            {
                "actor_forward_rows_s": n / t_proba,
                "actor_forward_fraction": (batches * t_af) / t_proba,
                "critic_call_transitions_s": n * epochs / t_td,
                "critic_epoch_transitions_s": n * epochs / t_epochs,
                "critic_call_limit_s": n * epochs / lim_call,
                "critic_epoch_limit_s": n * epochs / lim_epochs,
                "critic_call_fraction": lim_call / t_td,
                "critic_epoch_fraction": lim_epochs / t_epochs,
                "critic_setup_seconds": t_td - t_epochs,
                "critic_bare_step_transitions_s": BATCH_SIZE / t_bare,
                "critic_bare_step_fraction": (t_cfb + t_cf) / t_bare,
                "refit_epoch_samples_s": n / t_refit,
                "refit_call_samples_s": n / t_refit_call,
                "refit_limit_samples_s": n / lim_refit,
                "refit_fraction": lim_refit / t_refit,
                "refit_call_fraction": lim_refit / t_refit_call,
            }
        )
    out = {k: median([r[k] for r in res_rounds]) for k in res_rounds[0]}
    out["rows"] = n
    out["epochs"] = epochs
    if profile:
        buf = vectorised_replay(proba, y01, tr)
        tensors = {"x_cat": x_cat, "x_num": x_num, **buf}
        out["critic_step_breakdown"] = op_breakdown(
            CriticStep(make_critic(cards, actor), tensors), steps=2
        )
    return out


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--actors", default="ple,esmm")

    args = parse_args(__doc__, extra)
    rep = Report("bench_critic", args)
    n = BATCH_SIZE * (4 if args.quick else 12)
    epochs = 1 if args.quick else 2
    rounds = args.repeats or (1 if args.quick else 2)
    data = make_data(n, seed=0)
    for bb in args.actors.split(","):
        res = bench_actor(bb, data, n, epochs, rounds, profile=not args.quick)
        ref_c = REFERENCE["critic_transitions_s"].get(bb)
        ref_r = REFERENCE["refit_samples_s"].get(bb)
        msg = (
            f"{bb} actor: forward over all rows "
            f"{fmt_rate(res['actor_forward_rows_s'])}/s "
            f"({res['actor_forward_fraction']:.0%} of its limit)\n"
            f"  critic: train_critic call {fmt_rate(res['critic_call_transitions_s'])} "
            f"transitions/s, limit {fmt_rate(res['critic_call_limit_s'])}/s -> "
            f"{res['critic_call_fraction']:.0%}; epoch loop "
            f"{fmt_rate(res['critic_epoch_transitions_s'])}/s -> "
            f"{res['critic_epoch_fraction']:.0%} of "
            f"{fmt_rate(res['critic_epoch_limit_s'])}/s; bare critic step "
            f"{fmt_rate(res['critic_bare_step_transitions_s'])}/s "
            f"({res['critic_bare_step_fraction']:.0%}); set-up in the call "
            f"{res['critic_setup_seconds']:.1f}s (the actor's pass over all rows, "
            "set-up)"
            + (
                f"; reference {fmt_rate(ref_c)}/s "
                f"(x{res['critic_call_transitions_s'] / ref_c:.1f})"
                if ref_c
                else ""
            )
            + f"\n  refit: epoch {fmt_rate(res['refit_epoch_samples_s'])}/s, call "
            f"{fmt_rate(res['refit_call_samples_s'])}/s, limit "
            f"{fmt_rate(res['refit_limit_samples_s'])}/s -> {res['refit_fraction']:.0%}"
            + (
                f"; reference {fmt_rate(ref_r)}/s "
                f"(x{res['refit_epoch_samples_s'] / ref_r:.2f})"
                if ref_r
                else ""
            )
        )
        if "critic_step_breakdown" in res:
            b = res["critic_step_breakdown"]
            msg += "\n  critic-step CPU time: " + ", ".join(
                f"{k} {v:.0%}" for k, v in b.items() if k != "top_ops"
            )
        rep.add(bb, res, msg)
    return rep.done()


if __name__ == "__main__":
    main()
