"""The newer backbones against MMoE and PLE on the bundled samples, paired by seed.

For one dataset (``--dataset``: RetailRocket, Taobao or KuaiRand, the
bundled samples) and each seed, one ``MTLClassifier`` fit per arm at the
settings of ``rmtl study``'s baselines (embedding 32 unless
``--embedding-dim``, early stopping on the latest 25 % of the fitted rows
with patience 2, the dataset's ``retrain_on_all``, bfloat16 where the CPU
multiplies it natively unless ``--precision``). Arms (``--arms``):

- ``mmoe`` and ``ple``: the references every other arm is paired with;
- ``pepnet`` and ``stem``: those backbones at their defaults (PEPNet's gates
  read every categorical column);
- ``esmm``, ``escm2_ipw`` and ``escm2_dr``: ESMM, plain and with ESCM2's
  IPW or DR regulariser (``counterfactual``), also paired with ``esmm``;
- ``task_space``: MMoE trained with ``task_space``, each later task only on
  the rows where an earlier task is positive.

ESMM multiplies its towers in column order, so its arms run only where
every task's positives are (at least 99 %) positives of the task before it;
``task_space`` runs only for the pairs of tasks where the later task's
positives are at least 99 % positives of the earlier one. Both shares are
measured on the fitted rows and printed; an arm that does not apply to the
dataset (too few tasks, no funnel) is skipped with its reason, not run.

Every arm is fitted on the train part and scored on the validation part
(``--evaluate-on valid``, the default; the test part is never read), or
fitted on train + validation and scored on the test part (``--evaluate-on
test``, once, after the validation study). Each task is scored over all
rows (AUC, Logloss): the task-space arm's conditional probabilities are
multiplied along the funnel first, so every arm predicts the same thing.
For each funnel pair, ``later|earlier AUC`` ranks the rows where the
earlier task is positive by each arm's conditional probability (the
task-space arm's own output; ``p_later / p_earlier`` for the others).

Prints and writes to ``--out`` (Markdown) the mean ± std over seeds, the
seconds per fit, epochs and trainable parameters of every arm (STEM holds
its embedding tables once per task plus once), and the paired differences
("arm - mmoe", "arm - ple", "escm2 - esmm") with their paired t-test
p-values and wins per seed. Finished fits are read back from the
``.jsonl`` beside ``--out``, keyed by settings, arm and seed, so an
interrupted study resumes.

Run (validation first, then the test part)::

    python benchmarks/study_models.py --dataset taobao --seeds 0 1 2 3 4
    python benchmarks/study_models.py --dataset taobao --seeds 0 1 2 3 4 \\
        --evaluate-on test
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from sklearn_rmtl import datasets
from sklearn_rmtl._experiments import (
    RETRAIN_ON_ALL,
    RunLog,
    Settings,
    paired_difference,
    split_dataset,
)
from sklearn_rmtl._precision import native_bfloat16
from sklearn_rmtl._task_space import resolve_task_space
from sklearn_rmtl.backbones import BACKBONES

#: Arm -> (backbone, its backbone_params besides the embedding size).
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "mmoe": ("mmoe", {}),
    "ple": ("ple", {}),
    "pepnet": ("pepnet", {}),
    "stem": ("stem", {}),
    "esmm": ("esmm", {}),
    "escm2_ipw": ("esmm", {"counterfactual": "ipw"}),
    "escm2_dr": ("esmm", {"counterfactual": "dr"}),
    "task_space": ("mmoe", {}),
}
#: The arms every other arm is paired with.
REFERENCES = ("mmoe", "ple")
#: Further pairs: (treated, control).
EXTRA_PAIRS = (("ple", "mmoe"), ("escm2_ipw", "esmm"), ("escm2_dr", "esmm"))
#: Backbones whose later tasks are products of the earlier ones (a funnel).
FUNNEL_BACKBONES = ("esmm",)
#: Smallest share of a later task's positives that are positives of an
#: earlier task for the pair to count as a funnel: a share below it means
#: labels a funnel model cannot produce.
FUNNEL_SHARE = 0.99


def funnel_shares(y: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Share of each later task's positives that are positives of an earlier one.

    Returns ``{(earlier, later): share}`` for every pair in y's column order
    (NaN where the later task has no positive).
    """
    positive = y.to_numpy(dtype=float) == 1
    tasks = [str(c) for c in y.columns]
    shares = {}
    for j in range(len(tasks)):
        later = positive[:, j]
        for i in range(j):
            share = positive[later, i].mean() if later.any() else math.nan
            shares[(tasks[i], tasks[j])] = float(share)
    return shares


