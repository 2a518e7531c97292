"""One process against 2 data-parallel processes (gloo, CPU), in one run.

Fits ``MTLClassifier`` (and, unless ``--no-rmtl``, ``RMTLClassifier``) on
the bundled RetailRocket sample (``sklearn_rmtl.datasets.load_retailrocket``,
75k rows) once in one process and once with ``distributed=True`` over
``--nproc`` processes spawned on localhost with the gloo backend, each
limited to one thread (``OMP_NUM_THREADS=1``), and prints:

- training throughput (rows/s of the epoch loop, from the history's
  ``dur``) and the whole ``fit`` time of each, and their ratio;
- the time of one all-reduce of a gradient-sized float32 vector over the
  processes (what every training step adds), against the step time;
- the largest difference between the predicted probabilities of the two
  fits (dropout 0, so it is float rounding only).

On a machine with as many free cores as processes the ratio shows the
cost of the per-step all-reduce of the gradients and of the smaller
per-process batches; it says nothing about GPU scaling, where a process's
step is much faster and the communication (NCCL) differs.

With ``--compare-ddp`` it times the two ways of summing the gradients
instead, in the same ``--nproc`` processes: ``DistributedDataParallel``
(the default: buckets all-reduced during the backward pass) against the
hand-written sum (``sklearn_rmtl._distributed.USE_DDP = False``: one flat
all-reduce after it), alternating hand, DDP, DDP, hand over ``--repeats``
pairs of fits so that a change in the machine's load hits both alike. It
prints the rows/s of each (epoch loop, epochs after the first; with RMTL
also the critics' TD epochs and the whole fit), their ratio, and the largest
difference between the two fits' probabilities (float rounding only).

Run: ``python benchmarks/bench_distributed.py [--nproc 2] [--epochs 2]
[--backbone mmoe] [--no-rmtl] [--rows N] [--compare-ddp [--repeats 2]]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sklearn_rmtl._distributed as dp_module
from sklearn_rmtl import MTLClassifier, RMTLClassifier, SessionCritic
from sklearn_rmtl.datasets import load_retailrocket


def _data(args: argparse.Namespace) -> Any:
    """The RetailRocket sample, or its first ``--rows`` rows."""
    data = load_retailrocket()
    if args.rows is None:
        return data.X, data.y, data.session_ids, data.timestamps
    n = args.rows
    X, y = data.X.iloc[:n], data.y.iloc[:n]
    return X, y, data.session_ids[:n], data.timestamps[:n]


def _fits(args: argparse.Namespace, distributed: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    X, y, session_ids, timestamps = _data(args)
    common = {
        "backbone": args.backbone,
        "backbone_params": {"embedding_dim": 32, "dropout": 0.0},
        "batch_size": args.batch_size,
        "early_stopping": False,
        "random_state": 0,
        "distributed": distributed,
    }
    out: dict[str, Any] = {}
    start = time.perf_counter()
    mtl = MTLClassifier(max_epochs=args.epochs, **common).fit(X, y)
    out["mtl_fit_s"] = time.perf_counter() - start
    out["mtl_epoch_s"] = [r["dur"] for r in mtl.history_["pretrain"]]
    out["mtl_proba"] = mtl.predict_proba(X).tolist()
    out["n_params"] = sum(p.numel() for p in mtl.net_.module_.parameters())
    if args.rmtl:
        start = time.perf_counter()
        rmtl = RMTLClassifier(
            max_epochs=1,
            critic=SessionCritic(max_epochs=1),
            refit_max_epochs=1,
            **common,
        ).fit(X, y, session_ids=session_ids, timestamps=timestamps)
        out["rmtl_fit_s"] = time.perf_counter() - start
        out["rmtl_critic_s"] = [r["dur"] for r in rmtl.history_["critic"]]
        out["rmtl_proba"] = rmtl.predict_proba(X).tolist()
    out["n_rows"] = len(X)
    return out


@contextlib.contextmanager
def _process_group(rank: int, port: int, world_size: int) -> Iterator[None]:
    """This process in a gloo group of ``world_size``, left at the end."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def _rank(rank: int, port: int, args: argparse.Namespace, path: str) -> None:
    with _process_group(rank, port, args.nproc):
        result = _fits(args, distributed=True)
        grads = torch.zeros(result["n_params"])
        dist.all_reduce(grads)  # warm-up
        start = time.perf_counter()
        for _ in range(20):
            dist.all_reduce(grads)
        result["allreduce_s"] = (time.perf_counter() - start) / 20
        if rank == 0:
            with open(path, "w") as f:
                json.dump(result, f)


def _compare_rank(rank: int, port: int, args: argparse.Namespace, path: str) -> None:
    """Fits alternating the hand-written sum and DDP; rank 0 writes them."""
    with _process_group(rank, port, args.nproc):
        # Untimed: the first fit of a process pays one-off costs.
        _fits(argparse.Namespace(**{**vars(args), "rows": 2048, "epochs": 1}), True)
        runs: dict[str, list[dict[str, Any]]] = {"hand": [], "ddp": []}
        # hand, DDP, DDP, hand, ...: a drift in the load hits both alike.
        pairs = [("hand", "ddp"), ("ddp", "hand")]
        for mode in [m for i in range(args.repeats) for m in pairs[i % 2]]:
            dp_module.USE_DDP = mode == "ddp"
            runs[mode].append(_fits(args, distributed=True))
        dp_module.USE_DDP = True
        if rank == 0:
            with open(path, "w") as f:
                json.dump(runs, f)


