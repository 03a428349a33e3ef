import math
import random

import numpy as np
import pytest
import torch

from webmm_lab.data.tasks import TASKS, demo, random_words, real_words, task_stream
from webmm_lab.experiments.gpt import choice_scores, choose, exact_match, few_shot_prompt, greedy_answers
from webmm_lab.models.gpt import GPT, PRESETS, GPTConfig
from webmm_lab.models.sampling import sample_next, top_k_filter, top_p_filter
from webmm_lab.data.tokenizers import BPETokenizer, CharTokenizer, _chunks, merge_pair


def tiny(vocab=50, block=32, **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=32, **kw))


def test_causal_changing_token_t_leaves_earlier_logits_unchanged():
    model = tiny().eval()
    idx = torch.randint(50, (2, 20))
    t = 11
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % 50
    a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not torch.allclose(a[:, t:], b[:, t:])


def test_tied_weights_share_storage_and_init_follows_gpt2():
    model = tiny()
    assert model.head.weight.data_ptr() == model.wte.weight.data_ptr()
    std = model.blocks[0].attn.proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(4), rel=0.15)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.15)


def test_parameter_count_is_about_12_L_d_squared():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    assert model.num_params() == pytest.approx(12 * 4 * 128 ** 2, rel=0.02)
    assert set(PRESETS) >= {"nano", "medium"}
    assert GPTConfig.preset("mini", 10).n_embd == PRESETS["mini"][2]


def test_kv_cache_gives_identical_logits_and_greedy_output():
    model = tiny(block=64).eval()
    idx = torch.randint(50, (3, 7))
    full = model(idx)[0]
    cache = model.new_cache(3)
    part1 = model(idx[:, :4], cache=cache)[0]
    part2 = model(idx[:, 4:], cache=cache)[0]               # a multi-token step after a prefix
    assert torch.allclose(torch.cat([part1, part2], 1), full, atol=1e-5)
    a = model.generate(idx, 40, temperature=0, use_cache=True)
    b = model.generate(idx, 40, temperature=0, use_cache=False)
    assert torch.equal(a, b) and a.shape == (3, 47)


def test_extra_embeddings_and_custom_positions():
    model = tiny().eval()
    idx = torch.randint(50, (2, 6))
    extra = torch.randn(2, 6, 32)
    assert not torch.allclose(model(idx, extra=extra)[0], model(idx)[0])
    assert torch.allclose(model(idx, pos=torch.arange(6))[0], model(idx)[0])
    assert model(idx, pos=torch.tensor([0, 0, 1, 1, 2, 2]))[0].shape == (2, 6, 50)


def test_sampling_rules():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    assert torch.equal(sample_next(logits, 0), torch.tensor([[1]]))
    g = torch.Generator().manual_seed(0)
    assert all(sample_next(logits, 1e-4, generator=g).item() == 1 for _ in range(20))  # T -> 0 = greedy
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, False, True]]
    probs = logits.softmax(-1)[0]                    # [.09, .67, .24, .01]
    assert torch.isinf(top_p_filter(logits, 0.5)).tolist() == [[True, False, True, True]]
    assert torch.isinf(top_p_filter(logits, 0.8)).tolist() == [[True, False, False, True]]
    assert float(probs[1]) > 0.5
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(logits, 0.0)


def test_temperature_zero_sampling_equals_greedy_generation():
    model = tiny().eval()
    idx = torch.randint(50, (2, 5))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(model.generate(idx, 10, temperature=0),
                       model.generate(idx, 10, temperature=1e-5, generator=g))


def test_clear_errors_on_bad_input():
    model = tiny(block=16)
    with pytest.raises(ValueError, match="longer than the context"):
        model.generate(torch.zeros(1, 20, dtype=torch.long), 2)
    out = model.generate(torch.zeros(1, 20, dtype=torch.long), 2, truncate=True, use_cache=False)
    assert out.shape == (1, 18)
    with pytest.raises(ValueError, match="use_cache=False"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), 10)
    assert model.generate(torch.zeros(1, 10, dtype=torch.long), 10, use_cache=False).shape == (1, 20)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 50\)"):
        model(torch.tensor([[3, 50]]))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.tensor([3, 4]))


