"""What a behaviour history costs: training and prediction rows/s with and without.

On RetailRocket-shaped rows (``_common.make_data``) with a history column
of 50 earlier items of ``field_1`` per row (the bundled samples' histories
hold 32-38 on average), MMoE and PLE at the paper's sizes (embedding 128,
batch 2048) are timed through the public API in each pooling, in the same
round so that each ratio compares timings taken seconds apart:

- ``none``: the rows without the history column;
- ``mean``: the history as a sequence feature, averaged;
- ``attention``: DIN's target attention by ``field_1`` (the default).

For each: rows/s of one training epoch (``early_stopping=False``, skorch's
``dur``), of ``predict_proba`` on the DataFrame, and of encoding alone
(``FeatureEncoder.transform``, the part a sequence column adds on the data
side), in float32 and bfloat16 (autocast covers the attention MLP and the
pooling products). Medians over ``--repeats`` rounds; each ratio is against
``none`` of the same precision.

Run: ``python benchmarks/bench_sequences.py [--quick] [--backbones mmoe,ple]
[--precisions float32,bfloat16]``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from _common import Report, fmt_rate, make_data, median, parse_args

from sklearn_rmtl import FeatureEncoder, MTLClassifier
from sklearn_rmtl._precision import native_bfloat16

HISTORY = 50
POOLINGS = ("none", "mean", "attention")


def with_history(X: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """X plus ``history``: 50 items of ``field_1``'s vocabulary per row."""
    rng = np.random.default_rng(seed)
    categories = X["field_1"].cat.categories.to_numpy(dtype=object)
    codes = rng.integers(0, len(categories), (len(X), HISTORY))
    return X.assign(history=pd.Series(list(categories[codes]), index=X.index))


def model(backbone: str, pooling: str, precision: str, sizes: dict) -> MTLClassifier:
    params: dict[str, Any] = dict(sizes)
    extra: dict[str, Any] = {}
    if pooling != "none":
        params["sequence_pooling"] = pooling
        extra = {
            "sequence_features": {"history": "field_1"},
            "max_sequence_length": HISTORY,
        }
    return MTLClassifier(
        backbone=backbone,
        backbone_params=params,
        max_epochs=1,
        early_stopping=False,
        precision=precision,
        random_state=0,
        **extra,
    )


def main() -> None:
    def extra(p: Any) -> None:
        p.add_argument("--backbones", default="mmoe,ple")
        p.add_argument("--precisions", default="float32,bfloat16")

    args = parse_args(__doc__, extra)
    report = Report("bench_sequences", args)
    n_rows = 8_192 if args.quick else 40_960
    repeats = args.repeats or (2 if args.quick else 3)
    sizes = (
        {"embedding_dim": 32, "bottom_dims": (64,), "tower_dims": (32,)}
        if args.quick
        else {"embedding_dim": 128, "bottom_dims": (512, 256), "tower_dims": (128, 64)}
    )
    data = make_data(n_rows)
    X = with_history(data.X)
    inputs = {"none": X.drop(columns="history"), "mean": X, "attention": X}
    report.add("native_bfloat16", native_bfloat16("cpu"))
    for backbone in args.backbones.split(","):
        for precision in args.precisions.split(","):
            times: dict[str, dict[str, list[float]]] = {
                p: {"fit": [], "predict": [], "encode": []} for p in POOLINGS
            }
            for _ in range(repeats):
                for pooling in POOLINGS:
                    est = model(backbone, pooling, precision, sizes)
                    est.fit(inputs[pooling], data.Y)
                    times[pooling]["fit"].append(est.history_["pretrain"][-1]["dur"])
                    start = time.perf_counter()
                    est.predict_proba(inputs[pooling])
                    times[pooling]["predict"].append(time.perf_counter() - start)
                    encoder = FeatureEncoder(
                        **{
                            k: v
                            for k, v in est.get_params().items()
                            if k in ("sequence_features", "max_sequence_length")
                        }
                    ).fit(inputs[pooling])
                    start = time.perf_counter()
                    encoder.transform(inputs[pooling])
                    times[pooling]["encode"].append(time.perf_counter() - start)
            base = {k: median(v) for k, v in times["none"].items()}
            for pooling in POOLINGS:
                med = {k: median(v) for k, v in times[pooling].items()}
                rates = {k: n_rows / v for k, v in med.items()}
                ratios = {k: base[k] / med[k] for k in med}
                key = f"{backbone}/{precision}/{pooling}"
                report.add(
                    key,
                    {"rows_per_s": rates, "speed_vs_none": ratios},
                    f"{key:<28} fit {fmt_rate(rates['fit']):>7} rows/s "
                    f"({ratios['fit']:.2f}x none), predict "
                    f"{fmt_rate(rates['predict']):>7} ({ratios['predict']:.2f}x), "
                    f"encode {fmt_rate(rates['encode']):>7} "
                    f"({ratios['encode']:.2f}x)",
                )
    report.done()


if __name__ == "__main__":
    main()
