"""FeatureEncoder: codes, reserved indices, scaling, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_proba

from sklearn_rmtl import FeatureEncoder
from sklearn_rmtl._encoding import MISSING_CODE, UNKNOWN_CODE


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "item": ["a", "b", "a", None, "c", "a"],
            "shop": pd.Categorical([1, 2, 2, 1, np.nan, 1]),
            "flag": [True, False, True, True, False, False],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "stock": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0],
        }
    )


def test_dtype_inference_and_layout(frame):
    enc = FeatureEncoder().fit(frame)
    assert list(enc.categorical_features_) == ["item", "shop", "flag"]
    assert list(enc.numerical_features_) == ["price", "stock"]
    assert list(enc.missing_indicator_features_) == ["stock"]
    # 2 reserved codes + known categories (None / NaN are missing, not a category)
    assert enc.cardinalities_.tolist() == [2 + 3, 2 + 2, 2 + 2]
    Xt = enc.transform(frame)
    assert Xt.dtype == np.float32
    assert Xt.shape == (6, 3 + 2 + 1)
    assert list(enc.get_feature_names_out()) == [
        "item",
        "shop",
        "flag",
        "price",
        "stock",
        "missingindicator_stock",
    ]
    codes = Xt[:, :3]
    assert np.all(codes == np.round(codes))
    assert codes[3, 0] == MISSING_CODE and codes[4, 1] == MISSING_CODE
    assert len(set(codes[[0, 1, 4], 0])) == 3  # a, b, c distinct
    assert codes[0, 0] == codes[2, 0] == codes[5, 0]


def test_unseen_and_missing_at_transform(frame):
    enc = FeatureEncoder().fit(frame)
    new = pd.DataFrame(
        {
            "item": ["zzz", None],
            "shop": pd.Categorical([7, np.nan]),
            "flag": [None, True],  # missing although flag had none in training
            "price": [np.nan, 3.5],
            "stock": [np.nan, 3.5],
        }
    )
    Xt = enc.transform(new)
    assert Xt[0, 0] == UNKNOWN_CODE and Xt[1, 0] == MISSING_CODE
    assert Xt[0, 1] == UNKNOWN_CODE and Xt[1, 1] == MISSING_CODE
    assert Xt[0, 2] == MISSING_CODE
    # NaN numbers are imputed with the training mean (0 after scaling) ...
    assert Xt[0, 3] == 0.0 and Xt[0, 4] == 0.0
    # ... and flagged only for columns that had missing values in training.
    assert Xt[:, 5].tolist() == [1.0, 0.0]
    scaled = (3.5 - frame["price"].mean()) / frame["price"].std(ddof=0)
    np.testing.assert_allclose(Xt[1, 3], scaled, rtol=1e-6)


def test_vocabulary_learnt_from_training_only(frame):
    enc = FeatureEncoder().fit(frame.iloc[:3])
    Xt = enc.transform(frame)
    assert Xt[4, 0] == UNKNOWN_CODE  # "c" only occurs after the fit rows
    assert enc.cardinalities_[0] == 2 + 2


def test_min_frequency_merges_rare_categories():
    X = pd.DataFrame({"item": ["a"] * 5 + ["b"] * 3 + ["c", "d"]})
    enc = FeatureEncoder(min_frequency=3).fit(X)
    codes = enc.transform(X)[:, 0]
    assert enc.cardinalities_.tolist() == [2 + 3]  # a, b, infrequent
    assert codes[8] == codes[9] != codes[0]
    enc = FeatureEncoder(max_categories=2).fit(X)
    assert enc.cardinalities_.tolist() == [2 + 2]


def test_int_categories_match_float_at_predict():
    # pandas turns an int column into float once a NaN appears.
    enc = FeatureEncoder(categorical_features=["shop"]).fit(
        pd.DataFrame({"shop": [10, 20, 10]})
    )
    Xt = enc.transform(pd.DataFrame({"shop": [20.0, np.nan, 30.0]}))
    assert Xt[:, 0].tolist() == [3.0, MISSING_CODE, UNKNOWN_CODE]


def test_mixed_type_column_is_compared_as_strings():
    X = pd.DataFrame({"c": np.array([1, "1", "x", 2.5], dtype=object)})
    enc = FeatureEncoder().fit(X)
    codes = enc.transform(X)[:, 0]
    assert codes[0] == codes[1]
    assert enc.cardinalities_.tolist() == [2 + 3]


@pytest.mark.parametrize("params", [{}, {"min_frequency": 1}])
def test_ints_and_bools_are_learnt_as_strings(params):
    # 1 and True are equal objects but values of two types: the column is
    # learnt as strings, as any column mixing types, whether or not fit
    # counts rows (without counting, it was learnt as objects; counting, its
    # fit_transform gave such values the unknown code).
    X = pd.DataFrame({"c": np.array([1, True, 0, False, None, 1], dtype=object)})
    enc = FeatureEncoder(**params)
    Xt = enc.fit_transform(X)
    assert enc.categories_[0].tolist() == ["0", "1", "False", "True"]
    assert Xt[:, 0].tolist() == [3, 5, 2, 4, MISSING_CODE, 3]
    np.testing.assert_array_equal(Xt, enc.transform(X))


@pytest.mark.parametrize(
    "spec", [[0], np.array([True, False]), ["c0"]], ids=["positions", "mask", "names"]
)
def test_categorical_features_specs(spec):
    X = np.array([[1.0, 0.5], [2.0, 1.5], [1.0, 2.5]])
    if isinstance(spec, list) and isinstance(spec[0], str):
        X = pd.DataFrame(X, columns=["c0", "c1"])
    enc = FeatureEncoder(categorical_features=spec).fit(X)
    assert enc.cardinalities_.tolist() == [4]
    assert enc.transform(X)[:, 0].tolist() == [2.0, 3.0, 2.0]


def test_arrays_are_numerical_by_default():
    X = np.arange(6.0).reshape(3, 2)
    enc = FeatureEncoder().fit(X)
    assert enc.cardinalities_.size == 0
    assert enc.transform(X).shape == (3, 2)


def test_none_makes_every_column_numerical(frame):
    with pytest.raises(ValueError, match="'item' is treated as numerical"):
        FeatureEncoder(categorical_features=None).fit(frame)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (["nope"], "names columns \\['nope'\\]"),
        ([5], "outside the 5 columns"),
        (np.array([True]), "one entry per column"),
    ],
)
def test_bad_categorical_features(frame, spec, match):
    with pytest.raises(ValueError, match=match):
        FeatureEncoder(categorical_features=spec).fit(frame)


def test_names_need_a_dataframe():
    with pytest.raises(ValueError, match="names need X to be a pandas DataFrame"):
        FeatureEncoder(categorical_features=["a"]).fit(np.ones((3, 2)))


def test_infinity_is_rejected(frame):
    frame.loc[0, "price"] = np.inf
    with pytest.raises(ValueError, match="infinity in numerical columns \\['price'\\]"):
        FeatureEncoder().fit(frame)


def test_column_mismatch_at_transform(frame):
    enc = FeatureEncoder().fit(frame)
    with pytest.raises(ValueError, match="feature names"):
        enc.transform(frame[frame.columns[::-1]])
    with pytest.raises(ValueError, match="Feature names"):
        enc.transform(frame.drop(columns="price"))


def test_empty_input():
    with pytest.raises(ValueError, match="at least 1 sample"):
        FeatureEncoder().fit(pd.DataFrame({"a": []}))


def _row_by_row_codes(X_fit: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
    """Codes from an OrdinalEncoder fitted and applied on every row."""
    from sklearn.preprocessing import OrdinalEncoder

    from sklearn_rmtl._encoding import _HOMOGENEOUS

    def objects(frame: pd.DataFrame) -> pd.DataFrame:
        # Python objects (strings where a column mixes types), NaN if missing.
        columns = {}
        for c in frame.columns:
            values = frame[c].to_numpy(dtype=object, copy=True)
            if pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS:
                values = values.astype(str).astype(object)
            values[frame[c].isna().to_numpy()] = np.nan
            columns[c] = values
        return pd.DataFrame(columns, dtype=object)

    ordinal = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=UNKNOWN_CODE - 2,
        encoded_missing_value=MISSING_CODE - 2,
    ).fit(objects(X_fit))
    codes = ordinal.transform(objects(X)) + 2
    codes[X.isna().to_numpy()] = MISSING_CODE
    return codes


def test_codes_match_an_ordinal_encoder_applied_row_by_row():
    # Encoding distinct values once must give the codes of the plain
    # row-by-row OrdinalEncoder, for every kind of categorical column.
    rng = np.random.default_rng(0)
    n = 300
    cats = [f"v{i}" for i in range(40)]
    mixed = np.array([1, "1", 1.0, "x", 2.5, True, None], dtype=object)

    def frame(n_rows: int) -> pd.DataFrame:
        idx = rng.integers(0, 40, n_rows)
        strings = np.array(cats, dtype=object)[idx]
        strings[rng.random(n_rows) < 0.1] = None
        return pd.DataFrame(
            {
                "object": strings,
                # Unused categories in the dtype are not in the vocabulary.
                "category": pd.Categorical(
                    np.array(cats)[idx % 20], categories=[*cats, "never"]
                ),
                "string": pd.array(strings, dtype="string"),
                "int": pd.Series(idx % 7, dtype=object),
                "bool": idx % 2 == 0,
                "mixed": mixed[rng.integers(0, len(mixed), n_rows)],
            }
        )

    X_fit, X_new = frame(n), frame(n)
    X_new.loc[:5, "object"] = "unseen"
    X_new["int"] = X_new["int"].astype(float)  # 3 at fit, 3.0 now: same code
    X_new["category"] = pd.Categorical(
        X_new["category"].astype(str), categories=[*sorted(set(cats[:20])), "new"]
    )
    X_new.loc[:3, "category"] = "new"
    enc = FeatureEncoder(categorical_features=list(X_fit.columns)).fit(X_fit)
    for X in (X_fit, X_new):
        np.testing.assert_array_equal(enc.transform(X), _row_by_row_codes(X_fit, X))
    np.testing.assert_array_equal(enc.fit_transform(X_fit), enc.transform(X_fit))
    assert enc.cardinalities_[1] == 2 + 20  # "never" and 20 others unused


def test_fitted_state_is_plain_vocabularies_and_statistics(frame):
    enc = FeatureEncoder(min_frequency=2).fit(frame)
    assert [c.tolist() for c in enc.categories_] == [
        ["a", "b", "c"],
        [1, 2],
        [False, True],
    ]
    # "b" and "c" occur once: infrequent, they share one code.
    assert [c.tolist() for c in enc.category_codes_] == [[2, 3, 3], [2, 3], [2, 3]]
    assert all(c.dtype == np.int64 for c in enc.category_codes_)
    np.testing.assert_array_equal(enc.mean_, [3.5, 3.8])
    assert enc.scale_.shape == (2,) and enc.scale_.dtype == np.float64
    assert not hasattr(enc, "ordinal_encoder_") and not hasattr(enc, "scaler_")


def test_state_round_trip(frame):
    enc = FeatureEncoder().fit(frame)
    other = FeatureEncoder()
    other._set_state(enc._get_state())
    np.testing.assert_array_equal(other.transform(frame), enc.transform(frame))
    np.testing.assert_array_equal(other.cardinalities_, enc.cardinalities_)
    np.testing.assert_array_equal(other.feature_names_in_, enc.feature_names_in_)
    state = enc._get_state()
    state["categorical"][0]["codes"][0] = 1  # a reserved code
    with pytest.raises(ValueError, match="categorical column 0"):
        FeatureEncoder()._set_state(state)
    state = enc._get_state()
    state["numerical"][0]["position"] = 0  # two columns at 0
    with pytest.raises(ValueError, match="positions"):
        FeatureEncoder()._set_state(state)
    state = enc._get_state()
    del state["numerical"][0]["scale"]
    with pytest.raises(ValueError, match="numerical column 0 must have the keys"):
        FeatureEncoder()._set_state(state)


def test_integer_path_is_exact_beyond_float32():
    """Codes are int64 up to the networks; only the float32 matrix is capped."""
    from sklearn_rmtl._encoding import _MAX_FLOAT_CODE

    X = pd.DataFrame({"item": ["a", "b", "a"], "price": [1.0, 2.0, 3.0]})
    enc = FeatureEncoder().fit(X)
    big = _MAX_FLOAT_CODE + 1  # float32 rounds it to 2**24
    enc.category_codes_ = [np.array([2, big], dtype=np.int64)]
    enc.cardinalities_ = np.array([big + 1])
    parts = enc._transform_parts(X)
    assert parts.codes.dtype == np.int64
    np.testing.assert_array_equal(parts.codes[:, 0], [2, big, 2])
    assert parts.numbers.dtype == np.float32
    with pytest.raises(ValueError, match="float32 output of transform"):
        enc.transform(X)
    fitted = FeatureEncoder()
    parts = fitted._fit_transform_parts(X)
    np.testing.assert_array_equal(
        np.hstack([parts.codes, parts.numbers]), fitted.transform(X)
    )


# --------------------------------------------------- batch independence
_MIXED = np.array([3, "x", 3.0, "3", True, 2.5, None, "y"], dtype=object)


def _kinds(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Every kind of categorical column, with missing values of every flavour."""
    strings = np.array(["a", "b", "c", None, np.nan, pd.NA], dtype=object)
    ints = rng.integers(0, 5, n)
    floats = ints.astype(float)
    floats[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "mixed": _MIXED[rng.integers(0, len(_MIXED), n)],
            "ints_objects": pd.Series(ints, dtype=object),
            "category": pd.Categorical(np.array(["p", "q", "r"])[ints % 3]),
            "mixed_category": pd.Categorical(
                np.array([1, "1", "z"], dtype=object)[ints % 3]
            ),
            "int": ints,
            "float_nan": floats,
            "bool": ints % 2 == 0,
            "strings": strings[rng.integers(0, len(strings), n)],
            "string_dtype": pd.array(
                np.array(["a", "b", None], dtype=object)[ints % 3], dtype="string"
            ),
        }
    )


