"""Validation of targets, session metadata and devices shared by the estimators."""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.multiclass import type_of_target


def to_pandas(data: Any) -> Any:
    """A polars or pyarrow table or column as pandas; anything else unchanged.

    The estimators convert their inputs once, here, so every later step sees
    pandas: column and task names are kept, string columns become object
    columns (categorical with ``"from_dtype"``), dictionary and categorical
    columns become ``category``, and reordered columns are rejected at predict
    as for a pandas DataFrame.

    Parameters
    ----------
    data : object
        A polars ``DataFrame`` or ``Series``, a pyarrow ``Table``,
        ``RecordBatch``, ``Array`` or ``ChunkedArray``, or anything else.

    Returns
    -------
    data : object
        A pandas DataFrame for a table, a pandas Series for a column, else
        ``data`` itself.

    Raises
    ------
    TypeError
        For a polars ``LazyFrame``, which must be collected first.
    ImportError
        For polars data when pyarrow, which polars needs to convert to
        pandas, is not installed.
    """
    library = type(data).__module__.partition(".")[0]
    if library not in ("polars", "pyarrow") or isinstance(
        data, pd.DataFrame | pd.Series
    ):
        return data
    if not hasattr(data, "to_pandas"):
        raise TypeError(
            f"A {library} {type(data).__name__} is not supported; pass a "
            "DataFrame or Series (for a polars LazyFrame, call .collect() first)."
        )
    try:
        return data.to_pandas()
    except ImportError as exc:
        raise ImportError(
            f"Converting {library} data to pandas needs pyarrow: pip install "
            f"pyarrow, or pass X.to_pandas() yourself ({exc})."
        ) from exc


