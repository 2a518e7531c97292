"""The validated inputs of one fit, read block by block by every phase.

:func:`prepare_fit_data` reads a fit's :class:`~sklearn_rmtl._rows.Rows`
once to validate them (labels, weights, the tasks that can be trained),
then :meth:`FitData.fit_encoder` fits the feature encoder and
:func:`hold_out` decides the rows that early stopping holds out (the latest
``validation_fraction`` of the rows by time, ties in row order; without
times a seeded random subset). Every phase then reads the same encoded
blocks (:meth:`FitData.block`), training rows (:meth:`FitData.train_set`)
and held-out rows (:meth:`FitData.held_out`). In-memory rows are one block,
encoded once and kept; a Parquet source is re-read block by block, so its
memory stays that of a block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.preprocessing import OrdinalEncoder, StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from sklearn_rmtl._data import BlockStream, TensorDictDataset
from sklearn_rmtl._encoding import (
    _FLOAT32_MAX,
    _HOMOGENEOUS,
    _N_RESERVED,
    _TOO_WIDE,
    EncodedParts,
    FeatureEncoder,
    _as_frame,
    _distinct_frame,
    _Factorized,
)
from sklearn_rmtl._rows import Block, Rows
from sklearn_rmtl._validation import resolve_device


def encode_inputs(parts: EncodedParts, **extra: np.ndarray) -> dict[str, np.ndarray]:
    """The network's input dict from an encoding's integer and float parts.

    Parameters
    ----------
    parts : EncodedParts
        From ``FeatureEncoder._transform_parts``: int64 codes, which stay
        exact whatever the vocabulary size (the public float32 ``transform``
        holds 2**24 codes), and float32 numbers.
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


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """The rows ``rows`` (a boolean mask) of a DataFrame or an array."""
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]


@dataclass
class EncodedBlock:
    """A block of a fit's rows under the fit's rules, encoded.

    ``y01`` holds 0/1 labels with the missing ones filled by 0, so that
    every computation on them stays finite; ``observed`` (None: all) marks
    the labels that exist and ``sample_weight`` (None: all 1) the user's
    weights, both of shape (n_rows, n_tasks); their product
    :attr:`loss_mask` multiplies every per-entry loss. ``kept`` marks the
    rows with some weight in some task, ``valid`` the held-out rows.
    """

    X: Any
    inputs: dict[str, np.ndarray]
    y01: np.ndarray
    observed: np.ndarray | None
    sample_weight: np.ndarray | None
    session_ids: np.ndarray | None
    timestamps: np.ndarray | None
    kept: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.y01)

    @property
    def loss_mask(self) -> np.ndarray | None:
        """Weight of each (row, task) entry in the loss, float32; None: all 1."""
        return loss_mask(self.observed, self.sample_weight)


@dataclass
class HeldOut:
    """The held-out rows of early stopping, encoded, in row order."""

    inputs: dict[str, np.ndarray]
    y01: np.ndarray
    mask: np.ndarray | None
    session_ids: np.ndarray | None


#: Per-row inputs derived from an encoded block (e.g. the critics' inputs
#: or the fixed weights of RMTL's refit), keyed as the network reads them.
Extra = Callable[[EncodedBlock], dict[str, np.ndarray]]


