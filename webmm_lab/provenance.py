"""Where a result was measured: the package code it ran, and the machine.

A notebook's claims file records a digest of every `webmm_lab` module the kernel had loaded
(`package_digests`); a stored spread and a stored notebook keep those digests, so that
`webmm-lab results --stale` can list the notebooks whose stored outputs predate a change to
the package code they import (`stale_modules`). `machine()` says where a spread ran.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of a file's sha256."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def module_file(name: str) -> Path:
    """The source file of a `webmm_lab` module ('webmm_lab.models.gpt' -> .../models/gpt.py)."""
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def package_digests() -> dict[str, str]:
    """{module: digest} of every `webmm_lab` module loaded in this process (what the code that
    measured a result could have run)."""
    out = {}
    for name in sorted(sys.modules):
        if name == "webmm_lab" or name.startswith("webmm_lab."):
            path = module_file(name)
            if path.is_file():
                out[name] = file_digest(path)
    return out


def stale_modules(recorded: dict[str, str]) -> list[str]:
    """The modules of `recorded` ({module: digest}) whose source differs today (or is gone)."""
    changed = []
    for name, digest in recorded.items():
        path = module_file(name)
        if not path.is_file() or file_digest(path) != digest:
            changed.append(name)
    return changed


def git_commit(folder: Path = PACKAGE) -> str | None:
    """The checkout's commit (with '+changes' when the package has uncommitted edits), or None."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=folder, capture_output=True, text=True,
                                        timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--", str(PACKAGE))
        return commit + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name, as the operating system reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                "neon", "asimd", "sve")      # the extensions that decide which kernels run


def vector_extensions() -> str:
    """The CPU's vector extensions that matter to torch's kernels ('avx avx2 fma avx512f ...'),
    from /proc/cpuinfo, and the level torch's own kernels dispatch to ('torch: AVX512')."""
    import torch
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    found = " ".join(f for f in VECTOR_FLAGS if f in flags)
    level = torch.backends.cpu.get_cpu_capability()
    return f"{found}; torch: {level}" if found else f"torch: {level}"


def machine() -> dict:
    """Where a measurement runs: package commit, Python, torch, CPU model, its vector
    extensions (two CPUs that differ there run different kernels: in effect another seed) and
    cores."""
    import torch
    return {"commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": cpu_model(), "vector": vector_extensions(),
            "cores": os.cpu_count()}
