"""The package's optimisations, each timed against what it replaced.

Each entry runs the package's code path and a naive version (the package's
earlier code, or the textbook formulation) side by side on identical inputs
(alternating, median of rounds), and checks that the results agree:

1. ``predict``: ``MTLClassifier.predict_proba`` (whole-batch slicing of
   tensors) vs the same network fed by skorch's default per-row ``Dataset``
   and ``DataLoader`` collation.
2. ``adam``: a training step with ``torch.optim.Adam(fused=True)`` (the
   package) vs the default multi-tensor Adam.
3. ``relu_dropout``: forward+backward of ``ReLUDropout`` (one byte mask for
   the activation and the dropout) vs ReLU followed by a separate dropout.
4. ``critic``: a training step of the package's critic (state half of the
   first layer once per row, action half rank-one) vs the paper's
   formulation (the MLP over ``[state, action_k]`` for every task).
5. ``actor_chunks``: the actor's pass over all rows in the package's
   2,048-row batches vs 65,536-row chunks: speed and peak memory.
6. ``grouped`` (considered, not adopted): ``GroupedLinear``'s einsum vs a
   group-major ``baddbmm`` layout for grouped towers and experts.
7. ``dropout``: a training step with the paper's dropout vs none (what
   dropout costs; not a proposal to drop it).

The training loader and the feature encoder are compared with their naive
versions in ``bench_pretrain.py``, the MDP and replay construction in
``bench_mdp.py``.

Run: ``python benchmarks/bench_changes.py [--quick]``.
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
    make_actor,
    make_data,
    median,
    parse_args,
    peak_rss_growth,
    repeat,
)
from scipy.special import expit
from skorch.dataset import Dataset
from torch.utils.data import DataLoader

from sklearn_rmtl import MTLClassifier
from sklearn_rmtl._critic import Critic
from sklearn_rmtl._fit_data import encode_inputs
from sklearn_rmtl._torch_module import actor_proba
from sklearn_rmtl.backbones._layers import GroupedLinear, GroupedMLP, ReLUDropout


def side_by_side(
    previous: Any, package: Any, rounds: int, inner: int = 1
) -> dict[str, float]:
    """Alternate the two callables; median seconds of each and the speed-up."""
    previous()
    package()
    tp, tn = [], []
    for _ in range(rounds):
        tp.append(median(repeat(previous, inner)))
        tn.append(median(repeat(package, inner)))
    p, n = median(tp), median(tn)
    return {"previous_s": p, "package_s": n, "speedup": p / n}


# ------------------------------------------------------------- 1. predict
def skorch_default_predict(clf: MTLClassifier, X: pd.DataFrame) -> np.ndarray:
    """predict_proba through skorch's default Dataset/DataLoader per row."""
    module = clf.net_.module_.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), 65_536):
            part = clf.encoder_._transform_parts(X.iloc[start : start + 65_536])
            loader = DataLoader(Dataset(encode_inputs(part)), batch_size=BATCH_SIZE)
            for xb, _ in loader:
                out.append(module(xb["x_cat"], xb["x_num"]).numpy())
    return expit(np.concatenate(out).astype(np.float64))


def change_predict(data: Any, backbone: str, n: int, rounds: int) -> dict[str, Any]:
    clf = MTLClassifier(
        backbone=backbone, max_epochs=1, early_stopping=False, random_state=0
    ).fit(data.X.iloc[: 2 * BATCH_SIZE], data.Y.iloc[: 2 * BATCH_SIZE])
    X = data.X.iloc[:n]
    res = side_by_side(
        lambda: skorch_default_predict(clf, X), lambda: clf.predict_proba(X), rounds
    )
    res["max_abs_diff"] = float(
        np.abs(clf.predict_proba(X) - skorch_default_predict(clf, X)).max()
    )
    res["previous_rows_s"] = n / res["previous_s"]
    res["package_rows_s"] = n / res["package_s"]
    return res


# ---------------------------------------------------------------- 2. adam
def change_adam(backbone: str, rounds: int) -> dict[str, Any]:
    plain = PureActorStep(backbone)
    fused = PureActorStep(backbone, fused=True)
    fused.net.load_state_dict(plain.net.state_dict())
    res = side_by_side(plain, fused, rounds, inner=2)
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
    res["previous_samples_s"] = BATCH_SIZE / res["previous_s"]
    res["package_samples_s"] = BATCH_SIZE / res["package_s"]
    return res


