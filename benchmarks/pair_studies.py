"""Pair two ``rmtl study`` runs by seed: what one setting changes in each arm.

Two studies with the same seeds, backbones and data but one setting changed
(e.g. ``--gamma 0``, or ``--critic-params '{"cv": 5}'``) share their
pretrained actors, so their arms pair by seed across the two runs. For every
backbone and task x metric this prints, as CSV rows (mean of A - B over the
seeds both have, p-value of a paired t-test, seeds where A is better):

- every variant both runs have, A - B;
- with ``--gap TREATED CONTROL`` (default ``rmtl_fixed rmtl_shuffled``), each
  run's ``TREATED - CONTROL`` and the difference of those gaps, A's minus
  B's: whether the setting changes what the treated weighting gains over its
  control.

Run: ``python benchmarks/pair_studies.py OUT_A/study/retailrocket
OUT_B/study/retailrocket --labels "gamma 0.95" "gamma 0"``, each folder an
``rmtl study`` output holding ``runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn_rmtl._experiments import GREATER_IS_BETTER, _p, paired_difference

Scores = dict[tuple[str, str], dict[int, float]]


def load(folder: Path) -> dict[tuple[str, str], Scores]:
    """(backbone, variant) -> (task, metric) -> seed -> score, from runs.jsonl."""
    runs: dict[tuple[str, str], Scores] = {}
    with open(folder / "runs.jsonl") as lines:
        for line in lines:
            run = json.loads(line)
            arm = runs.setdefault((run["backbone"], run["variant"]), {})
            for task, scores in run["scores"].items():
                for metric, value in scores.items():
                    arm.setdefault((task, metric), {})[run["seed"]] = value
    return runs


def _cell(a: dict[int, float], b: dict[int, float], metric: str) -> str:
    r = paired_difference(a, b, GREATER_IS_BETTER[metric])
    return f'"{r["mean_diff"]:+.4f} ({_p(r["p_value"])}, {r["wins_label"]})"'


def _gap(
    arms: dict[tuple[str, str], Scores],
    backbone: str,
    pair: tuple[str, str],
    column: tuple[str, str],
) -> dict[int, float]:
    treated, control = (arms[(backbone, v)][column] for v in pair)
    return {s: treated[s] - control[s] for s in treated.keys() & control.keys()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--labels", nargs=2, default=("A", "B"))
    parser.add_argument(
        "--gap", nargs=2, default=("rmtl_fixed", "rmtl_shuffled"), metavar="VARIANT"
    )
    args = parser.parse_args()
    (la, lb), (treated, control) = args.labels, args.gap
    runs = load(args.a), load(args.b)
    shared = sorted(runs[0].keys() & runs[1].keys())
    if not shared:
        parser.error("the two studies have no backbone and variant in common")
    columns = list(runs[0][shared[0]])
    print('"Backbone", "Comparison", ' + ", ".join(f'"{t} {m}"' for t, m in columns))
    for backbone in sorted({b for b, _ in shared}):
        rows = []
        for _, variant in (arm for arm in shared if arm[0] == backbone):
            a, b = (r[(backbone, variant)] for r in runs)
            rows.append((f"{variant}, {la} - {lb}", [(a[c], b[c]) for c in columns]))
        gap_arms = {(backbone, treated), (backbone, control)}
        if gap_arms <= set(shared):
            pair = (treated, control)
            gaps = [[_gap(r, backbone, pair, c) for c in columns] for r in runs]
            for label, gap in zip((la, lb), gaps, strict=True):
                zero = [(g, dict.fromkeys(g, 0.0)) for g in gap]
                rows.append((f"{label}: {treated} - {control}", zero))
            rows.append(
                (
                    f"({treated} - {control}), {la} - {lb}",
                    list(zip(*gaps, strict=True)),
                )
            )
        for name, pairs in rows:
            cells = [
                _cell(x, y, m) for (x, y), (_, m) in zip(pairs, columns, strict=True)
            ]
            print(f'"{backbone}", "{name}", ' + ", ".join(cells))


if __name__ == "__main__":
    main()