def _assert_rows_independent(enc: FeatureEncoder, X: pd.DataFrame) -> None:
    whole = enc.transform(X)
    for i in range(len(X)):
        np.testing.assert_array_equal(
            enc.transform(X.iloc[[i]])[0], whole[i], err_msg=f"row {i}: {X.iloc[i]}"
        )


@pytest.mark.parametrize("seed", range(4))
def test_a_code_does_not_depend_on_the_rest_of_the_batch(seed):
    rng = np.random.default_rng(seed)
    X_fit = _kinds(rng, 40)
    enc = FeatureEncoder(categorical_features=list(X_fit.columns)).fit(X_fit)
    X_new = _kinds(rng, 40)
    # Values of another type than the column's at fit: strings among ints.
    X_new["ints_objects"] = X_new["ints_objects"].where(
        rng.random(40) < 0.7, np.array(["3", "x"], dtype=object)[rng.integers(0, 2, 40)]
    )
    for X in (X_fit, X_new):
        for _ in range(3):
            batch = X.iloc[rng.permutation(len(X))[: rng.integers(1, len(X))]]
            _assert_rows_independent(enc, batch)


def test_a_mixed_column_is_compared_as_strings_whatever_the_batch():
    X = pd.DataFrame({"c": np.array([3, "x", 3, "x"], dtype=object)})
    enc = FeatureEncoder().fit(X)
    assert enc.categories_[0].tolist() == ["3", "x"]
    alone = enc.transform(pd.DataFrame({"c": np.array([3], dtype=object)}))
    together = enc.transform(pd.DataFrame({"c": np.array([3, "x"], dtype=object)}))
    assert alone[0, 0] == together[0, 0] == 2
    # A column of one type at fit compares values of that type: "3" among
    # ints is unknown, and 3 keeps its code whatever else is in the batch.
    enc = FeatureEncoder().fit(pd.DataFrame({"c": np.array([3, 4], dtype=object)}))
    mixed = enc.transform(pd.DataFrame({"c": np.array([3, "3", "x"], dtype=object)}))
    assert mixed[:, 0].tolist() == [2, UNKNOWN_CODE, UNKNOWN_CODE]


