"""Web scale and beyond (notebook 08): filtering a mini web, equal-compute CLIP training, what
gradient accumulation does to a contrastive loss, prompt search, distillation, compute at scale.

    web = build_web(6000)                                   # data/web.py: pairs and their truth
    blocked = keyword_filter(web.captions)                  # (n,) bool: a BLOCKLIST word in any form
    score_filter(blocked, web.mask("blocked"))             # precision, recall, false removals
    world = PairWorld.build(setup, web.images, web.captions)   # notebook 07's recipe on fixed captions
    clip = build_clip(setup, world); train_clip(clip, world, setup)

The keyword filter normalises before it matches (Unicode forms, accents, look-alike letters,
invisible characters, case, plurals, punctuation, letters spaced or split apart, Korean
particles) and matches whole words, so "gruel" survives while "G R U E" does not.
De-duplication has its own module, `experiments/dedup.py`.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batches import step_generator
from ..data.filter_cases import BLOCKLIST_KO
from ..data.filter_forms import KeywordTestSet, confusables
from ..data.images import unit_float
from ..data.tokenizers import BPETokenizer
from ..data.web import BLOCKLIST
from ..device import evaluating
from ..metrics import mean_loss
from ..models.clip import CLIP
from ..models.contrastive import clip_loss
from .clip import END, ClipSetup, ClipWorld

# ------------------------------------------------------------------ the keyword filter

KOREAN_PARTICLES = ("에서", "으로", "까지", "부터", "이", "가", "을", "를", "은", "는", "의", "에",
                    "와", "과", "도", "로", "만")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
WORD = re.compile(r"[^\W_]+")            # a word: a run of letters or digits of any script


@lru_cache(maxsize=1)
def skeleton_table() -> dict[int, str]:
    """{character: the lower-case ASCII letter it imitates}, for every character that Unicode's
    confusables table (data.filter_forms.confusables) lists for a Latin letter, in the manner of
    UTS #39's skeletons. ASCII letters keep their own identity (so "l" and "I" stay apart, as
    words do); a character listed for several letters (Cyrillic І: I and l) maps to the first of
    them alphabetically."""
    groups: dict[str, set[str]] = {}
    for letter, look_alikes in confusables().items():
        for c in look_alikes:
            groups.setdefault(c, set()).add(letter.lower())
    return {ord(c): min(letters) for c, letters in groups.items()
            if not (c.isascii() and c.isalpha()) and not HANGUL.match(c)}


def normalise(text: str) -> str:
    """Text as the keyword filter reads it: every character Unicode lists as a look-alike of a
    Latin letter mapped to it (before and after the other steps), accents and other combining
    marks dropped, invisible format characters (zero-width spaces, soft hyphens) removed,
    compatibility forms folded (NFKC: full-width letters become plain ones), lower case. Hangul
    is kept as it is."""
    table = skeleton_table()                      # first: NFKD would split some look-alikes (ϲ, ˛)
    decomposed = unicodedata.normalize("NFKD", text.translate(table))
    kept = unicodedata.normalize("NFKC", "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Cf")))
    return kept.translate(table).casefold().translate(table)


def words_of(text: str) -> list[str]:
    """The words of a caption as the keyword filter reads them: `normalise`d, every run of
    characters that are not letters or digits (of any script) a separator ("G.R.U.E!" -> g,
    r, u, e; "스나크를 그린" -> 스나크를, 그린)."""
    return WORD.findall(normalise(text))


def _stems(word: str) -> set[str]:
    out = {word, word[:-1] if word.endswith("s") else word, word[:-2] if word.endswith("es") else word}
    if HANGUL.search(word):                                  # a Korean noun carries its particle
        out |= {word[:-len(p)] for p in KOREAN_PARTICLES if word.endswith(p) and len(word) > len(p)}
    return out


def candidate_words(words: list[str]) -> list[str]:
    """Every word, every two neighbours joined (a word split in two: "gr ue"), and every run of
    two or more one-letter words joined whole (letters spaced or dotted apart: "g r u e"), also
    without a one-letter English word at either end ("g r u e a" -> "grue"). Only whole runs,
    so the letters of an innocent spaced word ("g r u e l") never make a blocked one."""
    out = words + [a + b for a, b in zip(words, words[1:])]
    run: list[str] = []
    for w in words + [""]:                                   # "" closes the last run
        if len(w) == 1 and not HANGUL.search(w):
            run.append(w)
            continue
        if len(run) >= 2:
            out.append("".join(run))
            if run[-1] in ("a", "i"):
                out.append("".join(run[:-1]))
            if run[0] in ("a", "i"):
                out.append("".join(run[1:]))
        run = []
    return out


def keyword_filter(captions: list[str], blocklist: tuple[str, ...] = BLOCKLIST + BLOCKLIST_KO) -> torch.Tensor:
    """(n,) bool: the captions that contain a blocklist word, whole: in any case, as a plural,
    between punctuation, with its letters spaced or dotted apart, or split in two ("qu-ib"),
    in full-width or accented letters, with look-alike letters of other scripts or invisible
    characters inside, in Hangul with a particle attached ("스나크를"). A word that merely
    begins like one ("gruel", "quibble", "스낵") is not blocked."""
    block = {normalise(w) for w in blocklist}
    return torch.tensor([any(_stems(w) & block for w in candidate_words(words_of(t))) for t in captions],
                        dtype=torch.bool)


def substring_filter(captions: list[str], blocklist: tuple[str, ...] = BLOCKLIST + BLOCKLIST_KO) -> torch.Tensor:
    """(n,) bool: a blocklist word anywhere in the lower-cased caption, even inside another word."""
    return torch.tensor([any(w in c.lower() for w in blocklist) for c in captions], dtype=torch.bool)


def exact_word_filter(captions: list[str], blocklist: tuple[str, ...] = BLOCKLIST + BLOCKLIST_KO) -> torch.Tensor:
    """(n,) bool: a blocklist word among the caption's lower-cased words, as written."""
    block = set(blocklist)
    return torch.tensor([bool(set(WORD.findall(c.lower())) & block) for c in captions], dtype=torch.bool)