def test_stop_token_ends_generation():
    model = tiny().eval()
    idx = torch.randint(50, (1, 4))
    greedy = model.generate(idx, 20, temperature=0)
    stop = int(greedy[0, 6])
    out = model.generate(idx, 20, temperature=0, stop_token=stop)
    assert out[0, -1] == stop and out.shape[1] <= 7


def random_unicode(rng: random.Random, n: int) -> str:
    ranges = [(0x20, 0x7E), (0x0A, 0x0A), (0xAC00, 0xD7A3), (0x3040, 0x30FF), (0x0300, 0x036F),
              (0x1F300, 0x1F64F), (0x00A0, 0x024F), (0x0400, 0x04FF)]
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(n))


def test_bpe_round_trips_random_unicode_and_unseen_text():
    bpe = BPETokenizer.train("the cat sat on the mat. the hat! 한국어 텍스트 " * 20, 300)
    assert 256 < bpe.vocab_size <= 300     # stops early once every chunk is a single token
    rng = random.Random(0)
    for _ in range(300):
        s = random_unicode(rng, rng.randint(0, 40))
        assert bpe.decode(bpe.encode(s)) == s
    ko = "강연은 2021년 3월 16일에 열렸습니다: __init__(self)"
    assert bpe.decode(bpe.encode(ko)) == ko
    assert len(bpe.encode("the cat sat")) < len("the cat sat".encode())  # merges compress
    with pytest.raises(ValueError, match="outside this vocabulary"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(ValueError, match="not valid Unicode"):
        bpe.encode("a\ud800b")


def test_bpe_learns_the_most_frequent_pair_first_and_merges_never_overlap():
    bpe = BPETokenizer.train("aaaa aaaa aaaa", 258)
    assert bpe.merges[0] == (97, 97)                  # "aa"
    ids, chunk = merge_pair(np.array([97, 97, 97, 98]), np.zeros(4, dtype=int), (97, 97), 256)
    assert ids.tolist() == [256, 97, 98]
    ids, _ = merge_pair(np.array([1, 2, 1, 2]), np.array([0, 0, 1, 1]), (2, 1), 9)
    assert ids.tolist() == [1, 2, 1, 2]               # never across a chunk boundary


def test_bpe_chunk_by_chunk_encoding_equals_every_merge_in_order():
    text = open(__file__, encoding="utf-8").read()[:20000] + " 한국어 aaaa aaaaa" * 50
    bpe = BPETokenizer.train(text, 400)
    rng = random.Random(1)
    samples = [text[i:i + rng.randint(0, 300)] for i in (rng.randrange(len(text)) for _ in range(300))]
    samples += [random_unicode(rng, rng.randint(0, 60)) for _ in range(100)] + ["aaaaaaa", "aaa aaaaa"]
    for s in samples:
        whole = bpe._encode_arrays(s)
        assert bpe.encode(s) == whole, s                      # short texts take the chunk path
        assert bpe.encode(s) == whole, s                      # and again, from the chunk cache
    long = text[:5000]                                        # a long text takes the array path
    assert bpe.encode(long) == [i for piece in _chunks(long) for i in bpe._encode_chunk(piece)]


def test_char_tokenizer_refuses_unknown_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.decode(tok.encode("hello")) == "hello"
    with pytest.raises(ValueError, match=r"\['!', 'z'\]"):
        tok.encode("low!z")


def test_tasks_and_few_shot_prompts():
    assert demo("upper", "cake") == "cake = CAKE\n"
    assert [TASKS[t]("azby") for t in TASKS] == ["AZBY", "bacz", "a", "aazzbbyy"]
    assert few_shot_prompt([("cake", "CAKE"), ("tree", "TREE")], "blue") == "cake = CAKE\ntree = TREE\nblue = "
    assert few_shot_prompt([], "blue") == "blue = "
    assert real_words("The cake and a tree, tree3 blue.") == ["blue", "cake", "tree"]
    rng = np.random.default_rng(0)
    assert not set(random_words(500, rng, exclude={"abcd"})) & {"abcd"}
    text = task_stream(500, rng)
    assert len(text) >= 500 and all(" = " in line for line in text.splitlines() if line)
    assert exact_match(["A", "b"], ["A", "c"]) == 0.5


def test_greedy_answers_and_choices_use_the_model():
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ =\n")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=16)).eval()
    prompts = ["cake = CAKE\nblue = ", "tree = ", "abcd = "]
    answers = greedy_answers(model, tok, prompts, max_new_tokens=5)
    for p, a in zip(prompts, answers):                 # the same as decoding one at a time
        ids = torch.tensor([tok.encode(p)])
        out = tok.decode(model.generate(ids, 5, temperature=0)[0, ids.shape[1]:].tolist())
        assert a == out.split("\n")[0]
    scores = choice_scores(model, tok, "cake = ", ["CAKE", "c", "dblf"])
    assert scores.shape == (3,) and choose(model, tok, "cake = ", ["CAKE", "c", "dblf"]) == int(scores.argmax())


def test_pad_batch_pads_to_the_longest_and_marks_the_end():
    from webmm_lab.data.tokenizers import pad_batch
    tok = CharTokenizer.from_text("abc |")
    ids, lengths = pad_batch(tok, ["ab", "abcab", "c"], end="|")
    assert ids.shape == (3, 6) and lengths.tolist() == [3, 6, 2]
    assert tok.decode(ids[0, :3].tolist()) == "ab|" and ids[0, 3:].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="exceeds max_len=4"):
        pad_batch(tok, ["abcab"], end="|", max_len=4)


