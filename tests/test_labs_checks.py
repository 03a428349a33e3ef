import math
import re
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from webmm_lab.checks import check_function, check_raises
from webmm_lab.checks.lab00 import check_cross_entropy, check_softmax
from webmm_lab.tools.labs import build, strip_solutions, student_version

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "labs" / "solutions").glob("lab*.ipynb"))


def test_solution_blocks_become_stubs_with_the_hint():
    src = "def f(x):\n    ### BEGIN SOLUTION square it\n    return x * x\n    ### END SOLUTION\n\nprint(f)"
    out = strip_solutions(src)
    assert "x * x" not in out and "print(f)" in out
    assert "    raise NotImplementedError('Your turn: square it')" in out
    assert "Your turn: write this part" in strip_solutions("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")


@pytest.mark.parametrize("src, msg", [("### BEGIN SOLUTION\nx", "never closed"),
                                      ("x\n### END SOLUTION", "without a BEGIN"),
                                      ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside")])
def test_broken_markers_are_clear_errors(src, msg):
    with pytest.raises(ValueError, match=msg):
        strip_solutions(src)


def test_student_labs_are_up_to_date():
    assert SOLUTIONS, "no lab solutions found"
    stale = build(ROOT / "labs", check=True)
    assert not stale, f"out of date: {stale}; run `webmm-lab labs build`"


def test_student_version_has_no_solution_and_no_outputs():
    for path in SOLUTIONS:
        nb = student_version(nbformat.read(path, as_version=4), path.name)
        text = "\n".join(c.source for c in nb.cells)
        assert "BEGIN SOLUTION" not in text and "NotImplementedError" in text
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def _run(nb, cwd):
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_passes_every_check_and_the_student_version_fails_them(path):
    solution = nbformat.read(path, as_version=4)
    student = student_version(solution, path.name)
    passed = set(re.findall(r"^PASS (\S+):", _run(solution, path.parent), re.M))
    out = _run(student, path.parent.parent)
    failed = set(re.findall(r"^FAIL (\S+):", out, re.M))
    assert passed, "the solution printed no PASS"
    assert passed == failed, f"solution passed {passed}, student version failed {failed}"
    assert not re.search(r"^PASS ", out, re.M)


def good_softmax(x):
    z = x - x.max(-1, keepdim=True).values
    return z.exp() / z.exp().sum(-1, keepdim=True)


def test_a_right_answer_passes(capsys):
    assert check_softmax(good_softmax, seed=0)
    assert check_cross_entropy(lambda l, t: F.cross_entropy(l, t), seed=0)
    assert capsys.readouterr().out.startswith("PASS softmax")


@pytest.mark.parametrize("fn, pattern", [
    (lambda x: x.exp() / x.exp().sum(-1, keepdim=True), r"non-finite value .*overflow"),
    (lambda x: good_softmax(x).sum(-1), r"wrong shape"),
    (lambda x: good_softmax(x).double(), r"wrong dtype torch.float64, expected torch.float32"),
    (lambda x: good_softmax(x.T).T if x.shape[0] == x.shape[1] else torch.softmax(x, dim=0), r"values differ; worst"),
    (lambda x: good_softmax(x).detach(), r"detached"),
    (lambda x: (_ for _ in ()).throw(NotImplementedError("Your turn")), r"not implemented yet"),
    (lambda x: x[99], r"raised IndexError"),
])
def test_a_wrong_answer_fails_with_a_specific_message(fn, pattern, capsys):
    result = check_softmax(fn, seed=1)
    assert not result
    assert re.search(pattern, result.message), result.message
    assert capsys.readouterr().out.startswith("FAIL softmax")


def test_a_wrong_gradient_is_caught():
    class Bad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.softmax(x, -1)

        @staticmethod
        def backward(ctx, g):
            return g                                 # wrong on purpose
    result = check_function(Bad.apply, lambda x: torch.softmax(x, -1),
                            lambda g: (torch.randn(3, 4, generator=g),), name="bad", grad=True,
                            verbose=False)
    assert not result and "gradient of input 0" in result.message


def test_check_raises():
    def strict(x):
        if len(x) < 2:
            raise ValueError("need a batch of at least 2")
        return x
    assert check_raises(strict, (torch.zeros(1),), name="batch of one", verbose=False)
    assert not check_raises(lambda x: x, (torch.zeros(1),), name="batch of one", verbose=False)
    assert not check_raises(lambda x: x[5], (torch.zeros(1),), name="batch of one", verbose=False)


def test_info_nce_check_catches_common_mistakes():
    from webmm_lab.checks.lab01 import check_info_nce
    from webmm_lab.models.contrastive import info_nce

    def no_temperature(z1, z2, temperature=0.5):
        return info_nce(z1, z2, 1.0)

    def self_included(z1, z2, temperature=0.5):   # forgets to mask the diagonal
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        n = len(z1)
        return F.cross_entropy(z @ z.T / temperature, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    def silent_on_one(z1, z2, temperature=0.5):
        return info_nce(z1, z2, temperature) if len(z1) > 1 else z1.sum() * 0

    assert check_info_nce(info_nce, seed=0)
    for wrong, pattern in [(no_temperature, "values differ"), (self_included, "values differ"),
                           (silent_on_one, "batch of 1 pair: returned normally")]:
        result = check_info_nce(wrong, seed=0, verbose=False)
        assert not result and pattern in result.message, result.message


def test_augment_check_catches_common_mistakes():
    from webmm_lab.data.augment import augment
    from webmm_lab.checks.lab01 import check_augment

    assert check_augment(augment, verbose=False)
    cases = [(lambda x, g: x + torch.randn(x.shape, generator=g), "outside [0, 1]"),
             (lambda x, g: (x + 0.1 * torch.randn(x.shape)).clamp(0, 1), "same generator seed differ"),
             (lambda x, g: x.flip(-1), "nothing is random"),
             (lambda x, g: x[:, :, :4], "shape"),
             (lambda x, g: (x + 0.001 * torch.rand(x.shape, generator=g)).clamp(0, 1), "barely change")]
    for fn, pattern in cases:
        result = check_augment(fn, verbose=False)
        assert not result and pattern in result.message, result.message


def test_affine_check():
    from webmm_lab.data.augment import affine
    from webmm_lab.checks.lab01 import check_affine

    assert check_affine(lambda x, a, s, tx, ty: affine(x, a, s, tx, ty), seed=0, verbose=False)
    wrong = check_affine(lambda x, a, s, tx, ty: affine(x, -a, s, tx, ty), seed=0, verbose=False)
    assert not wrong and "values differ" in wrong.message


def test_lab02_checks_accept_the_reference_and_catch_mistakes():
    from webmm_lab.checks.lab02 import check_attention, check_merge, check_top_p, reference_attention
    from webmm_lab.models.sampling import top_p_filter

    assert check_attention(reference_attention, seed=0, verbose=False)

    def no_mask(x, w_qkv, b_qkv, w_proj, b_proj, n_head):
        B, T, C = x.shape
        q, k, v = (x @ w_qkv.T + b_qkv).split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)          # forgot is_causal
        return y.transpose(1, 2).reshape(B, T, C) @ w_proj.T + b_proj
    result = check_attention(no_mask, seed=0, verbose=False)
    assert not result and "values differ" in result.message

    def greedy_overlap(ids, pair, new_id):                   # merges "aaa" into "ZZ"-style overlaps
        out = list(ids)
        for i in range(len(out) - 1):
            if (out[i], out[i + 1]) == tuple(pair):
                out[i] = new_id
        return out
    assert not check_merge(greedy_overlap, seed=0, verbose=False)
    assert check_merge(_merge_ref, seed=0, verbose=False)

    assert check_top_p(top_p_filter, seed=0, verbose=False)
    off_by_one = lambda logits, p: top_p_filter(logits, min(1.0, p + 0.3))
    assert not check_top_p(off_by_one, seed=0, verbose=False)


def _merge_ref(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def test_lab07_checks_catch_mistakes():
    from webmm_lab.checks.lab07 import check_clip_loss, check_zero_shot_weights
    from webmm_lab.models.contrastive import clip_loss
    from webmm_lab.models.clip import zero_shot_weights

    assert check_clip_loss(lambda i, t, s: clip_loss(i, t, s, gather=False), seed=0, verbose=False)
    rows_only = lambda i, t, s: F.cross_entropy(s.exp() * F.normalize(i, dim=1) @ F.normalize(t, dim=1).T,
                                                torch.arange(len(i)))
    assert not check_clip_loss(lambda i, t, s: clip_loss(i, t, s.detach() * 0 + 2.659, gather=False),
                               seed=0, verbose=False)            # ignores the learned scale
    result = check_clip_loss(rows_only, seed=0, verbose=False)   # one direction only
    assert not result

    assert check_zero_shot_weights(zero_shot_weights, seed=0, verbose=False)
    def first_template_only(encode, names, templates):
        return zero_shot_weights(encode, names, templates[:1])
    def unnormalised_mean(encode, names, templates):
        return torch.stack([encode([t.format(n) for t in templates]).mean(0) for n in names], 1)
    assert not check_zero_shot_weights(unnormalised_mean, seed=0, verbose=False)
    assert not check_zero_shot_weights(first_template_only, seed=3, verbose=False)


def test_lab01_random_params_and_probe_checks_catch_mistakes(capsys):
    import math
    from webmm_lab.checks.lab01 import check_linear_probe, check_random_params
    from webmm_lab.probe import fit_linear_probe

    def params(b, gen, angle_unit=math.pi / 180, scale=(0.8, 1.15)):
        u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)
        return {"angle": u(-15, 15) * angle_unit, "scale": u(*scale), "tx": u(-0.3, 0.3),
                "ty": u(-0.3, 0.3), "contrast": u(0.6, 1.0)}
    assert check_random_params(params)
    assert not check_random_params(lambda b, g: params(b, g, angle_unit=1.0))       # degrees
    assert not check_random_params(lambda b, g: params(b, g, scale=(0.9, 1.0)))    # too narrow
    assert not check_random_params(lambda b, g: params(b, torch.Generator()))      # ignores gen
    assert "radians" in capsys.readouterr().out

    assert check_linear_probe(lambda f, y: fit_linear_probe(f, y))

    def unstandardised(f, y):
        lin = torch.nn.Linear(f.shape[1], int(y.max()) + 1)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=100)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(lin(f), y)
            loss.backward()
            return loss
        opt.step(closure)
        return lambda z: lin(z).detach()
    assert not check_linear_probe(unstandardised)


def test_lab02_bigram_check_catches_a_wrong_smoothing():
    from webmm_lab.checks.lab02 import check_bigram_loss
    from webmm_lab.metrics import bigram_loss
    assert check_bigram_loss(bigram_loss)

    def add_one_to_the_row_only(t, v, n):
        c = torch.zeros(n, n)
        c.index_put_((t[:-1], t[1:]), torch.ones(len(t) - 1), accumulate=True)
        return -((c + 1) / (c.sum(1, keepdim=True) + 1)).log()[v[:-1], v[1:]].mean().item()
    assert not check_bigram_loss(add_one_to_the_row_only)


def test_lab03_checks_accept_the_reference_and_catch_mistakes():
    from webmm_lab.checks.lab03 import check_decode, check_encode, check_inputs_targets, check_kmeans_step
    from webmm_lab.experiments.igpt import shift, to_sequence
    from webmm_lab.kmeans import Palette, kmeans_step

    assert check_kmeans_step(lambda p, c: kmeans_step(p, c)[0], seed=0, verbose=False)

    def empty_stays(points, centres):                       # forgets the empty-cluster rule
        ids = torch.cdist(points, centres).argmin(1)
        new = centres.clone()
        for j in range(len(centres)):
            if (ids == j).any():
                new[j] = points[ids == j].mean(0)
        return new
    result = check_kmeans_step(empty_stays, seed=0, verbose=False)
    assert not result and "values differ" in result.message

    def random_refill(points, centres):                     # refills empties with the first points
        new = empty_stays(points, centres)
        ids = torch.cdist(points, centres).argmin(1)
        empty = [j for j in range(len(centres)) if not (ids == j).any()]
        new[empty] = points[:len(empty)]
        return new
    assert not check_kmeans_step(random_refill, seed=0, verbose=False)

    assert check_encode(lambda x, c: Palette(c).encode(x), seed=0, verbose=False)
    by_brightness = lambda x, c: (x.mean(1, keepdim=True) - c.mean(1)[:, None, None]).abs().argmin(1)
    assert not check_encode(by_brightness, seed=0, verbose=False)

    assert check_decode(lambda i, c: Palette(c).decode(i), seed=0, verbose=False)
    channels_last = check_decode(lambda i, c: c[i], seed=0, verbose=False)
    assert not channels_last and "wrong shape" in channels_last.message

    assert check_inputs_targets(lambda ids, s: shift(to_sequence(ids, s)), seed=0, verbose=False)
    no_start = lambda ids, s: (ids.flatten(1), ids.flatten(1))
    assert not check_inputs_targets(no_start, seed=0, verbose=False)
    column_order = lambda ids, s: shift(to_sequence(ids.transpose(1, 2), s))
    assert not check_inputs_targets(column_order, seed=0, verbose=False)

    from webmm_lab.checks.lab03 import check_layer_features
    from webmm_lab.experiments.igpt import layer_features
    assert check_layer_features(lambda m, s, layer: layer_features(m, s)[layer], seed=0, verbose=False)
    norm = lambda m, layer: (list(m.blocks) + [None])[layer].ln_1 if layer < m.cfg.n_layer else m.ln_f
    paper = lambda m, s, layer: norm(m, layer)(m.hidden_states(s)[layer]).mean(1)   # as the paper pools
    assert check_layer_features(paper, seed=0, verbose=False)
    last_position = lambda m, s, layer: norm(m, layer)(m.hidden_states(s)[layer])[:, -1]   # no pooling
    assert not check_layer_features(last_position, seed=0, verbose=False)
    over_images = lambda m, s, layer: norm(m, layer)(m.hidden_states(s)[layer]).mean(0)    # the wrong axis
    assert not check_layer_features(over_images, seed=0, verbose=False)
    raw_stream = lambda m, s, layer: m.hidden_states(s)[layer].mean(1)       # no layer norm before pooling
    assert not check_layer_features(raw_stream, seed=0, verbose=False)
    off_by_one = lambda m, s, layer: norm(m, layer)(m.hidden_states(s)[layer + 1]).mean(1)
    assert not check_layer_features(off_by_one, seed=0, verbose=False)


def test_lab04_checks_accept_the_reference_and_catch_mistakes():
    import numpy as np
    from webmm_lab.checks.lab04 import (TOK, check_decode, check_encode, check_round_trip,
                                        reference_decode, reference_encode)
    from webmm_lab.data import load
    from webmm_lab.data.music_tokens import pitch_name

    assert check_encode(reference_encode, seed=0, verbose=False)

    def encoder(notes, order, longest):
        out, now = [], 0
        for o, d, i, p in notes[order(notes)].tolist():
            while o > now:
                out.append(f"wait:{min(o - now, longest)}")
                now += min(o - now, longest)
            out += [f"{TOK.instruments[i]}:{pitch_name(p)}", f"dur:{d}"]
        return out
    full_sort = lambda n: np.lexsort((n[:, 3], n[:, 2], n[:, 0]))
    assert check_encode(lambda n: encoder(n, full_sort, 32), seed=0, verbose=False)
    result = check_encode(lambda n: encoder(n, full_sort, 10**6), seed=0, verbose=False)
    assert not result and "expected" in result.message            # one long wait instead of several
    by_onset = lambda n: np.argsort(n[:, 0], kind="stable")        # instrument and pitch order ignored
    assert not check_encode(lambda n: encoder(n, by_onset, 32), seed=0, verbose=False)

    assert check_decode(lambda t: reference_decode(t).numpy(), seed=0, verbose=False)

    def drops_hanging(tokens):                               # a note without duration disappears
        notes = reference_decode(tokens).numpy()
        ids = TOK.ids(tokens[: tokens.index("<end>")] if "<end>" in tokens else tokens)
        at = [k for k, t in enumerate(ids) if TOK.note0 <= t < TOK.dur0]
        keep = [k + 1 < len(ids) and TOK.dur0 <= ids[k + 1] < TOK.wait0 for k in at]
        return notes[np.array(keep, dtype=bool)] if len(at) else notes
    assert not check_decode(drops_hanging, seed=0, verbose=False)

    def ignores_end(tokens):
        return reference_decode([t for t in tokens if t != "<end>"]).numpy()
    for seed in range(5):                                  # every seed's trials include an <end>
        assert not check_decode(ignores_end, seed=seed, verbose=False)

    from webmm_lab.checks.lab04 import check_musenet_decode, reference_musenet_decode
    assert check_musenet_decode(lambda t: tuple(x.numpy() if hasattr(x, "numpy") else x
                                                for x in reference_musenet_decode(t)), seed=0, verbose=False)
    no_count = lambda t: (reference_musenet_decode(t)[0].numpy(), 0)           # never counts hanging notes
    assert not check_musenet_decode(no_count, seed=0, verbose=False)

    assert check_musenet_decode(_musenet_decoder, seed=0, verbose=False)
    assert not check_musenet_decode(lambda t: _musenet_decoder(t, hang_one_step=True), seed=0, verbose=False)

    pieces = [p for p in load("music", split="all").pieces if p.style == "bach"][:5]
    assert check_round_trip(reference_encode, lambda t: reference_decode(t).numpy(), pieces, verbose=False)
    assert not check_round_trip(reference_encode, lambda t: reference_decode(t).numpy()[:-1], pieces,
                                verbose=False)

    def stub(*a):
        raise NotImplementedError("Your turn")
    assert "not implemented" in check_encode(stub, seed=0, verbose=False).message
    assert "not implemented" in check_round_trip(stub, stub, pieces, verbose=False).message


def _musenet_decoder(tokens, latest=False, floor=True, hang_one_step=False):
    """A student's MuseNet-form decoder; `latest`, `floor=False` and `hang_one_step` (every note
    still sounding at the end lasts 1 step) are mistakes the checks must catch."""
    import numpy as np
    from webmm_lab.data.music import INSTRUMENTS
    from webmm_lab.data.music_tokens import pitch_number
    now, rows, sounding = 0, [], {}
    for t in tokens:
        if t.startswith("wait:"):
            now += int(t[5:])
            continue
        inst, vol, name = t.split(":")
        key = (INSTRUMENTS.index(inst), pitch_number(name))
        if vol != "v0":
            sounding.setdefault(key, []).append(now)
        elif sounding.get(key):
            start = sounding[key].pop(-1 if latest else 0)
            rows.append((start, now - start, *key))
    last = lambda s: 1 if hang_one_step else max(1, now - s) if floor else now - s
    hanging = [(s, last(s), *key) for key, starts in sounding.items() for s in starts]
    return np.array(rows + hanging, dtype=np.int64).reshape(-1, 4), len(hanging)


@pytest.mark.parametrize("seed", [0, 1, 2, None])          # None: a random seed; the forced cases still catch it
def test_lab04_checks_catch_the_mistakes_of_issue_36_whatever_the_seed(seed):
    import numpy as np
    from webmm_lab.checks.lab04 import TOK, check_decode, check_encode, check_musenet_decode, reference_decode
    from webmm_lab.data.music_tokens import pitch_name

    assert check_musenet_decode(_musenet_decoder, seed=seed, verbose=False)
    latest = check_musenet_decode(lambda t: _musenet_decoder(t, latest=True), seed=seed, verbose=False)
    assert not latest and "closed the latest sounding note" in latest.message, latest.message
    no_floor = check_musenet_decode(lambda t: _musenet_decoder(t, floor=False), seed=seed, verbose=False)
    assert not no_floor and "at least 1 step" in no_floor.message, no_floor.message

    def wait_zero(notes):                                   # divmod's remainder written even when it is 0
        out, now = [], 0
        for o, d, i, p in notes[np.lexsort((notes[:, 3], notes[:, 2], notes[:, 0]))].tolist():
            if o > now:
                q, r = divmod(o - now, TOK.max_wait)
                out += [f"wait:{TOK.max_wait}"] * q + [f"wait:{r}"]
            now = o
            out += [f"{TOK.instruments[i]}:{pitch_name(p)}", f"dur:{d}"]
        return out
    result = check_encode(wait_zero, seed=seed, verbose=False)
    assert not result and "extra wait:0" in result.message, result.message

    def last_note_zero(tokens):                             # a note at the very end gets 0 steps
        notes = reference_decode(tokens).numpy().copy()
        if tokens and tokens[-1] in TOK.index and TOK.is_note(np.array(TOK.index[tokens[-1]])):
            notes[-1, 1] = 0
        return notes
    result = check_decode(last_note_zero, seed=seed, verbose=False)
    assert not result and "lasts 1 step, not 0" in result.message, result.message


def test_lab05_checks_accept_the_reference_and_catch_mistakes():
    from webmm_lab.checks.lab05 import check_ema_update, check_nearest_code, check_restart, check_straight_through
    from webmm_lab.kmeans import nearest
    from webmm_lab.models.vq import ema_update, restart_dead_codes, straight_through

    assert check_nearest_code(lambda x, c: nearest(x, c)[0], seed=0, verbose=False)
    assert check_nearest_code(lambda x, c: torch.cdist(x, c).argmin(1), seed=0, verbose=False)
    assert not check_nearest_code(lambda x, c: (x @ c.T).argmax(1), seed=0, verbose=False)   # similarity, not distance
    assert not check_nearest_code(lambda x, c: torch.cdist(x, c).argmin(1).int(), seed=0, verbose=False)

    assert check_straight_through(straight_through, verbose=False)
    assert not check_straight_through(lambda z, q: q, verbose=False)                    # no gradient to z
    assert not check_straight_through(lambda z, q: z + (q - z), verbose=False)          # z's gradient cancels
    leaky = check_straight_through(lambda z, q: q + z - z.detach(), verbose=False)      # the codebook learns too
    assert not leaky and "codebook" in leaky.message

    assert check_ema_update(ema_update, seed=0, verbose=False)
    no_decay_of_losers = lambda c, t, x, k, d: tuple(
        torch.where(torch.bincount(k, minlength=len(c)) > 0, a, b) for a, b in zip(ema_update(c, t, x, k, d), (c, t)))
    assert not check_ema_update(no_decay_of_losers, seed=0, verbose=False)
    swapped = lambda c, t, x, k, d: ema_update(c, t, x, k, 1 - d)
    assert not check_ema_update(swapped, seed=0, verbose=False)

    assert check_restart(lambda *a: restart_dead_codes(*a), verbose=False)

    def to_noise(codebook, count, total, flat, threshold):          # restarted somewhere, not on the data
        dead = count < threshold
        codebook, count, total = codebook.clone(), count.clone(), total.clone()
        codebook[dead] = torch.randn(int(dead.sum()), codebook.shape[1])
        count[dead], total[dead] = threshold, threshold * codebook[dead]
        return codebook, count, total, int(dead.sum())
    assert not check_restart(to_noise, verbose=False)

    def keeps_count(codebook, count, total, flat, threshold):       # revived, but with no weight
        new, c, t, n = restart_dead_codes(codebook, count, total, flat, threshold)
        dead = count < threshold
        return new, torch.where(dead, count, c), t, n
    assert not check_restart(keeps_count, verbose=False)

    def all_on_one(codebook, count, total, flat, threshold):        # every dead code on one vector
        dead = count < threshold
        codebook, count, total = codebook.clone(), count.clone(), total.clone()
        codebook[dead] = flat[0]
        count[dead], total[dead] = threshold, threshold * codebook[dead]
        return codebook, count, total, int(dead.sum())
    result = check_restart(all_on_one, verbose=False)
    assert not result and "same vector" in result.message

    def zeroes_living_totals(codebook, count, total, flat, threshold):
        new, c, t, n = restart_dead_codes(codebook, count, total, flat, threshold)
        return new, c, torch.where((count < threshold)[:, None], t, torch.zeros_like(t)), n
    result = check_restart(zeroes_living_totals, verbose=False)
    assert not result and "living code" in result.message

    def stub(*a):
        raise NotImplementedError("Your turn")
    for check in (check_nearest_code, check_ema_update):
        assert "not implemented" in check(stub, seed=0, verbose=False).message
    assert "not implemented" in check_straight_through(stub, verbose=False).message
    assert "not implemented" in check_restart(stub, verbose=False).message


def _restart_drawing(rows, dead_if=lambda count, threshold: count < threshold):
    """A student's restart that takes rows(N, n_dead) of the batch for the codes dead_if picks."""
    def restart(codebook, count, total, flat, threshold):
        dead = dead_if(count, threshold)
        n = int(dead.sum())
        codebook, count, total = codebook.clone(), count.clone(), total.clone()
        fresh = flat[rows(len(flat), n)]
        codebook[dead], count[dead], total[dead] = fresh, threshold, threshold * fresh
        return codebook, count, total, n
    return restart


def test_lab05_restart_check_catches_fixed_rows_and_the_threshold_itself():
    from webmm_lab.checks.lab05 import check_restart

    distinct = lambda N, n: torch.randperm(N)[:n] if n <= N else torch.randint(N, (n,))
    state = torch.get_rng_state()
    assert check_restart(_restart_drawing(distinct), verbose=False)
    assert torch.equal(torch.get_rng_state(), state)                 # the caller's random state is kept
    cases = [(lambda N, n: torch.arange(n) % N, "same rows every time"),                  # flat[:n_dead]
             (lambda N, n: torch.randperm(N, generator=torch.Generator())[:n] % N, "same rows every time"),
             (lambda N, n: torch.randperm(n) % N, "favour some rows"),                    # the first rows, shuffled
             (lambda N, n: torch.randint(N, (n,)), "same vector")]                          # with replacement
    for rows, pattern in cases:
        result = check_restart(_restart_drawing(rows), verbose=False)
        assert not result and pattern in result.message, result.message
    at_threshold = check_restart(_restart_drawing(distinct, lambda c, t: c <= t), verbose=False)
    assert not at_threshold and "equals the threshold" in at_threshold.message, at_threshold.message


def test_lab05_nearest_code_check_refuses_loops_and_the_n_k_d_tensor():
    import sys
    from webmm_lab.checks.lab05 import check_nearest_code

    right = {"one product": lambda x, c: (c.pow(2).sum(1)[None, :] - 2 * x @ c.T).argmin(1),
             "einsum": lambda x, c: (c.pow(2).sum(1) - 2 * torch.einsum("nd,kd->nk", x, c)).argmin(1),
             "chunks of rows": lambda x, c: torch.cat([torch.cdist(b, c).argmin(1) for b in x.split(256)])}
    for name, fn in right.items():
        assert check_nearest_code(fn, verbose=False), name
    wrong = {"(N, K, D) differences": lambda x, c: (x[:, None] - c[None]).pow(2).sum(-1).argmin(1),
             "(N, K, D) products": lambda x, c: ((c * c).sum(1) - 2 * (x[:, None] * c[None]).sum(-1)).argmin(1),
             "(N, K, D) in numpy": lambda x, c: torch.from_numpy(
                 ((x.numpy()[:, None] - c.numpy()[None]) ** 2).sum(-1).argmin(1)),
             "loop over vectors": lambda x, c: torch.stack([((c - v) ** 2).sum(1).argmin() for v in x]),
             "loop over codes": lambda x, c: torch.stack([((x - k) ** 2).sum(1) for k in c], 1).argmin(1)}
    for name, fn in wrong.items():
        result = check_nearest_code(fn, verbose=False)
        pattern = "Python loop" if name.startswith("loop") else "(N, K, D) tensor of differences"
        assert not result and pattern in result.message, (name, result.message)
    assert sys.getprofile() is None                                  # the profiler is gone after the check


def test_lab06_schedule_check_accepts_the_dvae_and_catches_other_ramps():
    from webmm_lab.checks.lab06 import check_schedule
    from webmm_lab.models.dvae import DiscreteVAE

    def dvae(done, tau_start, tau_end, anneal_over, kl_weight, kl_warmup):
        return DiscreteVAE(4, 4, 4, tau_start=tau_start, tau_end=tau_end, anneal_over=anneal_over,
                           kl_weight=kl_weight, kl_warmup=kl_warmup).schedule(done)
    assert check_schedule(dvae, seed=0, verbose=False)

    def linear_tau(done, tau_start, tau_end, anneal_over, kl_weight, kl_warmup):
        p = min(1.0, max(0.0, done))
        return tau_start + (tau_end - tau_start) * min(1.0, p / anneal_over), kl_weight * min(1.0, p / kl_warmup)
    assert not check_schedule(linear_tau, seed=0, verbose=False)

    def no_warmup(done, *args):
        tau, _ = dvae(done, *args)
        return tau, args[3]
    assert not check_schedule(no_warmup, seed=0, verbose=False)

    def unclamped(done, tau_start, tau_end, anneal_over, kl_weight, kl_warmup):
        return tau_start * (tau_end / tau_start) ** (done / anneal_over), kl_weight * done / kl_warmup
    assert not check_schedule(unclamped, seed=0, verbose=False)


def test_lab06_checks_accept_the_reference_and_catch_mistakes():
    import math

    from webmm_lab.checks.lab06 import check_attention_mask, check_gumbel_softmax, check_kl_to_uniform
    from webmm_lab.models.dalle import attention_mask
    from webmm_lab.models.dvae import gumbel_softmax, kl_to_uniform

    def reference(logits, tau, u):
        return gumbel_softmax(logits, tau, dim=1, u=u)
    assert check_gumbel_softmax(reference, seed=0, verbose=False)
    no_temperature = lambda l, t, u: gumbel_softmax(l, 1.0, dim=1, u=u) if t > 0 else reference(l, t, u)
    assert not check_gumbel_softmax(no_temperature, seed=0, verbose=False)
    wrong_noise = lambda l, t, u: torch.softmax((l - torch.log(u)) / t, 1)              # exponential, not Gumbel
    assert not check_gumbel_softmax(wrong_noise, seed=0, verbose=False)
    wrong_dim = lambda l, t, u: torch.softmax((l - torch.log(-torch.log(u))) / t, -1)
    assert not check_gumbel_softmax(wrong_dim, seed=0, verbose=False)
    silent = check_gumbel_softmax(lambda l, t, u: torch.softmax((l - torch.log(-torch.log(u))) / t, 1),
                                  seed=0, verbose=False)                                 # tau = 0 not refused
    assert not silent and "tau = 0" in silent.message

    assert check_kl_to_uniform(kl_to_uniform, seed=0, verbose=False)
    naive = lambda l: (l.softmax(1) * (l.softmax(1).log() + math.log(l.shape[1]))).sum(1).mean()
    for seed in range(3):                                # every seed has logits that underflow
        result = check_kl_to_uniform(naive, seed=seed, verbose=False)
        assert not result and "non-finite" in result.message
    no_log_k = lambda l: (l.softmax(1) * l.log_softmax(1)).sum(1).mean()
    assert not check_kl_to_uniform(no_log_k, seed=0, verbose=False)
    summed = lambda l: kl_to_uniform(l) * l[:, 0].numel()                                # a sum over cells
    assert not check_kl_to_uniform(summed, seed=0, verbose=False)
    reversed_kl = lambda l: (-(l.log_softmax(1) + math.log(l.shape[1])) / l.shape[1]).sum(1).mean()
    assert not check_kl_to_uniform(reversed_kl, seed=0, verbose=False)

    assert check_attention_mask(lambda L, G, kind, k: attention_mask(L, G, kind, k), verbose=False)

    def text_sees_images(L, G, kind, k):
        m = attention_mask(L, G, kind, k)
        m[:L] = True
        return m
    bad = check_attention_mask(text_sees_images, verbose=False)
    assert not bad and "caption token" in bad.message and "may attend" in bad.message

    def row_off_by_one(L, G, kind, k):
        m = attention_mask(L, G, kind, k)
        if kind == "row":
            j = torch.arange(G * G)
            m[L:, L:] &= (j[:, None] - j[None, :]) < G - 1
        return m
    assert not check_attention_mask(row_off_by_one, verbose=False)
    assert not check_attention_mask(lambda L, G, kind, k: attention_mask(L, G, kind, k).int(), verbose=False)

    def stub(*a):
        raise NotImplementedError("Your turn")
    for check in (check_gumbel_softmax, check_kl_to_uniform):
        assert "not implemented" in check(stub, seed=0, verbose=False).message
    assert "not implemented" in check_attention_mask(stub, verbose=False).message


@pytest.mark.parametrize("seed", [0, 1, 2, None])
def test_lab06_checks_catch_the_mistakes_of_issue_35_whatever_the_seed(seed):
    from webmm_lab.checks.lab06 import check_gumbel_softmax, check_schedule

    def schedule(done, tau_start, tau_end, anneal_over, kl_weight, kl_warmup, low=0.0):
        p = min(1.0, max(low, done))
        return tau_start * (tau_end / tau_start) ** min(1.0, p / anneal_over), kl_weight * min(1.0, p / kl_warmup)
    assert check_schedule(schedule, seed=seed, verbose=False)
    unclamped = check_schedule(lambda *a, **k: schedule(*a, **k, low=-math.inf), seed=seed, verbose=False)
    assert not unclamped and "was not clamped" in unclamped.message, unclamped.message

    def gumbel(logits, tau, u, refuse=lambda t: t <= 0, sign=1.0, floor=0.0):
        if refuse(tau):
            raise ValueError(f"the temperature must be > 0, got {tau}")
        return torch.softmax((logits + sign * -torch.log(-torch.log(u))) / max(tau, floor), 1)
    assert check_gumbel_softmax(gumbel, seed=seed, verbose=False)
    cases = [(dict(refuse=lambda t: t == 0), "tau = -0.5: returned normally"),        # a negative tau accepted
             (dict(refuse=lambda t: t < 0.1), "tau = 0.0625: raised ValueError"),     # small ones refused
             (dict(floor=0.1), "tau = 0.0625: output: values differ"),                # small ones raised to 0.1
             (dict(sign=-1.0), "largest value is not at the code")]                   # the noise subtracted
    for options, pattern in cases:
        result = check_gumbel_softmax(lambda l, t, u: gumbel(l, t, u, **options), seed=seed, verbose=False)
        assert not result and pattern in result.message, (options, result.message)


def test_lab08_grad_cache_check_accepts_gradcache_and_catches_accumulation():
    from webmm_lab.checks.lab08 import check_grad_cache
    from webmm_lab.experiments.web import accumulated_gradients, grad_cache_gradients
    from webmm_lab.models.contrastive import clip_loss

    assert check_grad_cache(grad_cache_gradients, verbose=False)
    loss = lambda m, b: clip_loss(*m(*b), m.logit_scale)
    naive = check_grad_cache(lambda m, b, k: accumulated_gradients(m, loss, b, k), verbose=False)
    assert not naive and "differ from the whole batch's" in naive.message

    def frozen_scale(m, b, k):                        # the logit scale's gradient forgotten
        grads = grad_cache_gradients(m, b, k)
        return [torch.zeros_like(g) if p is m.logit_scale else g for p, g in zip(m.parameters(), grads)]
    result = check_grad_cache(frozen_scale, verbose=False)
    assert not result and "logit_scale" in result.message
    assert not check_grad_cache(lambda m, b, k: grad_cache_gradients(m, b, k)[:-1], verbose=False)


def test_lab08_checks_accept_the_reference_and_catch_mistakes():
    from webmm_lab.checks.lab08 import check_clip_score_filter, check_dedup, check_keyword_filter
    from webmm_lab.experiments.dedup import dedup_by_embedding
    from webmm_lab.experiments.web import choose_threshold, keyword_filter

    assert check_keyword_filter(lambda c, b: keyword_filter(c, b), verbose=False)
    squashed = lambda t: re.sub(r"[^a-z]", "", t.lower())                  # catches every form, and "gruel" too
    substring = check_keyword_filter(lambda c, b: torch.tensor([any(w in squashed(t) for w in b) for t in c]),
                                     verbose=False)
    assert not substring and "near-miss" in substring.message
    exact = check_keyword_filter(lambda c, b: torch.tensor([bool(set(re.findall(r"[a-z]+", t.lower())) & set(b))
                                                            for t in c]), verbose=False)
    assert not exact and "missed forms" in exact.message
    assert not check_keyword_filter(lambda c, b: [False] * len(c), verbose=False)            # not a tensor

    assert check_dedup(dedup_by_embedding, verbose=False)
    raw_dot = check_dedup(lambda e, t: ((e @ e.T) >= t).tril(-1).any(1), verbose=False)
    assert not raw_dot and "cosine" in raw_dot.message
    both_ways = lambda e, t: ((F.normalize(e, dim=1) @ F.normalize(e, dim=1).T >= t).fill_diagonal_(False)).any(1)
    assert not check_dedup(both_ways, verbose=False)                                        # removes both copies

    def reference(v, bad, s):
        t = choose_threshold(v, bad)
        return t, s < t
    assert check_clip_score_filter(reference, verbose=False)
    assert not check_clip_score_filter(lambda v, bad, s: (0.0, s < 0.0), verbose=False)      # no threshold chosen
    assert not check_clip_score_filter(lambda v, bad, s: (reference(v, bad, s)[0], s <= 0.4), verbose=False)
    assert not check_clip_score_filter(lambda v, bad, s: reference(v, bad, s)[1], verbose=False)

    def stub(*a):
        raise NotImplementedError("Your turn")
    for check in (check_keyword_filter, check_dedup, check_clip_score_filter):
        assert "not implemented" in check(stub, verbose=False).message
