"""One module per notebook's experiment: its setup dataclass, data, model building, evaluation,
and its `webmm-lab train NAME` entry (`main`). Experiments use models/, data/ and the core;
nothing below them imports an experiment.

    gpt.py    notebook 02: a character-level GPT on Python's documentation, few-shot evaluation
    clip.py   notebook 07: CLIP on the synthetic world, zero-shot evaluation
"""
from __future__ import annotations

import argparse
from dataclasses import fields


def setup_parser(prog: str, description: str, defaults, helps: dict[str, str]) -> argparse.ArgumentParser:
    """A command-line parser with an option --NAME for each field of the setup dataclass
    `defaults` named in `helps`, typed and defaulted from it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    kinds = {f.name: type(getattr(defaults, f.name)) for f in fields(defaults)}
    for name, text in helps.items():
        if name not in kinds:
            raise KeyError(f"{type(defaults).__name__} has no setting {name!r}")
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kinds[name], default=value,
                            help=f"{text} (default {value})")
    return parser
