"""Notebook 04's pieces: the music corpus file, the MuseNet-style encoding, the synthesiser."""
import hashlib

import numpy as np
import pytest
import torch

from webmm_lab.data import load
from webmm_lab.data import music
from webmm_lab.data.music_tokens import MusicTokenizer, musenet_form
from webmm_lab.experiments.musenet import MuseData, MuseSetup, build_musenet, compose, grammar
from webmm_lab.experiments.style import (excerpts, judge_styles, one_at_a_time, style_features,
                                         train_style_judge)
from webmm_lab.data.audio import TIMBRES, render, write_wav


def random_notes(rng, n=60, instruments=5):
    onset = np.sort(rng.integers(0, 200, n))
    return music.sort_notes(np.stack([onset, rng.integers(1, 33, n), rng.integers(0, instruments, n),
                                      rng.integers(36, 97, n)], 1))


def test_shipped_file_matches_its_sha256_and_holds_three_styles():
    assert hashlib.sha256(music.SHIPPED.read_bytes()).hexdigest() == music.SHIPPED_SHA256
    pieces = music.corpus_pieces()
    assert {p.style for p in pieces} == set(music.STYLES)
    assert all(len(p.notes) >= 32 and p.notes.shape[1] == 4 for p in pieces)


def test_a_fresh_parse_of_a_sample_gives_the_shipped_notes():
    shipped = {p.name: p for p in music.corpus_pieces()}
    for style in music.STYLES:
        name = next(n for n in shipped if n.startswith(style + "/"))
        path = next(p for p in music._corpus_paths(style) if p.stem == name.split("/", 1)[1])
        assert np.array_equal(music.parse_piece(path, style), shipped[name].notes), name


def test_splits_are_disjoint_by_piece_and_cover_every_style():
    splits = {s: load("music", split=s) for s in ("train", "val", "test")}
    names = [set(p.name for p in m.pieces) for m in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    for m in splits.values():
        assert {p.style for p in m.pieces} == set(music.STYLES)
    with pytest.raises(ValueError, match="split"):
        load("music", split="training")


def test_a_corrupt_cache_is_rebuilt_with_a_message(tmp_path, monkeypatch, capsys):
    good = music.corpus_pieces()[:3]
    monkeypatch.setenv("WEBMM_DATA", str(tmp_path))
    monkeypatch.setattr(music, "SHIPPED_SHA256", "0" * 64)         # the shipped file reads as corrupt
    monkeypatch.setattr(music, "build_corpus", lambda *a, **k: good)
    cache = tmp_path / "music" / "music_corpus.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a zip file")
    pieces = music.corpus_pieces()
    assert "unusable" in capsys.readouterr().out
    assert [p.name for p in pieces] == [p.name for p in good]
    assert [p.name for p in music.read_pieces(cache)] == [p.name for p in good]   # rebuilt on disk


def test_a_cache_whose_hash_differs_is_rebuilt_not_read(tmp_path, monkeypatch, capsys):
    good, other = music.corpus_pieces()[:3], music.corpus_pieces()[3:5]
    monkeypatch.setenv("WEBMM_DATA", str(tmp_path))
    monkeypatch.setattr(music, "SHIPPED_SHA256", "0" * 64)
    monkeypatch.setattr(music, "build_corpus", lambda *a, **k: good)
    assert [p.name for p in music.corpus_pieces()] == [p.name for p in good]    # parsed, cached
    assert "parsing music21's corpus once" in capsys.readouterr().out
    cache = tmp_path / "music" / "music_corpus.npz"
    assert [p.name for p in music.corpus_pieces()] == [p.name for p in good]    # read from the cache
    assert capsys.readouterr().out == ""
    music.save_pieces(other, cache)                  # a readable file, but not the one hashed
    assert [p.name for p in music.corpus_pieces()] == [p.name for p in good]
    assert "sha256 differs" in capsys.readouterr().out
    assert not list(cache.parent.glob("*.tmp"))      # no temporary file left behind


def test_read_pieces_refuses_arrays_of_the_wrong_shape(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, notes=np.zeros((5, 3), np.int16), lengths=np.array([5]), names=np.array(["a"]),
             styles=np.array(["bach"]))
    with pytest.raises(ValueError, match="save_pieces"):
        music.read_pieces(path)


def test_encoding_round_trips_real_pieces_exactly():
    tok = MusicTokenizer()
    for p in music.corpus_pieces()[::20]:
        notes, stats = tok.decode(tok.encode(p.notes))
        assert np.array_equal(notes, p.notes) and stats["hanging"] == 0