def _compare(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rank0.json")
        mp.start_processes(
            _compare_rank,
            args=(_free_port(), args, path),
            nprocs=args.nproc,
            start_method="spawn",
        )
        with open(path) as f:
            runs = json.load(f)
    first = runs["hand"][0]
    n = first["n_rows"]
    steady = slice(1, None) if args.epochs > 1 else slice(None)

    def rate(mode: str, key: str) -> float:
        return n / float(np.mean([d for r in runs[mode] for d in r[key][steady]]))

    print(
        f"RetailRocket sample, {n} rows; MTLClassifier(backbone={args.backbone!r}, "
        f"embedding 32, batch {args.batch_size}), {args.epochs} epoch(s), "
        f"{len(runs['hand'])} fit(s) of each; {args.nproc} gloo processes of 1 "
        f"thread; torch {torch.__version__}, {os.cpu_count()} CPU(s)"
    )
    print(f"{'':32s}{'hand sum':>12s}{'DDP':>12s}{'speed-up':>10s}")
    rows = [("MTL train rows/s (epoch loop)", "mtl_epoch_s", True)]
    rows.append(("MTL fit, s (mean)", "mtl_fit_s", False))
    if args.rmtl:
        rows.append(("RMTL fit, s (mean)", "rmtl_fit_s", False))
    for label, key, is_rate in rows:
        if is_rate:
            hand, ddp = rate("hand", key), rate("ddp", key)
            print(f"{label:32s}{hand:12.0f}{ddp:12.0f}{ddp / hand:10.2f}")
        else:
            hand = float(np.mean([r[key] for r in runs["hand"]]))
            ddp = float(np.mean([r[key] for r in runs["ddp"]]))
            print(f"{label:32s}{hand:12.1f}{ddp:12.1f}{hand / ddp:10.2f}")
    if args.rmtl:  # every critic epoch: one per fit
        hand, ddp = (
            n / float(np.mean([d for r in runs[m] for d in r["rmtl_critic_s"]]))
            for m in ("hand", "ddp")
        )
        label = "RMTL critic rows/s (TD epoch)"
        print(f"{label:32s}{hand:12.0f}{ddp:12.0f}{ddp / hand:10.2f}")
    print("(ratios above 1: DDP is faster)")
    for key in ("mtl_proba", "rmtl_proba"):
        if key in first:
            diff = np.abs(
                np.asarray(runs["hand"][0][key]) - np.asarray(runs["ddp"][0][key])
            ).max()
            print(f"max |proba difference| hand vs DDP, {key[:-6].upper()}: {diff:.1e}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--backbone", default="mmoe")
    parser.add_argument("--no-rmtl", dest="rmtl", action="store_false")
    parser.add_argument("--rows", type=int, default=None, help="first N rows only")
    parser.add_argument(
        "--compare-ddp",
        action="store_true",
        help="time DDP against the hand-written gradient sum instead",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="--compare-ddp: pairs of fits"
    )
    args = parser.parse_args()
    if args.compare_ddp:
        _compare(args)
        return

    one = _fits(args, distributed=False)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rank0.json")
        start = time.perf_counter()
        mp.start_processes(
            _rank,
            args=(_free_port(), args, path),
            nprocs=args.nproc,
            start_method="spawn",
        )
        launch_s = time.perf_counter() - start
        with open(path) as f:
            many = json.load(f)

    n, p = one["n_rows"], args.nproc
    # The first epoch holds one-off costs; the rest are the steady state.
    steady = slice(1, None) if args.epochs > 1 else slice(None)
    rate_1 = n / float(np.mean(one["mtl_epoch_s"][steady]))
    rate_p = n / float(np.mean(many["mtl_epoch_s"][steady]))
    print(
        f"RetailRocket sample, {n} rows; MTLClassifier(backbone={args.backbone!r}, "
        f"embedding 32, batch {args.batch_size}), {args.epochs} epoch(s); "
        f"torch {torch.__version__}, {os.cpu_count()} CPU(s), 1 thread per process"
    )
    print(f"{'':28s}{'1 process':>12s}{f'{p} processes':>14s}{'ratio':>8s}")
    print(
        f"{'train rows/s (epoch loop)':28s}{rate_1:12.0f}{rate_p:14.0f}"
        f"{rate_p / rate_1:8.2f}"
    )
    print(
        f"{'MTL fit, s':28s}{one['mtl_fit_s']:12.1f}{many['mtl_fit_s']:14.1f}"
        f"{one['mtl_fit_s'] / many['mtl_fit_s']:8.2f}"
    )
    if args.rmtl:
        print(
            f"{'RMTL fit (1 epoch/phase), s':28s}{one['rmtl_fit_s']:12.1f}"
            f"{many['rmtl_fit_s']:14.1f}"
            f"{one['rmtl_fit_s'] / many['rmtl_fit_s']:8.2f}"
        )
    steps = -(-n // args.batch_size)
    step_s = float(np.mean(many["mtl_epoch_s"][steady])) / steps
    print(
        "epoch loop, s per epoch: 1 process "
        f"{', '.join(f'{d:.1f}' for d in one['mtl_epoch_s'])}; {p} processes "
        f"{', '.join(f'{d:.1f}' for d in many['mtl_epoch_s'])}"
    )
    print(
        f"all-reduce of the {many['n_params']:,} gradients "
        f"({many['n_params'] * 4 / 2**20:.1f} MiB): "
        f"{many['allreduce_s'] * 1e3:.1f} ms, {many['allreduce_s'] / step_s:.0%} of "
        f"a {p}-process step ({step_s * 1e3:.0f} ms)"
    )
    print(f"{p}-process launch and all fits: {launch_s:.1f} s")
    for key in ("mtl_proba", "rmtl_proba"):
        if key in one:
            diff = np.abs(np.asarray(one[key]) - np.asarray(many[key])).max()
            print(f"max |proba difference| {key[:-6].upper()}: {diff:.1e}")


if __name__ == "__main__":
    main()