def nfkc_filter(captions: list[str], blocklist: tuple[str, ...] = BLOCKLIST + BLOCKLIST_KO) -> torch.Tensor:
    """(n,) bool: whole words after Unicode's NFKC and case folding, and nothing more: what the
    standard library alone gives a filter."""
    block = {unicodedata.normalize("NFKC", w).casefold() for w in blocklist}
    return torch.tensor([bool(set(WORD.findall(unicodedata.normalize("NFKC", c).casefold())) & block)
                         for c in captions], dtype=torch.bool)


def block_nothing(captions: list[str], blocklist: tuple[str, ...] = ()) -> torch.Tensor:
    """(n,) bool, all False: the filter that removes nothing."""
    return torch.zeros(len(captions), dtype=torch.bool)


def score_keyword_test(filter_fn, test: KeywordTestSet) -> dict[str, float]:
    """A keyword filter on a generated test set (`data.filter_forms.keyword_test_set`): the
    blocked forms caught and the innocent captions removed (%), overall and by kind of form,
    and caught minus removed ("J", Youden's index in points: 0 for a filter that does nothing)."""
    caught = filter_fn([c for c, _ in test.blocked], test.blocklist)
    removed = filter_fn([c for c, _ in test.innocent], test.blocklist)
    by_kind = lambda rows, hits: {k: 100 * hits[[kind == k for _, kind in rows]].float().mean().item()
                                  for k in dict.fromkeys(kind for _, kind in rows)}
    out = {"caught": 100 * caught.float().mean().item(), "removed": 100 * removed.float().mean().item(),
           "caught by kind": by_kind(test.blocked, caught), "removed by kind": by_kind(test.innocent, removed)}
    out["J"] = out["caught"] - out["removed"]
    return out


def score_keyword_cases(filter_fn=None, cases=None) -> dict:
    """A keyword filter (default `keyword_filter`) on held-out cases (default
    `data.filter_cases.FILTER_CASES`): recall of the blocked ones and false removals among the
    innocent ones (%), and the cases it gets wrong: (caption, should block, what it tests)."""
    from ..data.filter_cases import FILTER_CASES
    filter_fn = filter_fn or keyword_filter
    cases = FILTER_CASES if cases is None else cases
    got = filter_fn([c for c, _, _ in cases]).tolist()
    bad = [case for case, g in zip(cases, got) if g != case[1]]
    n_blocked = sum(b for _, b, _ in cases)
    return {"recall": 100 * sum(g for g, (_, b, _) in zip(got, cases) if b) / max(1, n_blocked),
            "false removals": 100 * sum(g for g, (_, b, _) in zip(got, cases) if not b)
                              / max(1, len(cases) - n_blocked),
            "failures": bad}