def test_check_ids_names_the_range_and_what_to_do():
    from webmm_lab.ids import check_ids
    check_ids(torch.tensor([0, 3, 4]), 5)
    check_ids(torch.zeros(0, dtype=torch.long), 5)                           # empty is fine
    for bad in ([0, 5], [-1, 2]):
        with pytest.raises(ValueError, match=r"colour ids must be in \[0, 5\), got .*encode with its own"):
            check_ids(torch.tensor(bad), 5, "colour ids")


def test_unigram_loss_is_add_one_frequencies_and_checks_ids():
    from webmm_lab.metrics import unigram_loss
    train = torch.tensor([0, 0, 1])                                          # counts + 1: 3, 2, 1 of 6
    assert unigram_loss(train, torch.tensor([[0, 2]]), 3) == pytest.approx(-(math.log(3 / 6) + math.log(1 / 6)) / 2)
    with pytest.raises(ValueError, match="must be in"):
        unigram_loss(train, torch.tensor([3]), 3)


def test_few_shot_sets_and_when_an_ability_first_appeared():
    from webmm_lab.data.tasks import TASKS
    from webmm_lab.experiments.gpt import few_shot_set, first_reached
    from webmm_lab.train import History
    words = ["able", "bake", "cake", "dark", "each", "fish", "gold", "hint", "iron", "jump"]
    prompts, answers = few_shot_set(words, 2, per_task=3)
    assert len(prompts) == len(answers) == 3 * len(TASKS)
    assert prompts == few_shot_set(words, 2, per_task=3)[0]                      # depends on (seed, K) only
    for p, a, f in zip(prompts, answers, [f for f in TASKS.values() for _ in range(3)]):
        lines = p.split("\n")
        assert len(lines) == 3 and lines[-1].endswith(" = ") and f(lines[-1][:-3]) == a
        assert len({l.split(" = ")[0] for l in lines}) == 3                      # distinct words
    with pytest.raises(ValueError, match="cannot make prompts"):
        few_shot_set(words[:2], 2, per_task=1)
    h = History(steps=list(range(100)), evals=[{"step": 20, "k8": 0.1, "k0": 0.0},
                                               {"step": 50, "k8": 0.5, "k0": 0.1},
                                               {"step": 100, "k8": 0.6, "k0": 0.1}])
    assert first_reached(h, "k8", "k0", 0.3) == 0.5
    assert first_reached(h, "k8", "k0", 0.9) is None
