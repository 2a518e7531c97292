"""Sequence columns (``sequence_features``): encoding, pooling, every path."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_proba
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import (
    FeatureEncoder,
    MTLClassifier,
    ParquetSource,
    RMTLClassifier,
    SessionCritic,
)
from sklearn_rmtl._torch_module import FeatureEmbedding, TargetAttention
from sklearn_rmtl.backbones import BACKBONES, resolve_backbone_params
from sklearn_rmtl.persistence import load, save

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,), "n_experts": 2}
SEQUENCES = {"hist": "item", "tags": None}


def _log(n=400, seed=0):
    """Items, a history of earlier items (some unseen, missing cells and
    elements), tags of a vocabulary of their own, a text column, a number."""
    rng = np.random.default_rng(seed)
    hist = [list(rng.integers(0, 35, rng.integers(0, 12))) for _ in range(n)]
    hist[3], hist[4] = None, [1, None, 2]
    tags = [list(rng.choice(list("abcde"), rng.integers(0, 4))) for _ in range(n)]
    X = pd.DataFrame(
        {
            "item": rng.integers(0, 30, n),
            "hist": pd.Series(hist, dtype=object),
            "tags": pd.Series(tags, dtype=object),
            "s": rng.choice(["x", "y"], n).astype(object),
            "p": rng.normal(size=n),
        }
    )
    return X, np.c_[rng.integers(0, 2, n), rng.integers(0, 2, n)]


#: The estimators' settings of the tests on ``_log()``.
PARAMS = dict(
    backbone="mmoe",
    categorical_features=["item", "s"],
    sequence_features=SEQUENCES,
    max_sequence_length=6,
    backbone_params=TINY,
    max_epochs=2,
    random_state=0,
)


def _mtl(**params):
    return MTLClassifier(**{**PARAMS, **params})


def test_codes_keep_the_most_recent_elements_by_the_shared_vocabulary():
    X = pd.DataFrame(
        {
            "item": pd.Categorical(["a", "b", "c", "a"]),
            "hist": pd.Series([[], ["a"], ["a", "b", "zz"], None], dtype=object),
            "tags": pd.Series([["x", "y"], ["y"], [], ["x", "x", "w"]], dtype=object),
        }
    )
    enc = FeatureEncoder(sequence_features=SEQUENCES, max_sequence_length=2).fit(X)
    assert enc.sequence_features_.tolist() == ["hist", "tags"]
    assert enc.sequence_vocabularies_.tolist() == ["item", None]
    assert enc.sequence_categories_[1].tolist() == ["w", "x", "y"]
    assert enc.sequence_cardinalities_.tolist() == [0, 5]
    assert enc.get_feature_names_out().tolist() == [
        "item", "hist[0]", "hist[1]", "tags[0]", "tags[1]",
    ]  # fmt: skip
    # item: a=2, b=3, c=4; unseen "zz" is 1; padding 0; tags w=2, x=3, y=4.
    assert enc.transform(X).astype(int).tolist() == [
        [2, 0, 0, 3, 4],
        [3, 2, 0, 4, 0],
        [4, 3, 1, 0, 0],
        [2, 0, 0, 3, 2],
    ]


def test_partial_fit_and_a_restored_state_encode_as_fit():
    X, _ = _log()
    params = dict(
        categorical_features=["item", "s"],
        sequence_features=SEQUENCES,
        max_sequence_length=5,
    )
    whole = FeatureEncoder(**params).fit(X)
    blocks = FeatureEncoder(**params)
    for start in range(0, len(X), 150):
        blocks.partial_fit(X.iloc[start : start + 150])
    np.testing.assert_array_equal(blocks.transform(X), whole.transform(X))
    restored = FeatureEncoder(**params)
    restored._set_state(whole._get_state())
    np.testing.assert_array_equal(restored.transform(X), whole.transform(X))
    state = whole._get_state()
    del state["sequences"]  # a file written before sequence columns existed
    with pytest.raises(ValueError, match="positions"):
        FeatureEncoder()._set_state(state)


@pytest.mark.parametrize(
    ("sequences", "extra", "cell", "message"),
    [
        (
            {"hist": "nope"},
            {},
            None,
            r"sequence_features\['hist'\] names column 'nope'",
        ),
        ({"hist": "p"}, {}, None, r"shares the vocabulary of \['p'\], which are not"),
        ({"hist": "tags", "tags": None}, {}, None, "to a sequence column"),
        ({"hist": "hist"}, {}, None, "to a sequence column .or to itself"),
        (
            {"hist": "item"},
            {"categorical_features": ["item", "hist"]},
            None,
            r"\['hist'\] are named in both categorical_features and",
        ),
        (
            {"hist": "item"},
            {"hash_buckets": {"hist": 8}},
            None,
            "names the sequence column 'hist'; hash 'item', whose vocabulary",
        ),
        (
            {"tags": None},
            {"hash_buckets": {"tags": 8}},
            None,
            "names the sequence column 'tags'; leave it out of hash_buckets",
        ),
        ({"s": None}, {}, None, "Sequence column 's' holds '[xy]' .str. in a cell"),
        (
            {"hist": "item"},
            {"max_sequence_length": 0},
            None,
            "'max_sequence_length' .* range \\[1,",
        ),
        (
            {"hist": "item"},
            {},
            [3, "7"],  # the item column holds integers
            r"Sequence column 'hist' holds '7' \(str\), but 'item', whose "
            r"vocabulary it shares, holds numbers",
        ),
        (
            {"hist": "item"},
            {},
            [3, [4, 5]],
            r"Sequence column 'hist' has a cell with a nested list \(\[4, 5\]\)",
        ),
        (
            {"hist": "item"},
            {},
            [[3, 4], [4, 5]],
            r"Sequence column 'hist' has a cell with a nested list",
        ),
    ],
)
def test_bad_sequence_features_are_clear_errors(sequences, extra, cell, message):
    X, _ = _log(50)
    if cell is not None:  # one bad cell among good ones
        X["hist"] = pd.Series([*X["hist"][:7], cell, *X["hist"][8:]], dtype=object)
    params = {"categorical_features": ["item"], **extra}
    enc = FeatureEncoder(sequence_features=sequences, **params)
    with pytest.raises(ValueError, match=message):
        enc.fit(X.drop(columns="tags") if "tags" not in sequences else X)
    assert not hasattr(enc, "sequence_features_")  # nothing half-fitted


def test_pooling_masks_padding_and_attention_follows_din():
    torch.manual_seed(0)
    layout = dict(cardinalities=[6, 5], n_numerical=0, embedding_dim=3)
    seqs = [(0, 0, 3), (1, -1, 2)]
    x = torch.tensor([[2, 3, 0, 0, 4, 0], [3, 4, 5, 2, 0, 0]])
    mean = FeatureEmbedding(**layout, sequences=seqs, sequence_pooling="mean")
    table = mean.embedding.weight
    out = mean(x, torch.zeros(2, 0))
    assert out.shape == (2, 3 * 3)
    # Row 0: history [3] (padding masked), tags [4] of the second table.
    torch.testing.assert_close(out[0, 3:6], table[3])
    torch.testing.assert_close(out[0, 6:], table[6 + 4])
    torch.testing.assert_close(out[1, 3:6], table[[4, 5, 2]].mean(0))
    summed = FeatureEmbedding(**layout, sequences=seqs, sequence_pooling="sum")
    summed.load_state_dict(mean.state_dict())
    torch.testing.assert_close(
        summed(x, torch.zeros(2, 0))[1, 3:6], table[[4, 5, 2]].sum(0)
    )
    att = FeatureEmbedding(**layout, sequences=seqs, attention_dims=(4,))
    assert len(att.attention) == 1  # the tags have no candidate: averaged
    unit = att.attention[0]
    h = torch.randn(2, 3, 3)
    c = torch.randn(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # DIN's MLP on the concatenation (the module computes it in parts).
    din = torch.cat([h, c[:, None].expand_as(h), h - c[:, None], h * c[:, None]], -1)
    scores = unit.rest(unit.first(din))
    expected = (scores.squeeze(-1) * mask).unsqueeze(-1).mul(h).sum(1)
    torch.testing.assert_close(unit(h, c, mask), expected)
    assert isinstance(unit, TargetAttention)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_a_history_carries_a_signal_the_row_alone_lacks(pooling):
    """The label is whether the candidate item is in the user's history."""
    rng = np.random.default_rng(0)
    n = 4000
    items = rng.integers(0, 20, n)
    hist = [list(rng.integers(0, 20, rng.integers(0, 6))) for _ in range(n)]
    y = np.array([int(i in h) for i, h in zip(items, hist, strict=True)])
    X = pd.DataFrame({"item": pd.Categorical(items), "hist": pd.Series(hist)})
    params = {
        "embedding_dim": 16,
        "bottom_dims": (64,),
        "tower_dims": (),
        "sequence_pooling": pooling,
    }
    est = MTLClassifier(
        backbone="sharedbottom",
        sequence_features={"hist": "item"},
        max_sequence_length=8,
        backbone_params=params,
        max_epochs=40,
        lr=1e-2,
        batch_size=256,
        n_iter_no_change=10,
        random_state=0,
    ).fit(X[:3200], np.c_[y, y][:3200])
    auc = roc_auc_score(y[3200:], est.predict_proba(X[3200:])[:, 0])
    assert auc > 0.9


