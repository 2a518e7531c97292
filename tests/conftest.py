"""Shared seeded test data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

# Networks small enough for fast tests; the architecture is unchanged.
SMALL = {"embedding_dim": 8, "bottom_dims": (32, 16), "tower_dims": (16,)}


class TinyActor(torch.nn.Module):
    """Logits from 2 numerical features (the actor's signature), 2 tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        return self.linear(x_num)


def tiny_critic_setup():
    """A seeded :class:`TinyActor`, a critic of its inputs and 8 states."""
    from sklearn_rmtl._critic import Critic

    torch.manual_seed(0)
    critic = Critic(
        cardinalities=[5, 4],
        n_numerical=2,
        n_tasks=2,
        embedding_dim=3,
        hidden_dims=(6,),
        shared=True,
    )
    g = torch.Generator().manual_seed(0)
    state = (torch.randint(0, 4, (8, 2), generator=g), torch.randn(8, 2, generator=g))
    return TinyActor(), critic, state


def assert_same_proba(actual, desired):
    """Probabilities equal up to float32 rounding.

    A matrix product may round differently for another batch shape or on
    another CPU (about 1e-8 in a probability); a real difference (rows out
    of order, other weights, other codes) is orders of magnitude larger.
    """
    np.testing.assert_allclose(actual, desired, rtol=0, atol=1e-6)


def make_mtl_data(
    n_samples: int = 1500, n_tasks: int = 2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mixed categorical/numerical features with a learnable funnel of tasks.

    Task 0 depends on the item category and the price; task k > 0 can only
    be positive where task k - 1 is (click -> add to cart -> purchase).
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "item": pd.Categorical(rng.choice(list("abcdefgh"), n_samples)),
            "user": rng.integers(0, 40, n_samples).astype(str),
            "price": rng.normal(size=n_samples),
            "age": rng.uniform(18, 70, n_samples),
        }
    )
    score = np.where(X["item"].isin(list("abc")), 1.5, -1.0) + X["price"].to_numpy()
    labels = {}
    previous = np.ones(n_samples, dtype=bool)
    for k in range(n_tasks):
        p = 1 / (1 + np.exp(-(score - 0.5 * k + 0.5 * k * X["price"].to_numpy())))
        previous = previous & (rng.random(n_samples) < p)
        labels[f"task{k}"] = previous.astype(int)
    return X, pd.DataFrame(labels)


@pytest.fixture
def mtl_data():
    return make_mtl_data()


def make_session_data(
    n_sessions: int = 150, max_length: int = 8, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """Sessions of varying length whose click rate decays with position.

    Returns X, Y (click, purchase), string session ids and datetime
    timestamps, with the rows shuffled so that no test relies on order.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length + 1, n_sessions)
    sessions = np.repeat([f"s{i}" for i in range(n_sessions)], lengths)
    position = np.concatenate([np.arange(n) for n in lengths])
    n = len(sessions)
    X = pd.DataFrame(
        {
            "item": pd.Categorical(rng.choice(list("abcdef"), n)),
            "position": position,
            "price": rng.normal(size=n),
        }
    )
    score = (
        np.where(X["item"].isin(list("ab")), 1.0, -0.5) + X["price"] - 0.3 * position
    )
    click = rng.random(n) < 1 / (1 + np.exp(-score))
    purchase = click & (rng.random(n) < 0.4)
    Y = pd.DataFrame({"click": click.astype(int), "purchase": purchase.astype(int)})
    start = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        rng.integers(0, 10**6, n_sessions), unit="s"
    )
    times = (
        np.repeat(start.to_numpy(), lengths)
        + pd.to_timedelta(position * 30, unit="s").to_numpy()
    )
    perm = rng.permutation(n)
    return (
        X.iloc[perm].reset_index(drop=True),
        Y.iloc[perm].reset_index(drop=True),
        sessions[perm],
        times[perm],
    )


@pytest.fixture
def mlflow_file_store(tmp_path, monkeypatch):
    """MLflow (skipped if absent) tracking to a local file store in ``tmp_path``."""
    mlflow = pytest.importorskip("mlflow")
    # MLflow 3 refuses new file stores unless told; no telemetry from tests.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    yield mlflow
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def two_task_sessions():
    """Synthetic sessions (click, purchase): X, Y, session ids, times."""
    from sklearn_rmtl.datasets import make_sessions

    return make_sessions(40, return_X_y=True, random_state=0)


@pytest.fixture(scope="module")
def two_task_mtl(two_task_sessions):
    """A small fitted MTLClassifier of ``two_task_sessions``."""
    from sklearn_rmtl import MTLClassifier

    X, Y, _, _ = two_task_sessions
    return MTLClassifier(
        backbone="sharedbottom",
        backbone_params={"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)},
        max_epochs=2,
        random_state=0,
    ).fit(X, Y)


def assert_onnx_parity(est, X, tmp_path):
    """The ONNX export of ``est`` (fitted on ``X``'s "item" and categorical
    "user") gives its probabilities, with missing and unseen values too."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sklearn_rmtl.export import onnx_inputs, to_onnx

    path = tmp_path / "model.onnx"
    to_onnx(est, path)
    session = ort.InferenceSession(str(path))
    new = X.copy()
    new.loc[::4, "item"] = np.nan  # missing and unseen values
    new["user"] = new["user"].cat.add_categories(["never_seen"])
    new.loc[1::4, "user"] = "never_seen"
    for rows in (slice(None), slice(0, 1), slice(3, 40)):
        part = new.iloc[rows]
        served = session.run(["probabilities"], onnx_inputs(est, part))[0]
        assert served.shape == (len(part), len(est.task_names_))
        np.testing.assert_allclose(served, est.predict_proba(part), rtol=0, atol=1e-5)
