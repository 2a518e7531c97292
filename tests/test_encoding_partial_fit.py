"""FeatureEncoder.partial_fit: blocks of rows learn what fit learns from all."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl import FeatureEncoder

# Running moments merged block by block against one pass over all rows:
# they differ by floating-point rounding only (a few ulps, n * eps at most).
RTOL = 1e-12

_MIXED = np.array(
    [3, "x", 3.0, "3", True, 2.5, None, "y", 0.0, -0.0, 1, False], dtype=object
)
CATEGORICAL = [
    "mixed",
    "ints_objects",
    "ints_and_bools",
    "number_objects",
    "category",
    "mixed_category",
    "strings",
    "string_dtype",
    "bool",
    "float_codes",
]


def _rows(seed: int, n: int) -> pd.DataFrame:
    """Every kind of column, with missing values of every flavour."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 6, n)
    floats = rng.normal(size=n)
    floats[rng.random(n) < 0.2] = np.nan
    huge = rng.normal(size=n) * 1e200
    huge[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            # Values of several types: learnt as strings, whichever block
            # brings which type (1 and 1.0 and True are one object, three
            # strings).
            "mixed": _MIXED[rng.integers(0, len(_MIXED), n)],
            "ints_objects": pd.Series(ints, dtype=object),
            "ints_and_bools": np.array([1, True, 0, False, None], dtype=object)[
                ints % 5
            ],
            "number_objects": np.array([1, 1.0, 2, 2.5, None, 0.0, -0.0], dtype=object)[
                rng.integers(0, 7, n)
            ],
            "category": pd.Categorical(
                np.array(["p", "q", "r"])[ints % 3], categories=["r", "q", "p", "never"]
            ),
            "mixed_category": pd.Categorical(
                np.array([1, "1", "z"], dtype=object)[ints % 3]
            ),
            "strings": np.array(["a", "b", "c", None, np.nan, pd.NA], dtype=object)[
                rng.integers(0, 6, n)
            ],
            "string_dtype": pd.array(
                np.array(["a", "b", None], dtype=object)[ints % 3], dtype="string"
            ),
            "bool": ints % 2 == 0,
            "float_codes": np.where(rng.random(n) < 0.1, np.nan, (ints % 4) * 0.5),
            "int": ints,
            "float_nan": floats,
            "huge": huge,
            "tiny": rng.normal(size=n) * 1e-170,
            # The magnitude grows along the rows: later blocks rescale the
            # statistics of the earlier ones.
            "growing": rng.normal(size=n) * np.geomspace(1e-160, 1e200, n),
            "only_nan": np.full(n, np.nan),
            "zeros": np.zeros(n),
        }
    )


def _state(enc: FeatureEncoder) -> str:
    """The persisted state, comparable with == (NaN means and arrays too)."""
    state = enc._get_state()
    names = state["feature_names_in"]
    # repr writes every float exactly (the shortest repr that round-trips).
    names = None if names is None else names.tolist()
    return repr({**state, "feature_names_in": names})


def _typed(values: np.ndarray) -> list[tuple[type, object]]:
    return [(type(v), v) for v in values.tolist()]


