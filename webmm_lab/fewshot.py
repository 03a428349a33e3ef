"""Few-shot evaluation in GPT-3's style: K demonstrations in the prompt, then the query.

Free-form answers are decoded greedily up to the end of the line and must match exactly;
multiple-choice answers are scored by their log-likelihood per token, and the best one wins.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


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