def task_space_of(shares: dict[tuple[str, str], float]) -> dict[str, str]:
    """``{later: earlier}``: each later task on its nearest earlier funnel step.

    The nearest step, because a chain (purchase on cart on click) is
    followed by ``task_space``, so the earlier steps still apply.
    """
    space: dict[str, str] = {}
    for (earlier, later), share in shares.items():  # earlier ascends per later
        if share >= FUNNEL_SHARE:
            space[later] = earlier
    return space


def skip_reason(
    arm: str, tasks: list[str], shares: dict[tuple[str, str], float]
) -> str | None:
    """Why ``arm`` cannot run on these tasks, or None when it can."""
    backbone = ARMS[arm][0]
    cls = BACKBONES[backbone]
    low, high = cls.min_tasks, getattr(cls, "max_tasks", None)
    if len(tasks) < low or (high is not None and len(tasks) > high):
        return f"{backbone} takes {low} to {high or 'any'} tasks, got {len(tasks)}"
    if backbone in FUNNEL_BACKBONES:
        broken = [
            f"{later}'s positives are {shares[(earlier, later)]:.1%} {earlier}'s"
            for earlier, later in itertools.pairwise(tasks)
            if not shares[(earlier, later)] >= FUNNEL_SHARE
        ]
        if broken:
            return (
                f"{backbone} multiplies its towers in column order, a funnel the "
                f"labels do not follow ({'; '.join(broken)}; < {FUNNEL_SHARE:.0%})"
            )
    if arm == "task_space" and not task_space_of(shares):
        return f"no pair of tasks is a funnel (every share < {FUNNEL_SHARE:.0%})"
    return None


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    # One class only (a tiny scored part): AUC is undefined, not an error.
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else math.nan


def fit_and_score(split, args, arm: str, seed: int, space: dict[str, str]) -> dict:
    """Fit ``arm`` on the fitted rows; its scores, seconds, epochs, parameters."""
    backbone, extra = ARMS[arm]
    settings = Settings(
        max_epochs=args.max_epochs,
        backbone_params={"embedding_dim": args.embedding_dim, **extra},
        rmtl_params={
            "precision": args.precision,
            "retrain_on_all": RETRAIN_ON_ALL[args.dataset],
        },
    )
    clf = settings.mtl(backbone, seed)
    if arm == "task_space":
        clf.set_params(task_space=space)
    start = time.perf_counter()
    clf.fit(split.X_fit, split.y_fit, session_ids=split.s_fit, timestamps=split.t_fit)
    seconds = time.perf_counter() - start
    proba = clf.predict_proba(split.X_eval).astype(float)
    tasks = [str(c) for c in split.y_eval.columns]
    # Conditions first, so each product reads an entire-space condition.
    pairs = resolve_task_space(space, tasks)
    whole, conditional = proba.copy(), proba.copy()
    for k, j in pairs:
        if arm == "task_space":
            whole[:, k] = whole[:, k] * whole[:, j]
        else:
            conditional[:, k] = proba[:, k] / np.maximum(proba[:, j], 1e-12)
    y = split.y_eval.to_numpy(dtype=float)
    scores = {}
    for k, task in enumerate(tasks):
        scores[f"{task} AUC"] = _auc(y[:, k], whole[:, k])
        scores[f"{task} Logloss"] = float(log_loss(y[:, k], whole[:, k], labels=[0, 1]))
    for k, j in pairs:
        rows = y[:, j] == 1
        scores[f"{tasks[k]}|{tasks[j]} AUC"] = _auc(y[rows, k], conditional[rows, k])
    epochs = [len(clf.history_.get(k, [])) for k in ("pretrain", "pretrain_all")]
    return {
        "scores": scores,
        "seconds": seconds,
        "epochs": sum(epochs),
        "parameters": sum(
            p.numel() for p in clf.net_.module_.parameters() if p.requires_grad
        ),
    }


def _cell(diff: dict[str, Any]) -> str:
    p = "p n/a" if math.isnan(diff["p_value"]) else f"p {diff['p_value']:.3f}"
    return f"{diff['mean_diff']:+.4f} ({p}, {diff['wins_label']})"