def assert_same_fit(got: FeatureEncoder, expected: FeatureEncoder, exact: bool) -> None:
    """The same vocabularies and codes; mean_ and scale_ within RTOL."""
    for name in ("categorical_features_", "numerical_features_", "cardinalities_"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    np.testing.assert_array_equal(
        got.missing_indicator_features_, expected.missing_indicator_features_
    )
    assert got.n_features_in_ == expected.n_features_in_
    # Values of the same types, not just equal ones (1 is not 1.0 nor True).
    assert [_typed(c) for c in got.categories_] == [
        _typed(c) for c in expected.categories_
    ]
    assert [c.tolist() for c in got.category_codes_] == [
        c.tolist() for c in expected.category_codes_
    ]
    if exact:  # one call: fit's statistics to the bit
        assert got.mean_.tobytes() == expected.mean_.tobytes()
        assert got.scale_.tobytes() == expected.scale_.tobytes()
    else:
        np.testing.assert_allclose(got.mean_, expected.mean_, rtol=RTOL, atol=0)
        np.testing.assert_allclose(got.scale_, expected.scale_, rtol=RTOL, atol=0)


def _recategorised(block: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The block's categorical dtype as a file's block has it: its own order."""
    column = block["category"].cat.remove_unused_categories()
    categories = list(column.cat.categories)
    return block.assign(
        category=column.cat.set_categories(
            [categories[i] for i in rng.permutation(len(categories))]
        )
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 60),
    cuts=st.lists(st.floats(0, 1), max_size=4),
    params=st.sampled_from(
        [
            {},
            {"min_frequency": 2},
            {"min_frequency": 5},
            {"min_frequency": 0.15},
            {"max_categories": 1},
            {"max_categories": 3},
            {"min_frequency": 2, "max_categories": 3},
        ]
    ),
    named=st.booleans(),
    recategorise=st.booleans(),
)
def test_blocks_learn_what_fit_learns_on_the_rows_so_far(
    seed, n, cuts, params, named, recategorise
):
    X = _rows(seed, n)
    rng = np.random.default_rng(seed)
    # Block bounds; equal cuts give blocks without rows (after the first).
    stops = sorted({max(1, round(c * n)) for c in cuts} | {n})
    spec = CATEGORICAL if named else "from_dtype"
    enc = FeatureEncoder(categorical_features=spec, **params)
    start = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or other warning either
        for calls, stop in enumerate([*stops, n], start=1):
            block = X.iloc[start:stop]
            enc.partial_fit(_recategorised(block, rng) if recategorise else block)
            start = stop
            expected = FeatureEncoder(categorical_features=spec, **params)
            expected.fit(X.iloc[:stop])
            assert_same_fit(enc, expected, exact=calls == 1)
            # Fitted on the rows so far: transform works between calls.
            seen = X.iloc[:stop]
            got, want = enc._transform_parts(seen), expected._transform_parts(seen)
            np.testing.assert_array_equal(got.codes, want.codes)
            np.testing.assert_allclose(got.numbers, want.numbers, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_arrays_without_column_names(seed):
    X = _rows(seed, 50)
    numbers = X[["int", "float_nan", "huge", "tiny", "growing", "only_nan"]]
    objects = X[["mixed", "ints_and_bools", "float_nan", "strings", "huge"]]
    for array, spec in [
        (numbers.to_numpy(dtype=np.float64), "from_dtype"),
        (objects.to_numpy(dtype=object), [0, 1, 3]),
    ]:
        enc = FeatureEncoder(categorical_features=spec)
        for start in range(0, 50, 17):
            enc.partial_fit(array[start : start + 17])
        expected = FeatureEncoder(categorical_features=spec).fit(array)
        assert_same_fit(enc, expected, exact=False)
        assert not hasattr(enc, "feature_names_in_")
        np.testing.assert_array_equal(
            enc.transform(array)[:, :3], expected.transform(array)[:, :3]
        )


@pytest.mark.parametrize(
    "blocks",
    [
        [[1e-170, -2e-170], [3e-100], [1e200, -5e199]],  # growing magnitude
        [[4e200, -1e200], [3e-170, 1.0]],  # a huge column, then small values
        [[0.0, 0.0], [1e200, 3e200]],  # zeros first: no scale yet
        [[np.nan], [1e-170, 2e-170], [np.nan, 5e-170]],  # missing first
        [[1.0, 2.0], [np.nan, np.nan], [3.0]],  # a block only missing
        [[0.0, 0.0, 1e200], [-1e200]],  # infinite variance, not NaN
    ],
)
def test_huge_and_tiny_magnitudes_in_one_pass(blocks):
    frames = [
        pd.DataFrame({"x": b, "plain": np.arange(len(b), dtype=float)}) for b in blocks
    ]
    enc = FeatureEncoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frame in frames:
            enc.partial_fit(frame)
        X = pd.concat(frames, ignore_index=True)
        expected = FeatureEncoder().fit(X)
        Xt = enc.transform(X)
    assert_same_fit(enc, expected, exact=False)
    # numpy's statistics, of x divided by its magnitude (x * x over- or
    # underflows).
    x = X["x"].to_numpy()
    m = np.nanmax(np.abs(x))
    np.testing.assert_allclose(enc.mean_[0], np.nanmean(x / m) * m, rtol=1e-12)
    np.testing.assert_allclose(enc.scale_[0], np.nanstd(x / m) * m, rtol=1e-12)
    assert np.isfinite(Xt).all()


def test_huge_and_tiny_columns_are_scaled_not_zeroed_over_blocks():
    rng = np.random.default_rng(0)
    base = rng.normal(size=60)
    X = pd.DataFrame({"big": base * 1e200, "small": base * 1e-170, "plain": base})
    enc = FeatureEncoder()
    for start in range(0, 60, 7):
        enc.partial_fit(X.iloc[start : start + 7])
    Xt = enc.transform(X)
    np.testing.assert_allclose(Xt[:, 0], Xt[:, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(Xt[:, 1], Xt[:, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        enc.scale_[:2] / [1e200, 1e-170], enc.scale_[2], rtol=1e-12
    )


def test_values_too_far_apart_raise_at_the_call_that_makes_them_so():
    enc = FeatureEncoder().partial_fit(
        pd.DataFrame({"wide": [1.7e308, 1.7e308], "ok": [1.0, 2.0]})
    )
    state = _state(enc)
    with pytest.raises(ValueError, match=r"columns \['wide'\] .*too far apart"):
        enc.partial_fit(pd.DataFrame({"wide": [-1.7e308], "ok": [3.0]}))
    # A failed call changes nothing: the encoder is that of the rows before.
    assert _state(enc) == state
    enc.partial_fit(pd.DataFrame({"wide": [1.0e308], "ok": [3.0]}))
    expected = FeatureEncoder().fit(
        pd.DataFrame({"wide": [1.7e308, 1.7e308, 1.0e308], "ok": [1.0, 2.0, 3.0]})
    )
    assert_same_fit(enc, expected, exact=False)


def test_a_column_changing_kind_is_a_type_error():
    enc = FeatureEncoder().partial_fit(pd.DataFrame({"price": [1.0, 2.0], "n": [1, 2]}))
    state = _state(enc)
    text = pd.DataFrame({"price": ["cheap"], "n": [3]})
    with pytest.raises(TypeError, match=r"\['price'\] change between categorical"):
        enc.partial_fit(text)
    with pytest.raises(TypeError, match=r"\['price'\] change between categorical"):
        enc.partial_fit(text.iloc[:0])  # checked without rows too
    assert _state(enc) == state
    # Named categorical columns do not depend on the dtype.
    enc = FeatureEncoder(categorical_features=["price"])
    enc.partial_fit(pd.DataFrame({"price": [1, 2], "n": [1, 2]}))
    enc.partial_fit(pd.DataFrame({"price": ["cheap"], "n": [3]}))
    assert enc.categories_[0].tolist() == ["1", "2", "cheap"]


def test_blocks_without_rows():
    X = pd.DataFrame({"item": ["a", "b", None], "price": [1.0, np.nan, 3.0]})
    # The first call needs rows, as fit does; the encoder stays unfitted.
    enc = FeatureEncoder()
    with pytest.raises(ValueError, match="at least 1 sample"):
        enc.partial_fit(X.iloc[:0])
    with pytest.raises(NotFittedError):
        check_is_fitted(enc)
    with pytest.raises(ValueError, match="0 sample"):
        FeatureEncoder().partial_fit(np.zeros((0, 2)))
    # Later, a block without rows changes nothing.
    enc.partial_fit(X)
    statistics, state = enc._statistics, _state(enc)
    enc.partial_fit(X.iloc[:0])
    assert enc._statistics is statistics and _state(enc) == state
    arrays = FeatureEncoder().partial_fit(np.ones((3, 2)))
    arrays.partial_fit(np.ones((0, 2)))
    assert arrays.mean_.tolist() == [1.0, 1.0]
    # Its columns are still checked.
    with pytest.raises(ValueError, match="X has 3 features"):
        arrays.partial_fit(np.ones((0, 3)))


def test_columns_must_be_those_of_the_first_call():
    X = pd.DataFrame({"item": ["a", "b"], "price": [1.0, 2.0]})
    enc = FeatureEncoder().partial_fit(X)
    with pytest.raises(ValueError, match="feature names should match"):
        enc.partial_fit(X.rename(columns={"price": "cost"}))
    with pytest.raises(ValueError, match="unseen at fit time:\n- extra"):
        enc.partial_fit(X.assign(extra=1.0))
    arrays = FeatureEncoder().partial_fit(np.ones((2, 2)))
    with pytest.raises(ValueError, match="X has 3 features"):
        arrays.partial_fit(np.ones((2, 3)))


def test_a_failed_first_call_leaves_the_encoder_unfitted():
    enc = FeatureEncoder()
    with pytest.raises(ValueError, match="infinity"):
        enc.partial_fit(pd.DataFrame({"item": ["a"], "price": [np.inf]}))
    assert not hasattr(enc, "n_features_in_")
    with pytest.raises(NotFittedError):
        check_is_fitted(enc)
    # The next call is a first call again: other columns are welcome.
    enc.partial_fit(pd.DataFrame({"shop": [1.0]}))
    assert enc.n_features_in_ == 1


def test_fit_starts_afresh_and_partial_fit_continues_it():
    X = _rows(0, 30)
    enc = FeatureEncoder().partial_fit(X.iloc[:10])
    enc.fit(X.iloc[10:20])
    assert_same_fit(enc, FeatureEncoder().fit(X.iloc[10:20]), exact=True)
    enc.partial_fit(X.iloc[20:])
    assert_same_fit(enc, FeatureEncoder().fit(X.iloc[10:]), exact=False)
    # fit_transform too starts afresh.
    Xt = enc.fit_transform(X.iloc[:5])
    np.testing.assert_array_equal(
        Xt, FeatureEncoder().fit(X.iloc[:5]).transform(X.iloc[:5])
    )


def test_state_of_blocks_round_trips_and_a_restored_encoder_is_not_continued():
    X = _rows(1, 40)
    enc = FeatureEncoder(min_frequency=2)
    for start in range(0, 40, 13):
        enc.partial_fit(X.iloc[start : start + 13])
    restored = FeatureEncoder(min_frequency=2)
    restored._set_state(enc._get_state())
    np.testing.assert_array_equal(restored.transform(X), enc.transform(X))
    assert _state(restored) == _state(enc)
    # The state keeps no counts: there is nothing to add a block to.
    with pytest.raises(ValueError, match="restored"):
        restored.partial_fit(X.iloc[:5])
    restored.fit(X.iloc[:5])  # fit starts afresh
    restored.partial_fit(X.iloc[5:10])
    assert_same_fit(
        restored, FeatureEncoder(min_frequency=2).fit(X.iloc[:10]), exact=False
    )
    # Restoring replaces everything: an earlier fit's names and counts go.
    unnamed = FeatureEncoder().fit(X.to_numpy(dtype=object)[:, -4:].astype(float))
    named = FeatureEncoder().fit(X.iloc[:, -4:])
    named._set_state(unnamed._get_state())
    assert not hasattr(named, "feature_names_in_")
    with pytest.raises(ValueError, match="restored"):
        named.partial_fit(X.iloc[:, -4:].to_numpy(dtype=float))
