"""The truncated text forward is exact where it runs, and open_clip's encode_text runs elsewhere."""
from __future__ import annotations

import copy
import dataclasses

import open_clip
import pytest
import torch

from clipseg.models import wrap_model
from clipseg.models.text_tower import text_tower, text_weights_digest, truncated_encode
from clipseg.text import TextEncoder
from tests.tiny_models import TINY_CONFIG, make_tiny_clip

PROMPTS = ["a", "a photo of a cat.", "a bad photo of the large road; street, and a tree",
           " ".join(["word"] * 90),  # longer than the context: the tokenizer cuts it at 77
           "itap of my {}", "x"]


def _variant(name: str, *, custom_text: bool = False, **text_cfg):
    config = copy.deepcopy(TINY_CONFIG)
    config["text_cfg"].update(text_cfg)
    if custom_text:
        config["custom_text"] = True
    return make_tiny_clip(name=name, seed=11, config=config)


def _tokens():
    return open_clip.get_tokenizer("ViT-B-16")(PROMPTS)


def _assert_same_as_encode_text(model, tower):
    tokens = _tokens()
    with torch.no_grad():
        full = model.encode_text(tokens)
        short = truncated_encode(tower, tokens)
        for i in range(tokens.shape[0]):  # each row on its own: a shorter T than the batch's
            torch.testing.assert_close(truncated_encode(tower, tokens[i:i + 1])[0], full[i],
                                       atol=1e-5, rtol=0)
    assert short.shape == full.shape
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, kwargs", [
    ("clipseg-tt-argmax", {}),
    ("clipseg-tt-eos", {"pool_type": "eos", "eos_id": 49407}),
    ("clipseg-tt-first", {"pool_type": "first"}),
    ("clipseg-tt-custom", {"custom_text": True}),
    ("clipseg-tt-custom-eos", {"custom_text": True, "pool_type": "eos", "eos_id": 49407}),
    ("clipseg-tt-custom-blocks", {"custom_text": True, "block_type": "custom"}),
])
def test_truncated_forward_equals_encode_text(name, kwargs):
    model = _variant(name, **kwargs)
    tower, reason = text_tower(model)
    assert tower is not None, reason
    _assert_same_as_encode_text(model, tower)


def test_truncation_really_shortens_the_pass():
    model = _variant("clipseg-tt-argmax")
    tower, _ = text_tower(model)
    seen = []
    hook = model.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    try:
        with torch.no_grad():
            truncated_encode(tower, _tokens()[[1, 5]])
    finally:
        hook.remove()
    assert seen == [torch.Size([2, 8, 32])]  # "a photo of a cat." = SOT + 6 + EOT, not 77


def _masked(mask_of):
    model = make_tiny_clip(seed=11)
    model.attn_mask = mask_of(model.attn_mask.clone())
    return model


@pytest.mark.parametrize("name, build, why", [
    ("no causal mask", lambda: _variant("clipseg-tt-bidir", no_causal_mask=True), "mask"),
    ("non-causal custom mask", lambda: _masked(torch.zeros_like), "mask"),
    ("banded causal mask",
     lambda: _masked(lambda m: m.masked_fill(torch.ones_like(m, dtype=torch.bool).tril(-4),
                                             float("-inf"))), "mask"),
    ("last-token pooling", lambda: _variant("clipseg-tt-last", pool_type="last"), "pools"),
    ("CoCa class token", lambda: _variant("clipseg-tt-cls", custom_text=True, embed_cls=True),
     "class token"),
])
def test_towers_that_do_not_fit_fall_back_to_encode_text(name, build, why):
    model = build()
    tower, reason = text_tower(model)
    assert tower is None and why in reason
    loaded = wrap_model(model, name="custom", tokenizer=open_clip.get_tokenizer("ViT-B-16"))
    encoder = TextEncoder(loaded, templates=["a photo of a {}.", "{}"])
    assert encoder.text_path == "encode_text" and why in encoder.fallback_reason
    emb = encoder.embed(["cat", "road"])
    with torch.no_grad():
        feats = model.encode_text(loaded.tokenizer(["a photo of a cat.", "cat"]))
    expected = torch.nn.functional.normalize(
        torch.nn.functional.normalize(feats, dim=-1).mean(0), dim=0)
    torch.testing.assert_close(emb[0], expected, atol=1e-6, rtol=0)


