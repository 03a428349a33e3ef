"""Real scores from music21's bundled corpus, as note lists on a sixteenth-note grid.

    from webmm_lab.data import load
    music = load("music", split="train")     # MusicSet: pieces, each a style and an (n, 4) note array
    piece = music.pieces[0]
    piece.notes[:, 0]    # onset, in sixteenths from the start
    piece.notes[:, 1]    # duration, in sixteenths (>= 1)
    piece.notes[:, 2]    # instrument: index into INSTRUMENTS
    piece.notes[:, 3]    # MIDI pitch

Three styles, each with its own instrumentation, as MuseNet conditions on composer and
instruments: Bach's chorales (four voices: soprano, alto, tenor, bass), Palestrina's masses
(four to six voices, mapped onto the same four voice names by part name or range) and Irish
fiddle tunes from Ryan's Mammoth Collection (one melody line). Parsing with music21 takes
minutes, so the package ships the parsed notes (`music_corpus.npz`, made by `webmm-lab music
build`, checked by sha256); a missing or corrupt file is rebuilt from the corpus with a message.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import data_dir

GRID = 4                       # grid steps per quarter note: sixteenths
MAX_DUR = 32                   # longest note, in steps (two whole notes); longer ones are cut
INSTRUMENTS = ("soprano", "alto", "tenor", "bass", "fiddle")
STYLES = ("bach", "palestrina", "irish")
PER_STYLE = 120                # pieces per style in the shipped file
MAX_QUARTERS = {"bach": 64, "palestrina": 128, "irish": 64}   # each piece cut after this many
                               # quarter notes (Palestrina's notes are twice as long: half-note pulse)
SHIPPED = Path(__file__).with_name("music_corpus.npz")
SHIPPED_SHA256 = "841ac271595e36d13c4ebc6f8e0450eed7ccc311e70e9d55a122f19cc4adb1d7"


@dataclass
class Piece:
    """One score: its name in the corpus, its style, and its notes (n, 4) int16 arrays of
    (onset, duration, instrument, pitch), sorted by onset, instrument and pitch."""
    name: str
    style: str
    notes: np.ndarray

    @property
    def instruments(self) -> list[str]:
        return [INSTRUMENTS[i] for i in sorted(set(self.notes[:, 2].tolist()))]


@dataclass
class MusicSet:
    """Pieces of one split, with the style and instrument names their ids refer to."""
    pieces: list[Piece]
    split: str
    styles: tuple[str, ...] = STYLES
    instruments: tuple[str, ...] = INSTRUMENTS
    source: str = "music21's corpus: Bach chorales, Palestrina, Ryan's Mammoth Collection"

    def __len__(self) -> int:
        return len(self.pieces)


def sort_notes(notes: np.ndarray) -> np.ndarray:
    """Notes (n, 4) sorted by onset, then instrument, then pitch; duplicates removed."""
    notes = np.unique(np.asarray(notes, dtype=np.int16).reshape(-1, 4), axis=0)
    return notes[np.lexsort((notes[:, 3], notes[:, 2], notes[:, 0]))]


# ---------------------------------------------------------------------------- parsing (music21)

def _corpus_paths(style: str) -> list:
    from music21 import corpus

    if style == "bach":
        return sorted(p for p in corpus.getComposer("bach") if "bwv" in p.name and p.suffix == ".mxl")
    if style == "palestrina":
        return sorted(corpus.getComposer("palestrina"))
    if style == "irish":
        return sorted(corpus.getComposer("ryansMammoth"))
    raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")


def _voice(name: str, median_pitch: float) -> int:
    """A choral part's voice: from its name where it says, else from its median pitch."""
    name = (name or "").lower()
    for i, words in enumerate((("sopran", "cantus", "superius", "discant"), ("alt",),
                               ("tenor",), ("bass",))):
        if any(w in name for w in words):
            return i
    return 0 if median_pitch >= 67 else 1 if median_pitch >= 60 else 2 if median_pitch >= 52 else 3


def parse_score(score, style: str, max_quarters: float | None = None) -> np.ndarray:
    """A music21 score -> notes (n, 4) of (onset, duration, instrument, pitch) on the grid: ties
    joined, chords split into notes, grace notes dropped, cut after `max_quarters` (default: the
    style's MAX_QUARTERS)."""
    max_quarters = max_quarters or MAX_QUARTERS[style]
    rows = []
    for part in score.parts if hasattr(score, "parts") and len(score.parts) else [score]:
        flat = part.stripTies().flatten().notes
        found = [(float(n.offset), float(n.quarterLength), p.midi) for n in flat
                 for p in n.pitches if n.quarterLength > 0 and n.offset < max_quarters]
        if not found:
            continue
        inst = INSTRUMENTS.index("fiddle") if style == "irish" else \
            _voice(part.partName, float(np.median([f[2] for f in found])))
        for off, ql, pitch in found:
            onset = int(round(off * GRID))
            end = min(int(round((off + ql) * GRID)), int(max_quarters * GRID))
            rows.append((onset, min(max(end - onset, 1), MAX_DUR), inst, pitch))
    return sort_notes(np.array(rows, dtype=np.int16).reshape(-1, 4))


