"""Session MDP and replay-buffer construction: vectorised vs a per-session loop.

Prints rows/s of ``build_transitions`` (sort rows into sessions, link each
row to the next one) and of the replay data the critics train on (behaviour
actions, rewards, next actions), each next to a naive per-session Python
loop timed in the same run on the same rows (the speed-up is that ratio).
The naive loops' outputs are checked against the package's.

Run: ``python benchmarks/bench_mdp.py [--quick]``.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
import torch
from _common import (
    REFERENCE,
    Report,
    fmt_rate,
    make_data,
    median,
    parse_args,
    repeat,
    timed,
)

from sklearn_rmtl._mdp import ACTION_CLIP, build_transitions, rewards
from sklearn_rmtl._validation import check_metadata

ACTION_NOISE = 0.1  # the package default (sklearn_rmtl._defaults)


# ------------------------------------------------------------- naive loops
def naive_transitions_pandas(
    session_ids: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference style: a pandas groupby, one sort and a row loop per session."""
    n = len(session_ids)
    next_row = np.arange(n)
    done = np.zeros(n, dtype=bool)
    frame = pd.DataFrame({"s": session_ids, "t": times, "row": np.arange(n)})
    for _, group in frame.groupby("s", sort=True):
        rows = group.sort_values("t", kind="stable")["row"].to_numpy()
        for i in range(len(rows) - 1):
            next_row[rows[i]] = rows[i + 1]
        done[rows[-1]] = True
    return next_row, done


