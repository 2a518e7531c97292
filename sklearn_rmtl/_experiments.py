"""The paper's experiments (Tables 1-2, Sec. 3.4) on a temporal 6:2:2 split.

Used by the ``rmtl`` command line (:mod:`sklearn_rmtl.cli`). By default each
run fits on the train and validation parts (early stopping holds out the
latest quarter, i.e. about the validation part) and is scored on the test
part only; ``evaluate_on="valid"`` fits on the train part and scores on the
validation part, leaving the test part untouched. ``rmtl study`` compares
RMTL with paired controls (:func:`study_methods`, :func:`summarise_study`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.utils import Bunch

from sklearn_rmtl import datasets
from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._rmtl import RMTLClassifier
from sklearn_rmtl._version import __version__
from sklearn_rmtl._vocabulary import STUDY_DEFAULT
from sklearn_rmtl._weighting import WEIGHTINGS
from sklearn_rmtl.backbones import EMBEDDING_KEYS, backbone_keys
from sklearn_rmtl.datasets._sessions import history_feature
from sklearn_rmtl.metrics import METRICS as metric_registry
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
DISPLAY = {v: k for k, v in BASELINES.items()} | {
    "omoe": "OMoE",
    "aitm": "AITM",
    "pepnet": "PEPNet",
    "stem": "STEM",
}
#: The metrics of the paper's tables (Sec. 3.1.3): those of the registry
#: (:data:`sklearn_rmtl.metrics.METRICS`) marked ``in_tables``, by display
#: name, in the registry's order; the columns of the tables.
_EVALUATED = {
    spec.display_name: spec for spec in metric_registry.values() if spec.in_tables
}
#: Their display names, the columns of the tables.
METRICS = tuple(_EVALUATED)
#: Whether a larger value of the metric is better.
GREATER_IS_BETTER = {m: spec.greater_is_better for m, spec in _EVALUATED.items()}
#: The part a run is scored on -> the parts it is fitted on.
EVALUATE_ON = {"test": ("train", "valid"), "valid": ("train",)}
# Early stopping holds out the latest quarter of the fitted rows: about the
# validation part when fitting on train + validation (6:2).
_VALIDATION_FRACTION = 0.25
#: The experiments' ``retrain_on_all`` per dataset when not given: the
#: setting that won on that dataset's validation part (MMoE and PLE,
#: embedding 128, bfloat16; docs/backbone_quality.rst, "Training on all
#: rows"). Others (e.g. synthetic) keep the estimators' default, False.
RETRAIN_ON_ALL = {"retailrocket": True, "kuairand": True, "taobao": False}


def load_dataset(
    name: str, data_home: str | None, n_sessions: int, history: int | None = None
) -> Bunch:
    """Load a dataset Bunch by its command-line name (``DATASET_NAMES``).

    ``history``: also its item history column, the last ``history`` earlier
    items of each row's user (:func:`history_params` feeds it to a model).
    """
    if name == "synthetic":
        if history is not None:
            history_feature(name)  # the error that names the datasets with one
        return datasets.make_sessions(n_sessions=n_sessions, random_state=0)
    loader = getattr(datasets, f"load_{name}")
    if history is None:
        return loader(data_home=data_home)
    return loader(data_home=data_home, history=True, history_len=history)


def history_params(name: str, history: int) -> dict[str, Any]:
    """The estimator parameters that feed dataset ``name``'s item history.

    Its history column as a sequence feature sharing the item column's
    vocabulary, cut to the last ``history`` items (as loaded by
    :func:`load_dataset`), pooled as ``backbone_params`` say (by target
    attention unless ``sequence_pooling`` is given).
    """
    column, item = history_feature(name)
    return {"sequence_features": {column: item}, "max_sequence_length": history}


@dataclass
class Split:
    """A temporal 6:2:2 split: the rows to fit on and the rows to score on.

    ``evaluate_on="test"`` fits on train + validation and scores on test;
    ``"valid"`` fits on train and scores on validation (test unused).
    """

    X_fit: pd.DataFrame
    y_fit: pd.DataFrame
    s_fit: np.ndarray
    t_fit: np.ndarray
    X_eval: pd.DataFrame
    y_eval: pd.DataFrame
    s_eval: np.ndarray
    evaluate_on: str
    sizes: dict[str, int]


def split_dataset(data: Bunch, evaluate_on: str = "test") -> Split:
    """Cut a dataset Bunch 6:2:2 by time with whole sessions.

    Parameters
    ----------
    data : Bunch
        With ``X``, ``y``, ``session_ids`` and ``timestamps``.
    evaluate_on : {"test", "valid"}, default="test"
        The part to score on; the earlier parts are fitted on.

    Returns
    -------
    split : Split
        The fitted and scored rows, and the size of every part.
    """
    if evaluate_on not in EVALUATE_ON:
        raise ValueError(
            f"evaluate_on must be one of {sorted(EVALUATE_ON)}, got {evaluate_on!r}."
        )
    parts = temporal_train_test_split(
        data.X,
        data.y,
        np.asarray(data.session_ids),
        np.asarray(data.timestamps),
        timestamps=data.timestamps,
        session_ids=data.session_ids,
    )
    names = ("train", "valid", "test")
    X, y, s, t = (dict(zip(names, parts[i : i + 3], strict=True)) for i in (0, 3, 6, 9))
    fit = EVALUATE_ON[evaluate_on]
    return Split(
        X_fit=pd.concat([X[p] for p in fit]),
        y_fit=pd.concat([y[p] for p in fit]),
        s_fit=np.concatenate([s[p] for p in fit]),
        t_fit=np.concatenate([t[p] for p in fit]),
        X_eval=X[evaluate_on],
        y_eval=y[evaluate_on],
        s_eval=s[evaluate_on],
        evaluate_on=evaluate_on,
        sizes={p: len(X[p]) for p in names},
    )


@dataclass
class Settings:
    """Training settings shared by every run of an experiment.

    Pretraining and refit train until early stopping ends them
    (``patience`` epochs without a better validation loss; ``max_epochs`` is
    only a safety cap). The critics stop by their convergence rule (``tol``,
    ``patience`` of :class:`SessionCritic`) or at ``critic_max_epochs`` (its
    ``max_epochs``), whichever comes first; on the bundled samples the cap
    comes first, so it is a time budget. ``rmtl_params`` are further
    :class:`RMTLClassifier` parameters (e.g. ``refit_lr``, ``q_lambda``)
    given to every RMTL run, and to the baselines where they are
    :class:`MTLClassifier` parameters too (``validation_interval``,
    ``validation_metric``); ``critic_params`` are further
    :class:`SessionCritic` parameters (e.g. ``gamma``, ``lr``) of the
    critics every RMTL run trains. The ones not given keep the estimators'
    defaults.
    """

    max_epochs: int = 100
    critic_max_epochs: int = 8
    patience: int = 2
    batch_size: int = 2048
    backbone_params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    rmtl_params: dict[str, Any] = field(default_factory=dict)
    critic_params: dict[str, Any] = field(default_factory=dict)

    def mtl(self, backbone: str, seed: int) -> MTLClassifier:
        """The baseline of ``backbone`` (RMTL's pretraining step)."""
        # Sizes apply to the backbones that have them (experts, towers...).
        valid = {*EMBEDDING_KEYS, *backbone_keys(backbone)}
        params = {k: v for k, v in self.backbone_params.items() if k in valid}
        shared = {
            k: v
            for k, v in self.rmtl_params.items()
            if k in MTLClassifier._parameter_constraints
        }
        return MTLClassifier(
            backbone=backbone,
            backbone_params=params or None,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            validation_fraction=_VALIDATION_FRACTION,
            n_iter_no_change=self.patience,
            device=self.device,
            random_state=seed,
            **shared,
        )

    def rmtl(self, actor: MTLClassifier, seed: int, **params: Any) -> RMTLClassifier:
        """RMTL on a fitted baseline, so pretraining is shared, not repeated.

        Its critics are trained with these settings unless ``params`` gives
        a ``critic`` (e.g. fitted critics to transfer).
        """
        critic = {"max_epochs": self.critic_max_epochs, **self.critic_params}
        return RMTLClassifier(
            actor=actor,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            validation_fraction=_VALIDATION_FRACTION,
            n_iter_no_change=self.patience,
            device=self.device,
            random_state=seed,
            **{"critic": SessionCritic(**critic), **self.rmtl_params, **params},
        )

    def key(self) -> str:
        """A short hash of the settings: runs with other settings are others."""
        blob = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def evaluate(estimator: Any, split: Split) -> dict[str, dict[str, float]]:
    """Per-task metrics of the tables (:data:`METRICS`) on ``split``'s scored part."""
    proba = estimator.predict_proba(split.X_eval)
    y = split.y_eval.to_numpy()
    values = {
        m: spec.per_task(y, proba, split.s_eval) for m, spec in _EVALUATED.items()
    }
    tasks = [str(c) for c in split.y_eval.columns]
    return {
        task: {m: float(values[m][k]) for m in METRICS} for k, task in enumerate(tasks)
    }


def data_fingerprint(data: Bunch) -> str:
    """A short hash of a dataset's rows, labels, sessions and times.

    Part of every run's key, so that a re-run on other data (another
    ``--n-sessions``, ``--data-home`` or an edited file) never reuses results
    computed on the old data.
    """
    digest = hashlib.sha1()
    for frame in (data.X, data.y):
        frame = pd.DataFrame(frame)
        # Names and dtypes matter too: hash_pandas_object hashes values only.
        columns = [(str(c), str(t)) for c, t in frame.dtypes.items()]
        digest.update(repr(columns).encode())
        # hash_pandas_object cannot hash cells that are arrays (a history):
        # such a column is hashed as its cells' lengths and their values.
        sequences = [c for c in frame.columns if _holds_sequences(frame[c])]
        rest = frame.drop(columns=sequences)
        digest.update(pd.util.hash_pandas_object(rest, index=False).to_numpy().data)
        for column in sequences:
            cells = frame[column].to_numpy()
            lengths = np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))
            digest.update(pd.util.hash_array(lengths).data)
            if lengths.any():
                digest.update(pd.util.hash_array(np.concatenate(cells)).data)
    for values in (data.session_ids, data.timestamps):
        digest.update(pd.util.hash_array(np.asarray(values)).data)
    return digest.hexdigest()[:12]


