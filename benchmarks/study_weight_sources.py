"""What RMTL's weights say about a row: its own loss, or its session's later rows?

On a bundled sample's fit rows (the train part with ``--evaluate-on valid``,
train + validation with ``test``), for every backbone and seed: the
backbone is pretrained as ``rmtl study`` does it (same settings, embedding
size ``--embedding-dim``), the critics are trained on its predictions on
every session, and again cross-fitted (``SessionCritic(cv=5)``), and
:func:`~sklearn_rmtl.inspection.critic_diagnostics` reads them on the fit
rows: the rows whose refit weights ``RMTLClassifier(weighting="rmtl_fixed")``
would use. Printed per critic, backbone and task, as means over seeds:

- ``Q~return``: Pearson correlation of ``Q(s, pi(s))`` with the realised
  discounted return of the row and its session's later rows;
- ``R2 label+free``: share of the weights' variance explained by the row's
  label, the predicted entropy, the position and the rows left;
- ``+own``: what the row's own reward (Eq. 2) adds to that;
- ``+later``: what the realised return of the session's later rows adds
  beyond all of those. This is the part of the weights that is about the
  session's outcome and not about the row itself;

and, paired by seed, the in-sample critics' ``+later`` minus the
cross-fitted ones' (p-value of a paired t-test, seeds where it is larger).

Run: ``OMP_NUM_THREADS=1 python benchmarks/study_weight_sources.py
--dataset retailrocket --backbones mmoe ple --seeds 5``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sklearn_rmtl._experiments import (
    Settings,
    _p,
    load_dataset,
    paired_difference,
    split_dataset,
)
from sklearn_rmtl.inspection import critic_diagnostics

CRITICS = {"every session": {}, "cross-fitted (cv=5)": {"cv": 5}}
COLUMNS = (
    "q_return_pearson",
    "weight_r2_both",
    "weight_r2_own_reward",
    "weight_r2_later_return",
)


def _parts(diag) -> np.ndarray:
    """(n_tasks, 4): Q~return, R2 label+free, +own, +later."""
    q, both, own, later = (diag[c].to_numpy() for c in COLUMNS)
    return np.column_stack([q, both, own - both, later - own])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        choices=("retailrocket", "taobao", "kuairand"),
        default="retailrocket",
    )
    parser.add_argument("--backbones", nargs="+", default=["mmoe", "ple"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluate-on", choices=("valid", "test"), default="valid")
    parser.add_argument("--embedding-dim", type=int, default=32)
    args = parser.parse_args()
    split = split_dataset(load_dataset(args.dataset, None, 0), args.evaluate_on)
    X, y, s, t = split.X_fit, split.y_fit, split.s_fit, split.t_fit
    backbone_params = {"embedding_dim": args.embedding_dim}
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    tasks: list[str] = []
    for backbone in args.backbones:
        for seed in range(args.seeds):
            start = time.perf_counter()
            actor = Settings(backbone_params=backbone_params).mtl(backbone, seed)
            actor.fit(X, y, session_ids=s, timestamps=t)
            for name, critic_params in CRITICS.items():
                settings = Settings(
                    backbone_params=backbone_params, critic_params=critic_params
                )
                clf = settings.rmtl(actor, seed, refit_max_epochs=0)
                clf.fit(X, y, session_ids=s, timestamps=t)
                diag = critic_diagnostics(clf, X, y, session_ids=s, timestamps=t)
                tasks = list(diag.index)
                parts.setdefault((backbone, name), []).append(_parts(diag))
            print(
                f"{backbone} seed {seed}: {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    print(
        f"\n{args.dataset}, fit rows of --evaluate-on {args.evaluate_on}, "
        f"{args.seeds} seeds: means over seeds"
    )
    print("| backbone | critics | task | Q~return | R2 label+free | +own | +later |")
    print("|---|---|---|---|---|---|---|")
    for (backbone, name), values in parts.items():
        mean = np.mean(values, axis=0)
        for k, task in enumerate(tasks):
            cells = " | ".join(f"{v:.3f}" for v in mean[k])
            print(f"| {backbone} | {name} | {task} | {cells} |")
    print("\n+later, every session minus cross-fitted: mean (p, seeds larger)")
    inside, crossed = CRITICS
    for backbone in args.backbones:
        a = np.array(parts[(backbone, inside)])[:, :, 3]
        b = np.array(parts[(backbone, crossed)])[:, :, 3]
        cells = []
        for k, task in enumerate(tasks):
            inner, outer = dict(enumerate(a[:, k])), dict(enumerate(b[:, k]))
            r = paired_difference(inner, outer, greater_is_better=True)
            stats = f"({_p(r['p_value'])}, {r['wins_label']})"
            cells.append(f"{task} {r['mean_diff']:+.4f} {stats}")
        print(f"{backbone}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
