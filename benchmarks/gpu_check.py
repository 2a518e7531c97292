"""Every GPU path of the library, run on one device in one command.

Each check fits small models on ``--device`` and compares what they predict
with a reference: the same fitted model loaded on the CPU (so GPU and CPU
kernels agree within the stated tolerance), a safe file or a joblib pickle
read back on the CPU, the ONNX graph under onnxruntime, a fit from a Parquet
source, and a one-process ``distributed=True`` fit (NCCL on CUDA, gloo on
CPU). Every backbone and RMTL (critics, refit, D-PLE's actor step) run in
float32, bfloat16 and float16.

Run::

    python benchmarks/gpu_check.py              # the first CUDA device
    python benchmarks/gpu_check.py --device cpu  # the same checks on the CPU

Without a CUDA device the first form prints that it skipped and exits 0;
the test suite runs the second form (``tests/test_gpu_check.py``), so the
script is known to work before a GPU is at hand. Prints one line per check
(PASS or FAIL, seconds, the largest difference and its tolerance) and exits
1 when any failed.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import joblib
import numpy as np
import torch

from sklearn_rmtl import MTLClassifier, ParquetSource, RMTLClassifier, SessionCritic
from sklearn_rmtl.backbones import BACKBONES
from sklearn_rmtl.datasets import make_sessions
from sklearn_rmtl.persistence import load, save

PRECISIONS = ("float32", "bfloat16", "float16")
#: Largest |difference| of probabilities between the device and the CPU.
#: Lower precisions round every product to 8 (bf16) or 11 (fp16) bits, on
#: each device in its own order.
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}
SIZES = {"embedding_dim": 8, "bottom_dims": (16,), "tower_dims": (8,)}
EXPERTS = {
    "mmoe": {"n_experts": 2},
    "omoe": {"n_experts": 2},
    "ple": {"n_shared_experts": 1, "n_specific_experts": 1},
}


def _data() -> tuple[Any, Any, np.ndarray, np.ndarray]:
    return make_sessions(150, return_X_y=True, random_state=0)


def _params(backbone: str, device: str, precision: str) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "backbone_params": {**SIZES, **EXPERTS.get(backbone, {})},
        "max_epochs": 2,
        "batch_size": 256,
        "device": device,
        "precision": precision,
        "random_state": 0,
    }


def _on_cpu(estimator: MTLClassifier) -> MTLClassifier:
    """The fitted estimator read back from a safe file onto the CPU."""
    buffer = io.BytesIO()
    save(estimator, buffer)
    buffer.seek(0)
    return load(buffer, device="cpu")


def _largest(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


def check_backbones(device: str, precision: str) -> float:
    """Every backbone fits and predicts on the device like on the CPU."""
    X, Y, _, t = _data()
    worst = 0.0
    for backbone in BACKBONES:
        est = MTLClassifier(**_params(backbone, device, precision))
        est.fit(X, Y, timestamps=t)
        worst = max(
            worst, _largest(est.predict_proba(X), _on_cpu(est).predict_proba(X))
        )
    return worst


def check_rmtl(device: str, precision: str) -> float:
    """RMTL's critics and refit, and D-PLE's actor steps, on the device."""
    X, Y, s, t = _data()
    critic = SessionCritic(hidden_dims=(16,), max_epochs=2)
    worst = 0.0
    for extra in ({}, {"actor_update": True, "refit_max_epochs": 0}):
        est = RMTLClassifier(
            **_params("ple", device, precision), critic=critic, **extra
        )
        est.fit(X, Y, session_ids=s, timestamps=t)
        worst = max(
            worst, _largest(est.predict_proba(X), _on_cpu(est).predict_proba(X))
        )
    return worst


def check_files(device: str, precision: str) -> float:
    """A model fitted on the device, saved (safe file and joblib), predicts the
    same read back; the safe file loads onto the CPU."""
    X, Y, s, t = _data()
    est = RMTLClassifier(
        **_params("mmoe", device, precision),
        critic=SessionCritic(hidden_dims=(16,), max_epochs=2),
    ).fit(X, Y, session_ids=s, timestamps=t)
    proba = est.predict_proba(X)
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    pickled = joblib.load(buffer)
    return max(
        _largest(pickled.predict_proba(X), proba),
        _largest(_on_cpu(est).predict_proba(X), proba),
    )


def check_onnx(device: str, precision: str) -> float:
    """The ONNX graph of a model fitted on the device, under onnxruntime."""
    import onnxruntime as ort

    from sklearn_rmtl.export import onnx_inputs, to_onnx

    X, Y, _, t = _data()
    est = MTLClassifier(**_params("ple", device, precision)).fit(X, Y, timestamps=t)
    session = ort.InferenceSession(to_onnx(est).SerializeToString())
    (graph,) = session.run(None, onnx_inputs(est, X))
    return _largest(np.asarray(graph, dtype=np.float64), est.predict_proba(X))


def check_parquet(device: str, precision: str) -> float:
    """A fit from a Parquet source onto the device: read as one block it
    equals the in-memory fit; in blocks of 128 rows (shuffled within each
    block, so not equal) it gives finite probabilities."""
    X, Y, s, t = _data()
    frame = X.assign(session=s, time=t, **{c: Y[c] for c in Y.columns})
    frame = frame.sort_values(["session", "time"], kind="stable")
    params = _params("mmoe", device, precision)
    critic = SessionCritic(hidden_dims=(16,), max_epochs=2)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.parquet")
        frame.to_parquet(path, row_group_size=100)
        features = frame[list(X.columns)]
        for block_rows in (128, 10**6):
            source = ParquetSource(
                path,
                target=list(Y.columns),
                session="session",
                time="time",
                block_rows=block_rows,
            )
            streamed = RMTLClassifier(**params, critic=critic).fit(source)
            proba = streamed.predict_proba(source)
            if not np.isfinite(proba).all():
                raise AssertionError(
                    f"non-finite probabilities, block_rows={block_rows}"
                )
    memory = RMTLClassifier(**params, critic=critic).fit(
        features,
        frame[list(Y.columns)],
        session_ids=frame["session"],
        timestamps=frame["time"],
    )
    return _largest(proba, memory.predict_proba(features))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process_group(device: str) -> Iterator[None]:
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_distributed(device: str, precision: str) -> float:
    """``distributed=True`` in a one-process group (NCCL on CUDA) predicts as
    the same fit without it (dropout 0: a rank draws its own masks)."""
    X, Y, s, t = _data()
    critic = SessionCritic(hidden_dims=(16,), max_epochs=2)
    params = _params("mmoe", device, precision)
    params["backbone_params"]["dropout"] = 0.0
    alone = RMTLClassifier(**params, critic=critic).fit(
        X, Y, session_ids=s, timestamps=t
    )
    with _process_group(device):
        together = RMTLClassifier(**params, critic=critic, distributed=True)
        together.fit(X, Y, session_ids=s, timestamps=t)
    return _largest(together.predict_proba(X), alone.predict_proba(X))


CHECKS: dict[str, tuple[Callable[[str, str], float], dict[str, float]]] = {
    "backbones": (check_backbones, TOLERANCE),
    "rmtl": (check_rmtl, TOLERANCE),
    "files": (check_files, dict.fromkeys(PRECISIONS, 1e-6)),
    "onnx": (check_onnx, {"float32": 1e-5, "bfloat16": 5e-3, "float16": 1e-3}),
    "parquet": (check_parquet, dict.fromkeys(PRECISIONS, 1e-5)),
    "distributed": (check_distributed, dict.fromkeys(PRECISIONS, 1e-5)),
}


def run(device: str, checks: list[str], precisions: list[str]) -> list[dict[str, Any]]:
    """Run ``checks`` in every precision; one record per (check, precision)."""
    results = []
    for name in checks:
        check, tolerance = CHECKS[name]
        for precision in precisions:
            start = time.perf_counter()
            record: dict[str, Any] = {"check": name, "precision": precision}
            try:
                diff = check(device, precision)
                record.update(diff=diff, ok=diff <= tolerance[precision])
            except ImportError as exc:  # an optional extra (onnxruntime)
                record.update(diff=None, ok=None, error=f"skipped: {exc}")
            except Exception:  # report every check, not the first failure only
                record.update(diff=None, ok=False, error=traceback.format_exc())
            record.update(
                seconds=time.perf_counter() - start, tolerance=tolerance[precision]
            )
            results.append(record)
            status = {True: "PASS", False: "FAIL", None: "SKIP"}[record["ok"]]
            diff_text = "-" if record["diff"] is None else f"{record['diff']:.2e}"
            print(
                f"{status} {name:12s} {precision:9s} {record['seconds']:6.1f}s "
                f"max |diff| {diff_text} (tolerance {tolerance[precision]:g})",
                flush=True,
            )
            if record.get("error"):
                print(record["error"], flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument(
        "--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS)
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS)
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device here: the GPU checks are skipped ({args.device}).")
        return 0
    where = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else "CPU"
    )
    print(f"device {args.device} ({where}), torch {torch.__version__}", flush=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = run(args.device, args.checks, args.precisions)
    return 1 if any(r["ok"] is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
