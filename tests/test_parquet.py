"""Out-of-core fitting and prediction from Parquet (sklearn_rmtl.parquet)."""

import itertools
import sys

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
from sklearn_rmtl._rows import ArrayRows
from sklearn_rmtl.parquet import predict_proba_to_parquet

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")

FEATURES = ["item", "shop", "flag", "price", "qty"]
TARGETS = ["click", "buy"]
N = 1200


def _frame(n=N, seed=0):
    rng = np.random.default_rng(seed)
    item = rng.choice([f"i{k}" for k in range(40)], n, p=np.r_[[0.3], [0.7 / 39] * 39])
    frame = pd.DataFrame(
        {
            "item": np.where(rng.random(n) < 0.05, None, item),
            "shop": rng.integers(0, 12, n),
            "flag": rng.random(n) < 0.3,
            "price": rng.normal(3.0, 2.0, n),
            "qty": np.where(rng.random(n) < 0.1, np.nan, rng.exponential(size=n)),
            "session": np.repeat(np.arange(n // 6), 6),
            "t": rng.integers(0, 200, n),  # many ties
        }
    )
    click = (frame["item"] == "i0") | (rng.random(n) < 0.25)
    frame["click"] = click.astype(int)
    buy = (click & (frame["price"] > 3.0)).astype(float)
    frame["buy"] = np.where(rng.random(n) < 0.05, np.nan, buy)
    return frame


def _write(frame, path, row_group_size=200):
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False),
        path,
        row_group_size=row_group_size,
    )
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    frame = _frame()
    path = _write(frame, tmp_path_factory.mktemp("pq") / "rows.parquet")
    # What an in-memory fit of the file sees.
    return path, pq.read_table(path).to_pandas()


def _clf(**params):
    defaults = dict(
        backbone="mmoe",
        max_epochs=3,
        batch_size=128,
        random_state=0,
        categorical_features=["item", "shop", "flag"],
        backbone_params={
            "embedding_dim": 4,
            "bottom_dims": (8,),
            "tower_dims": (4,),
            "n_experts": 2,
        },
    )
    return MTLClassifier(**{**defaults, **params})


def _source(path, block_rows, **kw):
    return ParquetSource(
        path,
        target=TARGETS,
        session="session",
        time="t",
        features=FEATURES,
        block_rows=block_rows,
        **kw,
    )


def _prepared(clf, source):
    """The FitData of ``clf.fit(source)``, its encoder fitted."""
    data = clf._prepare(source)
    data.fit_encoder(
        FeatureEncoder(
            categorical_features=clf.categorical_features,
            min_frequency=clf.min_frequency,
            max_categories=clf.max_categories,
        )
    )
    return data


def _fit_memory(clf, frame):
    return clf.fit(
        frame[FEATURES],
        frame[TARGETS],
        session_ids=frame["session"],
        timestamps=frame["t"],
    )


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"min_frequency": "a count"},
        {"min_frequency": 0.02},
        {"max_categories": 6},
    ],
)
@pytest.mark.parametrize("block_rows", [10**6, 250])
def test_encoder_equals_in_memory_fit(data, params, block_rows):
    path, frame = data
    if params.get("min_frequency") == "a count":
        # A threshold equal to some value's count: "fewer than" is exact.
        params = {"min_frequency": int(frame["item"].value_counts().iloc[5])}
    clf = _clf(**params)
    streamed = _prepared(clf, _source(path, block_rows)).encoder
    # The in-memory fit learns its encoder on the kept rows (every row here
    # has a label).
    expected = FeatureEncoder(
        categorical_features=["item", "shop", "flag"], **params
    ).fit(frame[FEATURES])
    sa, sb = expected._get_state(), streamed._get_state()
    assert sa["categorical"] == sb["categorical"]  # vocabularies and codes
    assert [c["name"] for c in sa["numerical"]] == [c["name"] for c in sb["numerical"]]
    for ca, cb in zip(sa["numerical"], sb["numerical"], strict=True):
        assert ca["missing_indicator"] == cb["missing_indicator"]
        if block_rows >= N:  # one block: the very same statistics
            assert (ca["mean"], ca["scale"]) == (cb["mean"], cb["scale"])
        else:  # merged blocks: equal up to rounding
            np.testing.assert_allclose(
                [cb["mean"], cb["scale"]], [ca["mean"], ca["scale"]], rtol=1e-12
            )
    np.testing.assert_array_equal(streamed.cardinalities_, expected.cardinalities_)


