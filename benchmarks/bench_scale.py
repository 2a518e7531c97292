"""Scale: a whole RMTL fit on 2M rows, then predict_proba on 10M rows.

Fits ``RMTLClassifier`` at the paper's sizes (the package defaults) on
RetailRocket-shaped rows, one epoch per phase (pretrain, critic, refit;
early stopping on, so validation runs too), and reports the wall time of
each phase, throughput and the peak resident memory above the data. Then
``predict_proba`` on ``--predict-rows`` rows: peak memory beyond the output
array shows whether prediction is batched (bounded) or grows with the rows.

Not part of ``run_all.py`` (it takes about 10 minutes for ESMM on 2 cores).

Run: ``python benchmarks/bench_scale.py [--rows 2000000] [--backbone esmm]
[--predict-rows 10000000]``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from _common import (
    Report,
    fmt_rate,
    make_data,
    parse_args,
    peak_rss_growth,
    release_free_memory,
    rss_mib,
)

from sklearn_rmtl import RMTLClassifier, SessionCritic


def tiled(data: Any, n: int) -> pd.DataFrame:
    """``n`` rows of features, repeating the generated ones (for predict)."""
    reps = -(-n // data.n)
    idx = np.tile(np.arange(data.n), reps)[:n]
    return data.X.iloc[idx].reset_index(drop=True)


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--rows", type=int, default=2_000_000)
        p.add_argument("--backbone", default="esmm")
        p.add_argument("--predict-rows", type=int, default=10_000_000)

    args = parse_args(__doc__, extra)
    rep = Report("bench_scale", args)
    n = 200_000 if args.quick else args.rows
    n_pred = 1_000_000 if args.quick else args.predict_rows
    t0 = time.perf_counter()
    data = make_data(n, seed=0)
    rep.add(
        "data",
        {"rows": n, "seconds": time.perf_counter() - t0},
        f"generated {n:,} rows in {time.perf_counter() - t0:.0f}s; RSS "
        f"{rss_mib():.0f} MiB",
    )
    est = RMTLClassifier(
        backbone=args.backbone,
        max_epochs=1,
        critic=SessionCritic(max_epochs=1),
        refit_max_epochs=1,
        random_state=0,
    )
    with peak_rss_growth() as mem:
        t = time.perf_counter()
        est.fit(
            data.X, data.Y, session_ids=data.session_ids, timestamps=data.timestamps
        )
        t_fit = time.perf_counter() - t
    phases = {
        name: sum(row["dur"] for row in rows) for name, rows in est.history_.items()
    }
    fit = {
        "rows": n,
        "backbone": args.backbone,
        "fit_seconds": t_fit,
        "phase_epoch_seconds": phases,
        "peak_rss_growth_mib": mem["growth_mib"],
        "rss_before_mib": mem["base_mib"],
    }
    rep.add(
        "fit",
        fit,
        f"RMTLClassifier(backbone={args.backbone!r}) fit on {n:,} rows, one epoch "
        f"per phase: {t_fit / 60:.1f} min ({fmt_rate(n / t_fit)} rows/s); epoch "
        "loops: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items())
        + f"; peak RSS +{mem['growth_mib'] / 1024:.2f} GiB above the "
        f"{mem['base_mib'] / 1024:.2f} GiB held before the fit",
    )
    del data
    release_free_memory()

    X = tiled(make_data(min(n, 1_000_000), seed=1), n_pred)
    out_mib = n_pred * est.n_tasks_ * 8 / 2**20
    with peak_rss_growth() as pmem:
        t = time.perf_counter()
        proba = est.predict_proba(X)
        t_pred = time.perf_counter() - t
    predict = {
        "rows": n_pred,
        "seconds": t_pred,
        "rows_s": n_pred / t_pred,
        "output_mib": out_mib,
        "peak_rss_growth_mib": pmem["growth_mib"],
        "growth_beyond_output_mib": pmem["growth_mib"] - out_mib,
        "finite": bool(np.isfinite(proba).all()),
    }
    rep.add(
        "predict",
        predict,
        f"predict_proba on {n_pred:,} rows: {t_pred:.0f}s "
        f"({fmt_rate(n_pred / t_pred)} rows/s); peak RSS +{pmem['growth_mib']:.0f} "
        f"MiB, of which the output array {out_mib:.0f} MiB: "
        f"{pmem['growth_mib'] - out_mib:.0f} MiB beyond it",
    )
    return rep.done()


if __name__ == "__main__":
    main()