# -------------------------------------------------------- 3. relu+dropout
def separate_relu_dropout(
    x: torch.Tensor, drop: ReLUDropout, generator: torch.Generator
) -> torch.Tensor:
    """The package's earlier layers: ReLU, then dropout with its own mask."""
    n = x.numel()
    words = torch.randint(
        -(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64, generator=generator
    )
    noise = words.view(torch.uint8)[:n].view(x.shape)
    keep = (noise >= drop._threshold).to(x.dtype).mul_(drop._scale)
    return torch.relu(x) * keep


def change_relu_dropout(shape: tuple[int, ...], rounds: int) -> dict[str, Any]:
    """ReLUDropout vs ReLU then dropout, same random draws (fwd + bwd)."""
    x0 = torch.randn(*shape)
    grad = torch.randn(*shape)
    drop = ReLUDropout(0.2)

    def separate() -> torch.Tensor:
        x = x0.clone().requires_grad_(True)
        g = torch.Generator().manual_seed(0)
        separate_relu_dropout(x, drop, g).backward(grad)
        return x.grad

    def fused() -> torch.Tensor:
        drop.generator = torch.Generator().manual_seed(0)
        x = x0.clone().requires_grad_(True)
        drop(x).backward(grad)
        return x.grad

    res = side_by_side(separate, fused, rounds, inner=3)
    res["identical_grad"] = bool(torch.equal(separate(), fused()))
    res["shape"] = "x".join(map(str, shape))
    return res


# -------------------------------------------------------------- 4. critic
def concatenating_critic(
    c: Critic, x_cat: torch.Tensor, x_num: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """The shared critic as the paper writes it: MLP over [state, action_k]."""
    batch, k = actions.shape
    act = c.action_layer(actions.unsqueeze(-1))  # (b, K, d)
    state = c.embeddings[0](x_cat, x_num)  # (b, S)
    pairs = torch.cat([state.unsqueeze(1).expand(-1, k, -1), act], dim=-1)
    h = torch.relu(c.input_layer(pairs.reshape(batch * k, -1)))  # (b*K, 1, h)
    hidden = c.mlp(h).view(batch, k, -1)
    assert c.head is not None
    return -torch.relu(c.head(hidden).squeeze(-1))


def change_critic(rounds: int) -> dict[str, Any]:
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
        lambda: step(lambda: concatenating_critic(c, xc, xn, a)),
        lambda: step(lambda: c(xc, xn, a)),
        rounds,
        inner=3,
    )
    with torch.no_grad():
        res["max_abs_diff"] = float(
            (c(xc, xn, a) - concatenating_critic(c, xc, xn, a)).abs().max()
        )
    return res


# ------------------------------------------------- 5. actor forward chunks
def actor_proba_chunks(
    actor: torch.nn.Module, xc: torch.Tensor, xn: torch.Tensor, chunk: int = 65_536
) -> torch.Tensor:
    """The actor's pass over all rows, ``chunk`` rows per forward."""
    actor.eval()
    with torch.no_grad():
        return torch.cat(
            [
                torch.sigmoid(actor(xc[i : i + chunk], xn[i : i + chunk]))
                for i in range(0, len(xc), chunk)
            ]
        )


def change_actor_chunks(backbone: str, n: int, rounds: int) -> dict[str, Any]:
    actor = make_actor(backbone).eval()
    xc, xn, _ = encoded_tensors(n)
    # First-call allocations out of the way.
    actor_proba(actor, xc[:256], xn[:256])
    actor_proba_chunks(actor, xc[:256], xn[:256])
    with peak_rss_growth() as small:
        actor_proba(actor, xc, xn)
    with peak_rss_growth() as large:
        actor_proba_chunks(actor, xc, xn)
    res = side_by_side(
        lambda: actor_proba_chunks(actor, xc, xn),
        lambda: actor_proba(actor, xc, xn),
        rounds,
    )
    res["max_abs_diff"] = float(
        (actor_proba(actor, xc, xn) - actor_proba_chunks(actor, xc, xn)).abs().max()
    )
    res["previous_rows_s"] = n / res["previous_s"]
    res["package_rows_s"] = n / res["package_s"]
    res["rows"] = n
    res["previous_peak_rss_growth_mib"] = large["growth_mib"]
    res["package_peak_rss_growth_mib"] = small["growth_mib"]
    return res


# ------------------------------------------------------------- 6. grouped
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


def considered_grouped(
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

    def run(fwd: Any) -> None:
        out = fwd()
        for p in params:
            p.grad = None
        out.sum().backward()

    # "previous" is the package's layout here, "package" the alternative.
    res = side_by_side(
        lambda: run(lambda: head(mlp(x))),
        lambda: run(lambda: _group_major_mlp(layers, x)),
        rounds,
        inner=3,
    )
    with torch.no_grad():
        res["max_abs_diff"] = float(
            (head(mlp(x0)) - _group_major_mlp(layers, x0)).abs().max()
        )
    res["shape"] = f"{name}: {n_groups} groups, {in_f}->{'-'.join(map(str, dims))}"
    return res


# ------------------------------------------------------------- 7. dropout
def dropout_share(backbone: str, rounds: int) -> dict[str, Any]:
    """Training step with the paper's dropout vs none (the cost of dropout)."""
    with_d = PureActorStep(backbone, fused=True)
    without = PureActorStep(backbone, dropout=0.0, fused=True)
    without.net.load_state_dict(with_d.net.state_dict())
    res = side_by_side(with_d, without, rounds, inner=2)
    res["dropout_share_of_step"] = 1 - res["package_s"] / res["previous_s"]
    return res


def main() -> dict[str, Any]:
    args = parse_args(__doc__)
    rep = Report("bench_changes", args)
    rounds = args.repeats or (2 if args.quick else 3)
    n_pred = BATCH_SIZE * (4 if args.quick else 16)
    data = make_data(n_pred, seed=0)

    for bb in ("esmm",) if args.quick else ("esmm", "ple"):
        r = change_predict(data, bb, n_pred if bb == "esmm" else n_pred // 4, rounds)
        rep.add(
            f"predict_{bb}",
            r,
            f"1 predict_proba {bb}: skorch per-row loading "
            f"{fmt_rate(r['previous_rows_s'])} rows/s, package "
            f"{fmt_rate(r['package_rows_s'])} rows/s (x{r['speedup']:.2f}); "
            f"max |diff| {r['max_abs_diff']:.1e}",
        )
    for bb in ("esmm", "ple"):
        r = change_adam(bb, rounds)
        rep.add(
            f"adam_{bb}",
            r,
            f"2 training step {bb}: Adam {fmt_rate(r['previous_samples_s'])}/s, "
            f"Adam(fused=True) {fmt_rate(r['package_samples_s'])}/s "
            f"(x{r['speedup']:.2f}); max weight diff after 3 steps "
            f"{r['max_param_diff_after_3_steps']:.1e}",
        )
    for shape in ((BATCH_SIZE, 8, 512), (BATCH_SIZE, 512)):
        r = change_relu_dropout(shape, rounds)
        rep.add(
            f"relu_dropout_{r['shape']}",
            r,
            f"3 ReLU + dropout fwd+bwd on {r['shape']}: separate "
            f"{r['previous_s'] * 1e3:.1f} ms, one mask {r['package_s'] * 1e3:.1f} ms "
            f"(x{r['speedup']:.2f}); identical gradients: {r['identical_grad']}",
        )
    r = change_critic(rounds)
    rep.add(
        "critic_split",
        r,
        "4 critic fwd+bwd (batch 2048, 2 tasks): [state, action_k] per task "
        f"{r['previous_s'] * 1e3:.1f} ms, state half once "
        f"{r['package_s'] * 1e3:.1f} ms (x{r['speedup']:.2f}); "
        f"max |diff| {r['max_abs_diff']:.1e}",
    )
    r = change_actor_chunks("ple", 16_384 if args.quick else 32_768, 2)
    rep.add(
        "actor_chunks_ple",
        r,
        f"5 actor pass over all rows (ple, {r['rows']:,} rows): 65,536-row chunks "
        f"{fmt_rate(r['previous_rows_s'])} rows/s, peak RSS "
        f"+{r['previous_peak_rss_growth_mib']:.0f} MiB; package 2,048-row batches "
        f"{fmt_rate(r['package_rows_s'])} rows/s (x{r['speedup']:.2f}), "
        f"+{r['package_peak_rss_growth_mib']:.0f} MiB; "
        f"max |diff| {r['max_abs_diff']:.1e}",
    )
    for args_g in (
        ("singletask/esmm bottoms", 2, 1024, (512, 256), True),
        ("mmoe experts", 8, 1024, (512, 256), True),
    ):
        r = considered_grouped(*args_g, rounds=rounds)
        rep.add(
            f"grouped_{args_g[0]}",
            r,
            f"6 (considered) fwd+bwd {r['shape']}: einsum (package) "
            f"{r['previous_s'] * 1e3:.1f} ms, group-major baddbmm "
            f"{r['package_s'] * 1e3:.1f} ms (x{r['speedup']:.2f}); "
            f"max |diff| {r['max_abs_diff']:.1e}",
        )
    for bb in ("esmm", "ple"):
        r = dropout_share(bb, rounds)
        rep.add(
            f"dropout_{bb}",
            r,
            f"7 training step {bb}: dropout 0.2 {r['previous_s'] * 1e3:.0f} ms, "
            f"none {r['package_s'] * 1e3:.0f} ms: dropout is "
            f"{r['dropout_share_of_step']:.0%} of the step",
        )
    return rep.done()


if __name__ == "__main__":
    main()
