"""What each ``rmtl`` command does once :mod:`sklearn_rmtl.cli` has parsed it.

Kept apart from the parser so that ``rmtl --help`` and a mistyped flag are
answered before torch, scikit-learn and pandas load (seconds); every
function here receives the parser, whose ``error`` reports a wrong
combination of flags the way argparse reports a wrong flag.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from sklearn_rmtl import _experiments as ex
from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._encoding import is_categorical_dtype
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._parquet_files import pandas_categoricals
from sklearn_rmtl._precision import native_bfloat16
from sklearn_rmtl._rmtl import RMTLClassifier
from sklearn_rmtl._tables import (
    _kind,
    _need_pyarrow,
    check_columns,
    check_input_file,
    check_output_path,
    read_table,
    replacing,
    write_table,
)
from sklearn_rmtl._validation import resolve_device
from sklearn_rmtl._vocabulary import BLOCK_ROWS
from sklearn_rmtl.backbones import EMBEDDING_KEYS, backbone_keys
from sklearn_rmtl.datasets._sessions import HISTORY_ITEMS
from sklearn_rmtl.exceptions import DivergenceError
from sklearn_rmtl.parquet import ParquetSource, predict_proba_to_parquet


def _check_backbone_params(
    parser: argparse.ArgumentParser, params: dict[str, Any], backbones: set[str]
) -> None:
    """Reject keys that none of the command's backbones accepts."""
    valid = {*EMBEDDING_KEYS, *(k for b in backbones for k in backbone_keys(b))}
    unknown = sorted(set(params) - valid)
    if unknown:
        parser.error(
            f"--backbone-params: {unknown} configure none of the backbones this "
            f"command runs ({', '.join(sorted(backbones))}); valid keys are "
            f"{sorted(valid)}"
        )


#: Flags that are RMTLClassifier parameters of the same name, passed to every
#: RMTL run only when given (otherwise the estimator's default holds); those
#: that are MTLClassifier parameters too reach the baselines as well.
RMTL_FLAGS = (
    "refit_lr",
    "validation_interval",
    "validation_metric",
    "refit_validation_interval",
    "refit_validation_metric",
    "refit_keep_pretrained",
    "q_lambda",
    "precision",
    "retrain_on_all",
)

#: Flags that set a critic setting, by the SessionCritic parameter each sets:
#: every RMTL run trains its critics with ``critic=SessionCritic(...)`` of
#: the flags given (otherwise the critic's default holds).
CRITIC_FLAGS = {"critic_tol": "tol", "gamma": "gamma", "critic_lr": "lr"}


