"""ONNX and torch.export: served probabilities equal predict_proba."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.backbones import BACKBONES
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.export import describe_encoding, onnx_inputs, to_onnx, to_torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

DATA = make_sessions(n_sessions=40, random_state=0)
SMALL = {"max_epochs": 1, "random_state": 0}
SIZES = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
EXPERTS = {"mmoe": {"n_experts": 2}, "omoe": {"n_experts": 2}}
EXPERTS["ple"] = {"n_shared_experts": 1, "n_specific_experts": 1}


def _features(data=DATA):
    """Training features with missing values in a text and a number column."""
    X = data.X.copy()
    X["cat_1"] = X["cat_1"].astype(object)
    X.loc[::5, "cat_1"] = None
    X.loc[::7, "num_0"] = np.nan
    X["flag"] = (X["position"] % 2 == 0).to_numpy()  # a boolean category
    return X


def _held_out(X):
    """Rows with unseen categories and missing values nowhere seen in fit."""
    X = X.copy()
    X["cat_0"] = X["cat_0"].astype(object)
    X.loc[::3, "cat_0"] = "never_seen"
    X.loc[1::3, "num_1"] = np.nan
    X.loc[2::3, "cat_2"] = np.nan
    return X


def _serve(model, feed):
    session = ort.InferenceSession(model.SerializeToString())
    return session.run(["probabilities"], feed)[0]


def _with_history(X, seed=0):
    """X and a history of up to 6 earlier ``cat_0`` values per row (some rows
    without one)."""
    rng = np.random.default_rng(seed)
    values = X["cat_0"].astype(object).to_numpy()
    hist = [list(rng.choice(values, rng.integers(0, 7))) for _ in range(len(X))]
    return X.assign(hist=pd.Series(hist, index=X.index, dtype=object))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_onnx_matches_predict_proba_for_every_backbone(backbone, tmp_path):
    """Every column kind at once: text, integer and boolean categories,
    numbers with missing values, and a history pooled by target attention."""
    X = _with_history(_features())
    params = {**SIZES, **EXPERTS.get(backbone, {}), "attention_dims": (4,)}
    est = MTLClassifier(
        backbone=backbone,
        backbone_params=params,
        sequence_features={"hist": "cat_0"},
        max_sequence_length=4,
        **SMALL,
    )
    est.fit(X, DATA.y)
    path = tmp_path / "model.onnx"
    to_onnx(est, path)
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == list(X.columns)
    new = _held_out(X)
    for rows in (slice(None), slice(0, 1), slice(5, 42)):  # dynamic batch size
        part = new.iloc[rows]
        served = session.run(["probabilities"], onnx_inputs(est, part))[0]
        assert served.shape == (len(part), 2) and served.dtype == np.float32
        np.testing.assert_allclose(served, est.predict_proba(part), rtol=0, atol=1e-5)


def test_onnx_of_rmtl_serves_the_refitted_actor():
    X = _features()
    fit = {"session_ids": DATA.session_ids, "timestamps": DATA.timestamps}
    est = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=SIZES,
        critic=SessionCritic(max_epochs=1),
        **SMALL,
    ).fit(X, DATA.y, **fit)
    new = _held_out(X)
    before = est.predict_proba(new)
    module = est.net_.module_
    served = _serve(to_onnx(est), onnx_inputs(est, new))
    np.testing.assert_allclose(served, before, rtol=0, atol=1e-5)
    # Exporting leaves the estimator as it was.
    assert est.net_.module_ is module
    assert all(p.requires_grad for p in module.parameters())
    np.testing.assert_array_equal(est.predict_proba(new), before)


@pytest.mark.parametrize("columns", [["num_0", "num_1"], ["cat_0", "cat_2"]])
def test_onnx_with_only_numbers_or_only_categories(columns):
    X = _features()[columns]
    est = MTLClassifier(backbone="sharedbottom", backbone_params=SIZES, **SMALL)
    est.fit(X, DATA.y)
    new = _held_out(_features())[columns]
    served = _serve(to_onnx(est), onnx_inputs(est, new))
    np.testing.assert_allclose(served, est.predict_proba(new), rtol=0, atol=1e-5)


def test_integer_ids_are_int64_inputs_and_the_metadata_describes_the_encoding():
    X = _features()
    X["item"] = np.arange(len(X)) % 9 * 10**12  # large integer ids stay exact
    est = MTLClassifier(
        backbone="sharedbottom",
        backbone_params=SIZES,
        categorical_features=["cat_0", "cat_1", "cat_2", "flag", "item"],
        **SMALL,
    ).fit(X, DATA.y)
    model = to_onnx(est)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types["item"] == 7 and types["cat_0"] == 8 and types["num_0"] == 11
    assert types["flag"] == 9  # int64, string, double, bool
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["sklearn_rmtl.encoding"]) == describe_encoding(est)
    assert json.loads(meta["sklearn_rmtl.task_names"]) == ["click", "purchase"]
    new = _held_out(X)
    new.loc[::4, "item"] = 10**15 + 1  # unseen id
    served = _serve(model, onnx_inputs(est, new))
    np.testing.assert_allclose(served, est.predict_proba(new), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="'item' has missing values"):
        onnx_inputs(est, new.astype({"item": "Int64"}).assign(item=pd.NA))


def test_dates_as_categories_are_text_inputs():
    X = _features()
    days = pd.date_range("2024-01-01", periods=3).repeat(len(X) // 3 + 1)
    X["day"] = pd.Categorical(days[: len(X)])
    est = MTLClassifier(backbone="sharedbottom", backbone_params=SIZES, **SMALL)
    est.fit(X, DATA.y)
    model = to_onnx(est)
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.input}["day"] == 8
    new = _held_out(X)
    served = _serve(model, onnx_inputs(est, new))
    np.testing.assert_allclose(served, est.predict_proba(new), rtol=0, atol=1e-5)


def test_torch_export_with_its_encoding(tmp_path):
    import torch

    X = _features()
    est = MTLClassifier(
        backbone="mmoe", backbone_params={**SIZES, "n_experts": 2}, **SMALL
    )
    est.fit(X, DATA.y)
    path = tmp_path / "model.pt2"
    to_torch(est, path)
    extra = {"encoding.json": ""}
    program = torch.export.load(path, extra_files=extra)
    assert json.loads(extra["encoding.json"]) == describe_encoding(est)
    # The encoder's own integer path gives the network's inputs.
    parts = est.encoder_._transform_parts(X.iloc[:13])
    served = program.module()(
        torch.as_tensor(parts.codes), torch.as_tensor(parts.numbers)
    )
    np.testing.assert_allclose(
        served.numpy(), est.predict_proba(X.iloc[:13]), atol=1e-6
    )


def test_export_needs_a_fitted_estimator():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        to_onnx(MTLClassifier())


def test_onnx_inputs_from_polars_equal_those_from_pandas():
    pl = pytest.importorskip("polars")
    X = _features()
    est = MTLClassifier(backbone="sharedbottom", backbone_params=SIZES, **SMALL)
    est.fit(X, DATA.y)
    new = _held_out(X).astype({"cat_0": str, "cat_2": str})
    from_polars = onnx_inputs(est, pl.from_pandas(new))
    for name, values in onnx_inputs(est, new).items():
        np.testing.assert_array_equal(from_polars[name], values)


def test_a_model_fitted_on_an_array_exports_with_positional_inputs():
    X = np.random.default_rng(0).random((60, 3))
    y = (X[:, :2] > 0.5).astype(int)
    est = MTLClassifier(backbone="sharedbottom", backbone_params=SIZES, **SMALL)
    est.fit(X, y)
    model = to_onnx(est)
    assert [i.name for i in model.graph.input] == ["0", "1", "2"]
    served = _serve(model, onnx_inputs(est, X))
    np.testing.assert_allclose(served, est.predict_proba(X), rtol=0, atol=1e-5)


def _fit_small(X, **params):
    est = MTLClassifier(backbone="sharedbottom", backbone_params=SIZES, **SMALL)
    return est.set_params(**params).fit(X, DATA.y)


def test_a_category_missing_in_every_fitted_row_takes_any_value():
    X = _features()
    X["cat_1"] = pd.Series([None] * len(X), dtype=object)
    est = _fit_small(X, categorical_features=["cat_0", "cat_1", "cat_2"])
    new = _held_out(X)
    new["cat_1"] = ["seen_now", 3.5, None] * (len(new) // 3) + [None] * (len(new) % 3)
    served = _serve(to_onnx(est), onnx_inputs(est, new))
    np.testing.assert_allclose(served, est.predict_proba(new), rtol=0, atol=1e-5)
    column = next(c for c in describe_encoding(est)["columns"] if c["name"] == "cat_1")
    assert (column["type"], column["values"]) == ("string", [])


@pytest.mark.parametrize("empty_known", [False, True])
def test_an_empty_string_is_unseen_as_in_predict_proba(empty_known):
    X = _features()  # cat_1 has missing values
    if empty_known:
        X.loc[1::4, "cat_1"] = ""
    est = _fit_small(X)
    new = _held_out(X)
    new.loc[::2, "cat_1"] = ""  # present, empty: unseen unless fitted on it
    served = _serve(to_onnx(est), onnx_inputs(est, new))
    np.testing.assert_allclose(served, est.predict_proba(new), rtol=0, atol=1e-5)
    column = next(c for c in describe_encoding(est)["columns"] if c["name"] == "cat_1")
    assert column["missing_value"] == ("<missing>" if empty_known else "")


def test_a_lower_precision_model_warns_and_stays_within_its_tolerance(tmp_path):
    from sklearn_rmtl.export import PRECISION_TOLERANCE

    X = _features()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bfloat16 may be emulated on this CPU
        est = _fit_small(X, precision="bfloat16")
    with pytest.warns(UserWarning, match="differ by up to about 0.005"):
        model = to_onnx(est)
    with pytest.warns(UserWarning, match="computes in float32"):
        to_torch(est, tmp_path / "model.pt2")
    served = _serve(model, onnx_inputs(est, X))
    gap = np.abs(served - est.predict_proba(X)).max()
    assert gap <= PRECISION_TOLERANCE["bfloat16"]


@pytest.mark.parametrize(
    "names",
    # One export per prefix: a column starting with "rmtl/" changes it (and
    # "rmtl/x_cat" is an internal tensor's name under the default prefix).
    [("x_cat", "x_num", "zero", "missing_code", "c0/mean"), ("rmtl/x_cat",)],
    ids="-".join,
)
def test_a_column_named_like_an_internal_tensor_exports(names):
    """num_0 renamed, and a noisy copy of it under each further name."""
    X = _features().rename(columns={"num_0": names[0]})
    rng = np.random.default_rng(0)
    for name in names[1:]:
        X[name] = X[names[0]] + rng.normal(size=len(X))
    est = _fit_small(X)
    served = _serve(to_onnx(est), onnx_inputs(est, X))
    np.testing.assert_allclose(served, est.predict_proba(X), rtol=0, atol=1e-5)


def test_a_column_named_like_the_output_is_refused():
    est = _fit_small(_features().rename(columns={"num_0": "probabilities"}))
    with pytest.raises(ValueError, match="name of the ONNX graph's output"):
        to_onnx(est)


def test_onnx_inputs_of_a_frame_with_integer_column_labels():
    X = _features()
    X.columns = range(X.shape[1])  # not names: fitted without feature_names_in_
    est = _fit_small(X)
    served = _serve(to_onnx(est), onnx_inputs(est, X))
    np.testing.assert_allclose(served, est.predict_proba(X), rtol=0, atol=1e-5)
