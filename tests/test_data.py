"""Whole-batch data feeding: TensorDictDataset, BatchLoader, forward_batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skorch.dataset import Dataset
from torch.utils.data import DataLoader

from sklearn_rmtl._data import (
    BatchLoader,
    TensorDictDataset,
    as_dataset,
    forward_batches,
)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    X = {
        "x_cat": rng.integers(0, 9, (1000, 3)),
        "x_num": rng.normal(size=(1000, 2)).astype(np.float32),
    }
    y = (rng.random((1000, 2)) < 0.3).astype(np.float32)
    return X, y


def test_shuffled_batches_equal_skorchs_default_loader(arrays):
    # Same generator seed, same rows in the same batches as skorch's
    # DataLoader over its per-row Dataset, which the BatchLoader replaced.
    X, y = arrays
    ours = list(
        BatchLoader(
            TensorDictDataset(X, y),
            batch_size=128,
            shuffle=True,
            generator=torch.Generator().manual_seed(3),
        )
    )
    skorch_default = list(
        DataLoader(
            Dataset(X, y),
            batch_size=128,
            shuffle=True,
            generator=torch.Generator().manual_seed(3),
        )
    )
    assert len(ours) == len(skorch_default) == 8
    for (xa, ya), (xb, yb) in zip(ours, skorch_default, strict=True):
        assert xa.keys() == xb.keys()
        for key in xa:
            torch.testing.assert_close(xa[key], xb[key])
        torch.testing.assert_close(ya, yb)


def test_ordered_batches_cover_every_row_once(arrays):
    X, y = arrays
    loader = BatchLoader(TensorDictDataset(X, y), batch_size=300)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [len(b[1]) for b in batches] == [300, 300, 300, 100]
    np.testing.assert_array_equal(
        torch.cat([b[0]["x_cat"] for b in batches]).numpy(), X["x_cat"]
    )
    assert batches[0][1].dtype == torch.float32


def test_each_epoch_draws_a_new_order(arrays):
    X, y = arrays
    loader = BatchLoader(
        TensorDictDataset(X, y),
        batch_size=1000,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    first, second = (next(iter(loader))[0]["x_num"] for _ in range(2))
    assert not torch.equal(first, second)
    # ...a permutation of the same rows.
    torch.testing.assert_close(
        first.sum(0), torch.as_tensor(X["x_num"]).sum(0), rtol=1e-4, atol=1e-4
    )


def test_inputs_without_target(arrays):
    X, _ = arrays
    dataset = TensorDictDataset(X)
    Xi, yi = next(iter(BatchLoader(dataset, batch_size=10)))
    assert yi is None and Xi["x_cat"].shape == (10, 3)
    # skorch's generic paths index single rows; no target gives a placeholder.
    row, target = dataset[4]
    np.testing.assert_array_equal(row["x_cat"].numpy(), X["x_cat"][4])
    assert target.numel() == 0


def test_data_live_on_the_requested_device(arrays):
    # On a GPU the whole data move once and batches are sliced there. The
    # "meta" device checks the placement logic without a GPU.
    X, y = arrays
    dataset = TensorDictDataset(X, y, device="meta")
    assert {v.device.type for v in dataset.X.values()} == {"meta"}
    assert dataset.y is not None and dataset.y.device.type == "meta"
    loader = BatchLoader(
        dataset, batch_size=256, shuffle=True, generator=torch.Generator()
    )
    Xi, yi = next(iter(loader))
    assert Xi["x_cat"].device.type == "meta" and yi.shape == (256, 2)


def test_clear_errors(arrays):
    X, y = arrays
    with pytest.raises(ValueError, match="same length"):
        TensorDictDataset(X, y[:10])
    with pytest.raises(TypeError, match="TensorDictDataset"):
        BatchLoader(Dataset(X, y), batch_size=10)
    with pytest.raises(TypeError, match="dict of arrays"):
        as_dataset(np.zeros((3, 2)))
    dataset = TensorDictDataset(X, y)
    assert as_dataset(dataset) is dataset


def test_forward_batches_concatenates_slices():
    x = torch.arange(10.0)
    calls = []

    def fn(rows):
        calls.append(rows)
        assert not torch.is_grad_enabled()
        return x[rows] * 2

    out = forward_batches(fn, 10, batch_size=4)
    torch.testing.assert_close(out, x * 2)
    assert calls == [slice(0, 4), slice(4, 8), slice(8, 12)]
