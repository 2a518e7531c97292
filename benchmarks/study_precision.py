"""bfloat16 against float32 training: test AUC and logloss, paired by seed.

For each dataset, backbone and seed, two ``MTLClassifier`` fits that differ
only in ``precision`` (``embedding_dim=32``, early stopping on the latest
25 % of the train and validation parts, as in ``rmtl reproduce``) are scored
on the test part. Prints each task's AUC and logloss in both precisions, the
paired difference with its t-test p-value, the largest difference over
seeds and the wins per seed. ``--rmtl`` adds one ``RMTLClassifier`` per
precision and seed, on the first backbone, and prints the correlation of
its refit weights (``loss_weights`` on the test rows) between precisions.
Finished fits are read back from ``--out`` (JSON lines), so a run resumes.

Run: ``python benchmarks/study_precision.py --datasets retailrocket taobao
--backbones esmm mmoe ple --seeds 0 1 2 3 4 [--rmtl]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._experiments import load_dataset, split_dataset

PRECISIONS = ("float32", "bfloat16")


def _scores(split: Any, proba: np.ndarray) -> dict[str, float]:
    y = split.y_eval.to_numpy()
    out = {}
    for k, task in enumerate(split.y_eval.columns):
        out[f"{task} AUC"] = roc_auc_score(y[:, k], proba[:, k])
        out[f"{task} logloss"] = log_loss(y[:, k], proba[:, k])
    return out


def fit_mtl(split: Any, backbone: str, precision: str, seed: int) -> dict[str, Any]:
    clf = MTLClassifier(
        backbone=backbone,
        backbone_params={"embedding_dim": 32},
        validation_fraction=0.25,
        precision=precision,
        random_state=seed,
    )
    start = time.perf_counter()
    clf.fit(split.X_fit, split.y_fit, timestamps=split.t_fit)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, **_scores(split, clf.predict_proba(split.X_eval))}


def fit_rmtl(split: Any, backbone: str, precision: str, seed: int) -> dict[str, Any]:
    est = RMTLClassifier(
        backbone=backbone,
        backbone_params={"embedding_dim": 32},
        validation_fraction=0.25,
        critic=SessionCritic(max_epochs=8),
        precision=precision,
        random_state=seed,
    )
    start = time.perf_counter()
    est.fit(split.X_fit, split.y_fit, session_ids=split.s_fit, timestamps=split.t_fit)
    seconds = time.perf_counter() - start
    weights = est.loss_weights(split.X_eval, split.y_eval)
    return {
        "seconds": seconds,
        **_scores(split, est.predict_proba(split.X_eval)),
        "weights": weights.round(6).tolist(),
    }


def _paired(rows: dict[str, list[dict[str, Any]]], label: str) -> None:
    base, low = rows["float32"], rows["bfloat16"]
    if not base or len(base) != len(low):
        return
    print(label)
    for metric in (m for m in base[0] if m not in ("weights",)):
        a = np.array([r[metric] for r in base])
        b = np.array([r[metric] for r in low])
        diff = b - a
        p = stats.ttest_rel(b, a).pvalue if len(a) > 1 else float("nan")
        better = (b > a) if "AUC" in metric else (b < a)
        print(
            f"  {metric:22s} float32 {a.mean():.4f}  bfloat16 {b.mean():.4f}  "
            f"diff {diff.mean():+.4f} (max |diff| {np.abs(diff).max():.4f}, "
            f"p={p:.2f}, bfloat16 better {int(better.sum())}/{len(a)})"
        )
    if "weights" in base[0]:
        corr = [
            np.corrcoef(np.ravel(f["weights"]), np.ravel(b["weights"]))[0, 1]
            for f, b in zip(base, low, strict=True)
        ]
        print(f"  refit weights, correlation float32 vs bfloat16: {np.round(corr, 4)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["retailrocket", "taobao"])
    parser.add_argument("--backbones", nargs="+", default=["esmm", "mmoe", "ple"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--rmtl", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("study_precision.jsonl"))
    args = parser.parse_args()
    done: dict[tuple, dict] = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done[tuple(r["key"])] = r["scores"]
    jobs = [("mtl", b) for b in args.backbones]
    if args.rmtl:
        jobs.append(("rmtl", args.backbones[0]))
    for dataset in args.datasets:
        split = split_dataset(load_dataset(dataset, None, 0), "test")
        for kind, backbone in jobs:
            rows: dict[str, list[dict[str, Any]]] = {p: [] for p in PRECISIONS}
            for seed in args.seeds:
                for precision in PRECISIONS:
                    key = (dataset, kind, backbone, precision, seed)
                    if key not in done:
                        fit = fit_rmtl if kind == "rmtl" else fit_mtl
                        done[key] = fit(split, backbone, precision, seed)
                        with args.out.open("a") as f:
                            f.write(json.dumps({"key": key, "scores": done[key]}))
                            f.write("\n")
                    rows[precision].append(done[key])
            secs = {p: np.mean([r["seconds"] for r in rows[p]]) for p in PRECISIONS}
            _paired(
                rows,
                f"{dataset} {kind} {backbone}, test part, seeds {args.seeds} "
                f"(mean fit: float32 {secs['float32']:.0f}s, bfloat16 "
                f"{secs['bfloat16']:.0f}s)",
            )


if __name__ == "__main__":
    main()