@dataclass
class FitData:
    """The validated rows of a fit, read block by block by every phase.

    Attributes
    ----------
    rows : Rows
        Where the rows are read from.
    classes, task_names : ndarray
        The labels' classes (n_tasks, 2) and the task names.
    probe : BaseEstimator
        Holds ``n_features_in_`` and ``feature_names_in_`` until the fit
        succeeds.
    device : str
        The torch device of the fit.
    seed : int
        The fit's seed, from which every phase derives its own.
    has_missing, has_weights : bool
        Whether some label is missing, some weight differs from 1.
    n_kept : int
        Rows with some weight in some task (the others count nowhere).
    encoder : FeatureEncoder or None
        The fitted encoder of :meth:`block`'s inputs.
    holdout : HoldOutRule or None
        Which rows early stopping holds out; None holds out none.
    """

    rows: Rows
    classes: np.ndarray
    task_names: np.ndarray
    probe: BaseEstimator
    device: str
    seed: int
    has_missing: bool
    has_weights: bool
    n_kept: int
    n_positive: int
    encoder: FeatureEncoder | None = None
    holdout: HoldOutRule | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def n_samples(self) -> int:
        return self.rows.n_rows

    @property
    def n_valid(self) -> int:
        return 0 if self.holdout is None else self.holdout.n_valid

    @property
    def has_holdout(self) -> bool:
        return self.holdout is not None

    @property
    def cardinalities(self) -> list[int]:
        assert self.encoder is not None
        return [int(c) for c in self.encoder.cardinalities_]

    @property
    def n_numerical(self) -> int:
        assert self.encoder is not None
        return len(self.encoder.numerical_features_) + len(
            self.encoder.missing_indicator_features_
        )

    def _one(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, kept for the fit when the rows are one block."""
        if self.rows.n_blocks > 1:
            return make()
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def set_encoder(self, encoder: FeatureEncoder) -> None:
        """Encode the rows with ``encoder`` (fitted) from now on."""
        self.encoder = encoder
        self._cache.clear()

    def fit_encoder(self, encoder: FeatureEncoder) -> None:
        """Fit ``encoder`` on the kept rows and encode with it from now on.

        Rows that weigh nothing do not shape the vocabulary or the scaling:
        a zero weight is the same as dropping the row.
        """
        if self.rows.n_blocks == 1:
            block = self.block_labels(0)
            encoder.fit(_kept(block.X, block.kept))
        else:
            encoder._validate_params()
            enc_pass = _EncoderPass(encoder)
            for b in range(self.rows.n_blocks):
                block = self.block_labels(b)
                if b == 0:
                    enc_pass.first(block.X)
                enc_pass.add(_kept(block.X, block.kept))
            frame = _as_frame(self.block_labels(0).X).iloc[:0]
            state = enc_pass.state(frame, self.probe)

            def kept_frames() -> Iterator[pd.DataFrame]:
                for b in range(self.rows.n_blocks):
                    block = self.block_labels(b)
                    yield _as_frame(_kept(block.X, block.kept))

            mean, scale = enc_pass.standardisation(kept_frames)
            labels = [str(c) for c in frame.columns]
            state["numerical"] = _numerical_state(enc_pass, labels, mean, scale)
            encoder._set_state(state)
        self.set_encoder(encoder)

    def block_labels(self, b: int) -> EncodedBlock:
        """Block ``b`` under the fit's rules, without the encoded inputs."""
        return self._one(("labels", b), lambda: self._labels_of(self.rows._block(b), b))

    def _labels_of(self, block: Block, b: int | None) -> EncodedBlock:
        assert block.y01 is not None
        missing = np.isnan(block.y01)
        y01 = np.where(missing, np.float32(0.0), block.y01).astype(np.float32)
        observed = ~missing if self.has_missing else None
        weight = block.sample_weight if self.has_weights else None
        mask = loss_mask(observed, weight)
        kept = np.ones(len(y01), bool) if mask is None else np.any(mask > 0, axis=1)
        valid = np.zeros(len(y01), bool)
        if self.holdout is not None and b is not None:
            valid = self.holdout.mask(b, kept, block.timestamps)
        return EncodedBlock(
            X=block.X,
            inputs={},
            y01=y01,
            observed=observed,
            sample_weight=weight,
            session_ids=block.session_ids,
            timestamps=block.timestamps,
            kept=kept,
            valid=valid,
        )

    def block(self, b: int) -> EncodedBlock:
        """Block ``b``, encoded (kept for the fit when the rows are one block)."""
        return self._one(("block", b), lambda: self._encoded(self.block_labels(b)))

    def _encoded(self, block: EncodedBlock) -> EncodedBlock:
        assert self.encoder is not None
        block.inputs = encode_with(self.encoder, block.X)
        return block

    def chunk(self, start: int, stop: int) -> EncodedBlock:
        """Rows ``start`` to ``stop`` (whole sessions), encoded.

        ``valid`` marks the held-out rows among them.
        """
        if self.rows.n_blocks == 1 and (start, stop) == (0, self.n_samples):
            return self.block(0)
        block = self._labels_of(self.rows._rows(start, stop), None)
        if self.holdout is not None:
            size = self.rows.block_rows
            flags = [
                self.block_labels(b).valid
                for b in range(start // size, -(-stop // size))
            ]
            offset = (start // size) * size
            block.valid = np.concatenate(flags)[start - offset : stop - offset]
        return self._encoded(block)

    def held_out(self) -> HeldOut | None:
        """The held-out rows, encoded (None without early stopping)."""
        if self.holdout is None:
            return None
        return self._one("held_out", self._gather_held_out)

    def _gather_held_out(self) -> HeldOut:
        parts: list[tuple[Any, ...]] = []
        for b in range(self.rows.n_blocks):
            block = self.block_labels(b)
            rows = block.valid
            if not rows.any():
                continue
            if self.rows.n_blocks == 1:
                inputs = self.block(b).inputs  # encoded once for the fit
                inputs = {k: v[rows] for k, v in inputs.items()}
            else:
                assert self.encoder is not None
                inputs = encode_with(self.encoder, take_rows(block.X, rows))
            mask = block.loss_mask
            parts.append(
                (
                    inputs,
                    block.y01[rows],
                    None if mask is None else mask[rows],
                    None if block.session_ids is None else block.session_ids[rows],
                )
            )
        encoded, y01, masks, sessions = zip(*parts, strict=True)
        return HeldOut(
            inputs={
                k: np.concatenate([e[k] for e in encoded]) for k in ("x_cat", "x_num")
            },
            y01=np.concatenate(y01),
            mask=None if masks[0] is None else np.concatenate(masks),
            session_ids=None if sessions[0] is None else np.concatenate(sessions),
        )

    def train_set(
        self, *, seed: int, extra: Extra | None = None, all_rows: bool = False
    ) -> BlockStream:
        """The training rows (all rows with ``all_rows``), block by block.

        Each pass visits the blocks in an order drawn from ``seed`` and a
        block's rows in an order drawn from the training's generator; a
        batch continues into the next block, so a pass has as many batches
        as in memory, and one block gives the in-memory batches exactly.
        ``extra`` adds per-row inputs (RMTL's refit).
        """

        def block(b: int) -> TensorDictDataset | None:
            enc = self.block(b)
            rows = None if all_rows or not enc.valid.any() else ~enc.valid
            if rows is not None and not rows.any():
                return None
            inputs = dict(enc.inputs)
            mask = enc.loss_mask
            if mask is not None:
                inputs["loss_mask"] = mask
            if extra is not None:
                inputs.update(extra(enc))
            y01 = enc.y01
            if rows is not None:
                inputs = {k: v[rows] for k, v in inputs.items()}
                y01 = y01[rows]
            return TensorDictDataset(inputs, y01, device=self.device)

        n_rows = self.n_samples if all_rows else self.n_samples - self.n_valid
        return BlockStream(block, self.rows.n_blocks, n_rows, seed=seed)

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


def _kept(X: Any, kept: np.ndarray) -> Any:
    return X if kept.all() else take_rows(X, kept)


def prepare_fit_data(
    estimator: BaseEstimator,
    rows: Rows,
    *,
    check_params: Callable[[np.ndarray, bool], None],
    validation_fraction: float | None,
    device: str,
    random_state: Any,
) -> FitData:
    """Validate the rows of ``estimator.fit``; raise before any training.

    ``check_params(task_names, has_sessions)`` runs the estimator's own
    checks that need the data (y's tasks, sessions for a GAUC) after the
    data's own checks and before the device is resolved. The encoder is
    fitted afterwards (:meth:`FitData.fit_encoder`), and the held-out rows
    decided last (:func:`hold_out`).
    """
    classes, task_names = rows._labels()
    probe = BaseEstimator()  # holds feature names until the fit succeeds
    has_missing = has_weights = False
    for b in range(rows.n_blocks):
        block = rows._block(b)
        assert block.y01 is not None
        if b == 0:
            validate_data(probe, block.X, reset=True, skip_check_array=True)
        has_missing |= bool(np.isnan(block.y01).any())
        w = block.sample_weight
        has_weights |= w is not None and bool((w != 1).any())
    data = FitData(
        rows=rows,
        classes=classes,
        task_names=task_names,
        probe=probe,
        device="cpu",
        seed=0,
        has_missing=has_missing,
        has_weights=has_weights,
        n_kept=0,
        n_positive=0,
    )
    trained = np.zeros(len(task_names), dtype=bool)
    for b in range(rows.n_blocks):
        block_ = data.block_labels(b)
        mask = block_.loss_mask
        trained |= True if mask is None else (mask > 0).any(axis=0)
        data.n_kept += int(block_.kept.sum())
        data.n_positive += int((block_.y01 > 0.5).sum())
    if not trained.all():
        raise ValueError(
            f"Task {task_names[np.flatnonzero(~trained)[0]]!r} has no observed label "
            "with a positive sample_weight; it would not be trained. Give some of "
            "its labelled rows a positive weight."
        )
    check_params(task_names, rows.has_sessions)
    data.device = resolve_device(device)
    data.seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    if validation_fraction is not None:
        data.holdout = hold_out(data, validation_fraction)
        data._cache.clear()  # the blocks' ``valid`` flags
    return data


def hold_out(data: FitData, fraction: float) -> HoldOutRule:
    """Which rows early stopping holds out: the latest, else a seeded random subset.

    Among the kept rows only, exactly as among the rows of a fit without the
    others, which are never held out: the ``n_valid`` latest by time (a
    stable sort: of the rows at the threshold time the last ones), or the
    last ``n_valid`` of a permutation drawn from the fit's seed.
    """
    n_kept, rows = data.n_kept, data.rows
    n_valid = max(1, round(fraction * n_kept))
    if n_valid >= n_kept:
        raise ValueError(
            f"early_stopping needs more rows: with {n_kept} samples and "
            f"validation_fraction={fraction} no row is left "
            "for training. Pass more data or early_stopping=False."
        )

    def each() -> Iterator[EncodedBlock]:
        for b in range(rows.n_blocks):
            yield data.block_labels(b)

    if any(block.timestamps is None for block in each()):
        flags = np.zeros(n_kept, dtype=bool)
        flags[np.random.default_rng(data.seed).permutation(n_kept)[-n_valid:]] = True
        kept_before = np.cumsum([0, *(int(block.kept.sum()) for block in each())])
        return HoldOutRule(n_valid, flags=flags, kept_before=kept_before)
    # The n_valid latest times (a multiset) in at most n_valid + a block.
    top: np.ndarray | None = None  # in the times' dtype: int64 stays exact
    for block in each():
        times = block.timestamps[block.kept]  # type: ignore[index]
        top = times if top is None else np.concatenate([top, times])
        if len(top) > n_valid:
            top = np.partition(top, len(top) - n_valid)[-n_valid:]
    assert top is not None
    threshold = top.min()
    tie_cut_from_end = n_valid - int((top > threshold).sum())
    ties = np.cumsum(
        [0, *(int((b.kept & (b.timestamps == threshold)).sum()) for b in each())]
    )
    return HoldOutRule(
        n_valid,
        threshold=threshold,
        tie_cut=int(ties[-1]) - tie_cut_from_end,
        ties_before=ties,
    )


class HoldOutRule:
    """Which rows of each block early stopping holds out (see :func:`hold_out`)."""

    def __init__(
        self,
        n_valid: int,
        *,
        threshold: Any = None,
        tie_cut: int = 0,
        ties_before: np.ndarray | None = None,
        flags: np.ndarray | None = None,
        kept_before: np.ndarray | None = None,
    ) -> None:
        self.n_valid = n_valid
        self.threshold = threshold
        self.tie_cut = tie_cut
        self.ties_before = ties_before
        self.flags = flags
        self.kept_before = kept_before

    def mask(self, b: int, kept: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        """The held-out rows of block ``b`` (its ``kept`` rows and times)."""
        if self.flags is not None:
            assert self.kept_before is not None
            out = np.zeros(len(kept), dtype=bool)
            start = int(self.kept_before[b])
            out[kept] = self.flags[start : start + int(kept.sum())]
            return out
        assert times is not None and self.ties_before is not None
        tie = kept & (times == self.threshold)
        rank = int(self.ties_before[b]) + np.cumsum(tie) - 1
        return kept & ((times > self.threshold) | (tie & (rank >= self.tie_cut)))


# ---------------------------------------------------------------- encoder
class _EncoderPass:
    """Accumulates what ``FeatureEncoder.fit`` learns, block by block.

    Categorical columns: each distinct value and its count. Numerical
    columns: the running mean and variance of ``StandardScaler.partial_fit``
    (the pairwise update of Chan, Golub and LeVeque, so merging blocks is
    numerically stable; one block is exactly ``StandardScaler.fit``), plus
    the range and magnitude that :func:`_standardisation` looks at.
    """

    def __init__(self, encoder: FeatureEncoder) -> None:
        self.encoder = encoder
        self.is_cat: np.ndarray | None = None
        self.values: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.scaler = StandardScaler()
        self.n_kept = 0

    def first(self, X: Any) -> None:
        enc = self.encoder
        self.is_cat = enc._categorical_mask(X, _as_frame(X))
        enc._cat_idx = np.flatnonzero(self.is_cat)
        enc._num_idx = np.flatnonzero(~self.is_cat)
        n_num = len(enc._num_idx)
        self.values = [np.empty(0, dtype=object) for _ in enc._cat_idx]
        self.counts = [np.zeros(0, dtype=np.int64) for _ in enc._cat_idx]
        self.magnitude = np.zeros(n_num)
        self.high = np.full(n_num, -np.inf)
        self.low = np.full(n_num, np.inf)
        self.nan = np.zeros(n_num, dtype=bool)
        self.n_seen = np.zeros(n_num, dtype=np.int64)

    def add(self, X: Any) -> None:
        enc = self.encoder
        assert self.is_cat is not None
        is_cat = enc._categorical_mask(X, _as_frame(X))
        X = _as_frame(X)
        if not np.array_equal(is_cat, self.is_cat):
            changed = [str(c) for c in X.columns[is_cat != self.is_cat]]
            raise TypeError(
                f"Columns {changed} change between categorical and numerical "
                "dtypes from one block to another; give them one type in every "
                "file (e.g. cast them) or name the categorical columns with "
                "categorical_features."
            )
        if not len(X):
            return
        self.n_kept += len(X)
        for i, j in enumerate(enc._cat_idx):
            column = X.iloc[:, int(j)]
            if isinstance(column.dtype, pd.CategoricalDtype):
                positions = column.cat.codes.to_numpy().astype(np.intp)
                uniques = column.cat.categories.to_numpy(dtype=object)
            else:
                positions, found = pd.factorize(column, use_na_sentinel=True)
                uniques = np.asarray(found, dtype=object)
            counts = np.bincount(positions[positions >= 0], minlength=len(uniques))
            self._merge(i, uniques[counts > 0], counts[counts > 0])
        if len(enc._num_idx):
            x = enc._numbers(X, enc._num_idx)
            with np.errstate(over="ignore", invalid="ignore"):
                self.scaler.partial_fit(x)
            self.magnitude = np.fmax(
                self.magnitude, np.where(np.isnan(x), 0.0, np.abs(x)).max(axis=0)
            )
            self.high = np.fmax(self.high, np.fmax.reduce(x, axis=0))
            self.low = np.fmin(self.low, np.fmin.reduce(x, axis=0))
            self.nan |= np.isnan(x).any(axis=0)

    def _merge(self, i: int, values: np.ndarray, counts: np.ndarray) -> None:
        both = np.concatenate([self.values[i], values])
        positions, uniques = pd.factorize(pd.Series(both, dtype=object))
        total = np.zeros(len(uniques), dtype=np.int64)
        np.add.at(total, positions, np.concatenate([self.counts[i], counts]))
        self.values[i] = np.asarray(uniques, dtype=object)
        self.counts[i] = total

    def vocabulary(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Column ``i``'s sorted known values and their codes, as fit learns them."""
        values, counts = self.values[i], self.counts[i]
        if pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS:
            # fit compares a mixed-type column's values as strings
            positions, strings = pd.factorize(values.astype(str).astype(object))
            values = np.asarray(strings, dtype=object)
            counts = np.bincount(positions, weights=counts).astype(np.int64)
        ordinal = OrdinalEncoder().fit(
            _distinct_frame([_Factorized(values, np.zeros(0, np.intp))])
        )
        known = ordinal.categories_[0]
        known = known[~pd.isna(known)]
        position = ordinal.transform(pd.DataFrame({0: values}, dtype=object))[:, 0]
        count = np.zeros(len(known), dtype=np.int64)
        np.add.at(count, position.astype(np.intp), counts)
        infrequent = self._infrequent(count)
        codes = np.empty(len(known), dtype=np.int64)
        codes[~infrequent] = np.arange(int((~infrequent).sum()))
        codes[infrequent] = int((~infrequent).sum())
        return known, codes + _N_RESERVED

    def _infrequent(self, count: np.ndarray) -> np.ndarray:
        """OrdinalEncoder's rule for ``min_frequency`` and ``max_categories``."""
        min_frequency = self.encoder.min_frequency
        max_categories = self.encoder.max_categories
        if min_frequency is None:
            rare = np.zeros(len(count), dtype=bool)
        elif isinstance(min_frequency, Integral):
            rare = count < min_frequency
        else:
            rare = count < self.n_kept * min_frequency
        n_kept_codes = len(count) - int(rare.sum()) + 1  # + the infrequent code
        if max_categories is not None and max_categories < n_kept_codes:
            keep = max_categories - 1
            if keep == 0:
                rare[:] = True
            else:
                # The least frequent first; ties by position (a stable sort).
                rare[np.argsort(count, kind="mergesort")[:-keep]] = True
        return rare

    def standardisation(self, source_frames: Any) -> tuple[np.ndarray, np.ndarray]:
        """Mean and scale as ``_standardisation``, from the running statistics."""
        s = self.scaler
        if not hasattr(s, "mean_"):
            n = len(self.encoder._num_idx)
            return np.zeros(n), np.ones(n)
        mean, scale, var = s.mean_.copy(), s.scale_.copy(), s.var_
        candidates = np.flatnonzero(~(var >= np.finfo(np.float64).tiny))
        refine = (self.magnitude[candidates] > 0) & (
            ~np.isfinite(var[candidates])
            | (self.high[candidates] > self.low[candidates])
        )
        if not refine.any():
            return mean, scale
        # Columns whose variance over- or underflows: a second pass over
        # them, divided by their largest magnitude (as _standardisation).
        columns = candidates[refine]
        m = self.magnitude[columns]
        rescaled = StandardScaler()
        for X in source_frames():
            x = self.encoder._numbers(X, self.encoder._num_idx[columns])
            if len(x):
                rescaled.partial_fit(x / m)
        mean[columns] = rescaled.mean_ * m
        scale[columns] = rescaled.scale_ * m
        for X in source_frames():
            x = self.encoder._numbers(X, self.encoder._num_idx[columns])
            with np.errstate(over="ignore", invalid="ignore"):
                z = (x - mean[columns]) / scale[columns]
            wide = (np.abs(z) > _FLOAT32_MAX).any(axis=0)
            if wide.any():
                names = [
                    str(X.columns[j]) for j in self.encoder._num_idx[columns[wide]]
                ]
                raise ValueError(
                    f"Numerical columns {names} hold values too far apart (more "
                    f"than {_FLOAT32_MAX:.1e} standard deviations from the mean)"
                    f"{_TOO_WIDE}"
                )
        return mean, scale

    def state(self, X: pd.DataFrame, probe: BaseEstimator) -> dict[str, Any]:
        """The encoder's fitted state (``FeatureEncoder._get_state`` layout)."""
        enc = self.encoder
        labels = [str(c) for c in X.columns]
        categorical = []
        for i, j in enumerate(enc._cat_idx):
            known, codes = self.vocabulary(i)
            categorical.append(
                {
                    "position": int(j),
                    "name": labels[j],
                    "values": known.tolist(),
                    "codes": codes.tolist(),
                }
            )
        return {
            "n_features_in": int(probe.n_features_in_),
            "feature_names_in": getattr(probe, "feature_names_in_", None),
            "categorical": categorical,
            "numerical": [],
        }


def _numerical_state(
    enc_pass: _EncoderPass, labels: list[str], mean: np.ndarray, scale: np.ndarray
) -> list[dict[str, Any]]:
    return [
        {
            "position": int(j),
            "name": labels[j],
            "mean": float(mean[i]),
            "scale": float(scale[i]),
            "missing_indicator": bool(enc_pass.nan[i]),
        }
        for i, j in enumerate(enc_pass.encoder._num_idx)
    ]
