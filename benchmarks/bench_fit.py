"""Where ``RMTLClassifier.fit`` spends its time: network steps vs everything else.

Runs one complete fit (pretrain, session MDP, critics, refit; early stopping
on, so validation is included) on RetailRocket-shaped rows at the paper's
sizes, with timers wrapped around the package's phase functions for the
duration of the benchmark only (nothing in the package is changed):

- input validation (``_prepare``), encoding (``FeatureEncoder``), the MDP
  (``build_transitions``), rewards, the behaviour actor's forward pass,
  ``train_critic``, skorch's ``train_step`` (forward, backward, Adam; the
  refit's Q evaluation included) and ``validation_step``, net set-up.

The network time is what the fit cannot do without: the time inside
``train_step``, one actor forward pass over all rows, and the critic's
optimizer steps counted at the time of a bare critic step (timed right
after the fit on the same shapes). Everything else (encoding, MDP,
validation, data loading, copies, a second actor pass, bookkeeping) is the
overhead whose share the issue wants under 10 %.

Run: ``python benchmarks/bench_fit.py [--quick] [--backbones esmm,ple]
[--profile]``.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import math
import pstats
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from _common import (
    BATCH_SIZE,
    Report,
    fmt_rate,
    make_data,
    median,
    parse_args,
    peak_rss_growth,
    repeat,
    timed,
)
from bench_critic import CriticStep
from bench_mdp import vectorised_replay

from sklearn_rmtl import RMTLClassifier
from sklearn_rmtl._mdp import build_transitions
from sklearn_rmtl._mtl import encode_inputs
from sklearn_rmtl._validation import check_metadata

#: (module path, attribute path, phase label)
TARGETS = [
    ("sklearn_rmtl._mtl", "MTLClassifier._prepare", "validate inputs"),
    ("sklearn_rmtl._encoding", "FeatureEncoder.fit_transform", "encode"),
    ("sklearn_rmtl._encoding", "FeatureEncoder.transform", "encode"),
    ("sklearn_rmtl._rmtl", "build_transitions", "MDP"),
    ("sklearn_rmtl._rmtl", "rewards", "replay (rewards)"),
    ("sklearn_rmtl._rmtl", "_actor_proba", "actor forward (behaviour)"),
    ("sklearn_rmtl._rmtl", "train_critic", "train_critic"),
    ("sklearn_rmtl._net", "MultiTaskNet.train_step", "train_step"),
    ("sklearn_rmtl._net", "MultiTaskNet.validation_step", "validation forward"),
    ("sklearn_rmtl._mtl", "_validation_loss", "validation forward"),
    ("sklearn_rmtl._net", "MultiTaskNet.initialize", "net set-up"),
]


@contextlib.contextmanager
def phase_timers() -> Iterator[tuple[dict[str, float], dict[str, int], list[str]]]:
    """Wrap the phase functions with timers; restore them on exit."""
    import importlib

    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    missing: list[str] = []
    restore: list[tuple[Any, str, Any]] = []
    for mod_name, path, label in TARGETS:
        owner: Any = importlib.import_module(mod_name)
        *parents, attr = path.split(".")
        try:
            for p in parents:
                owner = getattr(owner, p)
            original = getattr(owner, attr)
        except AttributeError:
            missing.append(f"{mod_name}.{path}")
            continue
        # A method inherited from skorch is shadowed on the class, then removed.
        own = not isinstance(owner, type) or attr in owner.__dict__

        def wrapper(*a: Any, __f: Any = original, __l: str = label, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return __f(*a, **k)
            finally:
                totals[__l] += time.perf_counter() - t0
                calls[__l] += 1

        setattr(owner, attr, wrapper)
        restore.append((owner, attr, original if own else None))
    try:
        yield totals, calls, missing
    finally:
        for owner, attr, original in reversed(restore):
            if original is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


def bench_fit(backbone: str, n: int, profile: bool) -> dict[str, Any]:
    data = make_data(n, seed=0)
    params = {
        "backbone": backbone,
        "max_epochs": 1,
        "refit_max_epochs": 1,
        "critic_max_epochs": 2,
        "critic_patience": 5,
        "random_state": 0,
    }
    est = RMTLClassifier(**params)
    prof = cProfile.Profile() if profile else None
    with phase_timers() as (totals, calls, missing), peak_rss_growth() as mem:
        if prof:
            prof.enable()
        t_fit, _ = timed(
            lambda: est.fit(
                data.X, data.Y, session_ids=data.session_ids, timestamps=data.timestamps
            )
        )
        if prof:
            prof.disable()
    totals, calls = dict(totals), dict(calls)

    # Bare critic steps on the same shapes, to price the critic's necessary work.
    sids = check_metadata(data.session_ids, n, name="session_ids", sortable=False)
    keys = check_metadata(data.timestamps, n, name="timestamps", sortable=True)
    tr = build_transitions(sids, keys, n)
    inputs = encode_inputs(
        est.encoder_.transform(data.X), len(est.encoder_.cardinalities_)
    )
    y01 = data.Y.to_numpy(np.float32)
    proba = np.random.default_rng(0).random((n, 2)) * 0.2
    tensors = {
        "x_cat": torch.as_tensor(inputs["x_cat"]),
        "x_num": torch.as_tensor(inputs["x_num"]),
        **vectorised_replay(proba, y01, tr),
    }
    step = CriticStep(est.critic_.module, tensors)
    t_critic_step = median(repeat(step, 5, warmup=1))
    critic_epochs = len(est.history_["critic"])
    critic_batches = critic_epochs * math.ceil(n / BATCH_SIZE)
    critic_net = critic_batches * t_critic_step

    network = (
        totals.get("train_step", 0.0)
        + totals.get("actor forward (behaviour)", 0.0)
        + critic_net
    )
    overhead = t_fit - network
    phases = dict(totals)
    # Inside train_critic, the frozen actor's next actions are a second
    # forward pass over all rows (the behaviour pass computed the same).
    phases["train_critic: beyond bare critic steps (incl. 2nd actor pass)"] = (
        totals.get("train_critic", 0.0) - critic_net
    )
    phases["other (skorch loop, loader, copies, bookkeeping)"] = t_fit - sum(
        v for k, v in totals.items()
    )
    out: dict[str, Any] = {
        "backbone": backbone,
        "rows": n,
        "params": params,
        "fit_seconds": t_fit,
        "fit_rows_s": n / t_fit,
        "network_seconds": network,
        "critic_bare_step_seconds": t_critic_step,
        "critic_batches": critic_batches,
        "overhead_seconds": overhead,
        "overhead_fraction": overhead / t_fit,
        "phases_seconds": phases,
        "calls": calls,
        "missing_targets": missing,
        "epochs": {k: len(v) for k, v in est.history_.items()},
        "peak_rss_growth_mib": mem["growth_mib"],
    }
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
        out["cprofile_top"] = s.getvalue()
    return out


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--backbones", default=None)
        p.add_argument("--rows", type=int, default=None)
        p.add_argument("--profile", action="store_true", help="print cProfile top 15")

    args = parse_args(__doc__, extra)
    rep = Report("bench_fit", args)
    # One-time costs of a process, kept out of the fit timings: the first
    # torch optimizer imports torch._dynamo (seconds), and a tiny fit warms
    # the rest (lazy imports, MKL/oneDNN first calls).
    t_import, _ = timed(lambda: torch.optim.Adam([torch.zeros(1, requires_grad=True)]))
    warm = make_data(512, seed=3)
    t_warm, _ = timed(
        lambda: RMTLClassifier(
            backbone="esmm",
            backbone_params={
                "embedding_dim": 4,
                "bottom_dims": (8,),
                "tower_dims": (4,),
            },
            critic_hidden_dims=(8,),
            max_epochs=1,
            critic_max_epochs=1,
            random_state=0,
        ).fit(warm.X, warm.Y, session_ids=warm.session_ids, timestamps=warm.timestamps)
    )
    rep.add(
        "one_time_seconds",
        {"first_optimizer_import": t_import, "tiny_warmup_fit": t_warm},
        f"one-time per process (not counted below): first torch optimizer "
        f"{t_import:.1f}s (imports torch._dynamo), tiny warm-up fit {t_warm:.1f}s",
    )
    backbones = (
        args.backbones.split(",")
        if args.backbones
        else (["esmm"] if args.quick else ["esmm", "ple"])
    )
    n = args.rows or BATCH_SIZE * (4 if args.quick else 12)
    for bb in backbones:
        res = bench_fit(bb, n, args.profile)
        lines = [
            f"RMTLClassifier(backbone={bb!r}).fit on {n:,} rows: "
            f"{res['fit_seconds']:.1f}s ({fmt_rate(res['fit_rows_s'])} rows/s); "
            f"network {res['network_seconds']:.1f}s; "
            f"overhead {res['overhead_seconds']:.1f}s = {res['overhead_fraction']:.1%} "
            f"(target < 10%); peak RSS +{res['peak_rss_growth_mib']:.0f} MiB"
        ]
        for k, v in sorted(res["phases_seconds"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:50s} {v:7.2f}s  {v / res['fit_seconds']:6.1%}")
        if res["missing_targets"]:
            lines.append(f"    (not found, not timed: {res['missing_targets']})")
        if "cprofile_top" in res:
            lines.append(res["cprofile_top"])
        rep.add(bb, res, "\n".join(lines))
    return rep.done()


if __name__ == "__main__":
    main()
