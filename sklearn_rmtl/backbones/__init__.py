"""Multi-task backbones (the RMTL actor), registered by name.

Adding a backbone is one module defining a :class:`Backbone` subclass and one
line in :data:`BACKBONES`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from sklearn_rmtl._defaults import BACKBONE_DEFAULTS
from sklearn_rmtl.backbones._base import Backbone, StateFields
from sklearn_rmtl.backbones.aitm import AITM
from sklearn_rmtl.backbones.esmm import ESMM
from sklearn_rmtl.backbones.mmoe import MMoE
from sklearn_rmtl.backbones.omoe import OMoE
from sklearn_rmtl.backbones.pepnet import PEPNet
from sklearn_rmtl.backbones.ple import PLE
from sklearn_rmtl.backbones.sharedbottom import SharedBottom
from sklearn_rmtl.backbones.singletask import SingleTask
from sklearn_rmtl.backbones.stem import STEM

#: Keys of ``backbone_params`` that configure the feature embedding
#: (:class:`sklearn_rmtl._torch_module.FeatureEmbedding`), not the backbone.
EMBEDDING_KEYS: tuple[str, ...] = (
    "embedding_dim",
    "embedding_init_std",
    "sequence_pooling",
    "attention_dims",
)

#: Backbone classes by the name the estimators accept as ``backbone``.
BACKBONES: dict[str, type[Backbone]] = {
    "singletask": SingleTask,
    "sharedbottom": SharedBottom,
    "esmm": ESMM,
    "mmoe": MMoE,
    "ple": PLE,
    "omoe": OMoE,
    "aitm": AITM,
    "pepnet": PEPNet,
    "stem": STEM,
}


def backbone_keys(name: str) -> list[str]:
    """Size keywords that backbone ``name`` accepts (besides the input sizes)."""
    params = inspect.signature(BACKBONES[name]).parameters
    # ``fields`` is the state's layout, given by the module, not a size.
    return [p for p in params if p not in ("in_features", "n_tasks", "fields")]


def resolve_backbone_params(
    name: str, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Merge ``params`` over the paper's defaults for backbone ``name``.

    Unknown keys raise a ``ValueError`` listing the valid ones, so that a typo
    never silently falls back to a default.

    Parameters
    ----------
    name : str
        A key of :data:`BACKBONES`.
    params : mapping or None
        User overrides (the estimators' ``backbone_params``).

    Returns
    -------
    params : dict
        Every keyword of the backbone plus those of :data:`EMBEDDING_KEYS`
        (used by the feature embedding, not the backbone).

    Examples
    --------
    >>> from sklearn_rmtl.backbones import resolve_backbone_params
    >>> resolve_backbone_params("mmoe", {"n_experts": 4})["n_experts"]
    4
    """
    valid = [*EMBEDDING_KEYS, *backbone_keys(name)]
    params = dict(params or {})
    unknown = sorted(set(params) - set(valid))
    if unknown:
        # A key of another backbone (ESMM's counterfactual, PEPNet's gate
        # fields) names the backbones that take it.
        owners = [
            f"{key!r} is a key of backbone{'s' * (len(names) > 1)} "
            + ", ".join(map(repr, names))
            for key in unknown
            if (names := [b for b in BACKBONES if key in backbone_keys(b)])
        ]
        hint = f" ({'; '.join(owners)})" if owners else ""
        raise ValueError(
            f"backbone_params has keys {unknown} that backbone {name!r} does not "
            f"use; valid keys are {valid}.{hint}"
        )
    return {k: params.get(k, BACKBONE_DEFAULTS[k]) for k in valid}


__all__ = [
    "AITM",
    "BACKBONES",
    "EMBEDDING_KEYS",
    "ESMM",
    "PLE",
    "STEM",
    "Backbone",
    "MMoE",
    "OMoE",
    "PEPNet",
    "SharedBottom",
    "SingleTask",
    "StateFields",
    "resolve_backbone_params",
]
