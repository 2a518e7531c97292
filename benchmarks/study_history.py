"""Behaviour histories against none, on the bundled samples, paired by seed.

For each dataset, backbone and seed, two ``MTLClassifier`` fits at the
settings of ``rmtl study``'s baselines (embedding 32 unless
``--embedding-dim``, early stopping on the latest 25 % of the fitted rows
with patience 2, the dataset's ``retrain_on_all``, bfloat16 where the CPU
multiplies it natively unless ``--precision``): one on the loader's
features, one that adds the loader's history column (each user's earlier
items, :func:`sklearn_rmtl.datasets.history_column`, last
``--history-len``) as a sequence feature sharing the item column's
vocabulary, pooled by ``--pooling``. Both are fitted on the train part and
scored on the validation part (``--evaluate-on valid``, the default), or
fitted on train + validation and scored on the test part (``--evaluate-on
test``, once, for the setting chosen on validation). Prints each task's AUC
and Logloss, the paired differences with their t-test p-values and wins per
seed, and writes them as Markdown to ``--out`` (finished fits are read back
from its ``.jsonl`` beside it).

Run: ``python benchmarks/study_history.py --dataset retailrocket --backbones
mmoe ple --seeds 0 1 2 3 4``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score

from sklearn_rmtl import datasets
from sklearn_rmtl._experiments import (
    RETRAIN_ON_ALL,
    Settings,
    history_params,
    split_dataset,
)
from sklearn_rmtl._precision import native_bfloat16
from sklearn_rmtl.datasets._sessions import HISTORY_ITEMS, history_feature


def fit_and_score(split, args, backbone: str, seed: int, history: bool) -> dict:
    column, _ = history_feature(args.dataset)
    X_fit, X_eval = split.X_fit, split.X_eval
    params: dict = {"embedding_dim": args.embedding_dim}
    extra: dict = {}
    if history:
        params["sequence_pooling"] = args.pooling
        extra = history_params(args.dataset, args.history_len)
    else:
        X_fit, X_eval = X_fit.drop(columns=column), X_eval.drop(columns=column)
    precision = args.precision or ("bfloat16" if native_bfloat16("cpu") else "float32")
    shared = {"precision": precision, "retrain_on_all": RETRAIN_ON_ALL[args.dataset]}
    settings = Settings(backbone_params=params, rmtl_params=shared)
    clf = settings.mtl(backbone, seed).set_params(**extra)
    start = time.perf_counter()
    clf.fit(X_fit, split.y_fit, session_ids=split.s_fit, timestamps=split.t_fit)
    proba, y = clf.predict_proba(X_eval), split.y_eval.to_numpy()
    scores = {"seconds": time.perf_counter() - start}
    for k, task in enumerate(split.y_eval.columns):
        scores[f"{task} AUC"] = roc_auc_score(y[:, k], proba[:, k])
        scores[f"{task} Logloss"] = log_loss(y[:, k], proba[:, k])
    return scores


def paired(a: list[float], b: list[float], greater: bool) -> str:
    diff = np.asarray(b) - np.asarray(a)
    p = stats.ttest_rel(b, a).pvalue if len(diff) > 1 and diff.any() else float("nan")
    wins = int(((diff > 0) if greater else (diff < 0)).sum())
    return f"{diff.mean():+.4f} (p {p:.3f}, {wins}/{len(diff)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", choices=sorted(HISTORY_ITEMS), default="retailrocket"
    )
    parser.add_argument("--backbones", nargs="+", default=["mmoe", "ple"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluate-on", choices=["valid", "test"], default="valid")
    parser.add_argument("--pooling", default="attention")
    parser.add_argument("--history-len", type=int, default=50)
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--precision", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=Path("history.md"))
    args = parser.parse_args()
    log = args.out.with_suffix(".jsonl")
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "out")}
    settings.pop("backbones")
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            key = (json.dumps(r["settings"]), r["backbone"], r["history"], r["seed"])
            done[key] = r
    loader = getattr(datasets, f"load_{args.dataset}")
    data = loader(history=True, history_len=args.history_len)
    split = split_dataset(data, args.evaluate_on)
    rows = []
    for backbone in args.backbones:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for seed in args.seeds:
            for history in (False, True):
                key = (json.dumps(settings), backbone, history, seed)
                if key not in done:
                    scores = fit_and_score(split, args, backbone, seed, history)
                    done[key] = {
                        "settings": settings,
                        "backbone": backbone,
                        "history": history,
                        "seed": seed,
                        "scores": scores,
                    }
                    with log.open("a") as f:
                        f.write(json.dumps(done[key]) + "\n")
                    print(backbone, seed, history, scores, flush=True)
                runs[history].append(done[key]["scores"])
        metrics = [m for m in runs[False][0] if m != "seconds"]
        for history in (False, True):
            name = f"{backbone.upper()}{' + history' if history else ''}"
            cells = [
                f"{np.mean([r[m] for r in runs[history]]):.4f} ± "
                f"{np.std([r[m] for r in runs[history]]):.4f}"
                for m in metrics
            ]
            seconds = np.mean([r["seconds"] for r in runs[history]])
            rows.append(f"| {name} | {' | '.join(cells)} | {seconds:.0f} |")
        diffs = [
            paired([r[m] for r in runs[False]], [r[m] for r in runs[True]], "AUC" in m)
            for m in metrics
        ]
        rows.append(f"| history - none ({backbone}) | {' | '.join(diffs)} | |")
    header = f"| Method | {' | '.join(metrics)} | fit s |"
    table = "\n".join([header, "|" + "---|" * (len(metrics) + 2), *rows])
    text = (
        f"# Histories on {args.dataset} (scored on {args.evaluate_on}; "
        f"{len(args.seeds)} seeds; {json.dumps(settings)})\n\n{table}\n\n"
        "Mean ± std over seeds; differences: mean over seeds of with minus "
        "without history (p: paired t-test; wins: seeds where history is "
        "better).\n"
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
