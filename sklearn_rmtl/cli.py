"""The ``rmtl`` command line: fit and predict on your data, reproduce the paper.

``rmtl fit`` fits RMTL on a CSV/Parquet file and saves the model in the safe
format; ``rmtl predict`` writes its probabilities for another file; ``rmtl
export`` writes it as ONNX or a torch.export program for serving.
``rmtl reproduce`` (Table 1), ``rmtl ablation`` (Table 2), ``rmtl transfer``
(Sec. 3.4) and ``rmtl study`` (RMTL against paired controls) run on a bundled
sample, the full public datasets (``--data-home``) or synthetic sessions,
print their tables and write ``results.csv``, ``results.md``, ``runs.json``
and a resumable ``runs.jsonl`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Only names here: the parser must answer --help and report a wrong flag
# before torch, scikit-learn and pandas load; the commands load them.
from sklearn_rmtl._version import __version__
from sklearn_rmtl._vocabulary import (
    BACKBONE_NAMES,
    BALANCING_NAMES,
    BLOCK_ROWS,
    DATASET_NAMES,
    EVALUATE_ON_NAMES,
    PRECISION_NAMES,
    SELECTION_NAMES,
    STUDY_DEFAULT,
    STUDY_VARIANT_NAMES,
    SUFFIXES,
)


def _number(
    kind: type, low: float, high: float | None = None, *, open_low: bool = False
) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` in [low, high], or (low, high] if open_low."""
    left = "(" if open_low else "["
    bounds = f"{left}{low}, {'inf)' if high is None else f'{high}]'}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        too_low = value <= low if open_low else value < low
        too_high = high is not None and value > high
        if too_low or too_high or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value

    return parse


_POSITIVE_INT = _number(int, 1)


