"""Embedding size and early-stopping metric of the baselines, paired by seed.

For each backbone, seed, embedding size and ``validation_metric``, one
``MTLClassifier`` (``rmtl reproduce``'s early stopping: the latest 25 % of
the fitted rows held out, patience 2, at most 100 epochs) is fitted and
scored. ``--part valid`` fits the train part and scores the validation part
(for choosing settings); ``--part test`` fits train and validation and
scores the test part (for reporting a choice made on validation). Prints
one line per fit (epochs run, the kept epoch, each task's AUC and logloss)
and appends it to ``--out`` (JSON lines).

Run: ``python benchmarks/study_embedding_size.py --dataset retailrocket
--backbones mmoe ple --part valid --seeds 0 1 --dims 32 128 --metrics loss
auc --precision bfloat16``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sklearn.metrics import log_loss, roc_auc_score

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._experiments import load_dataset, split_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="retailrocket")
    parser.add_argument("--backbones", nargs="+", default=["mmoe", "ple"])
    parser.add_argument("--part", choices=("valid", "test"), default="valid")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--dims", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--metrics", nargs="+", default=["loss", "auc"])
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--out", type=Path, default=Path("embedding_size.jsonl"))
    args = parser.parse_args()
    split = split_dataset(load_dataset(args.dataset, None, 0), args.part)
    y = split.y_eval.to_numpy()
    tasks = list(split.y_eval.columns)
    for backbone in args.backbones:
        for seed in args.seeds:
            for dim in args.dims:
                for metric in args.metrics:
                    start = time.perf_counter()
                    clf = MTLClassifier(
                        backbone=backbone,
                        backbone_params={"embedding_dim": dim},
                        validation_fraction=0.25,
                        n_iter_no_change=2,
                        max_epochs=100,
                        validation_metric=metric,
                        precision=args.precision,
                        random_state=seed,
                    ).fit(split.X_fit, split.y_fit, timestamps=split.t_fit)
                    proba = clf.predict_proba(split.X_eval)
                    history = clf.history_["pretrain"]
                    record = {
                        "dataset": args.dataset,
                        "part": args.part,
                        "backbone": backbone,
                        "seed": seed,
                        "embedding_dim": dim,
                        "validation_metric": metric,
                        "precision": args.precision,
                        "epochs": len(history),
                        "best_at": history[-1].get("best_at"),
                        "seconds": time.perf_counter() - start,
                        **{
                            f"{t} AUC": roc_auc_score(y[:, k], proba[:, k])
                            for k, t in enumerate(tasks)
                        },
                        **{
                            f"{t} logloss": log_loss(y[:, k], proba[:, k])
                            for k, t in enumerate(tasks)
                        },
                    }
                    with args.out.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    scores = ", ".join(
                        f"{k} {v:.4f}"
                        for k, v in record.items()
                        if k.endswith(("AUC", "logloss"))
                    )
                    print(
                        f"{backbone} seed {seed} dim {dim} {metric}: "
                        f"{record['epochs']} epochs (kept {record['best_at']}); "
                        f"{scores}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
