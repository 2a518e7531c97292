"""Feature encoding: DataFrame or array -> embedding codes and scaled numbers."""

from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.preprocessing import OrdinalEncoder, StandardScaler
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

# Column dtypes that ``categorical_features="from_dtype"`` treats as categorical.
_CATEGORICAL_KINDS = {"O", "b", "U", "S"}
_HOMOGENEOUS = {
    "string",
    "integer",
    "floating",
    "mixed-integer-float",
    "boolean",
    "empty",
}


def is_categorical_dtype(dtype: Any) -> bool:
    return isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype)) or (
        getattr(dtype, "kind", None) in _CATEGORICAL_KINDS
    )


def check_features(X: Any) -> pd.DataFrame | np.ndarray:
    """Check the container and shape of X: a DataFrame, or a 2-D ndarray.

    Values are not checked here (NaN is imputed, infinity is rejected when
    encoding), so object arrays of categories pass through unchanged. A
    polars or pyarrow table becomes a pandas DataFrame with the same column
    names and dtypes (see :func:`sklearn_rmtl._validation.to_pandas`).
    """
    X = to_pandas(X)
    if isinstance(X, pd.DataFrame):
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(
                f"Found array with shape {X.shape} while at least 1 sample and "
                "1 feature are required."
            )
        return X
    return check_array(X, dtype=None, ensure_all_finite=False)


def _as_frame(X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)


def _column_label(frame: pd.DataFrame, j: int) -> str:
    return str(frame.columns[j])


def _categorical_values(column: pd.Series, as_str: bool | None = None) -> np.ndarray:
    """Make a categorical column acceptable to ``OrdinalEncoder``.

    Values are compared as Python objects, so an int column at fit time and a
    float column at predict time (pandas' dtype once NaN appears) still match.
    With ``as_str=True`` every value becomes ``str(value)``; with ``None`` (the
    rule of fit) that happens when the column mixes types (e.g. ints and
    strings). Missing values (None, NaN, NA, NaT) become ``np.nan`` and so get
    the reserved missing code.
    """
    values = column.to_numpy(dtype=object, copy=True)
    missing = column.isna().to_numpy()
    if as_str is None:
        as_str = pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS
    if as_str:
        values = values.astype(str).astype(object)
    values[missing] = np.nan
    return values


def _check_scalar_cells(label: str, values: Any) -> None:
    """Reject cells that are containers (lists, dicts, sets, arrays, tuples)."""
    for value in values:
        if not pd.api.types.is_scalar(value):
            raise ValueError(
                f"Column {label!r} holds a {type(value).__name__} ({value!r:.60}) "
                "in a cell; FeatureEncoder encodes scalars only: str, int, float, "
                "bool, dates and categories. Explode or join the list into a "
                "string first, e.g. X[col].explode() or X[col].map(','.join), "
                "or split it into one column per entry."
            )


class _Factorized(NamedTuple):
    """A categorical column as distinct values and each row's position in them."""

    values: np.ndarray  # object array, compared as Python objects
    positions: np.ndarray  # int, -1 for a missing value


class EncodedParts(NamedTuple):
    """An encoding before it becomes one float32 matrix."""

    codes: np.ndarray  # int64 (n_samples, n_categorical)
    numbers: np.ndarray  # float32 (n_samples, n_numerical + n_indicators)