def test_encoding_round_trips_random_notes_with_long_waits():
    tok, rng = MusicTokenizer(), np.random.default_rng(0)
    for _ in range(20):
        notes = random_notes(rng)
        notes[:, 0] *= 5                                   # gaps longer than max_wait need several waits
        assert (np.diff(np.unique(notes[:, 0])) > tok.max_wait).any()
        back, stats = tok.decode(tok.encode(notes))
        assert np.array_equal(back, music.sort_notes(notes)) and stats["hanging"] == 0


def test_encoding_rejects_notes_it_cannot_write():
    tok = MusicTokenizer()
    with pytest.raises(ValueError, match="pitch"):
        tok.encode(np.array([[0, 4, 0, 20]]))
    with pytest.raises(ValueError, match="duration"):
        tok.encode(np.array([[0, 99, 0, 60]]))
    with pytest.raises(KeyError, match="unknown token"):
        tok.ids(["piano:C4"])
    with pytest.raises(ValueError, match="unknown style"):
        tok.prefix("jazz", ["soprano"])


def test_malformed_sequences_decode_without_error_and_close_every_note():
    tok, rng = MusicTokenizer(), np.random.default_rng(1)
    for _ in range(50):
        ids = rng.integers(0, tok.vocab_size, 300)
        notes, stats = tok.decode(ids)
        assert stats["notes"] == len(notes) == stats["with_duration"] + stats["hanging"]
        assert (notes[:, 1] >= 1).all() and (notes[:, 0] >= 0).all()
        assert ((notes[:, 3] >= tok.low) & (notes[:, 3] <= tok.high)).all()
    hanging = tok.ids(["soprano:C4", "wait:3", "alto:E4", "dur:2", "bass:C3"])
    notes, stats = tok.decode(hanging)
    assert notes.tolist() == [[0, 3, 0, 60], [3, 2, 1, 64], [3, 1, 3, 48]] and stats["hanging"] == 2
    assert tok.decode(tok.ids(["soprano:C4", "dur:2", "<end>", "alto:E4", "dur:2"]))[0].tolist() == [[0, 2, 0, 60]]


def test_musenet_form_has_an_off_for_every_on():
    form = musenet_form(music.corpus_pieces()[0].notes)
    ons = sum(":v80:" in t for t in form)
    assert ons == sum(":v0:" in t for t in form) == len(music.corpus_pieces()[0].notes)


def test_transposition_keeps_every_instrument_in_its_range():
    data = MuseData.build(MuseSetup(transpose=6))
    batch_fn = data.batches(batch=64)
    tok = data.tok
    for step in range(5):
        x, y = batch_fn(step)
        notes = x[tok.is_note(x)] - tok.note0
        inst, pitch = notes // tok.n_pitch, notes % tok.n_pitch + tok.low
        for i, name in enumerate(tok.instruments):
            if (inst == i).any():
                lo, hi = data.ranges[name]
                assert lo <= pitch[inst == i].min() and pitch[inst == i].max() <= hi
    lo, hi = data.shifts(data.train_set.pieces[0])
    assert lo <= 0 <= hi and hi - lo > 0


def test_batches_hold_the_prefix_and_targets_shifted_by_one():
    data = MuseData.build(MuseSetup(block=64))
    x, y = data.batches(batch=8)(0)
    assert x.shape == y.shape == (8, 64)
    P = len(data.tok.prefix("bach", []))
    assert (x[:, P - 1] == data.tok.start).all() and (y[:, : P - 1] == -1).all()
    scored = y[:, :-1] >= 0
    assert (x[:, 1:][scored] == y[:, :-1][scored]).all()     # each target is the next input


def test_validation_windows_score_every_token_once():
    data = MuseData.build(MuseSetup(block=48))
    pieces = data.val_set.pieces[:6]
    x, y = data.windows(pieces)
    P = len(data.tok.prefix("bach", []))
    assert int((y >= 0).sum()) == sum(len(data.sequence(p)) - P for p in pieces)


def test_compose_returns_prefix_then_samples_without_conditioning_tokens():
    data = MuseData.build(MuseSetup(block=40, layers=1, width=32, heads=2, max_pieces=10))
    model = build_musenet(data.setup, data)
    seqs = compose(model, data.tok, "irish", ["fiddle"], n=3, length=20)
    pre = data.tok.prefix("irish", ["fiddle"])
    assert len(seqs) == 3 and seqs.shape[1] <= len(pre) + 20        # may stop early at <end>
    assert (seqs[:, : len(pre)] == torch.tensor(pre)).all()
    assert not (seqs[:, len(pre):] < data.tok.note0).logical_and(seqs[:, len(pre):] != data.tok.end).any()
    assert 0 <= grammar(data.tok, seqs)["fraction"] <= 1


