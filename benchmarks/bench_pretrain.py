"""Pretraining and inference throughput of every backbone, vs the matmul limit.

For each backbone at the paper's sizes (embedding 128, bottom 512-256,
towers 128-64, 8 experts, PLE 4+4, batch 2048) on RetailRocket-shaped rows:

- ``MTLClassifier.fit`` (one epoch, ``early_stopping=False``): samples/s of
  the epoch loop (skorch's ``dur``) and of the whole call;
- a pure training step (the same module, loss and Adam on ready tensors):
  what the network itself costs, without skorch's data loading;
- the package's training loader alone, and skorch's default loader (per-row
  ``Dataset.__getitem__`` + collation) as the naive baseline;
- ``FeatureEncoder.transform``, and a row-by-row ``OrdinalEncoder`` on
  Python objects as the naive baseline (codes checked identical);
- ``predict_proba`` on a DataFrame, and a bare ``inference_mode`` forward;
- the matmul-bound limit of each phase, timed in the same run: the bare
  ``(rows, k) @ (k, n)`` products (forward, and for training the two
  backward products) of every Linear the phase needs, each module once.

Rounds interleave the limit and the phase, so each ratio compares timings
taken seconds apart; the medians over rounds are printed.

Run: ``python benchmarks/bench_pretrain.py [--quick] [--backbones esmm,ple]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from _common import (
    ALL_BACKBONES,
    BATCH_SIZE,
    REFERENCE,
    MatmulKernel,
    PureActorStep,
    Report,
    fmt_rate,
    make_data,
    median,
    op_breakdown,
    parse_args,
    repeat,
    timed,
)
from sklearn.preprocessing import OrdinalEncoder
from skorch.dataset import Dataset
from torch.utils.data import DataLoader

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._data import BatchLoader, TensorDictDataset
from sklearn_rmtl._encoding import _HOMOGENEOUS, _N_RESERVED, MISSING_CODE, UNKNOWN_CODE
from sklearn_rmtl._fit_data import encode_with


def _loader_rates(clf: MTLClassifier, X: Any, Y: Any) -> dict[str, float]:
    """Rows/s of the training loaders alone (no network), on the same data.

    The package's ``BatchLoader`` (whole-batch indexing of tensors) and, as
    the naive baseline, skorch's default (``DataLoader`` over a skorch
    ``Dataset``: one ``__getitem__`` per row, then collation).
    """
    inputs = encode_with(clf.encoder_, X)
    y = Y.to_numpy(np.float32)
    skorch_default = DataLoader(Dataset(inputs, y), batch_size=BATCH_SIZE, shuffle=True)
    package = BatchLoader(
        TensorDictDataset(inputs, y), batch_size=BATCH_SIZE, shuffle=True
    )
    t_naive, _ = timed(lambda: sum(1 for _ in skorch_default))
    t_pkg = median(repeat(lambda: sum(1 for _ in package), 5, warmup=1))
    return {
        "loader_rows_s": len(y) / t_pkg,
        "naive_loader_rows_s": len(y) / t_naive,
        "loader_speedup": t_naive / t_pkg,
    }


def _as_objects(X: pd.DataFrame, columns: np.ndarray) -> pd.DataFrame:
    """The categorical columns as the first version gave them to OrdinalEncoder.

    Values as Python objects (every value as ``str(value)`` where a column
    mixes types), missing values as NaN.
    """
    out = {}
    for i, j in enumerate(columns):
        column = X.iloc[:, j]
        values = column.to_numpy(dtype=object, copy=True)
        if pd.api.types.infer_dtype(values, skipna=True) not in _HOMOGENEOUS:
            values = values.astype(str).astype(object)
        values[column.isna().to_numpy()] = np.nan
        out[i] = values
    return pd.DataFrame(out, dtype=object)


def _encoder_rates(clf: MTLClassifier, X: Any, X_fit: Any) -> dict[str, float]:
    """Rows/s of ``FeatureEncoder.transform`` and of a row-by-row encoder.

    The naive baseline passes every row's categories as Python objects
    through an ``OrdinalEncoder`` fitted like the encoder's on ``X_fit``
    (the package's first version).
    """
    enc = clf.encoder_
    ordinal = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=UNKNOWN_CODE - _N_RESERVED,
        encoded_missing_value=MISSING_CODE - _N_RESERVED,
        min_frequency=enc.min_frequency,
        max_categories=enc.max_categories,
    ).fit(_as_objects(X_fit, enc._cat_idx))

    def row_by_row() -> np.ndarray:
        categories = _as_objects(X, enc._cat_idx)
        codes = ordinal.transform(categories) + _N_RESERVED
        codes[categories.isna().to_numpy()] = MISSING_CODE
        return codes

    t_pkg = median(repeat(lambda: enc.transform(X), 3, warmup=1))
    t_naive = median(repeat(row_by_row, 2))
    n_cat = len(enc.cardinalities_)
    return {
        "encode_rows_s": len(X) / t_pkg,
        "naive_encode_rows_s": len(X) / t_naive,
        "encode_speedup": t_naive / t_pkg,
        "encode_identical": bool(
            np.array_equal(enc.transform(X)[:, :n_cat], row_by_row())
        ),
    }


def bench_backbone(
    backbone: str, data: Any, n_fit: int, n_inf: int, rounds: int, profile: bool
) -> dict[str, Any]:
    X, Y = data.X.iloc[:n_fit], data.Y.iloc[:n_fit]
    X_inf = data.X.iloc[:n_inf]
    step = PureActorStep(backbone)
    k_train = MatmulKernel(step.shapes(training=True), backward=True)
    k_inf = MatmulKernel(step.shapes(training=False), backward=False)
    B = BATCH_SIZE
    step()  # warm up MKL for these shapes
    rows: list[dict[str, float]] = []
    clf = None
    for r in range(rounds):
        t_lim = k_train.seconds(repeats=3, inner=1)
        clf = MTLClassifier(
            backbone=backbone, max_epochs=1, early_stopping=False, random_state=r
        )
        t_fit, _ = timed(lambda clf=clf: clf.fit(X, Y))
        dur = clf.history_["pretrain"][0]["dur"]
        t_pure = median(repeat(step, 2, warmup=0))
        t_lim2 = k_train.seconds(repeats=3, inner=1)
        lim = B / (0.5 * (t_lim + t_lim2))
        rows.append(
            {
                "limit": lim,
                "gflops": k_train.flops / (0.5 * (t_lim + t_lim2)) / 1e9,
                "epoch": n_fit / dur,
                "fit": n_fit / t_fit,
                "pure": B / t_pure,
            }
        )
    train = {k: median([r[k] for r in rows]) for k in rows[0]}
    train["fraction_epoch"] = median([r["epoch"] / r["limit"] for r in rows])
    train["fraction_fit"] = median([r["fit"] / r["limit"] for r in rows])
    train["fraction_pure"] = median([r["pure"] / r["limit"] for r in rows])
    train["mflop_per_sample"] = k_train.flops / B / 1e6
    assert clf is not None
    train.update(_loader_rates(clf, X, Y))
    if profile:
        train["step_breakdown"] = op_breakdown(step, steps=2)

    inf_rows = []
    net = step.net.eval()
    xc, xn = step.x_cat[:B], step.x_num[:B]
    for _ in range(rounds):
        t_lim = k_inf.seconds(repeats=3, inner=2)
        t_pred, _ = timed(lambda: clf.predict_proba(X_inf))
        with torch.inference_mode():
            t_fwd = median(repeat(lambda: net(xc, xn), 3, warmup=1))
        inf_rows.append(
            {
                "limit": B / t_lim,
                "predict_proba": n_inf / t_pred,
                "bare_forward": B / t_fwd,
            }
        )
    inf: dict[str, Any] = {k: median([r[k] for r in inf_rows]) for k in inf_rows[0]}
    inf.update(_encoder_rates(clf, data.X.iloc[: max(n_inf, 100_000)], X))
    inf["fraction_predict_proba"] = median(
        [r["predict_proba"] / r["limit"] for r in inf_rows]
    )
    inf["fraction_bare_forward"] = median(
        [r["bare_forward"] / r["limit"] for r in inf_rows]
    )
    step.net.train()
    return {"train": train, "inference": inf, "n_fit": n_fit, "n_inference": n_inf}


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--backbones", default=None, help="comma-separated subset")

    args = parse_args(__doc__, extra)
    rep = Report("bench_pretrain", args)
    backbones = (
        args.backbones.split(",")
        if args.backbones
        else (["esmm", "mmoe", "ple"] if args.quick else list(ALL_BACKBONES))
    )
    rounds = args.repeats or (1 if args.quick else 3)
    n_fit = BATCH_SIZE * (4 if args.quick else 8)
    n_inf = BATCH_SIZE * (4 if args.quick else 8)
    data = make_data(max(n_fit, n_inf, 100_000), seed=0)
    out: dict[str, Any] = {}
    for bb in backbones:
        res = bench_backbone(
            bb, data, n_fit, n_inf, rounds, profile=bb in ("esmm", "mmoe", "ple")
        )
        out[bb] = res
        tr, inf = res["train"], res["inference"]
        ref_t = REFERENCE["pretrain_samples_s"].get(bb)
        ref_i = REFERENCE["inference_samples_s"].get(bb)
        msg = (
            f"{bb:12s} pretrain epoch {fmt_rate(tr['epoch'])}/s "
            f"(fit call {fmt_rate(tr['fit'])}/s, pure step {fmt_rate(tr['pure'])}/s) "
            f"limit {fmt_rate(tr['limit'])}/s at {tr['gflops']:.0f} GFLOP/s -> "
            f"{tr['fraction_epoch']:.0%} of limit (pure step "
            f"{tr['fraction_pure']:.0%}); loader alone "
            f"{fmt_rate(tr['loader_rows_s'])} rows/s (skorch's per-row default "
            f"{fmt_rate(tr['naive_loader_rows_s'])}/s, x{tr['loader_speedup']:.0f})"
            + (
                f"; reference {fmt_rate(ref_t)}/s (x{tr['epoch'] / ref_t:.2f})"
                if ref_t
                else ""
            )
            + f"\n{'':12s} inference predict_proba "
            f"{fmt_rate(inf['predict_proba'])}/s, bare forward "
            f"{fmt_rate(inf['bare_forward'])}/s, limit {fmt_rate(inf['limit'])}/s -> "
            f"{inf['fraction_predict_proba']:.0%} "
            f"(bare {inf['fraction_bare_forward']:.0%}); "
            f"encoder {fmt_rate(inf['encode_rows_s'])} rows/s (row-by-row "
            f"{fmt_rate(inf['naive_encode_rows_s'])}/s, x{inf['encode_speedup']:.1f}, "
            f"identical codes: {inf['encode_identical']})"
            + (
                f"; reference {fmt_rate(ref_i)}/s (x{inf['predict_proba'] / ref_i:.2f})"
                if ref_i
                else ""
            )
        )
        if "step_breakdown" in tr:
            b = tr["step_breakdown"]
            msg += (
                f"\n{'':12s} pure-step CPU time: "
                + ", ".join(f"{k} {v:.0%}" for k, v in b.items() if k != "top_ops")
                + "; top ops "
                + ", ".join(
                    f"{k.replace('aten::', '')} {v:.0%}"
                    for k, v in b["top_ops"].items()
                )
            )
        rep.add(bb, res, msg)
    rep.add("backbones", backbones)
    return rep.done()


if __name__ == "__main__":
    main()
