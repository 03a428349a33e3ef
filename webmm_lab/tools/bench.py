"""Benchmarks (not tests): `python -m webmm_lab.tools.bench gpt [--device cpu] [--presets nano micro]`,
`python -m webmm_lab.tools.bench clip [--batches 16 128]`, `python -m webmm_lab.tools.bench vqvae [--widths 16 32]`
and `python -m webmm_lab.tools.bench dalle [--batches 16 128]`.

gpt:  for each preset, training throughput (tokens/s), the FLOP/s it achieves (6·N per token
      for the weights plus 6·L·T·d for attention, Kaplan et al.'s count) against this machine's
      measured matmul rate, and the KV cache's speed-up when generating 256 tokens greedily.
clip: milliseconds per training step of notebook 07's CLIP (cpu sizes) for each batch size,
      split into making the batch, the image tower, the text tower, and the rest.
vqvae: milliseconds per training step of notebook 05's three-level VQ-VAE for each width, the
      milliseconds its spectral losses (forward and backward) take, and how many seconds of
      audio per second it encodes.
dalle: notebook 06's transformer (cpu sizes): milliseconds per training step, and images per
      second when sampling a batch of captions' 64 image codes, with the KV cache and without.
"""
from __future__ import annotations

import argparse
import time

import torch

from ..device import autocast, pick_device
from ..models.gpt import GPT, GPTConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device: torch.device, n: int = 1024, repeat: int = 20) -> float:
    """Measured FLOP/s of an n x n matmul (in the autocast dtype on GPUs)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    with autocast(device):
        a @ b
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            a @ b
        _sync(device)
    return 2 * n ** 3 * repeat / (time.perf_counter() - t0)


def bench_gpt(preset: str, device: torch.device, batch: int = 8, block: int = 256,
              steps: int = 10, vocab: int = 256) -> dict[str, float]:
    """Training tokens/s, achieved FLOP/s, and KV-cache speed-up for one preset."""
    torch.manual_seed(0)
    cfg = GPTConfig.preset(preset, vocab_size=vocab, block_size=block)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randint(vocab, (batch, block), device=device)

    def step():
        with autocast(device):
            loss = model(x, x)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    tok_s = batch * block * steps / (time.perf_counter() - t0)
    n = model.num_params()
    flops_per_token = 6 * n + 6 * cfg.n_layer * block * cfg.n_embd
    prompt = torch.randint(vocab, (1, 1), device=device)
    times = {}
    for use_cache in (True, False):
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            model.generate(prompt, block - 1, temperature=0, use_cache=use_cache)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        times[use_cache] = best
    return {"params": n, "tokens/s": tok_s, "FLOP/s": tok_s * flops_per_token,
            "kv speed-up": times[False] / times[True]}


def _median_ms(fn, repeat: int, device: torch.device) -> float:
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def bench_clip(batch: int, device: torch.device, repeat: int = 15) -> dict[str, float]:
    """Milliseconds per CLIP training step (median) and its parts, at notebook 07's cpu sizes."""
    from dataclasses import replace

    from ..experiments.clip import ClipSetup, ClipWorld, build_clip
    from ..models.contrastive import clip_loss
    setup = replace(ClipSetup(), pool=2000, batch=batch)
    world = ClipWorld.build(setup)
    model = build_clip(setup, world).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch_fn = world.batches()
    images, ids, lengths = (t.to(device) for t in batch_fn(0))

    def step():
        with autocast(device):
            loss = clip_loss(*model(images, ids, lengths), model.logit_scale)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def tower(encode, *args):
        def run():
            with autocast(device):
                encode(*args).float().pow(2).sum().backward()
            opt.zero_grad(set_to_none=True)
        return run

    step()
    r = {"batch": _median_ms(lambda: batch_fn(1), repeat, torch.device("cpu")),
         "image tower": _median_ms(tower(model.encode_image, images), repeat, device),
         "text tower": _median_ms(tower(model.encode_text, ids, lengths), repeat, device),
         "step": _median_ms(step, repeat, device)}
    r["total"] = r["batch"] + r["step"]
    return r