def test_style_features_and_judge_separate_real_styles():
    pieces = music.corpus_pieces()
    train, test = pieces[::2], pieces[1::2]
    lists, styles = excerpts(train, 100, per_piece=2)
    judge = train_style_judge(lists, styles)
    lists, styles = excerpts(test, 100, per_piece=1, seed=1)
    acc = np.mean(np.array(judge_styles(judge, lists)) == np.array(styles))
    assert acc > 0.8
    feats = style_features(pieces[0].notes)
    assert abs(feats["pitch classes"].sum() - 1) < 1e-6 and abs(feats["intervals"].sum() - 1) < 1e-6
    up = pieces[0].notes.copy()
    up[:, 3] += 5                                              # the same piece in another key
    for group, values in style_features(up).items():
        assert np.allclose(values, feats[group]), group        # key-invariant, every group
    assert feats["pitch classes"][0] == feats["pitch classes"].max()


def test_one_at_a_time_counts_notes_that_clash_within_a_voice():
    assert one_at_a_time(np.array([[0, 4, 0, 60], [4, 4, 0, 62], [0, 8, 1, 55]])) == 1.0
    # alto sings 57 and 59 at once (2 clashing notes of 4); soprano's next note is after
    notes = np.array([[0, 4, 1, 57], [2, 4, 1, 59], [8, 4, 1, 60], [0, 4, 0, 72]])
    assert one_at_a_time(notes) == 0.5
    bach = [one_at_a_time(p.notes) for p in music.corpus_pieces() if p.style == "bach"]
    assert np.median(bach) == 1.0 and np.mean(bach) > 0.9       # real chorales: one note per voice


def test_synth_length_peak_and_timbres_differ(tmp_path):
    notes = np.array([[0, 4, 0, 69], [4, 8, 1, 64], [4, 8, 3, 45]])
    wave = render(notes, tempo=60, sample_rate=8000)
    assert wave.dtype == np.float32 and np.abs(wave).max() <= 0.9 + 1e-6
    assert abs(len(wave) / 8000 - (3.0 + 0.5)) < 0.01                   # 12 sixteenths at 60 bpm + tail
    spectra = {}
    for name in TIMBRES:
        w = render(np.array([[0, 8, 0, 57]]), timbres=name, sample_rate=8000)
        mag = np.abs(np.fft.rfft(w))
        spectra[name] = (mag * np.arange(len(mag))).sum() / mag.sum()    # spectral centroid
    assert len({round(c) for c in spectra.values()}) == len(TIMBRES)
    loud = render(np.array([[0, 8, i % 4, 60] for i in range(40)]))       # 40 notes at once
    assert np.abs(loud).max() <= 0.9 + 1e-6
    path = write_wav(tmp_path / "a.wav", wave, 8000)
    import wave as wavefile
    with wavefile.open(str(path)) as f:
        assert f.getnframes() == len(wave) and f.getframerate() == 8000
    with pytest.raises(ValueError, match="timbre"):
        render(notes, timbres="kazoo")


@pytest.mark.slow
def test_midi_export_is_lossless_on_every_piece(tmp_path):
    """Every note of every piece survives MIDI, including Palestrina's unisons between two voices
    that share a voice name (two same-pitch notes sounding at once on one instrument)."""
    for p in music.corpus_pieces():
        back = music.read_midi(music.write_midi(p.notes, tmp_path / "a.mid"))
        assert np.array_equal(back, music.sort_notes(p.notes)), p.name


def test_same_pitch_overlaps_go_to_separate_midi_tracks(tmp_path):
    from music21 import converter
    notes = np.array([[0, 8, 0, 60], [2, 4, 0, 60], [2, 4, 0, 64], [8, 4, 0, 60]])   # soprano, C4 twice at once
    path = music.write_midi(notes, tmp_path / "b.mid")
    assert np.array_equal(music.read_midi(path), music.sort_notes(notes))
    parts = converter.parse(str(path)).parts                       # music21's own parser agrees
    assert len(parts) == 2
    assert sorted(len(p.flatten().pitches) for p in parts) == [1, 3]


def test_piano_roll_draws_one_bar_per_note_in_its_instruments_colour():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.colors import to_rgba
    from webmm_lab.plots import INSTRUMENT_COLOURS, piano_roll
    notes = np.array([[0, 4, 0, 72], [4, 4, 0, 72], [0, 8, 3, 48]])
    ax = piano_roll(notes, music.INSTRUMENTS, title="t")
    bars = {tuple(c.get_facecolor()[0]): len(c.get_paths()) for c in ax.collections}
    assert bars == {to_rgba(INSTRUMENT_COLOURS[0]): 2, to_rgba(INSTRUMENT_COLOURS[3]): 1}
    # the two repeated C5s touch (0-4, 4-8): each bar has an edge, so they read as two notes
    assert all(tuple(c.get_edgecolor()[0]) == to_rgba("white") and c.get_linewidth()[0] > 0
               for c in ax.collections)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["soprano", "bass"]
    assert ax.get_xlim() == (0, 2.0)
