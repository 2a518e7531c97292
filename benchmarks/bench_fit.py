"""Where ``RMTLClassifier.fit`` spends its time: network steps vs everything else.

Runs one complete fit (pretrain, session MDP, critics, refit; early stopping
on, so validation is included) on RetailRocket-shaped rows at the paper's
sizes, twice: once plainly, for the fit time, and once under ``cProfile``,
whose cumulative time per function splits the fit into phases (input
validation, encoding, the MDP, rewards, the behaviour actor's forward pass,
``train_critic`` and each ``td_step`` in it, skorch's ``train_step`` with the
refit's Q evaluation, validation, net set-up). Nothing in the package is
patched; the profiler only reads which function is running.

The network time is what the fit cannot do without: the time inside
skorch's ``train_step``, the critics' ``td_step`` (and ``actor_step`` with
``actor_update``), and the actor's forward pass over all rows. Everything
else (validation, encoding, MDP, data loading and gathers, soft updates,
net set-up, bookkeeping) is the overhead whose share the issue wants under
10 %. The profiler adds a cost to every Python call, which falls mostly on
the overhead side, so the profiled overhead share is an upper bound; the
unprofiled fit time is printed beside it.

Run: ``python benchmarks/bench_fit.py [--quick] [--backbones esmm,ple]
[--profile]``.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from typing import Any

import torch
from _common import (
    BATCH_SIZE,
    Report,
    fmt_rate,
    make_data,
    parse_args,
    peak_rss_growth,
    timed,
)

from sklearn_rmtl import RMTLClassifier, SessionCritic

#: Phases that are network steps: the work a fit cannot do without.
NETWORK = (
    "train_step",
    "critic step",
    "actor step (actor_update)",
    "actor forward (behaviour)",
)

#: (file, function, phase label); no function here runs inside another of
#: the same label, so their cumulative times add up.
TARGETS = [
    ("sklearn_rmtl/_fit_data.py", "prepare_fit_data", "validate inputs"),
    ("sklearn_rmtl/_encoding.py", "_fit_transform_parts", "encode"),
    ("sklearn_rmtl/_encoding.py", "_transform_parts", "encode"),
    ("sklearn_rmtl/_mdp.py", "build_transitions", "MDP"),
    ("sklearn_rmtl/_mdp.py", "rewards", "replay (rewards)"),
    ("sklearn_rmtl/_torch_module.py", "actor_proba", "actor forward (behaviour)"),
    ("sklearn_rmtl/_td.py", "train_critic", "train_critic (whole call)"),
    ("sklearn_rmtl/_td.py", "td_step", "critic step"),
    ("sklearn_rmtl/_td.py", "actor_step", "actor step (actor_update)"),
    ("skorch/net.py", "train_step", "train_step"),
    ("sklearn_rmtl/_training.py", "evaluate", "validation forward"),
    ("skorch/net.py", "initialize", "net set-up"),
]


def phase_times(stats: pstats.Stats) -> tuple[dict[str, float], dict[str, int]]:
    """Cumulative seconds and primitive calls of each phase label."""
    totals: dict[str, float] = {}
    calls: dict[str, int] = {}
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, func), (n_prim, _, _, cumtime, _) in table.items():
        path = filename.replace("\\", "/")
        for suffix, name, label in TARGETS:
            if func == name and path.endswith(suffix):
                totals[label] = totals.get(label, 0.0) + cumtime
                calls[label] = calls.get(label, 0) + n_prim
    return totals, calls


def bench_fit(backbone: str, n: int, profile: bool) -> dict[str, Any]:
    data = make_data(n, seed=0)
    params = {
        "backbone": backbone,
        "max_epochs": 1,
        "refit_max_epochs": 1,
        "critic": SessionCritic(max_epochs=2, patience=5),
        "random_state": 0,
    }

    def fit() -> Any:
        return RMTLClassifier(**params).fit(
            data.X, data.Y, session_ids=data.session_ids, timestamps=data.timestamps
        )

    with peak_rss_growth() as mem:
        t_plain, _ = timed(fit)
    prof = cProfile.Profile()
    prof.enable()
    t_fit, est = timed(fit)
    prof.disable()
    stats = pstats.Stats(prof)
    totals, calls = phase_times(stats)
    missing = sorted({label for *_, label in TARGETS} - set(totals))

    network = sum(totals.get(label, 0.0) for label in NETWORK)
    overhead = t_fit - network
    phases = {k: v for k, v in totals.items() if k != "train_critic (whole call)"}
    phases["critic loop beyond its steps (batch gathers, soft updates)"] = (
        totals.get("train_critic (whole call)", 0.0)
        - totals.get("critic step", 0.0)
        - totals.get("actor step (actor_update)", 0.0)
    )
    phases["other (skorch loop, loader, copies, bookkeeping)"] = t_fit - sum(
        phases.values()
    )
    out: dict[str, Any] = {
        "backbone": backbone,
        "rows": n,
        "params": params,
        "fit_seconds": t_plain,
        "fit_rows_s": n / t_plain,
        "profiled_fit_seconds": t_fit,
        "network_seconds": network,
        "overhead_seconds": overhead,
        "overhead_fraction": overhead / t_fit,
        "phases_seconds": phases,
        "calls": calls,
        "missing_targets": missing,
        "epochs": {k: len(v) for k, v in est.history_.items()},
        "peak_rss_growth_mib": mem["growth_mib"],
    }
    if profile:
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
            critic=SessionCritic(hidden_dims=(8,), max_epochs=1),
            max_epochs=1,
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
            f"profiled {res['profiled_fit_seconds']:.1f}s: "
            f"network {res['network_seconds']:.1f}s; "
            f"overhead {res['overhead_seconds']:.1f}s = {res['overhead_fraction']:.1%} "
            f"(target < 10%); peak RSS +{res['peak_rss_growth_mib']:.0f} MiB"
        ]
        for k, v in sorted(res["phases_seconds"].items(), key=lambda kv: -kv[1]):
            share = v / res["profiled_fit_seconds"]
            lines.append(f"    {k:50s} {v:7.2f}s  {share:6.1%}")
        if res["missing_targets"]:
            lines.append(f"    (not found, not timed: {res['missing_targets']})")
        if "cprofile_top" in res:
            lines.append(res["cprofile_top"])
        rep.add(bb, res, "\n".join(lines))
    return rep.done()


if __name__ == "__main__":
    main()
