"""What-if measurements: prototypes of proposed package changes vs the current code.

Each entry times the current code path and a small prototype of a change
side by side on identical inputs (alternating, median of rounds), and checks
that the results agree. Nothing in the package is modified; the prototypes
live here only to give the proposals measured evidence.

1. ``predict``: ``MTLClassifier.predict_proba`` (skorch's per-row Dataset +
   collation) vs slicing encoded tensors directly under ``inference_mode``.
2. ``loader``: skorch's default training iterator (one ``__getitem__`` per
   row) vs a batch sampler that indexes whole batches (same permutation).
3. ``adam``: ``torch.optim.Adam()`` vs ``Adam(fused=True)`` in a training step.
4. ``grouped``: ``GroupedLinear``'s ``einsum`` (batch-major, permuting
   copies, separate bias add) vs group-major ``baddbmm`` in the SingleTask/
   ESMM towers and MMoE experts.
5. ``critic``: the shared critic's first layer on ``[state, action_k]`` for
   every task vs the state part once plus the action part per task.
6. ``encoder``: ``FeatureEncoder.transform`` (object arrays through
   OrdinalEncoder for every row) vs encoding each categorical column's
   categories once and indexing them by the pandas codes.
7. ``dropout``: a training step with the paper's dropout vs none (what the
   package's Dropout costs; not a proposal to drop it).
8. ``actor_chunks``: the actor's forward over all rows (behaviour and next
   actions of the critic phase) in 65,536-row chunks vs 2,048-row batches:
   speed and peak memory.

Run: ``python benchmarks/bench_proposals.py [--quick]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from _common import (
    BATCH_SIZE,
    CARDINALITIES,
    PureActorStep,
    Report,
    encoded_tensors,
    fmt_rate,
    make_data,
    median,
    parse_args,
    repeat,
)
from scipy.special import expit
from skorch.dataset import Dataset
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._critic import Critic
from sklearn_rmtl._mtl import encode_inputs
from sklearn_rmtl.backbones._layers import GroupedLinear, GroupedMLP


def side_by_side(
    current: Any, proposed: Any, rounds: int, inner: int = 1
) -> dict[str, float]:
    """Alternate the two callables; median seconds of each and the speed-up."""
    current()
    proposed()
    tc, tp = [], []
    for _ in range(rounds):
        tc.append(median(repeat(current, inner)))
        tp.append(median(repeat(proposed, inner)))
    c, p = median(tc), median(tp)
    return {"current_s": c, "proposed_s": p, "speedup": c / p}


# ------------------------------------------------------------- 1. predict
def direct_predict(
    clf: MTLClassifier, X: pd.DataFrame, batch: int = BATCH_SIZE, chunk: int = 65_536
) -> np.ndarray:
    """predict_proba without skorch's per-row Dataset: slice encoded tensors."""
    n_cat = len(clf.encoder_.cardinalities_)
    module = clf.backbone_.module_.eval()
    out = np.empty((len(X), clf.n_tasks_), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(X), chunk):
            inputs = encode_inputs(
                clf.encoder_.transform(X.iloc[start : start + chunk]), n_cat
            )
            xc = torch.from_numpy(inputs["x_cat"])
            xn = torch.from_numpy(inputs["x_num"])
            for b in range(0, len(xc), batch):
                logits = module(xc[b : b + batch], xn[b : b + batch])
                out[start + b : start + b + len(logits)] = logits.numpy()
    return expit(out.astype(np.float64))


def proposal_predict(data: Any, backbone: str, n: int, rounds: int) -> dict[str, Any]:
    clf = MTLClassifier(
        backbone=backbone, max_epochs=1, early_stopping=False, random_state=0
    ).fit(data.X.iloc[: 2 * BATCH_SIZE], data.Y.iloc[: 2 * BATCH_SIZE])
    X = data.X.iloc[:n]
    res = side_by_side(
        lambda: clf.predict_proba(X), lambda: direct_predict(clf, X), rounds
    )
    res["max_abs_diff"] = float(
        np.abs(clf.predict_proba(X) - direct_predict(clf, X)).max()
    )
    res["current_rows_s"] = n / res["current_s"]
    res["proposed_rows_s"] = n / res["proposed_s"]
    return res


