"""Test quality of our PEPNet against NextRec's, on the same split, paired by seed.

Both libraries train on the same rows of a bundled dataset (temporal 6:2:2
split with whole sessions; fitted on the train part, scored on the
validation part, the test part never read), with the same inputs (our
``FeatureEncoder``'s codes and scaled numbers), the same hold-out for early
stopping (the latest 25 % of the fitted rows) and the same training rule:
at most ``--max-epochs`` epochs of Adam (lr 1e-3, no weight decay, batch
2048), stopping when the hold-out's AUC of the first task has not improved
for 2 epochs and keeping the weights of the best epoch (NextRec's only rule;
ours with ``validation_metric="auc:<first task>"``, ``n_iter_no_change=2``).

The networks are built at the same sizes: embedding 32 per categorical
column (the prior fields of both gates: every categorical column, our
default; NextRec's ``domain_features``), the numerical columns projected
together to one field of 32 (ours; NextRec's one projected ``DenseFeature``),
each task's MLP 512-256-128-64 then its logit with dropout 0.2 and no batch
normalisation, every gate's hidden layer 64 wide. Arms (``--arms``):

- ``ours``: ``MTLClassifier(backbone="pepnet")`` in float32 at those
  settings;
- ``nextrec``: NextRec's ``PEPNet`` trained by its own ``fit`` as it comes
  (its defaults besides the above: gradients clipped to norm 1, the task
  losses summed, embeddings drawn from normal(0, 1e-4));
- ``ours_init``: ours with NextRec's embedding initialisation
  (``embedding_init_std=1e-4``);
- ``nextrec_ours_rule``: NextRec without gradient clipping and with the
  mean of the task losses (``loss_weights`` 1/K), our training rule;
- ``ours_detached``: ours with NextRec's stop-gradient on the prior fields'
  embeddings in both gates' inputs (no option of ours: a patch of the
  backbone's private ``_take`` for this arm's fit only).

The other differences between the networks (listed in
docs/backbone_quality.rst, "PEPNet beside NextRec's") cannot be set
through either library's options.

Printed: per seed each arm's AUC and Logloss per task, epochs, seconds and
training rows/s (rows of the training part times epochs run, divided by the
fit's wall time: both include their hold-out checks); then the mean +- std
over seeds, the trainable parameters, and the paired differences (paired
t-test p-value, wins per seed) "ours - nextrec", "ours_init - ours",
"nextrec_ours_rule - nextrec", "ours - nextrec_ours_rule" and
"ours_detached - ours". Per seed the libraries alternate which goes first.

NextRec is an optional benchmark dependency, never a runtime one of the
package: ``pip install nextrec`` (0.6.14 was measured). On Python < 3.12 its
metadata pins ``pandas<2``, which this package does not accept; install it
first and then ``pip install "pandas>=2" skorch`` over it (pip warns about
the pin; NextRec's PEPNet and trainer ran with pandas 3.1).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_peer_pepnet.py [--quick]
[--seeds 0,1,2] [--datasets kuairand,retailrocket] [--arms ...]
[--max-epochs 20] [--threads 1]``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
from _common import Report, parse_args
from bench_peer_quality import (
    BATCH_SIZE,
    EMBEDDING_DIM,
    PATIENCE,
    VALIDATION_FRACTION,
    _holdout,
    arm_line,
    diff_line,
    metric_labels,
    paired_by_seed,
    run_line,
    task_scores,
)

from sklearn_rmtl import MTLClassifier, datasets
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._experiments import Split, split_dataset

LR = 1e-3
TOWER = (512, 256, 128, 64)
GATE_HIDDEN = 64
DROPOUT = 0.2
#: NextRec's embedding initialisation: normal(0, 1e-4).
PEER_INIT_STD = 1e-4
ARMS = ("ours", "nextrec", "ours_init", "nextrec_ours_rule", "ours_detached")
PAIRS = (
    ("ours", "nextrec"),
    ("ours_init", "ours"),
    ("nextrec_ours_rule", "nextrec"),
    ("ours", "nextrec_ours_rule"),
    ("ours_detached", "ours"),
)


def _require_nextrec() -> Any:
    try:
        import nextrec
    except ImportError as exc:
        raise SystemExit(
            "bench_peer_pepnet.py needs NextRec, an optional benchmark "
            "dependency: pip install nextrec, then pip install 'pandas>=2' "
            "skorch over it on Python < 3.12 (it is not needed by the package "
            "itself)."
        ) from exc
    return nextrec


def _detached_take(x: torch.Tensor, spans: Any) -> list[torch.Tensor]:
    return [x[:, start:stop].detach() for start, stop in spans]


@contextlib.contextmanager
def _detached_priors() -> Any:
    """Our PEPNet's gates read the prior fields without their gradient."""
    from sklearn_rmtl.backbones import pepnet

    saved = pepnet._take
    pepnet._take = _detached_take
    try:
        yield
    finally:
        pepnet._take = saved