def _factorize(column: pd.Series, as_str: bool | None = None) -> _Factorized:
    """The distinct values of a categorical column.

    ``as_str`` says how values are compared: ``None`` is the rule of fit
    (as strings if the column's values mix types, else as Python objects),
    ``True`` as strings (a value that is not a ``str`` becomes ``str(value)``),
    ``False`` as Python objects. Only the first depends on the data, so
    :meth:`FeatureEncoder.transform` never uses it: there the fitted
    vocabulary decides, and a value's code does not depend on its batch.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        positions = column.cat.codes.to_numpy().astype(np.intp)
        values = column.cat.categories.to_numpy(dtype=object)
        # Keep the categories that occur: the vocabulary learnt in fit is
        # the values seen, whatever else the dtype lists.
        counts = np.bincount(positions[positions >= 0], minlength=len(values))
        if not counts.all():
            new_position = np.append(np.cumsum(counts > 0) - 1, -1)
            positions = new_position[positions]
            values = values[counts > 0]
    else:
        try:
            positions, uniques = pd.factorize(column, use_na_sentinel=True)
        except TypeError:  # unhashable cells: lists, dicts, sets, arrays
            _check_scalar_cells(str(column.name), column.to_numpy(dtype=object))
            raise
        values = np.asarray(uniques, dtype=object)
        _check_scalar_cells(str(column.name), values.tolist())  # tuples...
    if as_str is None:
        as_str = pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS
    elif as_str:
        as_str = not all(isinstance(v, str) for v in values.tolist())
    if as_str:
        # Values equal as Python objects (1 and 1.0) may differ as strings:
        # factorise the strings.
        positions, strings = pd.factorize(
            _categorical_values(column, as_str=True), use_na_sentinel=True
        )
        values = np.asarray(strings, dtype=object)
    return _Factorized(values, positions.astype(np.intp, copy=False))


def _is_str_vocabulary(values: np.ndarray) -> bool:
    """Whether a fitted vocabulary is compared as strings: all its values are."""
    return len(values) > 0 and all(isinstance(v, str) for v in values.tolist())


def _distinct_frame(columns: list[_Factorized]) -> pd.DataFrame:
    """The columns' distinct values side by side, padded by repetition."""
    size = max(1, *(len(c.values) for c in columns))
    return pd.DataFrame(
        {
            i: np.resize(c.values, size) if len(c.values) else np.full(size, np.nan)
            for i, c in enumerate(columns)
        },
        dtype=object,
    )


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_TOO_WIDE = (
    "; float32 cannot hold them after scaling. Log-transform the column "
    "(e.g. np.log1p of its absolute value, keeping the sign) or clip it "
    "before fit and predict."
)


