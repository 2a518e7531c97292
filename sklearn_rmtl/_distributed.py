"""Data-parallel training over the processes of ``torch.distributed``.

With ``distributed=True`` every process (rank) calls ``fit`` on the same full
data, with the same seed. Each training step draws the same global batch on
every rank (the same shuffled order), and each rank computes the loss of its
shard of that batch; the gradients are then summed over the ranks, so that
every rank applies the same update, the update of the whole batch.

The sum is the whole batch's gradient because every rank divides its shard's
loss by the normaliser of the *whole* batch: the per-task sum of the loss
mask (sample weights, 0 for missing labels) or the row count. A plain average
of per-rank mean losses (what ``DistributedDataParallel`` does) is that
gradient only when every shard holds the same total weight, which sample
weights, missing labels and a short last batch all break.

Decisions that end or steer training (the early-stopping score, the critics'
convergence test) are taken from rank 0 and broadcast, and every phase ends
by copying rank 0's weights and buffers to the others, so that all ranks
stop together and hold the same fitted estimator.

The gradients are summed by ``DistributedDataParallel`` (DDP), which
buckets them and all-reduces each bucket while the backward pass still runs
(:class:`GradientSync`). DDP averages the ranks' gradients, so each rank's
loss share (normalised by the whole batch, as above) is multiplied by the
number of ranks before ``backward``: the average is then the sum above, the
whole batch's gradient. The networks themselves are never replaced by the
wrapper: the skorch net, the critics and the actor keep their modules (and
their ``state_dict`` keys), and only a training step's forward pass goes
through it. The first step of each phase is summed by hand
(:meth:`DataParallel.reduce_gradients`, one flat all-reduce after the
backward pass); it shows whether every parameter gets a gradient on every
rank, which DDP (without its costly search for unused parameters) needs,
and a phase where one does not keeps the hand-written sum.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

#: The environment variables ``torchrun`` sets for every process.
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

#: The ``task_balancing`` methods that run under data parallelism: "fixed"
#: is linear in the per-task losses, so shards' gradients add up; the others
#: combine whole-batch per-task gradients (gradnorm, pcgrad), or learn
#: weights of their own (uncertainty, dwa's loss history) per rank.
DISTRIBUTED_BALANCINGS = frozenset({"fixed"})

#: Whether :class:`GradientSync` hands the steps after the first to
#: ``DistributedDataParallel``; False sums every step by hand (what
#: ``benchmarks/bench_distributed.py --compare-ddp`` times against DDP).
USE_DDP = True


def _launch_hint() -> str:
    return (
        "Launch the script with `torchrun --nproc-per-node N script.py` (the "
        "estimator then initialises the process group from torchrun's "
        "environment), or call torch.distributed.init_process_group() before "
        "fit; or set distributed=False."
    )


def ensure_process_group(device: str) -> None:
    """Initialise ``torch.distributed`` from torchrun's environment if needed.

    The backend is NCCL for a CUDA ``device``, gloo otherwise. Raises a
    ``ValueError`` saying how to launch when there is neither a process
    group nor the environment of one.
    """
    if not dist.is_available():
        raise ValueError(
            "distributed=True needs torch.distributed, which this torch build "
            f"(torch {torch.__version__}) lacks; set distributed=False."
        )
    if dist.is_initialized():
        return
    missing = [name for name in _LAUNCH_ENV if name not in os.environ]
    if missing:
        raise ValueError(
            "distributed=True but torch.distributed has no process group, and "
            f"the environment lacks {', '.join(missing)}. {_launch_hint()}"
        )
    auto_cuda = device == "auto" and torch.cuda.is_available()
    cuda = auto_cuda or device.startswith("cuda")
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    # A group still alive at interpreter shutdown can abort the process
    # (gloo's worker threads free tensors after Python is torn down), so the
    # group this function made is destroyed while Python still runs, unless
    # the script has destroyed it first.
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str) -> str:
    """``device`` for this rank: "cuda" (or "auto" with a GPU) is its own GPU.

    Each process of a node takes ``cuda:LOCAL_RANK``; a device with an
    explicit index (``"cuda:1"``) and "cpu" are kept.
    """
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def agreed_seed(random_state: Any) -> int:
    """Rank 0's seed from ``random_state``, as one int on every rank.

    Ranks must shuffle, split and initialise alike. Every rank takes part in
    the broadcast whatever its ``random_state`` (an int on one rank and None
    on another must not leave them in different collectives).
    """
    from sklearn.utils import check_random_state

    if isinstance(random_state, int | np.integer) and not isinstance(
        random_state, bool
    ):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return int(_broadcast(torch.tensor([seed], dtype=torch.int64)).item())


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo reads CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _broadcast(tensor: Tensor) -> Tensor:
    """``tensor`` of rank 0, on every rank (a copy on the original device)."""
    t = tensor.detach().to(_comm_device()).clone()
    dist.broadcast(t, src=0)
    return t.to(tensor.device)


def check_same_data(n_samples: int, n_tasks: int, n_positive: int) -> None:
    """Raise on every rank unless all ranks fit data of the same summary.

    The data contract (each rank passes the same full data) cannot be
    verified cheaply row by row; the shape and the number of positive
    labels catch a rank that loaded another file or a shard of its own.
    """
    device = _comm_device()
    mine = torch.tensor([n_samples, n_tasks, n_positive], device=device)
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    rows = {tuple(int(v) for v in g.cpu()) for g in gathered}
    if len(rows) > 1:
        raise ValueError(
            "distributed=True needs the same data on every process, got "
            f"(n_samples, n_tasks, positive labels) = {sorted(rows)} across "
            f"the {dist.get_world_size()} processes. Pass every process the "
            "full data; the estimator shards each batch."
        )


@dataclass(frozen=True)
class DataParallel:
    """The collective operations of one data-parallel fit.

    Parameters
    ----------
    rank : int
        This process's rank.
    world_size : int
        Number of processes.
    """

    rank: int
    world_size: int

    @classmethod
    def current(cls, enabled: bool) -> DataParallel | None:
        """The process group's ranks when ``enabled``, else None."""
        if not enabled:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, index: Tensor) -> Tensor:
        """This rank's rows of a global batch ``index``.

        Contiguous, near-equal parts; a batch with fewer rows than ranks is
        taken whole by every rank (each then counts it ``1 / world_size``
        times through :meth:`total`), so that no rank steps on no rows.
        """
        if len(index) < self.world_size:
            return index
        return torch.tensor_split(index, self.world_size)[self.rank]

    def own_generator(self, seed: int) -> torch.Generator:
        """A generator of this rank's own draws (dropout masks), from ``seed``.

        The fit's generator also draws the batch order, which must stay the
        same on every rank; masks drawn from it for shards of unequal size
        would make the ranks' orders diverge after the first epoch (and
        equal shards would get equal masks).
        """
        state = np.random.SeedSequence([seed, self.rank]).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))

    def total(self, local: Tensor) -> Tensor:
        """The sum of ``local`` over the ranks (detached, same device)."""
        t = local.detach().to(_comm_device()).clone()
        dist.all_reduce(t)
        return t.to(local.device)

    def reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Sum the ``.grad`` of ``params`` over the ranks, in place.

        One flat all-reduce per step; parameters without a gradient (unused
        in this forward pass on every rank alike) are skipped.
        """
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = self.total(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def agree(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (a decision all must take alike)."""
        return float(_broadcast(torch.tensor([value], dtype=torch.float64)).item())

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every rank.

        Ranks apply the same updates and end equal up to the reduction's
        rounding; buffers such as BatchNorm's running statistics are
        per-rank (each rank's shard), so rank 0's are kept.
        """
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                t.copy_(_broadcast(t))


def _ddp_options() -> dict[str, Any]:
    """DDP's keywords: no buffer broadcasts, no start-up synchronisation.

    Buffers (BatchNorm's running statistics) stay per rank as in the steps
    summed by hand, and rank 0's are copied at the end of the phase
    (:meth:`DataParallel.broadcast_module`); the parameters are already
    equal on every rank when the wrapper is made (after the first step, whose
    gradients every rank summed alike). torch 2.13 renamed
    ``broadcast_buffers`` to ``forward_sync_buffers``.
    """
    accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    options: dict[str, Any] = {"find_unused_parameters": False}
    if "forward_sync_buffers" in accepted:
        options["forward_sync_buffers"] = False
    else:  # torch < 2.13
        options["broadcast_buffers"] = False
    if "init_sync" in accepted:
        options["init_sync"] = False
    return options


class GradientSync:
    """The gradients of one module's training steps, summed over the ranks.

    A training step calls :attr:`model` for its forward pass, multiplies
    this rank's loss share by :attr:`loss_scale`, runs ``backward`` in
    :meth:`backward_context` and calls :meth:`after_backward`; every rank
    then holds the whole batch's gradient (:meth:`backward` does the last
    three for a plain loss).

    The first step's gradients are summed by hand
    (:meth:`DataParallel.reduce_gradients`, after the backward pass). If
    every parameter of ``params`` belongs to ``module`` and got a gradient
    on every rank, later steps go through ``DistributedDataParallel``
    (``module`` wrapped, the wrapper held here): it sums bucket by bucket
    while the backward pass runs, overlapping the communication with the
    computation. DDP averages the ranks' gradients, hence
    :attr:`loss_scale` = ``world_size``. A parameter without a gradient
    (unused by the forward pass) would leave DDP's reduction unfinished, so
    such a module keeps the hand-written sum, which skips it; so does a
    step whose gradients are not those of one ``backward`` call
    (``ddp=False``).

    Parameters
    ----------
    data_parallel : DataParallel
        The fit's ranks.
    module : nn.Module
        The network whose parameters a step trains; never replaced.
    params : sequence of Parameter, default=None
        The parameters whose gradients are summed; None: those of
        ``module``.
    ddp : bool, default=True
        Whether DDP may take over after the first step (and
        :data:`USE_DDP`): False where the
        step computes gradients otherwise than by one ``backward`` of a loss
        built from :attr:`model`'s output (``torch.autograd.grad``, several
        backward passes), which DDP's hooks do not follow.
    """

    def __init__(
        self,
        data_parallel: DataParallel,
        module: nn.Module,
        params: Sequence[nn.Parameter] | None = None,
        *,
        ddp: bool = True,
    ) -> None:
        self.data_parallel = data_parallel
        self.module = module
        self.params = list(module.parameters()) if params is None else list(params)
        self._ddp: DistributedDataParallel | None = None
        # The first step decides whether DDP serves.
        self._decide = ddp and USE_DDP

    @property
    def uses_ddp(self) -> bool:
        """Whether the steps go through ``DistributedDataParallel`` now."""
        return self._ddp is not None

    @property
    def model(self) -> nn.Module:
        """What a training step's forward pass calls: DDP's wrapper or the module."""
        return self.module if self._ddp is None else self._ddp

    @property
    def loss_scale(self) -> int:
        """The factor of a rank's loss share before ``backward``.

        ``world_size`` under DDP, whose average of the ranks' gradients is
        then their sum; 1 for the hand-written sum.
        """
        return 1 if self._ddp is None else self.data_parallel.world_size

    def backward(
        self, loss: Tensor, scaler: torch.amp.GradScaler | None = None
    ) -> None:
        """Fill the whole batch's gradients from this rank's loss share.

        Parameters
        ----------
        loss : Tensor
            This rank's share of the batch's loss (normalised by the whole
            batch), from :attr:`model`'s output.
        scaler : GradScaler, default=None
            float16's loss scaler: the gradients are summed still scaled,
            so that an overflow on any rank reaches every rank.
        """
        if self.loss_scale != 1:
            loss = loss * self.loss_scale
        with self.backward_context():
            (loss if scaler is None else scaler.scale(loss)).backward()
        self.after_backward()

    @contextlib.contextmanager
    def backward_context(self) -> Iterator[None]:
        """The context of a step's backward pass.

        DDP warns (once) when a gradient's strides differ from its bucket's
        even where they differ on an axis of size 1 only, which grouped
        layers of one group (weights of shape ``(1, m, n)``) show; the
        gradient is copied into the bucket all the same, so the warning
        is silenced here.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="Grad strides do not match bucket view strides",
                category=UserWarning,
            )
            yield

    def after_backward(self) -> None:
        """Sum the step's gradients over the ranks, unless DDP has."""
        if self._ddp is not None:
            return  # summed during the backward pass
        self.data_parallel.reduce_gradients(self.params)
        if self._decide:
            self._decide = False
            if self._ddp_serves():
                self._ddp = DistributedDataParallel(self.module, **_ddp_options())

    def _ddp_serves(self) -> bool:
        """Whether every rank's step filled every gradient, all of ``module``."""
        own = {id(p) for p in self.module.parameters() if p.requires_grad}
        trained = [p for p in self.params if p.requires_grad]
        full = own == {id(p) for p in trained} and all(
            p.grad is not None for p in trained
        )
        votes = self.data_parallel.total(torch.tensor([float(full)]))
        return bool(votes.item() == self.data_parallel.world_size)
