"""The safe file format: round trips, tampered files, versions, sklearn use."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_proba
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch.callbacks import EpochTimer

import sklearn_rmtl
from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._critic import FORMER_RMTL_PARAMETERS
from sklearn_rmtl.persistence import (
    InconsistentVersionWarning,
    InvalidFileError,
    load,
    save,
    skops_trusted_types,
)

SMALL = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
EXPERTS = {
    "mmoe": {"n_experts": 2},
    "omoe": {"n_experts": 2},
    "ple": {"n_shared_experts": 1, "n_specific_experts": 1},
}
FAST = {"max_epochs": 2, "random_state": 0, "min_frequency": 4}
CRITIC = {"hidden_dims": (8,), "max_epochs": 2}
RMTL_FAST = {**FAST, "critic": SessionCritic(**CRITIC)}


def small(backbone: str) -> dict:
    return {**SMALL, **EXPERTS.get(backbone, {})}


def make_data(n: int = 160, seed: int = 0):
    """Category and object columns with missing and rare values, NaN numbers."""
    rng = np.random.default_rng(seed)
    item = rng.choice(list("abcdef"), n, p=[0.35, 0.3, 0.2, 0.1, 0.04, 0.01])
    item = pd.Categorical(item, categories=list("abcdefgh"))
    item[rng.random(n) < 0.05] = np.nan
    user = rng.choice(
        ["u1", "u2", "u3", "u4", "rare"], n, p=[0.3, 0.3, 0.2, 0.18, 0.02]
    )
    user = user.astype(object)
    user[rng.random(n) < 0.05] = None
    price = rng.normal(size=n)
    price[rng.random(n) < 0.1] = np.nan
    X = pd.DataFrame(
        {"item": item, "user": user, "price": price, "age": rng.uniform(18, 70, n)}
    )
    click = (rng.random(n) < 0.5).astype(int)
    buy = click & (rng.random(n) < 0.5)
    Y = pd.DataFrame({"click": click, "buy": buy.astype(int)})
    sessions = np.repeat(np.arange(n // 8), 8)
    return X, Y, sessions


X, Y, SESSIONS = make_data()
# Unseen categories, missing values of every kind, NaN numbers.
X_NEW = pd.DataFrame(
    {
        "item": pd.Categorical(["a", "h", None, "f"], categories=list("abcdefgh")),
        "user": np.array(["zzz", None, "rare", "u1"], dtype=object),
        "price": [np.nan, 0.5, 1.0, np.nan],
        "age": [20.0, 30.0, 40.0, 50.0],
    }
)


def file_size(path, name, record_property) -> int:
    size = os.path.getsize(path)
    print(f"\n[safe format] {name}: {size} bytes ({size / 1024:.1f} KiB)")
    record_property(f"file_size_{name}", size)
    return size


def plain_params(est):
    """``get_params()`` with nested settings by name, not by object identity."""
    return {
        k: v.get_params() if isinstance(v, SessionCritic) else v
        for k, v in est.get_params().items()
        if not isinstance(v, MTLClassifier)
    }


def assert_same_critics(loaded, original):
    """Two fitted SessionCritics hold the same settings, tasks and weights."""
    assert loaded.get_params() == original.get_params()
    np.testing.assert_array_equal(loaded.task_names_, original.task_names_)
    assert loaded.history_ == original.history_
    assert not loaded.module_.training
    assert next(loaded.module_.parameters()).device.type == "cpu"
    for (k1, v1), (k2, v2) in zip(
        loaded.module_.state_dict().items(),
        original.module_.state_dict().items(),
        strict=True,
    ):
        assert k1 == k2
        torch.testing.assert_close(v1, v2, rtol=0, atol=0)


def assert_same_estimator(loaded, original, X_check):
    assert type(loaded) is type(original)
    assert (
        loaded.get_params(deep=False).keys() == original.get_params(deep=False).keys()
    )
    np.testing.assert_array_equal(
        loaded.predict_proba(X_check), original.predict_proba(X_check)
    )
    np.testing.assert_array_equal(loaded.predict(X_check), original.predict(X_check))
    # Every public fitted attribute survives the round trip.
    fitted = {k for k in vars(original) if k.endswith("_") and not k.startswith("_")}
    assert fitted <= set(vars(loaded)), fitted - set(vars(loaded))
    for attr in ("classes_", "task_names_", "feature_names_in_"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(original, attr))
        assert getattr(loaded, attr).dtype == getattr(original, attr).dtype
    for attr in ("n_tasks_", "n_features_in_", "device_", "n_iter_"):
        assert getattr(loaded, attr) == getattr(original, attr)
    assert loaded.backbone_params_ == original.backbone_params_
    assert loaded.history_ == original.history_
    # The rebuilt encoder codes unseen and missing values like the original.
    np.testing.assert_array_equal(
        loaded.encoder_.transform(X_check), original.encoder_.transform(X_check)
    )
    for name in ("categorical_features_", "numerical_features_", "cardinalities_"):
        np.testing.assert_array_equal(
            getattr(loaded.encoder_, name), getattr(original.encoder_, name)
        )
    # The same skorch net, trimmed for prediction.
    net, ref = loaded.net_, original.net_
    assert type(net) is type(ref)
    for key in ("module__cardinalities", "module__backbone_params", "lr"):
        assert getattr(net, key) == getattr(ref, key)
    assert net.predict_nonlinearity is None and net._trimmed_for_prediction
    for (k1, v1), (k2, v2) in zip(
        net.module_.state_dict().items(),
        ref.module_.state_dict().items(),
        strict=True,
    ):
        assert k1 == k2
        torch.testing.assert_close(v1, v2, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["ple", "esmm", "mmoe", "sharedbottom", "aitm"])
def test_mtl_round_trip(backbone, tmp_path, record_property):
    clf = MTLClassifier(backbone=backbone, backbone_params=small(backbone), **FAST)
    clf.fit(X, Y)
    path = tmp_path / "mtl.rmtl"
    save(clf, path)
    file_size(path, f"MTLClassifier_{backbone}", record_property)
    loaded = load(path)
    assert_same_estimator(loaded, clf, pd.concat([X, X_NEW], ignore_index=True))
    assert loaded.get_params() == clf.get_params()
    # Unseen and missing categories get the reserved codes 1 and 0.
    codes = loaded.encoder_.transform(X_NEW)[:, :2]
    np.testing.assert_array_equal(codes[:, 0] <= 1, [False, True, True, False])
    assert codes[0, 1] == 1 and codes[1, 1] == 0


@pytest.mark.parametrize(
    "options",
    [
        {"min_frequency": None},
        {"min_frequency": 0.05, "max_categories": 3},
        {"categorical_features": ["item", "user", "bucket"]},
        {"categorical_features": None},
    ],
)
def test_encoder_options_round_trip(options, tmp_path):
    """Vocabularies of ints, strings and NaN; with and without rare merging."""
    Xb = X.assign(bucket=np.arange(len(X)) % 7)
    Xb_new = X_NEW.assign(bucket=[0, 6, 9, -1])
    if options.get("categorical_features", "") is None:
        Xb, Xb_new = (
            Xb.drop(columns=["item", "user"]),
            Xb_new.drop(columns=["item", "user"]),
        )
    params = {**FAST, **options}
    clf = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, **params)
    clf.fit(Xb, Y)
    save(clf, tmp_path / "enc.zip")
    loaded = load(tmp_path / "enc.zip")
    assert_same_estimator(loaded, clf, pd.concat([Xb, Xb_new], ignore_index=True))
    assert loaded.get_params() == clf.get_params()


@pytest.fixture(scope="module")
def rmtl():
    clf = RMTLClassifier(backbone="ple", backbone_params=small("ple"), **RMTL_FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return clf.fit(X, Y, session_ids=SESSIONS)


@pytest.fixture(scope="module")
def rmtl_file(rmtl, tmp_path_factory):
    path = tmp_path_factory.mktemp("rmtl") / "rmtl.zip"
    save(rmtl, path)
    return path


def test_rmtl_round_trip(rmtl, rmtl_file, record_property):
    size = file_size(rmtl_file, "RMTLClassifier_ple", record_property)
    pickled = len(pickle.dumps(rmtl))
    print(f"[safe format] RMTLClassifier_ple as a pickle: {pickled} bytes")
    record_property("pickle_size_RMTLClassifier_ple", pickled)
    assert size < 5 * pickled
    loaded = load(rmtl_file)
    X_all = pd.concat([X, X_NEW], ignore_index=True)
    assert_same_estimator(loaded, rmtl, X_all)
    assert plain_params(loaded) == plain_params(rmtl)
    assert loaded.get_params()["critic__hidden_dims"] == (8,)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), rmtl.loss_weights(X, Y))
    # The critic settings stay unfitted; their fitted clone is critic_.
    assert not loaded.critic.__sklearn_is_fitted__()
    assert loaded.critic_ is not loaded.critic
    # The critics keep their encoder, shared with the actor as before.
    assert loaded.critic_.encoder_ is loaded.encoder_
    assert_same_critics(loaded.critic_, rmtl.critic_)
    assert loaded.net_.weighting == "rmtl" and loaded.net_.critic is None


def test_rmtl_with_fitted_backbone_and_given_critic(rmtl, tmp_path):
    """Library objects as parameters are stored with shared identity kept."""
    actor = MTLClassifier(backbone="esmm", backbone_params=SMALL, **FAST).fit(X, Y)
    clf = RMTLClassifier(actor=actor, **{**RMTL_FAST, "critic": rmtl.critic_})
    clf.fit(X, Y, session_ids=SESSIONS)
    path = tmp_path / "transfer.zip"
    save(clf, path)
    loaded = load(path)
    assert_same_estimator(loaded, clf, X_NEW)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), clf.loss_weights(X, Y))
    assert loaded.critic is loaded.critic_
    assert loaded.encoder_ is loaded.actor.encoder_
    assert_same_estimator(loaded.actor, actor, X_NEW)
    # The pretrained actor's net and the refit net are distinct, as in fit.
    assert loaded.net_ is not loaded.actor.net_


def test_rmtl_with_unfitted_backbone(tmp_path):
    actor = MTLClassifier(backbone="mmoe", backbone_params=small("mmoe"), **FAST)
    clf = RMTLClassifier(actor=actor, **RMTL_FAST)
    clf.fit(X, Y, session_ids=SESSIONS)
    save(clf, tmp_path / "unfitted_actor.zip")
    loaded = load(tmp_path / "unfitted_actor.zip")
    assert_same_estimator(loaded, clf, X_NEW)
    assert type(loaded.actor) is MTLClassifier
    assert not loaded.actor.__sklearn_is_fitted__()
    assert loaded.actor.get_params() == actor.get_params()


def test_rmtl_constant_weighting_has_no_critic(tmp_path):
    clf = RMTLClassifier(
        backbone="sharedbottom", backbone_params=SMALL, weighting="constant", **FAST
    ).fit(X, Y, session_ids=SESSIONS)
    path = tmp_path / "constant.zip"
    save(clf, path)
    loaded = load(path)
    assert loaded.critic_ is None
    assert_same_estimator(loaded, clf, X_NEW)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), np.ones((len(X), 2)))


def test_numpy_input_and_file_objects():
    """Arrays without feature names, and in-memory files."""
    rng = np.random.default_rng(1)
    Xn, Yn = rng.normal(size=(60, 3)), rng.integers(0, 2, size=(60, 1))
    clf = MTLClassifier(backbone="singletask", backbone_params=SMALL, **FAST)
    clf.fit(Xn, Yn)
    buffer = io.BytesIO()
    save(clf, buffer)
    loaded = load(io.BytesIO(buffer.getvalue()))
    assert not hasattr(loaded, "feature_names_in_")
    assert loaded.encoder_.categories_ == []  # no categorical column
    np.testing.assert_array_equal(loaded.predict_proba(Xn), clf.predict_proba(Xn))


def test_encoder_is_stored_as_vocabularies_and_statistics(rmtl, rmtl_file):
    """Formats 2 and later store plain state, no scikit-learn encoder internals."""
    with zipfile.ZipFile(rmtl_file) as zf:
        text = zf.read("manifest.json").decode()
    manifest = json.loads(text)
    assert manifest["format_version"] == 4
    assert "OrdinalEncoder" not in text and "StandardScaler" not in text
    state = manifest["estimator"]["fitted"]["encoder_"]["state"]
    assert [c["name"] for c in state["categorical"]] == ["item", "user"]
    user = state["categorical"][1]
    assert user["values"] == rmtl.encoder_.categories_[1].tolist()
    assert user["codes"] == rmtl.encoder_.category_codes_[1].tolist()
    price, age = state["numerical"]
    assert price["name"] == "price" and price["missing_indicator"]
    assert not age["missing_indicator"]
    assert price["mean"] == rmtl.encoder_.mean_[0]
    assert price["scale"] == rmtl.encoder_.scale_[0]
    # Format 4: a SessionCritic is its settings plus, fitted, its critics.
    params = manifest["estimator"]["params"]
    assert "gamma" not in params and "critic_max_epochs" not in params
    critic, trained = params["critic"], manifest["estimator"]["fitted"]["critic_"]
    assert critic["__type__"] == trained["__type__"] == "SessionCritic"
    assert critic["params"]["max_epochs"] == trained["params"]["max_epochs"] == 2
    assert critic["fitted"] is None
    assert set(trained["fitted"]) == {"encoder_", "module_", "task_names_", "history_"}
    assert trained["fitted"]["encoder_"] == {
        "__type__": "ref",
        "path": "estimator/encoder_",
    }


def test_save_is_deterministic(rmtl, rmtl_file, tmp_path):
    again = tmp_path / "again.zip"
    save(rmtl, again)
    assert again.read_bytes() == rmtl_file.read_bytes()


def test_load_in_fresh_process(rmtl, rmtl_file, tmp_path):
    data = tmp_path / "X.pkl"
    out = tmp_path / "proba.npy"
    pd.concat([X, X_NEW], ignore_index=True).to_pickle(data)
    code = textwrap.dedent(
        f"""
        import numpy as np, pandas as pd
        from sklearn_rmtl.persistence import load
        X = pd.read_pickle({str(data)!r})
        np.save({str(out)!r}, load({str(rmtl_file)!r}).predict_proba(X))
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    expected = rmtl.predict_proba(pd.concat([X, X_NEW], ignore_index=True))
    np.testing.assert_array_equal(np.load(out), expected)