def _standardisation(
    x: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each column of ``x``, as ``StandardScaler`` learns them.

    ``StandardScaler`` squares the values, so a column of magnitude ~1e200
    overflows (variance inf, scale 1) and one of ~1e-170 underflows
    (variance 0, scale 1): both would be zeroed by the scaling. Such columns
    are standardised again after dividing them by their largest magnitude,
    and the statistics scaled back; every other column keeps the scaler's
    exact statistics.

    Raises
    ------
    ValueError
        If a column's values are too far apart to scale within float32; the
        message names the columns (``labels``).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        scaler = StandardScaler().fit(x)
    mean, scale, var = scaler.mean_.copy(), scaler.scale_.copy(), scaler.var_
    # Only columns whose variance is inf, NaN or (sub)normal-tiny may need it.
    candidates = np.flatnonzero(~(var >= np.finfo(np.float64).tiny))
    if not candidates.size:
        return mean, scale
    sub = x[:, candidates]
    magnitude = np.where(np.isnan(sub), 0.0, np.abs(sub)).max(axis=0, initial=0.0)
    spread = np.fmax.reduce(sub, axis=0) > np.fmin.reduce(sub, axis=0)
    refine = (magnitude > 0) & (~np.isfinite(var[candidates]) | spread)
    if not refine.any():
        return mean, scale
    columns, m = candidates[refine], magnitude[refine]
    rescaled = StandardScaler().fit(sub[:, refine] / m)
    mean[columns] = rescaled.mean_ * m
    scale[columns] = rescaled.scale_ * m
    with np.errstate(over="ignore", invalid="ignore"):
        z = (x[:, columns] - mean[columns]) / scale[columns]
    wide = (np.abs(z) > _FLOAT32_MAX).any(axis=0)
    if wide.any():
        names = [str(n) for n in labels[columns[wide]]]
        raise ValueError(
            f"Numerical columns {names} hold values too far apart (more than "
            f"{_FLOAT32_MAX:.1e} standard deviations from the mean){_TOO_WIDE}"
        )
    return mean, scale


# The layout of ``FeatureEncoder._get_state``.
_STATE_KEYS = frozenset(
    {"n_features_in", "feature_names_in", "categorical", "numerical"}
)
_COLUMN_KEYS = {
    "categorical": frozenset({"position", "name", "values", "codes"}),
    "numerical": frozenset({"position", "name", "mean", "scale", "missing_indicator"}),
}


def _check_keys(node: Any, keys: frozenset[str], what: str) -> None:
    if not isinstance(node, dict) or set(node) != keys:
        found = sorted(node) if isinstance(node, dict) else type(node).__name__
        raise ValueError(f"{what} must have the keys {sorted(keys)}, got {found}")


class _Lookup(NamedTuple):
    """A fitted column's value -> code dict and how values are compared."""

    codes: dict[Any, int]
    as_str: bool  # see _is_str_vocabulary


def _lookups(categories: list[np.ndarray], codes: list[np.ndarray]) -> list[_Lookup]:
    """Each column's lookup, built once per fit or load.

    A dict compares values as Python objects (hash and ==), as OrdinalEncoder
    does, so 3 and 3.0 share a code.
    """
    return [
        _Lookup(
            dict(zip(values.tolist(), column.tolist(), strict=True)),
            _is_str_vocabulary(values),
        )
        for values, column in zip(categories, codes, strict=True)
    ]


def cardinalities(category_codes: list[np.ndarray]) -> np.ndarray:
    """Embedding table sizes: one past each column's largest code, at least 2."""
    return np.array(
        [max(int(c.max(initial=0)) + 1, _N_RESERVED) for c in category_codes],
        dtype=np.int64,
    )


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Encode mixed tabular features for embedding-based networks.

    Categorical columns become integer codes for embedding tables, with two
    reserved codes per column: ``0`` for missing values and ``1`` for values
    not seen in training. Infrequent categories can be merged into one code.
    Numerical columns are standardised; their missing values are imputed with
    the training mean (0 after scaling) and, for columns that had missing
    values in training, flagged in an extra indicator column.

    The estimators of this package fit one internally (``encoder_``); use it
    directly to inspect or reuse an encoding.

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

    Attributes
    ----------
    n_features_in_ : int
        Number of input columns seen in :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Input column names, when X had string column names.
    categorical_features_ : ndarray of str
        Names (or positions, as strings) of the categorical input columns, in
        output order.
    numerical_features_ : ndarray of str
        Names (or positions) of the numerical input columns, in output order.
    cardinalities_ : ndarray of int
        Number of codes of each categorical column, the two reserved codes
        included: the embedding table sizes.
    missing_indicator_features_ : ndarray of str
        Numerical columns that had missing values in training and therefore
        get an indicator column.
    categories_ : list of ndarray of object
        The known values of each categorical column, sorted (infrequent ones
        included); missing values are never in a vocabulary.
    category_codes_ : list of ndarray of int64
        The code of each value in ``categories_`` (``>= 2``; infrequent
        values share one).
    mean_ : ndarray of float64 of shape (len(numerical_features_),)
        Training mean of each numerical column (missing values ignored); a
        missing number is imputed with it, which scales to 0.
    scale_ : ndarray of float64 of shape (len(numerical_features_),)
        Training standard deviation of each numerical column, 1 where it is 0.
        Columns of huge (~1e200) or tiny (~1e-170) magnitude, whose variance
        over- or underflows, get it computed after dividing by their largest
        magnitude, so they are scaled, not zeroed.

    See Also
    --------
    sklearn.preprocessing.OrdinalEncoder : Learns the vocabularies in fit.
    sklearn.preprocessing.StandardScaler : Learns the scaling in fit.
    MTLClassifier : Uses this encoder in front of its network.

    Notes
    -----
    :meth:`transform` returns one float32 matrix: the ``len(cardinalities_)``
    categorical codes first (exact integers), then the scaled numbers, then the
    missing-value indicators. Infinite values raise an error.

    A categorical value's code depends only on the value and the fitted
    vocabulary, never on the other rows of the batch. In :meth:`fit`, a
    column whose values mix types (e.g. ints and strings, or datetimes) is
    learnt as strings, ``str(value)``; other columns keep their values. The
    vocabulary then sets the rule: a vocabulary of strings compares every
    value as ``str(value)`` (so ``3`` matches ``"3"``), any other compares
    values as Python objects (so ``3``, ``3.0`` and ``np.int64(3)`` match,
    and ``"3"`` is unknown).

    The fitted state is plain arrays (vocabularies and statistics), learnt
    with :class:`~sklearn.preprocessing.OrdinalEncoder` and
    :class:`~sklearn.preprocessing.StandardScaler` and not tied to them:
    :func:`sklearn_rmtl.persistence.save` stores exactly these arrays.

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
    }

    def __init__(
        self,
        *,
        categorical_features: Any = "from_dtype",
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
    ) -> None:
        self.categorical_features = categorical_features
        self.min_frequency = min_frequency
        self.max_categories = max_categories

    def _categorical_mask(self, X: Any, frame: pd.DataFrame) -> np.ndarray:
        n = frame.shape[1]
        spec = self.categorical_features
        if spec is None:
            return np.zeros(n, dtype=bool)
        if isinstance(spec, str):  # "from_dtype"
            if not isinstance(X, pd.DataFrame):
                return np.zeros(n, dtype=bool)
            return np.array([is_categorical_dtype(d) for d in frame.dtypes])
        spec = np.asarray(spec)
        if spec.size == 0:
            return np.zeros(n, dtype=bool)
        if spec.dtype.kind == "b":
            if spec.shape != (n,):
                raise ValueError(
                    f"categorical_features as a boolean mask must have one entry "
                    f"per column ({n}), got shape {spec.shape}."
                )
            return spec.copy()
        mask = np.zeros(n, dtype=bool)
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
            column = frame.iloc[:, j]
            try:
                out[:, i] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                _check_scalar_cells(_column_label(frame, j), column.to_numpy(object))
                raise ValueError(
                    f"Column {_column_label(frame, j)!r} is treated as numerical "
                    f"but could not be converted to float ({exc}). Mark it as "
                    "categorical with categorical_features=[...] or give it a "
                    "'category' dtype."
                ) from exc
        bad = np.isinf(out).any(axis=0)
        if bad.any():
            names = [_column_label(frame, j) for j in columns[bad]]
            raise ValueError(
                f"Input X contains infinity in numerical columns {names}; "
                "replace it with a finite value or NaN (NaN is imputed)."
            )
        return out

    def _categories(self, frame: pd.DataFrame, columns: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {i: _categorical_values(frame.iloc[:, j]) for i, j in enumerate(columns)},
            dtype=object,
        )

    def _vocabulary_learner(self) -> OrdinalEncoder:
        """The unfitted OrdinalEncoder that learns the vocabularies in fit."""
        return OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=UNKNOWN_CODE - _N_RESERVED,
            encoded_missing_value=MISSING_CODE - _N_RESERVED,
            min_frequency=self.min_frequency,
            max_categories=self.max_categories,
        )

    def _learn_vocabularies(
        self, frame: pd.DataFrame, columns: list[_Factorized]
    ) -> None:
        """Set ``categories_`` and ``category_codes_`` from the training data."""
        ordinal = self._vocabulary_learner()
        if self.min_frequency is None and self.max_categories is None:
            # The vocabulary is the set of distinct values: no need to sort
            # every row's object.
            ordinal.fit(_distinct_frame(columns))
        else:  # infrequent categories need every row's count
            ordinal.fit(self._categories(frame, self._cat_idx))
        known = [
            _Factorized(values[~pd.isna(values)], np.zeros(0, dtype=np.intp))
            for values in ordinal.categories_
        ]
        # Each known value's code, as the fitted OrdinalEncoder gives it
        # (infrequent values share one); only these arrays are kept.
        table = ordinal.transform(_distinct_frame(known))
        self.categories_ = [column.values for column in known]
        self.category_codes_ = [
            table[: len(column.values), i].astype(np.int64) + _N_RESERVED
            for i, column in enumerate(known)
        ]

    def _lookup_tables(self) -> list[_Lookup]:
        """The columns' lookups, built when fit or load set the vocabularies.

        Derived from ``categories_`` and ``category_codes_`` and rebuilt only
        when those are replaced, so that transform (called per prediction
        chunk) does not go over every known value each time.
        """
        # The cache holds the lists it was built from: compared by identity.
        cached = self.__dict__.get("_lookups")
        if (
            cached is None
            or cached[0] is not self.categories_
            or cached[1] is not self.category_codes_
        ):
            tables = _lookups(self.categories_, self.category_codes_)
            cached = (self.categories_, self.category_codes_, tables)
            self._lookups = cached
        return cached[2]

    def _codes(self, columns: list[_Factorized]) -> np.ndarray:
        """Codes of every row: each column's distinct values looked up once."""
        codes = np.empty((len(columns[0].positions), len(columns)), dtype=np.int64)
        for i, column in enumerate(columns):
            vocabulary = self._lookup_tables()[i].codes
            lookup = np.array(
                [vocabulary.get(v, UNKNOWN_CODE) for v in column.values.tolist()]
                + [MISSING_CODE],
                dtype=np.int64,
            )
            # Position -1 (missing) reads the appended MISSING_CODE: missing
            # values always get it, seen in fit or not.
            codes[:, i] = lookup[column.positions]
        return codes

    def _parts(
        self, frame: pd.DataFrame, columns: list[_Factorized] | None = None
    ) -> EncodedParts:
        n = frame.shape[0]
        codes = np.zeros((n, 0), dtype=np.int64)
        numbers = np.zeros((n, 0), dtype=np.float32)
        if self._cat_idx.size:
            if columns is None:
                columns = [
                    _factorize(frame.iloc[:, int(j)], lookup.as_str)
                    for j, lookup in zip(
                        self._cat_idx, self._lookup_tables(), strict=True
                    )
                ]
            codes = self._codes(columns)
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
                names = [str(n) for n in self.numerical_features_[wide]]
                raise ValueError(
                    f"Numerical columns {names} hold values more than "
                    f"{_FLOAT32_MAX:.1e} training standard deviations from the "
                    f"training mean{_TOO_WIDE}"
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> FeatureEncoder:
        """Learn the vocabularies and the scaling from training data.

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
        self._fit(X)
        return self

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
        frame, columns = self._fit(X)
        return self._parts(frame, columns)

    def _fit(self, X: Any) -> tuple[pd.DataFrame, list[_Factorized]]:
        X = check_features(X)
        frame = _as_frame(X)
        validate_data(self, X, reset=True, skip_check_array=True)
        is_cat = self._categorical_mask(X, frame)
        labels = np.array(
            [_column_label(frame, j) for j in range(frame.shape[1])], dtype=object
        )
        self._cat_idx = np.flatnonzero(is_cat)
        self._num_idx = np.flatnonzero(~is_cat)
        self.categorical_features_ = labels[self._cat_idx]
        self.numerical_features_ = labels[self._num_idx]
        columns = [_factorize(frame.iloc[:, int(j)]) for j in self._cat_idx]
        self.categories_ = []
        self.category_codes_ = []
        if columns:
            self._learn_vocabularies(frame, columns)
        self.mean_ = np.zeros(0)
        self.scale_ = np.ones(0)
        self._indicator_idx = np.array([], dtype=int)
        if self._num_idx.size:
            numbers = self._numbers(frame, self._num_idx)
            self.mean_, self.scale_ = _standardisation(
                numbers, self.numerical_features_
            )
            self._indicator_idx = np.flatnonzero(np.isnan(numbers).any(axis=0))
        self.missing_indicator_features_ = self.numerical_features_[self._indicator_idx]
        self.cardinalities_ = cardinalities(self.category_codes_)
        self._lookup_tables()
        return frame, columns

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
        frame = _as_frame(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        return self._parts(frame)

    def _get_state(self) -> dict[str, Any]:
        """The fitted state as plain values: vocabularies and statistics.

        What :mod:`sklearn_rmtl.persistence` stores; :meth:`_set_state`
        restores it. Per categorical column its position, name, known values
        and their codes; per numerical column its position, name, mean, scale
        and whether it has a missing-value indicator.
        """
        check_is_fitted(self)
        indicators = set(self._indicator_idx.tolist())
        return {
            "n_features_in": int(self.n_features_in_),
            "feature_names_in": getattr(self, "feature_names_in_", None),
            "categorical": [
                {
                    "position": int(j),
                    "name": str(name),
                    "values": values.tolist(),
                    "codes": codes.tolist(),
                }
                for j, name, values, codes in zip(
                    self._cat_idx,
                    self.categorical_features_,
                    self.categories_,
                    self.category_codes_,
                    strict=True,
                )
            ],
            "numerical": [
                {
                    "position": int(j),
                    "name": str(name),
                    "mean": float(mean),
                    "scale": float(scale),
                    "missing_indicator": i in indicators,
                }
                for i, (j, name, mean, scale) in enumerate(
                    zip(
                        self._num_idx,
                        self.numerical_features_,
                        self.mean_,
                        self.scale_,
                        strict=True,
                    )
                )
            ],
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore a state of :meth:`_get_state`, checking its consistency.

        Raises
        ------
        ValueError
            If the state is malformed; the message names the entry.
        """
        _check_keys(state, _STATE_KEYS, "the encoder state")
        if not isinstance(state["categorical"], list) or not isinstance(
            state["numerical"], list
        ):
            raise ValueError("categorical and numerical must be lists of columns")
        for kind in ("categorical", "numerical"):
            for i, column in enumerate(state[kind]):
                _check_keys(column, _COLUMN_KEYS[kind], f"{kind} column {i}")
        n = state["n_features_in"]
        names = state["feature_names_in"]
        cat, num = state["categorical"], state["numerical"]
        if type(n) is not int or n < 1:
            raise ValueError(f"n_features_in must be a positive int, got {n!r}")
        positions = [c["position"] for c in cat] + [c["position"] for c in num]
        if sorted(positions) != list(range(n)) or any(
            type(p) is not int for p in positions
        ):
            raise ValueError(
                f"the columns' positions {positions} must be 0 to {n - 1}, once each"
            )
        if names is not None and not (
            isinstance(names, np.ndarray)
            and names.shape == (n,)
            and all(isinstance(v, str) for v in names.tolist())
        ):
            raise ValueError("feature_names_in must be None or n_features_in names")
        categories, codes = [], []
        for i, column in enumerate(cat):
            values, column_codes = column["values"], column["codes"]
            if (
                not isinstance(values, list)
                or not isinstance(column_codes, list)
                or len(values) != len(column_codes)
                # Codes are dense: at most one per value, from _N_RESERVED.
                or any(
                    type(c) is not int
                    or not _N_RESERVED <= c < _N_RESERVED + len(values)
                    for c in column_codes
                )
            ):
                raise ValueError(
                    f"categorical column {i}: values and codes must be lists of "
                    f"the same length, codes ints from {_N_RESERVED} to "
                    f"{_N_RESERVED - 1} + the number of values"
                )
            known = np.empty(len(values), dtype=object)
            known[:] = values
            if len(set(values)) != len(values) or pd.isna(known).any():
                raise ValueError(
                    f"categorical column {i}: values must be distinct and not missing"
                )
            categories.append(known)
            codes.append(np.asarray(column_codes, dtype=np.int64))
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
        if any(not isinstance(c["name"], str) for c in [*cat, *num]):
            raise ValueError("column names must be strings")
        self.n_features_in_ = n
        if names is not None:
            self.feature_names_in_ = names
        self._cat_idx = np.array([c["position"] for c in cat], dtype=np.intp)
        self._num_idx = np.array([c["position"] for c in num], dtype=np.intp)
        self.categorical_features_ = np.array([c["name"] for c in cat], dtype=object)
        self.numerical_features_ = np.array([c["name"] for c in num], dtype=object)
        self.categories_ = categories
        self.category_codes_ = codes
        self.mean_ = np.array([c["mean"] for c in num], dtype=np.float64)
        self.scale_ = np.array([c["scale"] for c in num], dtype=np.float64)
        self._indicator_idx = np.flatnonzero(
            np.array([c["missing_indicator"] for c in num], dtype=bool)
        )
        self.missing_indicator_features_ = self.numerical_features_[self._indicator_idx]
        self.cardinalities_ = cardinalities(codes)
        self._lookup_tables()

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
        return np.asarray(
            [*self.categorical_features_, *self.numerical_features_, *indicators],
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
