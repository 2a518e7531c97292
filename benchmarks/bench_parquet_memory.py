"""Peak memory of an out-of-core fit from Parquet against an in-memory fit.

The bundled RetailRocket sample (75,374 real rows) is replicated ``--copies``
times into one Parquet file: the same real rows repeated, with the copies'
sessions renumbered so they stay distinct, not new data. That file is
fitted twice, each in a fresh child process:

- **streamed**: ``MTLClassifier().fit(ParquetSource(path, block_rows=B))``
  with ``B`` a tenth (and a fortieth) of the rows, so the file is 10x (40x)
  the block budget (and with ``--block-rows B``, that ``B`` too: keep it
  fixed while ``--copies`` grows to see the streamed peak stay flat);
- **in memory**: ``pyarrow.parquet.read_table(path).to_pandas()``, then
  ``fit(X, y, session_ids=..., timestamps=...)`` on the same rows.

Each child reports its peak RSS (``getrusage`` ``ru_maxrss``) and its RSS
after the imports, so the growth is what the fit itself held at its peak.
A tiny network (embedding 4) keeps the model's share small, so the figures
are the data pipeline's. ``--model rmtl`` fits ``RMTLClassifier`` instead
(pretraining, critics over chunks of whole sessions, refit); the file is
written sorted by session, then time, as RMTL's streaming needs.

``--cli`` measures the command line instead, two children on the same file:

- **cli**: ``rmtl fit --data FILE --block-rows B --target click purchase
  --session session --time time ...`` (``sklearn_rmtl.cli.main`` run in the
  child; the exact command is printed), with ``B`` the ``--block-rows``
  given, else a tenth of the rows rounded down, so that the file is at
  least 10x the block;
- **in memory**: what ``rmtl fit`` did before it streamed Parquet: the whole
  file read by pandas (``sklearn_rmtl._tables.read_table``), the same
  estimator (the one those flags build: ``--model rmtl`` keeps RMTL's
  default critic and refit epochs) fitted on it and saved.

and prints the ratio of their peak RSS growths.

Run: ``PYTHONPATH=. python benchmarks/bench_parquet_memory.py [--quick]
[--copies N] [--block-rows B] [--model rmtl] [--cli]`` (from the repository
root).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import Report, max_rss_mib_getrusage, parse_args, rss_mib

TINY = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
TARGETS = ["click", "purchase"]


def write_file(path: str, copies: int, row_group_size: int) -> dict[str, float]:
    """The bundled rows repeated ``copies`` times, written to ``path``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sklearn_rmtl.datasets import load_retailrocket

    X, y, sessions, times = load_retailrocket(return_X_y=True)
    one = X.assign(
        click=y["click"].to_numpy(),
        purchase=y["purchase"].to_numpy(),
        session=np.asarray(sessions),
        time=np.asarray(times),
    )
    # Sorted by session, then time (RMTL's critics read whole sessions);
    # the renumbered copies follow one another, so the file stays sorted.
    one = one.sort_values(["session", "time"], kind="stable", ignore_index=True)
    span = int(one["session"].max()) + 1
    writer = None
    for k in range(copies):
        part = one.assign(session=one["session"] + k * span)
        table = pa.Table.from_pandas(part, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=row_group_size)
    assert writer is not None
    writer.close()
    frame_mib = (
        pd.concat([one] * copies).memory_usage(deep=True).sum() / 2**20
        if copies <= 4
        else one.memory_usage(deep=True).sum() * copies / 2**20
    )
    return {
        "rows": len(one) * copies,
        "file_mib": os.path.getsize(path) / 2**20,
        "frame_mib": float(frame_mib),
    }


def cli_argv(path: str, block_rows: int, epochs: int, model: str) -> list[str]:
    """The ``rmtl fit`` arguments of ``--cli`` (the estimator of :func:`child`'s)."""
    return [
        "fit",
        "--data",
        path,
        "--block-rows",
        str(block_rows),
        "--target",
        *TARGETS,
        "--session",
        "session",
        "--time",
        "time",
        "--method",
        model,
        "--backbone",
        "sharedbottom",
        "--backbone-params",
        json.dumps(TINY),
        "--max-epochs",
        str(epochs),
        "--seed",
        "0",
        "--model",
        os.path.join(os.path.dirname(path), f"cli-{model}.rmtl"),
    ]


def cli_child(mode: str, path: str, block_rows: int, epochs: int, model: str) -> None:
    """``--cli``: ``rmtl fit`` streaming the file, or its in-memory fit before."""
    import pyarrow.parquet as pq  # noqa: F401  (the other children's imports)

    from sklearn_rmtl import MTLClassifier, RMTLClassifier
    from sklearn_rmtl._tables import read_table
    from sklearn_rmtl.cli import main as rmtl
    from sklearn_rmtl.persistence import load, save

    base = rss_mib()
    argv = cli_argv(path, block_rows, epochs, model)
    start = time.perf_counter()
    if mode == "cli":
        if rmtl(argv) != 0:
            raise SystemExit("rmtl fit failed")
    else:
        frame = read_table(path)
        features = [c for c in frame.columns if c not in {*TARGETS, "session", "time"}]
        cls = RMTLClassifier if model == "rmtl" else MTLClassifier
        clf = cls(
            backbone="sharedbottom",
            backbone_params=TINY,
            max_epochs=epochs,
            random_state=0,
        )
        clf.fit(
            frame[features],
            frame[TARGETS],
            session_ids=frame["session"],
            timestamps=frame["time"],
        )
        save(clf, argv[-1])
    seconds = time.perf_counter() - start
    peak = max_rss_mib_getrusage()
    fitted = load(argv[-1])  # after the peak was read
    print(
        json.dumps(
            {
                "base_mib": base,
                "peak_mib": peak,
                "growth_mib": peak - base,
                "seconds": seconds,
                "epochs_run": fitted.n_iter_,
            }
        )
    )