def test_load_leaves_global_rng_alone(rmtl_file):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    load(rmtl_file)
    assert torch.equal(torch.get_rng_state(), state)


def test_loaded_estimator_works_in_sklearn(rmtl_file):
    loaded = load(rmtl_file, device="cpu")
    fresh = clone(loaded)
    assert not hasattr(fresh, "net_")
    assert plain_params(fresh) == plain_params(loaded)
    assert fresh.get_params()["backbone_params"]["bottom_dims"] == (8,)
    fresh.set_params(max_epochs=1, critic__max_epochs=1, refit_max_epochs=1)
    fresh.fit(X, Y, session_ids=SESSIONS)
    assert fresh.predict_proba(X_NEW).shape == (len(X_NEW), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_model_loads_on_cpu_and_gpu(tmp_path):
    clf = MTLClassifier(backbone="mmoe", backbone_params=small("mmoe"), **FAST)
    clf.set_params(device="cuda").fit(X, Y)
    path = tmp_path / "gpu.zip"
    save(clf, path)
    on_cpu = load(path)
    assert next(on_cpu.net_.module_.parameters()).device.type == "cpu"
    np.testing.assert_allclose(
        on_cpu.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6
    )
    on_gpu = load(path, device="cuda")
    assert next(on_gpu.net_.module_.parameters()).device.type == "cuda"
    np.testing.assert_array_equal(on_gpu.predict_proba(X), clf.predict_proba(X))


def test_model_saved_for_a_gpu_loads_and_refits_on_the_cpu(tmp_path):
    # A file as a GPU fit writes it (device parameter and device_ "cuda");
    # the weights themselves are device-free arrays in the file.
    actor = MTLClassifier(
        backbone="sharedbottom", backbone_params=small("sharedbottom"), **FAST
    )
    est = RMTLClassifier(
        actor=actor.fit(X, Y),
        critic=SessionCritic(hidden_dims=(8,), max_epochs=1),
        **FAST,
    ).fit(X, Y, session_ids=SESSIONS)
    est.set_params(device="cuda", actor__device="cuda:1")
    est.device_ = "cuda"
    save(est, tmp_path / "gpu.rmtl")
    loaded = load(tmp_path / "gpu.rmtl", device="cpu")
    assert loaded.device == "cpu" and loaded.actor.device == "cpu"
    assert next(loaded.net_.module_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    refit = loaded.set_params(max_epochs=1, refit_max_epochs=1).fit(
        X, Y, session_ids=SESSIONS
    )
    assert refit.device_ == "cpu"
    assert clone(loaded).fit(X, Y, session_ids=SESSIONS).device_ == "cpu"


# ---------------------------------------------------------------------------
# What save refuses
# ---------------------------------------------------------------------------


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(NotFittedError, match="stores fitted models only"):
        save(MTLClassifier(), tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.parametrize(
    "param, value",
    [("callbacks", [EpochTimer()]), ("random_state", np.random.RandomState(0))],
)
def test_save_rejects_non_plain_params(param, value, tmp_path):
    clf = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, **FAST)
    clf.fit(X, Y)
    clf.set_params(**{param: value})
    with pytest.raises(TypeError, match=rf"(?s)parameter {param}=.*plain values"):
        save(clf, tmp_path / "x.zip")
    clf.set_params(**{param: None})  # the documented fix; the fit is kept
    save(clf, tmp_path / "x.zip")
    assert load(tmp_path / "x.zip").get_params()[param] is None


def test_save_rejects_other_classes(tmp_path):
    class Custom(MTLClassifier):
        pass

    clf = Custom(backbone="sharedbottom", backbone_params=SMALL, **FAST).fit(X, Y)
    with pytest.raises(TypeError, match="joblib"):
        save(clf, tmp_path / "x.zip")
    with pytest.raises(TypeError, match="save stores"):
        save(object(), tmp_path / "x.zip")


# ---------------------------------------------------------------------------
# Tampered and foreign files
# ---------------------------------------------------------------------------


def rewrite(src, dst, *, manifest=None, drop=(), replace=None):
    """Copy a zip, editing the manifest and replacing or dropping members."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in drop:
                continue
            data = zin.read(name)
            if name == "manifest.json" and manifest is not None:
                content = json.loads(data)
                manifest(content)
                data = json.dumps(content).encode()
            zout.writestr(name, replace.get(name, data))
        for name, data in replace.items():
            if name not in zin.namelist():
                zout.writestr(name, data)
    return dst


def npy_bytes(arr, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=allow_pickle)
    return buffer.getvalue()


WEIGHT = "estimator/net_/module_/embedding.embedding.weight"


def edit_class(m):
    m["estimator"]["class"] = "os.system"


def edit_format(m):
    m["format"] = "skops"


def edit_format_version(m):
    m["format_version"] = 99


def edit_param(m):
    m["estimator"]["params"]["__reduce__"] = "os.system"


def edit_attribute(m):
    m["estimator"]["fitted"]["__class__"] = "os.system"


def edit_net_class(m):
    m["estimator"]["fitted"]["net_"]["class"] = "subprocess.Popen"


def edit_backbone(m):
    m["estimator"]["fitted"]["net_"]["kwargs"]["module__backbone"] = "os"


def edit_tag(m):
    m["estimator"]["fitted"]["classes_"] = {"__type__": "pickle", "data": "gASV"}


def edit_cardinalities(m):
    m["estimator"]["fitted"]["net_"]["kwargs"]["module__cardinalities"][0] += 1


def edit_declared_shape(m):
    m["arrays"][WEIGHT]["shape"][0] += 1


def edit_ref(m):
    critic = m["estimator"]["fitted"]["critic_"]["fitted"]
    critic["encoder_"] = {"__type__": "ref", "path": "estimator/net_"}


def edit_encoder_code(m):
    state = m["estimator"]["fitted"]["encoder_"]["state"]
    state["categorical"][0]["codes"][0] = 0  # the reserved missing code


def edit_encoder_values(m):
    values = m["estimator"]["fitted"]["encoder_"]["state"]["categorical"][1]["values"]
    values[1] = values[0]


def edit_encoder_position(m):
    state = m["estimator"]["fitted"]["encoder_"]["state"]
    state["numerical"][0]["position"] = 99


@pytest.mark.parametrize(
    "edit, match",
    [
        (edit_class, "'os.system' is not one of"),
        (edit_format, "format is 'skops'"),
        (edit_format_version, "version 99 of the sklearn_rmtl safe format"),
        (edit_param, r"no parameters \['__reduce__'\]"),
        (edit_attribute, r"unknown attributes \['__class__'\]"),
        (edit_net_class, "'subprocess.Popen' is not allowed"),
        (edit_backbone, "unknown backbone 'os'"),
        (edit_tag, "expected a scalar"),
        (edit_cardinalities, "do not match the rebuilt network|does not fit"),
        (edit_declared_shape, "the manifest declares|wrong size"),
        (edit_ref, "which is no FeatureEncoder"),
        (edit_encoder_code, "invalid encoder state: categorical column 0"),
        (edit_encoder_values, "values must be distinct"),
        (edit_encoder_position, "positions"),
    ],
)
def test_tampered_manifest_is_rejected(edit, match, rmtl_file, tmp_path):
    bad = rewrite(rmtl_file, tmp_path / "bad.zip", manifest=edit)
    with pytest.raises(InvalidFileError, match=match):
        load(bad)


def test_non_json_constants_are_rejected(rmtl_file, tmp_path):
    with zipfile.ZipFile(rmtl_file) as zf:
        text = zf.read("manifest.json").decode()
    text = text.replace('"lr": 0.001', '"lr": NaN', 1)
    bad = rewrite(
        rmtl_file, tmp_path / "nan.zip", replace={"manifest.json": text.encode()}
    )
    with pytest.raises(InvalidFileError, match="NaN is not valid JSON"):
        load(bad)


def test_missing_and_extra_arrays_are_rejected(rmtl_file, tmp_path):
    bad = rewrite(rmtl_file, tmp_path / "missing.zip", drop={WEIGHT + ".npy"})
    with pytest.raises(InvalidFileError, match=r"missing: \['estimator/net_"):
        load(bad)
    bad = rewrite(
        rmtl_file, tmp_path / "extra.zip", replace={"evil.npy": npy_bytes(np.ones(3))}
    )
    with pytest.raises(InvalidFileError, match=r"extra: \['evil.npy'\]"):
        load(bad)

    def declare_unused(m):
        m["arrays"]["unused"] = {"dtype": "<f8", "shape": [3]}

    bad = rewrite(
        rmtl_file,
        tmp_path / "unused.zip",
        manifest=declare_unused,
        replace={"unused.npy": npy_bytes(np.ones(3))},
    )
    with pytest.raises(InvalidFileError, match=r"\['unused'\] are not used"):
        load(bad)


def test_changed_shapes_and_dtypes_are_rejected(rmtl, rmtl_file, tmp_path):
    weight = rmtl.net_.module_.embedding.embedding.weight.detach().numpy()
    grown = np.vstack([weight, weight[:1]])

    def declare(shape, dtype="<f4"):
        def edit(m):
            m["arrays"][WEIGHT] = {"dtype": dtype, "shape": list(shape)}

        return edit

    # A consistent manifest and array that do not fit the rebuilt network.
    bad = rewrite(
        rmtl_file,
        tmp_path / "shape.zip",
        manifest=declare(grown.shape),
        replace={WEIGHT + ".npy": npy_bytes(grown)},
    )
    with pytest.raises(InvalidFileError, match="does not fit the rebuilt network"):
        load(bad)
    # An array whose .npy header disagrees with the manifest.
    bad = rewrite(
        rmtl_file,
        tmp_path / "header.zip",
        replace={WEIGHT + ".npy": npy_bytes(weight.T.copy())},
    )
    with pytest.raises(InvalidFileError, match="not the float32"):
        load(bad)
    bad = rewrite(
        rmtl_file,
        tmp_path / "dtype.zip",
        manifest=declare(weight.shape, "<f8"),
        replace={WEIGHT + ".npy": npy_bytes(weight.astype(np.float64))},
    )
    with pytest.raises(InvalidFileError, match="does not fit the rebuilt network"):
        load(bad)


def test_object_arrays_are_never_unpickled(rmtl_file, tmp_path, monkeypatch):
    monkeypatch.setenv("RMTL_BOOM", str(tmp_path))
    payload = np.array([Boom()], dtype=object)

    def declare_object(m):
        m["arrays"][WEIGHT] = {"dtype": "|O", "shape": [1]}

    bad = rewrite(
        rmtl_file,
        tmp_path / "object.zip",
        manifest=declare_object,
        replace={WEIGHT + ".npy": npy_bytes(payload, allow_pickle=True)},
    )
    with pytest.raises(InvalidFileError, match="unsupported dtype"):
        load(bad)
    bad = rewrite(
        rmtl_file,
        tmp_path / "object2.zip",
        replace={WEIGHT + ".npy": npy_bytes(payload, allow_pickle=True)},
    )
    with pytest.raises(InvalidFileError):
        load(bad)
    assert not Boom.marker().exists()


class Boom:
    """Unpickling this creates a marker file: proof that code ran."""

    @staticmethod
    def marker():
        from pathlib import Path

        return Path(os.environ.get("RMTL_BOOM", "/nonexistent")) / "boom"

    def __reduce__(self):
        return (open, (str(self.marker()), "w"))


def test_foreign_files_are_rejected(rmtl, tmp_path, monkeypatch):
    monkeypatch.setenv("RMTL_BOOM", str(tmp_path))
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InvalidFileError, match="not a zip archive"):
        load(random_bytes)
    # A pickle (joblib or plain) is refused before any byte is unpickled.
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(InvalidFileError, match="not a zip archive"):
        load(evil)
    assert not Boom.marker().exists()
    joblib.dump(rmtl, tmp_path / "model.joblib")
    with pytest.raises(InvalidFileError, match=r"joblib\.load"):
        load(tmp_path / "model.joblib")
    # A zip that is not ours.
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("data.pkl", pickle.dumps(Boom()))
    with pytest.raises(InvalidFileError, match=r"has no manifest\.json"):
        load(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "nojson.zip", "w") as zf:
        zf.writestr("manifest.json", b"\x80\x04not json")
    with pytest.raises(InvalidFileError, match="not valid JSON"):
        load(tmp_path / "nojson.zip")
    assert not Boom.marker().exists()
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "does-not-exist.zip")


# ---------------------------------------------------------------------------
# Versions and options
# ---------------------------------------------------------------------------


def test_other_version_warns(rmtl, tmp_path, monkeypatch):
    monkeypatch.setattr(sklearn_rmtl._version, "__version__", "0.0.1")
    path = tmp_path / "old.zip"
    save(rmtl, path)
    monkeypatch.undo()
    with pytest.warns(InconsistentVersionWarning, match="sklearn_rmtl 0.0.1") as rec:
        loaded = load(path)
    warning = rec[0].message
    assert warning.original_version == "0.0.1"
    assert warning.current_version == sklearn_rmtl.__version__
    assert sklearn_rmtl.__version__ in str(warning)
    assert issubclass(InconsistentVersionWarning, UserWarning)
    np.testing.assert_array_equal(loaded.predict_proba(X), rmtl.predict_proba(X))


def test_same_version_does_not_warn(rmtl_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(rmtl_file)


def test_invalid_device(rmtl_file):
    with pytest.raises(ValueError, match="device"):
        load(rmtl_file, device="not-a-device")


def test_docstrings():
    validate = pytest.importorskip("numpydoc.validate").validate
    from sklearn_rmtl import persistence

    checked = {"GL08", "PR01", "PR02", "PR03", "PR07", "RT01", "SS01", "SS03", "SS05"}
    for name in persistence.__all__:
        result = validate(f"sklearn_rmtl.persistence.{name}")
        errors = [(c, m) for c, m in result["errors"] if c in checked]
        assert not errors, f"{name}: {errors}"


# ---------------------------------------------------------------------------
# Files written by earlier releases
# ---------------------------------------------------------------------------

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize(
    "name", ["mtl_mmoe", "mtl_max_categories", "rmtl_ple", "mtl_numpy"]
)
def test_format_version_1_files_load(name):
    """Files saved by format version 1 load and predict as when they were saved.

    Written by sklearn_rmtl 0.1 (see ``tests/data/README.md``); the expected
    probabilities were recorded at save time.
    """
    expected = np.load(os.path.join(DATA, "v1_expected.npz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InconsistentVersionWarning)
        loaded = load(os.path.join(DATA, f"v1_{name}.rmtl"))
    X_check = (
        expected["mtl_numpy_X"]
        if name == "mtl_numpy"
        else pd.concat([X, X_NEW], ignore_index=True)
    )
    assert_same_proba(loaded.predict_proba(X_check), expected[name])
    # They stored the network as backbone_, its former name.
    assert "net_" in vars(loaded) and not hasattr(loaded, "backbone_")
    if name == "rmtl_ple":
        # Saved with critic_hidden_dims=(8,), critic_max_epochs=2: these are
        # now the critic's settings, and those of the critics it trained.
        settings = SessionCritic(hidden_dims=(8,), max_epochs=2).get_params()
        assert loaded.critic.get_params() == settings
        assert not loaded.critic.__sklearn_is_fitted__()
        assert loaded.critic_.get_params() == settings
        assert loaded.critic_.encoder_ is loaded.encoder_
        assert len(loaded.critic_.history_) == 2
        # float32 weights of about 4: rounding, as in assert_same_proba.
        np.testing.assert_allclose(
            loaded.loss_weights(X, Y), expected["rmtl_ple_loss_weights"], rtol=1e-6
        )


def test_version_1_files_are_checked(tmp_path):
    src = os.path.join(DATA, "v1_mtl_mmoe.rmtl")

    def edit_cardinalities(m):
        encoder = m["estimator"]["fitted"]["encoder_"]["fitted"]
        encoder["cardinalities_"] = {"__type__": "tuple", "items": [1]}

    def edit_scaler(m):
        m["estimator"]["fitted"]["encoder_"]["fitted"]["scaler_"] = None

    for edit, match in [
        (edit_cardinalities, "cardinalities_: expected an integer array"),
        (edit_scaler, "numerical columns without scaler_"),
        (edit_attribute, r"unknown attributes \['__class__'\]"),
    ]:
        bad = rewrite(src, tmp_path / "bad.zip", manifest=edit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InconsistentVersionWarning)
            with pytest.raises(InvalidFileError, match=match):
                load(bad)


#: The default critic settings as a manifest holds them.
FORMAT_3_DEFAULTS = {
    **SessionCritic().get_params(),
    "hidden_dims": {"__type__": "tuple", "items": [512, 256]},
}


def _critic_as_format_3(node):
    """A SessionCritic node as format 3 wrote it: fitted critics, no settings."""
    if node is None or node.get("__type__") == "ref":
        return node
    fitted = {k.removesuffix("_"): v for k, v in node["fitted"].items()}
    return {"__type__": "SessionCritic", **fitted}


def as_format_3(m):
    """A format-4 manifest as format 3 wrote it.

    RMTLClassifier held the critic settings as its own parameters (by their
    former names); a SessionCritic was fitted critics only, stored under
    names without "_"; without a given critic, ``critic`` was None.
    """
    m["format_version"] = 3
    est = m["estimator"]
    params, fitted = est["params"], est["fitted"]
    critic = params["critic"]
    given = critic is not None and critic["fitted"] is not None
    # The settings of the critics trained here; with given critics, which
    # they did not train, the defaults.
    trained = None if given else critic or fitted["critic_"]
    settings = FORMAT_3_DEFAULTS if trained is None else trained["params"]
    params.update({old: settings[new] for old, new in FORMER_RMTL_PARAMETERS.items()})
    params["critic"] = _critic_as_format_3(critic) if given else None
    fitted["critic_"] = _critic_as_format_3(fitted["critic_"])


def as_format_2(m):
    """A format-4 manifest as format 2 wrote it: as format 3, the network as
    backbone_."""
    as_format_3(m)
    m["format_version"] = 2
    fitted = m["estimator"]["fitted"]
    fitted["backbone_"] = fitted.pop("net_")


def test_format_version_2_files_load_their_backbone_as_net(rmtl, rmtl_file, tmp_path):
    loaded = load(rewrite(rmtl_file, tmp_path / "v2.zip", manifest=as_format_2))
    assert "net_" in vars(loaded) and not hasattr(loaded, "backbone_")
    assert loaded.net_.weighting == "rmtl"
    assert_same_estimator(loaded, rmtl, pd.concat([X, X_NEW], ignore_index=True))
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), rmtl.loss_weights(X, Y))

    # Each format version has one name for it; the other one is refused.
    def net_in_format_2(m):
        as_format_3(m)
        m["format_version"] = 2

    def backbone_in_format_3(m):
        as_format_2(m)
        m["format_version"] = 3

    for edit, match in [
        (net_in_format_2, r"unknown attributes \['net_'\], missing \['backbone_'\]"),
        (
            backbone_in_format_3,
            r"unknown attributes \['backbone_'\], missing \['net_'\]",
        ),
    ]:
        with pytest.raises(InvalidFileError, match=match):
            load(rewrite(rmtl_file, tmp_path / "bad.zip", manifest=edit))


def test_format_version_3_files_load_their_critic_settings_as_critic(
    rmtl, rmtl_file, tmp_path
):
    """Format 3 held the critic settings as RMTLClassifier parameters."""
    loaded = load(rewrite(rmtl_file, tmp_path / "v3.zip", manifest=as_format_3))
    assert_same_estimator(loaded, rmtl, pd.concat([X, X_NEW], ignore_index=True))
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), rmtl.loss_weights(X, Y))
    assert plain_params(loaded) == plain_params(rmtl)
    assert not loaded.critic.__sklearn_is_fitted__()
    assert loaded.critic_.encoder_ is loaded.encoder_
    assert_same_critics(loaded.critic_, rmtl.critic_)
    # Saved again, it is a format-4 file of the same estimator.
    save(loaded, tmp_path / "v4.zip")
    again = load(tmp_path / "v4.zip")
    assert plain_params(again) == plain_params(rmtl)
    assert_same_critics(again.critic_, rmtl.critic_)

    # The default settings are critic=None, as the estimator had them.
    def with_defaults(m):
        as_format_3(m)
        params = m["estimator"]["params"]
        for old, new in FORMER_RMTL_PARAMETERS.items():
            params[old] = FORMAT_3_DEFAULTS[new]

    loaded = load(rewrite(rmtl_file, tmp_path / "v3d.zip", manifest=with_defaults))
    assert loaded.critic is None
    assert loaded.critic_.get_params() == SessionCritic().get_params()
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), rmtl.loss_weights(X, Y))

    # Each format version has one layout; the other one is refused.
    def critic_in_format_3(m):
        m["format_version"] = 3

    def settings_in_format_4(m):
        as_format_3(m)
        m["format_version"] = 4

    for edit, match in [
        (critic_in_format_3, r"params/critic: expected an object with keys"),
        (settings_in_format_4, r"RMTLClassifier has no parameters \['action_noise'"),
    ]:
        with pytest.raises(InvalidFileError, match=match):
            load(rewrite(rmtl_file, tmp_path / "bad.zip", manifest=edit))


def test_format_version_3_files_keep_a_given_critic(rmtl, tmp_path):
    """A transferred critic of format 3 loads as the fitted critic it was."""
    actor = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, **FAST)
    clf = RMTLClassifier(actor=actor.fit(X, Y), **{**FAST, "critic": rmtl.critic_})
    clf.fit(X, Y, session_ids=SESSIONS)
    save(clf, tmp_path / "v4.zip")
    loaded = load(
        rewrite(tmp_path / "v4.zip", tmp_path / "v3.zip", manifest=as_format_3)
    )
    assert loaded.critic is loaded.critic_
    assert loaded.critic_.encoder_ is not loaded.encoder_  # the critic's own
    assert_same_estimator(loaded, clf, X_NEW)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), clf.loss_weights(X, Y))
    np.testing.assert_array_equal(loaded.critic_.task_names_, rmtl.critic_.task_names_)
    # Format 3 did not store a given critic's settings: the defaults.
    assert loaded.critic_.get_params() == SessionCritic().get_params()


def test_pickles_with_critic_settings_load_them_into_critic(rmtl, monkeypatch):
    """Pickles of the former layout: settings in RMTLClassifier, bare critics."""
    rmtl_getstate = RMTLClassifier.__getstate__
    critic_getstate = SessionCritic.__getstate__

    def critic_before(self):  # fitted critics only, names without "_"
        state = critic_getstate(self)
        for key in self.get_params():
            del state[key]
        return {k.removesuffix("_"): v for k, v in state.items()}

    def rmtl_before(self):
        state = dict(rmtl_getstate(self))
        settings = (self.critic or SessionCritic()).get_params()
        state.update({old: settings[n] for old, n in FORMER_RMTL_PARAMETERS.items()})
        state["critic"] = None
        return state

    with monkeypatch.context() as patch:
        patch.setattr(RMTLClassifier, "__getstate__", rmtl_before)
        patch.setattr(SessionCritic, "__getstate__", critic_before)
        data = pickle.dumps(rmtl)
        assert "critic_max_epochs" in rmtl.__getstate__()
    loaded = pickle.loads(data)
    assert plain_params(loaded) == plain_params(rmtl)
    assert not loaded.critic.__sklearn_is_fitted__()
    assert not hasattr(loaded, "critic_max_epochs")
    assert_same_critics(loaded.critic_, rmtl.critic_)
    assert_same_estimator(loaded, rmtl, X_NEW)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), rmtl.loss_weights(X, Y))


def test_pickles_with_backbone_load_it_as_net(rmtl, monkeypatch):
    getstate = MTLClassifier.__getstate__

    def getstate_before_net(self):  # as pickles held the network before net_
        state = dict(getstate(self))
        state["backbone_"] = state.pop("net_")
        return state

    mtl = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, **FAST)
    fitted = [mtl.fit(X, Y), rmtl]
    with monkeypatch.context() as patch:
        patch.setattr(MTLClassifier, "__getstate__", getstate_before_net)
        assert "backbone_" in mtl.__getstate__()
        pickles = [pickle.dumps(est) for est in fitted]
    for est, data in zip(fitted, pickles, strict=True):
        assert "net_" in vars(est) and "backbone_" not in vars(est)
        loaded = pickle.loads(data)
        assert type(loaded) is type(est) and loaded.__sklearn_is_fitted__()
        assert "net_" in vars(loaded) and not hasattr(loaded, "backbone_")
        assert_same_estimator(loaded, est, pd.concat([X, X_NEW], ignore_index=True))


def test_stored_attributes_are_the_documented_ones():
    """The schema's list of fitted attributes follows the estimators' docs."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    from sklearn_rmtl._schema import _FITTED, ESTIMATORS

    for name, cls in {**ESTIMATORS, "SessionCritic": SessionCritic}.items():
        documented = [a.name for a in docscrape.ClassDoc(cls)["Attributes"]]
        assert sorted(_FITTED[name]) == sorted(documented), name


def test_memory_is_bounded_by_the_file(rmtl_file, tmp_path):
    """A few bytes of JSON cannot make load build a huge network or array."""

    def huge_network(m):
        kwargs = m["estimator"]["fitted"]["net_"]["kwargs"]
        kwargs["module__backbone_params"]["embedding_dim"] = 1 << 40

    bad = rewrite(rmtl_file, tmp_path / "huge_net.zip", manifest=huge_network)
    with pytest.raises(InvalidFileError, match="does not fit its weights"):
        load(bad)

    def huge_critic(m):
        critic = m["estimator"]["fitted"]["critic_"]["fitted"]
        critic["module_"]["kwargs"]["hidden_dims"] = {
            "__type__": "tuple",
            "items": [1 << 40],
        }

    bad = rewrite(rmtl_file, tmp_path / "huge_critic.zip", manifest=huge_critic)
    with pytest.raises(InvalidFileError, match="does not fit its weights"):
        load(bad)

    # A declared shape must be backed by a member of that size.
    def declare_big(m):
        m["arrays"][WEIGHT]["shape"] = [1 << 20, 1 << 10]

    bad = rewrite(rmtl_file, tmp_path / "claims.zip", manifest=declare_big)
    with pytest.raises(InvalidFileError, match="wrong size"):
        load(bad)
    # Arrays must be stored: a deflated member could expand without bound.
    with (
        zipfile.ZipFile(rmtl_file) as zin,
        zipfile.ZipFile(tmp_path / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as zout,
    ):
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
    with pytest.raises(InvalidFileError, match="is compressed"):
        load(tmp_path / "deflated.zip")


# ---------------------------------------------------------------------------
# Hostile or broken files: every one is refused with a bounded peak memory
# ---------------------------------------------------------------------------

# Peak memory a hostile file may cost ``load``; the reports were 512 MiB for
# a 0.27 MB zip and over 1 GiB for a 12 KB one.
MAX_PEAK_MIB = 50
# Loads each file in a fresh process (after one warm-up load, so that lazy
# imports do not count) and reports the peak RSS growth of each load.
_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, warnings
    from sklearn_rmtl.persistence import load

    warnings.simplefilter("ignore")

    def rss(key):
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith(key)) * 1024

    load(sys.argv[1])
    for path in sys.argv[2:]:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
        base = rss("VmRSS")
        try:
            load(path)
            error = None
        except Exception as exc:
            error = [type(exc).__name__, str(exc)]
        peak = (rss("VmHWM") - base) / 2**20
        print(json.dumps({"peak_mib": peak, "error": error}), flush=True)
    """
)


def load_measured(good, paths):
    """``[(peak MiB, (error type, message) or None)]`` of loading ``paths``."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("measuring peak memory needs Linux's /proc/self/clear_refs")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(good), *map(str, paths)],
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout
    return [
        (r["peak_mib"], r["error"] and tuple(r["error"]))
        for r in map(json.loads, out.splitlines())
    ]


def assert_refused_bounded(good, cases, record_property):
    """Each ``(path, match)`` is an InvalidFileError matching, under the limit."""
    results = load_measured(good, [path for path, _ in cases])
    for (path, match), (peak, error) in zip(cases, results, strict=True):
        record_property(f"peak_mib_{os.path.basename(path)}", peak)
        print(f"\n[hostile] {os.path.basename(path)}: peak {peak:.1f} MiB, {error}")
        assert error is not None, f"{path} loaded"
        assert error[0] == "InvalidFileError", (path, error)
        assert re.search(match, error[1]), (path, error)
        assert "re-save the model" in error[1] or "expected" in error[1], error
        assert peak < MAX_PEAK_MIB, (path, peak)


def patch_central_directory(path, name, **fields):
    """Overwrite fields of member ``name``'s central directory record."""
    offsets = {
        "flag_bits": (8, "<H"),
        "compress_type": (10, "<H"),
        "crc": (16, "<I"),
        "compress_size": (20, "<I"),
        "file_size": (24, "<I"),
    }
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while True:
        (length,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + length] == name.encode():
            break
        pos = data.index(b"PK\x01\x02", pos + 4)
    for field, value in fields.items():
        offset, fmt = offsets[field]
        struct.pack_into(fmt, data, pos + offset, value)
    path.write_bytes(bytes(data))
    return path


def copy_zip(src, dst, *, manifest_tail=b"", compress_type=zipfile.ZIP_DEFLATED):
    """Copy a safe file, padding the manifest with JSON whitespace."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                zout.writestr(name, data + manifest_tail, compress_type=compress_type)
            else:
                zout.writestr(name, data)
    return dst


def test_hostile_zips_are_refused_with_bounded_memory(
    rmtl_file, tmp_path, record_property
):
    """Lying sizes, bombs, encryption, other methods, bad CRCs, truncation."""
    array = "estimator/classes_.npy"
    with zipfile.ZipFile(rmtl_file) as zf:
        manifest_size = zf.getinfo("manifest.json").file_size
        array_size = zf.getinfo(array).file_size
    # 400 MiB of trailing whitespace (valid JSON) deflate to about 0.4 MB.
    bomb = b" " * (400 << 20)
    under = copy_zip(rmtl_file, tmp_path / "under.zip", manifest_tail=bomb)
    patch_central_directory(under, "manifest.json", file_size=manifest_size)
    over = copy_zip(rmtl_file, tmp_path / "over.zip")
    patch_central_directory(over, "manifest.json", file_size=manifest_size + 10)
    duplicated = copy_zip(rmtl_file, tmp_path / "duplicated.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: duplicate name
        with zipfile.ZipFile(duplicated, "a") as zf:
            zf.writestr("manifest.json", b"{}")
    patched = {
        "encrypted": ("manifest.json", {"flag_bits": 1}),
        "encrypted_array": (array, {"flag_bits": 1}),
        "method": ("manifest.json", {"compress_type": 99}),
        "bad_crc": ("manifest.json", {"crc": 12345}),
        "bad_crc_array": (array, {"crc": 12345}),
        "cut_short": ("manifest.json", {"compress_size": 1 << 30}),
        "lying_array": (array, {"file_size": array_size + 8}),
    }
    for name, (member, fields) in patched.items():
        path = copy_zip(rmtl_file, tmp_path / f"{name}.zip")
        patch_central_directory(path, member, **fields)
    cases = [
        (under, "manifest.json: member 'manifest.json' cannot be read .*CRC"),
        (over, "holds \\d+ bytes, not the \\d+ it declares: the file is truncated"),
        (copy_zip(rmtl_file, tmp_path / "bomb.zip", manifest_tail=bomb), "zip bomb"),
        (
            copy_zip(rmtl_file, tmp_path / "bzip2.zip", compress_type=12),
            "compressed with method 12",
        ),
        (tmp_path / "encrypted.zip", "manifest.json: the member is encrypted"),
        (tmp_path / "encrypted_array.zip", "classes_.npy: the member is encrypted"),
        (tmp_path / "method.zip", "compressed with method 99"),
        (tmp_path / "bad_crc.zip", "Bad CRC"),
        (tmp_path / "bad_crc_array.zip", "estimator/classes_: .*Bad CRC"),
        (tmp_path / "cut_short.zip", "truncated"),
        (tmp_path / "lying_array.zip", "classes_.npy: the stored member declares"),
        (duplicated, r"\['manifest.json'\] appear more than once"),
    ]
    assert os.path.getsize(under) < 1 << 20
    assert_refused_bounded(rmtl_file, cases, record_property)


def test_failed_save_leaves_the_previous_file(rmtl, rmtl_file, tmp_path, monkeypatch):
    """``save`` over a file is atomic: a full disk keeps the previous model."""
    path = tmp_path / "model.rmtl"
    path.write_bytes(rmtl_file.read_bytes())
    os.chmod(path, 0o640)
    before = path.read_bytes()
    write_array = np.lib.format.write_array
    calls = []

    def disk_full(f, arr, **kwargs):
        calls.append(arr)
        if len(calls) > 3:  # after some members, part of the file is written
            raise OSError(28, "No space left on device")
        write_array(f, arr, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(rmtl, path)
    with pytest.raises(OSError, match="No space left"):
        save(rmtl, tmp_path / "new.rmtl")
    assert sorted(os.listdir(tmp_path)) == ["model.rmtl"]  # no temporary file
    assert path.read_bytes() == before
    np.testing.assert_array_equal(load(path).predict_proba(X), rmtl.predict_proba(X))
    monkeypatch.undo()
    save(rmtl, path)  # a successful save replaces it, keeping its permissions
    assert sorted(os.listdir(tmp_path)) == ["model.rmtl"]
    assert os.stat(path).st_mode & 0o777 == 0o640
    np.testing.assert_array_equal(load(path).predict_proba(X), rmtl.predict_proba(X))


def test_arrays_must_have_the_dtype_and_shape_the_schema_expects(rmtl_file, tmp_path):
    """A wrong-typed entry fails at load (it used to load and fail in predict)."""

    def replace_array(src, dst, name, arr, version_1=False):
        def declare(m):
            m["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape)}

        bad = rewrite(
            src, dst, manifest=declare, replace={name + ".npy": npy_bytes(arr)}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InconsistentVersionWarning)
            with pytest.raises(InvalidFileError) as info:
                load(bad)
        return str(info.value)

    v1 = os.path.join(DATA, "v1_mtl_mmoe.rmtl")
    encoder = "estimator/encoder_"  # version 1 named arrays by attribute
    cases = [
        # (file, array, its replacement, the entry and expectation named)
        (rmtl_file, "estimator/classes_", np.arange(4), "classes_: expected a label")
    ]
    cases += [
        (
            v1,
            "estimator/classes_",
            np.zeros((2, 3), dtype=np.int64),
            r"classes_: expected a label array of shape \(2, 2\)",
        ),
        (
            v1,
            f"{encoder}/scaler_/mean_",
            np.array(["0.1", "0.2"]),
            r"scaler_/fitted/mean_: expected a float array of shape \(2,\)",
        ),
        (
            v1,
            f"{encoder}/ordinal_encoder_/_default_to_infrequent_mappings/0",
            np.arange(6, dtype=np.float64),
            "_default_to_infrequent_mappings/0: expected an integer array",
        ),
        (
            v1,
            f"{encoder}/_cat_idx",
            np.array([0.0, 1.0]),
            r"_cat_idx: expected an integer array of shape \(n,\)",
        ),
    ]
    for i, (src, name, arr, match) in enumerate(cases):
        message = replace_array(src, tmp_path / f"{i}.zip", name, arr)
        assert re.search(match, message), message
        assert "re-save the model with sklearn_rmtl.persistence.save" in message

    def int_task_names(m):
        m["estimator"]["fitted"]["task_names_"]["items"] = [1, 2]

    def string_n_tasks(m):
        m["estimator"]["fitted"]["n_tasks_"] = "2"

    for edit, match in [
        (int_task_names, r"task_names_: expected a str array of shape \(2,\)"),
        (string_n_tasks, "n_tasks_: expected int, got str"),
    ]:
        with pytest.raises(InvalidFileError, match=match):
            load(rewrite(rmtl_file, tmp_path / "edit.zip", manifest=edit))


def test_network_sizes_are_checked_before_building(tmp_path, record_property):
    """Counts in a file (tasks) cannot make even sizing the network costly.

    An AITM network has one transfer layer per task: 300,000 tasks in a few
    bytes of JSON used to build 300,000 modules (without weights) before the
    size check refused them.
    """
    clf = MTLClassifier(backbone="aitm", backbone_params=SMALL, **FAST).fit(X, Y)
    good = tmp_path / "aitm.rmtl"
    save(clf, good)

    def many_tasks(m):
        m["estimator"]["fitted"]["net_"]["kwargs"]["module__n_tasks"] = 300_000

    def huge_embedding(m):
        kwargs = m["estimator"]["fitted"]["net_"]["kwargs"]
        kwargs["module__backbone_params"]["embedding_dim"] = 1 << 40

    cases = [
        (rewrite(good, tmp_path / "tasks.zip", manifest=many_tasks), "more tensors"),
        (
            rewrite(good, tmp_path / "embedding.zip", manifest=huge_embedding),
            "does not fit its weights",
        ),
    ]
    assert os.path.getsize(cases[0][0]) < 64 << 10
    assert_refused_bounded(good, cases, record_property)


def test_sizing_budget_fits_every_backbone():
    """Each backbone creates at most one sized tensor per state entry."""
    from sklearn_rmtl._schema import _SizedOnMeta
    from sklearn_rmtl._torch_module import MultiTaskModule
    from sklearn_rmtl.backbones import BACKBONES, resolve_backbone_params

    for backbone in BACKBONES:
        params = resolve_backbone_params(backbone, {})
        for batch_norm in (False, True):
            if "batch_norm" in params:
                params["batch_norm"] = batch_norm
            module = MultiTaskModule(
                cardinalities=[5, 7],
                n_numerical=2,
                n_tasks=4,
                backbone=backbone,
                backbone_params=params,
            )
            with _SizedOnMeta(max_tensors=len(module.state_dict())):
                MultiTaskModule(
                    cardinalities=[5, 7],
                    n_numerical=2,
                    n_tasks=4,
                    backbone=backbone,
                    backbone_params=params,
                )


def test_critic_settings_round_trip_and_files_without_them_load(
    rmtl, rmtl_file, tmp_path
):
    """The critics' output map, step budget and held-out sessions are stored;
    a file written before they existed loads with the paper's -ReLU."""
    critic = SessionCritic(
        hidden_dims=(8,),
        max_epochs=None,
        max_steps=3,
        validation_fraction=0.5,
        output="softplus",
    )
    clf = RMTLClassifier(**{**RMTL_FAST, "critic": critic})
    clf.fit(X, Y, session_ids=SESSIONS)
    assert clf.critic_.module_.output == "softplus"
    save(clf, tmp_path / "softplus.zip")
    loaded = load(tmp_path / "softplus.zip")
    assert loaded.critic_.get_params() == critic.get_params()
    assert_same_critics(loaded.critic_, clf.critic_)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), clf.loss_weights(X, Y))

    def before_the_settings(m):
        critic_ = m["estimator"]["fitted"]["critic_"]
        del critic_["fitted"]["module_"]["kwargs"]["output"]
        for name in ("max_steps", "validation_fraction", "output"):
            del critic_["params"][name]

    old = load(rewrite(rmtl_file, tmp_path / "old.zip", manifest=before_the_settings))
    assert old.critic_.module_.output == "relu"
    assert_same_critics(old.critic_, rmtl.critic_)
    np.testing.assert_array_equal(old.loss_weights(X, Y), rmtl.loss_weights(X, Y))


