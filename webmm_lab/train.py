"""The one training loop of the course.

    history = train(model, loss_fn, batch_fn, steps=600, lr=3e-3, run="00_mlp")
    history.plot()

- The settings (steps, lr, warmup, ...) are `TrainConfig`'s; the loop below reads top to bottom:
  `resume` (with `load_state`) and `wrap` (DDP, compile), then per step `train_step` (one
  optimiser step), `PendingLosses` (the losses' host copies, batched), `evaluate` now and then
  and `save_state` at the marks.
- `loss_fn(model, batch) -> scalar loss` gets the model as it runs (in DDP under torchrun,
  compiled with `compile=True`); `eval_fn` and `after_step` get the model itself.
  `batch_fn(step) -> batch` (tensors, tuples or dicts).
  Make `batch_fn` depend only on `step` (see `webmm_lab.batches`): then a resumed run sees exactly
  the batches an uninterrupted one would, and repeats it bit for bit on the CPU.
- AdamW, no weight decay on 1-D parameters (biases, norms, scales); linear warmup then cosine
  decay to `min_lr_ratio * lr`; gradient clipping; autocast + grad scaler on GPUs.
- With `run="name"` it checkpoints atomically every `ckpt_every` steps (and at least every
  `ckpt_seconds`), on Ctrl-C, and at the end; started again with the same name, it resumes.
- Under torchrun (a process group is up) it wraps the model in DDP, gives each process its
  rows of every global batch, logs the loss averaged over the processes, and rank 0 alone
  writes the checkpoint (at the step marks only), which resumes on any number of processes.
- `WEBMM_DRY_RUN=N` (set by `webmm-lab run --dry-run`) trains only N steps per call: a
  notebook's every cell runs at full model and data sizes, quickly, to find what breaks.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (CheckpointError, check_fingerprint, data_digest, fingerprint,
                         load_checkpoint, save_checkpoint)
from .device import autocast, evaluating, grad_scaler, pick_device
from .distributed import rank_and_world, shard
from .paths import checkpoint_dir
from .profiles import active_profile, dry_run_steps


@dataclass
class History:
    """What a run measured: training loss and learning rate per step, evaluations now and then."""
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)  # each has a "step" key
    seconds: float = 0.0        # wall time spent training, summed over resumed sessions
    resumed_from: int = 0       # the step this session started at (0: fresh)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "loss": self.loss, "lr": self.lr, "evals": self.evals,
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(list(d["steps"]), list(d["loss"]), list(d["lr"]), list(d["evals"]),
                   float(d["seconds"]))

    def last_eval(self) -> dict[str, float]:
        """The most recent evaluation (empty if none ran)."""
        return self.evals[-1] if self.evals else {}

    def plot(self, ax=None, smooth: int = 20, title: str | None = None):
        """Draw the training loss (raw, faint; moving average, bold) and evaluated losses."""
        from .plots import plot_curve
        return plot_curve(self, ax=ax, smooth=smooth, title=title)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices and embeddings (dim >= 2), not biases, norms or scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, *, lr: float, steps: int, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate at `step`: linear warmup over `warmup` steps, then cosine to min_lr_ratio*lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def checkpoint_path(run: str, seed: int = 0) -> Path:
    """Where `train(..., run=run, seed=seed)` keeps its checkpoint: results/checkpoints/<profile>/
    <run>.pt (<run>-seed<seed>.pt for another seed; a dry run's in <profile>-dry-run/, so it
    never feeds a real run)."""
    folder = active_profile() + ("-dry-run" if dry_run_steps() else "")
    return checkpoint_dir() / folder / (f"{run}-seed{seed}.pt" if seed else f"{run}.pt")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move a batch (tensor, tuple, list or dict of them; anything else as it is) to `device`.
    To a GPU, a host tensor is pinned (page-locked) first, so that its copy is truly
    non-blocking: the host goes on queuing the step's work while the batch travels."""
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


