"""Data-parallel training (``distributed=True``): 2 gloo processes on CPU.

One spawn of two ranks fits every scenario (the start-up of the processes
is most of the cost); the tests compare each rank's predictions with each
other and with a one-process fit of the same seed.

Tolerance: with dropout 0 and no batch normalisation, a rank's update is
the one-process update up to the order of float32 sums (a shard's loss
summed, then the ranks' gradients added), about 1e-7 relative per step.
Measured here after 2-3 epochs: at most 5e-8 between the probabilities of
2 ranks and of 1 process (2.4e-7 between RMTL's loss weights), and 0 between
the ranks. ``ATOL = 1e-5`` is 200 times that and below what a wrong
normaliser does: averaging the shards' mean losses instead (what
``DistributedDataParallel`` does with each rank's own mean loss; the
library scales each rank's share of the whole batch's loss by the number of
ranks before DDP averages) moved the probabilities by 5e-5 with
unequal shards of 23 and 22 rows and by 4e-3 with sample weights and
missing labels, failing these tests. float16 has its own, looser tolerance (``ATOL16``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import SMALL, make_session_data
from skorch.callbacks import Callback

from sklearn_rmtl import MTLClassifier, ParquetSource, RMTLClassifier, SessionCritic
from sklearn_rmtl._distributed import DataParallel

ATOL = 1e-5
# float16 rounds every product to 11 bits, so the order of the sums shows
# more: measured 1.5e-5 between 2 ranks and 1 process after 2 epochs.
ATOL16 = 2e-4
WORLD = 2
PARAMS = {**SMALL, "dropout": 0.0}


def _data():
    X, Y, sessions, times = make_session_data(n_sessions=80)
    X, Y = X.iloc[:300], Y.iloc[:300].astype(float)
    sessions, times = sessions[:300], times[:300]
    rng = np.random.default_rng(1)
    weight = rng.uniform(0.2, 3.0, len(X))
    weight[rng.random(len(X)) < 0.1] = 0.0
    Y_missing = Y.copy()
    Y_missing.loc[rng.random(len(X)) < 0.3, "purchase"] = np.nan
    return X, Y, sessions, times, weight, Y_missing


class RowsSeen(Callback):
    """Record the ``row`` feature of every training batch, per epoch."""

    def __init__(self) -> None:
        self.epochs: list[list[np.ndarray]] = []

    def on_epoch_begin(self, net, **kwargs) -> None:
        self.epochs.append([])

    def on_batch_begin(self, net, batch=None, training=False, **kwargs) -> None:
        if training:
            self.epochs[-1].append(batch[0]["x_num"][:, -1].numpy().copy())


class SummedBy(Callback):
    """Record, per training step, whether DDP sums its gradients."""

    def __init__(self) -> None:
        self.ddp: list[bool] = []

    def on_batch_begin(self, net, training=False, **kwargs) -> None:
        if training and net.data_parallel is not None:
            sync = net.gradient_sync  # made by the first step
            self.ddp.append(sync is not None and sync.uses_ddp)


def _scenarios(distributed: bool) -> dict[str, np.ndarray]:
    """Every fit of the tests, as predictions (and a few histories)."""
    X, Y, sessions, times, weight, Y_missing = _data()
    out = {}

    def fixed_length(backbone, backbone_params=PARAMS, **params):
        """An MTLClassifier of a fixed number of epochs (no early stopping)."""
        settings = {"max_epochs": 2, "batch_size": 45, "random_state": 0, **params}
        return MTLClassifier(
            backbone=backbone,
            backbone_params=backbone_params,
            early_stopping=False,
            distributed=distributed,
            **settings,
        )

    # Batches of 45 on 270 training rows split 23/22 rows between the ranks.
    summed_by = SummedBy()
    mtl = MTLClassifier(
        backbone="mmoe",
        backbone_params=PARAMS,
        max_epochs=3,
        batch_size=45,
        validation_interval=0.5,
        random_state=0,
        distributed=distributed,
        callbacks=[summed_by],
    ).fit(X, Y)
    out["mtl"] = mtl.predict_proba(X)
    out["mtl_ddp_steps"] = np.array(summed_by.ddp)
    valid = [r["valid_loss"] for r in mtl.history_["pretrain"]]
    out["mtl_valid_loss"] = np.array(valid)
    # Sample weights and missing labels: the shards' weights differ; 300 rows
    # in batches of 23 leave a last batch of 1 row, taken by both ranks.
    weighted = fixed_length("sharedbottom", max_epochs=3, batch_size=23).fit(
        X, Y_missing, sample_weight=weight
    )
    out["weighted"] = weighted.predict_proba(X)
    # PEPNet's gates read named fields of the state.
    pepnet = fixed_length("pepnet", {**PARAMS, "gate_fields": ["item"]}).fit(
        X, Y_missing, sample_weight=weight
    )
    out["pepnet"] = pepnet.predict_proba(X)
    # STEM: a table per task, other tasks' experts with their gradient stopped.
    experts = {"n_shared_experts": 1, "n_specific_experts": 1}
    stem = fixed_length("stem", {**PARAMS, **experts}).fit(
        X, Y_missing, sample_weight=weight
    )
    out["stem"] = stem.predict_proba(X)
    # ESCM2-DR: its imputation tower is reached by the extra loss only, not
    # by the module's output (DDP sums its gradients all the same).
    escm2 = fixed_length("esmm", {**PARAMS, "counterfactual": "dr"}).fit(
        X, Y_missing, sample_weight=weight
    )
    out["escm2"] = escm2.predict_proba(X)
    # Small critics, 2 epochs of each phase, batches of 45.
    rmtl_params = {
        "backbone_params": PARAMS,
        "max_epochs": 2,
        "refit_max_epochs": 2,
        "critic": SessionCritic(hidden_dims=(16,), max_epochs=2),
        "batch_size": 45,
        "random_state": 0,
        "distributed": distributed,
    }
    rmtl = RMTLClassifier(backbone="esmm", **rmtl_params).fit(
        X, Y_missing, session_ids=sessions, timestamps=times, sample_weight=weight
    )
    out["rmtl"] = rmtl.predict_proba(X)
    out["rmtl_td_loss"] = np.array([r["td_loss"] for r in rmtl.history_["critic"]])
    out["rmtl_weights"] = rmtl.loss_weights(X, Y)
    # The actor's own TD3+BC steps (the paper's DDPG baseline, no refit).
    ddpg = RMTLClassifier(
        backbone="sharedbottom",
        backbone_params=PARAMS,
        max_epochs=1,
        refit_max_epochs=0,
        critic=SessionCritic(hidden_dims=(16,), max_epochs=2),
        actor_update=True,
        batch_size=45,
        random_state=0,
        distributed=distributed,
    ).fit(X, Y, session_ids=sessions, timestamps=times)
    out["ddpg"] = ddpg.predict_proba(X)
    # Early stopping's choice replayed on all rows: every rank replays the
    # same number of steps (rank 0's validation decided it).
    retrained = RMTLClassifier(
        backbone="mmoe", validation_interval=0.5, retrain_on_all=True, **rmtl_params
    ).fit(X, Y, session_ids=sessions, timestamps=times)
    out["retrain"] = retrained.predict_proba(X)
    out["retrain_steps"] = np.array(
        [retrained.history_[name][-1]["best_step"] for name in ("pretrain", "refit")]
    )
    # A Parquet source in blocks of whole sessions: every rank reads every
    # block and keeps its shard of each batch, as with arrays.
    frame = X.assign(click=Y["click"], purchase=Y["purchase"], s=sessions, t=times)
    path = os.path.join(tempfile.mkdtemp(), "rows.parquet")
    frame.sort_values(["s", "t"], kind="stable").to_parquet(path, row_group_size=100)
    source = ParquetSource(
        path,
        target=["click", "purchase"],
        session="s",
        time="t",
        features=list(X.columns),
        block_rows=100,
    )
    streamed = RMTLClassifier(backbone="mmoe", **rmtl_params).fit(source)
    out["parquet"] = streamed.predict_proba(X)
    # float16 with loss scaling: the ranks' gradients are summed while still
    # scaled, so an overflow on either rank makes both skip the step.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated on CPU
        half = fixed_length("sharedbottom", precision="float16").fit(X, Y)
    out["float16"] = half.predict_proba(X)
    if distributed:
        # Dropout (0.2): each rank's masks are its own, and the batch order
        # stays the same on both, so the shards still partition the rows.
        seen = RowsSeen()
        fixed_length("sharedbottom", SMALL, max_epochs=3, callbacks=[seen]).fit(
            X.assign(row=np.arange(len(X), dtype=float)), Y
        )
        for epoch, batches in enumerate(seen.epochs):
            out[f"rows_epoch{epoch}"] = np.concatenate(batches)
        # Per-rank BatchNorm statistics: not a one-process fit, but every
        # rank still ends with rank 0's weights and buffers.
        bn = MTLClassifier(
            backbone="sharedbottom",
            backbone_params={**PARAMS, "batch_norm": True},
            max_epochs=2,
            batch_size=45,
            random_state=0,
            distributed=True,
        ).fit(X, Y)
        out["batch_norm"] = bn.predict_proba(X)
        # A rank with other data: every rank raises, none waits forever.
        rank = dist.get_rank()
        try:
            MTLClassifier(backbone_params=PARAMS, distributed=True).fit(
                X.iloc[rank:], Y.iloc[rank:]
            )
        except ValueError as exc:
            out["mismatch_error"] = np.array(str(exc))
    return out


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        np.savez(os.path.join(folder, f"rank{rank}.npz"), **_scenarios(True))
    finally:
        dist.destroy_process_group()
    # The results are saved: skip the interpreter's finalisation, where
    # gloo's threads can still abort a finished rank (SIGABRT, "terminate
    # called without an active exception", seen once in CI).
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _worker, args=(_free_port(), str(folder)), nprocs=WORLD, start_method="spawn"
    )
    return [dict(np.load(folder / f"rank{r}.npz")) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    return _scenarios(False)


#: The scenarios whose distributed fit equals one process's to ATOL (float16
#: has a looser test of its own; batch normalisation's per-rank statistics
#: differ from one process's by design).
AS_ONE = [
    "mtl",
    "weighted",
    "pepnet",
    "stem",
    "escm2",
    "rmtl",
    "ddpg",
    "retrain",
    "parquet",
]


@pytest.mark.parametrize("name", [*AS_ONE, "float16", "batch_norm"])
def test_every_rank_ends_with_the_same_estimator(ranks, name):
    np.testing.assert_array_equal(ranks[0][name], ranks[1][name])


@pytest.mark.parametrize("name", AS_ONE)
def test_two_processes_predict_as_one(ranks, single, name):
    np.testing.assert_allclose(ranks[0][name], single[name], rtol=0, atol=ATOL)


def test_ddp_sums_the_gradients_after_the_first_step(ranks, single):
    # The first step, summed by hand, shows that every parameter gets a
    # gradient on every rank; DistributedDataParallel sums the others.
    for r in ranks:
        steps = r["mtl_ddp_steps"]
        assert len(steps) >= 6  # at least an epoch of 6 batches
        assert not steps[0] and steps[1:].all()
    assert len(single["mtl_ddp_steps"]) == 0


def test_retrain_on_all_replays_the_one_process_steps(ranks, single):
    np.testing.assert_array_equal(ranks[0]["retrain_steps"], single["retrain_steps"])
    assert ranks[0]["retrain_steps"].min() > 0


def test_float16_two_processes_predict_as_one(ranks, single):
    np.testing.assert_allclose(
        ranks[0]["float16"], single["float16"], rtol=0, atol=ATOL16
    )


def test_early_stopping_and_critic_histories_match_one_process(ranks, single):
    for key in ("mtl_valid_loss", "rmtl_td_loss"):
        np.testing.assert_allclose(ranks[0][key], single[key], rtol=1e-5)
    np.testing.assert_allclose(
        ranks[0]["rmtl_weights"], single["rmtl_weights"], rtol=0, atol=ATOL
    )


def test_with_dropout_each_epoch_the_ranks_share_out_every_row_once(ranks):
    for epoch in range(3):
        rows = np.concatenate([r[f"rows_epoch{epoch}"] for r in ranks])
        assert len(rows) == 300
        assert len(np.unique(rows)) == 300


def test_ranks_with_other_data_all_raise(ranks):
    for r in ranks:
        assert "same data on every process" in str(r["mismatch_error"])


def test_shards_split_each_batch_and_a_short_batch_is_shared():
    index = torch.arange(45)
    parts = [DataParallel(r, 2).shard(index) for r in range(2)]
    assert [len(p) for p in parts] == [23, 22]
    torch.testing.assert_close(torch.cat(parts), index)
    one = torch.tensor([7])
    assert [DataParallel(r, 2).shard(one).tolist() for r in range(2)] == [[7], [7]]


def test_without_a_process_group_the_error_says_how_to_launch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    X, Y, *_ = _data()
    est = MTLClassifier(backbone_params=PARAMS, max_epochs=1, distributed=True)
    with pytest.raises(ValueError, match="torchrun --nproc-per-node"):
        est.fit(X, Y)
    assert not hasattr(est, "net_")


@pytest.mark.parametrize("balancing", ["gradnorm", "pcgrad", "uncertainty", "dwa"])
def test_task_balancers_other_than_fixed_are_refused(balancing):
    X, Y, *_ = _data()
    est = MTLClassifier(
        backbone_params=PARAMS,
        max_epochs=1,
        task_balancing=balancing,
        distributed=True,
    )
    with pytest.raises(ValueError, match="not supported with distributed=True"):
        est.fit(X, Y)


_TORCHRUN_SCRIPT = """
import atexit, json, os, sys
import numpy as np
import torch.distributed as dist
from conftest import SMALL, make_mtl_data
from sklearn_rmtl import MTLClassifier
# Registered before fit, so it runs after the estimator's exit handler.
atexit.register(lambda: open(f"{sys.argv[1]}/exit{os.environ['RANK']}.txt", "w")
                .write(str(dist.is_initialized())))