_SEQUENCE_CELLS = (list, tuple, np.ndarray)


def _holds_sequences(column: pd.Series) -> bool:
    """Whether every cell of ``column`` is a list or array (a sequence feature)."""
    # The first cell settles a column of ids or strings without a pass over it.
    if column.dtype != object or column.empty:
        return False
    if not isinstance(column.iloc[0], _SEQUENCE_CELLS):
        return False
    return bool(column.map(lambda v: isinstance(v, _SEQUENCE_CELLS)).all())


class RunLog:
    """Finished runs, one JSON line each, so that a re-run skips them.

    A last line cut short (a run interrupted while its record was written)
    is dropped with a warning, so that run is redone; a broken line before
    the last one is an error naming the file and the line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: list[dict[str, Any]] = []
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                run = json.loads(line)
            except json.JSONDecodeError:
                run = None
            if isinstance(run, dict):
                self.runs.append(run)
            elif number == len(lines):
                warnings.warn(
                    f"{path}: the last line is not a complete run record (an "
                    "interrupted run?); it is dropped and that run is redone.",
                    stacklevel=2,
                )
                # Rewrite without it, so new records start on a line of their own.
                self._rewrite()
            else:
                raise ValueError(
                    f"{path}, line {number}: not a run record. Delete that line "
                    "(its run is then redone) or the whole file (every run is "
                    "redone)."
                )

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in self.runs))
        tmp.replace(self.path)

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
            f"[{self.done}/{self.total}] {label:<40} {what}   elapsed "
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
    """A row of a results table: a name and how to get its fitted estimator.

    ``kind`` is "baseline" or "rmtl" (``summarise`` compares rmtl rows with
    the baselines) or "control"; ``backbone`` and ``variant`` pair the rows
    of a study (:func:`summarise_study`).
    """

    name: str
    kind: str
    fit: Callable[[Context], Any]
    backbone: str | None = None
    variant: str | None = None


def run(
    methods: list[Method],
    data: Bunch,
    *,
    seeds: Iterable[int],
    settings: Settings,
    output: Path,
    experiment: str,
    dataset: str,
    evaluate_on: str = "test",
    stream: Any = None,
) -> list[dict[str, Any]]:
    """Fit and score every (method, seed) not already recorded in ``output``.

    A run is keyed on the experiment, dataset, method, seed, scored part,
    settings, data fingerprint (:func:`data_fingerprint`) and library version.
    Returns one record per run (also appended to ``output/runs.jsonl``) with
    its configuration, seed, timings and per-task metrics on the
    ``evaluate_on`` part (see :func:`split_dataset`).
    """
    output.mkdir(parents=True, exist_ok=True)
    log = RunLog(output / "runs.jsonl")
    split = split_dataset(data, evaluate_on)
    seeds = list(seeds)
    progress = Progress(len(methods) * len(seeds), stream)
    fingerprint = data_fingerprint(data)
    results = []
    for seed in seeds:
        context = Context(settings, split, seed)
        for method in methods:
            key = {
                "experiment": experiment,
                "dataset": dataset,
                "method": method.name,
                "seed": seed,
                "evaluate_on": evaluate_on,
                "settings": settings.key(),
                "data": fingerprint,
                "version": __version__,
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
                "backbone": method.backbone,
                "variant": method.variant,
                "n_rows": split.sizes,
                "fit_seconds": seconds,
                "epochs": {k: len(v) for k, v in estimator.history_.items()},
                "params": run_params(estimator),
                "settings_detail": settings.__dict__,
                "scores": evaluate(estimator, split),
            }
            log.add(record)
            results.append(record)
            progress.step(f"{method.name} seed={seed}", seconds)
    return results


def run_params(estimator: Any) -> dict[str, Any]:
    """A run's record of ``estimator``'s parameters, as JSON values.

    Values that are not plain (arrays, the fitted actor) are recorded by
    their ``repr``; a :class:`SessionCritic` also by its parameters,
    ``critic__<name>`` as ``get_params(deep=True)`` names them.
    """

    def plain(value: Any) -> Any:
        simple = isinstance(value, (int, float, str, bool, type(None)))
        return value if simple else repr(value)

    params = {}
    for key, value in estimator.get_params(deep=False).items():
        params[key] = plain(value)
        if isinstance(value, SessionCritic):
            for name, setting in value.get_params().items():
                params[f"{key}__{name}"] = plain(setting)
    return params


def _baseline(c: Context, backbone: str) -> MTLClassifier:
    return c.actor(backbone)


def _rmtl(c: Context, backbone: str, **params: Any) -> RMTLClassifier:
    return c.rmtl(backbone, **params)


def _with_critic(
    c: Context, backbone: str, critic_backbone: str, **params: Any
) -> RMTLClassifier:
    return c.rmtl(backbone, critic=c.critic(critic_backbone), **params)


def ddpg(c: Context, **params: Any) -> RMTLClassifier:
    """D-PLE: the PLE actor trained by the critics' Q-gradient (``params`` on top)."""
    dple = {
        "actor_update": True,
        "weighting": "constant",
        "refit_max_epochs": 0,
        # The best check of the Q-gradient updates, even where the pretrained
        # PLE scores better: D-PLE is the DDPG-trained actor.
        "refit_keep_pretrained": False,
        # NOTE[DIFF]: the critics' actor updates have no length chosen on the
        # held-out rows to replay on all of them, so D-PLE trains from the
        # PLE network chosen on the held-out rows and is not retrained.
        "retrain_on_all": False,
    }
    est = c.settings.rmtl(c.actor("ple"), c.seed, **{**dple, **params})
    return c.fit(est)


