"""One module per notebook's experiment: its setup dataclass, data, model building, evaluation,
and its `webmm-lab train NAME` entry (`main`). Experiments use models/, data/ and the core;
nothing below them imports an experiment.

    gpt.py          notebook 02: a character-level GPT on Python's documentation, few-shot evaluation
    igpt.py         notebook 03: Image GPT on a palette of colours, completions, linear probes
    musenet.py      notebook 04: scores as tokens, composing in a style
    style.py        notebook 04: a judge of style on a note list's statistics, a listener's measures
    jukebox.py      notebook 05: rendered audio, three VQ-VAEs, a conditioned prior and upsamplers
    sound_score.py  notebook 05: CLIP's loss between rendered sound and its score, the pitch template
    dalle.py        notebook 06: image tokenizers, DALL·E's transformer, sampling, CLIP reranking
    dalle_judge.py  notebook 06: a judge that never saw CLIP, the tokenizers' report, reranking's diagnostics
    clip.py         notebook 07: CLIP on the synthetic world, zero-shot evaluation
    web.py          notebook 08: filtering a mini web, equal compute, accumulation, prompt search, distillation
    dedup.py        notebook 08: near-copies of an image found among thousands
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, fields, replace

from ..paths import results_dir


def setup_parser(prog: str, description: str, defaults, helps: dict[str, str],
                 out: str) -> argparse.ArgumentParser:
    """A `webmm-lab train NAME` parser: an option --NAME for each field of the setup dataclass
    `defaults` named in `helps` (typed and defaulted from it), and the options every trainer
    has: --out (the model file, default `out` in the results folder, $WEBMM_RESULTS or
    results/), --checkpoint NAME and --stop-after N."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", default=None, help=f"where rank 0 writes the model (default {out} "
                        "in the results folder: $WEBMM_RESULTS, else results/)")
    parser.set_defaults(out_name=out)
    parser.add_argument("--checkpoint", default=None, metavar="NAME", help="checkpoint under this "
                        "name and resume from it if interrupted, on any number of processes")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after this many steps, "
                        "as if cut off (with --checkpoint: run again to resume); for demonstrations and tests")
    kinds = {f.name: type(getattr(defaults, f.name)) for f in fields(defaults)}
    for name, text in helps.items():
        if name not in kinds:
            raise KeyError(f"{type(defaults).__name__} has no setting {name!r}")
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kinds[name], default=value,
                            help=f"{text} (default {value})")
    return parser


def parse_setup(parser: argparse.ArgumentParser, defaults, argv: list[str] | None):
    """(the setup dataclass with the command line's values, all parsed arguments)."""
    args = parser.parse_args(argv)
    if getattr(args, "out", "") is None:
        args.out = str(results_dir() / args.out_name)
    return replace(defaults, **{k: v for k, v in vars(args).items() if k in asdict(defaults)}), args