def _is_parquet(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Whether --data is a Parquet file; --block-rows is for those only."""
    parquet = _kind(args.data) == "parquet"  # a ValueError for an unknown suffix
    if args.block_rows is not None and not parquet:
        parser.error(
            f"--block-rows: {args.data} is a CSV/TSV file, which is read whole; "
            "only a Parquet file is read in blocks (leave --block-rows out, or "
            "convert the file to Parquet)"
        )
    return parquet


def _source(args: argparse.Namespace, **columns: Any) -> ParquetSource:
    """The --data Parquet file read in blocks of --block-rows rows."""
    block_rows = BLOCK_ROWS if args.block_rows is None else args.block_rows
    return ParquetSource(args.data, block_rows=block_rows, **columns)


def _tuples(params: dict[str, Any]) -> dict[str, Any]:
    """--backbone-params with its JSON lists as the tuples the backbones take."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _parquet_columns(path: Path) -> pd.DataFrame:
    """The Parquet file's columns and dtypes, as pandas would read them; no rows.

    Reads the file's schema only. Errors as :func:`read_table`'s: a missing
    file, pyarrow not installed, a file without rows.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    _need_pyarrow(path)
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as file:
        if file.metadata.num_rows == 0:
            raise ValueError(f"{path}: the file has no rows.")
        # pandas' metadata applied as pd.read_parquet applies it: a stored
        # index is the frame's index, not a column; dictionaries are categories;
        # and as a ParquetSource reads it: integer categories too.
        frame = file.schema_arrow.empty_table().to_pandas()
        categories = pandas_categoricals(file.schema_arrow) & set(frame.columns)
        return frame.astype(dict.fromkeys(categories, "category"))


def _categorical(
    frame: Any, features: list[str], extra: list[str] | None, sequences: set[str]
) -> list[str] | None:
    """The columns categorical by dtype plus those named by --categorical
    (the --sequence columns, lists, are neither)."""
    if not extra:
        return None  # the estimator's own rule: by dtype
    return [
        c
        for c in features
        if c not in sequences and (c in extra or is_categorical_dtype(frame[c].dtype))
    ]


def _fit_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from sklearn_rmtl.persistence import save

    parquet = _is_parquet(parser, args)
    check_output_path(args.model, "--model")  # before training, not at the save
    # A Parquet file is streamed: its schema (no rows) serves the checks.
    frame = _parquet_columns(args.data) if parquet else read_table(args.data)
    check = partial(check_columns, frame, path=str(args.data))
    meta = [c for c in (args.session, args.time, args.sample_weight) if c is not None]
    check(args.target, what="--target")
    check(meta, what="--session/--time/--sample-weight")
    features = args.features or [
        c for c in frame.columns if c not in {*args.target, *meta}
    ]
    check(features, what="--features")
    check(args.categorical or [], what="--categorical")
    overlap = sorted(set(features) & {*args.target, *meta})
    if overlap:
        parser.error(
            f"{overlap} cannot be features and targets/--session/--time/--sample-weight"
        )
    if not features:
        parser.error(f"{args.data} has no feature columns besides the targets")
    refit, critic = _flag_params(parser, args)
    if args.method == "mtl":
        refit_only = sorted(set(refit) - set(MTLClassifier().get_params()))
        refit_only += [k for k, p in CRITIC_FLAGS.items() if p in critic]
        if refit_only:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in refit_only)
            parser.error(f"only --method rmtl uses {flags}")
    elif critic:
        refit["critic"] = SessionCritic(**critic)
    if args.task_space:
        named = {t for pair in args.task_space for t in pair}
        unknown = sorted(named - set(args.target))
        if unknown:
            parser.error(
                f"--task-space names {unknown}, which are not --target columns"
            )
        if len(dict(args.task_space)) < len(args.task_space):
            parser.error(
                "--task-space gives a task twice; give each task one CONDITION"
            )
    for flag, pairs in (("--hash", args.hash), ("--sequence", args.sequence)):
        columns = [column for column, _ in pairs or []]
        check(columns, what=flag)
        if len(set(columns)) < len(columns):
            parser.error(f"{flag} names a column twice; give each column once")
    if args.sequence and not parquet:
        parser.error(
            f"--sequence: {args.data} is a CSV/TSV file, whose cells cannot hold "
            "lists; store the sequence columns as Parquet list columns (e.g. "
            "DataFrame.to_parquet of a column of lists)"
        )
    params = {
        "backbone": args.backbone,
        "backbone_params": args.backbone_params,
        "task_space": dict(args.task_space) if args.task_space else None,
        "hash_buckets": dict(args.hash) if args.hash else None,
        "sequence_features": dict(args.sequence) if args.sequence else None,
        "max_epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": args.device,
        "categorical_features": _categorical(
            frame, features, args.categorical, {c for c, _ in args.sequence or []}
        ),
    }
    params = {k: v for k, v in params.items() if v is not None}
    if "backbone_params" in params:
        params["backbone_params"] = _tuples(params["backbone_params"])
    cls = RMTLClassifier if args.method == "rmtl" else MTLClassifier
    estimator = cls(
        **params, **refit, random_state=args.seed, verbose=int(args.verbose)
    )
    source = None
    if parquet:
        source = _source(
            args,
            target=args.target,
            session=args.session,
            time=args.time,
            features=features,
            sample_weight=args.sample_weight,
        )
    n_rows = len(frame) if source is None else source.n_rows
    streamed = (
        ""
        if source is None
        else f" (streamed, {source.block_rows} rows at a time: {source.n_blocks} "
        f"block{'s' if source.n_blocks > 1 else ''})"
    )
    print(
        f"fitting {cls.__name__}(backbone={estimator.backbone!r}) on "
        f"{n_rows} rows of {args.data}{streamed}: tasks {args.target}, "
        f"{len(features)} features",
        file=sys.stderr,
        flush=True,
    )
    if source is not None:
        # Out of core; the fit's own errors (e.g. RMTL's need for rows
        # sorted by session, then time) speak for themselves.
        estimator.fit(source)
    else:
        column = {c: frame[c] for c in meta}  # .get(None) is None: not given
        estimator.fit(
            frame[features],
            frame[args.target],
            session_ids=column.get(args.session),
            timestamps=column.get(args.time),
            sample_weight=column.get(args.sample_weight),
        )
    save(estimator, args.model)
    epochs = {phase: len(rows) for phase, rows in estimator.history_.items()}
    print(f"saved to {args.model}; epochs per phase: {epochs}", file=sys.stderr)
    if getattr(estimator, "refit_improved_", True) is False:
        print(
            "the refit kept the pretrained weights (refit_improved_=False): no "
            "refit check beat them on the held-out rows, so the model is the "
            "pretrained backbone",
            file=sys.stderr,
        )
    return 0


def _predict_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from sklearn_rmtl.persistence import load

    parquet = _is_parquet(parser, args)
    check_input_file(args.model, "--model")
    _kind(args.output)  # an unknown suffix fails before any work
    check_output_path(args.output, "--output")
    estimator = load(args.model, device=args.device)
    features = [str(c) for c in getattr(estimator, "feature_names_in_", [])]
    if not features:
        parser.error(
            f"{args.model} was fitted without column names, so the columns of "
            f"{args.data} cannot be matched to its features; fit it on a "
            "DataFrame (as 'rmtl fit' does)"
        )
    names = [f"{task}_proba" for task in estimator.task_names_]
    clash = [c for c in args.keep if c in names]
    if clash:
        raise ValueError(
            f"--keep {clash}: the output's probability columns have these "
            f"names; rename the column(s) in {args.data}, or leave them out."
        )
    vocabularies = _vocabularies(estimator)
    frame = (
        _parquet_columns(args.data)
        if parquet
        else read_table(
            args.data,
            text=[c for c, known in vocabularies.items() if _all_text(known)],
        )
    )
    check_columns(frame, features, what="feature", path=str(args.data))
    check_columns(frame, args.keep, what="--keep", path=str(args.data))
    source = _source(args, features=features) if parquet else None
    if source is not None and _kind(args.output) == "parquet":
        _need_pyarrow(args.output)
        n_rows = predict_proba_to_parquet(
            estimator, source, args.output, keep_columns=args.keep
        )
    else:
        if source is None:
            proba = estimator.predict_proba(_as_fitted(frame[features], vocabularies))
            out = frame[args.keep].reset_index(drop=True)
        else:
            # Scored block by block; a CSV/TSV output is assembled whole (the
            # --keep columns and the probabilities, not the features), so
            # that every row of a column is formatted alike, as before.
            proba = estimator.predict_proba(source)
            out = _read_keep_columns(args.data, args.keep, source.n_rows)
        for k, name in enumerate(names):
            out[name] = proba[:, k]
        write_table(out, args.output)
        n_rows = len(out)
    print(f"wrote {n_rows} rows to {args.output}", file=sys.stderr)
    return 0


def _vocabularies(estimator: Any) -> dict[str, Any]:
    """The known values of each categorical feature of a fitted estimator."""
    encoder = estimator.encoder_
    names = [str(c) for c in encoder.categorical_features_]
    return dict(zip(names, encoder.categories_, strict=True))


def _all_text(values: Any) -> bool:
    return all(isinstance(v, str) for v in values)


def _as_fitted(X: pd.DataFrame, vocabularies: dict[str, Any]) -> pd.DataFrame:
    """A CSV/TSV file's features with their cells of the types the fit learnt.

    pandas guesses a column's type from all its cells, so the same code can
    be text in the fit's file ("02139") and a number in another (2139),
    where it is unknown: a feature learnt as text is read as text (see
    ``read_table``'s ``text``). One learnt as numbers turns to text when
    one cell is text, and its known numbers with it: its cells are read
    one by one instead.
    """
    mixed = [
        c
        for c, known in vocabularies.items()
        if not _all_text(known) and pd.api.types.is_string_dtype(X[c].dtype)
    ]
    if mixed:
        X = X.assign(**{c: X[c].map(_cell, na_action="ignore") for c in mixed})
    return X


def _cell(text: Any) -> Any:
    """A CSV cell as pandas reads a column of such cells: a number, a bool, text."""
    if not isinstance(text, str) or "_" in text:  # int("1_0") is 10, not text
        return text
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return _BOOLS.get(text, text)


#: The cells pandas reads as booleans.
_BOOLS = {
    **dict.fromkeys(("True", "TRUE", "true"), True),
    **dict.fromkeys(("False", "FALSE", "false"), False),
}


def _read_keep_columns(path: Path, keep: list[str], n_rows: int) -> pd.DataFrame:
    """The --keep columns of a Parquet file, as pd.read_parquet reads them."""
    if not keep:
        return pd.DataFrame(index=pd.RangeIndex(n_rows))
    frame = pd.read_parquet(path, columns=list(dict.fromkeys(keep)))
    return frame[keep].reset_index(drop=True)


def _export_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from sklearn_rmtl.export import to_onnx, to_torch
    from sklearn_rmtl.persistence import load

    if args.onnx is None and args.torch is None:
        parser.error("give --onnx FILE, --torch FILE or both")
    check_input_file(args.model, "--model")
    writers = {"--onnx": (args.onnx, to_onnx), "--torch": (args.torch, to_torch)}
    writers = {flag: pw for flag, pw in writers.items() if pw[0] is not None}
    for flag, (path, _) in writers.items():
        check_output_path(path, flag)
    estimator = load(args.model)
    for path, write in writers.values():
        # A graph written whole or not at all: an earlier one stays intact.
        with replacing(path) as tmp:
            write(estimator, tmp)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _flag_params(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The refit and critic flags the user gave, as RMTLClassifier and
    SessionCritic parameters, each checked against this version's class."""
    params = []
    for flags, estimator in (
        ({flag: flag for flag in RMTL_FLAGS}, RMTLClassifier()),
        (CRITIC_FLAGS, SessionCritic()),
    ):
        given = {
            param: getattr(args, flag)
            for flag, param in flags.items()
            if getattr(args, flag, None) is not None
        }
        known = estimator.get_params(deep=False)
        for flag, param in flags.items():
            if param in given and param not in known:
                parser.error(
                    f"--{flag.replace('_', '-')}: this version of "
                    f"{type(estimator).__name__} has no {param!r} parameter"
                )
        params.append(given)
    extra = _tuples(getattr(args, "critic_params", None) or {})
    unknown = sorted(set(extra) - set(SessionCritic().get_params()))
    twice = sorted(set(extra) & set(params[1]))
    if unknown or twice:
        parser.error(
            f"--critic-params: {unknown or twice} "
            + (
                f"are no SessionCritic parameters (valid: "
                f"{sorted(SessionCritic().get_params())})"
                if unknown
                else "are set by their own flags; give each once"
            )
        )
    return params[0], {**params[1], **extra}


#: What a data command's wrong file, column or setting raises: a message, not
#: a traceback (InvalidFileError is a ValueError; a fit from a Parquet file
#: raises TypeError for a column of the wrong type or a setting it does not
#: cover; OSError: a missing file, a folder that is not writable, a full disk).
_USER_ERRORS = (OSError, ImportError, TypeError, ValueError, DivergenceError)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the command ``args`` were parsed for; 0 on success.

    A data command's wrong file, column or setting is one line on stderr
    and status 2; the experiment commands let errors propagate (they run
    the library's own data).
    """
    data_commands = {
        "fit": _fit_command,
        "predict": _predict_command,
        "export": _export_command,
    }
    if args.command in data_commands:
        command = data_commands[args.command]
        try:
            return command(parser, args)
        except _USER_ERRORS as exc:
            print(f"rmtl {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return _experiment_command(parser, args)


def _experiment_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> int:
    """``rmtl reproduce``, ``ablation``, ``transfer`` and ``study``."""
    if args.history is not None and args.dataset not in HISTORY_ITEMS:
        parser.error(
            f"--history: --dataset {args.dataset} has no item history (its rows "
            f"have no items); it is for {', '.join(sorted(HISTORY_ITEMS))}"
        )
    # The experiments' defaults, chosen on the validation parts of the
    # bundled samples (docs/backbone_quality.rst, "Training on all rows").
    if args.retrain_on_all is None:
        args.retrain_on_all = ex.RETRAIN_ON_ALL.get(args.dataset, False)
    if args.precision is None:
        native = native_bfloat16(resolve_device(args.device))
        args.precision = "bfloat16" if native else "float32"
    params = {
        **_tuples(args.backbone_params or {}),
        "embedding_dim": args.embedding_dim,
    }
    rmtl_params, critic_params = _flag_params(parser, args)
    if args.history is not None:
        # Every model, baselines included, so the comparisons stay paired;
        # in rmtl_params, the settings key tells these runs from those without.
        rmtl_params.update(ex.history_params(args.dataset, args.history))
    settings = ex.Settings(
        max_epochs=args.max_epochs,
        critic_max_epochs=args.critic_max_epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        backbone_params=params,
        device=args.device,
        rmtl_params=rmtl_params,
        critic_params=critic_params,
    )
    evaluate_on = getattr(args, "evaluate_on", "test")
    folder = args.command
    if args.command == "reproduce":
        methods = ex.table1_methods(args.backbones)
        title = f"Table 1 on {args.dataset}"
    elif args.command == "ablation":
        methods = ex.ablation_methods(args.backbone, args.task_balancing)
        title = f"Table 2 (weighting ablation, {args.backbone}) on {args.dataset}"
    elif args.command == "transfer":
        methods = ex.transfer_methods(args.backbones)
        title = f"Critic transfer on {args.dataset}"
    else:
        methods = ex.study_methods(list(dict.fromkeys(args.backbones)), args.variants)
        title = f"Paired study on {args.dataset} (scored on {evaluate_on})"
        if evaluate_on != "test":
            folder = f"study-{evaluate_on}"
    backbones = set(getattr(args, "backbones", None) or [args.backbone])
    if args.command == "reproduce":  # its baselines and D-PLE run their own
        backbones |= {*ex.BASELINES.values(), "ple"}
    _check_backbone_params(parser, params, backbones)
    if args.history is not None:
        title += f", with each user's last {args.history} earlier items"
    data = ex.load_dataset(args.dataset, args.data_home, args.n_sessions, args.history)
    output = args.output / folder / args.dataset
    print(
        f"{title}: {len(data.X)} rows, {len(methods)} methods x {args.seeds} seeds; "
        f"writing to {output}",
        file=sys.stderr,
    )
    results = ex.run(
        methods,
        data,
        seeds=range(args.seeds),
        settings=settings,
        output=output,
        experiment=args.command,
        dataset=args.dataset,
        evaluate_on=evaluate_on,
    )
    names = [m.name for m in methods]
    if args.command == "study":
        print(ex.write_study_outputs(results, names, output, title, evaluate_on))
    else:
        print(ex.write_outputs(results, names, output, title))
    return 0
