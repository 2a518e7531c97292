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

#: Reserved codes of every categorical column; known categories start at 2.
MISSING_CODE = 0
UNKNOWN_CODE = 1
_N_RESERVED = 2
# Codes travel in a float32 matrix, which holds integers exactly up to 2**24.
_MAX_CODE = 2**24

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


def _is_categorical_dtype(dtype: Any) -> bool:
    return isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype)) or (
        getattr(dtype, "kind", None) in _CATEGORICAL_KINDS
    )


def check_features(X: Any) -> pd.DataFrame | np.ndarray:
    """Check the container and shape of X: a DataFrame, or a 2-D ndarray.

    Values are not checked here (NaN is imputed, infinity is rejected when
    encoding), so object arrays of categories pass through unchanged.
    """
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


def _categorical_values(column: pd.Series) -> np.ndarray:
    """Make a categorical column acceptable to ``OrdinalEncoder``.

    Values are compared as Python objects, so an int column at fit time and a
    float column at predict time (pandas' dtype once NaN appears) still match.
    Columns mixing types (e.g. ints and strings) are compared as strings;
    missing values (None, NaN, NA, NaT) become ``np.nan`` and so get the
    reserved missing code.
    """
    values = column.to_numpy(dtype=object, copy=True)
    missing = column.isna().to_numpy()
    if pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS:
        values = values.astype(str).astype(object)
    values[missing] = np.nan
    return values


class _Factorized(NamedTuple):
    """A categorical column as distinct values and each row's position in them."""

    values: np.ndarray  # object array, as OrdinalEncoder reads them
    positions: np.ndarray  # int, -1 for a missing value


def _factorize(column: pd.Series) -> _Factorized:
    """The distinct values of a categorical column (see ``_categorical_values``)."""
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
        positions, uniques = pd.factorize(column, use_na_sentinel=True)
        values = np.asarray(uniques, dtype=object)
    if pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS:
        # Mixed types compare as strings, and values equal as Python objects
        # (1 and 1.0) may differ as strings: factorise the strings.
        positions, strings = pd.factorize(
            _categorical_values(column), use_na_sentinel=True
        )
        values = np.asarray(strings, dtype=object)
    return _Factorized(values, positions.astype(np.intp, copy=False))


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
    ordinal_encoder_ : OrdinalEncoder or None
        The fitted encoder of the categorical columns.
    scaler_ : StandardScaler or None
        The fitted scaler of the numerical columns.

    See Also
    --------
    sklearn.preprocessing.OrdinalEncoder : Encodes the categorical columns.
    MTLClassifier : Uses this encoder in front of its network.

    Notes
    -----
    :meth:`transform` returns one float32 matrix: the ``len(cardinalities_)``
    categorical codes first (exact integers), then the scaled numbers, then the
    missing-value indicators. Infinite values raise an error.

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
            return np.array([_is_categorical_dtype(d) for d in frame.dtypes])
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

    def _codes(self, columns: list[_Factorized]) -> np.ndarray:
        """Codes of every row: each column's distinct values encoded once."""
        # OrdinalEncoder compares Python objects one by one; on the distinct
        # values (hundreds) instead of every row it is many times faster.
        assert self.ordinal_encoder_ is not None
        table = self.ordinal_encoder_.transform(_distinct_frame(columns))
        codes = np.empty((len(columns[0].positions), len(columns)))
        for i, column in enumerate(columns):
            lookup = np.append(table[: len(column.values), i] + _N_RESERVED, 0.0)
            # Position -1 (missing) reads the appended MISSING_CODE: missing
            # values always get it, seen in fit or not.
            codes[:, i] = lookup[column.positions]
        return codes

    def _encode(
        self, frame: pd.DataFrame, columns: list[_Factorized] | None = None
    ) -> np.ndarray:
        parts = []
        if self.ordinal_encoder_ is not None:
            if columns is None:
                columns = [_factorize(frame.iloc[:, int(j)]) for j in self._cat_idx]
            parts.append(self._codes(columns))
        if self.scaler_ is not None:
            z = self.scaler_.transform(self._numbers(frame, self._num_idx))
            nan = np.isnan(z)
            parts.append(np.where(nan, 0.0, z))
            parts.append(nan[:, self._indicator_idx])
        return np.hstack(parts).astype(np.float32)

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
        self._fit_transform(X)
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
        self._validate_params()
        return self._fit_transform(X)

    def _fit_transform(self, X: Any) -> np.ndarray:
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
        self.ordinal_encoder_ = None
        self.scaler_ = None
        columns = [_factorize(frame.iloc[:, int(j)]) for j in self._cat_idx]
        if columns:
            self.ordinal_encoder_ = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=UNKNOWN_CODE - _N_RESERVED,
                encoded_missing_value=MISSING_CODE - _N_RESERVED,
                min_frequency=self.min_frequency,
                max_categories=self.max_categories,
            )
            if self.min_frequency is None and self.max_categories is None:
                # The vocabulary is the set of distinct values: no need to
                # sort every row's object.
                self.ordinal_encoder_.fit(_distinct_frame(columns))
            else:  # infrequent categories need every row's count
                self.ordinal_encoder_.fit(self._categories(frame, self._cat_idx))
        self._indicator_idx = np.array([], dtype=int)
        if self._num_idx.size:
            numbers = self._numbers(frame, self._num_idx)
            self.scaler_ = StandardScaler().fit(numbers)
            self._indicator_idx = np.flatnonzero(np.isnan(numbers).any(axis=0))
        self.missing_indicator_features_ = self.numerical_features_[self._indicator_idx]
        Xt = self._encode(frame, columns)
        # Every known category occurs in the training data, so the largest
        # training code bounds each column's vocabulary.
        n_cat = self._cat_idx.size
        self.cardinalities_ = (
            Xt[:, :n_cat].max(axis=0).astype(np.int64) + 1
            if n_cat
            else np.zeros(0, dtype=np.int64)
        )
        self.cardinalities_ = np.maximum(self.cardinalities_, _N_RESERVED)
        if n_cat and self.cardinalities_.max() >= _MAX_CODE:
            raise ValueError(
                f"A categorical column has {self.cardinalities_.max()} categories; "
                f"at most {_MAX_CODE - 1} are supported. Merge rare categories "
                "with min_frequency or max_categories."
            )
        return Xt

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
        check_is_fitted(self)
        X = check_features(X)
        frame = _as_frame(X)
        validate_data(self, X, reset=False, skip_check_array=True)
        return self._encode(frame)

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