def parse_piece(path, style: str, max_quarters: float | None = None) -> np.ndarray:
    """Parse one corpus file (a path from music21's corpus) into notes; see `parse_score`."""
    from music21 import corpus

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = corpus.parse(path)
    if hasattr(score, "scores"):                 # an Opus of several tunes: take the first
        score = score.scores[0]
    return parse_score(score, style, max_quarters)


def build_corpus(per_style: int = PER_STYLE, progress: bool = True) -> list[Piece]:
    """Parse `per_style` pieces of every style from music21's corpus (a few minutes): files in a
    fixed random order (seed 0), keeping those with at least 32 notes."""
    from tqdm.auto import tqdm

    pieces = []
    for style in STYLES:
        kept = 0
        paths = _corpus_paths(style)
        paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
        bar = tqdm(total=per_style, desc=f"parsing {style}", disable=not progress)
        for path in paths:
            try:
                notes = parse_piece(path, style)
            except Exception as e:                # a file music21 cannot read: skip it
                print(f"skipped {path.name}: {type(e).__name__}: {e}")
                continue
            if len(notes) >= 32:
                pieces.append(Piece(f"{style}/{path.stem}", style, notes))
                kept += 1
                bar.update()
            if kept == per_style:
                break
        bar.close()
    return pieces


# ---------------------------------------------------------------------------- the cached file

def save_pieces(pieces: list[Piece], path: Path) -> str:
    """Write pieces to one compressed .npz (atomically, through a uniquely named temporary file)
    and return its sha256."""
    lengths = np.array([len(p.notes) for p in pieces], dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, notes=np.concatenate([p.notes for p in pieces]), lengths=lengths,
                        names=np.array([p.name for p in pieces]),
                        styles=np.array([p.style for p in pieces]))
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


def read_pieces(path: Path) -> list[Piece]:
    """Read pieces written by `save_pieces`; ValueError if the arrays are not what it writes."""
    with np.load(path, allow_pickle=False) as f:
        notes, lengths, names, styles = f["notes"], f["lengths"], f["names"], f["styles"]
    if (notes.ndim != 2 or notes.shape[1] != 4 or notes.dtype != np.int16
            or lengths.sum() != len(notes) or not len(names) == len(styles) == len(lengths)
            or not set(styles.tolist()) <= set(STYLES)):
        raise ValueError(f"{path} does not hold pieces as save_pieces writes them")
    parts = np.split(notes, np.cumsum(lengths)[:-1])
    return [Piece(str(n), str(s), a) for n, s, a in zip(names, styles, parts)]


def corpus_pieces() -> list[Piece]:
    """Every parsed piece: the shipped file if its sha256 matches, else a cache under the data
    folder if its sha256 matches the one written beside it, else a fresh parse of the corpus
    (saved to that cache, with a message)."""
    if SHIPPED.is_file() and hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == SHIPPED_SHA256:
        return read_pieces(SHIPPED)
    cache = data_dir() / "music" / "music_corpus.npz"
    digest = cache.with_name(cache.name + ".sha256")
    why = "corrupt (sha256 differs)" if SHIPPED.is_file() else "missing"
    if cache.is_file():
        try:
            if not digest.is_file() or digest.read_text().strip() != hashlib.sha256(cache.read_bytes()).hexdigest():
                raise ValueError("its sha256 differs from the one written with it")
            return read_pieces(cache)
        except Exception as e:
            print(f"the shipped music file {SHIPPED.name} is {why}, and the music cache {cache} "
                  f"is unusable ({type(e).__name__}: {e}); parsing music21's corpus again")
    else:
        print(f"the shipped music file {SHIPPED.name} is {why}: parsing music21's corpus once "
              f"(a few minutes) into {cache}")
    pieces = build_corpus()
    digest.parent.mkdir(parents=True, exist_ok=True)
    digest.write_text(save_pieces(pieces, cache) + "\n")
    return pieces