@dataclass(kw_only=True)
class TrainConfig:
    """The loop's settings. Those that decide the weights (all but the last four) are, with the
    model's shapes, the experiment's setup and a digest of the first batch, the checkpoint's
    fingerprint: a changed default never reloads an old model."""
    steps: int
    lr: float
    warmup: int | None = None            # linear warmup steps; None: min(steps // 10, 200)
    min_lr_ratio: float = 0.1            # cosine decay ends at min_lr_ratio * lr
    weight_decay: float = 0.1            # AdamW's, on matrices and embeddings only
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float | None = 1.0             # gradient-norm clipping (None: off)
    seed: int = 0
    eval_every: int | None = None        # evaluate every this many steps (and at the end)
    ckpt_every: int | None = None        # checkpoint every this many steps; None: steps // 10
    ckpt_seconds: float = 60.0           # ... and at least this often (one process only)
    compile: bool = False                # torch.compile the forward pass

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.warmup = min(self.steps // 10, 200) if self.warmup is None else self.warmup
        self.ckpt_every = self.ckpt_every or max(1, self.steps // 10)

    def lr_at(self, step: int) -> float:
        """The learning rate at `step` (warmup, then cosine decay)."""
        return lr_at(step, lr=self.lr, steps=self.steps, warmup=self.warmup, min_lr_ratio=self.min_lr_ratio)

    def weights_settings(self) -> dict[str, Any]:
        """The settings that decide the weights (for the fingerprint)."""
        return {k: getattr(self, k) for k in ("steps", "lr", "warmup", "min_lr_ratio", "weight_decay",
                                              "betas", "clip", "seed")}


def save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, scaler, step: int,
               history: History, fp: dict, device: torch.device) -> None:
    """Write the training state (model, optimiser, scaler, RNG, history) atomically."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
             "step": step, "history": history.to_dict(), "rng": torch.get_rng_state(), "fingerprint": fp}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    save_checkpoint(state, path)


def load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, scaler, fp: dict,
               device: torch.device) -> History:
    """Restore what `save_state` wrote into model, opt, scaler and the RNG; return the history
    (its `resumed_from` is the checkpoint's step). CheckpointError if it belongs to another run."""
    state = load_checkpoint(path, map_location=device)
    if "fingerprint" not in state:
        raise CheckpointError(f"{path} is not a webmm_lab training checkpoint; delete it")
    check_fingerprint(state["fingerprint"], fp, path)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"].cpu())
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    history = History.from_dict(state["history"])
    history.resumed_from = int(state["step"])
    return history


class PendingLosses:
    """Losses kept on the device until `flush` copies them to the history in one sync (under
    torchrun averaged over the processes: a collective, so every process flushes at the same steps)."""

    def __init__(self, history: History, world: int, bar):
        self.history, self.world, self.bar, self.losses = history, world, bar, []

    def add(self, step: int, lr: float, loss: torch.Tensor) -> None:
        """Record a step: its step and lr now, its loss at the next flush (every 10 steps at most)."""
        self.history.steps.append(step)
        self.history.lr.append(lr)
        self.losses.append(loss.detach())
        if len(self.losses) >= 10:
            self.flush()

    def flush(self) -> None:
        if not self.losses:
            return
        values = torch.stack(self.losses).float()
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        self.history.loss.extend(values.tolist())
        self.losses.clear()
        self.bar.set_postfix(loss=f"{self.history.loss[-1]:.4f}", lr=f"{self.history.lr[-1]:.2e}")

    def show(self, evals: dict[str, float]) -> None:
        """Put the last loss and an evaluation's metrics on the progress bar."""
        self.bar.set_postfix(loss=f"{self.history.loss[-1]:.4f}",
                             **{k: f"{v:.4g}" for k, v in evals.items() if k != "step"})


def train_step(forward: nn.Module, model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
               batch: Any, opt: torch.optim.Optimizer, scaler, lr: float, clip: float | None,
               device: torch.device) -> torch.Tensor:
    """One optimiser step on `batch` at learning rate `lr`: forward (under autocast), backward
    (scaled), clip, step. `forward` is what runs (DDP- or compile-wrapped `model`). Returns the
    loss, not synced."""
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast(device):
        loss = loss_fn(forward, batch)
    if device.type == "cpu" and not torch.isfinite(loss.detach()).all():      # free on the CPU
        raise FloatingPointError(f"loss is {loss.item()}: lower the learning rate?")
    scaler.scale(loss).backward()
    if clip is not None:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss


def evaluate(model: nn.Module, eval_fn: Callable[[nn.Module], dict[str, float]], step: int,
             device: torch.device) -> dict[str, float]:
    """eval_fn(model) in eval mode, without gradients, under autocast: {"step": step, metric: value}."""
    with evaluating(model), autocast(device):
        return {"step": step, **{k: float(v) for k, v in eval_fn(model).items()}}


def wrap(model: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """What the loop runs: `model` in DDP under torchrun (it averages the gradients in
    backward()), compiled with `compile=True`."""
    if world > 1:
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return torch.compile(model) if compile else model


def resume(path: Path | None, run: str | None, model: nn.Module, opt: torch.optim.Optimizer, scaler,
           fp: dict, device: torch.device, cfg: TrainConfig) -> History:
    """The history to go on from: the checkpoint at `path` loaded into model, opt and scaler (its
    `resumed_from` is the step), or a fresh one after seeding torch when there is no checkpoint."""
    if path is None or not path.exists():
        torch.manual_seed(cfg.seed)
        return History()
    history = load_state(path, model, opt, scaler, fp, device)
    step, where = history.resumed_from, os.path.relpath(path)
    print(f"run {run!r} is already complete ({step}/{cfg.steps} steps): loaded {where}"
          if step >= cfg.steps else f"resuming run {run!r} at step {step}/{cfg.steps} from {where}")
    return history


def train(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
          batch_fn: Callable[[int], Any], *, run: str | None = None, stop_after: int | None = None,
          eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
          after_step: Callable[[nn.Module], None] | None = None, setup: Any = None,
          device: torch.device | str | None = None, progress: bool = True, **settings: Any) -> History:
    """Train `model` in place and return its History; `settings` are `TrainConfig`'s (steps and
    lr at least: `train(model, loss_fn, batch_fn, steps=600, lr=3e-3)`).

    run:        a name to checkpoint under and resume from (`checkpoint_path`); None: no checkpoints.
    stop_after: stop after this many steps in this call (a checkpoint is saved), as if the
                session were cut off; calling again resumes. For demonstrations and tests.
    eval_fn:    called as eval_fn(model) under no_grad in eval mode every `eval_every` steps
                and at the end; returns {"metric": value}.
    after_step: called as after_step(model) after every optimizer step (CLIP clamps its scale).
    setup:      what else decides the weights (an experiment's setup dataclass): fingerprinted.
    """
    cfg = TrainConfig(**settings)
    device = torch.device(device) if device is not None else pick_device()
    model.to(device)
    rank, world = rank_and_world()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                            fused=device.type == "cuda")
    scaler = grad_scaler(device)
    path = checkpoint_path(run, cfg.seed) if run else None
    fp = fingerprint(model, **cfg.weights_settings(), setup=setup,
                     data=data_digest(batch_fn(0)) if run else None)
    history = resume(path, run, model, opt, scaler, fp, device, cfg)
    step = history.resumed_from
    if step >= cfg.steps:
        return history
    forward = wrap(model, device, world, cfg.compile)
    dry = dry_run_steps()
    end = min(cfg.steps, step + stop_after if stop_after is not None else cfg.steps,
              step + dry if dry is not None else cfg.steps)
    bar = tqdm(total=cfg.steps, initial=step, desc=run or "train", disable=not progress or rank > 0,
               dynamic_ncols=True)
    pending = PendingLosses(history, world, bar)
    writes = path is not None and rank == 0     # one checkpoint, whatever the number of processes
    t0 = last_save = time.perf_counter()
    model.train()
    try:
        while step < end:
            lr = cfg.lr_at(step)
            batch = to_device(shard(batch_fn(step), rank, world), device)
            loss = train_step(forward, model, loss_fn, batch, opt, scaler, lr, cfg.clip, device)
            if after_step is not None:
                after_step(model)
            pending.add(step, lr, loss)
            step += 1
            bar.update(1)
            last = step == cfg.steps or (dry is not None and step == end)
            if eval_fn is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last):
                pending.flush()
                history.evals.append(evaluate(model, eval_fn, step, device))
                pending.show(history.evals[-1])
            now = time.perf_counter()
            late = now - last_save > cfg.ckpt_seconds and world == 1   # clocks differ between processes
            if step % cfg.ckpt_every == 0 or step == end or late:
                pending.flush()
                history.seconds += now - t0
                t0 = last_save = now
                if writes:
                    save_state(path, model, opt, scaler, step, history, fp, device)
    except KeyboardInterrupt:
        bar.close()
        if world == 1:       # with more, the others may be gone: no collective, no checkpoint
            pending.flush()
            history.seconds += time.perf_counter() - t0
            if writes:
                save_state(path, model, opt, scaler, step, history, fp, device)
        print(f"interrupted at step {step}/{cfg.steps}" + ("; the last checkpoint stands" if world > 1
              else f"; checkpoint saved to {os.path.relpath(path)}" if path else ""))
        raise
    pending.flush()
    bar.close()
    if step < cfg.steps and dry is None:
        print(f"stopped at step {step}/{cfg.steps}; checkpoint saved: run the same call again to resume")
    return history