def table1_methods(backbones: list[str]) -> list[Method]:
    """Table 1: the five baselines, D-PLE, and RMTL on each backbone."""
    methods = [
        Method(name, "baseline", partial(_baseline, backbone=b))
        for name, b in BASELINES.items()
    ]
    methods.append(Method("D-PLE", "baseline", ddpg))
    methods += [
        Method(f"RMTL-{DISPLAY[b]}", "rmtl", partial(_rmtl, backbone=b))
        for b in backbones
    ]
    return methods


def _balanced(c: Context, backbone: str, task_balancing: str) -> MTLClassifier:
    est = c.settings.mtl(backbone, c.seed).set_params(task_balancing=task_balancing)
    return c.fit(est)


def ablation_methods(
    backbone: str, task_balancings: Sequence[str] = ()
) -> list[Method]:
    """Table 2: the weighting variants on one backbone, and the baseline.

    Each of ``task_balancings`` (other than "fixed", the baseline's) adds the
    baseline trained with that task balancing, as a further baseline: RMTL
    is then compared with the best of them.
    """
    name = DISPLAY[backbone]
    variants = {"CW": "constant", "WL": "label_q", "NLC": "neg_q"}
    methods = [Method(name, "baseline", partial(_baseline, backbone=backbone))]
    for balancing in dict.fromkeys(task_balancings):
        if balancing != "fixed":
            fit = partial(_balanced, backbone=backbone, task_balancing=balancing)
            methods.append(Method(f"{name} ({balancing})", "baseline", fit))
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


