"""Training and inference throughput in float32 and bfloat16 (or float16), vs limits.

For MMoE and PLE at the paper's sizes (embedding 128, bottom 512-256, towers
128-64, 8 experts, PLE 4+4, batch 2048) on RetailRocket-shaped rows, through
the public API only:

- ``MTLClassifier(precision=...).fit`` (one epoch, ``early_stopping=False``):
  rows/s of the epoch loop (skorch's ``dur``);
- ``predict_proba`` on a DataFrame: rows/s;
- the limit of each phase in each precision, timed in the same round: the
  bare matrix products (forward, and for training the two backward
  products) of every Linear of the network, in that dtype. A bfloat16 fit
  is held against the bfloat16 limit, not the float32 one.
- one whole ``RMTLClassifier.fit`` per precision (pretrain, critics, refit;
  one epoch each), for the speed-up of every phase together;
- with ``--profile``: the share of CPU time by kind of op in a bare
  bfloat16 training step (module under autocast, loss, fused Adam), to show
  what bounds training once the products are cheap;
- with ``--compile``: the same bare bfloat16 step eager and under
  ``torch.compile`` (its first step, which compiles, timed apart).

Rounds alternate the precisions, so each ratio compares timings taken
seconds apart; medians over rounds are printed. The CPU's bfloat16 support
(AVX512-BF16, AMX) is printed with the results. ``--precisions`` picks the
precisions (default ``float32,bfloat16``; float32 is always included, as
the base of the ratios); float16 fits step through their loss scaler, and
on a CPU float16 is expected to be slow (it is meant for CUDA GPUs).
``--no-rmtl`` skips the whole ``RMTLClassifier.fit``.

Run: ``python benchmarks/bench_precision.py [--quick] [--backbones mmoe,ple]
[--precisions float32,bfloat16,float16] [--no-rmtl] [--profile] [--compile]``.
"""

from __future__ import annotations

from typing import Any

import torch
from _common import (
    BATCH_SIZE,
    MatmulKernel,
    PureActorStep,
    Report,
    fmt_rate,
    make_data,
    median,
    op_breakdown,
    parse_args,
    square_gflops,
    timed,
)

from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._precision import PRECISIONS, native_bfloat16

DTYPES = {p: d or torch.float32 for p, d in PRECISIONS.items()}


def bench_backbone(
    backbone: str,
    data: Any,
    n_fit: int,
    n_inf: int,
    rounds: int,
    precisions: list[str],
) -> dict[str, Any]:
    X, Y = data.X.iloc[:n_fit], data.Y.iloc[:n_fit]
    X_inf = data.X.iloc[:n_inf]
    step = PureActorStep(backbone)
    kernels = {
        p: (
            MatmulKernel(step.shapes(training=True), backward=True, dtype=d),
            MatmulKernel(step.shapes(training=False), backward=False, dtype=d),
        )
        for p, d in DTYPES.items()
        if p in precisions
    }
    per: dict[str, list[dict[str, float]]] = {p: [] for p in precisions}
    for r in range(rounds):
        for precision in precisions:
            k_train, k_inf = kernels[precision]
            t_train_lim = k_train.seconds(repeats=3, inner=1)
            t_inf_lim = k_inf.seconds(repeats=3, inner=1)
            clf = MTLClassifier(
                backbone=backbone,
                max_epochs=1,
                early_stopping=False,
                precision=precision,
                random_state=r,
            ).fit(X, Y)
            dur = clf.history_["pretrain"][0]["dur"]
            clf.predict_proba(X_inf.iloc[:BATCH_SIZE])  # warm the shapes
            t_inf, _ = timed(lambda clf=clf: clf.predict_proba(X_inf))
            per[precision].append(
                {
                    "train_rows_s": n_fit / dur,
                    "train_limit_rows_s": BATCH_SIZE / t_train_lim,
                    "train_limit_gflops": k_train.flops / t_train_lim / 1e9,
                    "infer_rows_s": n_inf / t_inf,
                    "infer_limit_rows_s": BATCH_SIZE / t_inf_lim,
                }
            )
    out: dict[str, Any] = {}
    for precision, rows in per.items():
        summary = {k: median([row[k] for row in rows]) for k in rows[0]}
        summary["train_fraction_of_limit"] = median(
            [row["train_rows_s"] / row["train_limit_rows_s"] for row in rows]
        )
        summary["infer_fraction_of_limit"] = median(
            [row["infer_rows_s"] / row["infer_limit_rows_s"] for row in rows]
        )
        out[precision] = summary
    for low in precisions[1:]:
        pairs = list(zip(per["float32"], per[low], strict=True))
        for phase in ("train", "infer"):
            key = f"{phase}_rows_s"
            speedup = median([b[key] / f[key] for f, b in pairs])
            out[f"{low}_{phase}_speedup"] = speedup
            if low == "bfloat16":  # the key of earlier result files
                out[f"{phase}_speedup"] = speedup
    return out


def bfloat16_step_profile(backbone: str) -> dict[str, Any]:
    """Op kinds of a bare bfloat16 training step (see ``op_breakdown``)."""
    step = PureActorStep(backbone, fused=True)

    def run() -> None:
        rows = step._slice()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = step.net(step.x_cat[rows], step.x_num[rows]).float()
        loss = step.loss(out, step.y[rows])
        step.opt.zero_grad()
        loss.backward()
        step.opt.step()

    return op_breakdown(run, steps=3)


