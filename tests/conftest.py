"""Shared seeded test data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

# Networks small enough for fast tests; the architecture is unchanged.
SMALL = {"embedding_dim": 8, "bottom_dims": (32, 16), "tower_dims": (16,)}


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