def child(mode: str, path: str, block_rows: int, epochs: int, model: str) -> None:
    if mode in ("cli", "memory_cli"):
        cli_child(mode, path, block_rows, epochs, model)
        return
    import pyarrow.parquet as pq

    from sklearn_rmtl import MTLClassifier, ParquetSource, RMTLClassifier, SessionCritic

    base = rss_mib()
    settings = dict(
        backbone="sharedbottom",
        backbone_params=TINY,
        max_epochs=epochs,
        random_state=0,
    )
    if model == "rmtl":
        clf = RMTLClassifier(
            **settings,
            critic=SessionCritic(hidden_dims=(8,), max_epochs=epochs),
            refit_max_epochs=epochs,
        )
    else:
        clf = MTLClassifier(**settings)
    start = time.perf_counter()
    if mode == "streamed":
        source = ParquetSource(
            path,
            target=TARGETS,
            session="session",
            time="time",
            block_rows=block_rows,
        )
        clf.fit(source)
        proba = clf.predict_proba(source)
    else:
        frame = pq.read_table(path).to_pandas()
        features = [c for c in frame.columns if c not in {*TARGETS, "session", "time"}]
        clf.fit(
            frame[features],
            frame[TARGETS],
            session_ids=frame["session"],
            timestamps=frame["time"],
        )
        proba = clf.predict_proba(frame[features])
    seconds = time.perf_counter() - start
    peak = max_rss_mib_getrusage()
    print(
        json.dumps(
            {
                "base_mib": base,
                "peak_mib": peak,
                "growth_mib": peak - base,
                "seconds": seconds,
                "mean_proba": proba.mean(axis=0).tolist(),
                "epochs_run": clf.n_iter_,
            }
        )
    )


def run_child(mode: str, path: str, block_rows: int, epochs: int, model: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            path,
            str(block_rows),
            str(epochs),
            model,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(f"the {mode} child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    def extra(p):
        p.add_argument("--copies", type=int, default=None, help="copies of the sample")
        p.add_argument(
            "--block-rows",
            type=int,
            default=None,
            help="also stream with this block size (e.g. to keep it fixed while "
            "--copies grows)",
        )
        p.add_argument(
            "--model",
            choices=["mtl", "rmtl"],
            default="mtl",
            help="MTLClassifier, or RMTLClassifier (every phase, each for the "
            "same epochs)",
        )
        p.add_argument(
            "--cli",
            action="store_true",
            help="measure 'rmtl fit --data FILE --block-rows B' against the "
            "in-memory fit of the same file (B: --block-rows, else a tenth of "
            "the rows)",
        )

    args = parse_args(__doc__, extra)
    copies = args.copies or (4 if args.quick else 20)
    epochs = 1 if args.quick else 2
    rows_per_copy = 75_374
    rows = rows_per_copy * copies
    if args.cli and args.block_rows and rows < 10 * args.block_rows:
        raise SystemExit(
            f"--cli measures a file at least 10x the block: {rows:,} rows < 10 x "
            f"--block-rows {args.block_rows}; raise --copies or lower --block-rows"
        )
    cli = " --cli" if args.cli else ""
    report = Report(f"bench_parquet_memory ({args.model}{cli})", args)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"retailrocket_x{copies}.parquet")
        block10 = -(-rows // 10)
        block40 = -(-rows // 40)
        # --cli: rounded down, so that the file is at least 10x the block.
        cli_block = args.block_rows or rows // 10
        # Row groups no larger than the smaller block: a block reads no more.
        size = write_file(
            path, copies, row_group_size=min(block40, args.block_rows or block40)
        )
        report.add(
            "data",
            size,
            f"file: {size['rows']:,} rows ({copies} copies of the bundled sample), "
            f"{size['file_mib']:.1f} MiB on disk, ~{size['frame_mib']:.0f} MiB "
            "as a pandas DataFrame",
        )
        results = {}
        runs = [
            ("in_memory", "memory", 0),
            ("streamed_10x", "streamed", block10),
            ("streamed_40x", "streamed", block40),
        ]
        if args.block_rows:
            runs.append(("streamed_given", "streamed", args.block_rows))
        if args.cli:
            runs = [("in_memory", "memory_cli", 0), ("rmtl_fit", "cli", cli_block)]
            argv = cli_argv(path, cli_block, epochs, args.model)
            command = shlex.join(["rmtl", *argv])
            report.add(
                "command",
                command,
                f"rmtl_fit: {command}\n  (the file is {rows / cli_block:.1f}x the "
                "block; in_memory: the same estimator fitted on read_table(FILE) "
                "and saved)",
            )
        for name, mode, block in runs:
            r = run_child(mode, path, block, epochs, args.model)
            r["block_rows"] = block
            results[name] = r
            report.add(
                name,
                r,
                f"{name:>13}: block_rows={block or '-':>7}  peak RSS "
                f"{r['peak_mib']:7.0f} MiB (after imports {r['base_mib']:.0f}, "
                f"growth {r['growth_mib']:6.0f} MiB), {r['seconds']:.0f} s, "
                f"{r['epochs_run']} epochs",
            )
        mem = results["in_memory"]["growth_mib"]
        for name in [r[0] for r in runs[1:]]:
            ratio = results[name]["growth_mib"] / mem
            report.add(
                f"{name}_growth_ratio",
                ratio,
                f"{name}: growth {ratio:.2f}x the in-memory fit's "
                f"({results[name]['growth_mib']:.0f} / {mem:.0f} MiB)",
            )
    report.done()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