def run_ours(split: Split, seed: int, max_epochs: int, arm: str) -> dict[str, Any]:
    task0 = str(split.y_fit.columns[0])
    params: dict[str, Any] = {
        "embedding_dim": EMBEDDING_DIM,
        "bottom_dims": TOWER[:2],
        "tower_dims": TOWER[2:],
        "gate_hidden_dim": GATE_HIDDEN,
        "dropout": DROPOUT,
        "batch_norm": False,
    }
    if arm == "ours_init":
        params["embedding_init_std"] = PEER_INIT_STD
    clf = MTLClassifier(
        backbone="pepnet",
        backbone_params=params,
        max_epochs=max_epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        validation_fraction=VALIDATION_FRACTION,
        n_iter_no_change=PATIENCE,
        validation_metric=f"auc:{task0}",
        precision="float32",
        random_state=seed,
    )
    patch = _detached_priors() if arm == "ours_detached" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with patch:
        clf.fit(split.X_fit, split.y_fit, timestamps=split.t_fit)
    wall = time.perf_counter() - t0
    proba = clf.predict_proba(split.X_eval)
    module = clf.net_.module_
    return {
        **task_scores(split.y_eval.to_numpy(), proba),
        "epochs": clf.n_iter_,
        "wall_s": wall,
        "parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
    }


class _NextRecData:
    """Our encoder's codes and scaled numbers as NextRec's feature dicts."""

    def __init__(self, split: Split) -> None:
        self.enc = FeatureEncoder().fit(split.X_fit)
        self.n_cat = len(self.enc.cardinalities_)
        self.sparse = [f"c{j}" for j in range(self.n_cat)]
        self.n_num = self.enc.transform(split.X_fit[:1]).shape[1] - self.n_cat
        self.tasks = [str(c) for c in split.y_fit.columns]
        fit = self.as_dict(split.X_fit, split.y_fit.to_numpy())
        valid = _holdout(split)
        self.train = {k: v[~valid] for k, v in fit.items()}
        self.valid = {k: v[valid] for k, v in fit.items()}
        self.x_eval = self.as_dict(split.X_eval)
        self.y_eval = split.y_eval.to_numpy()

    def as_dict(self, X: Any, y: np.ndarray | None = None) -> dict[str, np.ndarray]:
        Xt = self.enc.transform(X)
        out = {name: Xt[:, j].astype(np.int64) for j, name in enumerate(self.sparse)}
        if self.n_num:
            out["numerical"] = Xt[:, self.n_cat :].astype(np.float32)
        for k, task in enumerate(self.tasks if y is not None else ()):
            out[task] = y[:, k].astype(np.float32)
        return out


def _nextrec_model(data: _NextRecData) -> Any:
    from nextrec.basic.features import DenseFeature, SparseFeature
    from nextrec.models.multitask.pepnet import PEPNet

    sparse = [
        SparseFeature(name, vocab_size=int(card), embedding_dim=EMBEDDING_DIM)
        for name, card in zip(data.sparse, data.enc.cardinalities_, strict=True)
    ]
    dense = (
        [
            DenseFeature(
                "numerical",
                input_dim=data.n_num,
                use_projection=True,
                proj_dim=EMBEDDING_DIM,
            )
        ]
        if data.n_num
        else []
    )
    return PEPNet(
        dense_features=dense,
        sparse_features=sparse,
        target=data.tasks,
        task=["binary"] * len(data.tasks),
        mlp_params={"hidden_dims": list(TOWER), "dropout": DROPOUT},
        feature_gate_mlp_params={"hidden_dim": GATE_HIDDEN},
        gate_mlp_params={"hidden_dim": GATE_HIDDEN},
        domain_features=data.sparse,
    )


