"""Inference throughput: onnxruntime on the exported graph vs ``predict_proba``.

For each backbone at the paper's sizes (embedding 128, 512-256 bottoms or
experts, 128-64 towers, 8 experts), one ``MTLClassifier`` is fitted for one
epoch on RetailRocket-shaped rows (the weights do not matter for speed),
exported with :func:`sklearn_rmtl.export.to_onnx`, and both paths score the
same raw rows, from a DataFrame, encoding included:

- ``predict_proba(X)``: the library (pandas encoding, then torch);
- onnxruntime: ``onnx_inputs(est, X)`` (the per-column arrays a server
  would receive) is built outside the timed region, then
  ``session.run`` does the lookups, scaling and network.

Printed: rows/s of each, their ratio in the same run, the export time and
the largest absolute difference of the probabilities. Both run on the
threads set by ``--threads`` (torch intra-op threads and onnxruntime's
``intra_op_num_threads``).

Run: ``python benchmarks/bench_onnx.py [--quick] [--threads 1]
[--backbones mmoe,ple]``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import Report, fmt_rate, make_data, median, paper_params, parse_args

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl.export import onnx_inputs, to_onnx


def _extra(p) -> None:
    p.add_argument("--backbones", default="esmm,mmoe,ple")
    p.add_argument("--rows", type=int, default=None, help="rows scored per run")


def main() -> None:
    import onnxruntime as ort

    args = parse_args(__doc__, _extra)
    report = Report("bench_onnx", args)
    n_fit = 20_000 if args.quick else 100_000
    n_score = args.rows or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (2 if args.quick else 5)
    threads = args.threads or torch.get_num_threads()
    data = make_data(n_fit + n_score, seed=0)
    X_fit, y_fit = data.X.iloc[:n_fit], data.Y.iloc[:n_fit]
    X = data.X.iloc[n_fit:].reset_index(drop=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for backbone in args.backbones.split(","):
        est = MTLClassifier(
            backbone=backbone,
            backbone_params=paper_params(backbone),
            max_epochs=1,
            early_stopping=False,
            random_state=0,
        ).fit(X_fit, y_fit)
        start = time.perf_counter()
        model = to_onnx(est)
        export_s = time.perf_counter() - start
        session = ort.InferenceSession(model.SerializeToString(), options)
        feed = onnx_inputs(est, X)
        ours, served = est.predict_proba(X), session.run(None, feed)[0]  # warm-up
        t_ours, t_onnx = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            est.predict_proba(X)
            t_ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feed)
            t_onnx.append(time.perf_counter() - start)
        rate_ours, rate_onnx = n_score / median(t_ours), n_score / median(t_onnx)
        diff = float(np.abs(ours - served).max())
        report.add(
            backbone,
            {
                "predict_proba_rows_s": rate_ours,
                "onnxruntime_rows_s": rate_onnx,
                "ratio": rate_onnx / rate_ours,
                "export_s": export_s,
                "max_abs_diff": diff,
                "threads": threads,
                "rows": n_score,
            },
            f"{backbone:6s} predict_proba {fmt_rate(rate_ours)} rows/s, "
            f"onnxruntime {fmt_rate(rate_onnx)} rows/s "
            f"(x{rate_onnx / rate_ours:.2f}), export {export_s:.1f} s, "
            f"max |diff| {diff:.1e}  ({threads} thread(s), {n_score} rows)",
        )
    report.done()


if __name__ == "__main__":
    main()