def tables(runs: dict[str, list[dict]]) -> str:
    """Scores (mean ± std) per arm, then paired differences, as Markdown."""
    metrics = list(next(iter(runs.values()))[0]["scores"])
    # A "later|earlier" metric's bar would split its Markdown column.
    names = [m.replace("|", "\\|") for m in metrics]
    header = ["Arm", *names, "fit s", "epochs", "parameters"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, records in runs.items():
        cells = [
            f"{np.mean([r['scores'][m] for r in records]):.4f} ± "
            f"{np.std([r['scores'][m] for r in records]):.4f}"
            for m in metrics
        ]
        extra = [np.mean([r[k] for r in records]) for k in ("seconds", "epochs")]
        cells += [f"{extra[0]:.0f}", f"{extra[1]:.1f}", f"{records[0]['parameters']:,}"]
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    pairs = [(a, ref) for ref in REFERENCES for a in runs if a not in REFERENCES]
    pairs += list(EXTRA_PAIRS)
    header = ["Difference", *names]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for pair in pairs:
        if not set(pair) <= set(runs):
            continue
        cells = [
            _cell(
                paired_difference(
                    *({r["seed"]: r["scores"][m] for r in runs[a]} for a in pair),
                    "AUC" in m,
                )
            )
            for m in metrics
        ]
        lines.append(f"| {' - '.join(pair)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=["retailrocket", "taobao", "kuairand"], required=True
    )
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluate-on", choices=["valid", "test"], default="valid")
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--precision", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=Settings.max_epochs,
        help="safety cap; early stopping ends the fits (lower it for smoke runs)",
    )
    parser.add_argument("--out", type=Path, help="default: models_<dataset>_<part>.md")
    args = parser.parse_args()
    args.precision = args.precision or (
        "bfloat16" if native_bfloat16("cpu") else "float32"
    )
    out = args.out or Path(f"models_{args.dataset}_{args.evaluate_on}.md")
    # The key of a fit: every option but which arms and seeds, and where to.
    settings = {
        k: v for k, v in vars(args).items() if k not in ("arms", "seeds", "out")
    }
    log = RunLog(out.with_suffix(".jsonl"))
    loader = getattr(datasets, f"load_{args.dataset}")
    split = split_dataset(loader(), args.evaluate_on)
    tasks = [str(c) for c in split.y_fit.columns]
    shares = funnel_shares(split.y_fit)
    space = task_space_of(shares)
    notes = [
        f"- {later}'s positives that are {earlier}'s (fitted rows): {share:.2%}"
        + (
            " (funnel)"
            if share >= FUNNEL_SHARE
            else f" (< {FUNNEL_SHARE:.0%}: no funnel)"
        )
        for (earlier, later), share in shares.items()
    ]
    notes.append(f"- task_space: {space or 'none'}")
    arms = []
    for arm in args.arms:
        reason = skip_reason(arm, tasks, shares)
        if reason:
            notes.append(f"- {arm} skipped: {reason}.")
        else:
            arms.append(arm)
    print("\n".join(notes), flush=True)
    runs: dict[str, list[dict]] = {}
    for arm in arms:
        for seed in args.seeds:
            key = {"settings": settings, "arm": arm, "seed": seed}
            run = log.find(key)
            if run is None:
                run = {**key, **fit_and_score(split, args, arm, seed, space)}
                log.add(run)
                print(
                    f"{arm} seed {seed}: {run['seconds']:.1f} s, {run['epochs']} "
                    f"epochs, {run['parameters']:,} parameters, {run['scores']}",
                    flush=True,
                )
            runs.setdefault(arm, []).append(run)
    if not runs:
        raise SystemExit("No arm applies to this dataset: " + "; ".join(notes))
    text = (
        f"# Backbones on {args.dataset} (scored on {args.evaluate_on}; "
        f"{len(args.seeds)} seeds; {json.dumps(settings)})\n\n"
        + "\n".join(notes)
        + f"\n\n{tables(runs)}\n\n"
        "Scores over all rows, the task-space arm's multiplied along the "
        "funnel; `later|earlier AUC` on the rows where the earlier task is "
        "positive, by each arm's conditional probability. Mean ± std over "
        "seeds; fit s, epochs: mean per fit (epochs include retraining on all "
        "rows); parameters: trainable. Differences: mean over seeds of the "
        "first arm minus the second, fitted with the same seed (p: paired "
        "t-test; wins: seeds where the first arm is better).\n"
    )
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
