"""polars and pyarrow inputs behave as the same data in pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl import FeatureEncoder, MTLClassifier

SMALL = {
    "backbone": "sharedbottom",
    "max_epochs": 1,
    "random_state": 0,
    "backbone_params": {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)},
}


def _data(n: int = 40) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "item": np.array(["a", "b", "c", None], dtype=object)[
                rng.integers(0, 4, n)
            ],
            "shop": pd.Categorical(np.array(["s1", "s2"])[rng.integers(0, 2, n)]),
            "price": rng.normal(size=n),
            "count": rng.integers(0, 9, n),
        }
    )
    y = pd.DataFrame({"click": rng.integers(0, 2, n), "buy": rng.integers(0, 2, n)})
    sessions = pd.Series(np.repeat(np.arange(n // 4), 4), name="session")
    times = pd.Series(pd.date_range("2024-01-01", periods=n, freq="min"), name="t")
    return X, y, sessions, times


def _polars(obj):
    pl = pytest.importorskip("polars")
    pytest.importorskip("pyarrow")  # polars converts through pyarrow
    return pl.from_pandas(obj)


def _pyarrow(obj):
    pa = pytest.importorskip("pyarrow")
    if isinstance(obj, pd.Series):
        return pa.Array.from_pandas(obj)
    return pa.Table.from_pandas(obj, preserve_index=False)


CONVERT = {"polars": _polars, "pyarrow": _pyarrow}


@pytest.mark.parametrize("library", CONVERT)
def test_fit_and_predict_as_for_pandas(library):
    convert = CONVERT[library]
    X, y, sessions, times = _data()
    fit = {"session_ids": sessions, "timestamps": times}
    expected = MTLClassifier(**SMALL).fit(X, y, **fit)
    clf = MTLClassifier(**SMALL).fit(
        convert(X),
        convert(y),
        session_ids=convert(sessions),
        timestamps=convert(times),
    )
    assert list(clf.feature_names_in_) == ["item", "shop", "price", "count"]
    assert list(clf.task_names_) == ["click", "buy"]
    assert list(clf.encoder_.categorical_features_) == ["item", "shop"]
    np.testing.assert_array_equal(
        clf.predict_proba(convert(X)), expected.predict_proba(X)
    )
    np.testing.assert_array_equal(clf.predict(convert(X)), expected.predict(X))
    reordered = convert(X[["shop", "item", "price", "count"]])
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        clf.predict_proba(reordered)


@pytest.mark.parametrize("library", CONVERT)
def test_encoder_keeps_names_and_dtypes(library):
    X, *_ = _data()
    enc = FeatureEncoder().fit(CONVERT[library](X))
    expected = FeatureEncoder().fit(X)
    assert list(enc.feature_names_in_) == list(X.columns)
    assert list(enc.categorical_features_) == ["item", "shop"]
    np.testing.assert_array_equal(
        enc.transform(CONVERT[library](X)), expected.transform(X)
    )


def test_polars_lazy_frame_is_a_clear_error():
    pl = pytest.importorskip("polars")
    X, *_ = _data()
    with pytest.raises(TypeError, match=r"\.collect\(\) first"):
        FeatureEncoder().fit(pl.from_pandas(X.drop(columns="shop")).lazy())


@pytest.mark.parametrize("library", CONVERT)
def test_rmtl_fit_and_loss_weights_as_for_pandas(library):
    from sklearn_rmtl import RMTLClassifier, SessionCritic

    convert = CONVERT[library]
    X, y, sessions, times = _data()
    params = {**SMALL, "critic": SessionCritic(max_epochs=1)}
    fit = {"session_ids": sessions, "timestamps": times}
    expected = RMTLClassifier(**params).fit(X, y, **fit)
    native = {"session_ids": convert(sessions), "timestamps": convert(times)}
    clf = RMTLClassifier(**params).fit(convert(X), convert(y), **native)
    assert list(clf.task_names_) == ["click", "buy"]
    np.testing.assert_array_equal(
        clf.predict_proba(convert(X)), expected.predict_proba(X)
    )
    np.testing.assert_array_equal(
        clf.loss_weights(convert(X), convert(y), **native),
        expected.loss_weights(X, y, **fit),
    )