def split_of(name: str) -> str:
    """A piece's split, fixed by its name: about 80 % train, 10 % val, 10 % test."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def load_music(split: str = "train", styles: tuple[str, ...] = STYLES) -> MusicSet:
    """Pieces of `split` ('train', 'val', 'test' or 'all') in the given styles."""
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
    for s in styles:
        if s not in STYLES:
            raise ValueError(f"unknown style {s!r}; choose from {', '.join(STYLES)}")
    pieces = [p for p in corpus_pieces() if p.style in styles and split in ("all", split_of(p.name))]
    return MusicSet(pieces, split)


# ---------------------------------------------------------------------------- writing MIDI

def _unclashed_parts(notes: np.ndarray) -> list[np.ndarray]:
    """Split one instrument's notes (n, 4) into as few groups as possible (greedily, in onset
    order) such that no two notes of the same pitch overlap within a group: MIDI cannot tell
    apart two sounding notes of one pitch on one track (Palestrina's five or six voices share
    four voice names, and two of them may sing the same pitch at once)."""
    groups: list[list[int]] = []
    ends: list[dict[int, int]] = []                       # per group: pitch -> when it is free
    for i in np.lexsort((notes[:, 3], notes[:, 0])):
        onset, dur, _, pitch = (int(v) for v in notes[i])
        g = next((k for k, e in enumerate(ends) if e.get(pitch, 0) <= onset), None)
        if g is None:
            groups.append([])
            ends.append({})
            g = len(groups) - 1
        groups[g].append(i)
        ends[g][pitch] = onset + dur
    return [notes[np.sort(g)] for g in groups]


def to_score(notes: np.ndarray, tempo: int = 90):
    """Notes (n, 4) -> a music21 Score, one part per instrument (more where one instrument has
    two notes of the same pitch sounding at once, so that MIDI keeps both), each part named
    after its instrument."""
    from music21 import instrument, note, stream, tempo as m21tempo

    notes = np.asarray(notes).reshape(-1, 4)
    score = stream.Score()
    score.insert(0, m21tempo.MetronomeMark(number=tempo))
    for i, name in enumerate(INSTRUMENTS):
        mine = notes[notes[:, 2] == i]
        for group in _unclashed_parts(mine) if len(mine) else []:
            part = stream.Part()
            part.partName = name
            inst = instrument.Violin() if name == "fiddle" else instrument.Vocalist()
            inst.instrumentName = inst.partName = name               # the MIDI track's name
            part.insert(0, inst)
            for onset, dur, _, pitch in group.tolist():
                part.insert(onset / GRID, note.Note(pitch, quarterLength=dur / GRID))
            score.insert(0, part)
    return score


def write_midi(notes: np.ndarray, path: Path | str, tempo: int = 90) -> Path:
    """Write notes (n, 4) as a MIDI file with music21; returns the path. Lossless: `read_midi`
    gives back every note (tested on every piece of the corpus)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_score(notes, tempo).write("midi", fp=str(path))
    return path


def read_midi(path: Path | str) -> np.ndarray:
    """Notes (n, 4) of a MIDI file written by `write_midi` (tracks named after the course's
    instruments), read event by event with music21's low-level MIDI reader: no quantisation,
    so what was written comes back exactly. Onsets and durations on the sixteenth-note grid."""
    from music21 import midi

    mf = midi.MidiFile()
    mf.open(str(path))
    try:
        mf.read()
    finally:
        mf.close()
    per_step = mf.ticksPerQuarterNote / GRID
    rows = []
    for track in mf.tracks:
        name, now, sounding = None, 0, {}                   # pitch -> onsets still sounding (FIFO)
        for e in track.events:
            if isinstance(e, midi.DeltaTime):
                now += e.time
            elif e.type == midi.MetaEvents.SEQUENCE_TRACK_NAME:
                name = e.data.decode("utf-8", "replace") if isinstance(e.data, bytes) else str(e.data)
            elif e.type == midi.ChannelVoiceMessages.NOTE_ON and e.velocity > 0:
                sounding.setdefault(e.pitch, []).append(now)
            elif e.type in (midi.ChannelVoiceMessages.NOTE_OFF, midi.ChannelVoiceMessages.NOTE_ON):
                if sounding.get(e.pitch):
                    start = sounding[e.pitch].pop(0)
                    if name not in INSTRUMENTS:
                        raise ValueError(f"{path}: track {name!r} is not one of the course's "
                                         f"instruments {INSTRUMENTS}; read it with music21 instead")
                    rows.append((round(start / per_step), round((now - start) / per_step),
                                 INSTRUMENTS.index(name), e.pitch))
    return sort_notes(np.array(rows, dtype=np.int64).reshape(-1, 4))
