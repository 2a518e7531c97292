"""Our STEM against the authors' STEM code, on the same split and inputs.

The authors' model (Su et al., "STEM: Unleashing the Power of Embeddings
for Multi-task Recommendation", AAAI 2024; ``models/STEM.py`` of
https://github.com/LiangcaiSu/STEM, built on the FuxiCTR copy vendored
there) is imported at run time from a checkout given by ``--stem-repo``::

    git clone https://github.com/LiangcaiSu/STEM /path/to/STEM
    python benchmarks/bench_peer_stem.py --stem-repo /path/to/STEM

Their code is an optional benchmark dependency, never a runtime one of the
package, and none of it is copied here. It imports torch, numpy, pandas,
scikit-learn, h5py, PyYAML and tqdm (``pip install h5py pyyaml tqdm`` beside
this package's dependencies).

Both arms train on the fitted rows of a bundled sample (temporal 6:2:2 split
with whole sessions; fitted on the train part, scored on the validation
part, ``--evaluate-on valid``; the test part is never read) with the same
inputs (our ``FeatureEncoder``'s codes and scaled numbers) and the same
rule: Adam at lr 1e-3, batch 2048, the sum of the tasks' mean BCE, early
stopping on the latest 25 % of the fitted rows (the hold-out's summed BCE,
patience 2, checked once per epoch, best weights kept, at most
``--max-epochs``), no retraining on all rows, float32:

- ours: ``MTLClassifier(backbone="stem")`` at its defaults except
  ``embedding_dim=32`` (4 shared and 4 task-specific experts per task,
  512-256 experts, 128-64 towers, dropout 0.2; ``retrain_on_all=False``,
  ``precision="float32"``, ``validation_fraction=0.25``,
  ``n_iter_no_change=2``);
- authors: their ``STEM`` module at the same sizes (one STEM layer,
  ``gate_hidden_units=[]``: a linear gate as ours), built from a FuxiCTR
  ``FeatureMap`` made in memory from our encoder (a ``categorical`` feature
  per categorical column with our vocabulary, a ``numeric`` one per
  numerical input), with their initialisation (``reset_parameters``), fed
  the encoded rows as the ``(batch, columns)`` tensor their ``forward``
  reads, and trained by a plain loop that follows the rule above.

Variants (``--arms``) that measure which difference matters:

- ``authors_mlp_gate``: their gates as in their configuration, MLPs of
  128-64 (``gate_hidden_units=[128, 64]``);
- ``authors_emb_l2``: their configuration's embedding regulariser
  (``embedding_regularizer=1e-6``: ``5e-7 * ||table||^2`` added to every
  step's loss);
- ``authors_our_init``: their module started as ours is: every table
  slice Xavier uniform over all categorical columns' rows (ours is one
  table with offsets), unknown codes' rows zero, a numerical column's map
  as a column of our ``Linear(n_numerical, d)``, every other linear layer
  at PyTorch's default (uniform +-1/sqrt(fan_in) weights and biases, as our
  grouped layers), instead of N(0, 1e-4^2) tables and Xavier normal
  weights with zero biases;
- ``authors_one_numeric``: their module with the numerical inputs as ours
  takes them, one field projected by ``Linear(n_numerical, (K + 1) * d)``
  (Xavier normal, zero bias, as their layers; cut into the same slices as
  their tables) instead of one ``Linear(1, (K + 1) * d)`` field per
  numerical column;
- ``authors_matched``: both of the two above, their module as close to
  ours as it goes (left: their sigmoid-then-BCE output and their unused
  ``K + 1``-th gate);
- ``ours_emb_init``: ours with the tables starting from N(0, 1e-4^2) as
  theirs (``embedding_init_std=1e-4``) instead of Xavier uniform.

Printed: per seed, every arm's per-task AUC and logloss on the scored part,
epochs, fit seconds and training rows/s (epochs x training rows / fit
seconds; ours includes encoding, theirs starts from ready tensors); then
mean +- std, and the paired differences of every arm against ``authors``
(mean, paired t-test p, wins per seed). The arms of a seed run one after
the other, their order rotated by seed, so rows/s compare in the same run.

Run: ``python benchmarks/bench_peer_stem.py --stem-repo PATH [--quick]
[--seeds 0,1,2] [--dataset retailrocket] [--arms ours,authors,...]
[--max-epochs 100]``.
"""

