"""Mixed precision: which dtype the matrix products of every phase run in.

``precision="bfloat16"`` runs the forward passes under :func:`torch.autocast`:
matrix products and convolutions in bfloat16, the weights (and Adam's
state), the losses, the TD targets and the reductions in float32. bfloat16
has float32's exponent range, so no loss scaling is needed, unlike float16.
Processors with AVX512-BF16 or AMX, and GPUs from Ampere on, multiply
bfloat16 several times faster than float32.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch

#: ``precision`` value -> the autocast dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None,
    "bfloat16": torch.bfloat16,
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
