"""Test quality of our MMoE and PLE against torch-rechub's, on the same split.

Both libraries train on the same rows of a bundled dataset (temporal 6:2:2
split with whole sessions, train and validation merged for fitting, scored on
the test part), with the same inputs (our ``FeatureEncoder``'s codes and
scaled numbers), embedding size 32 and the same early-stopping hold-out (the
latest 25 % of the fitted rows):

- ours: ``MTLClassifier`` with the library's defaults, except
  ``embedding_dim=32`` and ``validation_fraction=0.25`` (what a user gets);
- torch-rechub: its ``MMOE`` / ``PLE`` with the same expert, gate and tower
  sizes (8 experts 512-256; PLE 4 shared + 4 specific experts per task and
  level, 2 levels of 512 then 256 in ours, 2 levels of 256-wide one-layer
  experts in torch-rechub, whose levels cannot differ in width; towers
  128-64; dropout 0.2), trained by its ``MTLTrainer`` (Adam, lr 1e-3, weight
  decay 1e-5, batch 2048) for at most ``--peer-epochs`` epochs with early
  stopping on the hold-out's click AUC (patience 2), keeping the best epoch.
  Its categorical columns are ``SparseFeature`` (normal(0, 1e-4) tables),
  its numerical ones ``DenseFeature`` (the scaled values, concatenated).

With ``--retrain``, both libraries train again on all fitted rows, the
hold-out included, for the length early stopping chose: ours with
``retrain_on_all=True`` (the same number of optimizer steps), torch-rechub
for its best epoch count scaled by the rows (``round(best * n_fit / n_all)``
epochs, at least 1; its trainer has no step-level control) from a fresh
network of the same seed.

Printed: per seed and as mean +- std over seeds, the scored part's AUC and logloss of
each task for both libraries, the differences (ours - torch-rechub) and
Welch's t-test p-value.

torch-rechub is an optional benchmark dependency (``pip install
torch-rechub``), never a runtime one of the package.

Run: ``python benchmarks/bench_peer_quality.py [--quick] [--seeds 0,1,2]
[--models mmoe,ple] [--dataset retailrocket] [--peer-epochs 3] [--retrain]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import Report, parse_args
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score

from sklearn_rmtl import MTLClassifier, datasets
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._experiments import Split, paired_difference, split_dataset

EMBEDDING_DIM = 32
VALIDATION_FRACTION = 0.25
PATIENCE = 2
BATCH_SIZE = 2048
MODELS = ("mmoe", "ple")
DISPLAY = {"mmoe": "MMoE", "ple": "PLE"}


def _require_rechub() -> Any:
    try:
        import torch_rechub
    except ImportError as exc:
        raise SystemExit(
            "bench_peer_quality.py needs torch-rechub, an optional benchmark "
            "dependency: pip install torch-rechub (it is not needed by the "
            "package itself)."
        ) from exc
    return torch_rechub


def task_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    p = np.clip(proba, 1e-7, 1 - 1e-7)
    for k in range(y.shape[1]):
        out[f"auc{k}"] = float(roc_auc_score(y[:, k], p[:, k]))
        out[f"logloss{k}"] = float(log_loss(y[:, k], p[:, k], labels=[0, 1]))
    return out


def load_split(dataset: str, evaluate_on: str) -> tuple[Split, list[str]]:
    """A bundled dataset's split (fitted and scored rows) and its task names."""
    split = split_dataset(
        getattr(datasets, f"load_{dataset}")(), evaluate_on=evaluate_on
    )
    return split, [str(c) for c in split.y_eval.columns]


def metric_labels(tasks: list[str]) -> tuple[list[str], dict[str, str]]:
    """The keys of :func:`task_scores` in print order, and their labels."""
    metrics = [f"{m}{k}" for k in range(len(tasks)) for m in ("auc", "logloss")]
    label = {
        f"{m}{k}": f"{t} {'AUC' if m == 'auc' else m}"
        for m in ("auc", "logloss")
        for k, t in enumerate(tasks)
    }
    return metrics, label


def _holdout(split: Split) -> np.ndarray:
    """The latest quarter of the fitted rows, as our early stopping holds out."""
    n = len(split.t_fit)
    order = np.argsort(split.t_fit, kind="stable")
    mask = np.zeros(n, dtype=bool)
    mask[order[-max(1, round(VALIDATION_FRACTION * n)) :]] = True
    return mask