#: The rows of a study per backbone: variant -> (kind, row name template).
#: A variant other than the backbone is RMTLClassifier's ``weighting`` of
#: that name on the backbone's fitted baseline.
STUDY_VARIANTS = {
    "backbone": ("baseline", "{}"),
    "rmtl": ("rmtl", "RMTL-{}"),
    "constant": ("control", "{} constant refit"),
    "label_mean": ("control", "{} label-mean refit"),
    "rmtl_fixed": ("rmtl", "RMTL-fixed-{}"),
    "rmtl_shuffled": ("control", "{} shuffled-RMTL refit"),
    "rmtl_flipped": ("control", "{} flipped-RMTL refit"),
    "outcome": ("rmtl", "Outcome-{}"),
    "outcome_label_mean": ("control", "{} outcome label-mean refit"),
    "outcome_shuffled": ("control", "{} shuffled-outcome refit"),
}
#: What a study pairs: treated variant -> (its name in the tables, the
#: controls it is compared with, each removing one claimed cause).
STUDY_COMPARISONS = {
    "rmtl": ("RMTL", ("backbone", "constant", "label_mean", "rmtl_shuffled")),
    # The controls are fixed at the pretrained actor, as rmtl_fixed's weights
    # are: this pair isolates the weights' alignment with the rows.
    "rmtl_fixed": (
        "RMTL fixed",
        ("backbone", "constant", "label_mean", "rmtl_shuffled", "rmtl_flipped"),
    ),
    "outcome": (
        "Outcome",
        ("backbone", "constant", "outcome_label_mean", "outcome_shuffled"),
    ),
}


