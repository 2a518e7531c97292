"""The interface every multi-task backbone implements."""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np
from torch import nn

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS as D
from sklearn_rmtl.backbones._layers import GroupedMLP, Towers

#: Descriptions of the parameters that several backbones share, written once
#: and put into their docstrings by :func:`fill_doc`.
PARAM_DOCS: dict[str, str] = {
    "in_features": "in_features : int\n    Size of the state vector.",
    "n_tasks": "n_tasks : int\n    Number of tasks.",
    "tower_dims": """\
tower_dims : sequence of int, default=(128, 64)
    Hidden sizes of each task's tower.""",
    "dropout": """\
dropout : float, default=0.2
    Dropout after every hidden activation.""",
    "batch_norm": """\
batch_norm : bool, default=False
    Batch normalisation (per group and feature) before every hidden
    activation of the bottoms/experts and towers. NOTE[DIFF]: the paper's
    networks have none; torch-rechub's MLPs have it.""",
    "gate_batch_norm": """\
gate_batch_norm : bool, default=False
    Batch normalisation of the gate scores before the softmax, as in
    torch-rechub's gates. NOTE[DIFF]: not in the paper's networks.""",
}

_Class = TypeVar("_Class", bound=type)


def fill_doc(**texts: str) -> Callable[[_Class], _Class]:
    """Class decorator: put shared parameter descriptions into the docstring.

    A line of the docstring that holds only placeholders ``{name}`` (one or
    several, separated by spaces) becomes the texts ``name`` of ``texts`` or
    of :data:`PARAM_DOCS`, one after the other, indented as that line; other
    braces in the docstring are left as they are.
    """
    docs = {**PARAM_DOCS, **texts}

    def expand(match: re.Match[str]) -> str:
        names = re.findall(r"\{(\w+)\}", match[2])
        return textwrap.indent("\n".join(docs[name] for name in names), match[1])

    def fill(cls: _Class) -> _Class:
        pattern = r"^( *)((?:\{\w+\} ?)+)$"
        cls.__doc__ = re.sub(pattern, expand, cls.__doc__ or "", flags=re.MULTILINE)
        return cls

    return fill


