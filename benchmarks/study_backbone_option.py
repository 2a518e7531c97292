"""An option against the defaults on validation data, paired by seed.

For each seed, one ``MTLClassifier`` at the defaults (``embedding_dim=32``
unless ``--embedding-dim``, early stopping on the latest 25 % of the train
part, ``--base`` estimator parameters) and one that adds the option, its
``backbone_params`` (``--option``) and its estimator parameters
(``--estimator-option``), are fitted on the train part and scored on the
validation part (the test part is never read). Prints each task's AUC and
logloss for both, the paired difference, the paired t-test p-value and the
wins per seed; finished fits are read back from ``--out`` (JSON lines).

Run: ``python benchmarks/study_backbone_option.py --dataset retailrocket
--backbone ple --option '{"bottom_dims": [256, 256]}' --seeds 0 1 2``, or
``--estimator-option '{"retrain_on_all": true}' --base '{"precision":
"bfloat16"}' --embedding-dim 128``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._experiments import load_dataset, split_dataset


def fit_and_score(
    split, backbone: str, option: dict, estimator: dict, dim: int, seed: int
) -> dict:
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in option.items()}
    clf = MTLClassifier(
        backbone=backbone,
        backbone_params={"embedding_dim": dim, **sizes},
        validation_fraction=0.25,
        random_state=seed,
        **estimator,
    )
    start = time.perf_counter()
    clf.fit(split.X_fit, split.y_fit, timestamps=split.t_fit)
    proba, y = clf.predict_proba(split.X_eval), split.y_eval.to_numpy()
    scores = {"seconds": time.perf_counter() - start}
    for k, task in enumerate(split.y_eval.columns):
        scores[f"{task} AUC"] = roc_auc_score(y[:, k], proba[:, k])
        scores[f"{task} logloss"] = log_loss(y[:, k], proba[:, k])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="retailrocket")
    parser.add_argument("--backbone", default="ple")
    parser.add_argument("--option", type=json.loads, default={})
    parser.add_argument("--estimator-option", type=json.loads, default={})
    parser.add_argument("--base", type=json.loads, default={})
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("backbone_option.jsonl"))
    args = parser.parse_args()
    done = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done[(r["dataset"], r["backbone"], r["option"], r["seed"])] = r["scores"]
    split = split_dataset(load_dataset(args.dataset, None, 0), "valid")
    tag = json.dumps({"base": args.base, "dim": args.embedding_dim}, sort_keys=True)
    option = {**args.option, **args.estimator_option}
    settings = {
        "default": ({}, args.base),
        json.dumps(option): (args.option, {**args.base, **args.estimator_option}),
    }
    if tag != json.dumps({"base": {}, "dim": 32}):  # keep the first runs' keys
        settings = {f"{name} {tag}": v for name, v in settings.items()}
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for seed in args.seeds:
        for name, (sizes, estimator) in settings.items():
            key = (args.dataset, args.backbone, name, seed)
            if key not in done:
                done[key] = fit_and_score(
                    split, args.backbone, sizes, estimator, args.embedding_dim, seed
                )
                record = dict(
                    zip(("dataset", "backbone", "option", "seed"), key, strict=True)
                )
                with args.out.open("a") as f:
                    f.write(json.dumps({**record, "scores": done[key]}) + "\n")
            results[name].append(done[key])
    base, other = results.values()
    print(f"{args.dataset} {args.backbone}: default vs {option} ({tag}), validation")
    for metric in base[0]:
        a = np.array([r[metric] for r in base])
        b = np.array([r[metric] for r in other])
        p = stats.ttest_rel(b, a).pvalue if len(a) > 1 else float("nan")
        wins = int(((b > a) if "AUC" in metric else (b < a)).sum())
        print(
            f"  {metric:22s} {a.mean():.4f} -> {b.mean():.4f} "
            f"({b.mean() - a.mean():+.4f}, p={p:.2f}, {wins}/{len(a)})"
        )


if __name__ == "__main__":
    main()
