"""Shared pieces of the benchmarks: synthetic data, timing, memory, matmul limits.

Nothing here is part of the package; the scripts import it as a sibling
module (``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from sklearn_rmtl.backbones import resolve_backbone_params
from sklearn_rmtl.backbones._layers import GroupedLinear

# --------------------------------------------------------------------- sizes
#: RetailRocket-like categorical fields (visitor/item/category-like ids).
CARDINALITIES = (600, 250, 1800, 2, 1242, 472, 1487)
CLICK_RATE = 0.06
PAY_RATE = 0.01
MEAN_SESSION_LENGTH = 7.0
BATCH_SIZE = 2048
#: The paper's sizes are the package defaults; listed here for the report.
PAPER_SIZES = {
    "embedding_dim": 128,
    "bottom_dims": (512, 256),
    "tower_dims": (128, 64),
    "n_experts": 8,
    "n_shared_experts": 4,
    "n_specific_experts": 4,
}
ALL_BACKBONES = ("singletask", "sharedbottom", "esmm", "mmoe", "ple", "omoe", "aitm")

#: Figures of the authors' reference implementation, same machine class.
REFERENCE = {
    "pretrain_samples_s": {"esmm": 7_700, "mmoe": 2_600, "ple": 940},
    "inference_samples_s": {"esmm": 20_000, "mmoe": 7_500, "ple": 2_400},
    "mdp_rows_s": 7_500,
    "replay_rows_s": 10_000,
    "critic_transitions_s": {"ple": 1_100, "esmm": 2_900},
    "refit_samples_s": {"esmm": 5_400, "ple": 950},
    "limit_train_samples_s": {"esmm": 18_000, "mmoe": 4_700, "ple": 2_900},
    "limit_mdp_rows_s": 2_700_000,
    "limit_critic_transitions_s": 9_000,
    "matmul_gflops": 150,
}


def paper_params(backbone: str) -> dict[str, Any]:
    """Full size keywords of ``backbone`` at the paper's sizes."""
    return resolve_backbone_params(
        backbone, {k: v for k, v in PAPER_SIZES.items() if k in _keys(backbone)}
    )


def _keys(backbone: str) -> set[str]:
    return set(resolve_backbone_params(backbone, None))


# ---------------------------------------------------------------------- data
@dataclass
class Data:
    X: pd.DataFrame
    Y: pd.DataFrame
    session_ids: np.ndarray
    timestamps: np.ndarray

    @property
    def n(self) -> int:
        return len(self.X)


def _zipf_codes(rng: np.random.Generator, card: int, n: int) -> np.ndarray:
    # Popularity falls off like real item/visitor ids (a few heavy hitters).
    p = 1.0 / (np.arange(card) + 5.0) ** 1.05
    return rng.choice(card, size=n, p=p / p.sum()).astype(np.int32)