@pytest.mark.parametrize("time", ["t", "ns", None])
def test_hold_out_is_the_in_memory_rows(tmp_path, time):
    frame = _frame()
    # Nanosecond times 1 ns apart: exact only as int64, not as float64.
    frame["ns"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(
        np.random.default_rng(3).permutation(len(frame)), unit="ns"
    )
    # Rows without any label are never held out (nor counted).
    frame.loc[frame.index[::17], TARGETS] = np.nan
    frame["row"] = np.arange(len(frame))
    path = _write(frame, tmp_path / "rows.parquet", row_group_size=150)
    source = ParquetSource(
        path,
        target=TARGETS,
        session="row",
        time=time,
        features=FEATURES,
        block_rows=170,
    )
    data = _prepared(_clf(validation_fraction=0.23), source)
    memory = _clf(validation_fraction=0.23)._prepare(
        ArrayRows(
            frame[FEATURES],
            frame[TARGETS],
            session_ids=frame["row"],
            timestamps=None if time is None else frame[time],
        )
    )
    expected = np.flatnonzero(memory.block_labels(0).valid)
    np.testing.assert_array_equal(data.held_out().session_ids, expected)
    assert memory.seed == data.seed
    assert len(data.train_set(seed=0)) == len(frame) - len(expected)


def test_one_block_gives_identical_predictions(data):
    path, frame = data
    memory = _fit_memory(_clf(), frame)
    streamed = _clf().fit(_source(path, 10**6))
    assert_same_proba(
        streamed.predict_proba(_source(path, 300)),
        memory.predict_proba(frame[FEATURES]),
    )
    assert streamed.history_["pretrain"] == [
        {**row, "dur": streamed.history_["pretrain"][i]["dur"]}
        for i, row in enumerate(memory.history_["pretrain"])
    ]
    np.testing.assert_array_equal(streamed.classes_, memory.classes_)
    assert list(streamed.feature_names_in_) == FEATURES


def test_small_blocks_give_close_predictions(data):
    path, frame = data
    memory = _fit_memory(_clf(max_epochs=4), frame)
    streamed = _clf(max_epochs=4).fit(_source(path, 150))  # 8 blocks
    p_mem = memory.predict_proba(frame[FEATURES])
    p_str = streamed.predict_proba(frame[FEATURES])
    # Another batch order is another SGD path over the same rows and epochs:
    # probabilities move a little, the ranking hardly.
    assert np.abs(p_str - p_mem).max() < 0.05
    assert not np.array_equal(p_str, p_mem)
    y = frame["click"].to_numpy()
    assert abs(roc_auc_score(y, p_str[:, 0]) - roc_auc_score(y, p_mem[:, 0])) < 0.02


def test_batches_cross_blocks_and_cover_every_training_row(data):
    path, _ = data
    stream = _prepared(_clf(), _source(path, 170)).train_set(seed=0)

    gen = torch.Generator().manual_seed(0)
    sizes, n_rows = [], 0
    for _, y in stream.batches(128, shuffle=True, generator=gen):
        sizes.append(len(y))
        n_rows += len(y)
    assert n_rows == len(stream)
    assert sizes[:-1] == [128] * (len(sizes) - 1)  # full batches across blocks
    assert len(sizes) == -(-len(stream) // 128)


def test_predict_proba_to_parquet_writes_blocks(data, tmp_path):
    path, frame = data
    clf = _fit_memory(_clf(max_epochs=1), frame)
    source = ParquetSource(path, block_rows=500)  # features: the fitted ones
    out = tmp_path / "proba.parquet"
    n = predict_proba_to_parquet(clf, source, out, keep_columns=["session"])
    assert n == N
    written = pq.ParquetFile(out)
    assert written.metadata.num_row_groups == source.n_blocks == 3
    table = written.read().to_pandas()
    assert list(table.columns) == ["session", "click_proba", "buy_proba"]
    assert_same_proba(
        table[["click_proba", "buy_proba"]].to_numpy(),
        clf.predict_proba(frame[FEATURES]),
    )
    np.testing.assert_array_equal(table["session"], frame["session"])
    np.testing.assert_array_equal(clf.predict(source), clf.predict(frame[FEATURES]))
    with pytest.raises(ValueError, match="keep_columns names"):
        predict_proba_to_parquet(clf, source, out, keep_columns=["nope"])


def test_folder_and_dataset_inputs(data, tmp_path):
    path, frame = data
    folder = tmp_path / "parts"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(N), 3)):
        _write(frame.iloc[part], folder / f"part-{k}.parquet", row_group_size=100)
    expected = (
        _clf(max_epochs=1).fit(_source(path, 10**6)).predict_proba(frame[FEATURES])
    )
    for where in (folder, ds.dataset(folder, format="parquet")):
        got = _clf(max_epochs=1).fit(_source(where, 10**6))
        np.testing.assert_array_equal(got.predict_proba(frame[FEATURES]), expected)
    assert _source(folder, 250).n_blocks == 5


