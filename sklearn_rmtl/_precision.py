"""Mixed precision: which dtype the matrix products of every phase run in.

``precision="bfloat16"`` runs the forward passes under :func:`torch.autocast`:
matrix products and convolutions in bfloat16, the weights (and Adam's
state), the losses, the TD targets and the reductions in float32. bfloat16
has float32's exponent range, so no loss scaling is needed. Processors with
AVX512-BF16 or AMX, and GPUs from Ampere on, multiply bfloat16 several times
faster than float32.

``precision="float16"`` autocasts the same way to float16, whose range is
narrow: gradients below about ``6e-8`` flush to zero. Every backward pass
of a float16 forward therefore goes through a :class:`torch.amp.GradScaler`
(:func:`grad_scaler`, one per optimiser): the loss is multiplied by a large
scale before ``backward``, the gradients are divided by it before the
optimiser step, and a step whose gradients overflowed is skipped while the
scale shrinks. It is meant for CUDA GPUs, which multiply float16 in
hardware; most CPUs emulate it.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch import Tensor

#: ``precision`` value -> the autocast dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def autocast(precision: str, device: str | torch.device) -> Any:
    """The context that runs forward passes in ``precision`` on ``device``.

    Wrap forward passes and losses only, never ``backward`` (whose products
    follow the dtypes autocast chose in the forward pass).
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(
    precision: str, device: str | torch.device
) -> torch.amp.GradScaler | None:
    """A fresh loss scaler for one optimiser, or None where none is needed.

    Only float16 needs one (its gradients underflow); float32 and bfloat16
    get None, so that their steps stay exactly the plain ones.
    """
    if PRECISIONS[precision] is not torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def scaled_backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward()``, of ``scaler.scale(loss)`` when there is a scaler."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def optimizer_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """``optimizer.step()``; with a scaler its unscaled, skip-on-overflow step."""
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware."""
    if torch.device(device).type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def check_precision(precision: str, device: str) -> None:
    """Warn when ``precision`` would be emulated, and so slower, on ``device``."""
    if PRECISIONS[precision] is torch.bfloat16 and not native_bfloat16(device):
        warnings.warn(
            f"precision='bfloat16' on device {device!r}, which has no bfloat16 "
            "matrix units (AVX512-BF16 or AMX on a CPU, Ampere or newer on a "
            "GPU): torch emulates it, which is usually slower than float32. "
            "Results stay correct; use precision='float32' for speed here.",
            UserWarning,
            stacklevel=3,
        )
    if PRECISIONS[precision] is torch.float16 and torch.device(device).type != "cuda":
        warnings.warn(
            f"precision='float16' on device {device!r}: float16 (with loss "
            "scaling) is meant for CUDA GPUs; most CPUs emulate its matrix "
            "products, which is usually much slower than float32. Results stay "
            "correct; on a CPU use precision='bfloat16' (or 'float32').",
            UserWarning,
            stacklevel=3,
        )
