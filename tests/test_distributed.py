"""Several processes in the one training loop: `webmm-lab train gpt|clip` under torchrun with
two real gloo processes trains the same model as one process, and a checkpoint written by two
processes resumes on one."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from webmm_lab.checkpoint import load_checkpoint
from webmm_lab.distributed import shard

GPT_ARGS = ["--layers", "1", "--heads", "2", "--width", "32", "--block", "64", "--train-block", "64",
            "--batch", "4", "--tokens", "1536"]          # 6 steps
CLIP_ARGS = ["--pool", "200", "--steps", "3", "--batch", "16", "--vocab", "300", "--norm", "group",
             "--eval", "0"]


def train_cli(tmp_path, model, name, processes, args, out=True):
    """Run `webmm-lab train MODEL ARGS` on `processes` processes; return the written model file."""
    path = tmp_path / f"{name}.pt"
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                "--standalone", "-m", "webmm_lab.cli"] if processes > 1 else \
        [sys.executable, "-m", "webmm_lab.cli"]
    proc = subprocess.Popen(launcher + ["train", model, *args, "--out", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)      # its own group: a timeout kills the workers too
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{name}: training did not finish in 240 s\n{stdout[-2000:]}{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return load_checkpoint(path) if out else stdout


def assert_same_training(a, b, loss_tol=1e-5, weight_tol=1e-4):
    assert np.allclose(a["loss"], b["loss"], atol=loss_tol), (a["loss"], b["loss"])
    worst = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert worst < weight_tol, worst


def test_shard_gives_each_process_its_rows():
    x, y = torch.arange(12).view(6, 2), torch.arange(6)
    parts = [shard((x, {"y": y}), r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(parts[1][1]["y"], torch.tensor([2, 3]))
    assert shard(x, 0, 1) is x
    with pytest.raises(ValueError, match="divide evenly"):
        shard(torch.zeros(5, 2), 0, 2)


@pytest.mark.slow
def test_gpt_on_two_processes_equals_one_and_resumes_on_one(tmp_path):
    one = train_cli(tmp_path, "gpt", "one", 1, GPT_ARGS)
    two = train_cli(tmp_path, "gpt", "two", 2, GPT_ARGS)
    assert one["result"]["processes"] == 1 and two["result"]["processes"] == 2
    assert len(one["loss"]) == 6
    assert_same_training(one, two)
    # cut off after 2 of 6 steps on two processes (rank 0 writes one checkpoint) ...
    stdout = train_cli(tmp_path, "gpt", "split", 2, GPT_ARGS + ["--checkpoint", "split", "--stop-after", "2"], out=False)
    assert not (tmp_path / "split.pt").exists() and "stopped at step 2/6" in stdout
    # ... and finished on one process: the same model as the uninterrupted run
    resumed = train_cli(tmp_path, "gpt", "split", 1, GPT_ARGS + ["--checkpoint", "split"])
    assert_same_training(one, resumed)


@pytest.mark.slow
def test_clip_on_two_processes_equals_one(tmp_path):
    one = train_cli(tmp_path, "clip", "one", 1, CLIP_ARGS)
    two = train_cli(tmp_path, "clip", "two", 2, CLIP_ARGS)
    assert two["result"]["processes"] == 2 and one["result"]["processes"] == 1
    assert_same_training(one, two)
    assert one["merges"] == two["merges"] and one["setup"]["norm"] == "group"
