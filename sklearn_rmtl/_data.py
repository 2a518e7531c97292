"""Whole-batch data feeding for the skorch nets.

skorch's default pipeline (a ``Dataset`` indexed row by row and a
``DataLoader`` that collates the rows) costs several tensor conversions per
row: at the paper's sizes it took a quarter of an ESMM training step. Here
the data are converted to tensors once, and every batch is one indexing
operation per input.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sklearn_rmtl._distributed import DataParallel


class TensorDictDataset(torch.utils.data.Dataset):
    """Inputs (a dict of arrays) and optional targets, held as tensors.

    skorch accepts any ``torch.utils.data.Dataset`` as ``X``; this one is
    read whole batches at a time by :class:`BatchLoader` (``__getitem__``
    is there for skorch's and torch's generic code paths).

    Parameters
    ----------
    X : mapping of str to array-like
        Equal-length arrays (numpy arrays or tensors), e.g. ``x_cat`` codes
        and ``x_num`` numbers. Converted without copying where possible.
    y : array-like of shape (n_samples, n_tasks), default=None
        Targets, converted to float32.
    device : str or torch.device, default="cpu"
        Where the tensors live. On a GPU the whole data move once, so
        batches are sliced on the device instead of being copied per batch.
    """

    def __init__(
        self,
        X: Mapping[str, Any],
        y: Any = None,
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.X = {k: torch.as_tensor(v, device=device) for k, v in X.items()}
        self.y = None
        if y is not None:
            self.y = torch.as_tensor(y, dtype=torch.float32, device=device)
        lengths = {len(v) for v in self.X.values()}
        if self.y is not None:
            lengths.add(len(self.y))
        if len(lengths) > 1:
            raise ValueError(f"All inputs must have the same length, got {lengths}.")
        self._n = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self._n

    def take(
        self, index: Tensor | slice | int
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """The rows at ``index`` (a tensor of positions, a slice or one row)."""
        Xi = {k: v[index] for k, v in self.X.items()}
        return Xi, None if self.y is None else self.y[index]

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], Tensor]:
        Xi, yi = self.take(i)
        # skorch's convention for a missing target: a zero placeholder.
        return Xi, torch.zeros(0) if yi is None else yi


class StreamingDataset(torch.utils.data.Dataset, abc.ABC):
    """Training rows produced batch by batch rather than held as tensors.

    The seam of out-of-core training (:mod:`sklearn_rmtl.parquet`):
    :class:`BatchLoader` hands its iteration to :meth:`batches`. ``len``
    is the number of rows of one pass.
    """

    @abc.abstractmethod
    def batches(
        self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None
    ) -> Iterator[tuple[dict[str, Tensor], Tensor | None]]:
        """One pass over the rows in batches of ``batch_size``."""

    def __getitem__(self, i: int) -> Any:
        raise TypeError(f"{type(self).__name__} is read in batches, not by row.")


class BatchLoader:
    """Iterate over a :class:`TensorDictDataset` in batches, like a DataLoader.

    The drop-in ``iterator_train`` / ``iterator_valid`` of the nets: skorch
    calls it with the dataset and the ``iterator_*__`` parameters.

    Parameters
    ----------
    dataset : TensorDictDataset or StreamingDataset
        The data; a :class:`StreamingDataset` produces its own batches.
    batch_size : int
        Rows per batch; the last batch may be smaller.
    shuffle : bool, default=False
        Visit the rows in a new random order on every pass.
    generator : torch.Generator, default=None
        Source of the order; None uses torch's global generator.
    data_parallel : DataParallel, default=None
        Under data-parallel training, every rank draws the same batches and
        keeps its shard of each (:meth:`DataParallel.shard
        <sklearn_rmtl._distributed.DataParallel.shard>`).
    """

    def __init__(
        self,
        dataset: TensorDictDataset,
        *,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        data_parallel: DataParallel | None = None,
    ) -> None:
        if not isinstance(dataset, TensorDictDataset | StreamingDataset):
            raise TypeError(
                "BatchLoader reads a TensorDictDataset, got "
                f"{type(dataset).__name__}; pass the inputs as a dict of arrays."
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.data_parallel = data_parallel

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[dict[str, Tensor], Tensor | None]]:
        if isinstance(self.dataset, StreamingDataset):
            yield from self.dataset.batches(
                self.batch_size, shuffle=self.shuffle, generator=self.generator
            )
            return
        n = len(self.dataset)
        dp = self.data_parallel
        if not self.shuffle:
            for start in range(0, n, self.batch_size):
                rows: slice | Tensor = slice(start, start + self.batch_size)
                if dp is not None:
                    rows = dp.shard(torch.arange(n)[rows].to(self.dataset.device))
                yield self.dataset.take(rows)
            return
        # The draws of torch's DataLoader with shuffle=True, so a seed gives
        # the batches it gave: one int64 (its workers' base seed), then the
        # permutation of its RandomSampler.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(n, generator=self.generator).to(self.dataset.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.dataset.take(index if dp is None else dp.shard(index))


def as_dataset(
    X: Any, y: Any = None, *, device: str | torch.device = "cpu"
) -> torch.utils.data.Dataset:
    """``X`` as a :class:`TensorDictDataset` unless it already is a dataset."""
    if isinstance(X, torch.utils.data.Dataset):
        return X
    if not isinstance(X, Mapping):
        raise TypeError(
            "The nets take their inputs as a dict of arrays (x_cat, x_num, ...), "
            f"got {type(X).__name__}."
        )
    return TensorDictDataset(X, y, device=device)


#: Rows per batch of the no-gradient forward passes over many rows (the
#: actor's actions, the critics' weights). Larger batches were slower on CPU
#: ("actor_chunks" in benchmarks/bench_changes.py) and hold more memory.
FORWARD_BATCH = 2048


@torch.no_grad()
def forward_batches(
    fn: Callable[[slice], Tensor], n_rows: int, batch_size: int = FORWARD_BATCH
) -> Tensor:
    """``fn`` applied to consecutive row slices, concatenated, without gradients."""
    return torch.cat(
        [fn(slice(i, i + batch_size)) for i in range(0, n_rows, batch_size)]
    )