def test_sample_weight_column_matches_in_memory(tmp_path):
    frame = _frame(600)
    frame["w"] = np.random.default_rng(1).choice([0.0, 0.5, 2.0], len(frame))
    path = _write(frame, tmp_path / "w.parquet")
    memory = _clf(max_epochs=2).fit(
        frame[FEATURES],
        frame[TARGETS],
        timestamps=frame["t"],
        sample_weight=frame["w"],
    )
    source = ParquetSource(
        path,
        target=TARGETS,
        time="t",
        features=FEATURES,
        sample_weight="w",
        block_rows=10**6,
    )
    streamed = _clf(max_epochs=2).fit(source)
    np.testing.assert_array_equal(
        streamed.predict_proba(frame[FEATURES]),
        memory.predict_proba(frame[FEATURES]),
    )


def test_bad_sources_raise_clear_errors(data, tmp_path):
    path, frame = data
    with pytest.raises(ValueError, match=r"\['nope'\] are not in the Parquet"):
        ParquetSource(path, target=["click", "nope"])
    with pytest.raises(ValueError, match="more than once"):
        ParquetSource(path, target="click", time="click")
    with pytest.raises(ValueError, match="block_rows must be at least 1"):
        ParquetSource(path, target="click", block_rows=0)
    with pytest.raises(TypeError, match="block_rows must be a positive int"):
        ParquetSource(path, target="click", block_rows=2.5)
    with pytest.raises(TypeError, match="'item' must hold numbers or timestamps"):
        ParquetSource(path, target="click", time="item")
    with pytest.raises(ValueError, match="Cannot read Parquet data"):
        ParquetSource(tmp_path / "absent.parquet", target="click")
    nested = pa.table({"x": [[1, 2], [3]], "y": [[0], [1]], "z": [[[1]], [[2]]]})
    pq.write_table(nested, tmp_path / "nested.parquet")
    assert ParquetSource(tmp_path / "nested.parquet", features=["x"]).features == ["x"]
    with pytest.raises(TypeError, match="'y' has the nested type"):  # a target
        ParquetSource(tmp_path / "nested.parquet", target="y", features=["x"])
    with pytest.raises(TypeError, match=r"'z' has the nested type .*lists of scalars"):
        ParquetSource(tmp_path / "nested.parquet", features=["z"])
    with pytest.raises(ValueError, match="no target columns"):
        _clf().fit(ParquetSource(path, features=FEATURES))
    with pytest.raises(TypeError, match="pass none of them"):
        _clf().fit(_source(path, 100), frame[TARGETS])
    bad = frame.assign(click=frame["click"] + np.arange(N) % 3)
    _write(bad, tmp_path / "three.parquet")
    with pytest.raises(ValueError, match="Only binary classification"):
        _clf().fit(_source(tmp_path / "three.parquet", 100))
    fitted = _clf(max_epochs=1).fit(_source(path, 10**6))
    _write(frame.drop(columns="qty"), tmp_path / "less.parquet")
    with pytest.raises(ValueError, match=r"lacks the columns \['qty'\]"):
        fitted.predict_proba(ParquetSource(tmp_path / "less.parquet"))