def test_arrow_and_polars_list_columns_are_the_same_data():
    pa = pytest.importorskip("pyarrow")
    pl = pytest.importorskip("polars")
    X, Y = _log(200)
    ids = [[int(v) for v in cell if v is not None] for cell in X["hist"].fillna("")]
    X = X.drop(columns="tags").assign(hist=pd.Series(ids, dtype=object))
    params = {"sequence_features": {"hist": "item"}}
    proba = _mtl(**params).fit(X, Y).predict_proba(X)
    arrow = X.assign(hist=pd.array(ids, dtype=pd.ArrowDtype(pa.list_(pa.int64()))))
    polars = pl.from_pandas(X)
    assert polars.schema["hist"] == pl.List(pl.Int64)
    for frame in (arrow, polars):
        fitted = _mtl(**params).fit(frame, Y)
        np.testing.assert_array_equal(fitted.predict_proba(frame), proba)


def _onnx_parity(est, X):
    """The ONNX graph of ``est`` serves its probabilities of ``X``."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sklearn_rmtl.export import onnx_inputs, to_onnx

    session = ort.InferenceSession(to_onnx(est).SerializeToString())
    graph = session.run(None, onnx_inputs(est, X))[0]
    np.testing.assert_allclose(graph, est.predict_proba(X), rtol=0, atol=1e-5)


def _sessions_in_parquet(n, tmp_path):
    """``_log(n)`` in sessions of 5 rows, their fit keywords, and the same
    rows as a Parquet file read in one block."""
    pytest.importorskip("pyarrow")
    X, Y = _log(n)
    sessions, times = np.repeat(np.arange(n // 5), 5), np.tile(np.arange(5), n // 5)
    path = tmp_path / "log.parquet"
    X.assign(click=Y[:, 0], buy=Y[:, 1], session=sessions, t=times).to_parquet(path)
    source = ParquetSource(
        path,
        target=["click", "buy"],
        session="session",
        time="t",
        features=list(X.columns),
        block_rows=10**6,
    )
    return X, Y, {"session_ids": sessions, "timestamps": times}, source


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_fits_saves_and_streams_a_history(backbone, tmp_path):
    """A history pooled by target attention (and tags by the mean): the safe
    file and a fit from Parquet give the fitted model's probabilities,
    whatever the backbone (tests/test_export.py checks every backbone's ONNX
    graph with a history)."""
    X, Y, sessions, source = _sessions_in_parquet(200, tmp_path)
    valid = resolve_backbone_params(backbone, None)
    sizes = {key: value for key, value in TINY.items() if key in valid}
    params = dict(backbone=backbone, backbone_params={**sizes, "attention_dims": (4,)})
    est = _mtl(**params).fit(X, Y, **sessions)
    assert len(est.net_.module_.embedding.attention) == 1  # hist's, by item
    proba = est.predict_proba(X)
    save(est, tmp_path / "m.rmtl")
    np.testing.assert_array_equal(load(tmp_path / "m.rmtl").predict_proba(X), proba)
    assert_same_proba(_mtl(**params).fit(source).predict_proba(X), proba)


def test_a_hashed_item_and_its_history_save_pickle_and_export(tmp_path):
    X, Y = _log()
    est = _mtl(hash_buckets={"item": 64}).fit(X, Y)
    proba = est.predict_proba(X)
    save(est, tmp_path / "m.rmtl")
    np.testing.assert_array_equal(load(tmp_path / "m.rmtl").predict_proba(X), proba)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(est)).predict_proba(X), proba
    )
    _onnx_parity(est, X)
    from sklearn_rmtl.export import describe_encoding

    hist = describe_encoding(est)["columns"][1]
    assert (hist["role"], hist["vocabulary"], hist["length"]) == ("sequence", "item", 6)


def test_rmtl_and_a_parquet_source_fit_sequence_columns(tmp_path):
    X, Y, sessions, source = _sessions_in_parquet(300, tmp_path)
    params = dict(PARAMS, critic=SessionCritic(max_epochs=1, hidden_dims=(8,)))
    in_memory = RMTLClassifier(**params).fit(X, Y, **sessions)
    save(in_memory, tmp_path / "r.rmtl")
    restored = load(tmp_path / "r.rmtl")
    np.testing.assert_array_equal(restored.predict_proba(X), in_memory.predict_proba(X))
    streamed = RMTLClassifier(**params).fit(source)
    np.testing.assert_array_equal(streamed.predict_proba(X), in_memory.predict_proba(X))
    blocks = ParquetSource(source.path, features=list(X.columns), block_rows=70)
    np.testing.assert_allclose(
        streamed.predict_proba(blocks), in_memory.predict_proba(X), atol=1e-6
    )
