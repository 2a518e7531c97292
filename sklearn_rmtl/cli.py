"""The ``rmtl`` command line: reproduce the paper's experiments.

``rmtl reproduce`` (Table 1), ``rmtl ablation`` (Table 2) and ``rmtl
transfer`` (Sec. 3.4) run on a bundled sample, the full public datasets
(``--data-home``) or synthetic sessions, print a table in the paper's layout
and write ``results.csv``, ``results.md``, ``runs.json`` and a resumable
``runs.jsonl`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sklearn_rmtl import _experiments as ex
from sklearn_rmtl.backbones import BACKBONES

DATASETS = ("retailrocket", "taobao", "kuairand", "synthetic")


def load_dataset(name: str, data_home: str | None, n_sessions: int) -> Any:
    """Load a dataset Bunch by its command-line name."""
    from sklearn_rmtl import datasets

    if name == "synthetic":
        return datasets.make_sessions(n_sessions=n_sessions, random_state=0)
    loader = getattr(datasets, f"load_{name}")
    return loader(data_home=data_home)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmtl",
        description="Reproduce the experiments of 'Multi-Task Recommendations with "
        "Reinforcement Learning' (WWW 2023) with sklearn-rmtl.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    specs = {
        "reproduce": "Table 1: baselines, D-PLE and RMTL on each backbone",
        "ablation": "Table 2: RMTL's weighting variants on one backbone",
        "transfer": "Sec. 3.4: a critic learnt with backbone A refits backbone B",
    }
    for name, help_text in specs.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--dataset",
            choices=DATASETS,
            default="retailrocket",
            help="dataset (default: retailrocket, the bundled sample)",
        )
        sub.add_argument(
            "--data-home",
            default=None,
            help="folder with the full raw dataset files (default: bundled sample)",
        )
        if name == "ablation":
            sub.add_argument("--backbone", choices=sorted(BACKBONES), default="mmoe")
        else:
            sub.add_argument(
                "--backbones",
                nargs="+",
                choices=sorted(BACKBONES),
                default=["esmm", "mmoe", "ple"],
                help="backbones to run RMTL on (default: esmm mmoe ple)",
            )
        sub.add_argument(
            "--seeds", type=int, default=3, help="number of seeds 0..N-1 (default: 3)"
        )
        sub.add_argument(
            "--max-epochs",
            type=int,
            default=3,
            help="maximum epochs of pretraining and of the refit, each with early "
            "stopping on the validation part (default: 3)",
        )
        sub.add_argument(
            "--critic-max-epochs",
            type=int,
            default=3,
            help="maximum epochs of critic training (default: 3)",
        )
        sub.add_argument(
            "--batch-size", type=int, default=2048, help="rows per step (default: 2048)"
        )
        sub.add_argument(
            "--embedding-dim",
            type=int,
            default=32,
            help="embedding size (default: 32, which keeps the default run under "
            "15 minutes on 2 CPU cores; the paper used 128)",
        )
        sub.add_argument(
            "--backbone-params",
            type=json.loads,
            default=None,
            help="JSON dict of network sizes, e.g. '{\"bottom_dims\": [256, 128]}'; "
            "each backbone takes the keys it uses",
        )
        sub.add_argument(
            "--n-sessions",
            type=int,
            default=2000,
            help="number of sessions of --dataset synthetic (default: 2000)",
        )
        sub.add_argument(
            "--device",
            choices=("cpu", "cuda", "auto"),
            default="cpu",
            help="torch device (default: cpu)",
        )
        sub.add_argument(
            "--output",
            type=Path,
            default=Path("rmtl-results"),
            help="results go to OUTPUT/<command>/<dataset>; finished runs there "
            "are skipped (default: rmtl-results)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rmtl`` command line.

    Parameters
    ----------
    argv : sequence of str, default=None
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success.
    """
    args = _parser().parse_args(argv)
    params = dict(args.backbone_params or {})
    if args.embedding_dim is not None:
        params["embedding_dim"] = args.embedding_dim
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    settings = ex.Settings(
        max_epochs=args.max_epochs,
        critic_max_epochs=args.critic_max_epochs,
        batch_size=args.batch_size,
        backbone_params=params,
        device=args.device,
    )
    if args.command == "reproduce":
        methods = ex.table1_methods(args.backbones)
        title = f"Table 1 on {args.dataset}"
    elif args.command == "ablation":
        methods = ex.ablation_methods(args.backbone)
        title = f"Table 2 (weighting ablation, {args.backbone}) on {args.dataset}"
    else:
        methods = ex.transfer_methods(args.backbones)
        title = f"Critic transfer on {args.dataset}"
    data = load_dataset(args.dataset, args.data_home, args.n_sessions)
    output = args.output / args.command / args.dataset
    print(
        f"{title}: {len(data.X)} rows, {len(methods)} methods x {args.seeds} seeds; "
        f"writing to {output}",
        file=sys.stderr,
    )
    results = ex.run(
        methods,
        data,
        seeds=range(args.seeds),
        settings=settings,
        output=output,
        experiment=args.command,
        dataset=args.dataset,
    )
    print(ex.write_outputs(results, [m.name for m in methods], output, title))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
