"""Training and inference throughput in float32 and bfloat16, vs their limits.

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

Rounds alternate the two precisions, so each ratio compares timings taken
seconds apart; medians over rounds are printed. The CPU's bfloat16 support
(AVX512-BF16, AMX) is printed with the results.

Run: ``python benchmarks/bench_precision.py [--quick] [--backbones mmoe,ple]
[--profile] [--compile]``.
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

from sklearn_rmtl import MTLClassifier, RMTLClassifier
from sklearn_rmtl._precision import PRECISIONS, native_bfloat16

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def bench_backbone(
    backbone: str, data: Any, n_fit: int, n_inf: int, rounds: int
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
    }
    per: dict[str, list[dict[str, float]]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for precision in PRECISIONS:
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
    pairs = list(zip(per["float32"], per["bfloat16"], strict=True))
    for phase in ("train", "infer"):
        key = f"{phase}_rows_s"
        out[f"{phase}_speedup"] = median([b[key] / f[key] for f, b in pairs])
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


def bench_rmtl(backbone: str, data: Any, n_fit: int) -> dict[str, float]:
    X, Y = data.X.iloc[:n_fit], data.Y.iloc[:n_fit]
    sessions, times = data.session_ids[:n_fit], data.timestamps[:n_fit]
    seconds = {}
    for precision in PRECISIONS:
        est = RMTLClassifier(
            backbone=backbone,
            max_epochs=1,
            refit_max_epochs=1,
            critic_max_epochs=1,
            precision=precision,
            random_state=0,
        )
        seconds[precision], _ = timed(
            lambda est=est: est.fit(X, Y, session_ids=sessions, timestamps=times)
        )
    return {
        **{f"{p}_seconds": t for p, t in seconds.items()},
        "speedup": seconds["float32"] / seconds["bfloat16"],
    }


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--backbones", default=None)
        p.add_argument("--rounds", type=int, default=None)
        p.add_argument("--profile", action="store_true", help="op kinds of a step")
        p.add_argument("--compile", action="store_true", help="torch.compile a step")

    args = parse_args(__doc__, extra)
    rep = Report("bench_precision", args)
    cpu = torch.cpu
    flags = {
        "avx512_bf16": bool(cpu._is_avx512_bf16_supported()),
        "amx_tile": bool(cpu._is_amx_tile_supported()),
        "native_bfloat16": native_bfloat16("cpu"),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }
    gflops = {p: square_gflops(dtype=d) for p, d in DTYPES.items()}
    rep.add(
        "cpu",
        {**flags, "square_gflops": gflops},
        f"CPU bfloat16 support: {flags}; 2048^3 matmul: float32 "
        f"{gflops['float32']:.0f} GFLOP/s, bfloat16 {gflops['bfloat16']:.0f} "
        f"GFLOP/s ({gflops['bfloat16'] / gflops['float32']:.2f}x)",
    )
    backbones = args.backbones.split(",") if args.backbones else ["mmoe", "ple"]
    n_fit = BATCH_SIZE * (4 if args.quick else 12)
    n_inf = BATCH_SIZE * (4 if args.quick else 16)
    rounds = args.rounds or (2 if args.quick else 3)
    data = make_data(max(n_fit, n_inf), seed=0)
    for bb in backbones:
        res = bench_backbone(bb, data, n_fit, n_inf, rounds)
        lines = [f"{bb} at the paper's sizes, {rounds} alternating rounds:"]
        for p in PRECISIONS:
            s = res[p]
            lines.append(
                f"  {p:8s} train {fmt_rate(s['train_rows_s'])} rows/s "
                f"({s['train_fraction_of_limit']:.0%} of its {p} limit "
                f"{fmt_rate(s['train_limit_rows_s'])}); predict_proba "
                f"{fmt_rate(s['infer_rows_s'])} rows/s "
                f"({s['infer_fraction_of_limit']:.0%} of "
                f"{fmt_rate(s['infer_limit_rows_s'])})"
            )
        lines.append(
            f"  bfloat16 / float32: train {res['train_speedup']:.2f}x (target >= "
            f"1.8x), predict_proba {res['infer_speedup']:.2f}x (target >= 2x)"
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
    whole = bench_rmtl(backbones[-1], data, n_fit)
    rep.add(
        "rmtl_fit",
        whole,
        f"RMTLClassifier(backbone={backbones[-1]!r}).fit, one epoch per phase, "
        f"{n_fit:,} rows: float32 {whole['float32_seconds']:.1f}s, bfloat16 "
        f"{whole['bfloat16_seconds']:.1f}s ({whole['speedup']:.2f}x)",
    )
    return rep.done()


if __name__ == "__main__":
    main()