#: The devices the library trains on: "auto", the CPU or a CUDA GPU.
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _device(text: str) -> str:
    """An argparse type: "auto", "cpu" or a CUDA device ("cuda", "cuda:1")."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            "expected auto, cpu or a CUDA device such as cuda or cuda:1 "
            f"(sklearn-rmtl trains on CPUs and CUDA GPUs); got {text!r}"
        )
    return text


#: The validation metrics of the help texts ("loss, auc or gauc").
_SELECTION_HELP = f"{', '.join(SELECTION_NAMES[:-1])} or {SELECTION_NAMES[-1]}"


def _selection(text: str) -> str:
    """An argparse type: a validation metric, e.g. ``auc`` or ``auc:click``."""
    if text.partition(":")[0] not in SELECTION_NAMES:
        raise argparse.ArgumentTypeError(
            f"must be one of {_SELECTION_HELP}, or e.g. auc:<task> for one "
            f"task; got {text!r}"
        )
    return text


def _json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object such as '{"bottom_dims": [256, 128]}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"bottom_dims\": [256, 128]}}', "
            f"got {text!r}"
        )
    return value


def _task_pair(text: str) -> tuple[str, str]:
    """An argparse type: ``TASK=CONDITION``, two target columns."""
    task, sep, condition = text.partition("=")
    if not (sep and task and condition):
        raise argparse.ArgumentTypeError(
            f"expected TASK=CONDITION such as purchase=click, got {text!r}"
        )
    return task, condition


def _bucket_pair(text: str) -> tuple[str, int]:
    """An argparse type: ``COLUMN=N``, an id column and its hash buckets."""
    column, sep, count = text.rpartition("=")
    if not (sep and column and count.isdigit() and int(count) >= 1):
        raise argparse.ArgumentTypeError(
            f"expected COLUMN=N with N >= 1 buckets, such as itemid=262144; got "
            f"{text!r}"
        )
    return column, int(count)


def _sequence_pair(text: str) -> tuple[str, str | None]:
    """An argparse type: ``COLUMN=VOCABULARY`` or ``COLUMN=`` (its own)."""
    column, sep, vocabulary = text.partition("=")
    if not (sep and column):
        raise argparse.ArgumentTypeError(
            "expected COLUMN=VOCABULARY such as itemid_history=itemid, or "
            f"COLUMN= for a vocabulary of its own; got {text!r}"
        )
    return column, vocabulary or None


def _add_training_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--max-epochs",
        type=_POSITIVE_INT,
        default=100,
        help="epoch cap of pretraining and of the refit; each stops early once "
        "the validation loss has not improved for --patience epochs, so the "
        "cap is only a safety net (default: 100)",
    )
    sub.add_argument(
        "--critic-max-epochs",
        type=_POSITIVE_INT,
        default=8,
        help="epoch cap of critic training, which stops earlier once its mean "
        "TD loss changes by at most --critic-tol for 2 epochs in a row; on the "
        "bundled samples the TD loss still falls after 70 epochs, so the cap "
        "is a time budget, chosen to keep the default reproduce run near 20 "
        "minutes on 2 CPU cores (SessionCritic's max_epochs; default: 8)",
    )
    sub.add_argument(
        "--critic-tol",
        type=_number(float, 0),
        help="the critics' convergence rule: relative change of the epoch's "
        "mean TD loss below which an epoch counts as converged (SessionCritic's "
        "tol; its default is 1e-3)",
    )
    sub.add_argument(
        "--patience",
        type=_POSITIVE_INT,
        default=2,
        help="epochs without a better validation loss before pretraining or "
        "the refit stops (n_iter_no_change; default: 2)",
    )
    sub.add_argument(
        "--batch-size",
        type=_POSITIVE_INT,
        default=2048,
        help="rows per step (default: 2048)",
    )
    sub.add_argument(
        "--embedding-dim",
        type=_POSITIVE_INT,
        default=128,
        help="embedding size (default: 128, the paper's; chosen on the "
        "validation part, see docs/backbone_quality.rst)",
    )
    sub.add_argument(
        "--backbone-params",
        type=_json_object,
        help="JSON object of network sizes, e.g. '{\"bottom_dims\": [256, 128]}'; "
        "each backbone takes the keys it uses, and a key that none of the "
        "command's backbones uses is an error",
    )
    _add_rmtl_flags(sub)


def _add_rmtl_flags(sub: argparse.ArgumentParser) -> None:
    refit = sub.add_argument_group(
        "refit",
        "RMTLClassifier parameters of every RMTL run (default: the estimator's own)",
    )
    refit.add_argument(
        "--precision",
        choices=PRECISION_NAMES,
        help="dtype of the matrix products of every phase: bfloat16 is several "
        "times faster on CPUs with AVX512-BF16 or AMX and on recent GPUs; "
        "float16 (with loss scaling) is for CUDA GPUs, slow on most CPUs "
        "(precision; default: float32 for fit; for the experiment commands "
        "bfloat16 where the device multiplies it natively, else float32)",
    )
    refit.add_argument(
        "--refit-lr",
        type=_number(float, 0, open_low=True),
        help="Adam learning rate of the refit (refit_lr)",
    )
    for prefix, phase in (("", "pretraining"), ("refit-", "the refit")):
        dest = prefix.replace("-", "_")
        refit.add_argument(
            f"--{prefix}validation-interval",
            type=_number(float, 0, 1, open_low=True),
            help=f"fraction of an epoch between validation checks of {phase}, "
            f"in (0, 1] ({dest}validation_interval)",
        )
        refit.add_argument(
            f"--{prefix}validation-metric",
            type=_selection,
            metavar="METRIC[:TASK]",
            help=f"validation score that early stopping of {phase} compares "
            f"and selects the kept weights by: {_SELECTION_HELP} over all "
            f"tasks, or e.g. auc:click for one task ({dest}validation_metric)",
        )
    refit.add_argument(
        "--refit-keep-pretrained",
        action=argparse.BooleanOptionalAction,
        help="keep the pretrained weights when no refit check beats them "
        "(refit_keep_pretrained)",
    )
    refit.add_argument(
        "--retrain-on-all",
        action=argparse.BooleanOptionalAction,
        help="after early stopping, train pretraining and refit again on all "
        "rows (the held-out ones included) for the steps it chose "
        "(retrain_on_all; default: off for fit; for the experiment commands "
        "what won on the dataset's validation part: on for retailrocket and "
        "kuairand, off otherwise; D-PLE is not retrained)",
    )
    refit.add_argument(
        "--q-lambda",
        type=_number(float, 0),
        help="lambda of the RMTL weights 1 - lambda * Q (q_lambda)",
    )
    critic = sub.add_argument_group(
        "critic",
        "SessionCritic parameters of every RMTL run's critics (default: the "
        "critic's own)",
    )
    critic.add_argument(
        "--gamma",
        type=_number(float, 0, 1),
        help="discount of the critics' TD targets, in [0, 1]; 0 makes Q the "
        "expected immediate reward of the row (gamma)",
    )
    critic.add_argument(
        "--critic-lr",
        type=_number(float, 0, open_low=True),
        help="Adam learning rate of the critics (lr)",
    )
    critic.add_argument(
        "--critic-params",
        type=_json_object,
        help="JSON object of further SessionCritic parameters, e.g. "
        '\'{"cv": 5, "output": "softplus", "validation_fraction": 0.1}\'; '
        "a parameter that a flag above sets is an error here",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmtl",
        description="Fit RMTL on your own data and predict with it (fit, predict), "
        "or reproduce the experiments of 'Multi-Task Recommendations with "
        "Reinforcement Learning' (WWW 2023) with sklearn-rmtl.",
    )
    version = f"%(prog)s {__version__}"
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    specs = {
        "reproduce": "Table 1: baselines, D-PLE and RMTL on each backbone",
        "ablation": "Table 2: RMTL's weighting variants on one backbone",
        "transfer": "Sec. 3.4: a critic learnt with backbone A refits backbone B",
        "study": "paired study: RMTL (and the weights of realised session "
        "outcomes) against the controls that remove one claimed cause each "
        "(the backbone, a constant-weight refit, label-mean and shuffled "
        "weights), with paired t-tests",
    }
    for name, help_text in specs.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--dataset",
            choices=DATASET_NAMES,
            default="retailrocket",
            help="dataset (default: retailrocket, the bundled sample)",
        )
        sub.add_argument(
            "--data-home",
            help="folder with the full raw dataset files (default: bundled sample)",
        )
        sub.add_argument(
            "--history",
            type=_POSITIVE_INT,
            metavar="N",
            help="give every model the user's last N earlier items, pooled by "
            "target attention; measured effect: docs/backbone_quality.rst, "
            '"Behaviour histories" (default: off; not for synthetic)',
        )
        if name == "ablation":
            sub.add_argument(
                "--backbone", choices=sorted(BACKBONE_NAMES), default="mmoe"
            )
            sub.add_argument(
                "--task-balancing",
                nargs="+",
                choices=BALANCING_NAMES,
                default=[],
                help="also run the baseline with each of these task-balancing "
                "methods (MTLClassifier(task_balancing=...)), as further "
                "baselines RMTL is compared with (default: none)",
            )
        else:
            sub.add_argument(
                "--backbones",
                nargs="+",
                choices=sorted(BACKBONE_NAMES),
                default=["esmm", "mmoe", "ple"],
                help="backbones to run RMTL on (default: esmm mmoe ple)",
            )
        seeds = 5 if name == "study" else 3
        sub.add_argument(
            "--seeds",
            type=_POSITIVE_INT,
            default=seeds,
            help=f"number of seeds 0..N-1 (default: {seeds})",
        )
        if name == "study":
            sub.add_argument(
                "--evaluate-on",
                choices=EVALUATE_ON_NAMES,
                default="test",
                help="test: fit on train + validation, score on test; valid: fit "
                "on train only and score on validation, for choosing settings "
                "without touching the test part (default: test)",
            )
            sub.add_argument(
                "--variants",
                nargs="+",
                choices=STUDY_VARIANT_NAMES,
                default=list(STUDY_DEFAULT),
                help="the rows of each backbone: the backbone, weightings of "
                "RMTLClassifier and their controls; each treated weighting "
                "(rmtl, outcome) is paired with the controls that are run "
                f"(default: {' '.join(STUDY_DEFAULT)})",
            )
        _add_training_flags(sub)
        sub.add_argument(
            "--n-sessions",
            type=_POSITIVE_INT,
            default=2000,
            help="number of sessions of --dataset synthetic (default: 2000)",
        )
        sub.add_argument(
            "--device",
            type=_device,
            default="cpu",
            help="torch device: cpu, cuda, cuda:1, ... or auto (default: cpu)",
        )
        sub.add_argument(
            "--output",
            type=Path,
            default=Path("rmtl-results"),
            help="results go to OUTPUT/<command>/<dataset> (OUTPUT/study-valid/"
            "<dataset> with --evaluate-on valid); finished runs there are "
            "skipped (default: rmtl-results)",
        )
    return parser


def _add_data_commands(commands: Any) -> None:
    """``rmtl fit``, ``predict`` and ``export``: models of the user's own files."""
    files = f"CSV, TSV or Parquet ({', '.join(SUFFIXES)})"
    fit = commands.add_parser(
        "fit",
        help="fit RMTL (or a plain multi-task backbone) on your own data file",
        description="Fit RMTLClassifier (--method rmtl) or MTLClassifier "
        "(--method mtl) on a data file and save it in the safe format. Every "
        "column that is not a target, --session or --time is a feature unless "
        "--features lists them. Flags not given keep the estimator's defaults. "
        "A Parquet file is streamed, --block-rows rows at a time, so memory "
        "stays bounded whatever its size (RMTL then needs its rows sorted by "
        "--session, then --time); a CSV/TSV file is read whole.",
    )
    fit.add_argument("--data", required=True, type=Path, help=f"the file: {files}")
    fit.add_argument(
        "--target",
        required=True,
        nargs="+",
        help="label columns, one per task (funnel order for esmm/aitm)",
    )
    fit.add_argument("--session", help="session id column (RMTL's MDP needs it)")
    fit.add_argument("--time", help="timestamp column (numbers or dates)")
    fit.add_argument(
        "--sample-weight",
        metavar="COLUMN",
        help="column of non-negative row weights (fit's sample_weight)",
    )
    fit.add_argument("--features", nargs="+", help="feature columns (default: rest)")
    fit.add_argument(
        "--categorical",
        nargs="+",
        help="feature columns to embed as categories even though they hold "
        "numbers, such as integer ids; text and boolean columns always are",
    )
    fit.add_argument("--method", choices=("rmtl", "mtl"), default="rmtl")
    fit.add_argument("--backbone", choices=sorted(BACKBONE_NAMES))
    fit.add_argument(
        "--backbone-params",
        type=_json_object,
        help="JSON object of network sizes, e.g. '{\"bottom_dims\": [256, 128]}'",
    )
    fit.add_argument(
        "--task-space",
        nargs="+",
        type=_task_pair,
        metavar="TASK=CONDITION",
        help="train TASK only on the rows where the target CONDITION is "
        "positive, e.g. purchase=click (task_space; its probability is then "
        "conditional on CONDITION)",
    )
    fit.add_argument(
        "--hash",
        nargs="+",
        type=_bucket_pair,
        metavar="COLUMN=N",
        help="encode id COLUMN by hashing into N buckets instead of a "
        "vocabulary, e.g. itemid=262144 (hash_buckets)",
    )
    fit.add_argument(
        "--sequence",
        nargs="+",
        type=_sequence_pair,
        metavar="COLUMN=VOCABULARY",
        help="a Parquet list column of ids (oldest first) sharing the "
        "vocabulary of categorical column VOCABULARY, e.g. "
        "itemid_history=itemid, or COLUMN= for a vocabulary of its own "
        "(sequence_features; pooled by target attention by default)",
    )
    fit.add_argument("--max-epochs", type=_POSITIVE_INT)
    fit.add_argument("--batch-size", type=_POSITIVE_INT)
    fit.add_argument("--lr", type=_number(float, 0, open_low=True))
    fit.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    fit.add_argument("--device", type=_device, help="torch device, e.g. cpu, cuda:1")
    fit.add_argument("--verbose", action="store_true", help="a progress bar per epoch")
    _add_block_rows_flag(fit, "read, encoded and trained on")
    fit.add_argument(
        "--model", required=True, type=Path, help="where to save the fitted model"
    )
    _add_rmtl_flags(fit)
    predict = commands.add_parser(
        "predict",
        help="predict each task's probability for the rows of a data file",
        description="Load a model saved by 'rmtl fit' (or sklearn_rmtl."
        "persistence.save; safe for untrusted files) and write one probability "
        "column '<task>_proba' per task. A Parquet --data file is scored "
        "--block-rows rows at a time; a Parquet --output is then written block "
        "by block too, so memory stays bounded, while a CSV/TSV --output holds "
        "the --keep columns and probabilities of every row until it is written.",
    )
    predict.add_argument("--model", required=True, type=Path)
    predict.add_argument("--data", required=True, type=Path, help=f"the file: {files}")
    predict.add_argument(
        "--output", required=True, type=Path, help=f"where to write: {files}"
    )
    predict.add_argument(
        "--keep",
        nargs="+",
        default=[],
        help="columns of --data copied to the output first, such as row ids",
    )
    predict.add_argument(
        "--device", type=_device, default="cpu", help="torch device (default: cpu)"
    )
    _add_block_rows_flag(predict, "read and scored")
    export = commands.add_parser(
        "export",
        help="export a saved model for serving: ONNX and/or torch.export",
        description="Write a model saved by 'rmtl fit' as an ONNX graph with the "
        "feature encoding inside (--onnx) and/or a torch.export program of the "
        "network with its encoding as JSON (--torch). Needs the onnx extra: "
        "pip install 'sklearn-rmtl[onnx]'.",
    )
    export.add_argument("--model", required=True, type=Path)
    export.add_argument("--onnx", type=Path, help="the .onnx file to write")
    export.add_argument("--torch", type=Path, help="the .pt2 file to write")


def _add_block_rows_flag(sub: argparse.ArgumentParser, what: str) -> None:
    sub.add_argument(
        "--block-rows",
        type=_POSITIVE_INT,
        metavar="N",
        help=f"a Parquet --data file is streamed: N rows are {what} at a time, "
        "which bounds the memory (ParquetSource's block_rows; default: "
        f"{BLOCK_ROWS}); an error with a CSV/TSV file, which is read whole",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rmtl`` command line.

    Parameters
    ----------
    argv : sequence of str, default=None
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    from sklearn_rmtl._cli_commands import run

    return run(parser, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
