"""In-memory fit time of this checkout against another revision, in one run.

A change to the fit path (how rows are validated, encoded, held out and fed
to the phases) must not slow an in-memory fit. This script exports the
revision ``--before`` (default ``HEAD~1``) of this repository (and
``--after``, default this working tree) with ``git archive`` into a
temporary folder, then times the same fits under each
tree in alternating child processes (``PYTHONPATH`` set to the tree), so
both sides share the machine's state, and prints each side's median and
the ratio after / before, of the wall time and of the process's CPU time
(``time.process_time``; with ``--threads 1`` it hardly moves when other
jobs share the machine, where the wall time does).

The fits: ``RMTLClassifier`` (pretrain, MDP, critics, refit; early stopping
on) and ``MTLClassifier`` on RetailRocket-shaped rows (``_common.make_data``)
at the paper's network sizes, one epoch of each phase, as
``bench_fit.py``. A tiny fit in each child first warms the process up.

Run (from the repository root): ``python benchmarks/bench_fit_path.py
[--before REV] [--rows N] [--repeats R] [--quick]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
import torch
from _common import BATCH_SIZE, make_data
from sklearn_rmtl import MTLClassifier, RMTLClassifier
import sklearn_rmtl
assert sklearn_rmtl.__file__.startswith({tree!r}), sklearn_rmtl.__file__
torch.set_num_threads({threads})
common = dict(max_epochs=1, random_state=0)
rmtl = dict(refit_max_epochs=1)
if "critic_max_epochs" in RMTLClassifier().get_params():  # before SessionCritic
    rmtl.update(critic_max_epochs=2, critic_patience=5)    # held the settings
else:
    from sklearn_rmtl import SessionCritic
    rmtl.update(critic=SessionCritic(max_epochs=2, patience=5))
warm = make_data(512, seed=3)
RMTLClassifier(backbone="esmm", batch_size=128, **common, **rmtl).fit(
    warm.X, warm.Y, session_ids=warm.session_ids, timestamps=warm.timestamps)
data = make_data({rows}, seed=0)
out = {{}}
for name, make in (
    ("rmtl", lambda: RMTLClassifier(backbone="esmm", **common, **rmtl)),
    ("mtl", lambda: MTLClassifier(backbone="esmm", **common)),
):
    start, cpu = time.perf_counter(), time.process_time()
    make().fit(data.X, data.Y, session_ids=data.session_ids,
               timestamps=data.timestamps)
    out[name] = time.perf_counter() - start
    out[name + " cpu"] = time.process_time() - cpu
print(json.dumps(out))
"""


def _export(rev: str, folder: str, name: str) -> str:
    """``rev``'s tracked files, unpacked under ``folder/name``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        check=True,
        capture_output=True,
    ).stdout
    path = os.path.join(folder, f"{name}.tar")
    Path(path).write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(os.path.join(folder, name), filter="data")
    return os.path.join(folder, name)


def _time(tree: str, rows: int, threads: int) -> dict[str, float]:
    code = CHILD.format(
        bench=str(ROOT / "benchmarks"), tree=tree, rows=rows, threads=threads
    )
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--before", default="HEAD~1", help="git revision to compare")
    p.add_argument(
        "--after", default=None, help="git revision (default: this working tree)"
    )
    p.add_argument("--rows", type=int, default=None, help="rows of the fits")
    p.add_argument("--repeats", type=int, default=None, help="children per side")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quick", action="store_true", help="small sizes")
    args = p.parse_args()
    rows = args.rows or 2048 * (4 if args.quick else 24)
    repeats = args.repeats or (2 if args.quick else 5)
    with tempfile.TemporaryDirectory() as folder:
        before = _export(args.before, folder, "before")
        after = (
            str(ROOT) if args.after is None else _export(args.after, folder, "after")
        )
        times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
        start = time.perf_counter()
        for r in range(repeats):
            # Alternate the sides so that drifts of the machine hit both.
            sides = [("before", before), ("after", after)]
            for side, tree in sides if r % 2 == 0 else sides[::-1]:
                for name, seconds in _time(tree, rows, args.threads).items():
                    times[side].setdefault(name, []).append(seconds)
    print(
        f"in-memory fits of {rows:,} rows, {repeats} children per side, "
        f"{args.threads} threads; before = {args.before}, after = "
        f"{args.after or 'this working tree'} "
        f"({time.perf_counter() - start:.0f} s in all)"
    )
    for name in times["after"]:
        b = statistics.median(times["before"][name])
        a = statistics.median(times["after"][name])
        print(
            f"  {name}: before {b:.2f} s, after {a:.2f} s (median), "
            f"after / before = {a / b:.3f}  "
            f"[before {', '.join(f'{t:.2f}' for t in times['before'][name])}; "
            f"after {', '.join(f'{t:.2f}' for t in times['after'][name])}]"
        )


if __name__ == "__main__":
    main()