def test_cross_fitted_critics_round_trip_and_a_bad_fold_count_is_refused(tmp_path):
    """cv's per-fold critics are stored; a file that claims another number
    of folds than its weights hold is refused, not built."""
    critic = SessionCritic(hidden_dims=(8,), max_epochs=1, cv=2)
    clf = RMTLClassifier(**{**RMTL_FAST, "critic": critic})
    clf.fit(X, Y, session_ids=SESSIONS)
    save(clf, tmp_path / "cv.zip")
    loaded = load(tmp_path / "cv.zip")
    assert len(loaded.critic_.module_.folds) == 2
    assert_same_critics(loaded.critic_, clf.critic_)
    np.testing.assert_array_equal(
        loaded.loss_weights(X, Y, session_ids=SESSIONS),
        clf.loss_weights(X, Y, session_ids=SESSIONS),
    )
    for n_folds, match in ((1, "n_folds must be an integer >= 2"), (10**9, "tensors")):

        def folds(m, n_folds=n_folds):
            kwargs = m["estimator"]["fitted"]["critic_"]["fitted"]["module_"]["kwargs"]
            kwargs["n_folds"] = n_folds

        with pytest.raises(InvalidFileError, match=match):
            load(rewrite(tmp_path / "cv.zip", tmp_path / "bad.zip", manifest=folds))