def test_truncating_under_a_non_causal_mask_would_change_the_result():
    """Why the mask is checked: with a mask that lets tokens see the padding, cutting it off
    changes the embedding."""
    model = _masked(torch.zeros_like)
    tower, _ = text_tower(make_tiny_clip(seed=11))
    unchecked = dataclasses.replace(tower, attn_mask=model.attn_mask)
    tokens = _tokens()[[1, 5]]  # short prompts: T = 8, not 77
    with torch.no_grad():
        assert not torch.allclose(truncated_encode(unchecked, tokens), model.encode_text(tokens),
                                  atol=1e-3)


class HFLikeTower(torch.nn.Module):
    """A text tower of another kind (as BiomedCLIP's Hugging Face BERT): its own forward."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(49408, 32)
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, tokens):
        mask = (tokens != 0).float().unsqueeze(-1)
        return self.proj((self.embed(tokens) * mask).sum(1) / mask.sum(1))


def test_a_text_tower_of_another_kind_uses_encode_text():
    model = _variant("clipseg-tt-custom", custom_text=True)
    model.text = HFLikeTower()
    tower, reason = text_tower(model)
    assert tower is None and "HFLikeTower" in reason
    loaded = wrap_model(model, name="custom", tokenizer=open_clip.get_tokenizer("ViT-B-16"))
    encoder = TextEncoder(loaded, templates=["{}"])
    assert encoder.text_path == "encode_text"
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(loaded.tokenizer(["dog"])),
                                                 dim=-1)[0]
    torch.testing.assert_close(encoder.embed(["dog"])[0], expected, atol=1e-6, rtol=0)


def test_hf_text_tower_uses_encode_text(tmp_path):
    transformers = pytest.importorskip("transformers")  # the [hf] extra; absent in the base env
    folder = tmp_path / "tiny-bert"
    transformers.BertConfig(vocab_size=49408, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=77).save_pretrained(folder)
    config = copy.deepcopy(TINY_CONFIG)
    config["text_cfg"] = {"hf_model_name": str(folder), "hf_model_pretrained": False,
                          "hf_pooler_type": "cls_pooler", "hf_proj_type": "linear",
                          "context_length": 77}
    model = make_tiny_clip(name="clipseg-tt-hf", seed=1, config=config)
    assert type(model).__name__ == "CustomTextCLIP"
    assert text_tower(model)[0] is None
    loaded = wrap_model(model, name="custom", tokenizer=open_clip.get_tokenizer("ViT-B-16"))
    encoder = TextEncoder(loaded, templates=["{}"])
    assert encoder.text_path == "encode_text"
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(loaded.tokenizer(["dog"])),
                                                 dim=-1)[0]
    torch.testing.assert_close(encoder.embed(["dog"])[0], expected, atol=1e-6, rtol=0)


def test_encoder_truncated_path_matches_encode_text_path(tiny_clip, tiny_model_name):
    loaded = wrap_model(make_tiny_clip(seed=5), name=tiny_model_name)
    fast = TextEncoder(loaded, batch_size=7)  # 80 templates, passes of 7 sorted by length
    slow = TextEncoder(loaded, batch_size=7, truncate=False)
    assert fast.text_path == "truncated" and slow.text_path == "encode_text"
    names = ["road", "a very long class name with many words in it", "x"]
    torch.testing.assert_close(fast.embed(names), slow.embed(names), atol=1e-5, rtol=0)


def test_weights_digest_follows_text_weights_not_names_or_image_tower():
    a, b = make_tiny_clip(seed=5), make_tiny_clip(seed=5)
    assert text_weights_digest(a) == text_weights_digest(b)
    assert text_weights_digest(a) != text_weights_digest(make_tiny_clip(seed=6))
    c = make_tiny_clip(seed=5)
    with torch.no_grad():
        c.visual.conv1.weight.add_(1.0)   # the image tower does not change a text embedding
        c.logit_scale.add_(1.0)
    assert text_weights_digest(c) == text_weights_digest(a)
    d = make_tiny_clip(seed=5)
    with torch.no_grad():
        d.ln_final.bias.add_(1e-3)
    assert text_weights_digest(d) != text_weights_digest(a)