X, Y = make_mtl_data(300)
clf = MTLClassifier(backbone_params=SMALL, max_epochs=1, batch_size=64,
                    device="auto", distributed=True).fit(X, Y)
# One file per rank: the ranks' prints to a shared stdout can interleave.
with open(f"{sys.argv[1]}/rank{dist.get_rank()}.json", "w") as out:
    json.dump({"rank": dist.get_rank(), "backend": dist.get_backend(),
               "device": clf.device_, "proba": clf.predict_proba(X)[:5].tolist()}, out)
"""


def test_torchrun_launch_initialises_the_process_group(tmp_path):
    # The documented launch: no init_process_group in the script, and
    # random_state=None (rank 0's draw seeds both processes).
    script = tmp_path / "train.py"
    script.write_text(_TORCHRUN_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([root, os.path.join(root, "tests")]),
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # The ranks' own errors come first, torchrun's summary of them last.
    assert run.returncode == 0, run.stderr[:3000] + "\n[...]\n" + run.stderr[-1000:]
    lines = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The process group the estimator made is gone before Python shuts down
    # (a live gloo group can abort the process at interpreter exit).
    assert [(tmp_path / f"exit{r}.txt").read_text() for r in (0, 1)] == ["False"] * 2
    assert sorted(r["rank"] for r in lines) == [0, 1]
    assert {r["backend"] for r in lines} == {"gloo"}
    assert {r["device"] for r in lines} == {"cpu"}
    assert lines[0]["proba"] == lines[1]["proba"]
