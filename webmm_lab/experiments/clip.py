"""CLIP on the synthetic world (notebook 07): the training data, the model, zero-shot
evaluation, and `webmm-lab train clip`, on one process or on several under torchrun.

    setup = ClipSetup(steps=800, batch=128)
    world = ClipWorld.build(setup)             # training scenes, images, a BPE tokenizer of captions
    model = build_clip(setup, world)
    history = train_clip(model, world, setup)  # the course's loop; the logit scale clamped each step
    images, labels = eval_set(setup, "held-out", 500)
    accuracy(predict(model, world, images), labels)

Under torchrun every process builds the same world, takes its slice of each global batch and
`clip_loss` gathers the features of all processes, so 2 processes x 64 pairs train the same
model as 1 process x 128 (exactly so with norm="group"; BatchNorm statistics are per process).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..batches import step_generator
from ..checkpoint import save_checkpoint
from ..data.tokenizers import BPETokenizer, pad_batch
from ..data.world import COLOURS, SHAPES, Scene, caption, render, sample_scenes
from ..device import evaluating, pick_device
from ..distributed import main_on_processes
from ..models.clip import CLIP, zero_shot_weights
from ..models.cnn import ConvEncoder
from ..models.contrastive import chunked_clip_loss, clamp_logit_scale, clip_loss
from ..models.gpt import GPT, GPTConfig
from ..train import History, train
from . import parse_setup, setup_parser

PAIRS = [(shape, colour) for shape in SHAPES for colour in COLOURS]    # the 48 classes
CLASS_NAMES = [f"{colour} {shape}" for shape, colour in PAIRS]         # "red circle", ...
END = "|"                                                              # end-of-text marker
DEFAULT_TEMPLATE = "a {}"
EVAL_KINDS = ("held-out", "seen", "outline", "sketch", "noise")


@dataclass(kw_only=True)
class ClipSetup:
    """Everything that defines a CLIP run on the world (the notebook's profiles fill it in)."""
    pool: int = 20000              # training scenes (each seen with a fresh random caption)
    resolution: int = 32
    held_out: int = 10             # (shape, colour) pairs never seen together in training
    outline_shapes: tuple[str, ...] = ("circle", "square", "triangle")
    outline_fraction: float = 0.25  # share of training scenes drawn in outline (those shapes only)
    vocab: int = 400               # BPE learned from captions; 400 lets it run to completion:
                                   # every caption word one token (395 tokens in all)
    width: int = 8                 # image tower: ConvEncoder(3, width) -> 4 * width features
    norm: str = "batch"            # "batch" or "group" (see models/cnn.py)
    text_width: int = 64
    text_layers: int = 2
    heads: int = 2
    context: int = 32              # longest caption in tokens
    embed_dim: int = 64
    batch: int = 128               # the global batch: the softmax's N
    chunk: int = 0                 # > 0: softmax over chunks of this many pairs instead
    steps: int = 800
    lr: float = 2e-3
    seed: int = 0                  # model initialisation and batch order (the data is fixed)


def held_out_pairs(n: int, seed: int = 123) -> set[tuple[str, str]]:
    """`n` (shape, colour) pairs to keep out of training, the same for every run."""
    rng = np.random.default_rng(seed)
    return {PAIRS[i] for i in rng.choice(len(PAIRS), n, replace=False)}


def seen_classes(setup: ClipSetup) -> list[int]:
    """Indices (into PAIRS) of the pairs that appear in training."""
    held = held_out_pairs(setup.held_out)
    return [i for i, p in enumerate(PAIRS) if p not in held]


def training_scenes(setup: ClipSetup) -> list[Scene]:
    """The training pool: filled shapes of every seen pair, plus outline drawings ("an outline
    drawing of ...") of `outline_shapes` only; the other shapes are never drawn in outline."""
    held = held_out_pairs(setup.held_out)
    n_outline = round(setup.pool * setup.outline_fraction) if setup.outline_shapes else 0
    scenes = sample_scenes(setup.pool - n_outline, seed=0, held_out=held)
    if n_outline:
        scenes += sample_scenes(n_outline, seed=1, objects=list(setup.outline_shapes),
                                held_out=held, styles=("outline",))
    return scenes


def eval_scenes(setup: ClipSetup, kind: str, n: int, seed: int = 0) -> list[Scene]:
    """Test scenes, never in the training pool:
    held-out  the held-out pairs, filled (zero-shot on new combinations)
    seen      seen pairs, filled, new images (in distribution)
    outline   seen pairs, outline drawings of the shapes that training drew in outline
    sketch    seen pairs, outline drawings of the other shapes (a shift: never drawn so)
    noise     seen pairs, filled, on a noisy background (render with background="noise")."""
    if kind not in EVAL_KINDS:
        raise ValueError(f"unknown eval set {kind!r}; choose from {EVAL_KINDS}")
    held = held_out_pairs(setup.held_out)
    seed = 1000 + 10 * seed + EVAL_KINDS.index(kind)
    if kind == "held-out":
        return sample_scenes(n, seed=seed, held_out=held, split="test")
    others = [s for s in SHAPES if s not in setup.outline_shapes]
    if kind in ("outline", "sketch"):
        objects = list(setup.outline_shapes) if kind == "outline" else others
        return sample_scenes(n, seed=seed, objects=objects, held_out=held, styles=("outline",))
    return sample_scenes(n, seed=seed, held_out=held)


def eval_set(setup: ClipSetup, kind: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, R, R) and labels (n,) (indices into PAIRS) of an `eval_scenes` set."""
    scenes = eval_scenes(setup, kind, n, seed)
    images = render(scenes, setup.resolution, background="noise" if kind == "noise" else "black",
                    seed=seed)
    return images, pair_labels(scenes)


def pair_labels(scenes: list[Scene]) -> torch.Tensor:
    """Each scene's class: the index of its (shape, colour) in PAIRS."""
    return torch.tensor([PAIRS.index((s.obj, s.colour)) for s in scenes])


@dataclass
class ClipWorld:
    """The training pool as tensors, and the tokenizer of its captions."""
    setup: ClipSetup
    scenes: list[Scene]
    images: torch.Tensor                   # (N, 3, R, R) uint8, to save memory
    tokenizer: BPETokenizer
    cache: dict = field(default_factory=dict, repr=False)   # caption -> token ids

    @classmethod
    def build(cls, setup: ClipSetup, scenes: list[Scene] | None = None, caption_sample: int = 4000,
              **extra) -> "ClipWorld":
        """Render `scenes` (default: the pool of `training_scenes(setup)`) and learn a BPE
        vocabulary from one random caption of each of `caption_sample` of them; `extra` fills a
        subclass's own fields (notebook 06's `DalleWorld`)."""
        scenes = training_scenes(setup) if scenes is None else scenes
        images = torch.cat([(render(scenes[i:i + 10000], setup.resolution) * 255).round().to(torch.uint8)
                            for i in range(0, len(scenes), 10000)])       # in parts: less peak memory
        rng = np.random.default_rng(99)
        sample = rng.choice(len(scenes), min(caption_sample, len(scenes)), replace=False)   # every kind of scene
        text = "\n".join(caption(scenes[i], rng) + END for i in sample)
        return cls(setup, scenes, images, BPETokenizer.train(text, setup.vocab), **extra)

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids (B, T) and lengths (B,) of `texts`, each ending in the END marker."""
        return pad_batch(self.tokenizer, texts, end=END, max_len=self.setup.context, cache=self.cache)

    def batches(self, batch: int | None = None, seed: int | None = None):
        """batch_fn(step) -> (images (B, 3, R, R) float, ids (B, T), lengths (B,)): random scenes,
        each with a random caption; under torchrun `train` gives each process its rows."""
        batch = batch or self.setup.batch
        seed = self.setup.seed if seed is None else seed

        def batch_fn(step: int):
            g = step_generator(seed, step)
            idx = torch.randint(len(self.scenes), (batch,), generator=g)
            rng = np.random.default_rng([seed, step])
            ids, lengths = self.tokens([caption(self.scenes[i], rng) for i in idx.tolist()])
            return self.images[idx].float() / 255, ids, lengths
        return batch_fn

    def label_batches(self, batch: int | None = None, seed: int | None = None):
        """batch_fn(step) -> (images, labels): the same images with class labels (indices into
        PAIRS), for the supervised baseline."""
        batch = batch or self.setup.batch
        seed = self.setup.seed if seed is None else seed
        labels = pair_labels(self.scenes)

        def batch_fn(step: int):
            idx = torch.randint(len(self.scenes), (batch,), generator=step_generator(seed, step))
            return self.images[idx].float() / 255, labels[idx]
        return batch_fn

    def encode_texts(self, model: CLIP, texts: list[str]) -> torch.Tensor:
        """Unit-length text embeddings (n, D), on the model's device."""
        device = next(model.parameters()).device
        ids, lengths = self.tokens(texts)
        return model.encode_text(ids.to(device), lengths.to(device))


def build_clip(setup: ClipSetup, world: ClipWorld) -> CLIP:
    """The two towers: a small CNN for images, a causal transformer for captions."""
    torch.manual_seed(setup.seed)
    text = GPT(GPTConfig(vocab_size=world.tokenizer.vocab_size, block_size=setup.context, n_layer=setup.text_layers,
                         n_head=setup.heads,
                         n_embd=setup.text_width))
    return CLIP(ConvEncoder(3, setup.width, setup.norm), text, setup.embed_dim)


def train_clip(model: CLIP, world: ClipWorld, setup: ClipSetup, *, eval_fn=None,
               eval_every: int | None = None, run: str | None = None,
               device: torch.device | str | None = None, progress: bool = True,
               stop_after: int | None = None) -> History:
    """Train `model` with CLIP's loss (or the chunked one if setup.chunk) on the course's loop,
    clamping the logit scale after every step. Every evaluation also logs exp(logit_scale).
    Under torchrun the loop wraps the model in DDP and the loss gathers every process's features."""
    def loss_fn(m, batch):
        image, text = m(*batch)
        scale = model.logit_scale          # m may be the DDP wrapper around model
        if setup.chunk:
            return chunked_clip_loss(image, text, scale, setup.chunk)
        return clip_loss(image, text, scale)

    def evaluate(m) -> dict[str, float]:
        return {"logit scale": m.logit_scale.exp().item(), **(eval_fn(m) if eval_fn else {})}

    return train(model, loss_fn, world.batches(setup.batch, setup.seed), steps=setup.steps, lr=setup.lr, run=run,
                 eval_fn=evaluate, eval_every=eval_every or max(1, setup.steps // 20),
                 seed=setup.seed, after_step=lambda m: clamp_logit_scale(m.logit_scale),
                 device=device, progress=progress, stop_after=stop_after, setup=setup)


def predict(model: CLIP, world: ClipWorld, images: torch.Tensor,
            templates: list[str] = (DEFAULT_TEMPLATE,), classes: list[int] | None = None,
            batch: int = 512) -> torch.Tensor:
    """Zero-shot class of each image (indices into PAIRS), choosing among `classes` (default
    all 48) by the prompt-ensembled text embeddings of their names."""
    classes = list(range(len(PAIRS))) if classes is None else list(classes)
    with evaluating(model) as device:
        weights = zero_shot_weights(lambda texts: world.encode_texts(model, texts),
                                    [CLASS_NAMES[c] for c in classes], list(templates))   # (D, C)
        scores = torch.cat([model.encode_image(x.to(device)) @ weights for x in images.split(batch)])
        return torch.tensor(classes)[scores.argmax(1).cpu()]


CONFIDENCES = ("probability", "margin", "similarity")


def predict_with_confidence(model: CLIP, world: ClipWorld, images: torch.Tensor,
                            templates: list[str] = (DEFAULT_TEMPLATE,), classes: list[int] | None = None,
                            batch: int = 512) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`predict`'s classes (n,) and three measures of CLIP's confidence in each, {name: (n,)}:
    "probability" of the chosen class (softmax over `classes`, logits scaled by the model's
    logit scale), "margin" between the two most probable classes, and "similarity", the cosine
    of the image with its chosen class's text."""
    classes = list(range(len(PAIRS))) if classes is None else list(classes)
    with evaluating(model) as device:
        weights = zero_shot_weights(lambda texts: world.encode_texts(model, texts),
                                    [CLASS_NAMES[c] for c in classes], list(templates))   # (D, C)
        sims = torch.cat([model.encode_image(x.to(device)) @ weights for x in images.split(batch)]).float().cpu()
        probs = (model.logit_scale.exp().cpu() * sims).softmax(1)                        # (n, C)
    top = probs.topk(min(2, len(classes)), 1).values
    index = sims.argmax(1)
    confidence = {"probability": top[:, 0], "margin": top[:, 0] - top[:, -1],
                  "similarity": sims.max(1).values}
    return torch.tensor(classes)[index], confidence


def accuracy_coverage(correct: torch.Tensor, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A classifier that answers only when it is confident enough: for every coverage (the share
    of examples it answers, most confident first), the accuracy on those it answers.
    Returns (coverage (n,), accuracy (n,)), both in [0, 1]."""
    order = confidence.argsort(descending=True)
    hits = correct[order].float().cumsum(0)
    answered = torch.arange(1, len(order) + 1, dtype=torch.float)
    return answered / len(order), hits / answered


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of matching entries."""
    return (predicted == labels).float().mean().item() * 100


def one_attribute_reader(labels: torch.Tensor, candidates: set[tuple[str, str]], attribute: str) -> float:
    """Zero-shot's cheapest rival: a reader that sees only the image's colour (or only its
    shape) and picks at random among the `candidates` pairs (shape, colour) that share it. Its
    expected accuracy on `labels` (indices into PAIRS), in percent: the mean of 1 / (candidates
    with the image's attribute)."""
    if attribute not in ("colour", "shape"):
        raise ValueError(f"attribute must be 'colour' or 'shape', got {attribute!r}")
    part = 1 if attribute == "colour" else 0
    share = [sum(c[part] == PAIRS[y][part] for c in candidates) for y in labels.tolist()]
    if not share or min(share) == 0:
        raise ValueError("every label must be one of the candidate pairs")
    return 100 * sum(1 / n for n in share) / len(share)


def supervised_model(setup: ClipSetup) -> nn.Sequential:
    """The baseline: CLIP's image tower with a linear classifier over the 48 pairs."""
    torch.manual_seed(setup.seed)
    encoder = ConvEncoder(3, setup.width, setup.norm)
    return nn.Sequential(encoder, nn.Linear(encoder.out_dim, len(PAIRS)))


def predict_supervised(model: nn.Module, images: torch.Tensor, classes: list[int] | None = None,
                       batch: int = 512) -> torch.Tensor:
    """The supervised model's class of each image (indices into PAIRS), among `classes`."""
    classes = list(range(len(PAIRS))) if classes is None else list(classes)
    with evaluating(model) as device:
        logits = torch.cat([model(x.to(device)) for x in images.split(batch)])[:, classes]
        return torch.tensor(classes)[logits.argmax(1).cpu()]


def gallery(scenes: list[Scene], resolution: int = 64, seed: int = 0, ncols: int = 6,
            background: str = "black", size: float = 2.0):
    """Render `scenes` in a grid with a caption under each image (a random template per scene,
    fixed by `seed`). Returns the figure."""
    from ..plots import image_grid                 # matplotlib only where a picture is drawn
    rng = np.random.default_rng(seed)
    captions = [caption(s, rng) for s in scenes]
    return image_grid(render(scenes, resolution, background, seed), captions, ncols=ncols, size=size,
                      title_size=7, wrap=int(4 + 11 * size), below=True)


def main(argv: list[str] | None = None) -> int:
    """`webmm-lab train clip`: train notebook 07's CLIP, on one process or on several under torchrun.

        torchrun --standalone --nproc_per_node=2 --no-python webmm-lab train clip --steps 800
    """
    helps = {"pool": "training scenes", "batch": "global batch (split among processes)",
             "chunk": "> 0: softmax over chunks of this many pairs", "steps": "optimizer steps",
             "seed": "initialisation and batch order", "width": "image tower width",
             "vocab": "BPE vocabulary size", "lr": "peak learning rate"}
    parser = setup_parser("webmm-lab train clip", main.__doc__.split("\n")[0], ClipSetup(), helps,
                          out="clip.pt")
    parser.add_argument("--norm", choices=["batch", "group"], default=ClipSetup.norm,
                        help="image tower normalisation; group: 2 processes = 1 exactly (default batch)")
    parser.add_argument("--eval", type=int, default=500, help="held-out test images (0: skip)")
    setup, args = parse_setup(parser, ClipSetup(), argv)

    def body(rank: int, world_size: int) -> None:
        t0 = time.perf_counter()
        world = ClipWorld.build(setup)
        model = build_clip(setup, world)
        history = train_clip(model, world, setup, run=args.checkpoint, device=pick_device(),
                             progress=rank == 0, eval_every=setup.steps, stop_after=args.stop_after)
        if rank == 0 and len(history.loss) == setup.steps:
            result = {"processes": world_size, "steps": setup.steps, "global batch": setup.batch,
                      "seconds": round(time.perf_counter() - t0, 1),
                      "final loss": round(history.loss[-1], 4),
                      "logit scale": round(model.logit_scale.exp().item(), 2)}
            if args.eval:
                images, labels = eval_set(setup, "held-out", args.eval)
                result["held-out zero-shot accuracy (%)"] = round(accuracy(predict(model, world, images), labels), 1)
            save_checkpoint({"model": model.state_dict(), "setup": asdict(setup),
                             "merges": world.tokenizer.merges, "loss": history.loss,
                             "result": result}, args.out)
            print(json.dumps(result, indent=1))
            print(f"model written to {args.out}")
    return main_on_processes(body)


if __name__ == "__main__":
    sys.exit(main())
