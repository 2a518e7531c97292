"""Does a critic setting make Q predict the returns of sessions it never saw?

Synthetic sessions (``make_sessions(600, random_state=1)``) whose returns are
known: for every seed, one RMTLClassifier per critic configuration below is
fitted on 400 sessions (the same seed: the same pretrained actor), and
:func:`~sklearn_rmtl.inspection.critic_diagnostics` reads its critics on the
other 200 and on its own 400. Prints, per configuration and task, the mean
over seeds of the Spearman correlation of ``Q(s, pi(s))`` with the realised
discounted return and the paired difference to the paper's critic (p-value
of a paired t-test, wins per seed), and the TD steps the critics ran (per
fold with ``cv``). A critic that memorises its sessions' returns scores
higher on its own sessions than on the others; cross-fitted critics read
each own session with the critics of a fold that never saw it.

Run: ``OMP_NUM_THREADS=1 python benchmarks/study_critic_options.py --seeds 5``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from sklearn_rmtl import RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.inspection import critic_diagnostics

BASE = {"hidden_dims": (64, 32), "max_epochs": 8}
CONFIGS = {
    "paper (8 epochs)": {},
    "softplus head": {"output": "softplus"},
    "actor_logit + redraw": {"behavior_policy": "actor_logit", "redraw_actions": True},
    "2000 steps": {"max_epochs": None, "max_steps": 2000},
    "2000 steps, held-out stop": {
        "max_epochs": None,
        "max_steps": 2000,
        "validation_fraction": 0.2,
        "patience": 5,
        "tol": 0.0,
    },
    "cv=5 (cross-fitted)": {"cv": 5},
    "all of them": {
        "output": "softplus",
        "behavior_policy": "actor_logit",
        "redraw_actions": True,
        "max_epochs": None,
        "max_steps": 2000,
        "validation_fraction": 0.2,
        "patience": 5,
        "tol": 0.0,
    },
}


def _table(title: str, rho: dict[str, np.ndarray], steps: dict, tasks: list) -> None:
    """One Markdown table: mean Spearman per task, paired difference to the paper."""
    ref = rho["paper (8 epochs)"]
    print(f"\n{title}")
    header = ["configuration", "TD steps", *tasks, f"vs paper ({', '.join(tasks)})"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, r in rho.items():
        cells = [f"{r[:, k].mean():.3f}" for k in range(len(tasks))]
        diffs = []
        for k in range(len(tasks)):
            d = r[:, k] - ref[:, k]
            p = stats.ttest_rel(r[:, k], ref[:, k]).pvalue if np.any(d) else np.nan
            diffs.append(f"{d.mean():+.3f} (p {p:.3f}, {int((d > 0).sum())}/{len(d)})")
        row = [name, f"{np.mean(steps[name]):.0f}", *cells, "; ".join(diffs)]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    X, Y, sessions, times = make_sessions(600, return_X_y=True, random_state=1)
    train = np.isin(sessions, np.unique(sessions)[:400])
    sides = {"held-out": ~train, "own": train}
    rho: dict[str, dict[str, list]] = {side: {n: [] for n in CONFIGS} for side in sides}
    steps: dict[str, list[int]] = {name: [] for name in CONFIGS}
    for seed in range(args.seeds):
        for name, params in CONFIGS.items():
            start = time.perf_counter()
            clf = RMTLClassifier(
                backbone="mmoe",
                backbone_params={"embedding_dim": 16},
                critic=SessionCritic(**{**BASE, **params}),
                batch_size=256,
                max_epochs=20,
                refit_max_epochs=0,
                random_state=seed,
            ).fit(
                X[train], Y[train], session_ids=sessions[train], timestamps=times[train]
            )
            for side, rows in sides.items():
                diag = critic_diagnostics(
                    clf,
                    X[rows],
                    Y[rows],
                    session_ids=sessions[rows],
                    timestamps=times[rows],
                )
                rho[side][name].append(diag["q_return_spearman"].to_numpy())
            steps[name].append(clf.critic_.history_[-1]["steps"])
            print(
                f"seed {seed} {name:28s} spearman held-out "
                f"{np.round(rho['held-out'][name][-1], 3)} own "
                f"{np.round(rho['own'][name][-1], 3)} steps {steps[name][-1]:5d} "
                f"{time.perf_counter() - start:5.1f}s",
                flush=True,
            )
    tasks = list(diag.index)
    for side, title in (
        ("held-out", "on 200 sessions no critic saw"),
        ("own", "on the 400 training sessions (cv: each by its fold's critics)"),
    ):
        _table(
            f"Spearman(Q, realised return) {title}, {args.seeds} seeds",
            {name: np.array(r) for name, r in rho[side].items()},
            steps,
            tasks,
        )


if __name__ == "__main__":
    main()
