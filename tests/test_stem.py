"""STEM: a shared embedding plus one per task, other tasks' experts stopped."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_onnx_parity, assert_same_proba, make_session_data
from sklearn.metrics import roc_auc_score

from sklearn_rmtl import MTLClassifier, ParquetSource, RMTLClassifier, SessionCritic
from sklearn_rmtl._torch_module import MultiTaskModule
from sklearn_rmtl.backbones import STEM, resolve_backbone_params
from sklearn_rmtl.persistence import load, save

SIZES = {
    "embedding_dim": 4,
    "bottom_dims": (8,),
    "tower_dims": (4,),
    "n_shared_experts": 1,
    "n_specific_experts": 1,
}
FAST = {"max_epochs": 2, "random_state": 0}


def _data(n_samples=600, n_tasks=2, seed=0):
    """Tasks driven by the item, each with its own item effect, and the price."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 12, n_samples)
    price = rng.normal(size=n_samples)
    X = pd.DataFrame(
        {
            "item": pd.Categorical([f"i{v}" for v in item]),
            "user": pd.Categorical(rng.integers(0, 20, n_samples).astype(str)),
            "price": price,
        }
    )
    Y = {}
    for k in range(n_tasks):
        effect = rng.normal(0.0, 2.0, 12)
        logit = effect[item] + (-1.0) ** k * price - 0.3 * k
        Y[f"task{k}"] = (rng.random(n_samples) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, pd.DataFrame(Y)


def _module(n_tasks, backbone="stem", cardinalities=(5, 7), **sizes):
    valid = resolve_backbone_params(backbone, None)
    sizes = {k: v for k, v in {**SIZES, **sizes}.items() if k in valid}
    return MultiTaskModule(
        cardinalities=list(cardinalities),
        n_numerical=2,
        n_tasks=n_tasks,
        backbone=backbone,
        backbone_params=resolve_backbone_params(backbone, sizes),
    )


@pytest.fixture(scope="module")
def fitted():
    X, Y = _data(n_tasks=3)
    est = MTLClassifier(backbone="stem", backbone_params=SIZES, **FAST)
    return est.fit(X, Y), X


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_fits_and_predicts_any_number_of_tasks(n_tasks):
    X, Y = _data(300, n_tasks)
    est = MTLClassifier(backbone="stem", backbone_params=SIZES, **FAST).fit(X, Y)
    proba = est.predict_proba(X)
    assert proba.shape == (300, n_tasks)
    assert np.isfinite(proba).all() and ((proba > 0) & (proba < 1)).all()
    assert est.predict(X).shape == (300, n_tasks)
    module = est.net_.module_
    # One shared set of tables and one per task, each trained.
    assert len(module.task_embeddings) == n_tasks
    tables = [module.embedding, *module.task_embeddings]
    weights = [t.embedding.weight for t in tables]
    for a, b in itertools.combinations(weights, 2):
        assert not torch.equal(a, b)


def test_learns_a_learnable_signal():
    X, Y = _data(2400, 2, seed=1)
    train, test = slice(0, 1800), slice(1800, None)
    est = MTLClassifier(
        backbone="stem",
        backbone_params={**SIZES, "embedding_dim": 8, "dropout": 0.0},
        max_epochs=20,
        batch_size=128,
        lr=3e-3,
        early_stopping=False,
        random_state=0,
    ).fit(X.iloc[train], Y.iloc[train])
    proba = est.predict_proba(X.iloc[test])
    aucs = [roc_auc_score(Y.iloc[test, k], proba[:, k]) for k in range(2)]
    assert min(aucs) > 0.7, aucs


def test_task_loss_reaches_its_own_and_the_shared_tables_only():
    """All forward: every table moves every task; backward: own and shared."""
    torch.manual_seed(0)
    module = _module(3, n_specific_experts=2)
    module.eval()
    x_cat, x_num = torch.randint(1, 5, (6, 2)), torch.randn(6, 2)
    out = module(x_cat, x_num)
    tables = [module.embedding, *module.task_embeddings]
    specific = module.backbone.specific.weight
    for k in range(3):
        params = [t.embedding.weight for t in tables] + [specific]
        *grads, g_specific = torch.autograd.grad(
            out[:, k].sum(), params, retain_graph=True, allow_unused=True
        )
        reached = [g is not None and bool(g.abs().sum() > 0) for g in grads]
        # Index 0: the shared tables; 1 + j: task j's.
        assert reached == [True] + [j == k for j in range(3)], (k, reached)
        experts = g_specific.abs().sum((1, 2)) > 0
        assert experts.tolist() == [j == k for j in range(3)]
    # Forward: another task's tables change task 0's prediction.
    with torch.no_grad():
        module.task_embeddings[1].embedding.weight.mul_(3.0)
        assert not torch.allclose(module(x_cat, x_num)[:, 0], out[:, 0])


def test_a_two_dimensional_input_is_every_state():
    torch.manual_seed(0)
    net = STEM(in_features=6, n_tasks=2, bottom_dims=(8,), tower_dims=(4,))
    net.eval()
    x = torch.randn(5, 6)
    stacked = x.unsqueeze(1).expand(-1, 3, -1)
    torch.testing.assert_close(net(x), net(stacked), rtol=0, atol=0)
    assert STEM.n_embeddings(4) == 5


def test_parameters_against_mmoe():
    """Memory grows with K: the tables are held K + 1 times."""
    counts = {}
    for k in (2, 3, 5):
        for name in ("stem", "mmoe"):
            # Tables larger than the networks, as with real id columns.
            module = _module(k, name, cardinalities=(500, 300))
            tables = [module.embedding, *module.task_embeddings]
            embedding = sum(p.numel() for t in tables for p in t.parameters())
            total = sum(p.numel() for p in module.parameters())
            counts[name, k] = (embedding, total)
    one_table = counts["mmoe", 2][0]
    for k in (2, 3, 5):
        assert counts["mmoe", k][0] == one_table
        assert counts["stem", k][0] == (k + 1) * one_table
        assert counts["stem", k][1] > counts["mmoe", k][1]
    # STEM's growth from K = 2 to 5 is more than MMoE's.
    growth = {n: counts[n, 5][1] - counts[n, 2][1] for n in ("stem", "mmoe")}
    assert growth["stem"] > growth["mmoe"] + 3 * one_table


def test_other_backbones_keep_one_embedding():
    module = _module(3, "mmoe")
    assert len(module.task_embeddings) == 0
    assert not any(k.startswith("task_embeddings") for k in module.state_dict())


def test_safe_file_and_pickle_round_trips(fitted, tmp_path):
    est, X = fitted
    save(est, tmp_path / "stem.rmtl")
    loaded = load(tmp_path / "stem.rmtl")
    assert_same_proba(loaded.predict_proba(X), est.predict_proba(X))
    assert len(loaded.net_.module_.task_embeddings) == 3
    assert loaded.backbone_params_ == est.backbone_params_
    unpickled = pickle.loads(pickle.dumps(est))
    assert_same_proba(unpickled.predict_proba(X), est.predict_proba(X))


def test_onnx_matches_predict_proba(fitted, tmp_path):
    est, X = fitted
    assert_onnx_parity(est, X, tmp_path)


def test_onnx_matches_for_two_tasks(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sklearn_rmtl.export import onnx_inputs, to_onnx

    X, Y = _data(200, 2)
    est = MTLClassifier(backbone="stem", backbone_params=SIZES, **FAST).fit(X, Y)
    session = ort.InferenceSession(to_onnx(est).SerializeToString())
    served = session.run(["probabilities"], onnx_inputs(est, X))[0]
    np.testing.assert_allclose(served, est.predict_proba(X), rtol=0, atol=1e-5)


def test_rmtl_with_stem_as_the_actor():
    """The critics start from copies of the actor's shared tables."""
    X, Y, sessions, times = make_session_data(n_sessions=40)
    est = RMTLClassifier(
        backbone="stem",
        backbone_params=SIZES,
        critic=SessionCritic(max_epochs=1, hidden_dims=(8,)),
        max_epochs=1,
        refit_max_epochs=1,
        random_state=0,
    ).fit(X, Y, session_ids=sessions, timestamps=times)
    assert len(est.net_.module_.task_embeddings) == 2
    assert np.isfinite(est.predict_proba(X)).all()
    assert np.isfinite(est.loss_weights(X, Y)).all()


def test_critics_copy_the_shared_tables():
    from sklearn_rmtl._critic import Critic

    torch.manual_seed(0)
    actor = _module(2)
    critic = Critic(
        cardinalities=[5, 7],
        n_numerical=2,
        n_tasks=2,
        embedding_dim=SIZES["embedding_dim"],
        hidden_dims=(8,),
        shared=False,
    )
    critic.init_embeddings_from(actor.embedding)
    for own in critic.embeddings:
        torch.testing.assert_close(
            own.embedding.weight, actor.embedding.embedding.weight, rtol=0, atol=0
        )


def test_parquet_fit(tmp_path):
    X, Y = _data(300)
    path = tmp_path / "rows.parquet"
    X.assign(**Y).to_parquet(path, row_group_size=100)
    params = {
        "backbone": "stem",
        "backbone_params": SIZES,
        "early_stopping": False,
        **FAST,
    }
    source = ParquetSource(
        path, target=list(Y.columns), features=list(X.columns), block_rows=100
    )
    streamed = MTLClassifier(**params).fit(source)
    assert len(streamed.net_.module_.task_embeddings) == 2
    assert np.isfinite(streamed.predict_proba(X)).all()


def test_sequence_columns_get_a_table_per_task():
    X, Y = _data(200)
    X["history"] = [["i1", "i2"], ["i3"], []] * 66 + [["i4"], ["i5"]]
    est = MTLClassifier(
        backbone="stem",
        backbone_params=SIZES,
        sequence_features={"history": "item"},
        **FAST,
    ).fit(X, Y)
    module = est.net_.module_
    assert all(len(t.attention) == 1 for t in module.task_embeddings)
    assert np.isfinite(est.predict_proba(X)).all()