def test_predict_proba_does_not_depend_on_its_chunks(monkeypatch):
    from sklearn_rmtl import MTLClassifier, _mtl

    rng = np.random.default_rng(0)
    X = _kinds(rng, 30)[["mixed", "ints_objects", "strings", "float_nan"]]
    y = pd.DataFrame({"click": rng.integers(0, 2, 30), "buy": rng.integers(0, 2, 30)})
    clf = MTLClassifier(
        backbone="sharedbottom",
        max_epochs=1,
        random_state=0,
        backbone_params={"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)},
    ).fit(X, y)
    monkeypatch.setattr(_mtl, "_PREDICT_CHUNK", 4)
    chunked = clf.predict_proba(X)
    rows = np.vstack([clf.predict_proba(X.iloc[[i]]) for i in range(len(X))])
    assert_same_proba(chunked, rows)


# ---------------------------------------------------------- magnitudes
@pytest.mark.parametrize("magnitude", [1e200, 1e-170])
def test_huge_and_tiny_magnitudes_are_scaled_not_zeroed(magnitude):
    rng = np.random.default_rng(0)
    base = rng.normal(size=50)
    base[3] = np.nan
    X = pd.DataFrame({"big": base * magnitude, "plain": base})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        enc = FeatureEncoder().fit(X)
        Xt = enc.transform(X)
    assert np.isfinite(Xt).all()
    np.testing.assert_allclose(Xt[:, 0], Xt[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(enc.scale_[0] / magnitude, enc.scale_[1], rtol=1e-12)
    assert np.nanstd(Xt[:, 0]) > 0.9


def test_an_infinite_variance_is_scaled_too():
    # Exact deviations make x * x overflow to inf, not NaN: the column was
    # given a scale of 1, and encoding its own training rows failed.
    X = pd.DataFrame({"big": [0.0, 0.0, 1e200, -1e200]})
    enc = FeatureEncoder().fit(X)
    assert enc.mean_.tolist() == [0.0]
    np.testing.assert_allclose(enc.scale_, [np.sqrt(0.5) * 1e200], rtol=1e-12)
    np.testing.assert_allclose(
        enc.transform(X)[:, 0], np.array([0, 0, 1, -1]) * np.sqrt(2), rtol=1e-6
    )


def test_ordinary_scaling_is_standard_scalers():
    from sklearn.preprocessing import StandardScaler

    X = np.random.default_rng(0).normal(size=(30, 3)) * [1.0, 1e-3, 1e6]
    enc = FeatureEncoder().fit(X)
    scaler = StandardScaler().fit(X)
    np.testing.assert_array_equal(enc.mean_, scaler.mean_)
    np.testing.assert_array_equal(enc.scale_, scaler.scale_)


def test_values_too_far_apart_for_float32_are_an_error():
    X = pd.DataFrame({"wide": [-1.7e308, 1.7e308, 1.7e308], "ok": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match=r"columns \['wide'\] .*Log-transform"):
        FeatureEncoder().fit(X)
    enc = FeatureEncoder().fit(pd.DataFrame({"wide": [1.0, 2.0], "ok": [1.0, 2.0]}))
    with pytest.raises(ValueError, match=r"columns \['wide'\] .*Log-transform"):
        enc.transform(pd.DataFrame({"wide": [1e300], "ok": [1.0]}))


# ------------------------------------------------------ container cells
@pytest.mark.parametrize(
    "cell",
    [["a", "b"], {"k": 1}, {"a"}, np.array([1, 2]), ("a", "b")],
    ids=["list", "dict", "set", "ndarray", "tuple"],
)
@pytest.mark.parametrize("categorical_features", ["from_dtype", None])
def test_container_cells_are_an_error_naming_the_column(cell, categorical_features):
    tags = pd.Series([cell] * 3 + ["c"], dtype=object)
    X = pd.DataFrame({"price": [1.0, 2.0, 3.0, 4.0], "tags": tags})
    message = r"Column 'tags' holds a \w+ .*holds scalars.*declare the column in"
    with pytest.raises(ValueError, match=message):
        FeatureEncoder(categorical_features=categorical_features).fit(X)
    enc = FeatureEncoder().fit(X.assign(tags=["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match=message):
        enc.transform(X)