# ------------------------------------------------------------------ scoring the filters

def score_filter(removed: torch.Tensor, bad: torch.Tensor) -> dict[str, float]:
    """Precision and recall (%) of a filter's removals against the pairs that should go, and
    the share of the others it removes anyway ("false removals", %)."""
    removed, bad = removed.bool(), bad.bool()
    tp = (removed & bad).sum().item()
    return {"precision": 100 * tp / max(1, removed.sum().item()), "recall": 100 * tp / max(1, bad.sum().item()),
            "false removals": 100 * (removed & ~bad).sum().item() / max(1, (~bad).sum().item()),
            "removed": int(removed.sum())}


# ------------------------------------------------------------------ CLIP on fixed captions

@dataclass
class PairWorld(ClipWorld):
    """Image / caption pairs with fixed captions (the web's alt texts), for notebook 07's
    recipe: `train_clip(model, world, setup)` runs on it unchanged."""
    texts: list[str] = None

    @classmethod
    def build(cls, setup: ClipSetup, images: torch.Tensor, texts: list[str],
              tokenizer: BPETokenizer | None = None) -> "PairWorld":
        """images (n, 3, R, R) uint8, their captions; the BPE tokenizer is learned from the
        captions unless given (give the same one to runs that must compare)."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} captions")
        tokenizer = tokenizer or BPETokenizer.train("\n".join(t + END for t in texts[:8000]), setup.vocab)
        return cls(setup, [], images, tokenizer, texts=list(texts))

    def batches(self, batch: int | None = None, seed: int | None = None):
        """batch_fn(step) -> (images (B, 3, R, R) float, ids (B, T), lengths (B,)): random pairs."""
        batch = batch or self.setup.batch
        seed = self.setup.seed if seed is None else seed

        def batch_fn(step: int):
            idx = torch.randint(len(self.texts), (batch,), generator=step_generator(seed, step))
            ids, lengths = self.tokens([self.texts[i] for i in idx.tolist()])
            return self.images[idx].float() / 255, ids, lengths
        return batch_fn


def pair_scores(model: CLIP, world: ClipWorld, images: torch.Tensor, texts: list[str],
                batch: int = 512) -> torch.Tensor:
    """(n,): CLIP's cosine similarity of each image with its own caption."""
    with evaluating(model) as device:
        out = []
        for i in range(0, len(texts), batch):
            x = images[i:i + batch]
            x = unit_float(x).to(device)
            out.append((model.encode_image(x) * world.encode_texts(model, texts[i:i + batch])).sum(1).cpu())
        return torch.cat(out)


def choose_threshold(scores: torch.Tensor, bad: torch.Tensor) -> float:
    """The score threshold (keep pairs at or above it) that classifies the most pairs right:
    `bad` pairs below it, the others at or above it."""
    cands = scores.sort().values
    correct = torch.stack([((scores < t) == bad).float().mean() for t in cands])
    return float(cands[correct.argmax()])


def contrastive_loss(model: CLIP, world: ClipWorld, images: torch.Tensor, texts: list[str],
                     batch: int = 128) -> float:
    """CLIP's loss on pairs, averaged over consecutive batches of `batch` (a last partial one
    dropped): how well the model tells each pair from the other pairs of its batch."""
    if len(texts) < batch:
        raise ValueError(f"need at least {batch} pairs, got {len(texts)}")
    with evaluating(model) as device:
        return mean_loss((clip_loss(model.encode_image(unit_float(images[i:i + batch]).to(device)),
                                    world.encode_texts(model, texts[i:i + batch]), model.logit_scale), batch)
                         for i in range(0, len(texts) - batch + 1, batch))


# ------------------------------------------------------------------ batch size and the negatives

def gradients(model: nn.Module) -> list[torch.Tensor]:
    """Copies of every parameter's gradient (zeros where none), then the gradients cleared."""
    out = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