def _observed_labels(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """A task column's observed labels and the mask of the rows that have one.

    Missing labels are NaN in a float column, None/NaN in an object column,
    and ``pd.NA`` in a pandas nullable column (Int64, boolean, string); the
    observed labels of a nullable column keep its NumPy type (int64, bool).
    """
    if isinstance(col, pd.Series):
        observed = col.notna().to_numpy()
        if isinstance(col.dtype, pd.api.extensions.ExtensionDtype):
            numpy_dtype = getattr(col.dtype, "numpy_dtype", None)
            values = col[observed]
            if numpy_dtype is not None and numpy_dtype.kind in "biuf":
                return values.to_numpy(dtype=numpy_dtype), observed
            return np.asarray(values.to_numpy()), observed
        col = col.to_numpy()
    if col.dtype.kind in "fc":
        observed = ~np.isnan(col)
    elif col.dtype == object:
        observed = ~pd.isna(col)
    else:
        return col, np.ones(col.shape[0], dtype=bool)
    return col[observed], observed


def check_multitask_target(y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate an (n_samples, n_tasks) target with two labels per column.

    Label types are checked before the shape, with scikit-learn's messages
    ("Unknown label type", "Only binary classification is supported").
    A missing label (NaN, None or ``pd.NA``) means "not observed for this
    task"; labels and ``classes`` are read from the observed ones.

    Parameters
    ----------
    y : array-like or DataFrame of shape (n_samples, n_tasks)
        One column per task; each holds at most two distinct labels, and
        possibly missing values.

    Returns
    -------
    y01 : ndarray of shape (n_samples, n_tasks), dtype float32
        1 where the label is the task's positive (larger) label, 0 where it
        is the negative one, NaN where it is missing.
    classes : ndarray of shape (n_tasks, 2)
        Sorted observed labels of each task.
    task_names : ndarray of str of shape (n_tasks,)
        Column names of a DataFrame ``y`` (pandas, polars or pyarrow), else
        ``"task_0"``, ``"task_1"``...

    Raises
    ------
    ValueError
        Besides the label checks, when a task has no observed label.
    """
    y = to_pandas(y)
    columns: list[Any]
    if isinstance(y, pd.DataFrame):
        names = np.array([str(c) for c in y.columns], dtype=object)
        columns = [y.iloc[:, k] for k in range(y.shape[1])]
        ndim = 2
    else:
        if hasattr(y, "toarray") or hasattr(y, "tocsr"):
            raise TypeError(
                "A sparse target y is not supported; pass a dense array of "
                "shape (n_samples, n_tasks)."
            )
        if isinstance(y, pd.Series):
            columns, ndim = [y], 1
        else:
            arr = np.asarray(y)
            ndim = arr.ndim
            columns = [arr] if ndim == 1 else [arr[:, k] for k in range(arr.shape[1])]
        names = np.array([f"task_{k}" for k in range(len(columns))], dtype=object)
        if ndim > 2:
            raise ValueError(
                f"y must be 2-D of shape (n_samples, n_tasks), got shape {arr.shape}."
            )
    if columns and len(columns[0]) == 0:
        raise ValueError(
            "y has no rows; pass one row of labels per row of X, shape "
            "(n_samples, n_tasks)."
        )
    observed_columns = []
    for name, col in zip(names, columns, strict=True):
        values, observed = _observed_labels(col)
        if not observed.any():
            raise ValueError(
                f"Task {name!r} has no observed label: every entry of its y "
                "column is missing (NaN/None/NA). Drop the column, or pass "
                "rows where it is observed."
            )
        if values.dtype == object:
            _check_one_label_type(name, values)
        kind = type_of_target(values, input_name="y")
        if kind in ("continuous", "unknown") or kind.endswith("multioutput"):
            raise ValueError(
                f"Unknown label type: {kind!r} in task {name!r}. Each task column "
                "must hold two class labels such as 0/1 or False/True (NaN "
                "marks a missing label)."
            )
        if kind == "multiclass":
            raise ValueError(
                f"Only binary classification is supported: task {name!r} has "
                f"{len(np.unique(values))} labels, at most 2 are allowed per task."
            )
        observed_columns.append((values, observed))
    if ndim != 2:
        raise ValueError(
            "y must be 2-D of shape (n_samples, n_tasks), got a 1-D array. For a "
            "single task pass y.reshape(-1, 1) (or a one-column DataFrame)."
        )
    if not columns:
        raise ValueError("y has no task columns; pass at least one.")
    classes, y01 = [], []
    for name, (values, observed) in zip(names, observed_columns, strict=True):
        labels = np.unique(values)
        if labels.size == 1:
            labels = _complete_single_label(name, labels)
        classes.append(labels)
        codes = np.full(observed.shape[0], np.nan, dtype=np.float32)
        codes[observed] = values == labels[1]
        y01.append(codes)
    return np.column_stack(y01), np.array(classes), names


def _check_one_label_type(name: str, col: np.ndarray) -> None:
    """Reject an object column whose labels mix types, such as 1 and "1"."""
    kinds = {
        "number" if isinstance(v, (int, float, np.number)) else type(v).__name__
        for v in pd.unique(col)  # the distinct labels, not every row
        if not pd.isna(v)
    }
    if len(kinds) > 1:
        raise ValueError(
            f"Task {name!r} mixes label types ({', '.join(sorted(kinds))}), e.g. 1 "
            f'and "1"; convert the column to one type first, e.g. '
            f"y[{name!r}].astype(int) or .astype(str)."
        )


def _complete_single_label(name: str, labels: np.ndarray) -> np.ndarray:
    """Infer the missing class of a task whose y holds one label only."""
    label = labels[0]
    if labels.dtype.kind in "biuf" and label in (0, 1):
        missing = "positive" if label == 0 else "negative"
        warnings.warn(
            f"Task {name!r} has no {missing} label in y; its predictions will "
            "be trained towards a constant and its AUC is undefined.",
            UserWarning,
            stacklevel=3,
        )
        return np.array([0, 1]).astype(labels.dtype)
    raise ValueError(
        f"Task {name!r} has a single label value {label!r}; cannot tell which "
        "second label it would have. Use 0/1 or False/True labels for tasks "
        "without positives."
    )


def check_metadata(
    values: Any, n_samples: int, *, name: str, sortable: bool
) -> np.ndarray | None:
    """Validate ``session_ids`` or ``timestamps`` and return them as an array.

    Timestamps (``sortable=True``) may be numbers or datetimes and are
    returned as sort keys: int64 for integers (exact: float64 would tie
    nanosecond times less than about 256 ns apart) and datetimes (their
    nanoseconds), float64 for floats.
    """
    if values is None:
        return None
    values = to_pandas(values)
    arr = np.asarray(values.to_numpy() if isinstance(values, pd.Series) else values)
    if arr.ndim != 1 or arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} must be 1-D with one entry per row of X ({n_samples}), got "
            f"shape {arr.shape}."
        )
    if sortable:
        if arr.dtype.kind in "OM":
            try:
                # UTC makes time-zone-aware and naive datetimes comparable.
                times = pd.DatetimeIndex(pd.to_datetime(arr, utc=True))
                arr = times.tz_localize(None).to_numpy()
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"{name} must hold numbers or datetimes; {exc}"
                ) from exc
        elif arr.dtype.kind not in "iufb":
            raise TypeError(f"{name} must hold numbers or datetimes, got {arr.dtype}.")
    if pd.isna(arr).any():
        raise ValueError(
            f"{name} contains missing values (NaN/NaT/None); every row needs one."
        )
    if not sortable:
        return arr
    if arr.dtype.kind == "M":
        return arr.view(np.int64)
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(
            f"{name} holds unsigned integers above {np.iinfo(np.int64).max}; "
            "pass them as int64 (e.g. relative to the first time) or datetimes."
        )
    return arr.astype(np.int64 if arr.dtype.kind in "iub" else np.float64)


def _default_task_names(n_tasks: int) -> list[str]:
    return [f"task_{k}" for k in range(n_tasks)]


def check_same_tasks(what: str, fitted: Any, task_names: Any) -> None:
    """Fail unless ``what`` (a given actor or critic) was fitted on y's tasks.

    Names are compared when both sides have them (y was a DataFrame both
    times); otherwise, as for unnamed feature columns, only their number.
    """
    fitted, names = [str(t) for t in fitted], [str(t) for t in task_names]
    if len(fitted) != len(names):
        raise ValueError(
            f"{what} was trained for {len(fitted)} tasks {fitted} but y has "
            f"{len(names)} columns {names}."
        )
    if _default_task_names(len(names)) in (fitted, names) or fitted == names:
        return
    how = (
        "the same tasks in another order; reorder y's columns to"
        if sorted(fitted) == sorted(names)
        else "other tasks; pass y with the columns"
    )
    raise ValueError(
        f"{what} was fitted on tasks {fitted} but y has columns {names}: {how} "
        f"{fitted}, or fit a new {what}."
    )


def task_index(task: Any, task_names: Any) -> int:
    """Position of ``task``, a task name or an index, among ``task_names``.

    An index may be negative (counted from the end, as in Python); a name
    must be one of ``task_names``, which the error lists.
    """
    names = [str(t) for t in task_names]
    if isinstance(task, str):
        if task not in names:
            raise ValueError(f"task={task!r} is not one of the tasks {names}.")
        return names.index(task)
    if isinstance(task, Integral) and not isinstance(task, bool):
        index = int(task)
        if not -len(names) <= index < len(names):
            raise ValueError(
                f"task={task} is out of range for a model with {len(names)} "
                f"tasks {names}."
            )
        return index % len(names)
    raise TypeError(f"task must be a task name (str) or an index (int), got {task!r}.")


def align_tasks(data: Any, task_names: Any, *, name: str) -> Any:
    """Put the task columns of a DataFrame ``data`` in the fitted tasks' order.

    Task-named inputs (``y`` and per-task ``sample_weight`` DataFrames) are
    matched to ``task_names`` by column name, never by position: the same
    names in another order are reordered, other names are refused, as
    scikit-learn refuses feature names that differ from those of ``fit``.
    Data without names (an array, or a DataFrame with the default columns
    0, 1, ...), and tasks fitted without names (``"task_0"``...), are used by
    position.

    Parameters
    ----------
    data : object
        A DataFrame (pandas, polars or pyarrow) or anything else.
    task_names : array-like of str or None
        The tasks in the order the model uses; None: no check.
    name : str
        ``data``'s name in the error message.

    Returns
    -------
    data : object
        ``data`` with its columns in ``task_names``' order, or unchanged.

    Raises
    ------
    ValueError
        When ``data``'s column names are not the tasks' names.
    """
    data = to_pandas(data)
    if task_names is None or not isinstance(data, pd.DataFrame):
        return data
    fitted = [str(t) for t in task_names]
    columns = list(data.columns)
    if columns == list(range(len(columns))) or fitted == _default_task_names(
        len(fitted)
    ):
        return data
    names = [str(c) for c in columns]
    if names == fitted:
        return data
    if sorted(names) != sorted(fitted) or len(set(names)) != len(names):
        raise ValueError(
            f"{name} has {len(names)} task columns {names} but the model was "
            f"fitted on {len(fitted)} tasks {fitted}; columns are matched to the "
            "tasks by name. Name them after the tasks (in any order), or pass "
            f"{name} as an array in the tasks' order."
        )
    return data.iloc[:, [names.index(t) for t in fitted]]


def check_callbacks(callbacks: Any) -> None:
    """Reject user callbacks that would fight the built-in early stopping."""
    from skorch.callbacks import EarlyStopping

    for entry in callbacks or []:
        callback = entry[1] if isinstance(entry, tuple) else entry
        if isinstance(callback, EarlyStopping) or callback is EarlyStopping:
            raise ValueError(
                "callbacks holds a skorch EarlyStopping, which stops training "
                "by raising KeyboardInterrupt and would abort fit (and a "
                "GridSearchCV around it). Early stopping is built in: set "
                "n_iter_no_change (patience), validation_fraction, "
                "validation_interval and validation_metric instead, and "
                "remove EarlyStopping from callbacks."
            )


def available_devices() -> list[str]:
    """The ``device`` values this machine can train on: "cpu", then its GPUs."""
    gpus = [f"cuda:{k}" for k in range(torch.cuda.device_count())]
    return ["cpu", *(["cuda", *gpus] if gpus else [])]


def resolve_device(device: str) -> str:
    """Map the ``device`` parameter to a torch device string.

    "auto" picks CUDA when torch sees a GPU; any other value must be a CPU
    or CUDA device string ("cpu", "cuda", "cuda:1", ...) that this machine
    has, the same values that :func:`sklearn_rmtl.persistence.load`
    accepts. Other torch device types ("mps", "xpu", "meta"...) are refused
    here, at the start of a fit or a load, rather than failing inside torch
    half-way: the package's training is written for CPUs and CUDA GPUs.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    available = f"this machine has {available_devices()}"
    try:
        parsed = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise InvalidParameterError(
            "The 'device' parameter must be 'auto' or a torch device string "
            f"('cpu', 'cuda', 'cuda:1', ...), got {device!r}; {available}."
        ) from exc
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={device!r} is a torch {parsed.type!r} device, which "
            "sklearn-rmtl does not support: it trains on 'cpu' or CUDA GPUs "
            f"('cuda', 'cuda:1', ...); {available}. Use device='auto' to pick "
            "a GPU when there is one."
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch sees no CUDA GPU (installed "
            f"torch {torch.__version__}); {available}. Use device='cpu', or "
            "device='auto' to use a GPU only when one is available."
        )
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} was requested but torch sees "
            f"{torch.cuda.device_count()} CUDA GPU(s); {available}."
        )
    return device


