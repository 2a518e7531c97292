"""The validated inputs of one fit, shared by every phase that trains on them.

``fit`` validates and encodes the data once (:func:`prepare_fit_data`,
:meth:`FitData.encode`); pretraining, the critics and the refit all read the
same :class:`FitData`, so that they see the same rows, seed and held-out
split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length, validate_data

from sklearn_rmtl._encoding import EncodedParts, FeatureEncoder, check_features
from sklearn_rmtl._validation import (
    check_metadata,
    check_multitask_target,
    check_sample_weight,
    resolve_device,
)


def encode_inputs(parts: EncodedParts, **extra: np.ndarray) -> dict[str, np.ndarray]:
    """The network's input dict from an encoding's integer and float parts.

    Parameters
    ----------
    parts : EncodedParts
        From ``FeatureEncoder._transform_parts`` (or ``_fit_transform_parts``):
        int64 codes, which stay exact whatever the vocabulary size (the
        public float32 ``transform`` holds 2**24 codes), and float32 numbers.
    **extra : ndarray
        Further inputs carried in the dict (e.g. per-row loss weights).

    Returns
    -------
    dict of str to ndarray
        ``x_cat`` (int64 codes), ``x_num`` (contiguous floats) and ``extra``.
    """
    return {
        "x_cat": parts.codes,
        "x_num": np.ascontiguousarray(parts.numbers),
        **extra,
    }


def encode_with(encoder: FeatureEncoder, X: Any) -> dict[str, np.ndarray]:
    """The network inputs of ``X`` under a fitted ``encoder``."""
    return encode_inputs(encoder._transform_parts(X))


@dataclass
class FitData:
    """Validated training inputs shared by the phases of a fit.

    ``y01`` holds 0/1 labels with the missing ones filled by 0, so that
    every computation on them stays finite; ``observed`` (None: all) marks
    the labels that exist and ``sample_weight`` (None: all 1) the user's
    weights, both of shape (n_samples, n_tasks). Their product
    :attr:`loss_mask` multiplies every per-entry loss.
    """

    X: Any
    y01: np.ndarray
    classes: np.ndarray
    task_names: np.ndarray
    probe: BaseEstimator
    session_ids: np.ndarray | None
    times: np.ndarray | None
    device: str
    seed: int
    valid: np.ndarray | None
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    cardinalities: list[int] = field(default_factory=list)
    observed: np.ndarray | None = None
    sample_weight: np.ndarray | None = None
    # Out-of-core fits (sklearn_rmtl.parquet): the training rows, streamed;
    # the arrays above then hold the held-out rows only (``valid`` all True).
    train_stream: Any = None

    @property
    def n_tasks(self) -> int:
        return int(self.y01.shape[1])

    @property
    def loss_mask(self) -> np.ndarray | None:
        """Weight of each (row, task) entry in the loss, float32; None: all 1.

        The user's sample weight where the label is observed, 0 where it is
        missing.
        """
        return loss_mask(self.observed, self.sample_weight)

    @property
    def y_observed(self) -> np.ndarray:
        """``y01`` with NaN where a label is missing (to refit on the same y)."""
        if self.observed is None:
            return self.y01
        return np.where(self.observed, self.y01, np.nan).astype(np.float32)

    @property
    def kept_rows(self) -> np.ndarray | None:
        """Rows with some weight in some task; None when that is every row.

        A row whose entries all weigh 0 (zero sample weight, or no observed
        label) is left out wherever rows are counted rather than weighted:
        the encoder's vocabulary and scaling, and the held-out split.
        """
        return kept_rows(self.loss_mask)

    @property
    def n_samples(self) -> int:
        return int(self.y01.shape[0])

    def encode(self, encoder: FeatureEncoder, *, fitted: bool = False) -> None:
        """Encode X once for every phase (fitting the encoder unless fitted)."""
        kept = self.kept_rows
        if fitted:
            parts = encoder._transform_parts(self.X)
        elif kept is None:
            parts = encoder._fit_transform_parts(self.X)
        else:
            # Rows that weigh nothing do not shape the vocabulary or the
            # scaling: a zero weight is the same as dropping the row.
            encoder.fit(take_rows(self.X, kept))
            parts = encoder._transform_parts(self.X)
        self.cardinalities = encoder.cardinalities_.tolist()
        self.inputs = encode_inputs(parts)

    def fitted_state(self, **state: Any) -> dict[str, Any]:
        """Fitted attributes common to the estimators, plus ``state``."""
        out = {
            "classes_": self.classes,
            "n_tasks_": self.n_tasks,
            "task_names_": self.task_names,
            "n_features_in_": self.probe.n_features_in_,
            "device_": self.device,
            **state,
        }
        if hasattr(self.probe, "feature_names_in_"):
            out["feature_names_in_"] = self.probe.feature_names_in_
        return out


def loss_mask(
    observed: np.ndarray | None, sample_weight: np.ndarray | None
) -> np.ndarray | None:
    """The per-entry loss weights: ``sample_weight`` where ``observed``, else 0."""
    if observed is None:
        return sample_weight
    weight = (
        np.ones(observed.shape, np.float32) if sample_weight is None else sample_weight
    )
    return np.where(observed, weight, 0.0).astype(np.float32)


def kept_rows(mask: np.ndarray | None) -> np.ndarray | None:
    """Rows with a positive entry in ``mask``; None when that is every row."""
    if mask is None:
        return None
    kept = np.any(mask > 0, axis=1, keepdims=False).astype(bool)
    return None if kept.all() else kept


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """The rows ``rows`` (a boolean mask) of a DataFrame or an array."""
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]


def validation_mask(
    n_samples: int,
    *,
    fraction: float | None,
    timestamps: np.ndarray | None,
    seed: int,
    kept: np.ndarray | None = None,
) -> np.ndarray | None:
    """Rows held out for early stopping: the latest, else a seeded random subset.

    ``fraction=None`` (no early stopping) holds out nothing. With ``kept``
    (a boolean mask) the split is drawn among those rows exactly as among
    the rows of a fit without the others, which are never held out.
    """
    if fraction is None:
        return None
    if kept is not None:
        rows = np.flatnonzero(kept)
        inner = validation_mask(
            len(rows),
            fraction=fraction,
            timestamps=None if timestamps is None else timestamps[rows],
            seed=seed,
        )
        mask = np.zeros(n_samples, dtype=bool)
        mask[rows] = inner
        return mask
    n_valid = max(1, round(fraction * n_samples))
    if n_valid >= n_samples:
        raise ValueError(
            f"early_stopping needs more rows: with {n_samples} samples and "
            f"validation_fraction={fraction} no row is left "
            "for training. Pass more data or early_stopping=False."
        )
    if timestamps is not None:
        order = np.argsort(timestamps, kind="stable")
    else:
        order = np.random.default_rng(seed).permutation(n_samples)
    mask = np.zeros(n_samples, dtype=bool)
    mask[order[-n_valid:]] = True
    return mask


def prepare_fit_data(
    estimator: BaseEstimator,
    X: Any,
    y: Any,
    *,
    session_ids: Any,
    timestamps: Any,
    sample_weight: Any = None,
    check_params: Callable[[np.ndarray, np.ndarray | None], None],
    validation_fraction: float | None,
    device: str,
    random_state: Any,
) -> FitData:
    """Validate the inputs of ``estimator.fit``; raise before any training.

    ``estimator`` names the estimator in messages. ``check_params(task_names,
    session_ids)`` runs the estimator's own checks that need the data (y's
    tasks, sessions for a GAUC), after the data's own checks and
    before the device is resolved. Missing labels in y and ``sample_weight``
    (shape (n,) or (n, n_tasks)) become ``observed`` and ``sample_weight``
    of the result.
    """
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target "
            "y is None."
        )
    X = check_features(X)
    y01, classes, task_names = check_multitask_target(y)
    n_samples = y01.shape[0]
    observed = ~np.isnan(y01)
    if observed.all():
        observed = None
    else:
        y01 = np.where(observed, y01, 0.0).astype(np.float32)
    probe = BaseEstimator()  # holds feature names until the fit succeeds
    validate_data(probe, X, reset=True, skip_check_array=True)
    check_consistent_length(X, y01)
    if n_samples < 2:
        raise ValueError(
            f"Found 1 sample (n_samples = {n_samples}); at least 2 are needed."
        )
    sessions = check_metadata(
        session_ids, n_samples, name="session_ids", sortable=False
    )
    times = check_metadata(timestamps, n_samples, name="timestamps", sortable=True)
    weights = check_sample_weight(sample_weight, n_samples, len(task_names))
    mask = loss_mask(observed, weights)
    untrained = (
        np.zeros(0, dtype=np.int64)
        if mask is None
        else np.flatnonzero(~(mask > 0).any(axis=0))
    )
    if len(untrained):
        raise ValueError(
            f"Task {task_names[untrained[0]]!r} has no observed label with a "
            "positive sample_weight; it would not be trained. Give some of its "
            "labelled rows a positive weight."
        )
    check_params(task_names, sessions)
    device = resolve_device(device)
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return FitData(
        X=X,
        y01=y01,
        classes=classes,
        task_names=task_names,
        probe=probe,
        session_ids=sessions,
        times=times,
        device=device,
        seed=seed,
        valid=validation_mask(
            n_samples,
            fraction=validation_fraction,
            timestamps=times,
            seed=seed,
            kept=kept_rows(mask),
        ),
        observed=observed,
        sample_weight=weights,
    )
