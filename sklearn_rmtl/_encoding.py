"""Feature encoding: DataFrame or array -> embedding codes and scaled numbers."""

from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.preprocessing import StandardScaler
from sklearn.utils import murmurhash3_32
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from sklearn_rmtl._validation import to_pandas

#: Reserved codes of every categorical column; known categories start at 2.
MISSING_CODE = 0
UNKNOWN_CODE = 1
_N_RESERVED = 2
# ``transform``'s float32 matrix holds integer codes exactly up to 2**24; the
# private integer path (``_transform_parts``) has no such bound.
_MAX_FLOAT_CODE = 2**24
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# Column dtypes that ``categorical_features="from_dtype"`` treats as categorical.
_CATEGORICAL_KINDS = {"O", "b", "U", "S"}
# Kinds of values (``pd.api.types.infer_dtype``) among which two values equal
# as Python objects also have equal strings. Elsewhere they may not (1 and
# 1.0, True and 1, 0.0 and -0.0), so their strings are kept too.
_STR_FAITHFUL = {"string", "integer", "boolean", "empty"}
# Kinds of values of a column that fit learns as objects; a column whose
# values are of any other kind mixes types and is learnt as strings.
_HOMOGENEOUS = _STR_FAITHFUL | {"floating", "mixed-integer-float"}


def is_categorical_dtype(dtype: Any) -> bool:
    return isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype)) or (
        getattr(dtype, "kind", None) in _CATEGORICAL_KINDS
    )


def check_features(X: Any, *, min_samples: int = 1) -> pd.DataFrame | np.ndarray:
    """Check the container and shape of X: a DataFrame, or a 2-D ndarray.

    Values are not checked here (NaN is imputed, infinity is rejected when
    encoding), so object arrays of categories pass through unchanged. A
    polars or pyarrow table becomes a pandas DataFrame with the same column
    names and dtypes (see :func:`sklearn_rmtl._validation.to_pandas`).
    ``min_samples=0`` accepts a block without rows (a later
    :meth:`FeatureEncoder.partial_fit` call); a column is always required.
    """
    X = to_pandas(X)
    if isinstance(X, pd.DataFrame):
        if X.shape[0] < min_samples or X.shape[1] < 1:
            required = "1 sample and 1 feature are" if min_samples else "1 feature is"
            raise ValueError(
                f"Found array with shape {X.shape} while at least {required} required."
            )
        return X
    return check_array(
        X, dtype=None, ensure_all_finite=False, ensure_min_samples=min_samples
    )


def _nested_cell(label: str, value: Any) -> ValueError:
    """The error for a sequence cell whose elements are containers."""
    return ValueError(
        f"Sequence column {label!r} has a cell with a nested list "
        f"({value!r:.60}); each cell is a flat list of ids, one level deep "
        "(e.g. [3, 7, 7]): flatten the inner lists, or join each into one id "
        "(e.g. a string)."
    )


def _check_scalar_cells(label: str, values: Any, elements: bool = False) -> None:
    """Reject cells that are containers (lists, dicts, sets, arrays, tuples).

    ``elements``: ``values`` are a sequence column's elements, so a container
    among them is a nested list.
    """
    for value in values:
        if not pd.api.types.is_scalar(value):
            if elements:
                raise _nested_cell(label, value)
            raise ValueError(
                f"Column {label!r} holds a {type(value).__name__} ({value!r:.60}) "
                "in a cell; a categorical or numerical column holds scalars: "
                "str, int, float, bool, dates and categories. For a list of "
                "ids (a history of items, tags), declare the column in "
                "sequence_features, e.g. {" + repr(label) + ": 'itemid'} to "
                "share the item column's vocabulary or {" + repr(label) + ": "
                "None} for its own; otherwise join it into a string first."
            )


#: Largest integral float a hashed column reads as an integer id: float64
#: holds every integer up to here exactly.
_MAX_EXACT_FLOAT = 2**53