def _calibrate(logit: np.ndarray, rate: float) -> float:
    """Offset b with mean(sigmoid(logit + b)) == rate (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def make_data(n_rows: int, *, seed: int = 0, shuffle: bool = True) -> Data:
    """RetailRocket-shaped rows: 7 categorical fields, 1 number, sessions.

    Sessions have 1 + Poisson(6) rows (mean 7); clicks about 6 %, purchases
    about 1 % and only after a click. Labels depend on per-category effects
    and a latent session intent, so the models have something to learn.
    Rows are shuffled (as a log merged from several sources would be), so
    building the MDP must sort them.
    """
    rng = np.random.default_rng(seed)
    n_sessions = int(n_rows / MEAN_SESSION_LENGTH * 1.1) + 1
    lengths = 1 + rng.poisson(MEAN_SESSION_LENGTH - 1, n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)[:n_rows]
    position = (
        np.arange(len(session))
        - np.repeat(np.cumsum(lengths) - lengths, lengths)[:n_rows]
    )
    start_ms = rng.integers(0, 130 * 86_400_000, n_sessions)
    gaps = rng.exponential(60_000, n_rows).astype(np.int64) + 1000
    gap_cum = np.cumsum(gaps)
    first = position == 0
    gap_cum -= np.maximum.accumulate(np.where(first, gap_cum, 0))
    t_ms = np.int64(1_430_611_200_000) + start_ms[session] + gap_cum
    cols: dict[str, Any] = {}
    logit = np.zeros(n_rows)
    pay_logit = np.zeros(n_rows)
    for j, card in enumerate(CARDINALITIES):
        codes = _zipf_codes(rng, card, n_rows)
        logit += rng.normal(0, 0.6, card)[codes]
        pay_logit += rng.normal(0, 0.4, card)[codes]
        cols[f"field_{j}"] = pd.Categorical.from_codes(
            codes, categories=[f"c{j}_{k}" for k in range(card)]
        )
    price = rng.lognormal(3.0, 1.0, n_rows)
    cols["price"] = price
    intent = rng.normal(0, 1.0, n_sessions)[session]
    logit += intent - 0.05 * position - 0.2 * np.log(price)
    click = rng.random(n_rows) < 1 / (
        1 + np.exp(-(logit + _calibrate(logit, CLICK_RATE)))
    )
    pay_logit += 0.5 * intent
    # P(pay | click) so that P(pay) = PAY_RATE.
    cond = PAY_RATE / max(click.mean(), 1e-9)
    b = _calibrate(pay_logit[click], cond)
    pay = click & (rng.random(n_rows) < 1 / (1 + np.exp(-(pay_logit + b))))
    X = pd.DataFrame(cols)
    Y = pd.DataFrame({"click": click.astype(np.int8), "purchase": pay.astype(np.int8)})
    ts = t_ms.astype("datetime64[ms]")
    sid = session.astype(np.int64)
    if shuffle:
        perm = rng.permutation(n_rows)
        X = X.iloc[perm].reset_index(drop=True)
        Y = Y.iloc[perm].reset_index(drop=True)
        ts, sid = ts[perm], sid[perm]
    return Data(X=X, Y=Y, session_ids=sid, timestamps=ts)


def encoded_tensors(
    n_rows: int, seed: int = 0, n_tasks: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random encoded inputs (codes, numbers, labels) for pure-step timings."""
    g = torch.Generator().manual_seed(seed)
    cards = torch.tensor([c + 2 for c in CARDINALITIES])
    x_cat = (torch.rand(n_rows, len(cards), generator=g) * cards).long()
    x_num = torch.randn(n_rows, 1, generator=g)
    y = (torch.rand(n_rows, n_tasks, generator=g) < 0.06).float()
    return x_cat, x_num, y


# -------------------------------------------------------------------- timing
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(repeats)]


# -------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    return int(m.group(1)) if m else -1


def rss_mib() -> float:
    """Current resident set size."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak RSS since start or the last :func:`reset_peak_rss` (VmHWM)."""
    return _status_kib("VmHWM") / 1024


def release_free_memory() -> None:
    """Return freed heap pages to the OS, so that RSS counts live data only."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5)."""
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def max_rss_mib_getrusage() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def peak_rss_growth() -> Iterator[dict[str, float]]:
    """Measure the peak RSS reached inside the block above the RSS at entry."""
    out: dict[str, float] = {}
    reset_peak_rss()
    base = rss_mib()
    out["base_mib"] = base
    try:
        yield out
    finally:
        out["peak_mib"] = peak_rss_mib()
        out["growth_mib"] = out["peak_mib"] - base


# ----------------------------------------------------- matmul-bound limits
@dataclass(frozen=True)
class LinearShape:
    """One affine map of a network as the hardware sees it.

    ``groups`` independent ``(rows, k) @ (k, n)`` products; ``shared`` means
    every group reads the same input (one ``(rows, k) @ (k, groups * n)``).
    """

    groups: int
    rows: int
    k: int
    n: int
    shared: bool
    input_grad: bool

    def flops(self, backward: bool) -> float:
        f = 2.0 * self.groups * self.rows * self.k * self.n
        if not backward:
            return f
        return f * (3 if self.input_grad else 2)


def capture_shapes(
    module: nn.Module, run: Callable[[], Any], *, training: bool
) -> list[LinearShape]:
    """The Linear shapes one call of ``run`` evaluates, each module once.

    Counting every ``nn.Linear`` / ``GroupedLinear`` module once per call
    is the work the architecture needs: a module the implementation
    evaluated twice would still count once.
    """
    seen: dict[int, LinearShape] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if id(mod) in seen:
            return
        x = args[0]
        need_grad = training and x.requires_grad
        if isinstance(mod, GroupedLinear):
            if x.dim() == 2:
                shape = LinearShape(
                    1,
                    x.shape[0],
                    mod.in_features,
                    mod.n_groups * mod.out_features,
                    True,
                    need_grad,
                )
            else:
                shape = LinearShape(
                    mod.n_groups,
                    x.shape[0],
                    mod.in_features,
                    mod.out_features,
                    False,
                    need_grad,
                )
        else:
            rows = int(np.prod(x.shape[:-1]))
            shape = LinearShape(
                1, rows, mod.in_features, mod.out_features, True, need_grad
            )
        seen[id(mod)] = shape

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Linear | GroupedLinear)
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


