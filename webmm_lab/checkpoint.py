"""Checkpoints: written atomically (temp file + rename), loaded safely (weights_only=True),
and checked against the run that wants them, with errors that say what to do."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, or written by a different run."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to `path` atomically: a crash mid-write never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `weights_only=True`; a damaged file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds here: pickle, zip, EOF, unpickler errors
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {str(e)[:200]}). "
            f"Delete it to start this run afresh.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict; "
                              "delete it to start afresh")
    return state


def data_digest(batch: Any) -> str:
    """A short digest of a batch (tensors, nested in tuples, lists or dicts; anything else by
    repr): what `train` fingerprints of its data, so a changed data set never reloads an old
    model. Floats are rounded to 1/1024 first, so a GPU's last-bit noise does not count."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.is_floating_point():
                x = (x.float() * 1024).round().long()
            h.update(repr((str(x.dtype), tuple(x.shape))).encode())
            h.update(x.contiguous().numpy().tobytes())
        elif isinstance(x, (tuple, list)):
            for v in x:
                feed(v)
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                feed(x[k])
        else:
            h.update(repr(x).encode())
    feed(batch)
    return h.hexdigest()[:16]


def fingerprint(model: torch.nn.Module, **settings) -> dict:
    """What must match for a checkpoint to belong to a run: parameter shapes and run settings
    (`train` includes the experiment's setup and a digest of its first batch)."""
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    return {"shapes": shapes, "settings": {k: repr(v) for k, v in sorted(settings.items())}}


def check_fingerprint(found: dict, expected: dict, path: str | Path) -> None:
    """Raise CheckpointError naming the first difference between two fingerprints."""
    if found == expected:
        return
    fs, es = found.get("shapes", {}), expected["shapes"]
    for name in sorted(set(fs) | set(es)):
        if fs.get(name) != es.get(name):
            what = f"parameter {name!r}: checkpoint has {fs.get(name)}, model has {es.get(name)}"
            break
    else:
        fset, eset = found.get("settings", {}), expected["settings"]
        name = next(k for k in sorted(set(fset) | set(eset)) if fset.get(k) != eset.get(k))
        what = f"setting {name!r}: checkpoint has {fset.get(name)}, this run has {eset.get(name)}"
    raise CheckpointError(
        f"checkpoint {path} was written by a different run ({what}). Delete the file, or give "
        "this run another name, to train from scratch.")