@pytest.fixture(scope="module")
def sorted_data(tmp_path_factory):
    frame = _frame().sort_values(["session", "t"], kind="stable")
    path = _write(frame, tmp_path_factory.mktemp("pq") / "sorted.parquet")
    return path, pq.read_table(path).to_pandas()


def _rmtl(critic=None, **params):
    """A small RMTLClassifier; ``critic``: fitted critics or a dict of settings."""
    if not isinstance(critic, SessionCritic):
        critic = SessionCritic(
            **{"max_epochs": 3, "hidden_dims": (8,), **(critic or {})}
        )
    defaults = dict(
        backbone="mmoe",
        max_epochs=2,
        refit_max_epochs=2,
        critic=critic,
        batch_size=128,
        random_state=0,
        categorical_features=["item", "shop", "flag"],
        backbone_params={
            "embedding_dim": 4,
            "bottom_dims": (8,),
            "tower_dims": (4,),
            "n_experts": 2,
        },
    )
    return RMTLClassifier(**{**defaults, **params})


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"critic": {"shared": False, "behavior_policy": "uniform", "gamma": 0.5}},
        {"critic": {"use_sample_weight": True}, "weighting": "label_q"},
        {"weighting": "label_mean", "critic": {"balance_labels": True}},
        # Loss scaling in every phase, the streamed critics' TD steps included.
        pytest.param(
            {"precision": "float16"},
            marks=pytest.mark.filterwarnings("ignore:precision='float16'"),
        ),
    ],
)
def test_rmtl_one_block_is_the_in_memory_fit(sorted_data, tmp_path, params):
    path, frame = sorted_data
    weight = None
    if params.get("critic", {}).get("use_sample_weight"):
        # Row weights (some 0) in every phase, the critics' TD loss included.
        weight = np.random.default_rng(2).choice([0.0, 0.5, 2.0], len(frame))
        frame = frame.assign(w=weight)
        path = _write(frame, tmp_path / "weighted.parquet")
    memory = _rmtl(**params).fit(
        frame[FEATURES],
        frame[TARGETS],
        session_ids=frame["session"],
        timestamps=frame["t"],
        sample_weight=weight,
    )
    source = _source(path, 10**6, sample_weight=None if weight is None else "w")
    streamed = _rmtl(**params).fit(source)
    np.testing.assert_array_equal(
        streamed.predict_proba(frame[FEATURES]),
        memory.predict_proba(frame[FEATURES]),
    )
    for phase in ("pretrain", "critic", "refit"):
        drop = [
            {k: v for k, v in r.items() if k != "dur"} for r in memory.history_[phase]
        ]
        assert drop == [
            {k: v for k, v in r.items() if k != "dur"} for r in streamed.history_[phase]
        ]


@pytest.mark.parametrize(
    "params", [{}, {"weighting": "label_mean", "critic": {"balance_labels": True}}]
)
def test_rmtl_session_chunks_give_close_predictions(sorted_data, params):
    path, frame = sorted_data
    memory = _rmtl(**params).fit(
        frame[FEATURES],
        frame[TARGETS],
        session_ids=frame["session"],
        timestamps=frame["t"],
    )
    streamed = _rmtl(**params).fit(_source(path, 250))  # 5 blocks, whole sessions
    assert len(streamed.critic_.history_) >= 1
    p_mem = memory.predict_proba(frame[FEATURES])
    p_str = streamed.predict_proba(frame[FEATURES])
    assert not np.array_equal(p_str, p_mem)
    assert np.abs(p_str - p_mem).max() < 0.05


