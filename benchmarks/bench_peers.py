"""Training throughput and test AUC of one MMoE / PLE in sklearn-rmtl and torch-rechub.

Both libraries train the same networks on the same rows of the bundled
RetailRocket sample (temporal split with whole sessions; train and
validation parts fitted, the test part scored), batch 2048, Adam at lr
1e-3, for ``--epochs`` epochs without early stopping:

- MMoE: 8 experts 512-256, one softmax gate per task, towers 128-64;
- PLE: 2 extraction levels of 4 shared + 4 task-specific one-layer experts
  256 wide (torch-rechub's levels cannot differ in width), towers 128-64;
- embeddings of ``--embedding-dim`` (the paper's 128) per categorical
  column, the numerical columns concatenated; dropout 0.2; batch
  normalisation after every hidden layer and in the gates, as torch-rechub
  builds them (``batch_norm=True, gate_batch_norm=True`` in ours).

sklearn-rmtl runs ``MTLClassifier(...).fit`` in float32 and with
``precision="bfloat16"``; torch-rechub runs its ``MTLTrainer`` epoch loop
over its own ``DataLoader`` (the inputs: our encoder's codes and scaled
numbers). Rounds alternate the three runs, so each ratio compares timings
taken minutes apart in one process; medians over rounds are printed:
training rows/s (epoch loops only; for ours skorch's ``dur``), the ratio
to torch-rechub, and each run's test AUC per task.

torch-rechub is an optional benchmark dependency (``pip install
torch-rechub``), never a runtime one of the package.

Run: ``python benchmarks/bench_peers.py [--quick] [--models mmoe,ple]
[--epochs 2] [--rounds 2]``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import Report, fmt_rate, median, parse_args
from bench_peer_quality import EncodedSplit, _peer_model, _require_rechub
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._experiments import load_dataset, split_dataset

BATCH_SIZE = 2048
#: Our backbone_params of each network (the rest are the paper's defaults).
OURS = {
    "mmoe": {"bottom_dims": (512, 256), "n_experts": 8},
    "ple": {"bottom_dims": (256, 256), "n_shared_experts": 4, "n_specific_experts": 4},
}


def _aucs(y: np.ndarray, proba: np.ndarray) -> list[float]:
    return [float(roc_auc_score(y[:, k], proba[:, k])) for k in range(y.shape[1])]


def peer_epoch(trainer: Any, loader: Any) -> float:
    """Seconds of one epoch of torch-rechub's ``MTLTrainer``, its output muted."""
    start = time.perf_counter()
    # Its progress bar and prints would flood the report.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        trainer.train_one_epoch(loader)
    return time.perf_counter() - start


def peer_aucs(net: torch.nn.Module, data: EncodedSplit) -> list[float]:
    """Per-task AUC of a torch-rechub network on ``data``'s scored rows."""
    net.eval()
    with torch.no_grad():
        return _aucs(data.y_eval, net(data.x_eval).numpy())


def run_ours(
    model: str, split: Any, precision: str, epochs: int, dim: int, seed: int
) -> dict[str, Any]:
    clf = MTLClassifier(
        backbone=model,
        backbone_params={
            **OURS[model],
            "embedding_dim": dim,
            "batch_norm": True,
            "gate_batch_norm": True,
        },
        max_epochs=epochs,
        early_stopping=False,
        precision=precision,
        random_state=seed,
    ).fit(split.X_fit, split.y_fit)
    seconds = sum(row["dur"] for row in clf.history_["pretrain"])
    return {
        "rows_s": len(split.X_fit) * epochs / seconds,
        "auc": _aucs(split.y_eval.to_numpy(), clf.predict_proba(split.X_eval)),
    }


def run_peer(
    model: str, data: EncodedSplit, epochs: int, dim: int, seed: int
) -> dict[str, Any]:
    from torch_rechub.trainers import MTLTrainer

    torch.manual_seed(seed)
    n_tasks = data.y_fit.shape[1]
    net = _peer_model(model, data, n_tasks, dim)
    everything = np.ones(len(data.y_fit), dtype=bool)
    loader = data.loader(everything, shuffle=True, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MTLTrainer(
            net,
            task_types=["classification"] * n_tasks,
            optimizer_params={"lr": 1e-3, "weight_decay": 0.0},
            n_epoch=epochs,
            model_path=tmp,
        )
        seconds = sum(peer_epoch(trainer, loader) for _ in range(epochs))
    return {
        "rows_s": len(data.y_fit) * epochs / seconds,
        "auc": peer_aucs(net, data),
    }


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--models", default="mmoe,ple")
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--rounds", type=int, default=None)
        p.add_argument("--embedding-dim", type=int, default=128)

    args = parse_args(__doc__, extra)
    _require_rechub()
    rep = Report("bench_peers", args)
    epochs = args.epochs or (1 if args.quick else 2)
    rounds = args.rounds or (1 if args.quick else 2)
    split = split_dataset(load_dataset("retailrocket", None, 0), "test")
    data = EncodedSplit(split)
    tasks = list(split.y_eval.columns)
    for model in args.models.split(","):
        runs: dict[str, list[dict[str, Any]]] = {
            "sklearn-rmtl float32": [],
            "sklearn-rmtl bfloat16": [],
            "torch-rechub float32": [],
        }
        for r in range(rounds):
            dim = args.embedding_dim
            runs["sklearn-rmtl float32"].append(
                run_ours(model, split, "float32", epochs, dim, r)
            )
            runs["sklearn-rmtl bfloat16"].append(
                run_ours(model, split, "bfloat16", epochs, dim, r)
            )
            runs["torch-rechub float32"].append(run_peer(model, data, epochs, dim, r))
        peer = median([x["rows_s"] for x in runs["torch-rechub float32"]])
        summary: dict[str, Any] = {}
        lines = [
            f"{model}, {len(split.X_fit):,} RetailRocket rows, {epochs} epoch(s), "
            f"embedding {args.embedding_dim}, {rounds} round(s):"
        ]
        for name, rows in runs.items():
            rate = median([x["rows_s"] for x in rows])
            auc = np.mean([x["auc"] for x in rows], axis=0)
            summary[name] = {"rows_s": rate, "vs_peer": rate / peer, "auc": auc}
            shown = ", ".join(f"{t} {a:.4f}" for t, a in zip(tasks, auc, strict=True))
            lines.append(
                f"  {name:22s} {fmt_rate(rate)} rows/s ({rate / peer:.2f}x "
                f"torch-rechub); test AUC {shown}"
            )
        rep.add(model, summary, "\n".join(lines))
    return rep.done()


if __name__ == "__main__":
    main()
