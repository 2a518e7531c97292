"""Hashed id columns (``hash_buckets``): stable codes, bounded memory, parity."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from conftest import make_mtl_data, make_session_data
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import FeatureEncoder, MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.persistence import load, save

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,), "n_experts": 2}


def _codes(encoder, X):
    return encoder._transform_parts(X).codes


def test_recorded_codes_are_the_same_on_every_platform_and_version():
    """MurmurHash3_x86_32 (seed 0) of each id's text, mod 1000, plus 2.

    Recorded once: a change here changes every hashed model's predictions.
    """
    ids = pd.Series(["abc", "123", 123, -5, "é", None, ""], dtype=object)
    enc = FeatureEncoder(hash_buckets={"id": 1000}).fit(pd.DataFrame({"id": ids}))
    assert _codes(enc, pd.DataFrame({"id": ids})).ravel().tolist() == [
        4, 773, 773, 405, 497, 0, 0,
    ]  # fmt: skip
    floats = pd.DataFrame({"id": [123.0, np.nan, 2.0**53]})
    assert _codes(enc, floats).ravel().tolist() == [773, 0, 401]


def test_unseen_ids_get_their_bucket_and_nothing_is_kept_per_id():
    rng = np.random.default_rng(0)
    few = pd.DataFrame({"id": rng.integers(0, 10, 1000), "x": rng.normal(size=1000)})
    many = few.assign(id=rng.integers(0, 10**12, 1000))
    encoders = [FeatureEncoder(hash_buckets={"id": 64}).fit(X) for X in (few, many)]
    for enc in encoders:
        assert enc.categories_[0].size == 0
        assert enc.cardinalities_.tolist() == [66]
        assert enc.n_buckets_.tolist() == [64]
    # The fitted encoder's size does not grow with the number of distinct ids.
    sizes = [len(pickle.dumps(enc)) for enc in encoders]
    assert abs(sizes[0] - sizes[1]) < 200
    unseen = pd.DataFrame({"id": [10**13, 7], "x": [0.0, 0.0]})
    codes = _codes(encoders[0], unseen)[:, 0]
    assert (codes >= 2).all()  # a bucket, not the unknown code 1
    assert (codes == _codes(encoders[1], unseen)[:, 0]).all()  # same id, same code


def test_partial_fit_over_blocks_equals_fit():
    X, _ = make_mtl_data(600)
    X = X.assign(user=X["user"].astype(int))
    whole = FeatureEncoder(hash_buckets={"user": 16}).fit(X)
    blocks = FeatureEncoder(hash_buckets={"user": 16})
    for start in range(0, 600, 200):
        blocks.partial_fit(X.iloc[start : start + 200])
    np.testing.assert_array_equal(whole.transform(X), blocks.transform(X))
    blocks.set_params(hash_buckets={"user": 32})
    with pytest.raises(
        ValueError, match="hash_buckets or sequence_features changed since the first"
    ):
        blocks.partial_fit(X.iloc[:10])


def test_a_hashed_column_is_categorical_whatever_categorical_features_says():
    X = pd.DataFrame({"id": [1, 2, 3], "x": [0.0, 1.0, 2.0]})
    enc = FeatureEncoder(categorical_features=None, hash_buckets={0: 8}).fit(X)
    assert enc.categorical_features_.tolist() == ["id"]
    assert enc.numerical_features_.tolist() == ["x"]


@pytest.mark.parametrize(
    ("column", "buckets", "message"),
    [
        ([True, False, True], {"id": 8}, "holds True .bool.; a hashed column"),
        ([0.5, 1.0, 2.0], {"id": 8}, "holds 0.5 .float.; a hashed column"),
        (["a", "b", "c"], {"item": 8}, "names column 'item', which X does not"),
        (["a", "b", "c"], {5: 8}, "position 5 outside the 2 columns"),
        (["a", "b", "c"], {"id": 0}, r"must be in \[1, 2\*\*62\], got 0"),
        (["a", "b", "c"], {"id": True}, "must be a positive int"),
        (["a", "b", "c"], {1.5: 8}, "names columns by name .* or position; got 1.5"),
    ],
)
def test_bad_hash_buckets_name_the_column_and_the_fix(column, buckets, message):
    X = pd.DataFrame({"id": pd.Series(column, dtype=object), "x": [0.0, 1.0, 2.0]})
    enc = FeatureEncoder(hash_buckets=buckets)
    with pytest.raises(ValueError, match=message):
        enc.fit(X)
    assert not hasattr(enc, "n_buckets_")  # nothing half-fitted


def test_a_state_saved_before_hashing_and_sequences_existed_loads():
    X, _ = make_mtl_data(100)
    enc = FeatureEncoder().fit(X)
    state = enc._get_state()
    del state["sequences"]
    for column in state["categorical"]:
        del column["buckets"]
    restored = FeatureEncoder()
    restored._set_state(state)
    np.testing.assert_array_equal(restored.transform(X), enc.transform(X))
    assert restored.n_buckets_.tolist() == [0, 0]


def _hashed_mtl(**params):
    return MTLClassifier(
        backbone="mmoe",
        backbone_params=TINY,
        hash_buckets={"user": 32},
        max_epochs=3,
        random_state=0,
        **params,
    )


def test_estimators_fit_save_and_export_hashed_columns(tmp_path):
    X, Y = make_mtl_data(800)
    est = _hashed_mtl().fit(X, Y)
    assert est.encoder_.n_buckets_.tolist() == [0, 32]  # item by vocabulary
    proba = est.predict_proba(X)
    save(est, tmp_path / "m.rmtl")
    np.testing.assert_array_equal(load(tmp_path / "m.rmtl").predict_proba(X), proba)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sklearn_rmtl.export import describe_encoding, onnx_inputs, to_onnx

    served = X.assign(user=X["user"].astype(object))
    served.loc[:4, "user"] = ["never-seen", None, "", 17, 17.0]
    session = ort.InferenceSession(to_onnx(est).SerializeToString())
    graph = session.run(None, onnx_inputs(est, served))[0]
    np.testing.assert_allclose(graph, est.predict_proba(served), atol=1e-5)
    user = describe_encoding(est)["columns"][1]
    assert user == {
        "name": "user",
        "role": "categorical",
        "type": "string",
        "buckets": 32,
        "missing_value": "",
    }


def test_rmtl_and_a_parquet_source_fit_hashed_columns(tmp_path):
    pytest.importorskip("pyarrow")
    from sklearn_rmtl.parquet import ParquetSource

    X, Y, sessions, times = make_session_data(60)
    X = X.assign(item=X["item"].astype(str))
    params = dict(
        backbone="mmoe",
        backbone_params=TINY,
        hash_buckets={"item": 8},
        max_epochs=2,
        critic=SessionCritic(max_epochs=1, hidden_dims=(8,)),
        random_state=0,
    )
    est = RMTLClassifier(**params).fit(X, Y, session_ids=sessions, timestamps=times)
    assert est.encoder_.n_buckets_.tolist() == [8]
    frame = pd.concat([X, Y], axis=1).assign(session=sessions, t=times)
    frame = frame.sort_values(["session", "t"], kind="stable").reset_index(drop=True)
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    source = ParquetSource(
        path,
        target=["click", "purchase"],
        session="session",
        time="t",
        features=list(X.columns),
        block_rows=10**6,
    )
    in_memory = RMTLClassifier(**params).fit(
        frame[list(X.columns)],
        frame[["click", "purchase"]],
        session_ids=frame["session"],
        timestamps=frame["t"],
    )
    streamed = RMTLClassifier(**params).fit(source)
    features = frame[list(X.columns)]
    np.testing.assert_array_equal(
        streamed.predict_proba(features), in_memory.predict_proba(features)
    )


def test_a_hashed_id_carries_a_learnable_signal():
    """Labels that depend on the id alone: hashed ids learn them."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 200, 4000)
    likes = rng.random(200) < 0.5
    y = (rng.random(4000) < np.where(likes[ids], 0.8, 0.2)).astype(int)
    X = pd.DataFrame({"id": ids, "x": rng.normal(size=4000)})
    Y = np.c_[y, y]
    est = MTLClassifier(
        backbone="sharedbottom",
        backbone_params={"embedding_dim": 8, "bottom_dims": (16,), "tower_dims": ()},
        hash_buckets={"id": 4096},
        max_epochs=15,
        lr=0.01,
        random_state=0,
    ).fit(X[:3000], Y[:3000])
    auc = roc_auc_score(y[3000:], est.predict_proba(X[3000:])[:, 0])
    assert auc > 0.7
