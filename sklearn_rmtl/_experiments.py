"""The paper's experiments (Tables 1-2, Sec. 3.4) on a temporal 6:2:2 split.

Used by the ``rmtl`` command line (:mod:`sklearn_rmtl.cli`). Each run fits on
the train and validation parts (early stopping holds out the latest quarter,
i.e. about the validation part) and is scored on the test part only.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.utils import Bunch

from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._rmtl import RMTLClassifier
from sklearn_rmtl.backbones import backbone_keys
from sklearn_rmtl.metrics import per_task_log_loss, per_task_roc_auc, session_log_loss
from sklearn_rmtl.model_selection import temporal_train_test_split

#: Baselines of Table 1 and the backbone each trains.
BASELINES = {
    "SingleTask": "singletask",
    "SharedBottom": "sharedbottom",
    "ESMM": "esmm",
    "MMoE": "mmoe",
    "PLE": "ple",
}
#: Display names of backbones.
DISPLAY = {v: k for k, v in BASELINES.items()} | {"omoe": "OMoE", "aitm": "AITM"}
METRICS = ("AUC", "Logloss", "s-Logloss")
#: Whether a larger value of the metric is better.
GREATER_IS_BETTER = {"AUC": True, "Logloss": False, "s-Logloss": False}
# Early stopping holds out the latest quarter of train + validation (6:2).
_VALIDATION_FRACTION = 0.25


@dataclass
class Split:
    """The 6:2:2 temporal split of a dataset (train and validation merged)."""

    X_fit: pd.DataFrame
    y_fit: pd.DataFrame
    s_fit: np.ndarray
    t_fit: np.ndarray
    X_test: pd.DataFrame
    y_test: pd.DataFrame
    s_test: np.ndarray
    sizes: dict[str, int]


def split_dataset(data: Bunch) -> Split:
    """Cut a dataset Bunch 6:2:2 by time with whole sessions."""
    parts = temporal_train_test_split(
        data.X,
        data.y,
        np.asarray(data.session_ids),
        np.asarray(data.timestamps),
        timestamps=data.timestamps,
        session_ids=data.session_ids,
    )
    X_tr, X_va, X_te, y_tr, y_va, y_te, s_tr, s_va, s_te, t_tr, t_va, _ = parts
    return Split(
        X_fit=pd.concat([X_tr, X_va]),
        y_fit=pd.concat([y_tr, y_va]),
        s_fit=np.concatenate([s_tr, s_va]),
        t_fit=np.concatenate([t_tr, t_va]),
        X_test=X_te,
        y_test=y_te,
        s_test=s_te,
        sizes={"train": len(X_tr), "valid": len(X_va), "test": len(X_te)},
    )


@dataclass
class Settings:
    """Training settings shared by every run of an experiment."""

    max_epochs: int = 10
    critic_max_epochs: int = 10
    batch_size: int = 2048
    backbone_params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    def mtl(self, backbone: str, seed: int) -> MTLClassifier:
        # Sizes apply to the backbones that have them (experts, towers...).
        valid = {"embedding_dim", *backbone_keys(backbone)}
        params = {k: v for k, v in self.backbone_params.items() if k in valid}
        return MTLClassifier(
            backbone=backbone,
            backbone_params=params or None,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            validation_fraction=_VALIDATION_FRACTION,
            device=self.device,
            random_state=seed,
        )

    def rmtl(self, actor: MTLClassifier, seed: int, **params: Any) -> RMTLClassifier:
        """RMTL on a fitted baseline, so pretraining is shared, not repeated."""
        return RMTLClassifier(
            backbone=actor,
            max_epochs=self.max_epochs,
            critic_max_epochs=self.critic_max_epochs,
            batch_size=self.batch_size,
            validation_fraction=_VALIDATION_FRACTION,
            device=self.device,
            random_state=seed,
            **params,
        )

    def key(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def evaluate(estimator: Any, split: Split) -> dict[str, dict[str, float]]:
    """Per-task AUC, Logloss and s-Logloss on the test part."""
    proba = estimator.predict_proba(split.X_test)
    y = split.y_test.to_numpy()
    values = {
        "AUC": per_task_roc_auc(y, proba),
        "Logloss": per_task_log_loss(y, proba),
        "s-Logloss": session_log_loss(y, proba, session_ids=split.s_test),
    }
    tasks = [str(c) for c in split.y_test.columns]
    return {
        task: {m: float(values[m][k]) for m in METRICS} for k, task in enumerate(tasks)
    }


class RunLog:
    """Finished runs, one JSON line each, so that a re-run skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: list[dict[str, Any]] = []
        if path.exists():
            self.runs = [
                json.loads(line) for line in path.read_text().splitlines() if line
            ]

    def find(self, key: dict[str, Any]) -> dict[str, Any] | None:
        for run in self.runs:
            if all(run.get(k) == v for k, v in key.items()):
                return run
        return None

    def add(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        with self.path.open("a") as f:
            f.write(json.dumps(run, default=str) + "\n")


class Progress:
    """One line per run on stderr with the elapsed time and an estimate left."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.fit_seconds: list[float] = []
        self.stream = stream or sys.stderr

    def step(self, label: str, seconds: float | None) -> None:
        self.done += 1
        if seconds is not None:
            self.fit_seconds.append(seconds)
        left = self.total - self.done
        eta = left * float(np.mean(self.fit_seconds)) if self.fit_seconds else 0.0
        what = "skipped (done before)" if seconds is None else f"{seconds:6.1f} s"
        print(
            f"[{self.done}/{self.total}] {label:<32} {what}   elapsed "
            f"{time.perf_counter() - self.start:6.0f} s, about {eta:5.0f} s left",
            file=self.stream,
            flush=True,
        )


class Context:
    """Fitted baselines and critics of one seed, shared by the rows."""

    def __init__(self, settings: Settings, split: Split, seed: int) -> None:
        self.settings, self.split, self.seed = settings, split, seed
        self._actors: dict[str, MTLClassifier] = {}
        self._critics: dict[str, Any] = {}

    def fit(self, estimator: Any) -> Any:
        sp = self.split
        return estimator.fit(
            sp.X_fit, sp.y_fit, session_ids=sp.s_fit, timestamps=sp.t_fit
        )

    def actor(self, backbone: str) -> MTLClassifier:
        """The fitted baseline of ``backbone`` (RMTL's pretrained actor)."""
        if backbone not in self._actors:
            self._actors[backbone] = self.fit(self.settings.mtl(backbone, self.seed))
        return self._actors[backbone]

    def rmtl(self, backbone: str, **params: Any) -> RMTLClassifier:
        """RMTL refit of the fitted ``backbone`` baseline."""
        est = self.fit(self.settings.rmtl(self.actor(backbone), self.seed, **params))
        if "critic" not in params and est.critic_ is not None:
            self._critics.setdefault(backbone, est.critic_)
        return est

    def critic(self, backbone: str) -> Any:
        """Critics trained with the ``backbone`` actor (fitted on first use)."""
        if backbone not in self._critics:
            self.rmtl(backbone)
        return self._critics[backbone]


@dataclass
class Method:
    """A row of a results table: a name and how to get its fitted estimator."""

    name: str
    kind: str  # "baseline" or "rmtl": the t-test compares rmtl rows to baselines
    fit: Callable[[Context], Any]


def run(
    methods: list[Method],
    data: Bunch,
    *,
    seeds: Iterable[int],
    settings: Settings,
    output: Path,
    experiment: str,
    dataset: str,
    stream: Any = None,
) -> list[dict[str, Any]]:
    """Fit and score every (method, seed) not already recorded in ``output``.

    Returns one record per run (also appended to ``output/runs.jsonl``) with
    its configuration, seed, timings and per-task test metrics.
    """
    output.mkdir(parents=True, exist_ok=True)
    log = RunLog(output / "runs.jsonl")
    split = split_dataset(data)
    seeds = list(seeds)
    progress = Progress(len(methods) * len(seeds), stream)
    results = []
    for seed in seeds:
        context = Context(settings, split, seed)
        for method in methods:
            key = {
                "experiment": experiment,
                "dataset": dataset,
                "method": method.name,
                "seed": seed,
                "settings": settings.key(),
            }
            done = log.find(key)
            if done is not None:
                results.append(done)
                progress.step(f"{method.name} seed={seed}", None)
                continue
            start = time.perf_counter()
            estimator = method.fit(context)
            seconds = time.perf_counter() - start
            record = {
                **key,
                "kind": method.kind,
                "n_rows": split.sizes,
                "fit_seconds": seconds,
                "epochs": {k: len(v) for k, v in estimator.history_.items()},
                "params": {
                    k: v
                    if isinstance(v, (int, float, str, bool, type(None)))
                    else repr(v)
                    for k, v in estimator.get_params(deep=False).items()
                },
                "settings_detail": settings.__dict__,
                "scores": evaluate(estimator, split),
            }
            log.add(record)
            results.append(record)
            progress.step(f"{method.name} seed={seed}", seconds)
    return results


def _baseline(c: Context, backbone: str) -> MTLClassifier:
    return c.actor(backbone)


def _rmtl(c: Context, backbone: str, **params: Any) -> RMTLClassifier:
    return c.rmtl(backbone, **params)


def _with_critic(
    c: Context, backbone: str, critic_backbone: str, **params: Any
) -> RMTLClassifier:
    return c.rmtl(backbone, critic=c.critic(critic_backbone), **params)


def _ddpg(c: Context) -> RMTLClassifier:
    est = c.settings.rmtl(
        c.actor("ple"),
        c.seed,
        actor_update=True,
        weighting="constant",
        refit_max_epochs=0,
    )
    return c.fit(est)


def table1_methods(backbones: list[str]) -> list[Method]:
    """Table 1: the five baselines, D-PLE, and RMTL on each backbone."""
    methods = [
        Method(name, "baseline", partial(_baseline, backbone=b))
        for name, b in BASELINES.items()
    ]
    methods.append(Method("D-PLE", "baseline", _ddpg))
    methods += [
        Method(f"RMTL-{DISPLAY[b]}", "rmtl", partial(_rmtl, backbone=b))
        for b in backbones
    ]
    return methods


def ablation_methods(backbone: str) -> list[Method]:
    """Table 2: the weighting variants on one backbone, and the baseline."""
    name = DISPLAY[backbone]
    variants = {"CW": "constant", "WL": "label_q", "NLC": "neg_q"}
    methods = [Method(name, "baseline", partial(_baseline, backbone=backbone))]
    for label, weighting in variants.items():
        fit = (
            partial(_rmtl, backbone=backbone, weighting=weighting)
            if weighting == "constant"
            else partial(
                _with_critic,
                backbone=backbone,
                critic_backbone=backbone,
                weighting=weighting,
            )
        )
        methods.append(Method(f"RMTL-{label} ({name})", "rmtl", fit))
    methods.append(Method(f"RMTL ({name})", "rmtl", partial(_rmtl, backbone=backbone)))
    return methods


def transfer_methods(backbones: list[str]) -> list[Method]:
    """Sec. 3.4: the critic learnt with backbone A refits backbone B."""
    methods = [
        Method(DISPLAY[b], "baseline", partial(_baseline, backbone=b))
        for b in backbones
    ]
    methods += [
        Method(
            f"critic {DISPLAY[a]} -> {DISPLAY[b]}",
            "rmtl",
            partial(_with_critic, backbone=b, critic_backbone=a),
        )
        for a in backbones
        for b in backbones
    ]
    return methods


# ---------------------------------------------------------------- summaries
def summarise(results: list[dict[str, Any]], methods: list[str]) -> pd.DataFrame:
    """Mean, std and t-test marks per method, task and metric.

    Each rmtl row is compared with the best baseline of that task and metric
    (best mean) by a two-sided Welch t-test over seeds; ``better`` is True
    when the rmtl mean is better and p < 0.05.
    """
    rows = []
    for r in results:
        for task, scores in r["scores"].items():
            for metric, value in scores.items():
                rows.append(
                    {
                        "method": r["method"],
                        "kind": r["kind"],
                        "seed": r["seed"],
                        "task": task,
                        "metric": metric,
                        "value": value,
                    }
                )
    long = pd.DataFrame(rows)
    out = []
    for (task, metric), group in long.groupby(["task", "metric"], sort=False):
        by_method = {m: g["value"].to_numpy() for m, g in group.groupby("method")}
        kinds = dict(zip(group["method"], group["kind"], strict=True))
        sign = 1 if GREATER_IS_BETTER[str(metric)] else -1
        baselines = [m for m in by_method if kinds[m] == "baseline"]
        best = max(
            baselines, key=lambda m: sign * np.nanmean(by_method[m]), default=None
        )
        for m in methods:
            if m not in by_method:
                continue
            values = by_method[m]
            p_value, better = math.nan, False
            if kinds[m] == "rmtl" and best is not None and len(values) > 1:
                p_value = float(
                    stats.ttest_ind(values, by_method[best], equal_var=False).pvalue
                )
                better = bool(
                    sign * (np.mean(values) - np.mean(by_method[best])) > 0
                    and p_value < 0.05
                )
            out.append(
                {
                    "method": m,
                    "task": task,
                    "metric": metric,
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "n_seeds": len(values),
                    "best_baseline": best,
                    "p_value": p_value,
                    "better": better,
                }
            )
    return pd.DataFrame(out)


def markdown_table(summary: pd.DataFrame, methods: list[str]) -> str:
    """The paper's layout: one row per method, AUC/Logloss/s-Logloss per task."""
    tasks = list(dict.fromkeys(summary["task"]))
    header = ["Method"] + [f"{t} {m}" for t in tasks for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = {(r.method, r.task, r.metric): r for r in summary.itertuples(index=False)}
    for m in methods:
        row = [m]
        for t in tasks:
            for metric in METRICS:
                c = cells.get((m, t, metric))
                if c is None:
                    row.append("")
                    continue
                mark = "*" if c.better else ""
                row.append(f"{c.mean:.4f} ± {c.std:.4f}{mark}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_outputs(
    results: list[dict[str, Any]], methods: list[str], output: Path, title: str
) -> str:
    """Write results.csv, results.md and runs.json; return the table."""
    summary = summarise(results, methods)
    summary.to_csv(output / "results.csv", index=False)
    table = markdown_table(summary, methods)
    n_seeds = int(summary["n_seeds"].max())
    note = (
        f"Mean ± std over {n_seeds} seed(s) on the test part of a temporal 6:2:2 "
        "split. `*`: better than the best baseline of that column with p < 0.05 "
        "(two-sided Welch t-test over seeds)."
    )
    (output / "results.md").write_text(f"# {title}\n\n{table}\n\n{note}\n")
    (output / "runs.json").write_text(json.dumps(results, indent=2, default=str))
    return f"{title}\n\n{table}\n\n{note}"