def compiled_step_times(backbone: str, steps: int = 6) -> dict[str, float]:
    """Seconds of a bare bfloat16 training step, eager and ``torch.compile``-d."""
    out = {}
    for compiled in (False, True):
        step = PureActorStep(backbone, fused=True)
        net = torch.compile(step.net) if compiled else step.net

        def run(step: PureActorStep = step, net: Any = net) -> None:
            rows = step._slice()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = net(step.x_cat[rows], step.x_num[rows]).float()
            loss = step.loss(out, step.y[rows])
            step.opt.zero_grad()
            loss.backward()
            step.opt.step()

        name = "compiled" if compiled else "eager"
        out[f"{name}_first_step_s"], _ = timed(run)
        out[f"{name}_step_s"] = median([timed(run)[0] for _ in range(steps)])
    return out


def bench_rmtl(
    backbone: str, data: Any, n_fit: int, precisions: list[str]
) -> dict[str, float]:
    X, Y = data.X.iloc[:n_fit], data.Y.iloc[:n_fit]
    sessions, times = data.session_ids[:n_fit], data.timestamps[:n_fit]
    seconds = {}
    for precision in precisions:
        est = RMTLClassifier(
            backbone=backbone,
            max_epochs=1,
            refit_max_epochs=1,
            critic=SessionCritic(max_epochs=1),
            precision=precision,
            random_state=0,
        )
        seconds[precision], _ = timed(
            lambda est=est: est.fit(X, Y, session_ids=sessions, timestamps=times)
        )
    return {
        **{f"{p}_seconds": t for p, t in seconds.items()},
        **{f"{p}_speedup": seconds["float32"] / seconds[p] for p in precisions[1:]},
    }


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--backbones", default=None)
        p.add_argument("--rounds", type=int, default=None)
        p.add_argument("--profile", action="store_true", help="op kinds of a step")
        p.add_argument("--compile", action="store_true", help="torch.compile a step")
        p.add_argument(
            "--precisions",
            default="float32,bfloat16",
            help="comma-separated precisions (float32 is always included)",
        )
        p.add_argument("--no-rmtl", action="store_true", help="skip the whole RMTL fit")

    args = parse_args(__doc__, extra)
    precisions = ["float32"] + [
        p for p in args.precisions.split(",") if p and p != "float32"
    ]
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise SystemExit(
            f"unknown precisions {sorted(unknown)}; use {list(PRECISIONS)}"
        )
    rep = Report("bench_precision", args)
    cpu = torch.cpu
    flags = {
        "avx512_bf16": bool(cpu._is_avx512_bf16_supported()),
        "amx_tile": bool(cpu._is_amx_tile_supported()),
        "native_bfloat16": native_bfloat16("cpu"),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
    gflops = {p: square_gflops(dtype=DTYPES[p]) for p in precisions}
    rep.add(
        "cpu",
        {**flags, "square_gflops": gflops},
        f"CPU bfloat16 support: {flags}; 2048^3 matmul: "
        + ", ".join(
            f"{p} {g:.3g} GFLOP/s ({g / gflops['float32']:.3f}x)"
            for p, g in gflops.items()
        ),
    )
    backbones = args.backbones.split(",") if args.backbones else ["mmoe", "ple"]
    n_fit = BATCH_SIZE * (4 if args.quick else 12)
    n_inf = BATCH_SIZE * (4 if args.quick else 16)
    rounds = args.rounds or (2 if args.quick else 3)
    data = make_data(max(n_fit, n_inf), seed=0)
    for bb in backbones:
        res = bench_backbone(bb, data, n_fit, n_inf, rounds, precisions)
        lines = [f"{bb} at the paper's sizes, {rounds} alternating rounds:"]
        for p in precisions:
            s = res[p]
            lines.append(
                f"  {p:8s} train {fmt_rate(s['train_rows_s'])} rows/s "
                f"({s['train_fraction_of_limit']:.0%} of its {p} limit "
                f"{fmt_rate(s['train_limit_rows_s'])}); predict_proba "
                f"{fmt_rate(s['infer_rows_s'])} rows/s "
                f"({s['infer_fraction_of_limit']:.0%} of "
                f"{fmt_rate(s['infer_limit_rows_s'])})"
            )
        for p in precisions[1:]:
            target = (
                " (targets >= 1.8x, >= 2x)" if p == "bfloat16" else " (CPU: no target)"
            )
            lines.append(
                f"  {p} / float32: train {res[f'{p}_train_speedup']:.2f}x, "
                f"predict_proba {res[f'{p}_infer_speedup']:.2f}x{target}"
            )
        if args.profile:
            res["bfloat16_step_ops"] = ops = bfloat16_step_profile(bb)
            kinds = ", ".join(
                f"{k} {v:.0%}" for k, v in ops.items() if isinstance(v, float)
            )
            lines.append(f"  bfloat16 training step, CPU time by op kind: {kinds}")
        if args.compile:
            res["compile"] = c = compiled_step_times(bb)
            lines.append(
                f"  bfloat16 step eager {c['eager_step_s'] * 1e3:.0f} ms, "
                f"torch.compile {c['compiled_step_s'] * 1e3:.0f} ms (its first "
                f"step, compiling, {c['compiled_first_step_s']:.0f} s)"
            )
        rep.add(bb, res, "\n".join(lines))
    if not args.no_rmtl:
        whole = bench_rmtl(backbones[-1], data, n_fit, precisions)
        rep.add(
            "rmtl_fit",
            whole,
            f"RMTLClassifier(backbone={backbones[-1]!r}).fit, one epoch per phase, "
            f"{n_fit:,} rows: float32 {whole['float32_seconds']:.1f}s"
            + "".join(
                f", {p} {whole[f'{p}_seconds']:.1f}s ({whole[f'{p}_speedup']:.2f}x)"
                for p in precisions[1:]
            ),
        )
    return rep.done()


if __name__ == "__main__":
    main()