from __future__ import annotations

import importlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import Report, parse_args
from bench_peer_quality import (
    BATCH_SIZE,
    EMBEDDING_DIM,
    PATIENCE,
    VALIDATION_FRACTION,
    EncodedSplit,
    arm_line,
    diff_line,
    load_split,
    metric_labels,
    paired_by_seed,
    run_line,
    task_scores,
)
from torch.nn import functional as F

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._encoding import UNKNOWN_CODE
from sklearn_rmtl._experiments import Split

LR = 1e-3
#: Our STEM's defaults (sklearn_rmtl._defaults), given to their module.
N_SHARED, N_SPECIFIC = 4, 4
EXPERT_DIMS, TOWER_DIMS, DROPOUT = [512, 256], [128, 64], 0.2
#: Their configuration (config/model_config.yaml, STEM_TiktokLarge).
THEIR_GATE_DIMS, THEIR_EMB_L2 = [128, 64], 1e-6
ARMS = (
    "ours",
    "authors",
    "authors_mlp_gate",
    "authors_emb_l2",
    "authors_our_init",
    "authors_one_numeric",
    "authors_matched",
    "ours_emb_init",
)
DEFAULT_ARMS = "ours,authors,authors_mlp_gate,authors_our_init,authors_one_numeric"
REFERENCE = "authors"
NEEDS = "torch, numpy, pandas, scikit-learn, h5py, pyyaml, tqdm"


def import_stem(repo: str | None) -> Any:
    """The authors' ``STEM`` class from a checkout of their repository."""
    clone = "git clone https://github.com/LiangcaiSu/STEM"
    if repo is None or not (Path(repo) / "models" / "STEM.py").is_file():
        raise SystemExit(
            f"bench_peer_stem.py needs a checkout of the authors' STEM code: "
            f"{clone} PATH, then --stem-repo PATH (got {repo!r}, which has no "
            "models/STEM.py). It is an optional benchmark dependency, never "
            "one of the package."
        )
    sys.path.insert(0, str(Path(repo).resolve()))
    try:
        return importlib.import_module("models.STEM").STEM
    except ImportError as exc:
        raise SystemExit(
            f"Importing the authors' STEM from {repo} failed ({exc}). Their "
            f"code (and its vendored FuxiCTR) imports {NEEDS}: install the "
            "missing ones (e.g. pip install h5py pyyaml tqdm)."
        ) from exc


def their_feature_map(data: EncodedSplit, tasks: list[str]) -> Any:
    """A FuxiCTR ``FeatureMap`` of our encoded columns, made in memory."""
    from fuxictr.features import FeatureMap

    fmap = FeatureMap("bench_peer_stem", data_dir="")
    for name, card in data.sparse:
        fmap.features[name] = {"type": "categorical", "vocab_size": card, "source": ""}
    for name in data.dense:
        fmap.features[name] = {"type": "numeric", "source": ""}
    fmap.num_fields = len(fmap.features)
    fmap.labels = list(tasks)
    fmap.set_column_index()
    return fmap


def their_model(stem_cls: Any, fmap: Any, arm: str, seed: int) -> torch.nn.Module:
    """Their module at our sizes; ``arm`` picks the variant."""
    torch.manual_seed(seed)  # their reset_parameters draws from torch's RNG
    n_tasks = len(fmap.labels)
    with tempfile.TemporaryDirectory() as tmp:
        return stem_cls(
            fmap,
            task=["binary_classification"] * n_tasks,
            num_tasks=n_tasks,
            embedding_dim=EMBEDDING_DIM,
            num_layers=1,
            num_shared_experts=N_SHARED,
            num_specific_experts=N_SPECIFIC,
            expert_hidden_units=EXPERT_DIMS,
            gate_hidden_units=THEIR_GATE_DIMS if arm == "authors_mlp_gate" else [],
            tower_hidden_units=TOWER_DIMS,
            hidden_activations="relu",
            net_dropout=DROPOUT,
            batch_norm=False,
            embedding_regularizer=THEIR_EMB_L2 if arm == "authors_emb_l2" else None,
            net_regularizer=None,
            # What their base class reads from the run's configuration.
            optimizer="adam",
            loss="binary_crossentropy",
            learning_rate=LR,
            gpu=-1,
            verbose=0,
            model_root=tmp,
            metrics=["logloss", "AUC"],
        )