def run_ours(
    model: str, split: Split, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    overrides = dict(overrides)
    sizes = {"embedding_dim": EMBEDDING_DIM, **overrides.pop("backbone_params", {})}
    clf = MTLClassifier(
        backbone=model,
        backbone_params={
            k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()
        },
        validation_fraction=VALIDATION_FRACTION,
        random_state=seed,
        **overrides,
    )
    t0 = time.perf_counter()
    clf.fit(split.X_fit, split.y_fit, timestamps=split.t_fit)
    wall = time.perf_counter() - t0
    scores = task_scores(split.y_eval.to_numpy(), clf.predict_proba(split.X_eval))
    return {**scores, "epochs": clf.n_iter_, "wall_s": wall}


class EncodedSplit:
    """Our encoder's codes and scaled numbers as feature dicts (torch-rechub's form)."""

    def __init__(self, split: Split) -> None:
        enc = FeatureEncoder().fit(split.X_fit)
        n_cat = len(enc.cardinalities_)
        names = [f"f{j}" for j in range(enc.transform(split.X_fit[:1]).shape[1])]
        self.sparse = [(names[j], int(c)) for j, c in enumerate(enc.cardinalities_)]
        self.dense = names[n_cat:]

        def as_dict(X: Any) -> dict[str, torch.Tensor]:
            Xt = enc.transform(X)
            return {
                name: torch.as_tensor(
                    Xt[:, j].astype(np.int64 if j < n_cat else np.float32)
                )
                for j, name in enumerate(names)
            }

        self.x_fit = as_dict(split.X_fit)
        self.x_eval = as_dict(split.X_eval)
        self.y_fit = torch.as_tensor(split.y_fit.to_numpy(), dtype=torch.float32)
        self.y_eval = split.y_eval.to_numpy()
        self.valid = _holdout(split)

    def loader(self, part: np.ndarray, *, shuffle: bool, seed: int = 0) -> Any:
        from torch.utils.data import DataLoader
        from torch_rechub.utils.data import TorchDataset

        x = {k: v[part] for k, v in self.x_fit.items()}
        return DataLoader(
            TorchDataset(x, self.y_fit[part]),
            batch_size=BATCH_SIZE,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed),
        )


def _peer_model(
    model: str, data: EncodedSplit, n_tasks: int, dim: int = EMBEDDING_DIM
) -> torch.nn.Module:
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE, PLE

    features = [
        SparseFeature(name, vocab_size=card, embed_dim=dim)
        for name, card in data.sparse
    ] + [DenseFeature(name) for name in data.dense]
    tasks = ["classification"] * n_tasks
    towers = [{"dims": [128, 64], "dropout": 0.2}] * n_tasks
    if model == "mmoe":
        return MMOE(
            features,
            tasks,
            n_expert=8,
            expert_params={"dims": [512, 256], "dropout": 0.2},
            tower_params_list=towers,
        )
    return PLE(
        features,
        tasks,
        n_level=2,
        n_expert_specific=4,
        n_expert_shared=4,
        expert_params={"dims": [256], "dropout": 0.2},
        tower_params_list=towers,
    )


def run_peer(
    model: str, data: EncodedSplit, seed: int, epochs: int, retrain: bool = False
) -> dict[str, Any]:
    from torch_rechub.trainers import MTLTrainer

    def trainer_for(net: Any, tmp: str) -> Any:
        return MTLTrainer(
            net,
            task_types=["classification"] * data.y_fit.shape[1],
            optimizer_params={"lr": 1e-3, "weight_decay": 1e-5},
            n_epoch=epochs,
            earlystop_taskid=0,
            earlystop_patience=PATIENCE,
            model_path=tmp,
        )

    torch.manual_seed(seed)
    net = _peer_model(model, data, data.y_fit.shape[1])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(net, tmp)
        # The stopper keeps the best weights but not their epoch: count them.
        checks: list[bool] = []
        stopper = trainer.early_stopper
        decide = stopper.stop_training

        def counted(score: float, weights: Any) -> bool:
            best = stopper.best_auc
            stop = decide(score, weights)
            checks.append(stopper.best_auc != best)
            return stop

        stopper.stop_training = counted
        # The trainer prints every epoch; keep the report readable.
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.fit(
                data.loader(~data.valid, shuffle=True, seed=seed),
                data.loader(data.valid, shuffle=False),
            )
        # Best of the epochs run (the trainer restores it only when it stops).
        net.load_state_dict(stopper.best_weights)
        best_epoch = max(i + 1 for i, improved in enumerate(checks) if improved)
        if retrain:
            share = float((~data.valid).mean())
            n_epochs = max(1, round(best_epoch * share))
            torch.manual_seed(seed)
            net = _peer_model(model, data, data.y_fit.shape[1])
            trainer = trainer_for(net, tmp)
            everything = np.ones(len(data.valid), dtype=bool)
            for _ in range(n_epochs):
                trainer.train_one_epoch(
                    data.loader(everything, shuffle=True, seed=seed)
                )
    wall = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        proba = net(data.x_eval).numpy()
    return {**task_scores(data.y_eval, proba), "wall_s": wall, "best_epoch": best_epoch}


def mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} +- {sd:.4f}"


def paired_by_seed(
    first: dict[Any, dict[str, float]],
    second: dict[Any, dict[str, float]],
    metrics: list[str],
) -> dict[str, dict[str, Any]]:
    """Per metric, first minus second over the seeds both ran (runs by seed)."""
    return {
        m: paired_difference(
            {s: r[m] for s, r in first.items()},
            {s: r[m] for s, r in second.items()},
            m.startswith("auc"),
        )
        for m in metrics
    }


