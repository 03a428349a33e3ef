"""Device, mixed precision and seeding: the three lines every notebook needs, in one place.

    dev = pick_device()                  # cuda -> mps -> cpu
    with autocast(dev): loss = ...       # bf16 where the GPU runs it natively, fp16 on a T4, nothing on CPU
    scaler = grad_scaler(dev)            # enabled only for fp16

bf16 only on GPUs of compute capability 8.0 and up (A100, RTX 30xx, L4, H100): older ones such as
Colab's T4 (7.5) emulate it, slower than fp32, and torch's `is_bf16_supported()` counts emulation,
so the capability decides here. WEBMM_AMP=bf16|fp16|off overrides the choice on any device:
WEBMM_AMP=bf16 on the CPU runs a GPU's mixed precision there, to find dtype mismatches without a GPU.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

from .settings import settings


def pick_device(prefer: str | None = None) -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU.

    `prefer` (or the environment variable WEBMM_DEVICE) forces one, e.g. "cpu".
    """
    prefer = prefer or settings().device
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


AMP_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def amp_choice(device: torch.device | str) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for `device` and why: bf16 on a GPU that runs it natively (compute
    capability >= 8.0), fp16 on an older one (bf16 would be emulated there), None (fp32) on the
    CPU and MPS; $WEBMM_AMP (bf16, fp16, off or auto) overrides it."""
    device = torch.device(device)
    forced = settings().amp
    if forced != "auto":
        return AMP_CHOICES[forced], f"WEBMM_AMP={forced}"
    if device.type != "cuda":
        return None, f"no autocast on {device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        return torch.bfloat16, f"compute capability {major}.{minor}: native bf16"
    return torch.float16, f"compute capability {major}.{minor}: bf16 would be emulated"


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for `device` (`amp_choice` says why): bf16, fp16, or None for fp32."""
    return amp_choice(device)[0]


def autocast(device: torch.device | str):
    """A mixed-precision context for `device` (a no-op where amp_dtype is None)."""
    device = torch.device(device)
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only when autocast runs in fp16 (bf16 and fp32 need none)."""
    device = torch.device(device)
    enabled = amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


@contextlib.contextmanager
def evaluating(*models: torch.nn.Module) -> Iterator[torch.device]:
    """Eval mode and no gradients for `models` inside the block; on leaving it (also by an error)
    each model is back in the mode it was in. Yields the first model's device:

        with evaluating(model) as device:
            logits = model(x.to(device))
    """
    was = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield next(models[0].parameters()).device
    finally:
        for m, mode in zip(models, was):
            m.train(mode)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices), so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS too


def describe(device: torch.device | str | None = None) -> dict[str, str]:
    """Versions, device and precision, for the environment check at the top of a notebook."""
    import platform

    device = torch.device(device) if device is not None else pick_device()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu memory"] = f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB"
    dtype, why = amp_choice(device)
    if dtype is None:            # on a GPU, only WEBMM_AMP=off gets here: say so
        info["mixed precision"] = f"off (fp32, {why})" if device.type == "cuda" else "off (fp32)"
    else:
        what = "bf16 autocast" if dtype == torch.bfloat16 else "fp16 autocast + grad scaler"
        info["mixed precision"] = f"{what} ({why})"
    return info