class OneNumericField(torch.nn.Module):
    """Their embedding layer with the numerical columns as one field, as ours."""

    def __init__(self, inner: torch.nn.Module, numeric: list[str], width: int):
        super().__init__()
        self.inner, self.numeric = inner, numeric
        self.proj = torch.nn.Linear(len(numeric), width)
        torch.nn.init.xavier_normal_(self.proj.weight)
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, X: dict[str, torch.Tensor]) -> torch.Tensor:
        num = torch.stack([X[n].float() for n in self.numeric], dim=1)
        return torch.cat([self.inner(X), self.proj(num).unsqueeze(1)], dim=1)


def one_numeric_field(model: Any, numeric: list[str]) -> None:
    """Swap their per-column numerical fields for one (``authors_one_numeric``)."""
    layers = model.embedding_layer.embedding_layer.embedding_layers
    for name in numeric:
        del layers[name]  # their forward skips features without a layer
    width = model.embedding_dim * (model.num_tasks + 1)
    model.embedding_layer = OneNumericField(model.embedding_layer, numeric, width)


def init_as_ours(model: torch.nn.Module, n_rows: int, n_numerical: int) -> None:
    """Start their module as ours starts (see ``authors_our_init``)."""
    dim = model.embedding_dim
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.in_features == 1:
                # A numerical column's map: a column of our Linear(n_numerical, d).
                bound = 1 / math.sqrt(n_numerical)
                m.weight.uniform_(-bound, bound)
            elif isinstance(m, torch.nn.Linear):
                m.reset_parameters()
            elif isinstance(m, torch.nn.Embedding):
                bound = math.sqrt(6 / (n_rows + dim))  # Xavier of our one table
                m.weight.uniform_(-bound, bound)
                m.weight[UNKNOWN_CODE] = 0.0


