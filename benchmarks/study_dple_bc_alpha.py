"""D-PLE's behaviour-cloning weight ``bc_alpha`` on validation data, paired by seed.

For each seed, the experiments' PLE baseline (``rmtl reproduce``'s settings:
embedding 128, the dataset's ``retrain_on_all``, bfloat16 where native) is
fitted on the train part, and D-PLE (``actor_update=True``,
``weighting="constant"``, no refit) is trained from it once per ``--alphas``
value, starting from the network chosen on the held-out rows (also scored,
as "PLE, held-out network", where the dataset retrains on all rows); all
are scored on the validation part (the test part is never read). Prints
each run's per-task AUC, Logloss and s-Logloss (mean ± std over seeds) and
the paired difference of each alpha against ``--reference`` with its paired
t-test p-value and wins per seed. Finished runs are read back from
``--output`` (resumable, as the ``rmtl`` experiment commands).

Run: ``OMP_NUM_THREADS=1 python benchmarks/study_dple_bc_alpha.py --dataset
retailrocket --alphas 0.5 1 2.5 10 --seeds 3``.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from sklearn_rmtl import _experiments as ex
from sklearn_rmtl._experiments import load_dataset
from sklearn_rmtl._precision import native_bfloat16
from sklearn_rmtl._validation import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="retailrocket")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.5])
    parser.add_argument("--reference", type=float, default=2.5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--critic-max-epochs", type=int, default=8)
    parser.add_argument(
        "--critic-lr",
        type=float,
        default=None,
        help="Adam learning rate of the critics (SessionCritic's lr; 1e-3)",
    )
    parser.add_argument(
        "--behavior-policy",
        choices=["actor", "uniform"],
        default=None,
        help="actions of the critics' transitions (SessionCritic's "
        "behavior_policy; default: its own)",
    )
    parser.add_argument("--output", type=Path, default=Path("rmtl-results"))
    args = parser.parse_args()
    if args.reference not in args.alphas:
        parser.error("--reference must be one of --alphas")

    native = native_bfloat16(resolve_device("cpu"))
    settings = ex.Settings(
        critic_max_epochs=args.critic_max_epochs,
        backbone_params={"embedding_dim": 128},
        rmtl_params={
            "precision": "bfloat16" if native else "float32",
            "retrain_on_all": ex.RETRAIN_ON_ALL.get(args.dataset, False),
        },
        critic_params={
            **({} if args.critic_lr is None else {"lr": args.critic_lr}),
            **(
                {}
                if args.behavior_policy is None
                else {"behavior_policy": args.behavior_policy}
            ),
        },
    )
    names = {a: f"D-PLE bc_alpha={a:g}" for a in args.alphas}
    start = "PLE, held-out network"  # what D-PLE starts from (not retrained)
    methods = [
        ex.Method("PLE", "baseline", lambda c: c.actor("ple")),
        ex.Method(
            start,
            "baseline",
            lambda c: c.fit(
                c.settings.mtl("ple", c.seed).set_params(retrain_on_all=False)
            ),
        ),
    ]
    methods += [
        ex.Method(names[a], "baseline", partial(ex.ddpg, bc_alpha=a))
        for a in args.alphas
    ]
    results = ex.run(
        methods,
        load_dataset(args.dataset, None, 2000),
        seeds=range(args.seeds),
        settings=settings,
        output=args.output / "study-dple-valid" / args.dataset,
        experiment="study-dple",
        dataset=args.dataset,
        evaluate_on="valid",
    )
    rows = ["PLE", start, *names.values()]
    print(f"{args.dataset}, validation part, {args.seeds} seeds")
    print(ex.markdown_table(ex.describe(results, rows), rows))
    score = {
        (r["method"], r["seed"], t, m): v
        for r in results
        for t, scores in r["scores"].items()
        for m, v in scores.items()
    }
    tasks = list(results[0]["scores"])
    reference = names[args.reference]
    print(f"\nPaired difference against {reference} (p, wins per seed):")
    for method in names.values():
        if method == reference:
            continue
        cells = []
        for t in tasks:
            for m in ex.METRICS:
                d = ex.paired_difference(
                    {s: score[method, s, t, m] for s in range(args.seeds)},
                    {s: score[reference, s, t, m] for s in range(args.seeds)},
                    ex.GREATER_IS_BETTER[m],
                )
                p = ex._p(d["p_value"])
                cells.append(f"{t} {m} {d['mean_diff']:+.4f} ({p}, {d['wins_label']})")
        print(f"{method}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
