"""A small additive synthesiser: note lists -> audio, vectorised (no Python loop per sample).

    from webmm_lab.data.audio import render, write_wav
    wave = render(piece.notes, tempo=90)                 # float32 (samples,) in [-1, 1], 16 kHz
    wave = render(notes, timbres={"fiddle": "clarinet"}) # another timbre for one instrument
    IPython.display.Audio(wave, rate=16000)

Notes are (n, 4) arrays of (onset, duration, instrument, pitch) on a sixteenth-note grid, as
`webmm_lab.data.music` gives them. Each note is a sum of harmonics with an attack/decay/
release envelope; a timbre is the harmonics' amplitudes and the envelope's times. Notebook 04
plays its generated music with it; notebook 05 renders its training audio with it, a timbre
per "artist" (`load_audio`: every piece in every timbre, cached).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import wave as wavefile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..paths import data_dir
from .music import GRID, INSTRUMENTS, SHIPPED_SHA256, STYLES, load_music

SAMPLE_RATE = 16_000
# harmonic amplitudes (fundamental first), attack, decay (s, to the sustain level), sustain, release (s)
TIMBRES = {
    "flute":    dict(harmonics=(1.0, 0.25, 0.08, 0.03), attack=0.04, decay=0.10, sustain=0.85, release=0.08),
    "clarinet": dict(harmonics=(1.0, 0.0, 0.55, 0.0, 0.35, 0.0, 0.2, 0.0, 0.1), attack=0.03, decay=0.10,
                     sustain=0.8, release=0.06),
    "strings":  dict(harmonics=tuple(1.0 / k for k in range(1, 11)), attack=0.06, decay=0.15, sustain=0.75,
                     release=0.10),
    "organ":    dict(harmonics=(1.0, 0.7, 0.0, 0.45, 0.0, 0.0, 0.0, 0.25), attack=0.01, decay=0.02,
                     sustain=1.0, release=0.03),
    "piano":    dict(harmonics=(1.0, 0.5, 0.3, 0.15, 0.1, 0.05), attack=0.005, decay=0.6, sustain=0.15,
                     release=0.15),
}
VOICE_TIMBRES = {"soprano": "flute", "alto": "clarinet", "tenor": "organ", "bass": "strings",
                 "fiddle": "strings"}
RENDERER_VERSION = 1   # raise it whenever `render` changes how notes sound: the audio cache follows


def envelope(t: np.ndarray, held: np.ndarray, attack: float, decay: float, sustain: float,
             release: float) -> np.ndarray:
    """Attack-decay-sustain-release gains for times t (n, L) in seconds since each note's
    onset, notes held for `held` (n, 1) seconds; 0 after the release."""
    rise = np.clip(t / attack, 0, 1)
    fall = 1 - (1 - sustain) * np.clip((t - attack) / decay, 0, 1)
    off = np.clip(1 - (t - held) / release, 0, 1)                     # 1 while held, then to 0
    return rise * fall * off


def render(notes: np.ndarray, tempo: float = 90, sample_rate: int = SAMPLE_RATE,
           timbres: dict[str, str] | str | None = None, max_seconds: float | None = None,
           chunk: int = 2_000_000) -> np.ndarray:
    """Notes (n, 4) -> mono float32 audio (samples,), peak-normalised to 0.9 (never clips).

    tempo: quarter notes per minute. timbres: a timbre name for every instrument, or a dict
    {instrument: timbre} over VOICE_TIMBRES' defaults. max_seconds: only the notes that start
    before it, the audio cut there (keeps a notebook light). Notes are rendered in chunks of at most
    `chunk` samples in all and summed into the output with one bincount per chunk.
    """
    notes = np.asarray(notes)
    if notes.ndim != 2 or notes.shape[1] != 4:
        raise ValueError(f"notes must be (n, 4) of (onset, duration, instrument, pitch), got {notes.shape}")
    choice = {**VOICE_TIMBRES, **({i: timbres for i in INSTRUMENTS} if isinstance(timbres, str)
                                  else timbres or {})}
    for name in choice.values():
        if name not in TIMBRES:
            raise ValueError(f"unknown timbre {name!r}; choose from {', '.join(TIMBRES)}")
    step = 60.0 / tempo / GRID                                                # seconds per grid step
    if max_seconds is not None:
        notes = notes[notes[:, 0] * step < max_seconds]
    end = (notes[:, 0] + notes[:, 1]).max() * step if len(notes) else 0.0
    out = np.zeros(int((end + 0.5) * sample_rate) + 1)
    for inst, name in enumerate(INSTRUMENTS):
        mine = notes[notes[:, 2] == inst]
        if not len(mine):
            continue
        tb = TIMBRES[choice[name]]
        held = mine[:, 1] * step                                             # (n,) seconds
        length = ((held + tb["release"]) * sample_rate).astype(int) + 1      # (n,) samples
        order = np.argsort(length)
        mine, held, length = mine[order], held[order], length[order]
        start = 0
        while start < len(mine):                                             # chunks of similar length
            L = length[start]
            stop = start + 1
            while stop < len(mine) and length[stop] * (stop + 1 - start) <= chunk:
                stop += 1
            n, L = stop - start, length[stop - 1]
            t = np.arange(L)[None, :] / sample_rate                          # (1, L)
            freq = 440.0 * 2.0 ** ((mine[start:stop, 3:4] - 69) / 12)         # (n, 1) Hz
            gain = envelope(t, held[start:stop, None], tb["attack"], tb["decay"], tb["sustain"],
                            tb["release"])                                     # (n, L)
            tone = np.zeros((n, L))
            for k, a in enumerate(tb["harmonics"], start=1):
                if a:
                    tone += a * np.sin(2 * np.pi * k * freq * t) * (k * freq < sample_rate / 2)
            first = (mine[start:stop, 0] * step * sample_rate).astype(int)    # (n,) onset sample
            idx = first[:, None] + np.arange(L)[None, :]                       # (n, L)
            out += np.bincount(idx.ravel(), weights=(gain * tone).ravel(), minlength=len(out))[:len(out)]
            start = stop
    if max_seconds is not None:
        out = out[: int(max_seconds * sample_rate)]
    peak = np.abs(out).max() if len(out) else 0.0
    return (out * (0.9 / peak) if peak > 0 else out).astype(np.float32)


def write_wav(path: Path | str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio in [-1, 1] as a 16-bit WAV file (standard library `wave`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wavefile.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path


# ------------------------------------------------------------------ a rendered data set (notebook 05)

@dataclass
class AudioSet:
    """Rendered clips: waves (n, samples) float32, each a piece's opening in one timbre, with
    its style ("genre") and timbre ("artist") as indices into `styles` and `timbres`."""
    waves: np.ndarray
    style: np.ndarray             # (n,) int
    timbre: np.ndarray            # (n,) int
    names: list[str]              # (n,) the piece of each clip
    styles: tuple[str, ...]
    timbres: tuple[str, ...]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.waves)


def load_audio(split: str = "train", styles: tuple[str, ...] = STYLES,
               timbres: tuple[str, ...] = ("piano", "organ", "strings"), per_style: int = 16,
               seconds: float = 4.0, tempo: float = 90, sample_rate: int = SAMPLE_RATE,
               progress: bool = True) -> AudioSet:
    """The first `per_style` pieces of each style in `split` (`load_music`'s), each rendered in
    every timbre to exactly `seconds` of audio (shorter pieces padded with silence). Rendered
    once and cached as 16-bit audio under the data folder, keyed by these settings, the music
file and the renderer's version; a cache of the wrong shape or dtype is rendered again."""
    for t in timbres:
        if t not in TIMBRES:
            raise ValueError(f"unknown timbre {t!r}; choose from {', '.join(TIMBRES)}")
    key = hashlib.sha256(repr((split, styles, timbres, per_style, seconds, tempo, sample_rate,
                               SHIPPED_SHA256, RENDERER_VERSION, TIMBRES, VOICE_TIMBRES)).encode()).hexdigest()[:16]
    cache = data_dir() / "audio" / f"{split}-{key}.npz"
    length = int(seconds * sample_rate)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                pcm, style, timbre, names = f["pcm"], f["style"], f["timbre"], f["names"].tolist()
            if (pcm.dtype != np.int16 or pcm.ndim != 2 or pcm.shape[1] != length
                    or not len(pcm) == len(style) == len(timbre) == len(names) > 0
                    or style.max() >= len(styles) or timbre.max() >= len(timbres)):
                raise ValueError(f"it holds {pcm.dtype} audio of shape {pcm.shape}, expected int16 "
                                 f"(clips, {length}) with a genre, artist and piece per clip")
            return AudioSet(pcm.astype(np.float32) / 32767, style, timbre, names, tuple(styles),
                            tuple(timbres), sample_rate)
        except Exception as e:
            print(f"the audio cache {cache} is unusable ({type(e).__name__}: {str(e)[:120]}); "
                  "rendering again")
    music = load_music(split, styles)
    pieces = [p for s in styles for p in [q for q in music.pieces if q.style == s][:per_style]]
    if len(pieces) < per_style * len(styles):
        print(f"note: the {split} split has fewer than {per_style} pieces of some style; "
              f"rendering the {len(pieces)} there are")
    jobs = [(p, t) for p in pieces for t in timbres]
    pcm = np.zeros((len(jobs), length), np.int16)
    for i, (piece, timbre) in enumerate(tqdm(jobs, desc=f"rendering {split} audio", disable=not progress)):
        wave = render(piece.notes, tempo, sample_rate, timbre, max_seconds=seconds)[:length]
        pcm[i, :len(wave)] = np.round(wave * 32767).astype(np.int16)
    style = np.array([styles.index(p.style) for p, _ in jobs])
    timbre = np.array([timbres.index(t) for _, t in jobs])
    names = [p.name for p, _ in jobs]
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, pcm=pcm, style=style, timbre=timbre, names=np.array(names))
        os.replace(tmp, cache)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return AudioSet(pcm.astype(np.float32) / 32767, style, timbre, names, tuple(styles),
                    tuple(timbres), sample_rate)