def accumulated_gradients(model: nn.Module, loss_fn, batch: tuple, k: int) -> list[torch.Tensor]:
    """Gradients of the mean of `loss_fn` over k equal micro-batches of `batch` (a tuple of
    tensors split along dimension 0), each micro-batch's loss divided by k and back-propagated
    on its own: gradient accumulation."""
    n = len(batch[0])
    if n % k:
        raise ValueError(f"a batch of {n} does not split into {k} equal micro-batches")
    model.zero_grad(set_to_none=True)
    for part in zip(*(t.split(n // k) for t in batch)):
        (loss_fn(model, part) / k).backward()
    return gradients(model)


def full_batch_gradients(model: nn.Module, loss_fn, batch: tuple) -> list[torch.Tensor]:
    """Gradients of `loss_fn` on the whole batch at once."""
    model.zero_grad(set_to_none=True)
    loss_fn(model, batch).backward()
    return gradients(model)


def grad_cache_gradients(model: CLIP, batch: tuple, k: int) -> list[torch.Tensor]:
    """Gradients of CLIP's loss over the whole batch, computed k micro-batches at a time as
    GradCache does (Gao et al., 2021): (1) every micro-batch's features without a graph; (2) the
    loss over all of them, and its gradient with respect to each feature; (3) each micro-batch
    again, with a graph, back-propagating those feature gradients. Memory of a micro-batch,
    softmax of the whole batch; equal to the full batch to rounding (with BatchNorm, only in
    eval mode: its statistics would differ per micro-batch)."""
    images, ids, lengths = batch
    n = len(images)
    if n % k:
        raise ValueError(f"a batch of {n} does not split into {k} equal micro-batches")
    parts = list(zip(images.split(n // k), ids.split(n // k), lengths.split(n // k)))
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        feats = [model(*p) for p in parts]
    img = torch.cat([f[0] for f in feats]).requires_grad_(True)                    # (N, D)
    txt = torch.cat([f[1] for f in feats]).requires_grad_(True)                    # (N, D)
    clip_loss(img, txt, model.logit_scale).backward()                              # logit scale's grad too
    for p, gi, gt in zip(parts, img.grad.split(n // k), txt.grad.split(n // k)):
        im, tx = model(*p)
        ((im * gi).sum() + (tx * gt).sum()).backward()
    return gradients(model)


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest absolute difference between two lists of gradients."""
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def relative_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """|a - b| / |b| over all gradients together (0: the same)."""
    num = sum(((x - y) ** 2).sum() for x, y in zip(a, b)) ** 0.5
    return float(num / sum((y ** 2).sum() for y in b) ** 0.5)


# ------------------------------------------------------------------ prompt search

def template_scorer(model: CLIP, world: ClipWorld, images: torch.Tensor, labels: torch.Tensor):
    """score(template or list of templates) -> zero-shot accuracy (%) on `images` (n, 3, R, R)
    among the 48 colour-shape names, the image embeddings computed once: what a prompt search
    calls thousands of times."""
    from ..models.clip import zero_shot_weights
    from .clip import CLASS_NAMES
    with evaluating(model) as device:
        x = unit_float(images)
        emb = torch.cat([model.encode_image(c.to(device)) for c in x.split(512)])        # (n, D)

        def score(templates) -> float:
            templates = [templates] if isinstance(templates, str) else list(templates)
            w = zero_shot_weights(lambda t: world.encode_texts(model, t), CLASS_NAMES, templates)   # (D, 48)
            return 100 * ((emb @ w).argmax(1).cpu() == labels).float().mean().item()
        return score


def search_templates(score, words: list[str], beam: int = 4, length: int = 3, start: str = "{}",
                     progress: bool = False) -> list[tuple[str, float]]:
    """Beam search over templates: from `start`, grow each of the `beam` best templates by one of
    `words` before or after it, keep the `beam` best of all of them by `score(template)`
    (higher is better), up to `length` added words. Returns every template scored, best first."""
    from tqdm.auto import tqdm
    scored = {start: score(start)}
    frontier = [start]
    for level in range(length):
        grown = {f"{w} {t}" for t in frontier for w in words} | {f"{t} {w}" for t in frontier for w in words}
        for t in tqdm(sorted(grown - set(scored)), desc=f"templates of {level + 1} added words",
                      disable=not progress, leave=False):
            scored[t] = score(t)
        frontier = sorted(grown, key=lambda t: (-scored[t], t))[:beam]           # ties: alphabetical
    return sorted(scored.items(), key=lambda kv: (-kv[1], kv[0]))


# ------------------------------------------------------------------ distillation

def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) of the softened distributions, times temperature**2 (Hinton et
    al., 2015): the student learns the teacher's whole distribution, not only its answer."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


# ------------------------------------------------------------------ compute at scale

# (parameters, training compute in FLOPs, how the compute was counted, source)
AT_SCALE = {
    "GPT-3 175B": (175e9, 3.14e23, "the paper's Table D.1 (3,640 petaflop/s-days)",
                   "Brown et al. 2020, Language Models are Few-Shot Learners"),
    "DALL·E 12B": (12e9, 6 * 12e9 * 430_000 * 1024 * 1280,
                   "6·N·D: 430,000 updates of 1,024 sequences of 1,280 tokens",
                   "Ramesh et al. 2021, Zero-Shot Text-to-Image Generation, §2.4-2.5"),
    "iGPT-L 1.4B": (1.4e9, 2500 * 86400 * 125e12 * 0.33,
                    "2,500 V100-days (the blog post) at a third of 125 TFLOP/s",
                    "Chen et al. 2020, Generative Pretraining from Pixels; openai.com/blog/image-gpt"),
    "CLIP ViT-L/14": (428e6, 12 * 256 * 86400 * 125e12 * 0.33,
                      "12 days on 256 V100s (the paper) at a third of 125 TFLOP/s",
                      "Radford et al. 2021, Learning Transferable Visual Models From Natural Language "
                      "Supervision, §2.5"),
    "Jukebox 5B": (5e9, 512 * 28 * 86400 * 125e12 * 0.33,
                   "the top-level prior: 512 V100s for 4 weeks at a third of 125 TFLOP/s",
                   "Dhariwal et al. 2020, Jukebox: A Generative Model for Music, §5 (training details)"),
}
NOT_PUBLISHED = {"MuseNet": "72 layers, 24 heads, a context of 4,096 tokens; neither parameters nor compute "
                            "published (openai.com/index/musenet)"}
T4_TEN_MINUTES = 600 * 65e12 * 0.33      # a Colab T4: 65 TFLOP/s fp16 peak, a third of it, 10 minutes
PFS_DAY = 1e15 * 86400                   # a petaflop/s-day, in FLOPs

# Training compute by year, in petaflop/s-days: the points of OpenAI's "AI and compute" (2018;
# its appendix's own estimates), then the talk's models (AT_SCALE above).
COMPUTE_BY_YEAR = {
    "AlexNet": (2012.5, 0.0058), "Visualizing ConvNets": (2013.9, 0.0062), "Seq2Seq": (2014.7, 0.085),
    "VGG": (2014.7, 0.098), "DeepSpeech2": (2015.9, 0.30), "Xception": (2016.8, 5.0),
    "Neural Architecture Search": (2016.9, 22), "Neural Machine Translation": (2016.7, 79),
    "iGPT-L 1.4B": (2020.5, AT_SCALE["iGPT-L 1.4B"][1] / PFS_DAY),
    "Jukebox 5B": (2020.3, AT_SCALE["Jukebox 5B"][1] / PFS_DAY),
    "GPT-3 175B": (2020.4, AT_SCALE["GPT-3 175B"][1] / PFS_DAY),
    "DALL·E 12B": (2021.0, AT_SCALE["DALL·E 12B"][1] / PFS_DAY),
    "CLIP ViT-L/14": (2021.0, AT_SCALE["CLIP ViT-L/14"][1] / PFS_DAY),
}


def doubling_time_months(points: dict[str, tuple[float, float]]) -> float:
    """The doubling time (months) of a least-squares line through log2(compute) against the
    year, over points {name: (year, compute)}."""
    years = np.array([y for y, _ in points.values()])
    logs = np.log2([c for _, c in points.values()])
    slope = np.polyfit(years, logs, 1)[0]                                # doublings per year
    return 12.0 / slope


def training_flops(model: nn.Module, loss_fn, batch) -> float:
    """FLOPs of one training step (forward and backward) of `model` on `batch`, counted by
    torch's FlopCounterMode (matrix products and convolutions; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


__all__ = ["COMPUTE_BY_YEAR", "doubling_time_months", "NOT_PUBLISHED", "score_keyword_cases",
           "normalise", "words_of", "candidate_words", "keyword_filter", "score_filter",
           "PairWorld", "pair_scores", "choose_threshold", "contrastive_loss", "gradients",
           "accumulated_gradients", "full_batch_gradients", "grad_cache_gradients",
           "max_difference", "relative_difference", "template_scorer", "search_templates",
           "distillation_loss", "AT_SCALE", "T4_TEN_MINUTES", "training_flops"]
