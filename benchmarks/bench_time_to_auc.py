"""Training time to a validation AUC: sklearn-rmtl against torch-rechub on CPU.

Rows/s alone (``bench_peers.py``) compares the libraries at one setting; this
script times each library at **its own best validated settings** on the
bundled RetailRocket temporal split (6:2:2 by time, whole sessions): both fit
on the train part and are scored on the validation part after every epoch
(the test part is never read). Recorded per epoch: the cumulative training
wall time (the epoch loops only; the validation pass is timed apart and
reported separately) and the validation AUC of each task; their mean is the
single number compared.

Settings (where each comes from):

- sklearn-rmtl: ``MTLClassifier`` with the paper's networks (the package's
  defaults: no batch normalisation, Xavier embeddings, no weight decay) at
  ``embedding_dim=128``, stopped when the mean task AUC has not improved for
  2 epochs, the best epoch kept: docs/backbone_quality.rst, "Embedding
  size", the best validation rows ("MMoE / PLE embedding 128, either":
  click AUC 0.6170 / 0.6148, patience 2, ``--precision bfloat16``), and
  "What early stopping compares" (``validation_metric="auc"``, the mean
  per-task AUC). Run in float32 and with ``precision="bfloat16"``.
- torch-rechub: ``MMOE`` / ``PLE`` as ``bench_peer_quality.py`` builds them
  (8 experts 512-256 / 2 levels of 4 + 4 experts 256 wide, towers 128-64,
  dropout 0.2, its batch normalisation and normal(0, 1e-4) embeddings) at
  embedding ``--peer-embedding-dim`` (32, the size of the side-by-side in
  docs/backbone_quality.rst), trained by its ``MTLTrainer`` with its
  settings there: Adam lr 1e-3, weight decay 1e-5, early stopping on the
  first task's (click) AUC with patience 2 (its own ``EarlyStopper``), the
  best epoch kept. float32 (it has no mixed-precision option).

Both: batch 2048, the same rows and inputs (our ``FeatureEncoder``'s codes
and scaled numbers, fitted on the train part). The stopping rules read the
validation part's AUC (the library's own rule, applied to the scored part
instead of a hold-out of the train part, so that both train on the same
rows), or end at ``--max-epochs``.

Runs alternate (per seed: ours float32, ours bfloat16, torch-rechub), so
ratios compare timings taken minutes apart in one process. Printed per
model: for each run the target ``--target`` (default: the lowest of the
runs' mean best AUC minus 0.002, a level every run reaches on average), the
median over seeds of the training time to reach it and to the kept (best)
epoch, the kept epoch's mean AUC, the epochs run, the training rows/s and
the evaluation time per epoch, and the ratio of torch-rechub's times to
each run's.

torch-rechub is an optional benchmark dependency (``pip install
torch-rechub``), never a runtime one of the package.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_time_to_auc.py --threads 1
[--quick] [--models mmoe,ple] [--seeds 0,1] [--max-epochs 12]
[--target 0.61] [--peer-embedding-dim 32]``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import Report, fmt_rate, median, parse_args
from bench_peer_quality import PATIENCE, EncodedSplit, _peer_model, _require_rechub
from bench_peers import _aucs, peer_aucs, peer_epoch
from scipy.special import expit
from skorch.callbacks import Callback

from sklearn_rmtl import MTLClassifier, datasets
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._experiments import Split, split_dataset
from sklearn_rmtl._fit_data import encode_with
from sklearn_rmtl._training import StopTraining

OURS_EMBEDDING_DIM = 128
RUNS = ("sklearn-rmtl float32", "sklearn-rmtl bfloat16", "torch-rechub float32")
PEER = RUNS[-1]


class _Curve:
    """Per-epoch training seconds, evaluation seconds and validation AUCs."""

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.eval_s: list[float] = []
        self.aucs: list[list[float]] = []
        self.kept = -1

    def add(self, train_s: float, eval_s: float, aucs: list[float]) -> None:
        self.train_s.append(train_s)
        self.eval_s.append(eval_s)
        self.aucs.append(aucs)

    @property
    def mean_auc(self) -> np.ndarray:
        return np.mean(self.aucs, axis=1)

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.train_s)

    def time_to(self, target: float) -> float:
        """Training seconds to the first epoch at or above ``target``."""
        reached = np.flatnonzero(self.mean_auc >= target)
        return float(self.cumulative[reached[0]]) if reached.size else math.nan


class _EpochProbe(Callback):
    """Times each epoch of our fit and scores the validation part after it.

    Runs after the library's callbacks, so an epoch's time ends before the
    scoring starts; stops training by our early-stopping rule on the mean
    task AUC (patience epochs without a better one).
    """

    def __init__(self, inputs: dict[str, np.ndarray], y: np.ndarray) -> None:
        self.inputs, self.y = inputs, y
        self.curve = _Curve()
        self.proba: np.ndarray | None = None

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        train_s = time.perf_counter() - self.start
        t0 = time.perf_counter()
        # The skorch net's predict_proba gives the logits.
        self.proba = expit(np.asarray(net.predict_proba(self.inputs)))
        aucs = _aucs(self.y, self.proba)
        self.curve.add(train_s, time.perf_counter() - t0, aucs)
        mean = self.curve.mean_auc
        self.curve.kept = int(np.argmax(mean))
        if len(mean) - 1 - self.curve.kept >= PATIENCE:
            raise StopTraining


def run_ours(
    model: str, split: Split, precision: str, seed: int, max_epochs: int
) -> _Curve:
    # The estimator's encoder at its defaults, fitted on the same rows.
    inputs = encode_with(FeatureEncoder().fit(split.X_fit), split.X_eval)
    probe = _EpochProbe(inputs, split.y_eval.to_numpy())
    clf = MTLClassifier(
        backbone=model,
        backbone_params={"embedding_dim": OURS_EMBEDDING_DIM},
        max_epochs=max_epochs,
        early_stopping=False,
        precision=precision,
        random_state=seed,
        callbacks=[("epoch_probe", probe)],
    ).fit(split.X_fit, split.y_fit)
    # The probe scored what predict_proba scores after the last epoch.
    np.testing.assert_allclose(
        clf.predict_proba(split.X_eval), probe.proba, rtol=1e-5, atol=1e-6
    )
    return probe.curve


def run_peer(
    model: str, data: EncodedSplit, seed: int, max_epochs: int, dim: int
) -> _Curve:
    from torch_rechub.basic.callback import EarlyStopper
    from torch_rechub.trainers import MTLTrainer

    torch.manual_seed(seed)
    n_tasks = data.y_fit.shape[1]
    net = _peer_model(model, data, n_tasks, dim)
    loader = data.loader(np.ones(len(data.y_fit), dtype=bool), shuffle=True, seed=seed)
    stopper = EarlyStopper(patience=PATIENCE)
    curve = _Curve()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MTLTrainer(
            net,
            task_types=["classification"] * n_tasks,
            optimizer_params={"lr": 1e-3, "weight_decay": 1e-5},
            n_epoch=max_epochs,
            model_path=tmp,
        )
        for _ in range(max_epochs):
            train_s = peer_epoch(trainer, loader)
            t0 = time.perf_counter()
            aucs = peer_aucs(net, data)
            curve.add(train_s, time.perf_counter() - t0, aucs)
            best = stopper.best_auc
            # Its rule: the first task's AUC, patience epochs without a better one.
            stop = stopper.stop_training(aucs[0], net.state_dict())
            if stopper.best_auc != best:
                curve.kept = len(curve.aucs) - 1
            if stop:
                break
    return curve


def _summary(
    curves: dict[str, list[_Curve]], target: float, n_rows: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, runs in curves.items():
        to_target = [c.time_to(target) for c in runs]
        reached = [t for t in to_target if np.isfinite(t)]
        out[name] = {
            "to_target_s": median(reached) if reached else math.nan,
            "reached": f"{len(reached)}/{len(runs)}",
            "to_best_s": median([float(c.cumulative[c.kept]) for c in runs]),
            "best_auc": float(np.mean([c.mean_auc[c.kept] for c in runs])),
            "best_aucs": np.mean([c.aucs[c.kept] for c in runs], axis=0).tolist(),
            "best_epoch": median([c.kept + 1 for c in runs]),
            "epochs": median([len(c.aucs) for c in runs]),
            "rows_s": median([n_rows * len(c.aucs) / c.cumulative[-1] for c in runs]),
            "eval_s": median([float(np.mean(c.eval_s)) for c in runs]),
            "curves": [
                {"train_s": c.train_s, "eval_s": c.eval_s, "aucs": c.aucs} for c in runs
            ],
        }
    return out


def _table(summary: dict[str, Any], tasks: list[str]) -> list[str]:
    peer = summary[PEER]
    lines = [
        f"  {'run':22s} {'to target':>10s} {'to best':>9s} {'best AUC':>9s} "
        f"{'(' + ' / '.join(tasks) + ')':>17s} {'best ep':>7s} {'epochs':>6s} "
        f"{'rows/s':>7s} {'eval/ep':>7s}  torch-rechub time / this"
    ]
    for name, s in summary.items():
        per_task = " / ".join(f"{a:.4f}" for a in s["best_aucs"])
        lines.append(
            f"  {name:22s} {s['to_target_s']:8.1f} s {s['to_best_s']:7.1f} s "
            f"{s['best_auc']:9.4f} {'(' + per_task + ')':>17s} "
            f"{s['best_epoch']:7g} {s['epochs']:6g} {fmt_rate(s['rows_s']):>7s} "
            f"{s['eval_s']:5.2f} s  to target "
            f"{peer['to_target_s'] / s['to_target_s']:.2f}x "
            f"({s['reached']} reached), to best "
            f"{peer['to_best_s'] / s['to_best_s']:.2f}x"
        )
    return lines


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--models", default="mmoe")
        p.add_argument("--seeds", default="0,1")
        p.add_argument("--max-epochs", type=int, default=12)
        p.add_argument(
            "--target",
            type=float,
            default=None,
            help="validation mean AUC to time (default: the lowest run's mean "
            "best AUC minus 0.002)",
        )
        p.add_argument("--peer-embedding-dim", type=int, default=32)

    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(__doc__, extra)
    _require_rechub()
    rep = Report("bench_time_to_auc", args)
    cpu = torch.cpu
    rep.add(
        "cpu",
        {
            "capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": bool(cpu._is_avx512_bf16_supported()),
            "amx_tile": bool(cpu._is_amx_tile_supported()),
        },
        f"torch.cpu: capability {torch.backends.cpu.get_cpu_capability()}, "
        f"AVX512-BF16 {cpu._is_avx512_bf16_supported()}, "
        f"AMX tiles {cpu._is_amx_tile_supported()}, "
        f"{torch.get_num_threads()} torch thread(s)",
    )
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    max_epochs = min(args.max_epochs, 3) if args.quick else args.max_epochs
    split = split_dataset(datasets.load_retailrocket(), evaluate_on="valid")
    data = EncodedSplit(split)
    tasks = [str(t) for t in split.y_eval.columns]
    n_rows = len(split.X_fit)
    for model in args.models.split(","):
        curves: dict[str, list[_Curve]] = {name: [] for name in RUNS}
        for seed in seeds:
            for name in RUNS:
                if name == PEER:
                    curve = run_peer(
                        model, data, seed, max_epochs, args.peer_embedding_dim
                    )
                else:
                    precision = name.split()[-1]
                    curve = run_ours(model, split, precision, seed, max_epochs)
                curves[name].append(curve)
                print(
                    f"{model} seed {seed} {name}: mean AUC by epoch "
                    + " ".join(f"{a:.4f}" for a in curve.mean_auc)
                    + f"; training s {' '.join(f'{s:.1f}' for s in curve.train_s)}",
                    flush=True,
                )
        target = args.target
        if target is None:
            best = [np.mean([c.mean_auc[c.kept] for c in cs]) for cs in curves.values()]
            target = min(best) - 0.002
        summary = _summary(curves, target, n_rows)
        rep.add(
            model,
            {"target": target, "seeds": seeds, "runs": summary},
            "\n".join(
                [
                    f"{model}, {n_rows:,} train rows, scored on "
                    f"{len(split.X_eval):,} validation rows, seeds {seeds}, at "
                    f"most {max_epochs} epochs; target mean AUC {target:.4f}; "
                    "medians over seeds (best AUC: mean), training time only:",
                    *_table(summary, tasks),
                ]
            ),
        )
    return rep.done()


if __name__ == "__main__":
    main()
