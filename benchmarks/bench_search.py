"""Wall time of one GridSearchCV run sequentially, on Dask and on Ray.

The recipes of ``docs/scaling.rst`` ("Distributed hyper-parameter search")
on one machine: 4 candidates x 2 folds of an ``MTLClassifier`` on
``make_sessions``, run with joblib's sequential backend, on a
``distributed.LocalCluster`` of ``--workers`` worker processes and on a
local Ray instance of as many CPUs, all on the loopback interface. Prints
each search's wall time (cluster start-up timed separately) and whether
its ``cv_results_`` scores equal the sequential ones exactly.

Dask's workers are started without the ``MALLOC_TRIM_THRESHOLD_=65536``
that Dask sets by default (it made torch training 1.5 to 1.7 times slower
here); ``--dask-malloc-trim`` keeps it.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_search.py [--sessions 2000]
[--epochs 20] [--workers 2] [--dask-malloc-trim]``.
"""

from __future__ import annotations

import argparse
import time

import joblib
import numpy as np
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.metrics import session_log_loss_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dask-malloc-trim", action="store_true")
    args = parser.parse_args()

    sklearn.set_config(enable_metadata_routing=True)
    d = make_sessions(n_sessions=args.sessions, random_state=0)
    X, Y, s, t = d.X, d.y, d.session_ids, d.timestamps
    search = GridSearchCV(
        MTLClassifier(
            backbone="sharedbottom",
            backbone_params={"embedding_dim": 16, "bottom_dims": (64, 32)},
            max_epochs=args.epochs,
            random_state=0,
        ),
        {"lr": [1e-3, 3e-3], "weight_decay": [0.0, 1e-4]},
        cv=GroupKFold(n_splits=2),
        scoring=session_log_loss_scorer,
        n_jobs=args.workers,
        refit=False,
    )
    print(f"{len(s)} rows, {args.sessions} sessions, 4 candidates x 2 folds")

    def timed(backend: str) -> dict:
        start = time.perf_counter()
        with joblib.parallel_backend(backend):
            search.fit(X, Y, groups=s, session_ids=s, timestamps=t)
        print(f"{backend:>10}: {time.perf_counter() - start:6.1f} s", end="")
        return dict(search.cv_results_)

    def same(got: dict) -> None:
        keys = [k for k in expected if "test_score" in k]
        print(
            "  identical"
            if all(np.array_equal(got[k], expected[k]) for k in keys)
            else "  DIFFERENT"
        )

    expected = timed("sequential")
    print()

    import dask
    from distributed import Client, LocalCluster

    if not args.dask_malloc_trim:
        trim = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
        dask.config.set({trim: None})

    start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster),
    ):
        print(f"dask start: {time.perf_counter() - start:6.1f} s")
        same(timed("dask"))
        same(timed("dask"))  # workers have imported torch now

    import ray
    from ray.util.joblib import register_ray

    start = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=args.workers,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    register_ray()
    print(f" ray start: {time.perf_counter() - start:6.1f} s")
    try:
        same(timed("ray"))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