def test_rmtl_from_a_source_checks_order(data, sorted_data):
    path, _ = data  # not sorted by session, then time
    with pytest.raises(ValueError, match=r"must be sorted by \(session, t\)"):
        _rmtl().fit(_source(path, 300))
    sorted_path, _ = sorted_data
    # Without a session column every row is a session of its own, as in memory.
    no_session = ParquetSource(sorted_path, target=TARGETS, features=FEATURES)
    with pytest.warns(UserWarning, match="session_ids is None"):
        _rmtl(max_epochs=1).fit(no_session)
    # Without critics the order does not matter.
    _rmtl(weighting="constant", max_epochs=1).fit(_source(path, 300))


def _given_actor():
    return _clf(max_epochs=2, random_state=1)


# Every setting fits from a source as in memory: one block gives the in-memory
# fit (float rounding), blocks of whole sessions a close one.
SETTINGS = {
    "retrain_on_all": lambda frame: {"retrain_on_all": True},
    "actor_update": lambda frame: {"actor_update": True, "refit_max_epochs": 1},
    "unfitted actor": lambda frame: {"actor": _given_actor()},
    "fitted actor": lambda frame: {"actor": _fit_memory(_given_actor(), frame)},
    "critic": lambda frame: {
        "critic": _rmtl(random_state=5)
        .fit(
            frame[FEATURES],
            frame[TARGETS],
            session_ids=frame["session"],
            timestamps=frame["t"],
        )
        .critic_
    },
    "weighting": lambda frame: {"weighting": "neg_q", "task_balancing": "dwa"},
    "shuffled control": lambda frame: {"weighting": "rmtl_shuffled"},
    "outcome weights": lambda frame: {"weighting": "outcome_session"},
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_setting_fits_from_a_source(sorted_data, setting):
    path, frame = sorted_data
    params = SETTINGS[setting](frame)
    memory = _rmtl(**params).fit(
        frame[FEATURES],
        frame[TARGETS],
        session_ids=frame["session"],
        timestamps=frame["t"],
    )
    one_block = _rmtl(**params).fit(_source(path, 10**6))
    p_mem = memory.predict_proba(frame[FEATURES])
    assert_same_proba(one_block.predict_proba(frame[FEATURES]), p_mem)
    assert one_block.history_.keys() == memory.history_.keys()
    chunks = _rmtl(**params).fit(_source(path, 250))  # 5 blocks
    p_chunks = chunks.predict_proba(frame[FEATURES])
    assert np.abs(p_chunks - p_mem).max() < 0.05


def test_mtl_retrain_on_all_from_a_source(data):
    path, frame = data
    memory = _fit_memory(_clf(retrain_on_all=True), frame)
    streamed = _clf(retrain_on_all=True).fit(_source(path, 10**6))
    assert_same_proba(
        streamed.predict_proba(frame[FEATURES]), memory.predict_proba(frame[FEATURES])
    )
    assert "pretrain_all" in streamed.history_


def test_missing_pyarrow_names_the_extra(data, monkeypatch):
    path, _ = data
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"sklearn-rmtl\[parquet\]"):
        ParquetSource(path, target="click")


@pytest.mark.parametrize(
    "params", [{"early_stopping": False}, {"validation_metric": "gauc:click"}]
)
def test_other_early_stopping_settings_match_in_memory(data, params):
    path, frame = data
    memory = _fit_memory(_clf(max_epochs=2, **params), frame)
    streamed = _clf(max_epochs=2, **params).fit(_source(path, 10**6))
    np.testing.assert_array_equal(
        streamed.predict_proba(frame[FEATURES]),
        memory.predict_proba(frame[FEATURES]),
    )


