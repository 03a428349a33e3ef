"""Jukebox in miniature (notebook 05): raw audio -> codes at three levels -> priors -> audio.

    setup = JukeboxSetup()
    data = JukeboxData.build(setup)                  # rendered clips: genre = corpus, artist = timbre
    vqvae = build_vqvae(setup)
    train_vqvae(vqvae, data, setup)                  # the course's loop, random crops
    levels = evaluate_levels(vqvae, data.test_clips(setup))   # spectral convergence, codes used
    codes = CodeSet.encode(vqvae, data)              # every clip's codes at every level
    prior = build_prior(setup); train_prior(prior, codes, setup)
    up = build_upsampler(setup); train_upsampler(up, codes, setup)
    top = sample_top(prior, setup, genre=0, artist=1, n=2)
    middle = up.generate(top, labels)               # then vqvae.decode(middle, level=1)

Labels: a clip's genre g (its corpus) and artist a (its timbre) are two prefix tokens of the
top prior, ids K + g and K + G + a after the K codes; the upsampler gets them as embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..batches import step_generator
from ..data.audio import AudioSet, load_audio
from ..data.music import STYLES
from ..device import evaluating, seed_everything
from ..metrics import mean_loss
from ..models.gpt import GPT, GPTConfig
from ..models.vq import perplexity
from ..models.vqvae import VQVAE, Upsampler, spectral_convergence
from ..train import History, train

LEVELS = ("bottom", "middle", "top")


@dataclass(kw_only=True)
class JukeboxSetup:
    """Everything that defines a run of notebook 05 (its profiles fill it in)."""
    genres: tuple[str, ...] = STYLES                       # corpora
    artists: tuple[str, ...] = ("piano", "organ", "strings")   # timbres
    per_genre: int = 16            # training pieces per genre (each rendered by every artist)
    eval_per_genre: int = 4        # validation and test pieces per genre
    seconds: float = 4.0           # audio rendered per piece
    sample_rate: int = 16_000
    hops: tuple[int, ...] = (8, 32, 128)
    crop: int = 4096               # samples per training crop of the VQ-VAE
    width: int = 16                # channels of the convolutions
    dim: int = 64                  # code vectors' dimension
    codebook: tuple[int, ...] = (128, 128, 64)   # per level: top's batch holds fewer vectors
    vq_batch: int = 8
    vq_steps: int = 300
    vq_lr: float = 2e-3
    beta: float = 0.02             # commitment weight (Jukebox's)
    spectral_weight: float = 1.0
    prior_len: int = 128           # top codes the prior models (128 x 128 samples: ~1 s at 16 kHz)
    prior_layers: int = 3
    prior_heads: int = 4
    prior_width: int = 128
    prior_steps: int = 300
    up_len: int = 128              # middle codes per upsampler window (32 top codes above them)
    up_steps: int = 200
    lr: float = 2e-3
    batch: int = 16
    seed: int = 0

    @property
    def n_labels(self) -> int:
        return len(self.genres) + len(self.artists)


@dataclass
class JukeboxData:
    """The rendered clips of each split as tensors (n, 1, samples), with genre and artist ids."""
    setup: JukeboxSetup
    train_set: AudioSet
    val_set: AudioSet
    test_set: AudioSet

    @classmethod
    def build(cls, setup: JukeboxSetup, progress: bool = True) -> "JukeboxData":
        kw = dict(styles=setup.genres, timbres=setup.artists, seconds=setup.seconds,
                  sample_rate=setup.sample_rate, progress=progress)
        return cls(setup, load_audio("train", per_style=setup.per_genre, **kw),
                   load_audio("val", per_style=setup.eval_per_genre, **kw),
                   load_audio("test", per_style=setup.eval_per_genre, **kw))

    @staticmethod
    def waves(audio: AudioSet) -> torch.Tensor:
        """(n, 1, samples) float32."""
        return torch.from_numpy(audio.waves)[:, None]

    def crops(self, batch: int, length: int, seed: int):
        """A `batch_fn`: random crops (batch, 1, length) of the training clips, one gather."""
        waves = self.waves(self.train_set)                                 # (n, 1, S)
        n, S = len(waves), waves.shape[-1]
        offsets = torch.arange(length)

        def batch_fn(step: int) -> torch.Tensor:
            g = step_generator(seed, step)
            rows = torch.randint(n, (batch,), generator=g)
            starts = torch.randint(S - length + 1, (batch,), generator=g)
            return waves[rows, 0][torch.arange(batch)[:, None], starts[:, None] + offsets][:, None]
        return batch_fn

    def fixed_clips(self, audio: AudioSet, length: int, per_clip: int = 2) -> torch.Tensor:
        """`per_clip` evenly spaced windows (length samples) of every clip: (n * per_clip, 1, length)."""
        waves = self.waves(audio)
        S = waves.shape[-1]
        starts = np.linspace(0, S - length, per_clip + 2)[1:-1].astype(int)
        return torch.cat([waves[..., s: s + length] for s in starts])


def build_vqvae(setup: JukeboxSetup, restarts: bool = True, hops: tuple[int, ...] | None = None) -> VQVAE:
    """The three-level VQ-VAE (or the levels in `hops`), initialised from setup.seed."""
    seed_everything(setup.seed)
    hops = hops or setup.hops
    sizes = tuple(setup.codebook[setup.hops.index(h)] for h in hops)
    return VQVAE(hops, setup.width, setup.dim, sizes, beta=setup.beta,
                 spectral_weight=setup.spectral_weight, restart_threshold=1.0 if restarts else 0.0)


def train_vqvae(model: VQVAE, data: JukeboxData, setup: JukeboxSetup, *, run: str | None = None,
                steps: int | None = None, device=None, progress: bool = True) -> History:
    """The course's loop on random crops; the loss is `VQVAE.forward`'s."""
    return train(model, lambda m, x: m(x).loss, data.crops(setup.vq_batch, setup.crop, setup.seed),
                 steps=steps or setup.vq_steps, lr=setup.vq_lr, weight_decay=0.0, seed=setup.seed,
                 run=run, device=device, progress=progress, setup=setup)


def evaluate_levels(model: VQVAE, clips: torch.Tensor, batch: int = 32) -> dict[str, np.ndarray]:
    """Per level (arrays over levels): "sc", the mean spectral convergence of the clips'
    reconstructions; "used", the share of the codebook used over all clips; "perplexity", of
    that use."""
    with evaluating(model) as device:
        sc, used, ppl = [[] for _ in model.hops], [], []
        all_codes = [[] for _ in model.hops]
        for x in clips.split(batch):
            out = model(x.to(device))
            for i, r in enumerate(out.recons):
                sc[i].append(spectral_convergence(x.to(device), r).cpu())
                all_codes[i].append(out.codes[i].flatten().cpu())
        for i, q in enumerate(model.quantizers):
            n = torch.bincount(torch.cat(all_codes[i]), minlength=q.codebook_size)
            used.append((n > 0).float().mean().item())
            ppl.append(perplexity(n).item())
        return {"sc": np.array([torch.cat(s).mean().item() for s in sc]), "used": np.array(used),
                "perplexity": np.array(ppl)}


def resampled(clips: torch.Tensor, hop: int, sample_rate: int = 16_000) -> torch.Tensor:
    """Clips (n, 1, T) taken down to 1/hop of their sample rate and back (torchaudio's
    band-limited resampling): a level's cheap rival, keeping as many numbers a second as the level
    keeps codes, each a float rather than one of K codes."""
    import torchaudio.functional as AF

    low = AF.resample(clips, sample_rate, sample_rate // hop)
    return AF.resample(low, sample_rate // hop, sample_rate)[..., :clips.shape[-1]]


@dataclass
class CodeSet:
    """Every clip's codes per split and level: codes[split][level] (n, S / hop) long (None for a
    level not encoded), with genre and artist ids (n,) and the piece each clip renders."""
    codes: dict[str, list[torch.Tensor]]
    genre: dict[str, torch.Tensor]
    artist: dict[str, torch.Tensor]
    piece: dict[str, list[str]]

    @classmethod
    def encode(cls, model: VQVAE, data: JukeboxData, levels: tuple[int, ...] = (0, 1, 2),
               batch: int = 16) -> "CodeSet":
        """Encode every clip at `levels` (the others are left None: encoding costs time)."""
        with evaluating(model) as device:
            codes, genre, artist, piece = {}, {}, {}, {}
            for split, audio in (("train", data.train_set), ("val", data.val_set), ("test", data.test_set)):
                waves = data.waves(audio)
                S = waves.shape[-1] // max(model.hops) * max(model.hops)
                codes[split] = [None] * len(model.hops)
                for i in levels:
                    enc, vq = model.encoders[i], model.quantizers[i]
                    codes[split][i] = torch.cat([vq.encode(enc(x[..., :S].to(device))).cpu()
                                                 for x in waves.split(batch)])
                genre[split] = torch.from_numpy(audio.style).long()
                artist[split] = torch.from_numpy(audio.timbre).long()
                piece[split] = list(audio.names)
            return cls(codes, genre, artist, piece)

    def partners(self, split: str, same_piece: bool) -> torch.Tensor:
        """For each clip of `split`, the next clip (in order, cyclically) of another piece in the
        same artist's timbre, or (same_piece) of the same piece in another timbre: (n,) indices."""
        names, artist = self.piece[split], self.artist[split].tolist()
        n, out = len(names), []
        for i in range(n):
            fits = [j for j in (i + k for k in range(1, n)) if
                    (names[j % n] == names[i]) == same_piece and (artist[j % n] == artist[i]) != same_piece]
            if not fits:
                want = "the same piece in another timbre" if same_piece else "another piece in the same timbre"
                raise ValueError(f"clip {i} of {split} has no partner: no clip of {want}")
            out.append(fits[0] % n)
        return torch.tensor(out)

    def windows(self, split: str, level: int, length: int, starts: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Codes (len(rows), length) of `level` from each row's start."""
        c = self.codes[split][level]
        return c[rows[:, None], starts[:, None] + torch.arange(length)]


def build_prior(setup: JukeboxSetup) -> GPT:
    """The top-level prior: the course's GPT over [genre, artist, top codes]."""
    seed_everything(setup.seed)
    return GPT(GPTConfig(vocab_size=setup.codebook[-1] + setup.n_labels, block_size=setup.prior_len + 2,
                         n_layer=setup.prior_layers, n_head=setup.prior_heads, n_embd=setup.prior_width))


def prior_tokens(codes: torch.Tensor, genre: torch.Tensor, artist: torch.Tensor, K: int,
                 n_genres: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) (B, L + 1) for codes (B, L): inputs [K + g, K + G + a, c_0 .. c_{L-2}],
    targets [-1, c_0 .. c_{L-1}] (nothing is predicted from the genre token alone)."""
    inputs = torch.cat([(K + genre)[:, None], (K + n_genres + artist)[:, None], codes[:, :-1]], dim=1)
    targets = torch.cat([torch.full_like(codes[:, :1], -1), codes], dim=1)
    return inputs, targets


def prior_batches(codes: CodeSet, setup: JukeboxSetup, level: int = -1):
    """A `batch_fn` of random windows of top codes with their labels."""
    top = codes.codes["train"][level]
    n, L = top.shape[0], setup.prior_len

    def batch_fn(step: int):
        g = step_generator(setup.seed, step)
        rows = torch.randint(n, (setup.batch,), generator=g)
        starts = torch.randint(top.shape[1] - L + 1, (setup.batch,), generator=g)
        return prior_tokens(codes.windows("train", level, L, starts, rows), codes.genre["train"][rows],
                            codes.artist["train"][rows], setup.codebook[level], len(setup.genres))
    return batch_fn


def prior_loss(prior: GPT, codes: CodeSet, setup: JukeboxSetup, split: str = "val",
               shift_labels: int = 0, level: int = -1, shift_genre: int = 0) -> float:
    """Mean next-code loss of the prior on every `split` clip's non-overlapping windows. With
    shift_labels = s, each clip is given genre (g + s) mod G and artist (a + s) mod A: s > 0
    gives every clip a wrong genre and a wrong artist. With shift_genre = s only the genre is
    wrong, the artist (the timbre, easy to hear) stays true."""
    with evaluating(prior) as device:
        top = codes.codes[split][level]
        L, G, A = setup.prior_len, len(setup.genres), len(setup.artists)
        genre = (codes.genre[split] + shift_labels + shift_genre) % G
        artist = (codes.artist[split] + shift_labels) % A
        windows = (prior_tokens(top[:, s: s + L], genre, artist, setup.codebook[level], G)
                   for s in range(0, top.shape[1] - L + 1, L))
        return mean_loss((prior(x.to(device), y.to(device))[1], (y >= 0).sum()) for x, y in windows)


def train_prior(prior: GPT, codes: CodeSet, setup: JukeboxSetup, *, run: str | None = None,
                device=None, progress: bool = True) -> History:
    """The course's loop on windows of top codes; validation loss measured along the way."""
    return train(prior, lambda m, b: m(*b)[1], prior_batches(codes, setup), steps=setup.prior_steps,
                 lr=setup.lr, seed=setup.seed, run=run, device=device, progress=progress,
                 setup=setup, eval_fn=lambda m: {"val_loss": prior_loss(m, codes, setup)},
                 eval_every=max(1, setup.prior_steps // 4))


def sample_top(prior: GPT, setup: JukeboxSetup, genre: torch.Tensor, artist: torch.Tensor,
               temperature: float = 1.0, top_p: float | None = None, seed: int = 0) -> torch.Tensor:
    """Top codes (B, prior_len) for genre and artist ids (B,), one KV-cached batched call."""
    device = next(prior.parameters()).device
    K, G = setup.codebook[-1], len(setup.genres)
    prompt = torch.stack([K + genre, K + G + artist], dim=1).to(device)   # (B, 2)
    g = torch.Generator(device).manual_seed(seed)
    out = prior.generate(prompt, setup.prior_len, temperature=temperature, top_p=top_p,
                         suppress=list(range(K, K + setup.n_labels)), generator=g)
    return out[:, 2:]


def build_upsampler(setup: JukeboxSetup, level: int = 1) -> Upsampler:
    """The upsampler that samples `level`'s codes given level + 1's (1: middle from top)."""
    seed_everything(setup.seed + level)
    ratio = setup.hops[level + 1] // setup.hops[level]
    cfg = GPTConfig(vocab_size=setup.codebook[level] + 1, block_size=setup.up_len + 1, n_layer=setup.prior_layers,
                    n_head=setup.prior_heads, n_embd=setup.prior_width)
    return Upsampler(cfg, setup.codebook[level + 1], ratio, setup.n_labels)


def upsampler_batch(codes: CodeSet, up: Upsampler, split: str, level: int, rows: torch.Tensor,
                    starts: torch.Tensor, upper_len: int, setup: JukeboxSetup):
    """(codes (B, upper_len * ratio), upper codes (B, upper_len), labels (B, 2)) of `level`."""
    upper = codes.windows(split, level + 1, upper_len, starts, rows)
    lower = codes.windows(split, level, upper_len * up.ratio, starts * up.ratio, rows)
    labels = torch.stack([codes.genre[split][rows], len(setup.genres) + codes.artist[split][rows]], 1)
    return lower, upper, labels


def upsampler_loss(up: Upsampler, codes: CodeSet, setup: JukeboxSetup, level: int = 1,
                   split: str = "val", upper_from: str = "own") -> float:
    """Mean next-code loss of the upsampler on non-overlapping windows of every `split` clip,
    given the upper codes of the clip itself ("own"), or of another clip, its labels kept:
    "another piece" (the next clip of another piece in the same timbre: what the upper codes
    are worth) or "same piece" (the same piece in another timbre: how much of them is the
    score rather than the sound)."""
    if upper_from not in ("own", "another piece", "same piece"):
        raise ValueError(f"upper_from must be 'own', 'another piece' or 'same piece', got {upper_from!r}")
    with evaluating(up) as device:
        n, Lu = len(codes.genre[split]), setup.up_len // up.ratio
        donor = torch.arange(n) if upper_from == "own" else codes.partners(split, upper_from == "same piece")
        windows = (upsampler_batch(codes, up, split, level, torch.arange(n), torch.full((n,), s), Lu, setup)
                   for s in range(0, codes.codes[split][level + 1].shape[1] - Lu + 1, Lu))
        return mean_loss((up(lower.to(device), upper[donor].to(device), labels.to(device)), lower.numel())
                         for lower, upper, labels in windows)         # upper[donor]: the donor clip's


def train_upsampler(up: Upsampler, codes: CodeSet, setup: JukeboxSetup, level: int = 1, *,
                    run: str | None = None, device=None, progress: bool = True) -> History:
    """The course's loop on aligned windows (upper codes, this level's codes, labels)."""
    n, Lu = len(codes.genre["train"]), setup.up_len // up.ratio
    top_len = codes.codes["train"][level + 1].shape[1]

    def batch_fn(step: int):
        g = step_generator(setup.seed + 1, step)
        rows = torch.randint(n, (setup.batch,), generator=g)
        starts = torch.randint(top_len - Lu + 1, (setup.batch,), generator=g)
        return upsampler_batch(codes, up, "train", level, rows, starts, Lu, setup)
    return train(up, lambda m, b: m(*b), batch_fn, steps=setup.up_steps, lr=setup.lr, seed=setup.seed,
                 run=run, device=device, progress=progress, setup=setup,
                 eval_fn=lambda m: {"val_loss": upsampler_loss(m, codes, setup, level)},
                 eval_every=max(1, setup.up_steps // 2))


# ------------------------------------------------------------------ a genre judge on log-mel statistics

def logmel_features(audio: torch.Tensor, sample_rate: int = 16_000, n_mels: int = 32,
                    floor: float = 1e-2) -> np.ndarray:
    """Mean and standard deviation over time of each log-mel band: (n, 2 * n_mels) for
    audio (n, 1, T) or (n, T). What a genre judge independent of the VQ-VAE reads. Power
    more than 1/floor below the clip's loudest (20 dB by default) is floored: the judge then
    reads the music, not the faint hiss a decoder leaves where a render is silent."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=n_mels)
    m = mel(audio.reshape(len(audio), -1).float().cpu())                  # (n, n_mels, frames)
    m = (m + floor * m.amax((1, 2), keepdim=True) + 1e-10).log()
    return torch.cat([m.mean(-1), m.std(-1)], dim=1).numpy()


def train_genre_judge(audio: torch.Tensor, genre: np.ndarray, sample_rate: int = 16_000):
    """Logistic regression (scikit-learn) on `logmel_features` of real clips (n, 1, T)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    judge = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    judge.fit(logmel_features(audio, sample_rate), genre)
    return judge


def tokens_per_minute(hops: tuple[int, ...], sample_rate: int) -> list[int]:
    """How many codes one minute of audio is at each hop."""
    return [60 * sample_rate // h for h in hops]


__all__ = ["LEVELS", "JukeboxSetup", "JukeboxData", "build_vqvae", "train_vqvae", "evaluate_levels", "resampled",
           "CodeSet", "build_prior", "prior_tokens", "prior_batches", "prior_loss", "train_prior",
           "sample_top", "build_upsampler", "upsampler_loss", "train_upsampler", "logmel_features",
           "train_genre_judge", "tokens_per_minute"]
