"""Whole-batch data feeding for the skorch nets.

skorch's default pipeline (a ``Dataset`` indexed row by row and a
``DataLoader`` that collates the rows) costs several tensor conversions per
row: at the paper's sizes it took a quarter of an ESMM training step. Here
the data are converted to tensors once, and every batch is one indexing
operation per input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
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


class BlockStream(torch.utils.data.Dataset):
    """Training rows read block by block rather than held as one dataset.

    :class:`BatchLoader` hands its iteration to :meth:`batches`. Each
    shuffled pass visits the blocks in an order drawn from ``seed`` and a
    block's rows in an order drawn from the training's generator; a batch
    continues into the next block, so a pass has ``ceil(len / batch_size)``
    batches. One block gives :class:`BatchLoader`'s batches of that block
    exactly (the same draws), and is read once for every pass.

    Parameters
    ----------
    block : callable
        ``block(b)``: the training rows of block ``b`` as a
        :class:`TensorDictDataset`, or None when it has none.
    n_blocks : int
        Number of blocks.
    n_rows : int
        Rows of one pass (``len``).
    seed : int
        Seed of the block order.
    """

    def __init__(
        self,
        block: Callable[[int], TensorDictDataset | None],
        n_blocks: int,
        n_rows: int,
        *,
        seed: int,
    ) -> None:
        self.block = block
        self.n_blocks = n_blocks
        self.n_rows = n_rows
        self.block_rng = np.random.default_rng(seed)
        self._only: TensorDictDataset | None = None

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, i: int) -> Any:
        raise TypeError("BlockStream is read in batches, not by row.")

    def _read(self, b: int) -> TensorDictDataset | None:
        if self.n_blocks > 1:
            return self.block(b)
        if self._only is None:
            self._only = self.block(b)
        return self._only

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        data_parallel: DataParallel | None = None,
    ) -> Iterator[tuple[dict[str, Tensor], Tensor | None]]:
        """One pass over the rows in batches of ``batch_size``.

        With ``data_parallel`` every rank draws the same batches and keeps
        its shard of each.
        """
        order = np.arange(self.n_blocks)
        if shuffle:
            # The draws of torch's DataLoader with shuffle=True (see
            # BatchLoader), then the blocks' order.
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            if self.n_blocks > 1:
                order = self.block_rng.permutation(self.n_blocks)
        carry: TensorDictDataset | None = None

        def take(data: TensorDictDataset, index: Tensor) -> Any:
            if data_parallel is not None:
                index = data_parallel.shard(index)
            return data.take(index)

        for b in order:
            data = self._read(int(b))
            if data is None:
                continue
            n = len(data)
            rows = (
                torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            ).to(data.device)
            start = 0
            if carry is not None:  # the batch begun in the previous block
                start = min(batch_size - len(carry), n)
                carry = _concat(carry, data, rows[:start])
                if len(carry) < batch_size:
                    continue
                yield take(carry, torch.arange(len(carry), device=data.device))
                carry = None
            full = start + (n - start) // batch_size * batch_size
            for s in range(start, full, batch_size):
                yield take(data, rows[s : s + batch_size])
            if full < n:
                carry = _concat(None, data, rows[full:])
        if carry is not None:
            yield take(carry, torch.arange(len(carry), device=carry.device))


def _concat(
    head: TensorDictDataset | None, data: TensorDictDataset, rows: Tensor
) -> TensorDictDataset:
    """``head`` followed by ``data``'s ``rows``."""
    X, y = data.take(rows)
    if head is not None:
        assert head.y is not None and y is not None
        X = {k: torch.cat([head.X[k], v]) for k, v in X.items()}
        y = torch.cat([head.y, y])
    return TensorDictDataset(X, y, device=data.device)


class BatchLoader:
    """Iterate over a :class:`TensorDictDataset` in batches, like a DataLoader.

    The drop-in ``iterator_train`` / ``iterator_valid`` of the nets: skorch
    calls it with the dataset and the ``iterator_*__`` parameters.

    Parameters
    ----------
    dataset : TensorDictDataset or BlockStream
        The data; a :class:`BlockStream` produces its own batches.
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
        if not isinstance(dataset, TensorDictDataset | BlockStream):
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
        if isinstance(self.dataset, BlockStream):
            yield from self.dataset.batches(
                self.batch_size,
                shuffle=self.shuffle,
                generator=self.generator,
                data_parallel=self.data_parallel,
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