def bench_vqvae(width: int, device: torch.device, batch: int = 16, crop: int = 4096,
                repeat: int = 5) -> dict[str, float]:
    """ms per training step (median) of notebook 05's VQ-VAE at `width`, the spectral loss's
    ms within it, and audio seconds encoded (all three levels) per second."""
    from ..experiments.jukebox import JukeboxSetup, build_vqvae
    from ..models.vqvae import spectral_loss
    setup = JukeboxSetup(width=width)
    model = build_vqvae(setup).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randn(batch, 1, crop, device=device) * 0.3

    def step():
        with autocast(device):
            loss = model(x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    y = x.clone().requires_grad_(True)
    spec = _median_ms(lambda: [spectral_loss(y, x).backward() for _ in model.hops], repeat, device)
    step_ms = _median_ms(step, repeat, device)
    long = torch.randn(4, 1, 65536, device=device)
    enc_ms = _median_ms(lambda: model.encode(long), repeat, device)
    return {"step": step_ms, "spectral": spec, "audio s/s": 4 * 65536 / setup.sample_rate / (enc_ms / 1000)}


def bench_dalle(batch: int, device: torch.device, repeat: int = 5) -> dict[str, float]:
    """Notebook 06's DALL·E at its cpu sizes: training step (ms) and sampling rate (images/s)."""
    from ..experiments.dalle import DalleSetup
    from ..models.dalle import DALLE
    torch.manual_seed(0)
    s = DalleSetup()
    model = DALLE(text_vocab=512, text_len=s.text_len, codebook_size=s.codebook, grid=s.grid, n_layer=s.layers,
                  n_head=s.heads, n_embd=s.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    text = model.pad_text(torch.randint(512, (batch, 8)), torch.full((batch,), 8)).to(device)
    codes = torch.randint(s.codebook, (batch, s.grid, s.grid), device=device)

    def step():
        with autocast(device):
            loss = model.weighted_loss(*model(text, codes))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()
    step_ms = _median_ms(step, repeat, device)
    rate = {}
    for cache in (True, False):
        model.generate(text, use_cache=cache)
        ms = _median_ms(lambda: model.generate(text, use_cache=cache), max(1, repeat // 2), device)
        rate[cache] = 1000 * batch / ms
    return {"step": step_ms, "cached": rate[True], "uncached": rate[False]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webmm_lab.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["gpt", "clip", "vqvae", "dalle"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--presets", nargs="+", default=["nano", "micro", "mini"])
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 128])
    parser.add_argument("--widths", nargs="+", type=int, default=[16, 32])
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.what == "vqvae":
        print(f"device {device}, {torch.get_num_threads()} threads; notebook 05's three VQ-VAEs, "
              "batch 16 x 4096 samples (ms per training step, median)")
        print(f"{'width':>6} {'step':>8} {'spectral loss':>14} {'encode (audio s/s)':>19}")
        for w in args.widths:
            r = bench_vqvae(w, device)
            print(f"{w:>6} {r['step']:>8.0f} {r['spectral']:>14.0f} {r['audio s/s']:>19.0f}")
        return
    if args.what == "dalle":
        print(f"device {device}, {torch.get_num_threads()} threads; notebook 06's DALL·E at cpu sizes "
              "(a caption of 18 tokens, then 64 image codes)")
        print(f"{'batch':>6} {'train step ms':>14} {'sampled images/s, KV cache':>27} {'without':>9} {'speed-up':>9}")
        for b in args.batches:
            r = bench_dalle(b, device)
            print(f"{b:>6} {r['step']:>14.0f} {r['cached']:>27.0f} {r['uncached']:>9.0f} "
                  f"{r['cached'] / r['uncached']:>8.1f}x")
        return
    if args.what == "clip":
        print(f"device {device}, {torch.get_num_threads()} threads; CLIP at notebook 07's cpu sizes "
              "(ms per training step, median; forward + backward for each tower)")
        print(f"{'batch':>6} {'make batch':>11} {'image tower':>12} {'text tower':>11} {'step':>8} "
              f"{'total':>8} {'pairs/s':>9}")
        for b in args.batches:
            r = bench_clip(b, device)
            print(f"{b:>6} {r['batch']:>11.1f} {r['image tower']:>12.1f} {r['text tower']:>11.1f} "
                  f"{r['step']:>8.1f} {r['total']:>8.1f} {1000 * b / r['total']:>9,.0f}")
        return
    peak = matmul_flops(device)
    print(f"device {device}; measured matmul rate {peak / 1e9:.1f} GFLOP/s")
    print(f"{'preset':<8} {'params':>10} {'train tok/s':>12} {'GFLOP/s':>9} {'% of matmul':>12} {'KV speed-up (255 tok)':>22}")
    for preset in args.presets:
        r = bench_gpt(preset, device)
        print(f"{preset:<8} {r['params']:>10,} {r['tokens/s']:>12,.0f} {r['FLOP/s'] / 1e9:>9.2f} "
              f"{100 * r['FLOP/s'] / peak:>11.1f}% {r['kv speed-up']:>21.1f}x")


if __name__ == "__main__":
    main()
