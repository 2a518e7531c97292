"""Funnel-aware losses: a task's labels count only where another task is positive.

``task_space={"purchase": "click"}`` trains purchase on the rows where click
is positive, as a conversion rate is learned on clicks. It is built on the
missing labels: a label outside its task's space becomes NaN when a block
of rows is read (:class:`TaskSpaceRows`), so every phase that reads labels
(the loss mask, sample weights, task balancing, the held-out checks and
their metrics, RMTL's rewards, critics and refit weights) treats it exactly
as a label the user left missing. The mask is derived from each block's own
labels, so a Parquet source streamed block by block gets the same rows as
the same data in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from numbers import Integral
from typing import Any

import numpy as np

from sklearn_rmtl._rows import Block, Rows

#: (dependent task, conditioning task) index pairs, conditions first.
Pairs = tuple[tuple[int, int], ...]


def resolve_task_space(task_space: Mapping[Any, Any] | None, task_names: Any) -> Pairs:
    """Validate ``task_space`` against y's tasks; return its index pairs.

    Parameters
    ----------
    task_space : dict or None
        ``{task: conditioning_task}``, each a task name of y (str) or a
        position in y's columns (int).
    task_names : array-like of str
        y's task names, in column order.

    Returns
    -------
    pairs : tuple of (int, int)
        ``(k, j)``: task ``k`` counts only where task ``j`` is positive.
        Ordered so that a conditioning task that is itself conditioned comes
        first, so that applying them in order (:func:`apply_task_space`)
        masks a chain (purchase on click on view) transitively.

    Raises
    ------
    ValueError
        For a task that is not one of y's, a task named twice, a task
        conditioned on itself, or a cycle.
    """
    if not task_space:
        return ()
    names = [str(n) for n in task_names]

    def index(task: Any) -> int:
        if isinstance(task, str) and task in names:
            return names.index(task)
        # bool is an Integral: True would silently mean the second task.
        if (
            isinstance(task, Integral)
            and not isinstance(task, bool)
            and 0 <= int(task) < len(names)
        ):
            return int(task)
        raise ValueError(
            f"task_space names the task {task!r}, which is not one of y's tasks "
            f"{names} (a task is its name, or its position 0 to "
            f"{len(names) - 1} in y's columns)."
        )

    parent: dict[int, int] = {}
    for task, condition in task_space.items():
        k, j = index(task), index(condition)
        if k in parent:
            raise ValueError(
                f"task_space gives task {names[k]!r} twice (by name and by "
                "position); give each task one conditioning task."
            )
        if k == j:
            raise ValueError(
                f"task_space conditions task {names[k]!r} on itself; a task's "
                "space is the rows where another task is positive."
            )
        parent[k] = j
    depth: dict[int, int] = {}
    for k in parent:
        chain = [k]
        while chain[-1] in parent and chain[-1] not in depth:
            nxt = parent[chain[-1]]
            if nxt in chain:
                cycle = [names[i] for i in chain[chain.index(nxt) :]] + [names[nxt]]
                raise ValueError(
                    f"task_space has a cycle: {' -> '.join(cycle)} (each task "
                    "counting only where the next one is positive). A funnel "
                    "has a first step that is conditioned on nothing."
                )
            chain.append(nxt)
        base = depth.get(chain[-1], 0)
        for steps, i in enumerate(reversed(chain[:-1]), start=1):
            depth[i] = base + steps
    return tuple(sorted(parent.items(), key=lambda pair: (depth[pair[0]], pair[0])))


def apply_task_space(y01: np.ndarray, pairs: Pairs) -> np.ndarray:
    """``y01`` with each dependent label NaN where its condition is not positive.

    A condition that is negative or missing (NaN, or itself outside its own
    space) leaves the dependent label missing: the row is outside the
    dependent task's space, or not known to be in it. ``y01`` is not
    modified; without pairs it is returned as is.
    """
    if not pairs:
        return y01
    out = np.array(y01, copy=True)
    for k, j in pairs:
        out[:, k] = np.where(out[:, j] == 1, out[:, k], np.nan)
    return out


class TaskSpaceRows(Rows):
    """Rows whose labels outside their task's space read as missing.

    NOTE[DIFF]: the paper trains every task on every row; with a task space
    (off by default) a task's labels outside it have no loss, reward or TD
    error, exactly as the missing labels of the paper's deviation for them.

    Parameters
    ----------
    source : Rows
        The rows as given (in memory or a Parquet source).
    task_space : dict
        The estimator's ``task_space``, resolved against the labels' task
        names when :meth:`_labels` reads them (the first thing a fit does).
    """

    def __init__(self, source: Rows, task_space: Mapping[Any, Any]) -> None:
        self.source = source
        self.task_space = task_space
        self.n_rows = source.n_rows
        self.block_rows = source.block_rows
        self.n_blocks = source.n_blocks
        self.pairs: Pairs | None = None
        self._names: list[str] = []

    def _labels(self) -> tuple[np.ndarray, np.ndarray]:
        # The classes are those of all of a task's labels, as without
        # task_space: the positive label stays the same whatever the space.
        classes, task_names = self.source._labels()
        self.pairs = resolve_task_space(self.task_space, task_names)
        self._names = [str(n) for n in task_names]
        return classes, task_names

    def _masked(self, block: Block) -> Block:
        if block.y01 is None:
            return block
        if self.pairs is None:
            raise RuntimeError("TaskSpaceRows._labels must be read first.")
        return dataclasses.replace(block, y01=apply_task_space(block.y01, self.pairs))

    def _block(self, i: int) -> Block:
        return self._masked(self.source._block(i))

    def _rows(self, start: int, stop: int) -> Block:
        return self._masked(self.source._rows(start, stop))

    def session_bounds(self) -> list[tuple[int, int]]:
        return self.source.session_bounds()

    @property
    def has_sessions(self) -> bool:
        return self.source.has_sessions

    def _untrained_note(self, task: int) -> str:
        for k, j in self.pairs or ():
            if k == task:
                return (
                    f" With task_space its labels count only on the rows where "
                    f"{self._names[j]!r} is positive (and its own label observed)."
                )
        return ""


def with_task_space(rows: Rows, task_space: Mapping[Any, Any] | None) -> Rows:
    """``rows`` read under ``task_space`` (the rows as given when it is empty).

    Rows already read under a task space (an actor fitted on its RMTL
    estimator's rows) are unwrapped first: an estimator's own ``task_space``
    decides.
    """
    if isinstance(rows, TaskSpaceRows):
        rows = rows.source
    return TaskSpaceRows(rows, task_space) if task_space else rows


def task_space_labels(estimator: Any, y01: np.ndarray) -> np.ndarray:
    """A fitted estimator's ``task_space`` applied to 0/1 labels of its tasks."""
    pairs = resolve_task_space(
        getattr(estimator, "task_space", None), estimator.task_names_
    )
    return apply_task_space(y01, pairs)