def _their_proba(model: Any, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return torch.cat([out[f"{t}_pred"] for t in model.feature_map.labels], dim=1)


def run_theirs(
    stem_cls: Any, data: EncodedSplit, tasks: list[str], arm: str, seed: int, args: Any
) -> dict[str, Any]:
    """Train their module by our rule; scores on the scored part."""
    fmap = their_feature_map(data, tasks)
    one_field = arm in ("authors_one_numeric", "authors_matched")
    if one_field:  # their layers' widths follow num_fields
        fmap.num_fields = len(data.sparse) + 1
    model = their_model(stem_cls, fmap, arm, seed)
    if one_field:
        one_numeric_field(model, data.dense)
    if arm in ("authors_our_init", "authors_matched"):
        init_as_ours(model, sum(card for _, card in data.sparse), len(data.dense))
    # Their forward reads one (batch, columns) tensor, columns in feature
    # order (codes as floats, cast back to long by their embedding layer).
    x_fit = torch.stack([data.x_fit[n].float() for n in fmap.features], dim=1)
    x_eval = torch.stack([data.x_eval[n].float() for n in fmap.features], dim=1)
    train = np.flatnonzero(~data.valid)
    hold = torch.as_tensor(np.flatnonzero(data.valid))
    y_hold = data.y_fit[hold]
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, since, epochs = float("inf"), None, 0, 0
    t0 = time.perf_counter()
    while epochs < args.max_epochs and since < PATIENCE:
        model.train()
        order = torch.as_tensor(train)[torch.randperm(len(train), generator=gen)]
        for rows in order.split(BATCH_SIZE):
            proba = _their_proba(model, x_fit[rows])
            target = data.y_fit[rows]
            loss = sum(
                F.binary_cross_entropy(proba[:, k], target[:, k])
                for k in range(len(tasks))
            )
            if model._embedding_regularizer:
                loss = loss + model.regularization_loss()
            opt.zero_grad()
            loss.backward()
            opt.step()
        epochs += 1
        model.eval()
        with torch.no_grad():
            proba = _their_proba(model, x_fit[hold]).clamp(1e-7, 1 - 1e-7)
            valid_loss = sum(
                float(F.binary_cross_entropy(proba[:, k], y_hold[:, k]))
                for k in range(len(tasks))
            )
        if valid_loss < best:
            best, since = valid_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            since += 1
    wall = time.perf_counter() - t0
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        proba = _their_proba(model, x_eval).numpy()
    return {
        **task_scores(data.y_eval, proba),
        "epochs": epochs,
        "wall_s": wall,
        "rows_per_s": epochs * len(train) / wall,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def run_ours(split: Split, arm: str, seed: int, args: Any) -> dict[str, Any]:
    """Our STEM by the same rule; scores on the scored part."""
    params: dict[str, Any] = {"embedding_dim": EMBEDDING_DIM}
    if arm == "ours_emb_init":
        params["embedding_init_std"] = 1e-4
    clf = MTLClassifier(
        backbone="stem",
        backbone_params=params,
        max_epochs=args.max_epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        validation_fraction=VALIDATION_FRACTION,
        n_iter_no_change=PATIENCE,
        retrain_on_all=False,
        precision="float32",
        random_state=seed,
    )
    t0 = time.perf_counter()
    clf.fit(split.X_fit, split.y_fit, timestamps=split.t_fit)
    wall = time.perf_counter() - t0
    n_train = round(len(split.X_fit) * (1 - VALIDATION_FRACTION))
    proba = clf.predict_proba(split.X_eval)
    return {
        **task_scores(split.y_eval.to_numpy(), proba),
        "epochs": clf.n_iter_,
        "wall_s": wall,
        "rows_per_s": clf.n_iter_ * n_train / wall,
        "parameters": sum(
            p.numel() for p in clf.net_.module_.parameters() if p.requires_grad
        ),
    }


def main() -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--stem-repo", default=None, help="checkout of their repo")
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--dataset", default="retailrocket")
        p.add_argument("--arms", default=DEFAULT_ARMS, help=f"of {','.join(ARMS)}")
        p.add_argument("--max-epochs", type=int, default=100)
        p.add_argument("--evaluate-on", choices=("valid", "test"), default="valid")

    args = parse_args(__doc__, extra)
    stem_cls = import_stem(args.stem_repo)
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {ARMS}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        seeds, args.max_epochs = seeds[:1], min(args.max_epochs, 2)
    rep = Report("bench_peer_stem", args)
    split, tasks = load_split(args.dataset, args.evaluate_on)
    data = EncodedSplit(split)
    rep.add(
        "setup",
        {"dataset": args.dataset, "sizes": split.sizes, "seeds": seeds, "arms": arms},
        f"{args.dataset}: {split.sizes}, scored on {args.evaluate_on}, tasks "
        f"{tasks}, seeds {seeds}, arms {arms}, max {args.max_epochs} epochs, "
        f"{torch.get_num_threads()} thread(s)",
    )
    metrics, label = metric_labels(tasks)
    runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in arms}
    for i, seed in enumerate(seeds):
        shift = i % len(arms)
        for arm in arms[shift:] + arms[:shift]:  # rotated: rows/s in turn
            if arm.startswith("ours"):
                run = run_ours(split, arm, seed, args)
            else:
                run = run_theirs(stem_cls, data, tasks, arm, seed, args)
            runs[arm][seed] = run
            print(
                f"seed {seed} {arm:>16s}: {run_line(run, metrics, label)}", flush=True
            )
    print("\nmean +- std over seeds:")
    for arm in arms:
        print(f"  {arm:>16s}: {arm_line(list(runs[arm].values()), metrics, label)}")
    diffs: dict[str, dict[str, Any]] = {}
    if REFERENCE in arms:
        print(f"\npaired differences against {REFERENCE} (mean, p, wins):")
        for arm in arms:
            if arm == REFERENCE:
                continue
            diffs[arm] = paired_by_seed(runs[arm], runs[REFERENCE], metrics)
            print(f"  {arm} - {REFERENCE}: {diff_line(diffs[arm], label)}")
    rep.add("runs", runs)
    rep.add("differences", diffs)
    return rep.done()


if __name__ == "__main__":
    main()
