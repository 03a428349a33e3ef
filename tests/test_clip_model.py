import pytest
import torch
import torch.nn.functional as F

from webmm_lab.models.contrastive import LOGIT_SCALE_INIT, clip_loss
from webmm_lab.models.clip import CLIP, zero_shot_weights
from webmm_lab.models.cnn import ConvEncoder
from webmm_lab.models.gpt import GPT, GPTConfig


def small_clip():
    torch.manual_seed(0)
    return CLIP(ConvEncoder(3, 8), GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16)), 12)


def test_embeddings_are_unit_length_and_read_at_the_end_of_text():
    model = small_clip().eval()
    img = model.encode_image(torch.rand(4, 3, 8, 8))
    assert img.shape == (4, 12) and torch.allclose(img.norm(dim=1), torch.ones(4), atol=1e-5)
    ids = torch.randint(20, (2, 10))
    lengths = torch.tensor([4, 10])
    txt = model.encode_text(ids, lengths)
    padded = ids.clone()
    padded[0, 4:] = 0                                     # what follows the end does not matter
    assert torch.allclose(model.encode_text(padded, lengths), txt, atol=1e-6)
    assert model.logit_scale.item() == pytest.approx(LOGIT_SCALE_INIT)
    with pytest.raises(ValueError, match="lengths"):
        model.encode_text(ids, torch.tensor([0, 3]))


def test_clip_trains_on_a_toy_matching_task():
    model = small_clip()
    torch.manual_seed(1)
    colours = torch.rand(8, 3, 1, 1).expand(8, 3, 8, 8)  # image i is a flat colour, caption i is token i
    ids, lengths = torch.arange(8).view(8, 1) + 2, torch.ones(8, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = clip_loss(*model(colours, ids, lengths), model.logit_scale)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_zero_shot_weights_average_normalised_templates():
    table = {"a red square": [1.0, 0.0], "the red square": [0.0, 1.0],
             "a blue square": [0.0, 2.0], "the blue square": [0.0, 3.0]}
    encode = lambda texts: torch.tensor([table[t] for t in texts])
    w = zero_shot_weights(encode, ["red", "blue"], ["a {} square", "the {} square"])
    assert w.shape == (2, 2)
    assert torch.allclose(w[:, 0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    assert torch.allclose(w[:, 1], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="template"):
        zero_shot_weights(encode, ["red"], ["no slot"])