# -------------------------------------------------------------- 2. loader
class _BatchDataset(torch.utils.data.Dataset):
    """Indexed by a list of row indices (a whole batch) at once."""

    def __init__(self, X: dict[str, np.ndarray], y: np.ndarray) -> None:
        self.X = {k: torch.from_numpy(v) for k, v in X.items()}
        self.y = torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(
        self, idx: list[int]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        i = torch.as_tensor(idx)
        return {k: v[i] for k, v in self.X.items()}, self.y[i]


def proposal_loader(n: int, rounds: int) -> dict[str, Any]:
    xc, xn, y = encoded_tensors(n)
    X = {"x_cat": xc.numpy(), "x_num": xn.numpy()}
    yy = y.numpy()

    def skorch_default() -> list[Any]:
        g = torch.Generator().manual_seed(0)
        return list(
            DataLoader(Dataset(X, yy), batch_size=BATCH_SIZE, shuffle=True, generator=g)
        )

    def batched() -> list[Any]:
        g = torch.Generator().manual_seed(0)
        ds = _BatchDataset(X, yy)
        sampler = BatchSampler(RandomSampler(range(n), generator=g), BATCH_SIZE, False)
        return list(DataLoader(ds, sampler=sampler, batch_size=None, generator=g))

    res = side_by_side(skorch_default, batched, rounds)
    a, b = skorch_default(), batched()
    same = len(a) == len(b) and all(
        torch.equal(xa["x_cat"], xb["x_cat"])
        and torch.equal(xa["x_num"], xb["x_num"])
        and torch.equal(ya, yb)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )
    res["same_batches"] = bool(same)
    res["current_rows_s"] = n / res["current_s"]
    res["proposed_rows_s"] = n / res["proposed_s"]
    return res


# ---------------------------------------------------------------- 3. adam
def dropout_share(backbone: str, rounds: int) -> dict[str, Any]:
    """Training step with the paper's dropout vs none (the cost of dropout)."""
    with_d = PureActorStep(backbone)
    without = PureActorStep(backbone, dropout=0.0)
    without.net.load_state_dict(with_d.net.state_dict())
    res = side_by_side(with_d, without, rounds, inner=2)
    res["dropout_share_of_step"] = 1 - res["proposed_s"] / res["current_s"]
    return res


def proposal_adam(backbone: str, rounds: int) -> dict[str, Any]:
    cur = PureActorStep(backbone)
    fused = PureActorStep(backbone, fused=True)
    fused.net.load_state_dict(cur.net.state_dict())
    res = side_by_side(cur, fused, rounds, inner=2)
    # Same start, same batches: how far apart are the weights after 3 steps?
    a, b = PureActorStep(backbone), PureActorStep(backbone, fused=True)
    b.net.load_state_dict(a.net.state_dict())
    for _ in range(3):
        a()
        b()
    res["max_param_diff_after_3_steps"] = max(
        float((p - q).abs().max())
        for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True)
    )
    res["current_samples_s"] = BATCH_SIZE / res["current_s"]
    res["proposed_samples_s"] = BATCH_SIZE / res["proposed_s"]
    return res


# ------------------------------------------------------------- 4. grouped
def _group_major_mlp(layers: list[GroupedLinear], x: torch.Tensor) -> torch.Tensor:
    """Same maps as GroupedMLP + head, activations kept as (groups, batch, f)."""
    first = layers[0]
    if x.dim() == 2:  # shared input: one product, then a view as (g, b, out)
        w = first.weight.permute(1, 0, 2).reshape(first.in_features, -1)
        h = torch.addmm(first.bias.reshape(-1), x, w)
        h = h.view(x.shape[0], first.n_groups, first.out_features).transpose(0, 1)
    else:
        h = torch.baddbmm(first.bias.unsqueeze(1), x.transpose(0, 1), first.weight)
    for layer in layers[1:]:
        h = torch.relu(h)
        h = torch.baddbmm(layer.bias.unsqueeze(1), h, layer.weight)
    return h.transpose(0, 1)  # back to (b, g, out) as a view