def study_methods(
    backbones: list[str], variants: Iterable[str] = STUDY_DEFAULT
) -> list[Method]:
    """A paired study: weightings and their controls on each backbone.

    Per backbone (and seed): the baseline, which is also every refit's
    pretrained actor; RMTL, which trains the critics; the same refit with
    constant weights (is it the extra training, not the weights?); the refit
    with the per-task, per-label mean of RMTL's weights from the same
    critics (is it the per-row variation of the weights, not their level per
    label?); RMTL's weights at the pretrained actor shuffled within task x
    label x rows-left strata (is it their alignment with the rows, not their
    distribution?); and the weights of realised session outcomes, with
    their own label-mean and shuffled controls. ``variants`` picks among
    :data:`STUDY_VARIANTS`, in that order, so the critics are trained once.
    """
    chosen = set(variants)
    unknown = sorted(chosen - set(STUDY_VARIANTS))
    if unknown:
        raise ValueError(
            f"Unknown study variants {unknown}; choose among {list(STUDY_VARIANTS)}."
        )

    def fit(variant: str, b: str) -> Callable[[Context], Any]:
        if variant == "backbone":
            return partial(_baseline, backbone=b)
        if variant == "rmtl":
            return partial(_rmtl, backbone=b)
        if WEIGHTINGS[variant].needs_critic:  # the critics of RMTL's row
            return partial(
                _with_critic, backbone=b, critic_backbone=b, weighting=variant
            )
        return partial(_rmtl, backbone=b, weighting=variant)

    return [
        Method(name.format(DISPLAY[b]), kind, fit(v, b), backbone=b, variant=v)
        for b in backbones
        for v, (kind, name) in STUDY_VARIANTS.items()
        if v in chosen
    ]


