"""Out-of-core RMTLClassifier fits from a ParquetSource (docs/scaling.rst).

Pretraining and the refit stream shuffled blocks as for
:class:`~sklearn_rmtl.MTLClassifier` (:mod:`sklearn_rmtl.parquet`). The
session MDP and the critics' TD learning read the rows in chunks of whole
sessions (:meth:`ParquetSource.session_frames
<sklearn_rmtl.parquet.ParquetSource.session_frames>`, which verifies the
(session, time) order): a transition links a row to the next row of its
session, so it never leaves its chunk. Each critic epoch visits the chunks
in a seeded random order and a chunk's transitions in a random order; a
chunk's behaviour actions are drawn from a seed of its own, so they are the
same in every epoch. With one chunk every draw is the in-memory fit's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sklearn_rmtl._critic import Critic, SessionCritic, new_critic
from sklearn_rmtl._fit_data import FitData, encode_inputs, loss_mask
from sklearn_rmtl._mdp import behavior_actions, build_transitions, rewards
from sklearn_rmtl._refit import RefitPlan
from sklearn_rmtl._seeding import (
    set_dropout_generator,
)
from sklearn_rmtl._skorch_net import MultiTaskNet, QWeightedNet
from sklearn_rmtl._td import TDConfig, ips_weights, td_epochs
from sklearn_rmtl._torch_module import actor_proba
from sklearn_rmtl._training import net_history
from sklearn_rmtl._validation import check_metadata, to_pandas
from sklearn_rmtl._weighting import WEIGHTINGS, label_mean_weights
from sklearn_rmtl.parquet import (
    Extra,
    ParquetSource,
    _StreamingFit,
    _TrainStream,
    check_streaming_settings,
)


def _check_supported(estimator: Any) -> None:
    """Refuse, clearly, the settings this out-of-core path does not cover."""
    unsupported = check_streaming_settings(estimator)
    if estimator._given_actor() is not None:
        unsupported.append("a given actor")
    if estimator.critic is not None:
        unsupported.append("a given critic")
    if estimator.actor_update:
        unsupported.append("actor_update=True")
    if unsupported:
        raise TypeError(
            f"RMTLClassifier.fit from a ParquetSource does not support "
            f"{', '.join(unsupported)} yet; fit those in memory, or use the "
            "defaults (the paper's setting)."
        )


class _SessionChunks:
    """The critics' data: chunks of whole sessions, encoded on demand."""

    def __init__(
        self,
        fit: _StreamingFit,
        data: FitData,
        actor: torch.nn.Module,
        *,
        behavior_policy: str,
        action_noise: float,
        config: TDConfig,
        seed: int,
        bounds: list[tuple[int, int]],
    ) -> None:
        self.fit = fit
        self.data = data
        self.actor = actor  # the pretrained actor, frozen (eval mode)
        self.behavior_policy = behavior_policy
        self.action_noise = action_noise
        self.config = config
        self.seed = seed
        self.bounds = bounds  # row ranges of whole sessions
        self._cached: tuple[int, dict[str, Any]] | None = None
        self.positive_rate: Tensor | None = None  # per task, over every chunk

    def ips(self, ch: dict[str, Any]) -> Tensor:
        """The chunk's IPS weights (``ips_weights``), with every chunk's rate."""
        if "ips" not in ch:
            if len(self.bounds) == 1:  # the in-memory computation exactly
                ch["ips"] = ips_weights(ch["y01"], ch.get("mask"))
            else:
                # NOTE: ips_weights' formula with the rate of the whole data
                # (a chunk's own rate would differ from chunk to chunk).
                p = self.positive_rate
                assert p is not None
                y01 = ch["y01"]
                w = torch.where(
                    y01 > 0.5, 0.5 / p.clamp(min=1e-12), 0.5 / (1 - p).clamp(min=1e-12)
                )
                ch["ips"] = torch.where((p > 0) & (p < 1), w, torch.ones_like(w))
        return ch["ips"]

    def __len__(self) -> int:
        return len(self.bounds)

    def chunk(self, c: int) -> dict[str, Any]:
        """Chunk ``c``'s states, actions, rewards and links, on the device."""
        if self._cached is not None and self._cached[0] == c:
            return self._cached[1]
        fit, device = self.fit, self.data.device
        start, stop = self.bounds[c]
        frame = to_pandas(fit.source._read_rows(start, stop, fit._all_columns()))
        y01, observed, weight, _ = fit.labels.block(frame)
        inputs = encode_inputs(fit.encoder._transform_parts(frame[fit.features]))
        x_cat = torch.as_tensor(inputs["x_cat"], dtype=torch.long, device=device)
        x_num = torch.as_tensor(inputs["x_num"], dtype=torch.float32, device=device)
        policy = actor_proba(self.actor, x_cat, x_num, self.config.precision)
        sessions = check_metadata(
            frame[fit.source.session],
            len(frame),
            name="session_ids",
            sortable=False,
        )
        transitions = build_transitions(sessions, fit._times(frame), len(frame))
        # The in-memory fit's generator for the first chunk, a seed of its
        # own for each other chunk: the same actions in every epoch.
        rng = np.random.default_rng(self.seed if c == 0 else [self.seed, c])
        actions = behavior_actions(
            policy.cpu().numpy().astype(np.float64),
            transitions.order,
            behavior_policy=self.behavior_policy,
            action_noise=self.action_noise,
            rng=rng,
        )
        reward = rewards(y01, actions, observed)
        mask = loss_mask(observed, weight if self.config.sample_weight else None)

        def tensor(a: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        out = {
            "x_cat": x_cat,
            "x_num": x_num,
            "policy": policy,
            "actions": tensor(actions),
            "rewards": tensor(reward),
            "next_row": tensor(transitions.next_row, torch.long),
            "done": tensor(transitions.done),
            "y01": tensor(y01),
            "reward_np": reward,
            "mask_np": mask,
        }
        if mask is not None:
            out["mask"] = tensor(mask)
        if len(self.bounds) == 1:  # read once, as in memory
            self._cached = (c, out)
        return out


def _start_value(chunks: _SessionChunks, gamma: float) -> np.ndarray:
    """The critics' starting output: mean reward times the mean horizon.

    As in memory (``fit_session_critic``), from every chunk's rewards and
    session ends; one chunk gives the in-memory value exactly.
    """
    n_rows, n_done = 0, 0
    num: Any = None
    den: Any = None
    positives: Any = 0.0
    weighed: Any = 0.0
    for c in range(len(chunks)):
        ch = chunks.chunk(c)
        reward: np.ndarray = ch["reward_np"]
        mask: np.ndarray | None = ch["mask_np"]
        # The positive rate of every task, for the IPS weights.
        m = torch.ones_like(ch["y01"]) if mask is None else ch["mask"]
        positives = positives + (ch["y01"] * m).sum(0).double()
        weighed = weighed + m.sum(0).double()
        n_rows += len(reward)
        n_done += int(ch["done"].sum())
        # Each chunk's float32 statistic as in memory, merged in float64:
        # exact (and so the in-memory value) for one chunk.
        if mask is None:
            part = reward.mean(0).astype(np.float64) * len(reward)
            weight = np.float64(len(reward))
        else:
            part = (reward * mask).sum(0).astype(np.float64)
            weight = mask.sum(0).astype(np.float64)
        num = part if num is None else num + part
        den = weight if den is None else den + weight
    assert num is not None and den is not None
    done_mean = np.float64(n_done) / n_rows
    horizon = 1.0 / (1.0 - gamma * (1.0 - done_mean))
    tiny = np.float64(np.finfo(np.float32).tiny)
    mean_reward = (num / np.maximum(den, tiny)).astype(np.float32)
    chunks.positive_rate = (positives / weighed.clamp(min=tiny)).float()[None, :]
    return mean_reward * horizon


def fit_critics(
    fit: _StreamingFit,
    data: FitData,
    actor: torch.nn.Module,
    *,
    embedding_dim: int,
    hidden_dims: tuple[int, ...],
    shared: bool,
    behavior_policy: str,
    action_noise: float,
    config: TDConfig,
    seed: int,
    bounds: list[tuple[int, int]],
) -> SessionCritic:
    """Phases 2 and 3 over chunks of whole sessions (``fit_session_critic``).

    ``bounds`` are the chunks' row ranges (``ParquetSource._session_bounds``).
    """
    device = data.device
    frozen = copy.deepcopy(actor).eval()
    chunks = _SessionChunks(
        fit,
        data,
        frozen,
        behavior_policy=behavior_policy,
        action_noise=action_noise,
        config=config,
        seed=seed,
        bounds=bounds,
    )
    start_value = _start_value(chunks, config.gamma)
    critic, generator = new_critic(
        data,
        actor,
        seed=seed,
        start_value=start_value,
        embedding_dim=embedding_dim,
        hidden_dims=hidden_dims,
        shared=shared,
    )
    critic.to(device)
    actor.to(device)
    set_dropout_generator(actor, generator)
    history = _train_critic(critic, chunks, config, generator, seed)
    set_dropout_generator(actor, None)
    return SessionCritic(
        encoder=fit.encoder,
        module=critic.cpu().eval(),
        task_names=data.task_names,
        history=history,
    )


def _train_critic(
    critic: Critic,
    chunks: _SessionChunks,
    config: TDConfig,
    generator: torch.Generator,
    seed: int,
) -> list[dict[str, Any]]:
    """``train_critic`` with a frozen actor, chunk by chunk."""
    chunk_rng = np.random.default_rng(seed)

    def epoch_batches(epoch: int) -> Iterator[dict[str, Any]]:
        order = (
            chunk_rng.permutation(len(chunks)) if len(chunks) > 1 else np.zeros(1, int)
        )
        for c in order:
            ch = chunks.chunk(int(c))
            n = len(ch["actions"])
            rows = torch.randperm(n, generator=generator).to(ch["actions"].device)
            next_actions = ch["policy"][ch["next_row"]]
            mask = ch.get("mask")
            ips = chunks.ips(ch) if config.ips else None
            x_cat, x_num = ch["x_cat"], ch["x_num"]
            for b in range(0, n, config.batch_size):
                idx = rows[b : b + config.batch_size]
                nxt = ch["next_row"][idx]
                yield {
                    "state": (x_cat[idx], x_num[idx]),
                    "action": ch["actions"][idx],
                    "reward": ch["rewards"][idx],
                    "done": ch["done"][idx],
                    "next_state": (x_cat[nxt], x_num[nxt]),
                    "next_action": next_actions[idx],
                    "weight": None if ips is None else ips[idx],
                    "mask": None if mask is None else mask[idx],
                }

    history = td_epochs(critic, config, epoch_batches, chunks.data.device)
    critic.eval()
    return history


def _label_mean_plan(
    fit: _StreamingFit,
    data: FitData,
    actor: torch.nn.Module,
    critic: SessionCritic,
    estimator: Any,
) -> tuple[RefitPlan, Extra]:
    """``plan_refit``'s ``"label_mean"`` weights, from one pass over the blocks.

    The critics' weights at the pretrained actor, averaged per task and
    label over the training rows (weighted by the loss mask): one block
    gives ``label_mean_weights`` exactly; blocks merge its sums.
    """
    source, precision = fit.source, estimator.precision
    merged: list[Any] = [0.0, 0.0, 0.0, 0.0]  # n_neg, n_pos, sum_neg, sum_pos
    means: Tensor | None = None
    for b in range(source.n_blocks):
        frame = to_pandas(source.read_block(b, fit._all_columns()))
        y01, observed, weight, kept = fit.labels.block(frame)
        train = torch.as_tensor(~fit._block_valid(b, frame, kept))
        inputs = encode_inputs(fit.encoder._transform_parts(frame[fit.features]))
        y = torch.as_tensor(y01)
        proba = actor_proba(
            actor,
            torch.as_tensor(inputs["x_cat"]),
            torch.as_tensor(inputs["x_num"]),
            precision,
        ).cpu()
        w = critic.row_weights(
            inputs, proba, y, estimator.weighting, estimator.q_lambda, precision
        )
        mask = loss_mask(observed, weight)
        m = None if mask is None else torch.as_tensor(mask)[train]
        if source.n_blocks == 1:
            means = label_mean_weights(w[train], y[train], m)
            break
        pos = y[train] > 0.5
        m = torch.ones_like(y[train]) if m is None else m
        wm = w[train] * m
        for i, part in enumerate(
            (
                torch.where(pos, 0.0, m),
                torch.where(pos, m, 0.0),
                torch.where(pos, 0.0, wm),
                torch.where(pos, wm, 0.0),
            )
        ):
            merged[i] = merged[i] + part.sum(0).double()
    if means is None:
        n_neg, n_pos, sum_neg, sum_pos = merged
        tiny = torch.finfo(torch.float32).tiny
        # NOTE: label_mean_weights' means, from sums merged over blocks.
        mean_pos = torch.where(n_pos > 0, sum_pos / n_pos.clamp(min=tiny), 1.0)
        mean_neg = torch.where(n_neg > 0, sum_neg / n_neg.clamp(min=tiny), 1.0)
        means = torch.stack([mean_neg, mean_pos], dim=1).float()
    label_means = means

    def extra(inputs: dict[str, np.ndarray], y01: np.ndarray) -> dict[str, Any]:
        y = torch.as_tensor(y01)
        per_row = torch.where(y > 0.5, label_means[:, 1], label_means[:, 0])
        return {"sample_weight": per_row.numpy()}

    plan = RefitPlan(MultiTaskNet, label_weights=means.numpy().astype(np.float64))
    return plan, extra


def fit_state(estimator: Any, source: ParquetSource, **given: Any) -> dict[str, Any]:
    """The fitted attributes of an RMTLClassifier fitted on ``source``."""
    from sklearn_rmtl._rmtl import _CRITIC_SEED, _REFIT_SEED

    passed = [name for name, value in given.items() if value is not None]
    if passed:
        raise TypeError(
            f"fit got a ParquetSource and {passed}; with a source, the labels, "
            "sessions, times and weights are its columns (target=, session=, "
            "time=, sample_weight=), so pass none of them to fit."
        )
    _check_supported(estimator)
    fit = _StreamingFit(estimator, source)
    train_critic_here = estimator.weighting != "constant"
    if train_critic_here:
        if source.session is None:
            raise ValueError(
                "RMTLClassifier.fit from a ParquetSource needs a session column "
                "(the critics read whole sessions); pass session=... to the "
                "source, or weighting='constant'."
            )
        # The (session, time) order is verified here, before any training.
        bounds = source._session_bounds()
    data, encoder = fit.prepare()
    params, task_weights = estimator._check_params(data.n_tasks)
    n_train = len(data.train_stream)
    estimator._log("pretrain")
    pretrained = estimator._pretrain_net(data, params, task_weights)
    pretrain_history = net_history(pretrained)
    actor = copy.deepcopy(pretrained.module_)
    critic: SessionCritic | None = None
    critic_history: list[dict[str, Any]] = []
    if train_critic_here:
        estimator._log("critic")
        critic = fit_critics(
            fit,
            data,
            actor,
            embedding_dim=params["embedding_dim"],
            hidden_dims=tuple(estimator.critic_hidden_dims),
            shared=estimator.shared_critic,
            behavior_policy=estimator.behavior_policy,
            action_noise=estimator.action_noise,
            config=TDConfig.from_params(estimator.get_params(deep=False)),
            seed=data.seed + _CRITIC_SEED,
            bounds=bounds,
        )
        critic_history = critic.history
    estimator._log("refit")
    extra: Extra | None
    if critic is None:
        plan = RefitPlan(MultiTaskNet)
        extra = None
    elif WEIGHTINGS[estimator.weighting].label_mean:
        plan, extra = _label_mean_plan(fit, data, actor, critic, estimator)
    else:
        # The critics share the actor's encoder: their inputs are the rows'.
        plan = RefitPlan(
            QWeightedNet,
            net_kwargs={
                "critic": critic.to(data.device),
                "weighting": estimator.weighting,
                "q_lambda": estimator.q_lambda,
            },
        )

        def extra(inputs: dict[str, np.ndarray], y01: np.ndarray) -> dict[str, Any]:
            return {"critic_x_cat": inputs["x_cat"], "critic_x_num": inputs["x_num"]}

    data.train_stream = _TrainStream(fit, n_train, data.seed + _REFIT_SEED, extra)
    net, label_weights = estimator._refit(
        data, encoder, params, task_weights, actor, critic, plan=plan
    )
    history = {
        "pretrain": pretrain_history,
        "critic": critic_history,
        "refit": net_history(net),
    }
    from sklearn_rmtl._rmtl import fitted_rmtl_state

    return fitted_rmtl_state(data, encoder, net, params, critic, label_weights, history)