def run_nextrec(
    data: _NextRecData, seed: int, max_epochs: int, arm: str
) -> dict[str, Any]:
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        # NextRec writes logs and checkpoints under NEXTREC_LOG_DIR.
        os.environ["NEXTREC_LOG_DIR"] = logs
        net = _nextrec_model(data)
        k = len(data.tasks)
        weights = [1.0 / k] * k if arm == "nextrec_ours_rule" else None
        net.compile(
            optimizer="adam",
            optimizer_params={"lr": LR},
            loss="bce",
            loss_weights=weights,
        )
        if arm == "nextrec_ours_rule":
            net.max_gradient_norm = None
        # Its trainer prints progress bars and tables every epoch.
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        t0 = time.perf_counter()
        net.fit(
            data.train,
            data.valid,
            metrics=["auc"],
            epochs=max_epochs,
            batch_size=BATCH_SIZE,
            early_stop_patience=PATIENCE,
            use_tensorboard=False,
        )
        wall = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        x = {name: torch.as_tensor(v) for name, v in data.x_eval.items()}
        proba = torch.sigmoid(net(x)).numpy()
    return {
        **task_scores(data.y_eval, proba),
        "epochs": int(net.epoch_index) + 1,
        "wall_s": wall,
        "parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
    }


def run_dataset(
    name: str, seeds: list[int], arms: list[str], max_epochs: int, rep: Report
) -> dict[str, Any]:
    split = split_dataset(getattr(datasets, f"load_{name}")(), evaluate_on="valid")
    data = _NextRecData(split)
    n_train = len(data.train[data.sparse[0]])
    rep.add(
        f"{name}_setup",
        {"sizes": split.sizes, "n_train": n_train, "tasks": data.tasks},
        f"{name}: {split.sizes}, fitted on train ({n_train} rows trained, "
        f"{len(split.y_fit) - n_train} held out), scored on valid, tasks "
        f"{data.tasks}, seeds {seeds}, arms {arms}",
    )
    metrics, label = metric_labels(data.tasks)
    runs: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in arms}
    for i, seed in enumerate(seeds):
        ours_first = [a for a in arms if a.startswith("ours")]
        peer_first = [a for a in arms if not a.startswith("ours")]
        order = ours_first + peer_first if i % 2 == 0 else peer_first + ours_first
        for arm in order:
            if arm.startswith("ours"):
                r = run_ours(split, seed, max_epochs, arm)
            else:
                r = run_nextrec(data, seed, max_epochs, arm)
            r["rows_per_s"] = n_train * r["epochs"] / r["wall_s"]
            runs[arm][seed] = r
            print(
                f"{name} seed {seed} {arm:>17s}: {run_line(r, metrics, label)}",
                flush=True,
            )
    print(f"\n{name}, validation part, mean +- std over {len(seeds)} seeds:")
    for arm in arms:
        rs = list(runs[arm].values())
        print(f"  {arm:>17s}: {arm_line(rs, metrics, label)}", flush=True)
    diffs: dict[str, dict[str, Any]] = {}
    for a, b in PAIRS:
        if a not in runs or b not in runs:
            continue
        diffs[f"{a} - {b}"] = paired_by_seed(runs[a], runs[b], metrics)
        print(f"  {a} - {b}: {diff_line(diffs[f'{a} - {b}'], label)}", flush=True)
    return {"runs": runs, "differences": diffs}


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--datasets", default="kuairand,retailrocket")
        p.add_argument("--arms", default=",".join(ARMS))
        p.add_argument(
            "--max-epochs",
            type=int,
            default=20,
            help="safety cap of both libraries; early stopping ends the fits",
        )

    os.environ.setdefault("TQDM_DISABLE", "1")
    args = parse_args(__doc__, extra)
    nextrec = _require_nextrec()
    rep = Report("bench_peer_pepnet", args)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.datasets.split(",")
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise SystemExit(f"Unknown arms {sorted(unknown)}; choose from {ARMS}.")
    max_epochs = args.max_epochs
    if args.quick:
        seeds, names, arms, max_epochs = seeds[:1], names[:1], ARMS[:2], 1
    rep.add(
        "versions",
        {"nextrec": nextrec.__version__, "torch": torch.__version__},
        f"NextRec {nextrec.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)",
    )
    for name in names:
        rep.add(name, run_dataset(name, seeds, list(arms), max_epochs, rep))
    return rep.done()


if __name__ == "__main__":
    main()