# ---------------------------------------------------------------- summaries
def long_scores(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, task and metric: method, kind, seed, ..., value."""
    rows = [
        {
            "method": r["method"],
            "kind": r["kind"],
            "backbone": r.get("backbone"),
            "variant": r.get("variant"),
            "seed": r["seed"],
            "task": task,
            "metric": metric,
            "value": value,
        }
        for r in results
        for task, scores in r["scores"].items()
        for metric, value in scores.items()
    ]
    return pd.DataFrame(rows)


def _spread(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(results: list[dict[str, Any]], methods: list[str]) -> pd.DataFrame:
    """Mean, std and t-test marks per method, task and metric.

    Each rmtl row is compared with the best baseline of that task and metric
    (best mean) by a two-sided Welch t-test over seeds; ``better`` is True
    when the rmtl mean is better and p < 0.05.
    """
    long = long_scores(results)
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
                    "std": _spread(values),
                    "n_seeds": len(values),
                    "best_baseline": best,
                    "p_value": p_value,
                    "better": better,
                }
            )
    return pd.DataFrame(out)


def describe(results: list[dict[str, Any]], methods: list[str]) -> pd.DataFrame:
    """Mean and std over seeds per method, task and metric (no tests)."""
    long = long_scores(results)
    out = [
        {
            "method": m,
            "task": task,
            "metric": metric,
            "mean": float(np.mean(g["value"])),
            "std": _spread(g["value"].to_numpy()),
            "n_seeds": len(g),
        }
        for m in methods
        for (task, metric), g in long[long["method"] == m].groupby(
            ["task", "metric"], sort=False
        )
    ]
    return pd.DataFrame(out)


def paired_difference(
    treated: dict[int, float], control: dict[int, float], greater_is_better: bool
) -> dict[str, Any]:
    """Paired comparison over the seeds both have: ``treated - control``.

    Parameters
    ----------
    treated, control : dict of int to float
        A metric per seed.
    greater_is_better : bool
        Direction of the metric, for counting wins.

    Returns
    -------
    stats : dict
        ``mean_diff`` and ``std_diff`` (of the per-seed differences),
        ``n_seeds``, ``t`` and ``p_value`` of the two-sided paired t-test
        (``scipy.stats.ttest_rel``; NaN with fewer than two seeds or when
        every difference is zero), ``wins`` (seeds where ``treated`` is
        strictly better), ``ties`` and ``wins_label`` such as ``"4/5"``.
    """
    seeds = sorted(set(treated) & set(control))
    a = np.array([treated[s] for s in seeds], dtype=float)
    b = np.array([control[s] for s in seeds], dtype=float)
    diff = a - b
    t, p_value = math.nan, math.nan
    if len(seeds) > 1 and np.any(diff != 0):
        with warnings.catch_warnings():
            # Identical nonzero differences: scipy warns and returns +-inf, 0.
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.ttest_rel(a, b)
        t, p_value = float(result.statistic), float(result.pvalue)
    sign = 1 if greater_is_better else -1
    wins = int(np.sum(sign * diff > 0))
    return {
        "mean_diff": float(diff.mean()) if len(seeds) else math.nan,
        "std_diff": _spread(diff),
        "n_seeds": len(seeds),
        "t": t,
        "p_value": p_value,
        "wins": wins,
        "ties": int(np.sum(diff == 0)),
        "wins_label": f"{wins}/{len(seeds)}",
    }


def summarise_study(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Paired differences of a study: each treated weighting minus its controls.

    One row per backbone, comparison (:data:`STUDY_COMPARISONS`, e.g.
    "RMTL - constant"), task and metric, with the statistics of
    :func:`paired_difference` over the seeds both have, the two means, and
    ``verdict``: e.g. "RMTL better" or "RMTL worse" when p < 0.05, else "no
    significant difference". A negative ``mean_diff`` is better for Logloss
    and s-Logloss, worse for AUC.
    """
    long = long_scores(results)
    out = []
    for (backbone, task, metric), group in long.groupby(
        ["backbone", "task", "metric"], sort=False
    ):
        by_variant = {
            v: dict(zip(g["seed"], g["value"], strict=True))
            for v, g in group.groupby("variant")
        }
        greater = GREATER_IS_BETTER[str(metric)]
        for treated, (label, controls) in STUDY_COMPARISONS.items():
            if treated not in by_variant:
                continue
            for control in controls:
                if control not in by_variant:
                    continue
                row = paired_difference(
                    by_variant[treated], by_variant[control], greater
                )
                better = row["mean_diff"] * (1 if greater else -1) > 0
                verdict = "no significant difference"
                if row["p_value"] < 0.05:
                    verdict = f"{label} better" if better else f"{label} worse"
                out.append(
                    {
                        "backbone": backbone,
                        "treated": label,
                        "comparison": f"{label} - {control}",
                        "task": task,
                        "metric": metric,
                        "rmtl_mean": float(np.mean(list(by_variant[treated].values()))),
                        "control_mean": float(
                            np.mean(list(by_variant[control].values()))
                        ),
                        **row,
                        "verdict": verdict,
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
                mark = "*" if getattr(c, "better", False) else ""
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


def _p(p_value: Any) -> str:
    return "p n/a" if math.isnan(p_value) else f"p {float(p_value):.3f}"


def study_markdown(differences: pd.DataFrame) -> str:
    """Paired differences: one row per backbone and control, a cell per column.

    A cell reads ``mean difference (p-value, wins)``.
    """
    tasks = list(dict.fromkeys(differences["task"]))
    header = ["Backbone", "Comparison"] + [f"{t} {m}" for t in tasks for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (backbone, comparison), g in differences.groupby(
        ["backbone", "comparison"], sort=False
    ):
        cells = {(r.task, r.metric): r for r in g.itertuples(index=False)}
        row = [DISPLAY.get(str(backbone), str(backbone)), str(comparison)]
        for t in tasks:
            for metric in METRICS:
                c = cells.get((t, metric))
                row.append(
                    ""
                    if c is None
                    else f"{c.mean_diff:+.4f} ({_p(c.p_value)}, {c.wins_label})"
                )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def study_verdicts(differences: pd.DataFrame) -> list[str]:
    """One plain sentence per backbone and control, whatever the outcome."""
    sentences = []
    for (backbone, comparison), g in differences.groupby(
        ["backbone", "comparison"], sort=False
    ):
        counts = g["verdict"].value_counts()
        label = str(comparison).split(" - ")[0]
        better = counts.get(f"{label} better", 0)
        worse = counts.get(f"{label} worse", 0)
        sentences.append(
            f"{DISPLAY.get(str(backbone), str(backbone))}, {comparison}: {label} is "
            f"significantly better in {better} and significantly worse in {worse} "
            f"of {len(g)} columns (p < 0.05); no significant difference in "
            f"{len(g) - better - worse}."
        )
    return sentences


def write_study_outputs(
    results: list[dict[str, Any]],
    methods: list[str],
    output: Path,
    title: str,
    evaluate_on: str = "test",
) -> str:
    """Write a study's results.md, results.csv, differences.csv and runs.json.

    ``results.csv`` holds the mean and std per method, task and metric;
    ``differences.csv`` the paired statistics (:func:`summarise_study`).
    Returns the text of ``results.md``.
    """
    scores = describe(results, methods)
    differences = summarise_study(results)
    scores.to_csv(output / "results.csv", index=False)
    differences.to_csv(output / "differences.csv", index=False)
    n_seeds = int(scores["n_seeds"].max())
    fitted = " + ".join(EVALUATE_ON[evaluate_on])
    scores_note = (
        f"Mean ± std over {n_seeds} seed(s); fitted on {fitted}, scored on the "
        f"{evaluate_on} part of a temporal 6:2:2 split."
    )
    differences_note = (
        "Each cell: mean over seeds of the treated weighting minus the "
        "control, fitted with the same seed (same pretrained actor and, for "
        "RMTL's controls, the same critics); the p-value of a two-sided paired "
        "t-test over seeds (scipy.stats.ttest_rel; n/a with one seed or "
        "identical results); and the seeds in which the treated weighting was "
        "better. A positive AUC difference and a negative Logloss or s-Logloss "
        "difference favour the treated weighting."
    )
    text = "\n\n".join(
        [
            f"# {title}",
            "## Scores",
            markdown_table(scores, methods),
            scores_note,
            "## Paired differences",
            study_markdown(differences),
            differences_note,
            "\n".join(f"- {s}" for s in study_verdicts(differences)),
        ]
    )
    (output / "results.md").write_text(text + "\n")
    (output / "runs.json").write_text(json.dumps(results, indent=2, default=str))
    return text
