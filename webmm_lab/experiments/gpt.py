"""GPT on the course's text (notebook 02): the data (Python's documentation and few-shot task
episodes, characters as tokens), the model, validation loss, GPT-3-style few-shot evaluation,
and `webmm-lab train gpt`, on one process or on several under torchrun.

    setup = GptSetup(layers=2, heads=3, width=96)
    text = GptText.build(setup)              # tokenizer, token streams, held-out words
    model = build_gpt(setup, text)
    history = train_gpt(model, text, setup)  # the course's loop
    text.val_loss(model), text.bigram_loss()

Few-shot evaluation: K demonstrations in the prompt, then the query. Free-form answers are
decoded greedily up to the end of the line and must match exactly; multiple-choice answers are
scored by their log-likelihood per token, and the best one wins.
"""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..batches import window_batches
from ..checkpoint import save_checkpoint
from ..data import load
from ..data.tasks import TASKS, real_words, task_stream
from ..data.tokenizers import CharTokenizer
from ..device import evaluating, pick_device, seed_everything
from ..distributed import main_on_processes
from ..metrics import bigram_loss, lm_loss, mean_loss
from ..models.gpt import GPT, GPTConfig
from ..train import History, train
from . import parse_setup, setup_parser


@dataclass(kw_only=True)
class GptSetup:
    """Everything that defines a GPT run on the course's text (notebook 02's profiles fill it in)."""
    layers: int = 2
    heads: int = 3
    width: int = 96
    block: int = 320               # the model's context: few-shot prompts run longer than windows
    train_block: int = 256         # training windows of this many characters
    batch: int = 6                 # the global batch (split among processes under torchrun)
    tokens: int = 5_000_000        # training characters: steps = tokens / (batch * train_block)
    lr: float = 6e-3
    corpus_frac: float = 0.3       # share of windows from the documentation; the rest: tasks
    seed: int = 0                  # model initialisation and batch order (the data is fixed)

    @property
    def steps(self) -> int:
        return int(self.tokens / (self.batch * self.train_block))


@dataclass
class GptText:
    """The training text as token streams, its tokenizer, and the words held out for few-shot."""
    setup: GptSetup
    tokenizer: CharTokenizer
    corpus: torch.Tensor           # (N,) ids of the documentation's training passages
    tasks: torch.Tensor            # (M,) ids of few-shot episodes on random letter strings
    val: torch.Tensor              # (V,) ids of the validation passages
    eval_words: list[str]          # real 4-letter words, never used in the task episodes

    @classmethod
    def build(cls, setup: GptSetup) -> "GptText":
        """Python's documentation (train/val passages) and task episodes on random strings
        that exclude every real 4-letter word of the documentation."""
        docs, docs_val = load("python-docs", split="train"), load("python-docs", split="val")
        eval_words = real_words(docs.text + docs_val.text)
        tasks_text = task_stream(int(setup.tokens * (1 - setup.corpus_frac) * 1.1),
                                 np.random.default_rng(0), exclude=set(eval_words))
        tok = CharTokenizer.from_text(docs.text, docs_val.text, tasks_text)
        as_ids = lambda text: torch.tensor(tok.encode(text))
        return cls(setup, tok, as_ids(docs.text), as_ids(tasks_text), as_ids(docs_val.text), eval_words)

    def batches(self, batch: int | None = None, seed: int | None = None):
        """batch_fn(step) -> (inputs, targets), each (B, train_block): windows of the corpus
        (share corpus_frac) and of the task episodes."""
        s = self.setup
        return window_batches([self.corpus, self.tasks], batch or s.batch, s.train_block,
                              weights=[s.corpus_frac, 1 - s.corpus_frac],
                              seed=s.seed if seed is None else seed)

    def val_loss(self, model: GPT) -> float:
        """Mean cross-entropy (nats per character) on the validation text, in windows of train_block."""
        T = self.setup.train_block
        n = (len(self.val) - 1) // T * T
        x, y = self.val[:n].view(-1, T), self.val[1:n + 1].view(-1, T)       # (W, T) each
        with evaluating(model) as device:
            return mean_loss((model(a.to(device), b.to(device))[1], b.numel())
                             for a, b in zip(x.split(64), y.split(64)))

    def bigram_loss(self) -> float:
        """Validation loss of an add-one-smoothed bigram model of the corpus: the baseline."""
        return bigram_loss(self.corpus, self.val, self.tokenizer.vocab_size)