def test_model_fitted_from_a_source_saves_and_pickles(data, tmp_path):
    import pickle

    from sklearn_rmtl import persistence

    path, frame = data
    clf = _clf(max_epochs=1).fit(_source(path, 400))
    expected = clf.predict_proba(frame[FEATURES])
    persistence.save(clf, tmp_path / "model.rmtl")
    loaded = persistence.load(tmp_path / "model.rmtl")
    np.testing.assert_array_equal(loaded.predict_proba(frame[FEATURES]), expected)
    # Nothing of the source (an open dataset) stays in the fitted model.
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(clf)).predict_proba(frame[FEATURES]), expected
    )
    assert b"ParquetSource" not in pickle.dumps(clf)


def test_session_bounds_keep_sessions_whole_and_check_the_order(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 60)  # one session longer than a block
    lengths[7] = 90
    frame = pd.DataFrame(
        {
            "session": np.repeat(np.arange(len(lengths)), lengths),
            "t": np.concatenate([np.sort(rng.integers(0, 9, n)) for n in lengths]),
        }
    )
    frame["x"] = np.arange(len(frame))
    path = _write(frame, tmp_path / "sorted.parquet", row_group_size=64)
    source = ParquetSource(path, session="session", time="t", block_rows=50)
    bounds = source.session_bounds()
    assert bounds[0][0] == 0 and bounds[-1][1] == len(frame)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    seen = [set(frame["session"].iloc[a:b]) for a, b in bounds]
    assert all(not (a & b) for a, b in itertools.pairwise(seen))
    assert max(b - a for a, b in bounds) >= 90  # the long session, whole
    # A time going back inside a session, across a block boundary (row 50).
    late = frame.copy()
    s = late.loc[50, "session"]
    late.loc[late["session"] == s, "t"] = np.arange((late["session"] == s).sum())[::-1]
    _write(late, tmp_path / "unsorted.parquet")
    bad = ParquetSource(tmp_path / "unsorted.parquet", session="session", time="t")
    with pytest.raises(ValueError, match=r"sorted by \(session, t\).*row \d+"):
        bad.session_bounds()
    # A session id going back exactly at a block boundary (row 5).
    back = pd.DataFrame({"session": [0, 0, 1, 1, 2, 1, 3], "x": range(7)})
    _write(back, tmp_path / "back.parquet")
    bad = ParquetSource(tmp_path / "back.parquet", session="session", block_rows=5)
    with pytest.raises(ValueError, match=r"row 5 \(counting from 0\)"):
        bad.session_bounds()
    # Without sessions every row is its own session: the blocks.
    assert ParquetSource(path, block_rows=500).session_bounds() == [
        (0, 500),
        (500, 1000),
        (1000, len(frame)),
    ]


def test_rmtl_statistics_merge_over_blocks(sorted_data):
    from sklearn_rmtl._refit import plan_refit
    from sklearn_rmtl._td import SessionChunks, TDConfig

    path, frame = sorted_data
    model = _rmtl(weighting="label_mean", critic={"balance_labels": True})
    model.fit(_source(path, 10**6))
    config = TDConfig.from_params(model.critic_.get_params(), model.get_params())
    means, rates = [], []
    for block in (10**6, 250):
        data = model._prepare(_source(path, block))
        data.set_encoder(model.encoder_)  # the same encoding for both block sizes
        plan = plan_refit(
            data,
            model.net_.module_,
            model.critic_,
            weighting="label_mean",
            q_lambda=model.q_lambda,
            precision="float32",
            gamma=0.95,
            seed=0,
        )
        means.append(plan.label_weights)
        chunks = SessionChunks(
            data,
            model.net_.module_,
            behavior_policy="actor",
            action_noise=0.1,
            config=config,
            seed=0,
        )
        chunks.start_value(0.9)
        rates.append(chunks.positive_rate.numpy()[0])
    assert len(chunks) > 1
    np.testing.assert_allclose(means[1], means[0], rtol=1e-5)
    # The IPS rate is the positive rate of the observed labels of all rows.
    expected = np.nanmean(frame[TARGETS].to_numpy(dtype=float), axis=0)
    np.testing.assert_allclose(rates[0], expected, rtol=1e-6)
    np.testing.assert_allclose(rates[1], expected, rtol=1e-6)
