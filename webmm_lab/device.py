"""Device, mixed precision and seeding: the three lines every notebook needs, in one place.

    dev = pick_device()                  # cuda -> mps -> cpu
    with autocast(dev): loss = ...       # bf16 where the GPU has it, fp16 on a T4, nothing on CPU
    scaler = grad_scaler(dev)            # enabled only for fp16

WEBMM_AMP=bf16|fp16|off overrides the choice on any device: WEBMM_AMP=bf16 on the CPU runs a
GPU's mixed precision there, to find dtype mismatches without a GPU.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The best device here: CUDA, then Apple's MPS, then the CPU.

    `prefer` (or the environment variable WEBMM_DEVICE) forces one, e.g. "cpu".
    """
    prefer = prefer or os.environ.get("WEBMM_DEVICE")
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


AMP_CHOICES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for `device`: bf16 if the GPU supports it, else fp16; None on CPU/MPS;
    $WEBMM_AMP (bf16, fp16 or off) overrides it."""
    device = torch.device(device)
    forced = os.environ.get("WEBMM_AMP", "").strip().lower()
    if forced and forced != "auto":
        if forced not in AMP_CHOICES:
            raise ValueError(f"WEBMM_AMP={forced!r}: choose bf16, fp16, off or auto")
        return AMP_CHOICES[forced]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
    dtype = amp_dtype(device)
    info["mixed precision"] = {None: "off (fp32)", torch.bfloat16: "bf16 autocast",
                               torch.float16: "fp16 autocast + grad scaler"}[dtype]
    return info