def build_gpt(setup: GptSetup, text: GptText) -> GPT:
    """A character-level GPT of the setup's size (initialised from setup.seed)."""
    seed_everything(setup.seed)
    return GPT(GPTConfig(vocab_size=text.tokenizer.vocab_size, block_size=setup.block, n_layer=setup.layers,
                         n_head=setup.heads, n_embd=setup.width))


def train_gpt(model: GPT, text: GptText, setup: GptSetup, *, run: str | None = None,
              evals: int = 4, device: torch.device | str | None = None, progress: bool = True,
              stop_after: int | None = None,
              few_shot: dict[int, tuple[list[str], list[str]]] | None = None) -> History:
    """Train on the course's loop, with the validation loss measured `evals` times (see `train`
    for `run` and `stop_after`). With `few_shot` ({K: (prompts, answers)}, see `few_shot_set`)
    each evaluation also measures the exact-match accuracy of every K ("k0", "k8", ...): the
    few-shot ability over training."""
    def evaluate(m: GPT) -> dict[str, float]:
        out = {"val_loss": text.val_loss(m)}
        for K, (prompts, answers) in (few_shot or {}).items():
            out[f"k{K}"] = exact_match(greedy_answers(m, text.tokenizer, prompts, max_new_tokens=10), answers)
        return out
    return train(model, lm_loss, text.batches(), steps=setup.steps, lr=setup.lr, run=run,
                 eval_fn=evaluate, eval_every=max(1, setup.steps // evals), seed=setup.seed,
                 device=device, progress=progress, stop_after=stop_after, setup=setup)


def few_shot_set(words: list[str], K: int, per_task: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """GPT-3-style prompts with K demonstrations, `per_task` of every task of data.tasks, on
    `words` (each prompt K + 1 distinct words: K demonstrations, then the query), and their
    answers. The draw depends only on (seed, K)."""
    if len(words) < K + 1:
        raise ValueError(f"{len(words)} words cannot make prompts of {K} demonstrations and a query")
    rng = np.random.default_rng(seed + K)
    prompts, answers = [], []
    for f in TASKS.values():
        for _ in range(per_task):
            chosen = [words[i] for i in rng.choice(len(words), K + 1, replace=False)]
            prompts.append(few_shot_prompt([(w, f(w)) for w in chosen[:K]], chosen[K]))
            answers.append(f(chosen[K]))
    return prompts, answers


def first_reached(history: History, key: str, base: str, target: float) -> float | None:
    """The share of training (0 to 1] at the first evaluation where eval[key] - eval[base] reached
    `target`, or None if none did: when an ability appeared."""
    steps = max(history.steps[-1] + 1, 1) if history.steps else 1
    for e in history.evals:
        if key in e and e[key] - e[base] >= target:
            return e["step"] / steps
    return None


def few_shot_prompt(demos: list[tuple[str, str]], query: str, sep: str = " = ", end: str = "\n") -> str:
    """K demonstrations 'input = output' one per line, then 'query =' awaiting its answer."""
    return "".join(f"{x}{sep}{y}{end}" for x, y in demos) + f"{query}{sep}"


@torch.no_grad()
def greedy_answers(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int,
                   stop: str = "\n", batch_size: int = 256) -> list[str]:
    """Greedy continuation of each prompt up to `stop` (not included). Prompts of equal token
    length are decoded together in batches with the KV cache."""
    device = next(model.parameters()).device
    stop_id = tokenizer.encode(stop)[-1]
    encoded = [tokenizer.encode(p) for p in prompts]
    groups = defaultdict(list)
    for i, ids in enumerate(encoded):
        groups[len(ids)].append(i)
    answers = [""] * len(prompts)
    for length, members in groups.items():
        for s in range(0, len(members), batch_size):
            chunk = members[s:s + batch_size]
            idx = torch.tensor([encoded[i] for i in chunk], device=device)          # (b, length)
            out = model.generate(idx, max_new_tokens, temperature=0, stop_token=stop_id)
            for i, row in zip(chunk, out[:, length:].tolist()):
                text = tokenizer.decode(row)
                answers[i] = text.split(stop)[0]
    return answers


def exact_match(predictions: list[str], answers: list[str]) -> float:
    """Fraction of predictions equal to their answers."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    return sum(p == a for p, a in zip(predictions, answers)) / max(1, len(answers))


@torch.no_grad()
def choice_scores(model: nn.Module, tokenizer, prompt: str, choices: list[str]) -> torch.Tensor:
    """Mean log-probability per token of each choice as the continuation of `prompt`: (n_choices,)."""
    device = next(model.parameters()).device
    p = tokenizer.encode(prompt)
    scores = []
    for choice in choices:
        c = tokenizer.encode(choice)
        if not c:
            raise ValueError("an empty choice has no tokens to score")
        ids = torch.tensor([p + c], device=device)                         # (1, P + C)
        logits, _ = model(ids[:, :-1])
        logp = logits.float().log_softmax(-1)[0, len(p) - 1:]              # (C, vocab)
        scores.append(logp.gather(1, ids[0, len(p):, None]).mean())
    return torch.stack(scores)


def choose(model: nn.Module, tokenizer, prompt: str, choices: list[str]) -> int:
    """Index of the choice with the highest per-token log-likelihood."""
    return int(choice_scores(model, tokenizer, prompt, choices).argmax())


def main(argv: list[str] | None = None) -> int:
    """`webmm-lab train gpt`: train notebook 02's GPT, on one process or on several under torchrun.

        torchrun --standalone --nproc_per_node=2 --no-python webmm-lab train gpt --tokens 400000
    """
    helps = {"layers": "transformer blocks", "heads": "attention heads", "width": "embedding width",
             "block": "context length", "train_block": "training window length",
             "batch": "global batch (split among processes)",
             "tokens": "training characters (steps = tokens / (batch * train_block))",
             "lr": "peak learning rate", "corpus_frac": "share of documentation windows",
             "seed": "initialisation and batch order"}
    parser = setup_parser("webmm-lab train gpt", main.__doc__.split("\n")[0], GptSetup(), helps,
                          out="gpt.pt")
    setup, args = parse_setup(parser, GptSetup(), argv)

    def body(rank: int, world: int) -> None:
        t0 = time.perf_counter()
        text = GptText.build(setup)
        model = build_gpt(setup, text)
        history = train_gpt(model, text, setup, run=args.checkpoint, device=pick_device(),
                            progress=rank == 0, stop_after=args.stop_after)
        if rank == 0 and len(history.loss) == setup.steps:
            result = {"processes": world, "steps": setup.steps, "global batch": setup.batch,
                      "seconds": round(time.perf_counter() - t0, 1),
                      "final loss": round(history.loss[-1], 4),
                      "validation loss (nats/char)": round(history.last_eval()["val_loss"], 4),
                      "bigram validation loss": round(text.bigram_loss(), 4)}
            save_checkpoint({"model": model.state_dict(), "setup": asdict(setup),
                             "vocab": text.tokenizer.chars, "loss": history.loss, "result": result},
                            args.out)
            print(json.dumps(result, indent=1))
            print(f"model written to {args.out}")
    return main_on_processes(body)


if __name__ == "__main__":
    sys.exit(main())