def test_a_frozen_actor_parameter_round_trips(tmp_path):
    from sklearn.frozen import FrozenEstimator

    actor = MTLClassifier(backbone="sharedbottom", backbone_params=SMALL, **FAST)
    actor.fit(X, Y)
    clf = RMTLClassifier(**{**RMTL_FAST, "actor": FrozenEstimator(actor)})
    clf.fit(X, Y, session_ids=SESSIONS)
    save(clf, tmp_path / "frozen.zip")
    loaded = load(tmp_path / "frozen.zip")
    assert isinstance(loaded.actor, FrozenEstimator)
    np.testing.assert_array_equal(
        loaded.actor.estimator.predict_proba(X), actor.predict_proba(X)
    )
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


# ---------------------------------------------------------------------------
# Pickles, skops and MLflow's default (skops) format
# ---------------------------------------------------------------------------


class _RecordingUnpickler(pickle.Unpickler):
    """Records every global (class or function) a pickle names."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.names: set[str] = set()

    def find_class(self, module, name):
        self.names.add(f"{module}.{name}")
        return super().find_class(module, name)


@pytest.fixture(scope="module")
def mtl():
    clf = MTLClassifier(backbone="mmoe", backbone_params=small("mmoe"), **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return clf.fit(X, Y)


@pytest.fixture(scope="module")
def rmtl_cv():
    """Cross-fitted critics (FoldCritics) and an actor's QWeightedNet."""
    critic = SessionCritic(**CRITIC, cv=2)
    clf = RMTLClassifier(
        backbone="sharedbottom", backbone_params=SMALL, **{**FAST, "critic": critic}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return clf.fit(X, Y, session_ids=SESSIONS)


FITTED = ["mtl", "rmtl", "rmtl_cv"]


@pytest.mark.parametrize("name", FITTED)
def test_pickles_name_plain_types_and_library_classes_only(name, request):
    """Fitted networks pickle as their configuration and NumPy weights.

    No torch object, skorch internals or callable (functools.partial, a
    torch.Generator, tensors): what skops refuses, and what makes a pickle
    depend on torch's own pickling.
    """
    est = request.getfixturevalue(name)
    unpickler = _RecordingUnpickler(pickle.dumps(est))
    loaded = unpickler.load()
    foreign = {
        n
        for n in unpickler.names
        if not n.startswith(("sklearn_rmtl.", "numpy.", "builtins.", "copyreg."))
    }
    assert not foreign
    assert_same_estimator(loaded, est, X_NEW)
    if isinstance(est, RMTLClassifier):
        assert_same_critics(loaded.critic_, est.critic_)
        assert loaded.critic_.encoder_ is loaded.encoder_  # still shared
        np.testing.assert_array_equal(loaded.loss_weights(X, Y), est.loss_weights(X, Y))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unpickling_a_gpu_net_without_cuda_loads_it_on_the_cpu(mtl):
    from skorch.exceptions import DeviceWarning

    state = mtl.net_.__getstate__()
    state["prediction_state"]["device"] = "cuda:1"
    net = type(mtl.net_).__new__(type(mtl.net_))
    with pytest.warns(DeviceWarning, match="cuda:1.*CPU"):
        net.__setstate__(state)
    assert net.device == "cpu"
    for key, value in mtl.net_.module_.state_dict().items():
        torch.testing.assert_close(net.module_.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("name", FITTED)
def test_skops_round_trip_trusting_only_library_classes(name, request):
    sio = pytest.importorskip("skops.io")
    est = request.getfixturevalue(name)
    data = sio.dumps(est)
    untrusted = sio.get_untrusted_types(data=data)
    assert set(untrusted) <= set(skops_trusted_types())
    assert all(t.startswith("sklearn_rmtl.") for t in skops_trusted_types())
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(data)
    loaded = sio.loads(data, trusted=skops_trusted_types())
    assert_same_estimator(loaded, est, X_NEW)
    if isinstance(est, RMTLClassifier):
        assert_same_critics(loaded.critic_, est.critic_)
        np.testing.assert_array_equal(loaded.loss_weights(X, Y), est.loss_weights(X, Y))


def test_mlflow_log_model_defaults_round_trip(rmtl, mlflow_file_store):
    """MLflow 3's sklearn flavor stores skops files by default."""
    pytest.importorskip("skops")
    mlflow = mlflow_file_store
    import mlflow.sklearn  # noqa: F811 (the submodule, loaded)

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            rmtl,
            name="model",
            skops_trusted_types=skops_trusted_types(),
            # Given, since inferring them imports torch in a subprocess (~10 s).
            pip_requirements=["sklearn-rmtl"],
        )
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    loaded = mlflow.sklearn.load_model(info.model_uri)
    assert_same_estimator(loaded, rmtl, X_NEW)
    np.testing.assert_array_equal(loaded.loss_weights(X, Y), rmtl.loss_weights(X, Y))
