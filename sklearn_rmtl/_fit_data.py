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
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import validate_data

from sklearn_rmtl._data import BlockStream, TensorDictDataset
from sklearn_rmtl._encoding import EncodedParts, FeatureEncoder, embedding_layout
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


def state_field_names(encoder: FeatureEncoder) -> list[str]:
    """The names of a fitted encoder's categorical, then sequence columns.

    The network's ``field_names``: the fields of the state, in order
    (:meth:`~sklearn_rmtl._torch_module.FeatureEmbedding.fields`).
    """
    return [
        str(name)
        for name in (*encoder.categorical_features_, *encoder.sequence_features_)
    ]


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


def scaled_weights(sample_weight: np.ndarray, weight_max: float) -> np.ndarray:
    """``sample_weight`` (float64) divided by the fit's largest weight, as float32.

    The loss normalises each task by its weights' sum, so their scale has no
    effect; dividing first keeps float32 from rounding huge weights to inf
    (a loss of inf / inf) and tiny ones to 0. A positive weight stays
    positive: one below float32's smallest normal number relative to the
    largest is raised to it, so that the rows a fit keeps do not depend on
    the weights' scale.
    """
    tiny = np.finfo(np.float32).tiny
    scaled = (sample_weight / weight_max).astype(np.float32)
    return np.where(sample_weight > 0, np.maximum(scaled, tiny), np.float32(0.0))


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
    rows with some weight in some task, ``valid`` the held-out rows;
    ``start`` is the position of its first row among the fit's rows.
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
    start: int = 0

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
    n_positive : int
        Positive labels, over all rows and tasks.
    weight_max : float
        The largest ``sample_weight``, by which every weight is divided
        (:func:`scaled_weights`).
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
    weight_max: float = 1.0
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
        """The sizes of the embedding tables the codes index."""
        assert self.encoder is not None
        return embedding_layout(self.encoder)[0]

    @property
    def sequences(self) -> list[tuple[int, int, int]]:
        """Per sequence column: its table, candidate and length."""
        assert self.encoder is not None
        return embedding_layout(self.encoder)[1]

    @property
    def field_names(self) -> list[str]:
        """The categorical, then the sequence columns: the state's fields."""
        assert self.encoder is not None
        return state_field_names(self.encoder)

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
        """Fit ``encoder`` on the kept rows, block by block, and encode with it.

        Rows that weigh nothing do not shape the vocabulary or the scaling:
        a zero weight is the same as dropping the row. One block is one
        :meth:`FeatureEncoder.partial_fit <sklearn_rmtl.FeatureEncoder.partial_fit>`
        call, i.e. ``fit``.
        """
        encoder._reset()
        for b in range(self.rows.n_blocks):
            block = self.block_labels(b)
            X = block.X if block.kept.all() else take_rows(block.X, block.kept)
            if len(X) or hasattr(encoder, "n_features_in_"):
                encoder.partial_fit(X)
        self.set_encoder(encoder)

    def block_labels(self, b: int) -> EncodedBlock:
        """Block ``b`` under the fit's rules, without the encoded inputs."""
        return self._one(
            ("labels", b),
            lambda: self._labels_of(self.rows._block(b), b, b * self.rows.block_rows),
        )

    def _labels_of(self, block: Block, b: int | None, start: int) -> EncodedBlock:
        assert block.y01 is not None
        missing = np.isnan(block.y01)
        y01 = np.where(missing, np.float32(0.0), block.y01).astype(np.float32)
        observed = ~missing if self.has_missing else None
        weight = None
        if self.has_weights:
            assert block.sample_weight is not None
            weight = scaled_weights(block.sample_weight, self.weight_max)
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
            start=start,
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
        block = self._labels_of(self.rows._rows(start, stop), None, start)
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
        """The held-out rows, encoded (None without early stopping).

        Kept in memory for the fit, whatever the source: every validation
        check of every phase scores them.
        """
        if self.holdout is None:
            return None
        if "held_out" not in self._cache:
            self._cache["held_out"] = self._gather_held_out()
        return self._cache["held_out"]

    def held_out_labels(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The held-out rows' labels and sessions, without encoding the features.

        Labels are 0/1, NaN where the loss mask is 0 (a missing label or a
        zero weight), as the selection metrics read them.
        """
        labels, sessions = [], []
        for b in range(self.rows.n_blocks):
            block = self.block_labels(b)
            mask = block.loss_mask
            y = block.y01 if mask is None else np.where(mask > 0, block.y01, np.nan)
            labels.append(y[block.valid])
            if block.session_ids is not None:
                sessions.append(block.session_ids[block.valid])
        return np.concatenate(labels), np.concatenate(sessions) if sessions else None

    def _gather_held_out(self) -> HeldOut:
        parts: list[tuple[Any, ...]] = []
        for b in range(self.rows.n_blocks):
            block = self.block(b)
            rows = block.valid
            if not rows.any():
                continue
            inputs = {k: v[rows] for k, v in block.inputs.items()}
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
    has_missing = False
    n_kept = n_positive = 0
    w_min, w_max = np.inf, 0.0  # of the given weights (all 1 when None)
    trained = np.zeros(len(task_names), dtype=bool)
    # One pass: a row or task weighs something where its label is observed
    # and its weight positive, whatever the fit's rules for the loss mask.
    for b in range(rows.n_blocks):
        block = rows._block(b)
        assert block.y01 is not None
        if b == 0:
            validate_data(probe, block.X, reset=True, skip_check_array=True)
        observed = ~np.isnan(block.y01)
        w = block.sample_weight
        has_missing |= not observed.all()
        if len(block):
            w_min = min(w_min, 1.0 if w is None else float(w.min()))
            w_max = max(w_max, 1.0 if w is None else float(w.max()))
        weighs = observed if w is None else observed & (w > 0)
        trained |= weighs.any(axis=0)
        n_kept += int(weighs.any(axis=1).sum())
        n_positive += int((block.y01 > 0.5).sum())
    data = FitData(
        rows=rows,
        classes=classes,
        task_names=task_names,
        probe=probe,
        device="cpu",
        seed=0,
        has_missing=has_missing,
        # Equal weights, whatever their value, are the unweighted fit.
        has_weights=w_min != w_max,
        weight_max=w_max,
        n_kept=n_kept,
        n_positive=n_positive,
    )
    if not trained.all():
        task = int(np.flatnonzero(~trained)[0])
        raise ValueError(
            f"Task {task_names[task]!r} has no observed label "
            "with a positive sample_weight; it would not be trained. Give some of "
            f"its labelled rows a positive weight.{rows._untrained_note(task)}"
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
