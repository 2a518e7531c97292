"""Pretraining and inference throughput of every backbone, vs the matmul limit.

For each backbone at the paper's sizes (embedding 128, bottom 512-256,
towers 128-64, 8 experts, PLE 4+4, batch 2048) on RetailRocket-shaped rows:

- ``MTLClassifier.fit`` (one epoch, ``early_stopping=False``): samples/s of
  the epoch loop (skorch's ``dur``) and of the whole call;
- a pure training step (the same module, loss and Adam on ready tensors):
  what the network itself costs, without skorch's data loading;
- skorch's loader alone (per-row ``Dataset.__getitem__`` + collation);
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
from skorch.dataset import Dataset
from torch.utils.data import DataLoader

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._mtl import encode_inputs


def _loader_rate(clf: MTLClassifier, X: Any, Y: Any) -> float:
    """Rows/s of skorch's default training iterator alone (no network)."""
    Xt = clf.encoder_.transform(X)
    inputs = encode_inputs(Xt, len(clf.encoder_.cardinalities_))
    y = Y.to_numpy(np.float32)
    # skorch's defaults: iterator_train=DataLoader, dataset=skorch Dataset.
    loader = DataLoader(Dataset(inputs, y), batch_size=BATCH_SIZE, shuffle=True)
    t, _ = timed(lambda: sum(1 for _ in loader))
    return len(y) / t


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
    train["loader_rows_s"] = _loader_rate(clf, X, Y)
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
        t_enc, _ = timed(lambda: clf.encoder_.transform(X_inf))
        inf_rows.append(
            {
                "limit": B / t_lim,
                "predict_proba": n_inf / t_pred,
                "bare_forward": B / t_fwd,
                "encode_rows_s": n_inf / t_enc,
            }
        )
    inf = {k: median([r[k] for r in inf_rows]) for k in inf_rows[0]}
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
    data = make_data(max(n_fit, n_inf), seed=0)
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
            f"{fmt_rate(tr['loader_rows_s'])} rows/s"
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
            f"encoder {fmt_rate(inf['encode_rows_s'])} rows/s"
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