def parameters_doc(cls: type) -> str:
    """The Parameters section of ``cls``'s docstring, for a class taking them all."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return doc.split("Parameters\n----------\n", 1)[1].split("\n\n", 1)[0]


@dataclass(frozen=True)
class StateFields:
    """The fields of the state vector, in their order, ``dim`` entries each.

    The state (:class:`~sklearn_rmtl._torch_module.FeatureEmbedding`'s
    output) holds one ``dim``-sized vector per categorical column, then one
    per sequence column, then one for all numerical inputs (the field
    ``"numerical"``) if there are any. Backbones that declare
    :attr:`Backbone.needs_fields` receive this layout as ``fields``.

    Parameters
    ----------
    names : tuple of str
        The fields' names: the categorical columns, the sequence columns,
        then ``"numerical"`` where the state has numerical inputs (a column
        itself named ``"numerical"`` is the one a name selects).
    n_categorical : int
        How many of the first fields are categorical columns.
    dim : int
        Size of each field's vector (``embedding_dim``).
    """

    names: tuple[str, ...]
    n_categorical: int
    dim: int

    @property
    def in_features(self) -> int:
        """Size of the state vector."""
        return len(self.names) * self.dim

    def select(self, param: str, names: Sequence[str] | None) -> tuple[str, ...]:
        """Check the field names given as ``backbone_params[param]``.

        Parameters
        ----------
        param : str
            The key of ``backbone_params`` that gave ``names`` (for errors).
        names : sequence of str or None
            Names of fields; None selects every categorical column.

        Returns
        -------
        names : tuple of str
            The selected fields' names, in the order given.

        Raises
        ------
        ValueError
            For a name that is no field (the message lists the valid ones),
            a name given twice, or a string instead of a list of names.
        """
        if names is None:
            return self.names[: self.n_categorical]
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise ValueError(
                f"backbone_params[{param!r}] must be a list of field names such "
                f"as [{self.names[0]!r}] or None, got {names!r}."
            )
        names = tuple(names)
        unknown = [n for n in names if not isinstance(n, str) or n not in self.names]
        if unknown:
            raise ValueError(
                f"backbone_params[{param!r}] names {unknown}, which are not "
                f"fields of the state; valid names are {list(self.names)} (the "
                "categorical columns, the sequence columns and 'numerical' for "
                "the numerical inputs)."
            )
        if len(set(names)) < len(names):
            raise ValueError(
                f"backbone_params[{param!r}] names a field twice: {list(names)}."
            )
        return names

    def spans(self, names: Sequence[str]) -> tuple[tuple[int, int], ...]:
        """The state's column ranges of the fields ``names``, in that order.

        Parameters
        ----------
        names : sequence of str
            Names of fields (checked by :meth:`select`).

        Returns
        -------
        spans : tuple of (int, int)
            ``(start, stop)`` ranges of the state's columns; adjacent ranges
            are merged, so that selecting them is few slices.
        """
        spans: list[tuple[int, int]] = []
        for name in names:
            start = self.names.index(name) * self.dim
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], start + self.dim)
            else:
                spans.append((start, start + self.dim))
        return tuple(spans)


class Backbone(nn.Module):
    """Base class of the multi-task networks (the RMTL actor).

    A backbone maps a state vector (the concatenated feature embeddings) to one
    logit per task. Subclasses take ``in_features`` and ``n_tasks`` plus the
    size keywords they use, all keyword-only; the estimators fill the sizes
    from ``backbone_params`` and the paper's defaults.

    Parameters
    ----------
    in_features : int
        Size of the state vector.
    n_tasks : int
        Number of tasks K (``>= min_tasks``).

    Shape
    -----
    - input: ``(batch, in_features)``
    - output: ``(batch, n_tasks)`` logits; ``sigmoid(output)[:, k]`` is the
      predicted probability of task ``k``.
    """

    #: Smallest number of tasks the architecture is defined for.
    min_tasks: ClassVar[int] = 1
    #: Whether ``bottom_dims`` may be empty (the towers then read the input).
    allow_empty_bottom: ClassVar[bool] = False
    #: Whether the backbone takes the keyword ``fields``: where each field
    #: lies in the state (:class:`StateFields`), given by
    #: :class:`~sklearn_rmtl._torch_module.MultiTaskModule`.
    needs_fields: ClassVar[bool] = False

    @classmethod
    def n_embeddings(cls, n_tasks: int) -> int:
        """How many states (sets of embedding tables) the backbone reads.

        :class:`~sklearn_rmtl._torch_module.MultiTaskModule` builds that many
        feature embeddings; with more than one the backbone's input is
        ``(batch, n_embeddings, in_features)``, the module's ``embedding``
        giving ``x[:, 0]`` and its ``task_embeddings`` the others (STEM: one
        shared state and one per task). Most backbones read one state.

        Parameters
        ----------
        n_tasks : int
            Number of tasks K.

        Returns
        -------
        int
        """
        return 1

    def __init__(self, *, in_features: int, n_tasks: int) -> None:
        super().__init__()
        name = type(self).__name__
        if in_features < 1:
            raise ValueError(f"{name}: in_features must be >= 1, got {in_features}")
        if n_tasks < self.min_tasks:
            raise ValueError(
                f"{name} needs at least {self.min_tasks} tasks (y must have >= "
                f"{self.min_tasks} columns), got {n_tasks}; use another backbone "
                "such as 'sharedbottom' or 'mmoe' for fewer tasks."
            )
        self.in_features = in_features
        self.n_tasks = n_tasks

    def _check_sizes(
        self,
        bottom_dims: Sequence[int],
        tower_dims: Sequence[int],
        dropout: float,
        batch_norm: bool,
    ) -> None:
        """Check and keep the layer settings that every subclass takes.

        Subclasses call it after checking their counts of experts and before
        their gate settings: that order decides which of several bad values
        the error names.
        """
        self.bottom_dims = check_dims(
            "bottom_dims", bottom_dims, allow_empty=self.allow_empty_bottom
        )
        self.tower_dims = check_dims("tower_dims", tower_dims, allow_empty=True)
        self.dropout = check_dropout(dropout)
        self.batch_norm = check_flag("batch_norm", batch_norm)

    def _mlps(self, n_groups: int, in_features: int) -> GroupedMLP:
        """``n_groups`` MLPs of sizes ``bottom_dims``: the bottoms or experts."""
        return GroupedMLP(
            n_groups,
            in_features,
            self.bottom_dims,
            self.dropout,
            batch_norm=self.batch_norm,
        )

    def _towers(self, in_features: int) -> Towers:
        """One tower of sizes ``tower_dims`` per task."""
        return Towers(
            self.n_tasks,
            in_features,
            self.tower_dims,
            self.dropout,
            batch_norm=self.batch_norm,
        )


class SimpleBackbone(Backbone):
    """A backbone configured by the layer settings alone.

    Subclasses take the keywords ``in_features``, ``n_tasks``,
    ``bottom_dims``, ``tower_dims``, ``dropout`` and ``batch_norm`` (see
    :class:`~sklearn_rmtl.backbones.SingleTask`) and create their layers in
    :meth:`_build`, once the settings are checked and kept.
    """

    def __init__(
        self,
        *,
        in_features: int,
        n_tasks: int,
        bottom_dims: Sequence[int] = D["bottom_dims"],
        tower_dims: Sequence[int] = D["tower_dims"],
        dropout: float = D["dropout"],
        batch_norm: bool = D["batch_norm"],
    ) -> None:
        super().__init__(in_features=in_features, n_tasks=n_tasks)
        self._check_sizes(bottom_dims, tower_dims, dropout, batch_norm)
        self._build()

    def _build(self) -> None:
        """Create the layers from the checked settings."""
        raise NotImplementedError


def check_dims(name: str, dims: Sequence[int], *, allow_empty: bool) -> tuple[int, ...]:
    """Validate a sequence of layer sizes and return it as a tuple."""
    if isinstance(dims, str) or not isinstance(dims, Iterable):
        hint = f"; for one layer write ({dims},)" if isinstance(dims, int) else ""
        raise ValueError(
            f"{name} must be a sequence of layer sizes such as (256, 128), got "
            f"{dims!r}{hint}."
        )
    dims = tuple(dims)
    if (not dims and not allow_empty) or any(
        not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims
    ):
        need = (
            "positive ints" if allow_empty else "a non-empty sequence of positive ints"
        )
        raise ValueError(f"{name} must be {need}, got {dims!r}")
    return dims


def check_dropout(dropout: float) -> float:
    """Validate a dropout probability."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def check_count(name: str, value: int) -> int:
    """Validate a positive count such as a number of experts."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_flag(name: str, value: bool) -> bool:
    """Validate a boolean switch such as ``batch_norm``."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return bool(value)
