"""Peak memory: data pipeline per row, a whole fit, and predict_proba on many rows.

- ``tracemalloc`` peaks (numpy/pandas allocations) of the encoder, the MDP
  and the replay data, in bytes per row;
- peak RSS growth (Linux VmHWM, reset right before the call; each
  measurement in a fresh process so freed pages of earlier steps cannot
  hide growth) of a complete ``RMTLClassifier.fit`` with a tiny network at
  two row counts: the per-row slope shows how the fit's data grows (it
  should be linear) and, with the paper-size model's fixed cost, estimates
  a 2M-row fit;
- peak RSS growth of ``predict_proba`` at two row counts (500k and 2M in the
  full run): predictions are made in chunks, so the growth beyond the
  output array should not grow with the rows.

Run: ``python benchmarks/bench_memory.py [--quick]``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from typing import Any

import numpy as np
from _common import (
    BATCH_SIZE,
    Report,
    fmt_rate,
    make_actor,
    make_data,
    max_rss_mib_getrusage,
    parse_args,
    peak_rss_growth,
    timed,
)
from bench_mdp import vectorised_replay

from sklearn_rmtl import FeatureEncoder, MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl._fit_data import encode_inputs
from sklearn_rmtl._mdp import build_transitions
from sklearn_rmtl._validation import check_metadata

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}


def traced(fn: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def pipeline_bytes_per_row(data: Any) -> dict[str, float]:
    n = data.n
    enc = FeatureEncoder()
    parts, p_enc = traced(lambda: enc._fit_transform_parts(data.X))
    inputs, p_inp = traced(lambda: encode_inputs(parts))
    sids = check_metadata(data.session_ids, n, name="session_ids", sortable=False)
    keys = check_metadata(data.timestamps, n, name="timestamps", sortable=True)
    tr, p_mdp = traced(lambda: build_transitions(sids, keys, n))
    y01 = data.Y.to_numpy(np.float32)
    proba = np.random.default_rng(0).random((n, 2))
    _, p_buf = traced(lambda: vectorised_replay(proba, y01, tr))
    held = sum(v.nbytes for v in inputs.values())
    return {
        "encoder_fit_transform_peak": p_enc / n,
        "encoder_output_held": (parts.codes.nbytes + parts.numbers.nbytes) / n,
        "network_inputs_peak": p_inp / n,
        "network_inputs_held": held / n,
        "mdp_peak": p_mdp / n,
        "replay_peak_numpy": p_buf / n,
    }


# ---------------------------------------------------------------- children
def child_fit(n: int) -> dict[str, float]:
    data = make_data(n, seed=1)
    est = RMTLClassifier(
        backbone="esmm",
        backbone_params=TINY,
        critic=SessionCritic(hidden_dims=(8,), max_epochs=1),
        max_epochs=1,
        refit_max_epochs=1,
        random_state=0,
    )
    with peak_rss_growth() as mem:
        t, _ = timed(
            lambda: est.fit(
                data.X, data.Y, session_ids=data.session_ids, timestamps=data.timestamps
            )
        )
    return {
        "rows": n,
        "growth_mib": mem["growth_mib"],
        "seconds": t,
        "base_mib": mem["base_mib"],
    }


def child_predict(n: int, paper: bool) -> dict[str, float]:
    data = make_data(n, seed=2)
    params = {} if paper else {"backbone_params": TINY}
    clf = MTLClassifier(
        backbone="esmm", max_epochs=1, early_stopping=False, random_state=0, **params
    ).fit(data.X.iloc[: 2 * BATCH_SIZE], data.Y.iloc[: 2 * BATCH_SIZE])
    clf.predict_proba(data.X.iloc[:BATCH_SIZE])  # warm up
    X = data.X
    with peak_rss_growth() as mem:
        t, P = timed(lambda: clf.predict_proba(X))
    out_mib = P.nbytes / 2**20
    return {
        "rows": n,
        "growth_mib": mem["growth_mib"],
        "output_mib": out_mib,
        "growth_beyond_output_mib": mem["growth_mib"] - out_mib,
        "rows_s": n / t,
        "base_mib": mem["base_mib"],
    }


def run_child(*argv: str, threads: int | None) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *argv]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def paper_model_fixed_mib(backbone: str) -> float:
    """Parameters + gradients + two Adam moments of the paper-size actor."""
    n_params = sum(p.numel() for p in make_actor(backbone).parameters())
    return n_params * 4 * 4 / 2**20


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--child", nargs="+", default=None, help=argparse_hidden())

    args = parse_args(__doc__, extra)
    if args.child:
        kind, n = args.child[0], int(args.child[1])
        res = (
            child_fit(n) if kind == "fit" else child_predict(n, kind == "predict_paper")
        )
        print(json.dumps(res))
        return res
    rep = Report("bench_memory", args)
    n_pipe = 500_000 if args.quick else 2_000_000
    n_pred = 160_000 if args.quick else 2_000_000
    fit_rows = (16_000, 64_000) if args.quick else (100_000, 400_000)

    data = make_data(n_pipe, seed=0)
    per_row = pipeline_bytes_per_row(data)
    del data
    rep.add(
        "pipeline_bytes_per_row",
        per_row,
        f"numpy/pandas peaks on {n_pipe:,} rows (bytes/row): "
        + ", ".join(f"{k} {v:.0f}" for k, v in per_row.items()),
    )

    fits = [run_child("fit", str(n), threads=args.threads) for n in fit_rows]
    slope = (
        (fits[1]["growth_mib"] - fits[0]["growth_mib"])
        / (fits[1]["rows"] - fits[0]["rows"])
        * 2**20
    )
    per_row_fit = [f["growth_mib"] * 2**20 / f["rows"] for f in fits]
    fixed = {bb: paper_model_fixed_mib(bb) for bb in ("esmm", "mmoe", "ple")}
    est_2m = {bb: (slope * 2_000_000) / 2**20 + f for bb, f in fixed.items()}
    rep.add(
        "fit",
        {
            "runs": fits,
            "slope_bytes_per_row": slope,
            "bytes_per_row": per_row_fit,
            "paper_model_fixed_mib": fixed,
            "estimated_2m_fit_mib": est_2m,
        },
        "RMTLClassifier.fit (tiny network) peak RSS growth: "
        + ", ".join(
            f"{f['rows']:,} rows +{f['growth_mib']:.0f} MiB ({f['seconds']:.0f}s)"
            for f in fits
        )
        + f"; slope {slope:.0f} B/row (overall "
        + " and ".join(f"{b:.0f}" for b in per_row_fit)
        + " B/row)\n  paper-size model state (params+grads+Adam): "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in fixed.items())
        + "; estimated 2M-row fit (data slope + model): "
        + ", ".join(f"{k} {v / 1024:.1f} GiB" for k, v in est_2m.items()),
    )

    preds = [
        run_child("predict", str(m), threads=args.threads)
        for m in (n_pred // 4, n_pred)
    ]
    rep.add(
        "predict_proba",
        preds,
        "predict_proba (tiny network) peak RSS growth: "
        + "; ".join(
            f"{p['rows']:,} rows +{p['growth_mib']:.0f} MiB ({p['output_mib']:.0f} MiB "
            f"output, +{p['growth_beyond_output_mib']:.0f} MiB beyond; "
            f"{fmt_rate(p['rows_s'])} rows/s)"
            for p in preds
        ),
    )
    if not args.quick:
        pp = [
            run_child("predict_paper", str(m), threads=args.threads)
            for m in (16_384, 65_536)
        ]
        rep.add(
            "predict_proba_paper_esmm",
            pp,
            "predict_proba (paper-size ESMM) peak RSS growth: "
            + "; ".join(
                f"{p['rows']:,} rows +{p['growth_mib']:.0f} MiB "
                f"(+{p['growth_beyond_output_mib']:.0f} MiB beyond output; "
                f"{fmt_rate(p['rows_s'])} rows/s)"
                for p in pp
            ),
        )
    rep.add(
        "max_rss_mib",
        max_rss_mib_getrusage(),
        f"this process's max RSS (getrusage): {max_rss_mib_getrusage():.0f} MiB",
    )
    return rep.done()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
