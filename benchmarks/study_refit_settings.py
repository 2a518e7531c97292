"""Choose the refit's defaults on validation data: a paired search.

For every dataset, backbone and seed, one baseline is fitted on the train
part (early stopping holding out its latest quarter) and one set of critics
is trained on it; then every refit configuration below continues that same
baseline with those same critics and the same seed (so the same batch
order), and everything is scored on the validation part. The test part is
never read. Configurations:

- ``paper``: the paper's refit (lr 1e-3, checks at epoch ends, selection by
  the validation BCE, pretrained weights kept when no epoch beats them);
- ``<weighting>/<metric>``: ``refit_lr=1e-4``, checks every quarter epoch,
  selection by ``metric`` ("loss" or "auc"), pretrained weights a candidate,
  for the RMTL weights and the constant-weight control;
- ``rmtl/auc/always``: as ``rmtl/auc`` with ``refit_keep_pretrained=False``;
- ``label_mean/auc``: as ``rmtl/auc`` with each task's RMTL weights replaced
  by their mean per label (what of the effect the per-label level explains);
- ``rmtl/<metric>/q<lambda>``: as ``rmtl/<metric>`` with another ``q_lambda``
  (the spread of the weights around their mean).

Prints the mean over seeds of every configuration's validation click and
purchase AUC and logloss, its paired difference to the baseline with the
paired t-test p-value and the wins per seed. Finished runs are read back
from ``--out`` (JSON lines), so an interrupted search resumes.

Run: ``python benchmarks/study_refit_settings.py --datasets retailrocket
taobao kuairand --backbones esmm mmoe --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sklearn_rmtl import _experiments as ex
from sklearn_rmtl._experiments import load_dataset

QUARTER = {"refit_validation_interval": 0.25, "refit_lr": 1e-4}
CONFIGS: dict[str, dict[str, Any]] = {
    "paper": {
        "refit_lr": 1e-3,
        "refit_validation_interval": 1.0,
        "refit_validation_metric": "loss",
    },
    "rmtl/loss": {**QUARTER, "refit_validation_metric": "loss"},
    "rmtl/auc": {**QUARTER, "refit_validation_metric": "auc"},
    "constant/loss": {
        **QUARTER,
        "refit_validation_metric": "loss",
        "weighting": "constant",
    },
    "constant/auc": {
        **QUARTER,
        "refit_validation_metric": "auc",
        "weighting": "constant",
    },
    "rmtl/auc/always": {
        **QUARTER,
        "refit_validation_metric": "auc",
        "refit_keep_pretrained": False,
    },
    "label_mean/auc": {
        **QUARTER,
        "refit_validation_metric": "auc",
        "weighting": "label_mean",
    },
    "rmtl/auc/q0.3": {**QUARTER, "refit_validation_metric": "auc", "q_lambda": 0.3},
    "rmtl/auc/q2": {**QUARTER, "refit_validation_metric": "auc", "q_lambda": 2.0},
    "rmtl/loss/q2": {**QUARTER, "refit_validation_metric": "loss", "q_lambda": 2.0},
}


def _scores(estimator: Any, split: ex.Split) -> dict[str, float]:
    per_task = ex.evaluate(estimator, split)
    return {
        f"{task} {metric}": value
        for task, values in per_task.items()
        for metric, value in values.items()
        if metric != "s-Logloss"
    }


def run_unit(
    dataset: str,
    split: ex.Split,
    backbone: str,
    seed: int,
    done: set,
    out: Path,
    configs: list[str],
) -> None:
    """Baseline, critics and every configuration for one backbone and seed."""
    settings = ex.Settings()
    fit = {
        "session_ids": split.s_fit,
        "timestamps": split.t_fit,
    }
    actor, critic = None, None
    for name in ["baseline", *configs]:
        key = (dataset, backbone, seed, name)
        if key in done:
            continue
        start = time.perf_counter()
        if actor is None:
            actor = settings.mtl(backbone, seed).fit(split.X_fit, split.y_fit, **fit)
        if name == "baseline":
            est = actor
        else:
            params = dict(CONFIGS[name])
            if critic is not None and params.get("weighting") != "constant":
                params["critic"] = critic
            est = settings.rmtl(actor, seed, **params).fit(
                split.X_fit, split.y_fit, **fit
            )
            if critic is None and est.critic_ is not None:
                critic = est.critic_
        record = {
            "dataset": dataset,
            "backbone": backbone,
            "seed": seed,
            "config": name,
            "seconds": time.perf_counter() - start,
            "refit_best_at": est.history_.get("refit", [{}])[-1].get("best_at"),
            "scores": _scores(est, split),
        }
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            f"{dataset:12s} {backbone:5s} seed {seed} {name:16s} "
            + "  ".join(f"{k} {v:.4f}" for k, v in record["scores"].items())
            + f"  ({record['seconds']:.0f} s)",
            flush=True,
        )


def report(records: list[dict[str, Any]]) -> None:
    """Mean per configuration and paired difference to the baseline."""
    by_unit: dict[tuple, dict[str, dict[str, float]]] = {}
    for r in records:
        unit = (r["dataset"], r["backbone"], r["seed"])
        by_unit.setdefault(unit, {})[r["config"]] = r["scores"]
    groups = sorted({(d, b) for d, b, _ in by_unit})
    for dataset, backbone in groups:
        units = [u for d, b, u in by_unit if (d, b) == (dataset, backbone)]
        rows = [
            {**by_unit[(dataset, backbone, s)], "seed": s}
            for s in sorted(units)
            if "baseline" in by_unit[(dataset, backbone, s)]
        ]
        if not rows:
            continue
        metrics = list(rows[0]["baseline"])
        print(f"\n{dataset} {backbone} ({len(rows)} seeds), validation part:")
        for name in ["baseline", *CONFIGS]:
            paired = [r for r in rows if name in r]
            if not paired:
                continue
            cells = []
            for m in metrics:
                value = {r["seed"]: r[name][m] for r in paired}
                base = {r["seed"]: r["baseline"][m] for r in paired}
                cell = f"{m} {np.mean(list(value.values())):.4f}"
                if name != "baseline" and len(paired) > 1:
                    d = ex.paired_difference(value, base, "AUC" in m)
                    p = 1.0 if np.isnan(d["p_value"]) else d["p_value"]
                    cell += f" ({d['mean_diff']:+.4f} p={p:.2f} {d['wins_label']})"
                cells.append(cell)
            print(f"  {name:16s} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["retailrocket"])
    parser.add_argument("--backbones", nargs="+", default=["esmm", "mmoe"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS)
    )
    parser.add_argument("--out", type=Path, default=Path("refit_settings.jsonl"))
    parser.add_argument("--report", action="store_true", help="only print")
    args = parser.parse_args()
    records = []
    if args.out.exists():
        records = [json.loads(x) for x in args.out.read_text().splitlines() if x]
    if not args.report:
        done = {(r["dataset"], r["backbone"], r["seed"], r["config"]) for r in records}
        for dataset in args.datasets:
            split = ex.split_dataset(load_dataset(dataset, None, 0), "valid")
            for seed in args.seeds:
                for backbone in args.backbones:
                    run_unit(
                        dataset, split, backbone, seed, done, args.out, args.configs
                    )
        records = [json.loads(x) for x in args.out.read_text().splitlines() if x]
    report(records)


if __name__ == "__main__":
    main()