class MatmulKernel:
    """The bare matrix products of a list of Linear shapes (fwd [+ bwd])."""

    def __init__(
        self,
        shapes: Sequence[LinearShape],
        *,
        backward: bool,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shapes = list(shapes)
        self.backward = backward
        self.dtype = dtype
        self._ops: list[Callable[[], Any]] = []
        for s in self.shapes:
            if s.groups == 1:
                x = torch.randn(s.rows, s.k, dtype=dtype)
                w = torch.randn(s.k, s.n, dtype=dtype)
                dy = torch.randn(s.rows, s.n, dtype=dtype)
                self._ops.append(lambda x=x, w=w: x @ w)
                if backward:
                    self._ops.append(lambda x=x, dy=dy: x.T @ dy)
                    if s.input_grad:
                        self._ops.append(lambda dy=dy, w=w: dy @ w.T)
            else:
                x = torch.randn(s.groups, s.rows, s.k, dtype=dtype)
                w = torch.randn(s.groups, s.k, s.n, dtype=dtype)
                dy = torch.randn(s.groups, s.rows, s.n, dtype=dtype)
                self._ops.append(lambda x=x, w=w: torch.bmm(x, w))
                if backward:
                    self._ops.append(
                        lambda x=x, dy=dy: torch.bmm(x.transpose(1, 2), dy)
                    )
                    if s.input_grad:
                        self._ops.append(
                            lambda dy=dy, w=w: torch.bmm(dy, w.transpose(1, 2))
                        )

    @property
    def flops(self) -> float:
        return sum(s.flops(self.backward) for s in self.shapes)

    def __call__(self) -> None:
        with torch.no_grad():
            for op in self._ops:
                op()

    def seconds(self, repeats: int = 5, inner: int = 3) -> float:
        """Median time of one pass over all products."""
        self()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                self()
            times.append((time.perf_counter() - t0) / inner)
        return median(times)


def square_gflops(
    n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = median(repeat(lambda: a @ b, repeats))
    return 2 * n**3 / t / 1e9


# ------------------------------------------------------------ pure steps
def make_actor(
    backbone: str, n_tasks: int = 2, dropout: float | None = None
) -> nn.Module:
    """The actor network at the paper's sizes (random weights)."""
    from sklearn_rmtl._torch_module import MultiTaskModule

    params = paper_params(backbone)
    if dropout is not None:
        params["dropout"] = dropout
    return MultiTaskModule(
        cardinalities=[c + 2 for c in CARDINALITIES],
        n_numerical=1,
        n_tasks=n_tasks,
        backbone=backbone,
        backbone_params=params,
    )


class PureActorStep:
    """One Adam step of the actor on ready tensors: no loader, no skorch.

    The same work as one batch of ``MTLClassifier.fit`` (BCE averaged over
    tasks, ``torch.optim.Adam`` with the package's default settings).
    """

    def __init__(
        self,
        backbone: str,
        batch: int = BATCH_SIZE,
        n_batches: int = 4,
        dropout: float | None = None,
        **adam: Any,
    ) -> None:
        from sklearn_rmtl._loss import WeightedMultiTaskBCE

        self.batch = batch
        self.net = make_actor(backbone, dropout=dropout).train()
        # Dropout masks from a fixed generator per layer (where the package's
        # Dropout accepts one), so two steppers draw the same masks.
        for m in self.net.modules():
            if hasattr(m, "generator"):
                m.generator = torch.Generator().manual_seed(0)
        self.loss = WeightedMultiTaskBCE([0.5, 0.5])
        self.opt = torch.optim.Adam(self.net.parameters(), **adam)
        self.x_cat, self.x_num, self.y = encoded_tensors(batch * n_batches)
        self.n_batches = n_batches
        self.i = 0

    def _slice(self) -> slice:
        j = self.i % self.n_batches
        self.i += 1
        return slice(j * self.batch, (j + 1) * self.batch)

    def __call__(self) -> None:
        s = self._slice()
        out = self.net(self.x_cat[s], self.x_num[s])
        loss = self.loss(out, self.y[s])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def shapes(self, training: bool = True) -> list[LinearShape]:
        net = self.net
        was = net.training
        net.train(training)
        try:
            if training:
                return capture_shapes(
                    net,
                    lambda: net(self.x_cat[: self.batch], self.x_num[: self.batch]),
                    training=True,
                )
            with torch.no_grad():
                return capture_shapes(
                    net,
                    lambda: net(self.x_cat[: self.batch], self.x_num[: self.batch]),
                    training=False,
                )
        finally:
            net.train(was)


def op_breakdown(fn: Callable[[], Any], steps: int = 2) -> dict[str, float]:
    """Share of CPU time by kind of op in ``steps`` calls of ``fn`` (profiler).

    Kinds: ``matmul`` (mm/bmm/addmm), ``optimizer`` (everything under
    ``Optimizer.step``), ``copy`` (copy_/clone: layout changes and casts),
    ``random`` (random-number generation), ``other`` (element-wise ops,
    reductions, embedding backward...).
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    kinds: dict[str, float] = {}
    top: dict[str, float] = {}
    for ev in prof.events():
        self_us = ev.self_cpu_time_total
        if self_us <= 0:
            continue
        parent, in_opt = ev.cpu_parent, ev.name.startswith("Optimizer.step")
        while parent is not None and not in_opt:
            in_opt = parent.name.startswith("Optimizer.step")
            parent = parent.cpu_parent
        name = ev.name
        if in_opt:
            kind = "optimizer"
        elif name in ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"):
            kind = "matmul"
        elif name in ("aten::copy_", "aten::clone", "aten::contiguous"):
            kind = "copy"
        elif "random" in name or "rand" in name:
            kind = "random"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + self_us
        if not in_opt:
            top[name] = top.get(name, 0.0) + self_us
    total = sum(kinds.values()) or 1.0
    out = {k: v / total for k, v in sorted(kinds.items())}
    out["top_ops"] = {  # type: ignore[assignment]
        k: round(v / total, 3)
        for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:8]
    }
    return out


# ------------------------------------------------------------------ report
def machine() -> dict[str, Any]:
    try:
        lscpu = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False
        ).stdout
        model = re.search(r"Model name:\s+(.*)", lscpu)
        cpus = re.search(r"^CPU\(s\):\s+(\d+)", lscpu, re.M)
        model_s = model.group(1).strip() if model else platform.processor()
        cpus_s = cpus.group(1) if cpus else str(os.cpu_count())
    except OSError:
        model_s, cpus_s = platform.processor(), str(os.cpu_count())
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model_s,
        "cpus": cpus_s,
        "mem_gib": round(mem_gib, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "loadavg": [round(x, 2) for x in load],
    }


def parse_args(
    doc: str | None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Common options of every script; applies ``--threads`` at once."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None
    )
    p.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    p.add_argument("--repeats", type=int, default=None, help="override repeats")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice, one per core)",
    )
    p.add_argument("--json", default=None, help="also write the results here")
    if extra:
        extra(p)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def omp_stall_probe() -> dict[str, float]:
    """Time of a small element-wise op at the current thread count vs 1 thread.

    On a machine shared with other busy processes, every parallel region
    waits for its slowest (descheduled) thread: small element-wise ops then
    take milliseconds instead of tenths. A ratio far above 1 means the
    figures of this run are depressed by contention, not by the code.
    """
    x = torch.randn(2_000_000)

    def op() -> None:
        x.mul_(1.0)

    n = torch.get_num_threads()
    t_n = median(repeat(op, 15, warmup=2))
    torch.set_num_threads(1)
    try:
        t_1 = median(repeat(op, 15, warmup=2))
    finally:
        torch.set_num_threads(n)
    return {
        "threads": n,
        "ms_at_threads": t_n * 1e3,
        "ms_at_1": t_1 * 1e3,
        "stall_factor": t_n / t_1,
    }


class Report:
    """Collects figures, prints them as they come, dumps JSON at the end."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.results: dict[str, Any] = {"script": name, "quick": bool(args.quick)}
        print(f"== {name} ({'quick' if args.quick else 'full'}) ==", flush=True)

    def add(self, key: str, value: Any, text: str | None = None) -> None:
        self.results[key] = value
        if text:
            print(text, flush=True)

    def done(self) -> dict[str, Any]:
        self.results["machine"] = machine()
        self.results["omp_probe"] = omp_stall_probe()
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump(self.results, f, indent=1, default=_jsonable)
        return self.results


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.2f}k"
    return f"{x:.0f}"


def pin_threads() -> None:
    """Use every core but no more (oversubscription makes timings noisy)."""
    n = os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


if __name__ == "__main__":  # a smoke test of the generator
    d = make_data(50_000)
    print(
        d.X.head(),
        d.Y.mean(),
        np.bincount(np.unique(d.session_ids, return_counts=True)[1]).argmax(),
    )
    print({c: d.X[c].nunique() for c in d.X if c != "price"})
    sys.exit(0)
