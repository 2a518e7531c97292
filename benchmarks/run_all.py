"""Run every benchmark and print the figures with their ratios to the reference.

Each area runs in its own process (so peak-memory figures do not mix):

- ``bench_pretrain.py``: pretraining and inference samples/s per backbone;
- ``bench_mdp.py``: MDP and replay-buffer construction vs naive loops;
- ``bench_critic.py``: critic training (PLE and ESMM actors) and the refit;
- ``bench_fit.py``: share of ``RMTLClassifier.fit`` outside network steps;
- ``bench_memory.py``: memory per row, a whole fit, chunked predict_proba;
- ``bench_changes.py``: the package's optimisations timed against what they
  replaced (speed-ups and equality checks).

Usage::

    python benchmarks/run_all.py            # full run (< 15 min on 2 cores)
    python benchmarks/run_all.py --quick    # a few minutes
    python benchmarks/run_all.py --threads 1 --save results.json

On a machine shared with other busy processes, ``--threads 1`` gives steadier
ratios (see ``omp_stall_factor`` in the summary and benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = [
    "bench_mdp",
    "bench_pretrain",
    "bench_critic",
    "bench_fit",
    "bench_memory",
    "bench_changes",
]
REFERENCE = {  # as in _common.REFERENCE, repeated to keep this file import-light
    "pretrain": {"esmm": 7_700, "mmoe": 2_600, "ple": 940},
    "inference": {"esmm": 20_000, "mmoe": 7_500, "ple": 2_400},
    "mdp": 7_500,
    "replay": 10_000,
    "critic": {"ple": 1_100, "esmm": 2_900},
    "refit": {"esmm": 5_400, "ple": 950},
}


def run(script: str, args: argparse.Namespace) -> tuple[dict[str, Any] | None, float]:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [
        sys.executable,
        "-W",
        "ignore",
        os.path.join(HERE, f"{script}.py"),
        "--json",
        path,
    ]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - t0
    try:
        with open(path) as f:
            res = json.load(f) if proc.returncode == 0 else None
    except (OSError, json.JSONDecodeError):
        res = None
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        print(f"!! {script} failed with exit code {proc.returncode}", flush=True)
    return res, wall


def k(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.2f}k"
    return f"{x:.0f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def summary(results: dict[str, Any]) -> list[list[str]]:
    """Rows: figure, measured, limit, % of limit, reference, x reference, target."""
    rows: list[list[str]] = []
    pre = results.get("bench_pretrain") or {}
    for bb in pre.get("backbones", []):
        tr, inf = pre[bb]["train"], pre[bb]["inference"]
        ref = REFERENCE["pretrain"].get(bb)
        rows.append(
            [
                f"pretrain {bb} (epoch loop)",
                k(tr["epoch"]),
                k(tr["limit"]),
                pct(tr["fraction_epoch"]),
                k(ref),
                f"x{tr['epoch'] / ref:.2f}" if ref else "-",
                "met" if tr["fraction_epoch"] >= 0.7 else "not met (>=70%)",
            ]
        )
        rows.append(
            [
                f"  pure step {bb} (no skorch)",
                k(tr["pure"]),
                k(tr["limit"]),
                pct(tr["fraction_pure"]),
                "-",
                "-",
                "",
            ]
        )
        rows.append(
            [
                f"  training loader alone {bb} (rows/s)",
                k(tr["loader_rows_s"]),
                "-",
                "-",
                "-",
                "-",
                f"x{tr['loader_speedup']:.0f} vs skorch's per-row default "
                f"({k(tr['naive_loader_rows_s'])})",
            ]
        )
        ref = REFERENCE["inference"].get(bb)
        rows.append(
            [
                f"inference {bb} (predict_proba)",
                k(inf["predict_proba"]),
                k(inf["limit"]),
                pct(inf["fraction_predict_proba"]),
                k(ref),
                f"x{inf['predict_proba'] / ref:.2f}" if ref else "-",
                "met" if inf["fraction_predict_proba"] >= 0.7 else "not met (>=70%)",
            ]
        )
        rows.append(
            [
                f"  encoder transform {bb} (rows/s)",
                k(inf["encode_rows_s"]),
                "-",
                "-",
                "-",
                "-",
                f"x{inf['encode_speedup']:.1f} vs row-by-row OrdinalEncoder "
                f"({k(inf['naive_encode_rows_s'])}), identical: "
                f"{inf['encode_identical']}",
            ]
        )
        rows.append(
            [
                f"  bare forward {bb}",
                k(inf["bare_forward"]),
                k(inf["limit"]),
                pct(inf["fraction_bare_forward"]),
                "-",
                "-",
                "",
            ]
        )
    mdp = results.get("bench_mdp") or {}
    if mdp:
        m, r = mdp["mdp"], mdp["replay"]
        rows.append(
            [
                "MDP build_transitions rows/s",
                k(m["rows_s"]),
                "-",
                "-",
                k(REFERENCE["mdp"]),
                f"x{m['rows_s'] / REFERENCE['mdp']:.0f}",
                "met"
                if m["rows_s"] >= 1e6 and m["rows_s"] >= 100 * REFERENCE["mdp"]
                else "not met (>=1M, >=100x)",
            ]
        )
        rows.append(
            [
                "  vs pandas per-session loop (same rows)",
                f"x{m['speedup_vs_pandas_loop']:.0f}",
                "-",
                "-",
                "-",
                "-",
                "",
            ]
        )
        rows.append(
            [
                "  vs python per-session loop (same rows)",
                f"x{m['speedup_vs_python_loop']:.1f}",
                "-",
                "-",
                "-",
                "-",
                "",
            ]
        )
        rows.append(
            [
                "replay buffer rows/s",
                k(r["rows_s"]),
                "-",
                "-",
                k(REFERENCE["replay"]),
                f"x{r['rows_s'] / REFERENCE['replay']:.0f}",
                "met"
                if r["rows_s"] >= 1e6 and r["rows_s"] >= 100 * REFERENCE["replay"]
                else "not met (>=1M, >=100x)",
            ]
        )
        rows.append(
            [
                "  vs per-transition loop (same rows)",
                f"x{r['speedup_vs_loop']:.0f}",
                "-",
                "-",
                "-",
                "-",
                "",
            ]
        )
    cr = results.get("bench_critic") or {}
    for bb in ("ple", "esmm"):
        if bb not in cr:
            continue
        c = cr[bb]
        ref = REFERENCE["critic"][bb]
        x = c["critic_call_transitions_s"] / ref
        rows.append(
            [
                f"critic phase, {bb} actor (actor pass + train_critic)",
                k(c["critic_call_transitions_s"]),
                k(c["critic_call_limit_s"]),
                pct(c["critic_call_fraction"]),
                k(ref),
                f"x{x:.1f}",
                "met"
                if c["critic_call_fraction"] >= 0.7 and x >= 5
                else "not met (>=70%, >=5x)",
            ]
        )
        rows.append(
            [
                f"  epoch loop only, {bb} actor",
                k(c["critic_epoch_transitions_s"]),
                k(c["critic_epoch_limit_s"]),
                pct(c["critic_epoch_fraction"]),
                "-",
                "-",
                "",
            ]
        )
        ref = REFERENCE["refit"][bb]
        rows.append(
            [
                f"refit {bb} (epoch loop)",
                k(c["refit_epoch_samples_s"]),
                k(c["refit_limit_samples_s"]),
                pct(c["refit_fraction"]),
                k(ref),
                f"x{c['refit_epoch_samples_s'] / ref:.2f}",
                "met" if c["refit_fraction"] >= 0.7 else "not met (>=70%)",
            ]
        )
    fit = results.get("bench_fit") or {}
    for bb in ("esmm", "ple"):
        if bb in fit:
            f = fit[bb]
            rows.append(
                [
                    f"RMTLClassifier.fit overhead ({bb}, {f['rows']:,} rows)",
                    pct(f["overhead_fraction"]),
                    "-",
                    "-",
                    "-",
                    "-",
                    "met" if f["overhead_fraction"] < 0.1 else "not met (<10%)",
                ]
            )
    mem = results.get("bench_memory") or {}
    if mem:
        p = mem["predict_proba"]
        rows.append(
            [
                "predict_proba RSS beyond output, "
                f"{p[0]['rows']:,} -> {p[1]['rows']:,} rows",
                f"{p[0]['growth_beyond_output_mib']:.0f} -> "
                f"{p[1]['growth_beyond_output_mib']:.0f} MiB",
                "-",
                "-",
                "-",
                "-",
                "bounded"
                if p[1]["growth_beyond_output_mib"]
                <= 1.5 * p[0]["growth_beyond_output_mib"] + 16
                else "grows with rows",
            ]
        )
        f = mem["fit"]
        ple_fit = (results.get("bench_fit") or {}).get("ple")
        if ple_fit:  # measured paper-size PLE fit + data slope for the other rows
            est = (
                ple_fit["peak_rss_growth_mib"]
                + f["slope_bytes_per_row"] * (2_000_000 - ple_fit["rows"]) / 2**20
            )
            note = (
                f"est. 2M-row PLE fit peak +{est / 1024:.1f} GiB (PLE fit on "
                f"{ple_fit['rows']:,} rows +{ple_fit['peak_rss_growth_mib']:.0f} MiB "
                "+ data slope; bench_scale.py measures a real 2M-row fit)"
            )
        else:
            note = "run bench_fit (ple) for a 2M-row estimate"
        rows.append(
            [
                "fit RSS slope per row (tiny net)",
                f"{f['slope_bytes_per_row']:.0f} B/row",
                "-",
                "-",
                "-",
                "-",
                note,
            ]
        )
    prop = results.get("bench_changes") or {}
    diff = "max_abs_diff"
    labels = {
        "predict_esmm": ("change: predict by whole batches (esmm)", diff),
        "predict_ple": ("change: predict by whole batches (ple)", diff),
        "adam_esmm": ("change: fused Adam step (esmm)", "max_param_diff_after_3_steps"),
        "adam_ple": ("change: fused Adam step (ple)", "max_param_diff_after_3_steps"),
        "relu_dropout_2048x8x512": ("change: ReLU+dropout one mask", "identical_grad"),
        "critic_split": ("change: critic state half once", diff),
        "actor_chunks_ple": ("change: actor pass in 2,048-row batches", diff),
        "grouped_mmoe experts": ("considered: group-major experts (mmoe)", diff),
    }
    for key, (label, check) in labels.items():
        if key in prop:
            v = prop[key][check]
            shown = f"{v:.1e}" if isinstance(v, float) else str(v)
            rows.append(
                [
                    label,
                    f"x{prop[key]['speedup']:.2f}",
                    "-",
                    "-",
                    "-",
                    "-",
                    f"{check}: {shown}",
                ]
            )
    for key in ("dropout_esmm", "dropout_ple"):
        if key in prop:
            rows.append(
                [
                    f"dropout share of a training step ({key[8:]})",
                    pct(prop[key]["dropout_share_of_step"]),
                    "-",
                    "-",
                    "-",
                    "-",
                    "",
                ]
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--only", default=None, help="comma-separated subset of " + ",".join(SCRIPTS)
    )
    p.add_argument("--save", default=None, help="write all results as JSON here")
    p.add_argument(
        "--summary", default=None, help="only print the summary of a --save file"
    )
    args = p.parse_args()
    if args.summary:
        with open(args.summary) as f:
            saved = json.load(f)
        print_summary(saved["results"], saved["walls"], saved["total"], args.quick)
        return
    scripts = args.only.split(",") if args.only else SCRIPTS
    results: dict[str, Any] = {}
    walls: dict[str, float] = {}
    t0 = time.perf_counter()
    for s in scripts:
        results[s], walls[s] = run(s, args)
        print(f"[{s}: {walls[s]:.0f}s]\n", flush=True)
    total = time.perf_counter() - t0
    print_summary(results, walls, total, args.quick)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(
                {"results": results, "walls": walls, "total": total, "argv": sys.argv},
                f,
                indent=1,
            )


def print_summary(
    results: dict[str, Any], walls: dict[str, float], total: float, quick: bool
) -> None:
    rows = summary(results)
    head = ["figure", "measured", "limit", "% of limit", "reference", "x ref", "target"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    quick = any(r.get("quick") for r in results.values() if r) or quick
    print("== summary " + ("(quick)" if quick else "(full)") + " ==")
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    machine = next((r["machine"] for r in results.values() if r), {})
    probe = next((r["omp_probe"] for r in results.values() if r), {})
    print(f"\nmachine: {machine}")
    if probe:
        print(
            f"omp probe: 2M-element mul_ {probe['ms_at_threads']:.2f} ms at "
            f"{probe['threads']} threads vs {probe['ms_at_1']:.2f} ms at 1 "
            f"(stall factor {probe['stall_factor']:.1f})"
        )
        if probe["stall_factor"] > 3:
            print(
                "WARNING: other processes are competing for the cores; parallel "
                "regions stall. Ratios are depressed; rerun with --threads 1 or "
                "on an idle machine."
            )
    print(
        f"total wall time {total:.0f}s: "
        + ", ".join(f"{s} {w:.0f}s" for s, w in walls.items())
    )


if __name__ == "__main__":
    main()