def binarize_labels(y_true: Any, classes: Any, task_names: Any = None) -> np.ndarray:
    """Map each task's labels to 0/1 with the estimator's ``classes_``.

    The one label binariser of the package: scorers, plots and
    ``loss_weights`` read labels through it. ``classes=None``, or classes
    that are not one (negative, positive) pair per task, leave ``y_true``
    as it is (labels must then already be 0/1). A missing label (NaN, None,
    ``pd.NA``) stays missing: the result is then float with NaN there
    (int64 otherwise). With the estimator's ``task_names``, a DataFrame's
    columns are matched to the tasks by name (:func:`align_tasks`).
    """
    y_true = align_tasks(y_true, task_names, name="y")
    if isinstance(y_true, pd.Series):
        y_true = y_true.to_frame()
    if isinstance(y_true, pd.DataFrame):
        # Object columns keep pd.NA (nullable dtypes) as a missing value.
        nullable = any(
            isinstance(dtype, pd.api.extensions.ExtensionDtype)
            for dtype in y_true.dtypes
        )
        y = (y_true.astype(object) if nullable else y_true).to_numpy()
    else:
        y = np.asarray(y_true)
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    if classes is None:
        return y
    classes = np.asarray(classes)
    if classes.ndim == 1 and classes.size == 2:
        classes = classes.reshape(1, 2)  # a single-output binary classifier
    if classes.ndim != 2 or classes.shape[1] != 2:
        return y  # not a per-task binary classifier: labels must already be 0/1
    if y.ndim != 2 or classes.shape[0] != y.shape[1]:
        raise ValueError(
            f"y_true has {y.shape[1] if y.ndim == 2 else '?'} task columns but the "
            f"estimator was fitted on {classes.shape[0]} tasks (classes_ has "
            f"shape {classes.shape})."
        )
    missing = pd.isna(y) if y.dtype.kind in "fcO" else np.zeros(y.shape, dtype=bool)
    # NaN where a label is missing, where nothing else is written.
    y01 = np.full(y.shape, np.nan) if missing.any() else np.empty(y.shape, np.int64)
    for k in range(y.shape[1]):
        observed = ~missing[:, k]
        known = np.isin(y[observed, k], classes[k])
        if not known.all():
            raise ValueError(
                f"y_true of task {k} holds labels "
                f"{np.unique(y[observed, k][~known])[:5]} that the estimator did "
                "not see in fit: they are not among the estimator's classes_ "
                f"{classes[k]}."
            )
        y01[observed, k] = y[observed, k] == classes[k, 1]
    return y01


