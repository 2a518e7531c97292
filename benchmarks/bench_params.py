"""Network memory: parameters and float32 bytes of STEM against MMoE and PLE.

STEM (``backbone="stem"``) holds the embedding tables ``K + 1`` times (one
shared set and one per task) and ``K * n_specific_experts +
n_shared_experts`` experts; MMoE holds the tables once and ``n_experts``
experts. For K = 2, 3, 5 tasks, at the paper's sizes (embedding 128,
512-256 experts, 128-64 towers, 8 MMoE experts, 4 + 4 per task for PLE and
STEM), this prints for each backbone the parameters of the embedding (tables,
numerical projection) and of the rest, their float32 bytes, and the ratio to
MMoE at the same K, for two vocabularies:

- the benchmarks' RetailRocket-like columns (``_common.CARDINALITIES``,
  about 5,900 ids in all), where the experts dominate;
- a large one (1M users, 200k items, 10k categories), where the tables do.

The networks are built on the ``meta`` device (shapes without memory), so
the large vocabulary costs nothing. Counts only; no timing.

Run: ``python benchmarks/bench_params.py [--tasks 2,3,5] [--backbones
mmoe,ple,stem]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _common import CARDINALITIES, Report, paper_params, parse_args

from sklearn_rmtl._schema import _SizedOnMeta
from sklearn_rmtl._torch_module import MultiTaskModule

#: Id columns of a large vocabulary (users, items, categories, a few flags).
LARGE_CARDINALITIES = (1_000_000, 200_000, 10_000, 50, 2)
N_NUMERICAL = 4


def parameter_counts(
    backbone: str,
    n_tasks: int,
    cardinalities: Sequence[int] = CARDINALITIES,
    n_numerical: int = N_NUMERICAL,
) -> dict[str, int]:
    """Parameters of the network of ``backbone`` at the paper's sizes.

    Returns
    -------
    counts : dict
        ``embedding`` (every table and numerical projection, the shared and
        the task-specific ones), ``network`` (the backbone), ``total`` and
        ``bytes`` (float32).
    """
    # Sized tensors on ``meta``; the embedding offsets, computed from data,
    # stay real.
    with _SizedOnMeta(max_tensors=10_000):
        module = MultiTaskModule(
            cardinalities=list(cardinalities),
            n_numerical=n_numerical,
            n_tasks=n_tasks,
            backbone=backbone,
            backbone_params=paper_params(backbone),
        )
    embedding = sum(
        p.numel()
        for table in (module.embedding, *module.task_embeddings)
        for p in table.parameters()
    )
    network = sum(p.numel() for p in module.backbone.parameters())
    total = embedding + network
    return {
        "embedding": embedding,
        "network": network,
        "total": total,
        "bytes": 4 * total,
    }


def _extra(p: Any) -> None:
    p.add_argument("--tasks", default="2,3,5")
    p.add_argument("--backbones", default="mmoe,ple,stem")


def main() -> None:
    args = parse_args(__doc__, _extra)
    report = Report("bench_params", args)
    backbones = args.backbones.split(",")
    tasks = [int(k) for k in args.tasks.split(",")]
    for vocabulary, cards in (
        ("retailrocket_like", CARDINALITIES),
        ("large", LARGE_CARDINALITIES),
    ):
        print(f"-- {vocabulary}: {sum(cards):,} ids in {len(cards)} columns")
        print(
            f"{'backbone':>9} {'K':>2} {'embedding':>13} {'network':>11} "
            f"{'total':>13} {'MiB':>8} {'x MMoE':>7}"
        )
        for k in tasks:
            counts = {b: parameter_counts(b, k, cards) for b in backbones}
            base = parameter_counts("mmoe", k, cards)["total"]
            for b, c in counts.items():
                print(
                    f"{b:>9} {k:>2} {c['embedding']:>13,} {c['network']:>11,} "
                    f"{c['total']:>13,} {c['bytes'] / 2**20:>8.1f} "
                    f"{c['total'] / base:>7.2f}"
                )
                report.add(f"{vocabulary}/{b}/K={k}", c)
    report.done()


if __name__ == "__main__":
    main()