def run_line(run: dict[str, Any], metrics: list[str], label: dict[str, str]) -> str:
    """One fit's scores, epochs, time, rows/s and parameters, on one line."""
    return (
        "  ".join(f"{label[m]} {run[m]:.4f}" for m in metrics)
        + f"  {run['epochs']} epochs {run['wall_s']:.0f} s "
        f"{run['rows_per_s']:.0f} rows/s {run['parameters']:,} parameters"
    )


def arm_line(
    runs: list[dict[str, Any]], metrics: list[str], label: dict[str, str]
) -> str:
    """An arm's mean +- std over seeds, and its mean epochs, time and rows/s."""
    return (
        "  ".join(f"{label[m]} {mean_std([r[m] for r in runs])}" for m in metrics)
        + f"  epochs {statistics.mean(r['epochs'] for r in runs):.1f}"
        f"  {statistics.mean(r['wall_s'] for r in runs):.0f} s"
        f"  {statistics.mean(r['rows_per_s'] for r in runs):.0f} rows/s"
        f"  {runs[0]['parameters']:,} parameters"
    )


def diff_line(diffs: dict[str, dict[str, Any]], label: dict[str, str]) -> str:
    """Paired differences per metric: mean, p-value and wins per seed."""
    cells = []
    for m, d in diffs.items():
        p = d["p_value"]
        p_text = "p n/a" if p != p else f"p {p:.3f}"
        cells.append(f"{label[m]} {d['mean_diff']:+.4f} ({p_text}, {d['wins_label']})")
    return "  ".join(cells)


def _welch(a: list[float], b: list[float]) -> float:
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--models", default=",".join(MODELS))
        p.add_argument("--dataset", default="retailrocket")
        p.add_argument(
            "--evaluate-on",
            choices=("test", "valid"),
            default="test",
            help="test: fit on train + validation, score on test; valid: fit "
            "on train, score on validation (for choosing settings)",
        )
        p.add_argument(
            "--peer-epochs",
            type=int,
            default=3,
            help="torch-rechub's epochs; the best on the hold-out is kept",
        )
        p.add_argument(
            "--retrain",
            action="store_true",
            help="both libraries train again on all fitted rows for the length "
            "early stopping chose (ours: retrain_on_all=True)",
        )
        p.add_argument(
            "--ours-kwargs",
            default="{}",
            help="JSON of MTLClassifier overrides, to try a default before "
            "changing it (the report then says ours is not at its defaults)",
        )

    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(__doc__, extra)
    _require_rechub()
    rep = Report("bench_peer_quality", args)
    overrides = json.loads(args.ours_kwargs)
    if args.retrain:
        overrides["retrain_on_all"] = True
    if overrides:
        print(f"NOTE: ours is NOT at the library's defaults: {overrides}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        seeds = seeds[:1]
    split, tasks = load_split(args.dataset, args.evaluate_on)
    data = EncodedSplit(split)
    rep.add(
        "setup",
        {
            "dataset": args.dataset,
            "sizes": split.sizes,
            "seeds": seeds,
            "evaluate_on": args.evaluate_on,
            "ours_overrides": overrides,
            "retrain": args.retrain,
        },
        f"{args.dataset}: {split.sizes}, scored on {args.evaluate_on}, tasks "
        f"{tasks}, seeds {seeds}, "
        f"torch-rechub best of {args.peer_epochs} epochs",
    )
    metrics, label = metric_labels(tasks)
    results: dict[str, Any] = {}
    for model in args.models.split(","):
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "torch-rechub": []}
        for seed in seeds:
            ours = run_ours(model, split, seed, overrides)
            peer = run_peer(model, data, seed, args.peer_epochs, args.retrain)
            runs["ours"].append(ours)
            runs["torch-rechub"].append(peer)
            print(
                f"{DISPLAY[model]} seed {seed}: "
                + "  ".join(
                    f"{label[m]} {ours[m]:.4f} vs {peer[m]:.4f}" for m in metrics
                )
                + f"  (ours {ours['epochs']} epochs {ours['wall_s']:.0f} s, "
                f"torch-rechub {peer['wall_s']:.0f} s)",
                flush=True,
            )
        summary = {}
        for m in metrics:
            a = [r[m] for r in runs["ours"]]
            b = [r[m] for r in runs["torch-rechub"]]
            summary[m] = {
                "ours": a,
                "torch-rechub": b,
                "diff": statistics.mean(a) - statistics.mean(b),
                "welch_p": _welch(a, b),
            }
            print(
                f"  {DISPLAY[model]} {label[m]:>18s}: ours {mean_std(a)}  "
                f"torch-rechub {mean_std(b)}  diff {summary[m]['diff']:+.4f}  "
                f"p={summary[m]['welch_p']:.3f}",
                flush=True,
            )
        results[model] = {"runs": runs, "summary": summary}
    rep.add("results", results)
    return rep.done()


if __name__ == "__main__":
    main()