def naive_transitions_python(
    session_ids: np.ndarray, times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A plain-Python per-session loop (dict of row lists), no pandas."""
    n = len(session_ids)
    sessions: dict[Any, list[int]] = {}
    for i, s in enumerate(session_ids.tolist()):
        sessions.setdefault(s, []).append(i)
    t = times.tolist()
    next_row = list(range(n))
    done = [False] * n
    for rows in sessions.values():
        rows.sort(key=lambda i: t[i])  # stable: ties keep row order
        for a, b in itertools.pairwise(rows):
            next_row[a] = b
        done[rows[-1]] = True
    return np.asarray(next_row), np.asarray(done)


def naive_replay(
    proba: np.ndarray,
    y01: np.ndarray,
    noise: np.ndarray,
    next_row: np.ndarray,
    done: np.ndarray,
) -> list[tuple[int, list[float], list[float], int, list[float], bool]]:
    """One Python tuple per transition (index, action, reward, next, a', done)."""
    sd2 = 2 * ACTION_NOISE
    out = []
    n, k = proba.shape
    for i in range(n):
        action, reward = [], []
        for j in range(k):
            a = min(max(proba[i, j] + min(max(noise[i, j], -sd2), sd2), 0.0), 1.0)
            c = min(max(a, ACTION_CLIP), 1 - ACTION_CLIP)
            y = y01[i, j]
            action.append(a)
            reward.append(y * math.log(c) + (1 - y) * math.log1p(-c))
        nxt = int(next_row[i])
        out.append((i, action, reward, nxt, list(proba[nxt]), bool(done[i])))
    return out


# ------------------------------------------------------- vectorised buffer
def vectorised_replay(
    proba: np.ndarray, y01: np.ndarray, transitions: Any, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The replay data as ``sklearn_rmtl._critic.fit_session_critic`` builds it.

    Mirrors that method (behaviour_policy="actor"): noise drawn in canonical
    (session, time) order, clipped Gaussian exploration, Eq. (2) rewards,
    next actions gathered by row index, and the tensors handed to
    ``train_critic``. States stay row indices (no feature copies).
    """
    rng = np.random.default_rng(seed)
    draws = np.empty_like(proba)
    sd = ACTION_NOISE
    draws[transitions.order] = rng.normal(0.0, sd, proba.shape)
    actions = np.clip(proba + np.clip(draws, -2 * sd, 2 * sd), 0.0, 1.0)
    reward = rewards(y01, actions)
    next_actions = proba[transitions.next_row]
    return {
        "actions": torch.as_tensor(actions, dtype=torch.float32),
        "rewards": torch.as_tensor(reward, dtype=torch.float32),
        "next_row": torch.as_tensor(transitions.next_row, dtype=torch.long),
        "next_actions": torch.as_tensor(next_actions, dtype=torch.float32),
        "done": torch.as_tensor(transitions.done, dtype=torch.float32),
    }


def main() -> dict[str, Any]:
    args = parse_args(__doc__)
    rep = Report("bench_mdp", args)
    n = 500_000 if args.quick else 2_000_000
    n_naive = 30_000 if args.quick else 100_000
    repeats = args.repeats or (3 if args.quick else 5)

    data = make_data(n, seed=0)
    y01 = data.Y.to_numpy(np.float32)
    t_meta, (sids, keys) = timed(
        lambda: (
            check_metadata(data.session_ids, n, name="session_ids", sortable=False),
            check_metadata(data.timestamps, n, name="timestamps", sortable=True),
        )
    )
    rep.add(
        "metadata_rows_s",
        n / t_meta,
        "check_metadata (session ids + datetime timestamps): "
        f"{fmt_rate(n / t_meta)} rows/s",
    )

    # --- MDP: vectorised on all rows, and on the naive subset side by side.
    t_vec = repeat(lambda: build_transitions(sids, keys, n), repeats, warmup=1)
    vec_rate = n / median(t_vec)
    sub = slice(0, n_naive)  # rows are shuffled: a random subset of sessions' rows
    s_sub, k_sub = sids[sub], keys[sub]
    t_vec_sub = repeat(lambda: build_transitions(s_sub, k_sub, n_naive), repeats, 1)
    t_pandas, (nr_p, done_p) = timed(lambda: naive_transitions_pandas(s_sub, k_sub))
    t_python = median(repeat(lambda: naive_transitions_python(s_sub, k_sub), 2))
    nr_py, done_py = naive_transitions_python(s_sub, k_sub)
    tr_sub = build_transitions(s_sub, k_sub, n_naive)
    same = bool(
        np.array_equal(tr_sub.next_row, nr_p)
        and np.array_equal(tr_sub.done, done_p)
        and np.array_equal(tr_sub.next_row, nr_py)
        and np.array_equal(tr_sub.done, done_py)
    )
    vec_sub_rate = n_naive / median(t_vec_sub)
    mdp = {
        "rows": n,
        "rows_s": vec_rate,
        "naive_rows": n_naive,
        "vectorised_rows_s_same_rows": vec_sub_rate,
        "naive_pandas_rows_s": n_naive / t_pandas,
        "naive_python_rows_s": n_naive / t_python,
        "speedup_vs_pandas_loop": vec_sub_rate / (n_naive / t_pandas),
        "speedup_vs_python_loop": vec_sub_rate / (n_naive / t_python),
        "vs_reference": vec_rate / REFERENCE["mdp_rows_s"],
        "fraction_of_reference_limit": vec_rate / REFERENCE["limit_mdp_rows_s"],
        "outputs_identical": same,
    }
    rep.add(
        "mdp",
        mdp,
        f"build_transitions {n:,} rows: {fmt_rate(vec_rate)} rows/s "
        f"({mdp['vs_reference']:.0f}x the reference 7.5k; target >= 1M)\n"
        f"  on {n_naive:,} rows: vectorised {fmt_rate(vec_sub_rate)}/s, pandas "
        f"groupby loop {fmt_rate(mdp['naive_pandas_rows_s'])}/s "
        f"(x{mdp['speedup_vs_pandas_loop']:.0f}), python dict loop "
        f"{fmt_rate(mdp['naive_python_rows_s'])}/s "
        f"(x{mdp['speedup_vs_python_loop']:.0f}); identical links: {same}",
    )

    # --- Replay buffer (actions, rewards, next actions), given the actor's
    # probabilities (the actor forward pass is timed in bench_critic).
    tr = build_transitions(sids, keys, n)
    proba = np.random.default_rng(1).random((n, y01.shape[1])) * 0.2
    t_buf = repeat(lambda: vectorised_replay(proba, y01, tr), repeats, warmup=1)
    buf_rate = n / median(t_buf)
    noise = np.random.default_rng(2).normal(0, ACTION_NOISE, (n_naive, y01.shape[1]))
    t_naive_buf, naive_buf = timed(
        lambda: naive_replay(
            proba[:n_naive], y01[:n_naive], noise, tr_sub.next_row, tr_sub.done
        )
    )
    # Check: the naive rewards equal the package's for the same actions.
    acts = np.array([b[1] for b in naive_buf])
    ok = bool(
        np.allclose(
            np.array([b[2] for b in naive_buf]), rewards(y01[:n_naive], acts), atol=1e-5
        )
    )
    t_vec_buf_sub = median(
        repeat(
            lambda: vectorised_replay(proba[:n_naive], y01[:n_naive], tr_sub),
            repeats,
            1,
        )
    )
    replay = {
        "rows": n,
        "rows_s": buf_rate,
        "naive_rows_s": n_naive / t_naive_buf,
        "vectorised_rows_s_same_rows": n_naive / t_vec_buf_sub,
        "speedup_vs_loop": (n_naive / t_vec_buf_sub) / (n_naive / t_naive_buf),
        "vs_reference": buf_rate / REFERENCE["replay_rows_s"],
        "rewards_match": ok,
    }
    rep.add(
        "replay",
        replay,
        f"replay buffer {n:,} rows: {fmt_rate(buf_rate)} rows/s "
        f"({replay['vs_reference']:.0f}x the reference 10k; target >= 1M); "
        f"per-transition loop {fmt_rate(replay['naive_rows_s'])}/s "
        f"(x{replay['speedup_vs_loop']:.0f} on the same rows); rewards match: {ok}",
    )
    # MDP + buffer together: the numpy part of the critic phase's set-up.
    both = 1.0 / (1.0 / vec_rate + 1.0 / buf_rate)
    rep.add(
        "mdp_and_replay_rows_s", both, f"MDP + replay together: {fmt_rate(both)} rows/s"
    )

    # --- Memory of the numpy parts (tracemalloc sees numpy's allocations).
    mem: dict[str, Any] = {}
    for m in (n // 4, n):
        s_m, k_m = sids[:m], keys[:m]
        tracemalloc.start()
        tr_m = build_transitions(s_m, k_m, m)
        _, peak_mdp = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        buf = vectorised_replay(proba[:m], y01[:m], tr_m)
        _, peak_buf = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        held = sum(v.numel() * v.element_size() for v in buf.values())
        mem[m] = {
            "mdp_peak_bytes_per_row": peak_mdp / m,
            "replay_peak_bytes_per_row": peak_buf / m,
            "replay_held_bytes_per_row": held / m,
        }
        del tr_m, buf
    rep.add(
        "memory",
        mem,
        "tracemalloc peak bytes/row: "
        + "; ".join(
            f"{m:,} rows: MDP {v['mdp_peak_bytes_per_row']:.0f}, buffer "
            f"{v['replay_peak_bytes_per_row']:.0f} (held "
            f"{v['replay_held_bytes_per_row']:.0f})"
            for m, v in mem.items()
        ),
    )
    return rep.done()


if __name__ == "__main__":
    main()