def proposal_grouped(
    name: str,
    n_groups: int,
    in_f: int,
    dims: tuple[int, ...],
    shared_input: bool,
    rounds: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    mlp = GroupedMLP(n_groups, in_f, dims[:-1], dropout=0.0)
    head = GroupedLinear(n_groups, mlp.out_features, dims[-1])
    layers = [m for m in mlp.layers if isinstance(m, GroupedLinear)] + [head]
    x0 = (
        torch.randn(BATCH_SIZE, in_f)
        if shared_input
        else torch.randn(BATCH_SIZE, n_groups, in_f)
    )
    x = x0.clone().requires_grad_(True)
    params = [*mlp.parameters(), *head.parameters()]

    def current() -> None:
        out = head(mlp(x))
        for p in params:
            p.grad = None
        out.sum().backward()

    def proposed() -> None:
        out = _group_major_mlp(layers, x)
        for p in params:
            p.grad = None
        out.sum().backward()

    res = side_by_side(current, proposed, rounds, inner=3)
    with torch.no_grad():
        res["max_abs_diff"] = float(
            (head(mlp(x0)) - _group_major_mlp(layers, x0)).abs().max()
        )
    res["shape"] = f"{name}: {n_groups} groups, {in_f}->{'-'.join(map(str, dims))}"
    return res


# -------------------------------------------------------------- 5. critic
def _split_critic_forward(
    c: Critic, x_cat: torch.Tensor, x_num: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """Shared critic, first layer split: W [s; a_k] = W_s s (once) + W_a a_k."""
    batch, k = actions.shape
    act = c.action_layer(actions.unsqueeze(-1))  # (b, K, d)
    state = c.embeddings[0](x_cat, x_num)  # (b, S)
    first = c.mlp.layers[0]
    s_dim = state.shape[1]
    w = first.weight[0]
    h = torch.addmm(first.bias[0], state, w[:s_dim]).unsqueeze(1) + act @ w[s_dim:]
    h = h.reshape(batch * k, 1, -1)
    for layer in list(c.mlp.layers)[1:]:
        h = layer(h)
    hidden = h.view(batch, k, -1)
    return -torch.relu(c.head(hidden).squeeze(-1))


def proposal_critic(rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    c = Critic(
        cardinalities=[x + 2 for x in CARDINALITIES],
        n_numerical=1,
        n_tasks=2,
        embedding_dim=128,
        hidden_dims=(512, 256),
        shared=True,
    ).train()
    c.init_output(torch.tensor([-0.5, -0.1]))
    xc, xn, _ = encoded_tensors(BATCH_SIZE)
    a = torch.rand(BATCH_SIZE, 2)
    target = torch.full((BATCH_SIZE, 2), -0.3)

    def step(fwd: Any) -> None:
        q = fwd()
        c.zero_grad()
        ((q - target) ** 2).mean().backward()

    res = side_by_side(
        lambda: step(lambda: c(xc, xn, a)),
        lambda: step(lambda: _split_critic_forward(c, xc, xn, a)),
        rounds,
        inner=3,
    )
    with torch.no_grad():
        res["max_abs_diff"] = float(
            (c(xc, xn, a) - _split_critic_forward(c, xc, xn, a)).abs().max()
        )
    return res


# ------------------------------------------------------------- 6. encoder
def fast_transform(enc: Any, X: pd.DataFrame) -> np.ndarray:
    """FeatureEncoder.transform for category-dtype columns via their codes.

    Encodes each column's categories (hundreds of values) with the fitted
    OrdinalEncoder once, then indexes that table by the pandas codes.
    Other columns and the numerical part go through the package's code.
    """
    cat_idx, num_idx = enc._cat_idx, enc._num_idx
    cols = [X.iloc[:, j] for j in cat_idx]
    if not all(isinstance(c.dtype, pd.CategoricalDtype) for c in cols):
        return enc.transform(X)
    longest = max(len(c.cat.categories) for c in cols)
    table = pd.DataFrame(
        {  # every column's categories, padded with its first
            str(j): np.resize(np.asarray(c.cat.categories, dtype=object), longest)
            for j, c in enumerate(cols)
        }
    )
    table.columns = range(len(cols))
    lookup = enc.ordinal_encoder_.transform(table) + 2
    out = np.empty((len(X), len(cat_idx)), dtype=np.float64)
    for j, c in enumerate(cols):
        codes = c.cat.codes.to_numpy()
        out[:, j] = np.where(codes < 0, 0.0, lookup[np.maximum(codes, 0), j])
    parts = [out]
    if enc.scaler_ is not None:
        z = enc.scaler_.transform(enc._numbers(X, num_idx))
        nan = np.isnan(z)
        parts += [np.where(nan, 0.0, z), nan[:, enc._indicator_idx]]
    return np.hstack(parts).astype(np.float32)


def proposal_encoder(data: Any, n: int, rounds: int) -> dict[str, Any]:
    from sklearn_rmtl import FeatureEncoder

    enc = FeatureEncoder().fit(data.X.iloc[:n])
    X = data.X.iloc[:n]
    res = side_by_side(lambda: enc.transform(X), lambda: fast_transform(enc, X), rounds)
    res["identical"] = bool(np.array_equal(enc.transform(X), fast_transform(enc, X)))
    res["current_rows_s"] = n / res["current_s"]
    res["proposed_rows_s"] = n / res["proposed_s"]
    return res


# ------------------------------------------------- 8. actor forward chunks
def _actor_proba_batched(
    actor: torch.nn.Module, inputs: dict[str, np.ndarray], batch: int
) -> np.ndarray:
    """``_rmtl._actor_proba`` with ``batch`` rows per forward instead of 65,536."""
    actor.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(inputs["x_cat"]), batch):
            xc = torch.as_tensor(inputs["x_cat"][i : i + batch])
            xn = torch.as_tensor(inputs["x_num"][i : i + batch])
            out.append(torch.sigmoid(actor(xc, xn)).numpy())
    return np.concatenate(out).astype(np.float64)


def proposal_actor_chunks(backbone: str, n: int, rounds: int) -> dict[str, Any]:
    from _common import make_actor, peak_rss_growth

    from sklearn_rmtl._rmtl import _actor_proba

    actor = make_actor(backbone).eval()
    xc, xn, _ = encoded_tensors(n)
    inputs = {"x_cat": xc.numpy(), "x_num": xn.numpy()}
    few = {k: v[:256] for k, v in inputs.items()}
    _actor_proba(actor, few, "cpu")  # first-call allocations out of the way
    _actor_proba_batched(actor, few, BATCH_SIZE)
    with peak_rss_growth() as small:
        _actor_proba_batched(actor, inputs, BATCH_SIZE)
    with peak_rss_growth() as large:
        _actor_proba(actor, inputs, "cpu")
    res = side_by_side(
        lambda: _actor_proba(actor, inputs, "cpu"),
        lambda: _actor_proba_batched(actor, inputs, BATCH_SIZE),
        rounds,
    )
    res["max_abs_diff"] = float(
        np.abs(
            _actor_proba(actor, inputs, "cpu")
            - _actor_proba_batched(actor, inputs, BATCH_SIZE)
        ).max()
    )
    res["current_rows_s"] = n / res["current_s"]
    res["proposed_rows_s"] = n / res["proposed_s"]
    res["rows"] = n
    res["current_peak_rss_growth_mib"] = large["growth_mib"]
    res["proposed_peak_rss_growth_mib"] = small["growth_mib"]
    return res


def main() -> dict[str, Any]:
    args = parse_args(__doc__)
    rep = Report("bench_proposals", args)
    rounds = args.repeats or (2 if args.quick else 3)
    n_pred = BATCH_SIZE * (4 if args.quick else 16)
    data = make_data(max(n_pred, 200_000), seed=0)

    for bb in ("esmm",) if args.quick else ("esmm", "ple"):
        r = proposal_predict(data, bb, n_pred if bb == "esmm" else n_pred // 4, rounds)
        rep.add(
            f"predict_{bb}",
            r,
            f"1 predict_proba {bb}: current {fmt_rate(r['current_rows_s'])} rows/s, "
            "direct "
            f"slicing {fmt_rate(r['proposed_rows_s'])} rows/s (x{r['speedup']:.2f}); "
            f"max |diff| {r['max_abs_diff']:.1e}",
        )
    r = proposal_loader(BATCH_SIZE * 16, rounds)
    rep.add(
        "loader",
        r,
        f"2 training loader: skorch per-row {fmt_rate(r['current_rows_s'])} rows/s, "
        f"batch sampler {fmt_rate(r['proposed_rows_s'])} rows/s (x{r['speedup']:.0f}); "
        f"identical batches: {r['same_batches']}",
    )
    for bb in ("esmm", "ple"):
        r = proposal_adam(bb, rounds)
        rep.add(
            f"adam_{bb}",
            r,
            f"3 training step {bb}: Adam {fmt_rate(r['current_samples_s'])}/s, "
            f"Adam(fused=True) {fmt_rate(r['proposed_samples_s'])}/s "
            f"(x{r['speedup']:.2f}); max weight diff after 3 steps "
            f"{r['max_param_diff_after_3_steps']:.1e}",
        )
    for bb in ("esmm", "ple"):
        r = dropout_share(bb, rounds)
        rep.add(
            f"dropout_{bb}",
            r,
            f"7 training step {bb}: dropout 0.2 {r['current_s'] * 1e3:.0f} ms, none "
            f"{r['proposed_s'] * 1e3:.0f} ms: dropout is "
            f"{r['dropout_share_of_step']:.0%} of the step",
        )
    for args_g in (
        ("singletask/esmm bottoms", 2, 1024, (512, 256), True),
        ("singletask/esmm towers", 2, 256, (128, 64, 1), False),
        ("mmoe experts", 8, 1024, (512, 256), True),
    ):
        r = proposal_grouped(*args_g, rounds=rounds)
        rep.add(
            f"grouped_{args_g[0]}",
            r,
            f"4 fwd+bwd {r['shape']}: einsum {r['current_s'] * 1e3:.1f} ms, "
            f"group-major baddbmm {r['proposed_s'] * 1e3:.1f} ms "
            f"(x{r['speedup']:.2f}); max |diff| {r['max_abs_diff']:.1e}",
        )
    r = proposal_critic(rounds)
    rep.add(
        "critic_split",
        r,
        "5 critic fwd+bwd (batch 2048, 2 tasks): current "
        f"{r['current_s'] * 1e3:.1f} ms, "
        f"split first layer {r['proposed_s'] * 1e3:.1f} ms (x{r['speedup']:.2f}); "
        f"max |diff| {r['max_abs_diff']:.1e}",
    )
    r = proposal_actor_chunks("ple", 32_768 if not args.quick else 16_384, 2)
    rep.add(
        "actor_chunks_ple",
        r,
        f"8 actor forward over all rows (ple, {r['rows']:,} rows): 65,536-row chunks "
        f"{fmt_rate(r['current_rows_s'])} rows/s, peak RSS "
        f"+{r['current_peak_rss_growth_mib']:.0f} MiB; 2,048-row batches "
        f"{fmt_rate(r['proposed_rows_s'])} rows/s (x{r['speedup']:.2f}), "
        f"+{r['proposed_peak_rss_growth_mib']:.0f} MiB; "
        f"max |diff| {r['max_abs_diff']:.1e}",
    )
    r = proposal_encoder(data, 200_000, rounds)
    rep.add(
        "encoder",
        r,
        "6 FeatureEncoder.transform 200k rows: current "
        f"{fmt_rate(r['current_rows_s'])} "
        f"rows/s, category codes {fmt_rate(r['proposed_rows_s'])} rows/s "
        f"(x{r['speedup']:.1f}); identical: {r['identical']}",
    )
    return rep.done()


if __name__ == "__main__":
    main()