def check_sample_weight(
    sample_weight: Any,
    n_samples: int,
    n_tasks: int,
    *,
    name: str = "sample_weight",
    all_rows: bool = True,
    task_names: Any = None,
) -> np.ndarray | None:
    """Validate ``sample_weight`` of fit: shape (n,) or (n, n_tasks), >= 0, finite.

    Returns the weights as float64 of shape (n_samples, n_tasks), a 1-D
    weight repeated for every task; ``None`` when no weights are given or
    when every weight is 1 (the unweighted fit, computed exactly as without
    weights). They stay float64 so that the fit can scale them by their
    largest value before casting to float32 (their scale is irrelevant, and
    float32 would round huge weights to inf and tiny ones to 0). ``name``
    names the weights in messages; ``all_rows=False`` checks a block of a
    fit's rows, which may weigh 0 throughout. A DataFrame's columns are
    matched to ``task_names`` by name (:func:`align_tasks`).
    """
    if sample_weight is None:
        return None
    sample_weight = align_tasks(sample_weight, task_names, name=name)
    if isinstance(sample_weight, pd.DataFrame | pd.Series):
        sample_weight = sample_weight.to_numpy()
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"sample_weight must hold numbers (one weight per row or per row and "
            f"task); {exc}"
        ) from None
    if w.ndim == 1 and w.shape[0] == n_samples:
        w = np.repeat(w[:, None], n_tasks, axis=1)
    elif w.shape != (n_samples, n_tasks):
        raise ValueError(
            f"sample_weight must have shape (n_samples,) = ({n_samples},) or "
            f"(n_samples, n_tasks) = ({n_samples}, {n_tasks}), got shape "
            f"{w.shape}. Pass one weight per row, or one per row and task."
        )
    if not np.isfinite(w).all():
        raise ValueError(
            f"{name} contains NaN or infinite values; every weight must be "
            "a finite number >= 0 (use 0 to leave a row or a task out; a missing "
            "label is NaN in y, not in sample_weight)."
        )
    if (w < 0).any():
        raise ValueError(
            f"{name} contains negative values (min {w.min():g}); weights must be >= 0."
        )
    if all_rows and not w.any():
        raise ValueError(
            "sample_weight is zero for every row: at least one weight must be positive."
        )
    if (w == 1).all():
        return None
    return w


def check_task_weights(task_weights: Any, n_tasks: int) -> np.ndarray:
    """Validate fixed per-task loss weights: one finite, non-negative each.

    They are read by position (the estimator's parameters are set before y's
    task names are known), so a pandas Series labelled with names is
    refused rather than applied in its own order.
    """
    task_weights = to_pandas(task_weights)
    labels = task_weights.index if isinstance(task_weights, pd.Series) else None
    if labels is not None and list(labels) != list(range(len(labels))):
        raise ValueError(
            f"task_weights is labelled {[str(t) for t in labels]}, but it is read "
            "by position: pass a list with one weight per column of y, in y's "
            "order (e.g. task_weights.reindex(y.columns).tolist())."
        )
    weights = np.asarray(task_weights, dtype=np.float64)
    if weights.shape != (n_tasks,):
        raise ValueError(
            f"task_weights must have one entry per task ({n_tasks}), got "
            f"shape {weights.shape}."
        )
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise ValueError("task_weights must be finite and non-negative.")
    if not weights.any():
        raise ValueError("task_weights must not all be zero.")
    return weights