def hash_key(value: Any) -> str | None:
    """The text a hashed column hashes for ``value``; None if it is no id.

    A string is its own key; an integer (or an integral float, as pandas
    stores an integer column with missing values) is its decimal text, so
    ``3``, ``3.0`` and ``"3"`` are one id. Booleans and other floats are
    no ids.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer() and abs(number) <= _MAX_EXACT_FLOAT:
            return str(int(number))
    return None


def hash_codes(label: str, values: np.ndarray, n_buckets: int) -> np.ndarray:
    """The codes of a hashed column's distinct ``values`` (none missing).

    ``MurmurHash3_x86_32`` (seed 0, as :func:`sklearn.utils.murmurhash3_32`
    and ONNX Runtime's ``MurmurHash3`` compute it) of each value's UTF-8
    :func:`hash_key`, modulo ``n_buckets``, after the reserved codes: the
    same code for the same id in every process, on every platform.
    """
    keys = [hash_key(v) for v in values.tolist()]
    bad = [v for v, k in zip(values.tolist(), keys, strict=True) if k is None]
    if bad:
        raise ValueError(
            f"Hashed column {label!r} holds {bad[0]!r} ({type(bad[0]).__name__}); "
            "a hashed column holds ids: strings or integers (integral floats "
            "up to 2**53 count as integers). Leave it out of hash_buckets or "
            "convert it, e.g. X[col].astype(str)."
        )
    hashes = np.fromiter(
        (murmurhash3_32(k, seed=0, positive=True) for k in keys),
        dtype=np.int64,
        count=len(keys),
    )
    return hashes % n_buckets + _N_RESERVED


#: Kinds of ids (``pd.api.types.infer_dtype``) by their type: a sequence's
#: ids are of the type of the vocabulary it shares (:func:`_check_shared_ids`).
_ID_TYPES = {
    "string": "strings",
    "integer": "numbers",
    "floating": "numbers",
    "mixed-integer-float": "numbers",
    "boolean": "booleans",
}


def _check_shared_ids(
    label: str, shared: str, vocabulary: np.ndarray, elements: np.ndarray
) -> None:
    """Reject a sequence's ids of another type than its shared vocabulary's.

    ``vocabulary`` holds the distinct values of the categorical column
    ``shared`` seen so far, ``elements`` the distinct elements of sequence
    column ``label``. An id of another type than a vocabulary of one type
    is a mistake in the data: a vocabulary of numbers encodes a string as
    unknown, one of strings matches a number by its text only. A
    vocabulary that mixes types (learnt as strings) accepts any id.
    """
    expected = _ID_TYPES.get(pd.api.types.infer_dtype(vocabulary, skipna=True))
    if expected is None or not len(elements):
        return
    if _ID_TYPES.get(pd.api.types.infer_dtype(elements, skipna=True)) == expected:
        return
    bad = next(
        v
        for v in elements.tolist()
        if _ID_TYPES.get(pd.api.types.infer_dtype([v])) != expected
    )
    raise ValueError(
        f"Sequence column {label!r} holds {bad!r:.60} ({type(bad).__name__}), "
        f"but {shared!r}, whose vocabulary it shares, holds {expected} "
        f"({type(vocabulary[0]).__name__}); a sequence's ids have the type of "
        f"its vocabulary's. Convert the elements of {label!r} (e.g. "
        f"[str(i) for i in ids] per cell) or the column {shared!r}, so that "
        "both hold ids of one type."
    )


_NO_ELEMENTS = np.empty(0, dtype=object)


def _flat_sequences(
    label: str, column: pd.Series, max_len: int | None
) -> tuple[pd.Series, np.ndarray]:
    """Every kept element of a sequence column, flat, and each row's count.

    A cell is a list, tuple or 1-D array (pandas' and pyarrow's list
    columns) of ids, oldest first, or missing (no elements); a scalar is an
    error naming the column. ``max_len`` keeps each row's last (most
    recent) ``max_len`` elements; None keeps all of them (what fit counts).
    The elements are joined by NumPy, not one by one, so that arrays of
    ints (as :func:`sklearn_rmtl.datasets.history_column` makes them) stay
    ints.
    """
    kept = []
    for cell in column.tolist():
        if cell is None or (pd.api.types.is_scalar(cell) and pd.isna(cell)):
            kept.append(_NO_ELEMENTS)
            continue
        if isinstance(cell, str | bytes | dict | set) or pd.api.types.is_scalar(cell):
            raise ValueError(
                f"Sequence column {label!r} holds {cell!r:.60} "
                f"({type(cell).__name__}) in a cell; each cell of a sequence "
                "column is a list (or array) of ids, oldest first, or missing."
            )
        elements = (
            cell if isinstance(cell, np.ndarray) else np.array(cell, dtype=object)
        )
        if elements.ndim != 1:
            raise _nested_cell(label, cell)
        if max_len is not None and len(elements) > max_len:
            elements = elements[-max_len:]
        kept.append(elements)
    lengths = np.fromiter(map(len, kept), dtype=np.intp, count=len(kept))
    flat = np.concatenate(kept) if kept else _NO_ELEMENTS
    return pd.Series(flat, name=label, copy=False), lengths


def _too_wide(names: np.ndarray, far: str) -> ValueError:
    """The error for numerical columns that float32 cannot hold once scaled."""
    return ValueError(
        f"Numerical columns {[str(n) for n in names]} hold values "
        + far.format(f"{_FLOAT32_MAX:.1e}")
        + "; float32 cannot hold them after scaling. Log-transform the column "
        "(e.g. np.log1p of its absolute value, keeping the sign) or clip it "
        "before fit and predict."
    )


class EncodedParts(NamedTuple):
    """An encoding before it becomes one float32 matrix."""

    codes: np.ndarray  # int64 (n_samples, n_categorical)
    numbers: np.ndarray  # float32 (n_samples, n_numerical + n_indicators)


# ------------------------------------------------------------- statistics
# What FeatureEncoder.partial_fit accumulates, block by block; the fitted
# attributes are derived from it after every call, so that fit (one call)
# and a fit over blocks of rows share one implementation.


class _Counts(NamedTuple):
    """The distinct values of a categorical column seen so far, with counts.

    Two values are one entry when they are equal both as Python objects and
    as strings. Whether the vocabulary compares values as strings (when the
    column's values mix types) or as objects is known only once every block
    is in; entries fine enough for both let either be learnt exactly, and
    let transform look each entry up once in either kind of vocabulary.
    """

    values: np.ndarray  # object, in order of first occurrence
    counts: np.ndarray  # int64
    # str(value), or None where not needed yet: all values of one
    # _STR_FAITHFUL kind, so that equal objects are also equal strings.
    strings: np.ndarray | None


_NO_COUNTS = _Counts(np.empty(0, dtype=object), np.zeros(0, dtype=np.int64), None)
# A block's categorical column: its entries and each row's (-1: missing).
_Column = tuple[_Counts, np.ndarray]


def _strings(values: np.ndarray) -> np.ndarray:
    """Each value as ``str(value)``, as fit compares a mixed-type column."""
    return values.astype(str).astype(object)


def _strings_of(counts: _Counts) -> np.ndarray:
    return _strings(counts.values) if counts.strings is None else counts.strings


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """Where each code of a factorisation occurs first (codes in that order)."""
    return np.unique(codes, return_index=True)[1]


def _split(codes: np.ndarray, strings: np.ndarray) -> np.ndarray:
    """Codes of the pairs (code, string), in order of first occurrence."""
    by_string, distinct = pd.factorize(strings)
    return pd.factorize(codes.astype(np.int64) * len(distinct) + by_string)[0]


def _all_str(values: np.ndarray) -> bool:
    return all(isinstance(v, str) for v in values.tolist())


def _may_merge_strings(column: pd.Series, values: np.ndarray) -> bool:
    """Whether values equal as objects may differ as strings in this column.

    ``values`` are its distinct values as objects.
    """
    kind = getattr(column.dtype, "kind", "O")
    if kind == "f":  # one float type: only 0.0 and -0.0 do
        x = column.to_numpy(dtype=np.float64, na_value=np.nan)
        negative = np.signbit(x[x == 0])
        return bool(negative.any() and not negative.all())
    if kind == "O" and not _all_str(values):
        # Every row's type: factorising keeps one of 1 and True.
        return pd.api.types.infer_dtype(column, skipna=True) not in _STR_FAITHFUL
    return False


def _column_counts(
    column: pd.Series, split: bool = True, elements: bool = False
) -> _Column:
    """A block's categorical column: its entries and each row's (-1: missing).

    Missing values (None, NaN, NA, NaT) have no entry. ``split=False`` (for
    a vocabulary compared as objects) leaves values equal as objects one
    entry even where their strings differ. ``elements``: ``column`` holds a
    sequence column's elements (:func:`_flat_sequences`), for the error on
    a container among them.
    """
    strings = None
    if isinstance(column.dtype, pd.CategoricalDtype):
        # The categories the rows use (the vocabulary is the values seen,
        # whatever else the dtype lists): distinct objects, each with its
        # own string.
        positions = column.cat.codes.to_numpy().astype(np.intp)
        values = column.cat.categories.to_numpy(dtype=object)
        counts = np.bincount(positions[positions >= 0], minlength=len(values))
        used = counts > 0
        if not used.all():
            positions = np.append(np.cumsum(used) - 1, -1)[positions]
            values, counts = values[used], counts[used]
    else:
        try:
            positions, uniques = pd.factorize(column, use_na_sentinel=True)
        except TypeError:  # unhashable cells: lists, dicts, sets, arrays
            label = str(column.name)
            _check_scalar_cells(label, column.to_numpy(dtype=object), elements)
            raise
        values = np.asarray(uniques, dtype=object)
        _check_scalar_cells(str(column.name), values.tolist(), elements)  # tuples...
        positions = positions.astype(np.intp, copy=False)
        if split and _may_merge_strings(column, values):
            # Split the values equal as objects by their strings.
            seen = np.flatnonzero(positions >= 0)
            objects = column.to_numpy(dtype=object)[seen]
            codes = _split(positions[seen], _strings(objects))
            values = objects[_first_rows(codes)]
            strings = _strings(values)
            positions = np.full(len(column), -1, dtype=np.intp)
            positions[seen] = codes
        counts = np.bincount(positions[positions >= 0], minlength=len(values))
    return _Counts(values, counts.astype(np.int64), strings), positions


def _merge_counts(seen: _Counts, new: _Counts) -> _Counts:
    """The entries of ``seen`` then ``new``, counts of the same entry added."""
    if not len(seen.values):
        return new
    if not len(new.values):
        return seen
    values = np.concatenate([seen.values, new.values])
    counts = np.concatenate([seen.counts, new.counts])
    codes, _ = pd.factorize(values)
    strings = None
    if (
        seen.strings is not None
        or new.strings is not None
        or pd.api.types.infer_dtype(values, skipna=True) not in _STR_FAITHFUL
    ):
        strings = np.concatenate([_strings_of(seen), _strings_of(new)])
        codes = _split(codes, strings)
    first = _first_rows(codes)
    total = np.bincount(codes, weights=counts, minlength=len(first))
    return _Counts(
        values[first],
        total.astype(np.int64),
        None if strings is None else strings[first],
    )


def _vocabulary(
    seen: _Counts,
    n_rows: int,
    min_frequency: float | None,
    max_categories: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """What OrdinalEncoder learns from the rows counted in ``seen``.

    The known values, sorted, and their codes (from ``_N_RESERVED``;
    infrequent values share one). A column whose values mix types is learnt
    as strings, ``str(value)``; any other compares values as Python objects
    (3 and 3.0 are one value, the first seen). ``min_frequency`` and
    ``max_categories`` follow OrdinalEncoder's rule; ``n_rows`` counts the
    rows, missing values included, as OrdinalEncoder does for a float
    ``min_frequency``.
    """
    values, counts = seen.values, seen.counts
    if not len(values):  # only missing values
        return values, np.zeros(0, dtype=np.int64)
    as_str = pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS
    if as_str or seen.strings is not None:
        # Entries equal in the comparison learnt are one known value.
        keys = _strings_of(seen) if as_str else values
        codes, uniques = pd.factorize(keys)
        values = np.asarray(uniques, dtype=object)
        counts = np.bincount(codes, weights=counts, minlength=len(values))
    # OrdinalEncoder's order: the values are distinct, so sorting them is
    # sorting their set.
    order = np.argsort(values, kind="stable")
    known, count = values[order], np.asarray(counts[order], dtype=np.int64)
    if min_frequency is None:
        rare = np.zeros(len(count), dtype=bool)
    elif isinstance(min_frequency, Integral):
        rare = count < min_frequency
    else:
        rare = count < n_rows * min_frequency
    # max_categories counts the infrequent code too.
    if max_categories is not None and max_categories <= int((~rare).sum()):
        # The least frequent first; ties by position (a stable sort).
        least = np.argsort(count, kind="mergesort")
        rare[least[: len(count) - max_categories + 1]] = True
    frequent = ~rare
    codes = np.where(rare, frequent.sum(), np.cumsum(frequent) - 1)
    return known, codes.astype(np.int64) + _N_RESERVED


class _Moments(NamedTuple):
    """Each column's count, mean and variance (ddof=0) of non-missing values."""

    n: np.ndarray  # float64
    mean: np.ndarray
    var: np.ndarray


def _no_moments(n_columns: int) -> _Moments:
    return _Moments(np.zeros(n_columns), np.zeros(n_columns), np.zeros(n_columns))


def _moments(x: np.ndarray) -> _Moments:
    """StandardScaler's statistics of ``x`` (one row or more).

    Computed by ``StandardScaler.fit`` itself, so that one block gives its
    statistics to the bit.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scaler = StandardScaler().fit(x)
    n = np.asarray(scaler.n_samples_seen_, dtype=np.float64)
    return _Moments(
        np.broadcast_to(n, scaler.mean_.shape).copy(), scaler.mean_, scaler.var_
    )


def _merge_moments(a: _Moments, b: _Moments) -> _Moments:
    """The moments of a's and b's values together.

    The pairwise update of Chan, Golub and LeVeque, stable across blocks; a
    side without values (a column only missing in a block) leaves the other
    unchanged, to the bit, where ``StandardScaler.partial_fit`` would turn
    the variance into NaN.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n = a.n + b.n
        delta = b.mean - a.mean
        mean = a.mean + delta * (b.n / n)
        var = (a.var * a.n + b.var * b.n + delta**2 * (a.n * (b.n / n))) / n
    mean = np.where(a.n == 0, b.mean, np.where(b.n == 0, a.mean, mean))
    var = np.where(a.n == 0, b.var, np.where(b.n == 0, a.var, var))
    return _Moments(n, mean, var)


def _scale(m: _Moments) -> np.ndarray:
    """StandardScaler's ``scale_``: the standard deviation, 1 where ~constant."""
    eps = np.finfo(np.float64).eps
    with np.errstate(over="ignore", invalid="ignore"):
        # sklearn's test on the variance (its _is_constant_feature).
        constant = m.var <= m.n * eps * m.var + (m.n * m.mean * eps) ** 2
        scale = np.sqrt(m.var)
    scale[constant] = 1.0
    return scale


class _Numbers(NamedTuple):
    """The running statistics of the numerical columns.

    ``StandardScaler`` squares the values, so a column of magnitude ~1e200
    overflows (variance inf or NaN) and one of ~1e-170 underflows (variance
    0): scaling would zero them. Such columns are standardised from
    ``scaled``, the statistics of ``x / scale_by``, and scaled back; every
    other column keeps the scaler's exact statistics, ``plain``. A column's
    ``scale_by`` is its first nonzero magnitude, then multiplied by a power
    of two when larger values come, so that ``|x| / scale_by < 2`` and the
    statistics already accumulated are rescaled exactly: one pass suffices.
    """

    plain: _Moments
    scaled: _Moments
    scale_by: np.ndarray  # 1 while the column has no nonzero value
    magnitude: np.ndarray  # the largest |x| (0 without values)
    high: np.ndarray  # the largest x (-inf without values)
    low: np.ndarray  # the smallest x (inf without values)
    nan: np.ndarray  # bool: a missing value was seen


def _no_numbers(n: int) -> _Numbers:
    inf = np.full(n, np.inf)
    return _Numbers(
        _no_moments(n), _no_moments(n), np.ones(n), np.zeros(n), -inf, inf, inf < 0
    )


def _refined(numbers: _Numbers) -> np.ndarray:
    """The columns standardised from the scaled statistics.

    Those whose variance is inf, NaN or below the smallest normal float,
    unless they have only zeros or one value (then the scaler's scale of 1
    is right).
    """
    var = numbers.plain.var
    troubled = ~((var >= np.finfo(np.float64).tiny) & (var < np.inf))
    return (
        troubled
        & (numbers.magnitude > 0)
        & (~np.isfinite(var) | (numbers.high > numbers.low))
    )


def _add_numbers(numbers: _Numbers, x: np.ndarray) -> _Numbers:
    """The statistics with the rows of ``x`` (one or more) added."""
    nan = np.isnan(x)
    magnitude = np.fmax(numbers.magnitude, np.where(nan, 0.0, np.abs(x)).max(axis=0))
    # The first nonzero magnitude is the scale; a magnitude of a higher
    # binary exponent multiplies it by a power of two, which rescales the
    # scaled statistics exactly (ldexp only changes exponents).
    first = (numbers.magnitude == 0) & (magnitude > 0)
    scale_by = np.where(first, magnitude, numbers.scale_by)
    grow = np.frexp(magnitude)[1] - np.frexp(scale_by)[1]
    grow = np.where(numbers.magnitude > 0, np.maximum(grow, 0), 0)
    scaled = numbers.scaled
    if grow.any():
        scale_by = np.ldexp(scale_by, grow)
        scaled = _Moments(
            scaled.n, np.ldexp(scaled.mean, -grow), np.ldexp(scaled.var, -2 * grow)
        )
    updated = _Numbers(
        _merge_moments(numbers.plain, _moments(x)),
        scaled,
        scale_by,
        magnitude,
        np.fmax(numbers.high, np.fmax.reduce(x, axis=0)),
        np.fmin(numbers.low, np.fmin.reduce(x, axis=0)),
        numbers.nan | nan.any(axis=0),
    )
    # The refined columns' block statistics are computed apart from the
    # others, as one fit did: numpy's sums depend on the array's layout, and
    # one call must give fit's statistics to the bit.
    block = _no_moments(x.shape[1])
    refined = _refined(updated)
    for group in (refined, ~refined):
        columns = np.flatnonzero(group)
        if columns.size:
            part = _moments(x[:, columns] / scale_by[columns])
            for whole, values in zip(block, part, strict=True):
                whole[columns] = values
    return updated._replace(scaled=_merge_moments(scaled, block))


def _standardisation(
    numbers: _Numbers, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each numerical column, as ``StandardScaler`` learns them.

    Columns whose variance over- or underflows get them from the scaled
    statistics (see :class:`_Numbers`).

    Raises
    ------
    ValueError
        If a column's values are too far apart to scale within float32; the
        message names the columns (``labels``).
    """
    mean, scale = numbers.plain.mean.copy(), _scale(numbers.plain)
    refine = _refined(numbers)
    if not refine.any():
        return mean, scale
    scale_by = numbers.scale_by[refine]
    mean[refine] = numbers.scaled.mean[refine] * scale_by
    scale[refine] = _scale(numbers.scaled)[refine] * scale_by
    # (x - mean) / scale is monotonic in x: its extremes are the high's and
    # the low's.
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.fmax(
            np.abs((numbers.high - mean) / scale), np.abs((numbers.low - mean) / scale)
        )
    wide = refine & (z > _FLOAT32_MAX)
    if wide.any():
        raise _too_wide(
            labels[wide],
            "too far apart (more than {} standard deviations from the mean)",
        )
    return mean, scale


class _Statistics(NamedTuple):
    """Everything partial_fit has learnt; the fitted attributes derive from it."""

    labels: np.ndarray  # the input columns' names (or positions), as str
    is_categorical: np.ndarray  # bool, per input column
    n_rows: int
    categories: list[_Counts]  # per categorical column
    numbers: _Numbers
    buckets: np.ndarray  # int64 per input column: hash buckets, 0 if none
    # int64 per input column: -2 not a sequence, -1 a sequence with its own
    # vocabulary, else the input position of the column whose it shares.
    sequences: np.ndarray
    sequence_counts: list[_Counts]  # per sequence column of its own vocabulary


# What fit and partial_fit set; _set_state sets all but _statistics.
_FITTED = (
    "n_features_in_",
    "feature_names_in_",
    "categorical_features_",
    "numerical_features_",
    "cardinalities_",
    "missing_indicator_features_",
    "categories_",
    "category_codes_",
    "mean_",
    "scale_",
    "_cat_idx",
    "_num_idx",
    "_indicator_idx",
    "_lookups",
    "n_buckets_",
    "sequence_features_",
    "sequence_vocabularies_",
    "sequence_categories_",
    "sequence_category_codes_",
    "sequence_cardinalities_",
    "_seq_idx",
    "_seq_shared",
    "_statistics",
)

# The layout of ``FeatureEncoder._get_state``.
_STATE_KEYS = frozenset(
    {"n_features_in", "feature_names_in", "categorical", "numerical", "sequences"}
)
_COLUMN_KEYS = {
    "categorical": frozenset({"position", "name", "values", "codes", "buckets"}),
    "numerical": frozenset({"position", "name", "mean", "scale", "missing_indicator"}),
    "sequences": frozenset({"position", "name", "vocabulary", "values", "codes"}),
}


def _records(**fields: list[Any]) -> list[dict[str, Any]]:
    """One dict per column from lists of equal length, one per field."""
    return [
        dict(zip(fields, row, strict=True))
        for row in zip(*fields.values(), strict=True)
    ]


def _checked_vocabulary(
    values: Any, codes: Any, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """A stored vocabulary (lists of values and codes) as arrays, checked."""
    if (
        not isinstance(values, list)
        or not isinstance(codes, list)
        or len(values) != len(codes)
        # Codes are dense: at most one per value, from _N_RESERVED.
        or any(
            type(c) is not int or not _N_RESERVED <= c < _N_RESERVED + len(values)
            for c in codes
        )
    ):
        raise ValueError(
            f"{what}: values and codes must be lists of the same length, codes "
            f"ints from {_N_RESERVED} to {_N_RESERVED - 1} + the number of values"
        )
    known = np.empty(len(values), dtype=object)
    known[:] = values
    if len(set(values)) != len(values) or pd.isna(known).any():
        raise ValueError(f"{what}: values must be distinct and not missing")
    return known, np.asarray(codes, dtype=np.int64)


def _check_keys(
    node: Any, keys: frozenset[str], what: str, optional: frozenset[str] = frozenset()
) -> None:
    if not isinstance(node, dict) or not keys - optional <= set(node) <= keys:
        found = sorted(node) if isinstance(node, dict) else type(node).__name__
        raise ValueError(f"{what} must have the keys {sorted(keys)}, got {found}")


#: The named tuples a fitted encoder holds (its pickled state names them).
ENCODER_STATE_TYPES = (_Counts, _Moments, _Numbers, _Statistics)


def _tables(
    categories: list[np.ndarray], codes: list[np.ndarray]
) -> list[tuple[dict[Any, int], bool]]:
    """Each vocabulary's value -> code dict, and whether it compares strings."""
    tables = []
    for values, column_codes in zip(categories, codes, strict=True):
        table = dict(zip(values.tolist(), column_codes.tolist(), strict=True))
        tables.append((table, len(values) > 0 and _all_str(values)))
    return tables


def _entry_codes(
    label: str,
    seen: _Counts,
    positions: np.ndarray,
    table: tuple[dict[Any, int], bool],
    n_buckets: int,
) -> np.ndarray:
    """The codes of a factorised column (``seen``, ``positions``) by one
    vocabulary (``table``) or, with ``n_buckets``, by hashing."""
    keys = seen.values
    if n_buckets:
        lookup = hash_codes(label, keys, n_buckets)
        lookup[keys == ""] = MISSING_CODE
    else:
        values, as_str = table
        if as_str and not _all_str(keys):
            keys = _strings_of(seen)
        lookup = np.array(
            [values.get(v, UNKNOWN_CODE) for v in keys.tolist()], dtype=np.int64
        )
    # Position -1 (missing) reads the appended MISSING_CODE: missing values
    # always get it, seen in fit or not.
    return np.append(lookup, MISSING_CODE)[positions]


def embedding_layout(
    encoder: FeatureEncoder,
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The embedding tables a fitted encoder's codes index, and its sequences.

    The table sizes: the categorical columns' ``cardinalities_``, then those
    of the sequence columns with a vocabulary of their own; per sequence
    column ``(table, candidate, length)``: the table its codes index, the
    categorical column it shares (its candidate; -1 for its own table) and
    its number of code columns (``FeatureEmbedding``'s ``sequences``).
    """
    sizes = [int(c) for c in encoder.cardinalities_]
    sequences = []
    for shared, size in zip(
        encoder._seq_shared, encoder.sequence_cardinalities_, strict=True
    ):
        if shared < 0:
            sizes.append(int(size))
        table = int(shared) if shared >= 0 else len(sizes) - 1
        sequences.append((table, int(shared), int(encoder.max_sequence_length)))
    return sizes, sequences


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Encode mixed tabular features for embedding-based networks.

    Categorical columns become integer codes for embedding tables, with two
    reserved codes per column: ``0`` for missing values and ``1`` for values
    not seen in training. Infrequent categories can be merged into one code.
    Numerical columns are standardised; their missing values are imputed with
    the training mean (0 after scaling) and, for columns that had missing
    values in training, flagged in an extra indicator column.

    The estimators of this package fit one internally (``encoder_``); use it
    directly to inspect or reuse an encoding. :meth:`partial_fit` learns the
    same encoding from blocks of rows, one call per block, for data that do
    not fit in memory.

    Parameters
    ----------
    categorical_features : "from_dtype", array-like of {bool, int, str} or None, \
            default="from_dtype"
        Which input columns are categorical.

        - ``"from_dtype"``: DataFrame columns of dtype ``category``,
          ``object``, ``string`` or ``bool``; arrays are all numerical.
        - array-like of bool: a mask over the input columns.
        - array-like of int or str: the categorical columns' positions or
          names (names need a DataFrame).
        - ``None``: every column is numerical.
    min_frequency : int or float, default=None
        Categories seen fewer times than this (an int) or in a smaller
        fraction of rows (a float in (0, 1)) share one "infrequent" code, as
        in :class:`~sklearn.preprocessing.OrdinalEncoder`. ``None`` keeps all.
    max_categories : int, default=None
        Upper bound on the number of frequent categories per column (the rest
        are merged as infrequent). ``None`` sets no bound.
    hash_buckets : dict of {str, int} to int, default=None
        Id columns to encode by hashing instead of a vocabulary, each with
        its number of buckets, e.g. ``{"itemid": 2**18}``; keys are column
        names (or positions for arrays). A hashed column is categorical
        whatever ``categorical_features`` says. Its code is ``2 +
        MurmurHash3(id) % n_buckets`` (see Notes): nothing is learnt or
        kept per id, so memory is bounded whatever the number of ids, and
        an id unseen in training gets a code of its own bucket, not the
        unknown code. Ids that share a bucket share an embedding: with
        ``n`` distinct ids in ``b`` buckets about ``n / b`` collide, so
        choose ``b`` several times the number of frequent ids. ``None``
        hashes no column.
    sequence_features : dict of {str, int} to {str, int} or None, default=None
        Columns whose cells are lists (or arrays) of ids, oldest first, such
        as a user's earlier items (see
        :func:`sklearn_rmtl.datasets.history_column`) or a row's tags. Each
        maps to the categorical column whose vocabulary (and, in the
        networks, embedding table) it shares, e.g. ``{"item_history":
        "itemid"}`` (its ids then have that column's type: strings,
        numbers or booleans, else fit raises an error naming the column),
        or to ``None`` for a vocabulary of its own, learnt from
        all its elements (a multi-valued field, e.g. ``{"tags": None}``;
        ``min_frequency`` applies, counting elements);
        keys and values are column names (or positions for arrays). A
        sequence column is neither categorical nor numerical. ``None``: no
        sequence columns (a cell holding a list is then an error).
    max_sequence_length : int, default=50
        Elements kept per sequence cell: the last (most recent)
        ``max_sequence_length``; shorter cells are padded with the missing
        code 0, which the networks mask out.

    Attributes
    ----------
    n_features_in_ : int
        Number of input columns seen in :meth:`fit` (or the first
        :meth:`partial_fit`).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Input column names, when X had string column names.
    categorical_features_ : ndarray of str
        Names (or positions, as strings) of the categorical input columns, in
        output order.
    numerical_features_ : ndarray of str
        Names (or positions) of the numerical input columns, in output order.
    cardinalities_ : ndarray of int
        Number of codes of each categorical column, the two reserved codes
        included: the embedding table sizes (``n_buckets + 2`` for a
        hashed column).
    n_buckets_ : ndarray of int
        Per categorical column, its number of hash buckets, 0 for a column
        encoded by its vocabulary.
    sequence_features_ : ndarray of str
        Names (or positions) of the sequence columns, in output order.
    sequence_vocabularies_ : ndarray of object
        Per sequence column, the name of the categorical column whose
        vocabulary it shares, or None for its own.
    sequence_categories_ : list of ndarray of object
        Per sequence column, its own vocabulary (as ``categories_``); empty
        for a sequence that shares a column's.
    sequence_category_codes_ : list of ndarray of int64
        The codes of ``sequence_categories_``.
    sequence_cardinalities_ : ndarray of int
        Per sequence column, the size of its own embedding table (reserved
        codes included), 0 for a sequence that shares a column's.
    missing_indicator_features_ : ndarray of str
        Numerical columns that had missing values in training and therefore
        get an indicator column.
    categories_ : list of ndarray of object
        The known values of each categorical column, sorted (infrequent ones
        included); missing values are never in a vocabulary. Empty for a
        hashed column.
    category_codes_ : list of ndarray of int64
        The code of each value in ``categories_`` (``>= 2``; infrequent
        values share one).
    mean_ : ndarray of float64 of shape (len(numerical_features_),)
        Training mean of each numerical column (missing values ignored); a
        missing number is imputed with it, which scales to 0.
    scale_ : ndarray of float64 of shape (len(numerical_features_),)
        Training standard deviation of each numerical column, 1 where it is 0.
        Columns of huge (~1e200) or tiny (~1e-170) magnitude, whose variance
        over- or underflows, get it computed after dividing them by their
        largest magnitude (rounded up to a power of two over blocks of
        :meth:`partial_fit`), so they are scaled, not zeroed.

    See Also
    --------
    sklearn.preprocessing.OrdinalEncoder : Its rule for the vocabularies.
    sklearn.preprocessing.StandardScaler : Its rule for the scaling.
    MTLClassifier : Uses this encoder in front of its network.

    Notes
    -----
    :meth:`transform` returns one float32 matrix: the ``len(cardinalities_)``
    categorical codes first (exact integers), then ``max_sequence_length``
    codes per sequence column, then the scaled numbers, then the
    missing-value indicators. Infinite values raise an error.

    A categorical value's code depends only on the value and the fitted
    vocabulary, never on the other rows of the batch. In :meth:`fit`, a
    column whose values mix types (e.g. ints and strings, ints and bools,
    or datetimes) is learnt as strings, ``str(value)``; other columns keep
    their values. The vocabulary then sets the rule: a vocabulary of
    strings compares every value as ``str(value)`` (so ``3`` matches
    ``"3"``), any other compares values as Python objects (so ``3``,
    ``3.0`` and ``np.int64(3)`` match, and ``"3"`` is unknown).

    A hashed column's key of an id is its text: a string as it is, an
    integer (or an integral float up to 2**53, as pandas stores integers
    with missing values) in decimal, so ``3``, ``3.0`` and ``"3"`` are one
    id; its code is ``2 + murmurhash3_32(key, seed=0, positive=True) %
    n_buckets`` (:func:`sklearn.utils.murmurhash3_32`, MurmurHash3_x86_32
    of the UTF-8 bytes), the same in every process and on every platform.
    An empty string counts as missing there (the ONNX graph feeds hashed
    ids as text, where ``""`` marks a missing one). Other values (booleans,
    fractional floats) raise an error.

    The fitted state is plain arrays (vocabularies and statistics), learnt
    by the rules of :class:`~sklearn.preprocessing.OrdinalEncoder` and
    :class:`~sklearn.preprocessing.StandardScaler` and not tied to them:
    :func:`sklearn_rmtl.persistence.save` stores exactly these arrays. They
    are derived from counts and running statistics that :meth:`fit` and
    :meth:`partial_fit` share, so fitting on all rows at once or on blocks
    of them gives the same vocabularies and codes, and the same means and
    scales up to floating-point rounding.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import FeatureEncoder
    >>> X = pd.DataFrame({"item": ["a", "b", "a", None], "price": [1.0, 2.0, 3.0, 4.0]})
    >>> enc = FeatureEncoder().fit(X)
    >>> enc.cardinalities_
    array([4])
    >>> enc.transform(pd.DataFrame({"item": ["b", "z"], "price": [4.0, np.nan]}))
    array([[3.       , 1.3416408],
           [1.       , 0.       ]], dtype=float32)
    """

    _parameter_constraints: dict = {
        "categorical_features": [StrOptions({"from_dtype"}), "array-like", None],
        "min_frequency": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
            None,
        ],
        "max_categories": [Interval(Integral, 1, None, closed="left"), None],
        "hash_buckets": [dict, None],
        "sequence_features": [dict, None],
        "max_sequence_length": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        categorical_features: Any = "from_dtype",
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
        hash_buckets: dict[Any, int] | None = None,
        sequence_features: dict[Any, Any] | None = None,
        max_sequence_length: int = 50,
    ) -> None:
        self.categorical_features = categorical_features
        self.min_frequency = min_frequency
        self.max_categories = max_categories
        self.hash_buckets = hash_buckets
        self.sequence_features = sequence_features
        self.max_sequence_length = max_sequence_length

    def _position(self, X: Any, names: list[str], key: Any, what: str) -> int:
        """The input position of a column named (or numbered) in ``what``."""
        if isinstance(key, str) and isinstance(X, pd.DataFrame):
            if key not in names:
                raise ValueError(
                    f"{what} names column {key!r}, which X does not have; X's "
                    f"columns are {names}."
                )
            return names.index(key)
        if isinstance(key, Integral) and not isinstance(key, bool):
            if not -len(names) <= int(key) < len(names):
                raise ValueError(
                    f"{what} has column position {key} outside the "
                    f"{len(names)} columns of X."
                )
            return int(key) % len(names)
        raise ValueError(
            f"{what} names columns by name (names need X to be a pandas "
            f"DataFrame) or position; got {key!r} for X of type "
            f"{type(X).__name__}."
        )

    def _sequences(self, X: Any, frame: pd.DataFrame) -> np.ndarray:
        """``sequence_features`` per input column: -2 none, -1 own vocabulary,
        else the input position of the column whose vocabulary it shares."""
        spec = np.full(frame.shape[1], -2, dtype=np.int64)
        names = [str(c) for c in frame.columns]
        for key, shared in (self.sequence_features or {}).items():
            position = self._position(X, names, key, "sequence_features")
            spec[position] = (
                -1
                if shared is None
                else self._position(X, names, shared, f"sequence_features[{key!r}]")
            )
        targets = spec[spec >= 0]
        if (spec[targets] > -2).any() or (spec == np.arange(len(spec))).any():
            raise ValueError(
                "sequence_features maps a sequence column to a sequence column "
                "(or to itself); map it to the categorical column whose "
                "vocabulary it shares, such as the item id column, or to None."
            )
        return spec

    def _buckets(self, X: Any, frame: pd.DataFrame) -> np.ndarray:
        """``hash_buckets`` as a count per input column (0: not hashed)."""
        buckets = np.zeros(frame.shape[1], dtype=np.int64)
        names = [str(c) for c in frame.columns]
        for key, n_buckets in (self.hash_buckets or {}).items():
            if isinstance(n_buckets, bool) or not isinstance(n_buckets, Integral):
                raise ValueError(
                    f"hash_buckets[{key!r}] must be a positive int (the number "
                    f"of buckets), got {n_buckets!r}."
                )
            if not 1 <= n_buckets <= 2**62:
                raise ValueError(
                    f"hash_buckets[{key!r}] must be in [1, 2**62], got {n_buckets}."
                )
            position = self._position(X, names, key, "hash_buckets")
            buckets[position] = int(n_buckets)
        return buckets

    def _categorical_mask(self, X: Any, frame: pd.DataFrame) -> np.ndarray:
        n, spec = frame.shape[1], self.categorical_features
        if isinstance(spec, str):  # "from_dtype": arrays are all numerical
            frames = isinstance(X, pd.DataFrame)
            return np.array([frames and is_categorical_dtype(d) for d in frame.dtypes])
        mask = np.zeros(n, dtype=bool)
        spec = np.asarray([] if spec is None else spec)
        if spec.size == 0:
            return mask
        if spec.dtype.kind == "b":
            if spec.shape != (n,):
                raise ValueError(
                    f"categorical_features as a boolean mask must have one entry "
                    f"per column ({n}), got shape {spec.shape}."
                )
            return spec.copy()
        if spec.dtype.kind in "iu":
            if spec.min() < -n or spec.max() >= n:
                raise ValueError(
                    f"categorical_features has column positions {spec.tolist()} "
                    f"outside the {n} columns of X."
                )
            mask[spec] = True
            return mask
        if spec.dtype.kind in "UO" and isinstance(X, pd.DataFrame):
            names = [str(c) for c in frame.columns]
            missing = sorted(set(spec.astype(str).tolist()) - set(names))
            if missing:
                raise ValueError(
                    f"categorical_features names columns {missing} that X does "
                    f"not have; X's columns are {names}."
                )
            return np.isin(names, spec.astype(str))
        raise ValueError(
            "categorical_features must be 'from_dtype', None, a boolean mask, "
            "column positions, or column names (names need X to be a pandas "
            f"DataFrame); got {self.categorical_features!r} for X of type "
            f"{type(X).__name__}."
        )

    def _numbers(self, frame: pd.DataFrame, columns: np.ndarray) -> np.ndarray:
        out = np.empty((frame.shape[0], len(columns)), dtype=np.float64)
        for i, j in enumerate(columns):
            column, label = frame.iloc[:, j], str(frame.columns[j])
            try:
                out[:, i] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                _check_scalar_cells(label, column.to_numpy(object))
                raise ValueError(
                    f"Column {label!r} is treated as numerical but could not be "
                    f"converted to float ({exc}). Mark it as categorical with "
                    "categorical_features=[...] or give it a 'category' dtype."
                ) from exc
        bad = np.isinf(out).any(axis=0)
        if bad.any():
            names = [str(frame.columns[j]) for j in columns[bad]]
            raise ValueError(
                f"Input X contains infinity in numerical columns {names}; "
                "replace it with a finite value or NaN (NaN is imputed)."
            )
        return out

    def _lookup_tables(
        self,
    ) -> tuple[list[tuple[dict[Any, int], bool]], list[tuple[dict[Any, int], bool]]]:
        """Each vocabulary's value -> code dict, and whether it compares strings.

        For the categorical columns, then for the sequence columns of their
        own vocabulary. A dict compares values as Python objects (hash and
        ==), as OrdinalEncoder does, so 3 and 3.0 share a code; a vocabulary
        whose values are all strings compares every value as
        ``str(value)``. Derived from the fitted vocabularies and rebuilt
        only when those are replaced, so that transform (called per
        prediction chunk) does not go over every known value each time.
        """
        # The cache holds the lists it was built from: compared by identity.
        sources = (
            self.categories_,
            self.category_codes_,
            self.sequence_categories_,
            self.sequence_category_codes_,
        )
        cached = self.__dict__.get("_lookups")
        if cached is None or any(
            a is not b for a, b in zip(cached[0], sources, strict=True)
        ):
            cached = (sources, (_tables(*sources[:2]), _tables(*sources[2:])))
            self._lookups = cached
        return cached[1]

    def _parts(
        self, frame: pd.DataFrame, columns: list[_Column] | None = None
    ) -> EncodedParts:
        """The encoding of ``frame`` as int64 codes and float32 numbers.

        ``columns`` are its categorical columns (:func:`_column_counts`)
        where fit has factorised them already.
        """
        n = frame.shape[0]
        codes = np.zeros((n, len(self._cat_idx)), dtype=np.int64)
        numbers = np.zeros((n, 0), dtype=np.float32)
        tables, sequence_tables = self._lookup_tables()
        if columns is None:
            columns = [
                _column_counts(frame.iloc[:, int(j)], split=as_str)
                for j, (_, as_str) in zip(self._cat_idx, tables, strict=True)
            ]
        # Each column's entries are looked up once; the vocabulary decides
        # how values compare, never the batch, so that a value's code does
        # not depend on the other rows of its batch.
        for i, ((seen, positions), table) in enumerate(
            zip(columns, tables, strict=True)
        ):
            label = str(self.categorical_features_[i])
            codes[:, i] = _entry_codes(
                label, seen, positions, table, int(self.n_buckets_[i])
            )
        sequences = [codes]
        for s, j in enumerate(self._seq_idx):
            label, shared = str(self.sequence_features_[s]), int(self._seq_shared[s])
            flat, lengths = _flat_sequences(
                label, frame.iloc[:, int(j)], self.max_sequence_length
            )
            table = tables[shared] if shared >= 0 else sequence_tables[s]
            buckets = int(self.n_buckets_[shared]) if shared >= 0 else 0
            counts = _column_counts(flat, split=table[1], elements=True)
            element_codes = _entry_codes(label, *counts, table, buckets)
            # Each row's elements from its first slot on; the rest stays
            # MISSING_CODE, the padding the networks mask.
            rows = np.repeat(np.arange(n), lengths)
            starts = np.cumsum(lengths) - lengths
            slots = np.arange(len(flat)) - np.repeat(starts, lengths)
            matrix = np.full((n, self.max_sequence_length), MISSING_CODE, np.int64)
            matrix[rows, slots] = element_codes
            sequences.append(matrix)
        if len(sequences) > 1:
            codes = np.hstack(sequences)
        if self._num_idx.size:
            x = self._numbers(frame, self._num_idx)
            nan = np.isnan(x)
            # (x - mean) / scale, StandardScaler's arithmetic; missing
            # numbers are imputed with the mean, i.e. 0 after scaling.
            with np.errstate(over="ignore"):
                z = np.where(nan, 0.0, (x - self.mean_) / self.scale_)
                numbers = np.hstack([z, nan[:, self._indicator_idx]]).astype(np.float32)
            wide = np.isinf(numbers[:, : len(self._num_idx)]).any(axis=0)
            if wide.any():
                raise _too_wide(
                    self.numerical_features_[wide],
                    "more than {} training standard deviations from the training mean",
                )
        return EncodedParts(codes, numbers)

    def _as_float(self, parts: EncodedParts) -> np.ndarray:
        """The public layout: one float32 matrix, codes first."""
        if self.cardinalities_.size and self.cardinalities_.max() > _MAX_FLOAT_CODE:
            raise ValueError(
                f"A categorical column has {self.cardinalities_.max()} codes; "
                f"the float32 output of transform holds at most {_MAX_FLOAT_CODE} "
                "exactly. Merge rare categories with min_frequency or "
                "max_categories."
            )
        return np.hstack([parts.codes.astype(np.float32), parts.numbers])

    def _reset(self) -> None:
        """Forget what fit and partial_fit learnt; the parameters stay."""
        for name in _FITTED:
            self.__dict__.pop(name, None)

    def _set_fitted(
        self,
        cat_idx: np.ndarray,
        num_idx: np.ndarray,
        labels: np.ndarray,
        vocabularies: list[tuple[np.ndarray, np.ndarray]],
        mean: np.ndarray,
        scale: np.ndarray,
        indicators: np.ndarray,
        buckets: np.ndarray,
        seq_idx: np.ndarray,
        seq_shared: np.ndarray,
        seq_vocabularies: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Set the fitted attributes of fit and of _set_state.

        ``labels`` names every input column; ``vocabularies`` are the
        categorical columns' known values and codes; ``indicators`` masks
        the numerical columns that get a missing-value indicator;
        ``buckets`` are the categorical columns' hash buckets (0: none);
        ``seq_idx`` are the sequence columns' input positions,
        ``seq_shared`` the index among the categorical columns of the one
        each shares (-1: its own, in ``seq_vocabularies``).
        """
        self._cat_idx, self._num_idx = cat_idx, num_idx
        self.categorical_features_ = labels[cat_idx]
        self.numerical_features_ = labels[num_idx]
        self.categories_ = [values for values, _ in vocabularies]
        self.category_codes_ = [codes for _, codes in vocabularies]
        self.mean_, self.scale_ = mean, scale
        self._indicator_idx = np.flatnonzero(indicators)
        self.missing_indicator_features_ = self.numerical_features_[self._indicator_idx]
        self.n_buckets_ = np.asarray(buckets, dtype=np.int64)
        # Embedding table sizes: one past each column's largest code, at
        # least 2; a hashed column's buckets after the reserved codes.
        self.cardinalities_ = np.array(
            [
                n + _N_RESERVED if n else max(int(c.max(initial=0)) + 1, _N_RESERVED)
                for c, n in zip(self.category_codes_, self.n_buckets_, strict=True)
            ],
            dtype=np.int64,
        )
        self._seq_idx, self._seq_shared = seq_idx, seq_shared
        self.sequence_features_ = labels[seq_idx]
        shared = np.empty(len(seq_idx), dtype=object)
        shared[:] = [
            None if k < 0 else self.categorical_features_[k] for k in seq_shared
        ]
        self.sequence_vocabularies_ = shared
        self.sequence_categories_ = [values for values, _ in seq_vocabularies]
        self.sequence_category_codes_ = [codes for _, codes in seq_vocabularies]
        self.sequence_cardinalities_ = np.array(
            [
                0 if k >= 0 else max(int(c.max(initial=0)) + 1, _N_RESERVED)
                for c, k in zip(self.sequence_category_codes_, seq_shared, strict=True)
            ],
            dtype=np.int64,
        )
        self._lookup_tables()

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> FeatureEncoder:
        """Learn the vocabularies and the scaling from training data.

        The same as :meth:`partial_fit` on X once, after forgetting any
        earlier fit.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Training features.
        y : None
            Ignored.

        Returns
        -------
        self : FeatureEncoder
            The fitted encoder.
        """
        self._reset()
        self._partial_fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: Any, y: Any = None) -> FeatureEncoder:
        """Learn the vocabularies and the scaling from one more block of rows.

        The first call starts afresh, as :meth:`fit` does (and :meth:`fit`
        starts afresh again); each later call adds its rows to those seen
        so far. After every call the encoder is fitted on all the rows seen
        so far and can :meth:`transform`: its vocabularies and codes are
        those that :meth:`fit` learns on the blocks put one after the other,
        and ``mean_`` and ``scale_`` equal fit's up to floating-point
        rounding (to the bit after one call).

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            A block of training rows, with the columns of the first call.
            After the first call it may have no rows; it then changes
            nothing.
        y : None
            Ignored.

        Returns
        -------
        self : FeatureEncoder
            The encoder, fitted on every row seen so far.

        Raises
        ------
        TypeError
            If a column is categorical in one call and numerical in another
            (``categorical_features="from_dtype"`` and its dtype changed).
        ValueError
            If X has other columns than the first call, if the first call
            has no rows, if a numerical column's values are too far apart
            to scale within float32 (the message names the columns), or if
            the encoder's state was restored with ``_set_state``, which
            keeps no counts to add to. After a failed call the encoder is
            as it was before it.

        See Also
        --------
        fit : Learn from all the rows at once.

        Notes
        -----
        The encoder keeps, per categorical column, each distinct value seen
        with its count, and per numerical column its running mean and
        variance (the pairwise update of Chan, Golub and LeVeque), largest
        magnitude, range and whether it had missing values. Columns of huge
        or tiny magnitude are standardised in the same single pass (see
        ``scale_``), since earlier blocks are not read again. Each call
        sorts every vocabulary again: its cost grows with the number of
        distinct values seen, not with the number of rows seen.

        Examples
        --------
        >>> import pandas as pd
        >>> from sklearn_rmtl import FeatureEncoder
        >>> X = pd.DataFrame({"item": ["b", "a", "c", "a"], "price": [1.0, 2, 3, 4]})
        >>> enc = FeatureEncoder()
        >>> for start in (0, 2):  # e.g. blocks read from a file
        ...     enc = enc.partial_fit(X.iloc[start : start + 2])
        ...     print(enc.categories_[0], enc.mean_)
        ['a' 'b'] [1.5]
        ['a' 'b' 'c'] [2.5]
        >>> enc.transform(pd.DataFrame({"item": ["c", "z"], "price": [2.5, 4.0]}))
        array([[4.       , 0.       ],
               [1.       , 1.3416408]], dtype=float32)
        """
        self._partial_fit(X)
        return self

    def _partial_fit(self, X: Any) -> tuple[pd.DataFrame, list[_Column]]:
        """One call of partial_fit; X as a frame and its categorical columns.

        The columns (:func:`_column_counts`, none for a block without rows)
        let fit_transform encode X without factorising them again.
        """
        first = not hasattr(self, "_statistics")
        if first and hasattr(self, "categories_"):
            raise ValueError(
                "This FeatureEncoder's state was restored (vocabularies and "
                "statistics, without the counts that partial_fit adds to); "
                "partial_fit cannot continue it. Call fit, or partial_fit on "
                "a new FeatureEncoder."
            )
        X = check_features(X, min_samples=1 if first else 0)
        frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
        try:
            validate_data(self, X, reset=first, skip_check_array=True)
            buckets = self._buckets(X, frame)
            sequences = self._sequences(X, frame)
            is_seq = sequences > -2
            declared = self._categorical_mask(X, frame)
            if (
                not isinstance(self.categorical_features, str)
                and (declared & is_seq).any()
            ):
                both = np.flatnonzero(declared & is_seq)
                names = [str(frame.columns[int(j)]) for j in both]
                raise ValueError(
                    f"Columns {names} are named in both categorical_features and "
                    "sequence_features; a column is one or the other."
                )
            is_cat = (declared | (buckets > 0)) & ~is_seq
            shared = sequences[sequences >= 0]
            if not is_cat[shared].all():
                names = [str(frame.columns[j]) for j in shared[~is_cat[shared]]]
                raise ValueError(
                    f"sequence_features shares the vocabulary of {names}, which "
                    "are not categorical; name categorical columns (e.g. with "
                    "categorical_features, or a 'category' dtype)."
                )
            if (buckets[is_seq] > 0).any():
                j = int(np.flatnonzero(is_seq & (buckets > 0))[0])
                k = int(sequences[j])
                instead = (
                    f"hash {str(frame.columns[k])!r}, whose vocabulary it shares, "
                    "instead (its elements are hashed with it)"
                    if k >= 0
                    else "leave it out of hash_buckets (a sequence with a "
                    "vocabulary of its own is not hashed)"
                )
                raise ValueError(
                    f"hash_buckets names the sequence column "
                    f"{str(frame.columns[j])!r}; {instead}."
                )
            if first:
                labels = np.array([str(c) for c in frame.columns], dtype=object)
                n_cat, n_num = int(is_cat.sum()), int((~is_cat & ~is_seq).sum())
                statistics = _Statistics(
                    labels,
                    is_cat,
                    0,
                    [_NO_COUNTS] * n_cat,
                    _no_numbers(n_num),
                    buckets,
                    sequences,
                    [_NO_COUNTS] * int(is_seq.sum()),
                )
            else:
                statistics = self._statistics
                if not np.array_equal(buckets, statistics.buckets) or not (
                    np.array_equal(sequences, statistics.sequences)
                ):
                    raise ValueError(
                        "hash_buckets or sequence_features changed since the "
                        "first partial_fit call; call fit (or partial_fit on a "
                        "new encoder) to start afresh with the new setting."
                    )
                changed = np.flatnonzero(
                    (is_cat != statistics.is_categorical) & ~is_seq
                )
                if changed.size:
                    names = [str(frame.columns[int(j)]) for j in changed]
                    raise TypeError(
                        f"Columns {names} change between categorical and "
                        "numerical dtypes from one block to another (one "
                        "partial_fit call to the next); give them one dtype in "
                        "every block and file (e.g. cast them) or name the "
                        "categorical columns with categorical_features."
                    )
            return frame, self._learn(frame, statistics) if frame.shape[0] else []
        except BaseException:
            # A first call that fails leaves the encoder unfitted; a later
            # one has changed nothing yet (_learn sets the state last).
            if first:
                self._reset()
            raise

    def _learn(self, frame: pd.DataFrame, statistics: _Statistics) -> list[_Column]:
        """Add the rows of ``frame`` and set the fitted attributes from them."""
        labels, is_cat = statistics.labels, statistics.is_categorical
        is_seq = statistics.sequences > -2
        cat_idx, num_idx = np.flatnonzero(is_cat), np.flatnonzero(~is_cat & ~is_seq)
        seq_idx = np.flatnonzero(is_seq)
        seq_shared = np.array(
            [
                -1 if k < 0 else int(np.flatnonzero(cat_idx == k)[0])
                for k in statistics.sequences[seq_idx]
            ],
            dtype=np.intp,
        )
        buckets = statistics.buckets[cat_idx]
        columns = [_column_counts(frame.iloc[:, int(j)]) for j in cat_idx]
        for j, n, (block, _) in zip(cat_idx, buckets, columns, strict=True):
            if n:  # its ids are checked now, before anything is set
                hash_codes(str(labels[j]), block.values, int(n))
        # A hashed column keeps no counts: its memory does not grow with ids.
        categories = [
            seen if n else _merge_counts(seen, block)
            for seen, n, (block, _) in zip(
                statistics.categories, buckets, columns, strict=True
            )
        ]
        # A sequence's elements: counted when it has its own vocabulary,
        # checked (cells of ids) in any case, before anything is set.
        sequence_counts = []
        for j, k, seen in zip(
            seq_idx, seq_shared, statistics.sequence_counts, strict=True
        ):
            flat, _ = _flat_sequences(str(labels[j]), frame.iloc[:, int(j)], None)
            block, _ = _column_counts(flat, elements=True)
            if k >= 0 and buckets[k]:
                hash_codes(str(labels[j]), block.values, int(buckets[k]))
            elif k >= 0:
                _check_shared_ids(
                    str(labels[j]),
                    str(labels[cat_idx[k]]),
                    categories[k].values,
                    block.values,
                )
            sequence_counts.append(seen if k >= 0 else _merge_counts(seen, block))
        seq_vocabularies = [
            _vocabulary(seen, int(seen.counts.sum()), self.min_frequency, None)
            if k < 0
            else (np.empty(0, dtype=object), np.zeros(0, dtype=np.int64))
            for seen, k in zip(sequence_counts, seq_shared, strict=True)
        ]
        numbers = statistics.numbers
        if num_idx.size:
            numbers = _add_numbers(numbers, self._numbers(frame, num_idx))
        n_rows = statistics.n_rows + frame.shape[0]
        vocabularies = [
            _vocabulary(seen, n_rows, self.min_frequency, self.max_categories)
            for seen in categories
        ]
        # Raises before anything is set.
        mean, scale = _standardisation(numbers, labels[num_idx])
        self._statistics = statistics._replace(
            n_rows=n_rows,
            categories=categories,
            numbers=numbers,
            sequence_counts=sequence_counts,
        )
        self._set_fitted(
            cat_idx,
            num_idx,
            labels,
            vocabularies,
            mean,
            scale,
            numbers.nan,
            buckets,
            seq_idx,
            seq_shared,
            seq_vocabularies,
        )
        return columns

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit on X and return its encoding (one pass over the categories).

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features)
            Training features.
        y : None
            Ignored.
        **fit_params : dict
            Ignored; accepted for compatibility with sklearn pipelines.

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_features_out), dtype float32
            The encoded features (see Notes of the class).
        """
        return self._as_float(self._fit_transform_parts(X))

    def _fit_transform_parts(self, X: Any) -> EncodedParts:
        """Fit on X; its integer codes and float32 numbers, not concatenated."""
        self._validate_params()
        self._reset()
        return self._parts(*self._partial_fit(X))

    def transform(self, X: Any) -> np.ndarray:
        """Encode features with the vocabularies and scaling learnt in fit.

        Parameters
        ----------
        X : {DataFrame, array-like} of shape (n_samples, n_features_in_)
            Features with the same columns as in :meth:`fit`.

        Returns
        -------
        Xt : ndarray of shape (n_samples, n_features_out), dtype float32
            Categorical codes, then scaled numbers, then missing indicators.
        """
        return self._as_float(self._transform_parts(X))

    def _transform_parts(self, X: Any) -> EncodedParts:
        """The encoding of X as int64 codes and float32 numbers, not concatenated.

        The integer path for the networks: codes stay exact whatever the
        vocabulary size, where :meth:`transform`'s float32 holds 2**24.
        """
        check_is_fitted(self)
        X = check_features(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        return self._parts(X if isinstance(X, pd.DataFrame) else pd.DataFrame(X))

    def _get_state(self) -> dict[str, Any]:
        """The fitted state as plain values: vocabularies and statistics.

        What :mod:`sklearn_rmtl.persistence` stores; :meth:`_set_state`
        restores it. Per categorical column its position, name, known values
        and their codes, hash buckets; per numerical column its position,
        name, mean, scale and whether it has a missing-value indicator; per
        sequence column its position, name, the categorical column whose
        vocabulary it shares (or None) and its own values and codes.
        """
        check_is_fitted(self)
        indicators = np.isin(np.arange(len(self._num_idx)), self._indicator_idx)
        return {
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": getattr(self, "feature_names_in_", None),
            "categorical": _records(
                position=self._cat_idx.tolist(),
                name=[str(name) for name in self.categorical_features_],
                values=[values.tolist() for values in self.categories_],
                codes=[codes.tolist() for codes in self.category_codes_],
                buckets=self.n_buckets_.tolist(),
            ),
            "numerical": _records(
                position=self._num_idx.tolist(),
                name=[str(name) for name in self.numerical_features_],
                mean=self.mean_.tolist(),
                scale=self.scale_.tolist(),
                missing_indicator=indicators.tolist(),
            ),
            "sequences": _records(
                position=self._seq_idx.tolist(),
                name=[str(name) for name in self.sequence_features_],
                vocabulary=[
                    None if v is None else str(v) for v in self.sequence_vocabularies_
                ],
                values=[values.tolist() for values in self.sequence_categories_],
                codes=[codes.tolist() for codes in self.sequence_category_codes_],
            ),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore a state of :meth:`_get_state`, checking its consistency.

        Raises
        ------
        ValueError
            If the state is malformed; the message names the entry.
        """
        # Files written before sequence and hashed columns lack their keys.
        _check_keys(state, _STATE_KEYS, "the encoder state", frozenset({"sequences"}))
        cat, num = state["categorical"], state["numerical"]
        seq = state.get("sequences", [])
        if not all(isinstance(columns, list) for columns in (cat, num, seq)):
            raise ValueError(
                "categorical, numerical and sequences must be lists of columns"
            )
        for kind, columns in (
            ("categorical", cat),
            ("numerical", num),
            ("sequences", seq),
        ):
            for i, column in enumerate(columns):
                # Files written before hashed columns have no "buckets".
                optional = frozenset({"buckets"})
                _check_keys(column, _COLUMN_KEYS[kind], f"{kind} column {i}", optional)
        n, names = state["n_features_in"], state["feature_names_in"]
        if type(n) is not int or n < 1:
            raise ValueError(f"n_features_in must be a positive int, got {n!r}")
        positions = [c["position"] for c in [*cat, *num, *seq]]
        if sorted(positions) != list(range(n)) or any(
            type(p) is not int for p in positions
        ):
            raise ValueError(
                f"the columns' positions {positions} must be 0 to {n - 1}, once each"
            )
        if names is not None and not (
            isinstance(names, np.ndarray) and names.shape == (n,) and _all_str(names)
        ):
            raise ValueError("feature_names_in must be None or n_features_in names")
        vocabularies, buckets = [], []
        for i, column in enumerate(cat):
            values, column_codes = column["values"], column["codes"]
            n_buckets = column.get("buckets", 0)
            if (
                type(n_buckets) is not int
                or not 0 <= n_buckets <= 2**62
                or (n_buckets and (values or column_codes))
            ):
                raise ValueError(
                    f"categorical column {i}: buckets must be an int in [0, 2**62], "
                    "and a hashed column (buckets > 0) has no values or codes"
                )
            buckets.append(n_buckets)
            vocabularies.append(
                _checked_vocabulary(values, column_codes, f"categorical column {i}")
            )
        cat_names = [c["name"] for c in cat]
        seq_vocabularies, seq_shared = [], []
        for i, column in enumerate(seq):
            shared = column["vocabulary"]
            what = f"sequence column {i}"
            if shared is not None and shared not in cat_names:
                raise ValueError(
                    f"{what}: vocabulary must be None or a categorical column's name"
                )
            if shared is not None and (column["values"] or column["codes"]):
                raise ValueError(f"{what} shares a vocabulary: no values or codes")
            seq_shared.append(-1 if shared is None else cat_names.index(shared))
            seq_vocabularies.append(
                _checked_vocabulary(column["values"], column["codes"], what)
            )
        for i, column in enumerate(num):
            if not (
                isinstance(column["mean"], float)
                and isinstance(column["scale"], float)
                and type(column["missing_indicator"]) is bool
            ):
                raise ValueError(
                    f"numerical column {i}: mean and scale must be floats and "
                    "missing_indicator a bool"
                )
        if any(not isinstance(c["name"], str) for c in [*cat, *num, *seq]):
            raise ValueError("column names must be strings")
        # Nothing of an earlier fit stays: no feature names if the state has
        # none, and no counts for partial_fit to add to.
        self._reset()
        self.n_features_in_ = n
        if names is not None:
            self.feature_names_in_ = names
        labels = np.empty(n, dtype=object)
        for column in [*cat, *num, *seq]:
            labels[column["position"]] = column["name"]
        self._set_fitted(
            np.array([c["position"] for c in cat], dtype=np.intp),
            np.array([c["position"] for c in num], dtype=np.intp),
            labels,
            vocabularies,
            np.array([c["mean"] for c in num], dtype=np.float64),
            np.array([c["scale"] for c in num], dtype=np.float64),
            np.array([c["missing_indicator"] for c in num], dtype=bool),
            np.array(buckets, dtype=np.int64),
            np.array([c["position"] for c in seq], dtype=np.intp),
            np.array(seq_shared, dtype=np.intp),
            seq_vocabularies,
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Get the names of the output columns.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored beyond sklearn's consistency check.

        Returns
        -------
        feature_names_out : ndarray of str
            Categorical names, numerical names, then
            ``"missingindicator_<name>"`` for each indicator column.
        """
        check_is_fitted(self)
        indicators = [f"missingindicator_{n}" for n in self.missing_indicator_features_]
        slots = [
            f"{name}[{k}]"
            for name in self.sequence_features_
            for k in range(self.max_sequence_length)
        ]
        return np.asarray(
            [
                *self.categorical_features_,
                *slots,
                *self.numerical_features_,
                *indicators,
            ],
            dtype=object,
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


__all__ = ["MISSING_CODE", "UNKNOWN_CODE", "FeatureEncoder", "check_features"]
