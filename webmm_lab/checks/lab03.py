"""Checks for lab 03: one k-means step, palette encode and decode, the input/target shift
of a pixel sequence with its start token, and Image GPT's pooled features of one layer."""
from __future__ import annotations

from typing import Callable

import torch

from ..experiments.igpt import layer_features, shift, to_sequence
from ..kmeans import Palette, kmeans_step
from ..models.gpt import GPT, GPTConfig
from . import CheckResult, check_function


def _kmeans_inputs(gen: torch.Generator):
    n, d = int(torch.randint(5, 60, (), generator=gen)), int(torch.randint(1, 4, (), generator=gen))
    k = int(torch.randint(2, min(n, 8) + 1, (), generator=gen))
    points = torch.randn(n, d, generator=gen)
    centres = points[torch.randperm(n, generator=gen)[:k]] + 0.1 * torch.randn(k, d, generator=gen)
    far = int(torch.randint(0, k, (), generator=gen))           # some centres too far to win a point
    centres[:far] += 100 + 100 * torch.arange(far, dtype=torch.float).unsqueeze(1)
    return (points, centres)


def check_kmeans_step(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 03: fn(points (N, D), centres (K, D)) -> new centres (K, D): each the mean of the
    points nearest to it; an empty centre takes the point farthest from its own centre (the
    first empty one the farthest, the next the next farthest)."""
    return check_function(fn, lambda p, c: kmeans_step(p, c)[0], _kmeans_inputs, name="kmeans_step",
                          trials=30, atol=1e-5,
                          hint="a point belongs to the centre at the smallest distance; a centre "
                          "nobody chose must still move somewhere useful, and which point it takes "
                          "is decided by how badly each point is served now", **kw)


def _palette_inputs(gen: torch.Generator):
    c, k = int(torch.randint(1, 4, (), generator=gen)), int(torch.randint(2, 12, (), generator=gen))
    n, h, w = (int(v) for v in torch.randint(1, 6, (3,), generator=gen))
    return (torch.rand(n, c, h, w, generator=gen), torch.rand(k, c, generator=gen))


def check_encode(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 03: fn(images (N, C, H, W), colours (K, C)) -> ids (N, H, W) of the nearest colour."""
    return check_function(fn, lambda x, c: Palette(c).encode(x), _palette_inputs, name="encode",
                          trials=20, hint="the colour axis of the images is dim 1 and of the "
                          "palette dim 1 too; bring the pixels into one list first", **kw)


def _decode_inputs(gen: torch.Generator):
    images, colours = _palette_inputs(gen)
    ids = torch.randint(len(colours), images[:, 0].shape, generator=gen)
    return (ids, colours)


def check_decode(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **kw) -> CheckResult:
    """Lab 03: fn(ids (N, H, W), colours (K, C)) -> images (N, C, H, W)."""
    return check_function(fn, lambda i, c: Palette(c).decode(i), _decode_inputs, name="decode",
                          trials=20, hint="indexing a (K, C) table with an (N, H, W) tensor of ids "
                          "gives (N, H, W, C); images want the channels second", **kw)


def _shift_inputs(gen: torch.Generator):
    k = int(torch.randint(2, 20, (), generator=gen))
    n, h, w = (int(v) for v in torch.randint(1, 6, (3,), generator=gen))
    return (torch.randint(k, (n, h, w), generator=gen), k)


def check_inputs_targets(fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]], **kw) -> CheckResult:
    """Lab 03: fn(ids (N, H, W), start) -> (inputs, targets), each (N, H*W): the start token and
    the pixels in raster order, and the pixels each position must predict."""
    return check_function(fn, lambda ids, start: shift(to_sequence(ids, start)), _shift_inputs,
                          name="inputs_targets", trials=20,
                          hint="read the pixels row by row; the first input is the start token, "
                          "and no target is ever the start token", **kw)


def _features_inputs(gen: torch.Generator):
    seed = int(torch.randint(0, 10_000, (), generator=gen))
    torch.manual_seed(seed)
    layers, width = int(torch.randint(1, 4, (), generator=gen)), 8 * int(torch.randint(1, 4, (), generator=gen))
    side, colours = int(torch.randint(2, 5, (), generator=gen)), int(torch.randint(2, 9, (), generator=gen))
    model = GPT(GPTConfig(vocab_size=colours + 1, block_size=1 + side * side, n_layer=layers, n_head=2,
                          n_embd=width)).eval()
    ids = torch.randint(colours, (int(torch.randint(1, 6, (), generator=gen)), side, side), generator=gen)
    layer = int(torch.randint(0, layers + 1, (), generator=gen))
    return (model, to_sequence(ids, colours), layer)


def check_layer_features(fn: Callable[[GPT, torch.Tensor, int], torch.Tensor], **kw) -> CheckResult:
    """Lab 03: fn(model, seq (N, 1 + HW), layer) -> (N, width): the residual stream after
    `layer` (0 = the embeddings, 1..n_layer the blocks) through the layer norm that reads it
    (block layer+1's ln_1, or ln_f after the last block), averaged over every position of each
    whole image, as Image GPT's linear probes read them (Chen et al., 2020)."""
    return check_function(fn, lambda m, s, layer: layer_features(m, s)[layer], _features_inputs,
                          name="layer_features", trials=12, atol=1e-5,
                          hint="the model can give you every layer's hidden states at once; each "
                          "is read through the layer norm of whatever comes next; average over the "
                          "positions of a sequence, not over the images", **kw)
