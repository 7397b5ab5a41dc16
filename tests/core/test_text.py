"""Class lists, text embeddings and per-class logits."""
from __future__ import annotations

import dataclasses

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipseg.errors import InvalidInputError
from clipseg.models import wrap_model
from clipseg.text import ClassSpec, TextEncoder, class_logits, parse_classes
from tests.tiny_models import make_tiny_clip

# -- parse_classes ------------------------------------------------------------------------------

def test_commas_and_synonyms():
    classes = parse_classes("road; street, building, tree, water")
    assert [c.name for c in classes] == ["road", "building", "tree", "water"]
    assert classes[0].synonyms == ("road", "street")
    assert classes[1].synonyms == ("building",)


def test_lines_blank_lines_whitespace_and_trailing_comma():
    text = "\n  sky ;  cloud \n\n grass, soil,\n\r\n person; man; woman\n"
    classes = parse_classes(text)
    assert [c.synonyms for c in classes] == [
        ("sky", "cloud"), ("grass",), ("soil",), ("person", "man", "woman")]


def test_single_class_with_synonyms_needs_a_comma_or_a_list():
    with pytest.raises(InvalidInputError, match="separate classes with commas or new lines"):
        parse_classes("cat; dog; bird")
    assert parse_classes("person; man; woman,")[0].synonyms == ("person", "man", "woman")
    assert parse_classes(["person; man; woman"])[0].synonyms == ("person", "man", "woman")
    assert parse_classes("cat")[0].synonyms == ("cat",)


def test_list_input():
    classes = parse_classes(["road; street", " building ", ClassSpec("tree")])
    assert [c.synonyms for c in classes] == [("road", "street"), ("building",), ("tree",)]
    with pytest.raises(InvalidInputError, match="one class per item"):
        parse_classes(["road, street"])
    with pytest.raises(InvalidInputError, match="item 2"):
        parse_classes(["road", 3])


@pytest.mark.parametrize("text, match", [
    ("", "at least one"), ("  \n \n", "at least one"), ([], "at least one"),
    ("a,,b", "line 1, item 2 is empty"), ("a, ,b", "item 2 is empty"),
    (",a", "item 1 is empty"), ("a;;b, c", "synonym 2"), ("a;, c", "synonym 2"),
    ("cat, dog, Cat", "distinct"), ("road; street, Street", "both class 1 .'road'."),
    ("cat, cat", "both class 1"), (["tree", ClassSpec("tree")], "distinct"),
    ("dog; Dog, cat", "distinct synonyms"), (["a", ""], "empty"),
])
def test_parse_errors(text, match):
    with pytest.raises(InvalidInputError, match=match):
        parse_classes(text)


def test_non_text_input():
    with pytest.raises(InvalidInputError, match="expected a string or a list"):
        parse_classes(42)


def test_classspec_validation():
    assert ClassSpec("a", ("a", "b")).name == "a"
    with pytest.raises(InvalidInputError, match="first synonym"):
        ClassSpec("b", ("a", "b"))
    with pytest.raises(InvalidInputError, match="stripped"):
        ClassSpec(" a", (" a",))


# -- TextEncoder --------------------------------------------------------------------------------

class CountingModel(torch.nn.Module):
    """Wraps a CLIP and counts the prompts passed to encode_text."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        self.visual = clip.visual
        self.prompts = 0
        self.calls = 0

    def encode_text(self, tokens, normalize=False):
        self.calls += 1
        self.prompts += tokens.shape[0]
        return self.clip.encode_text(tokens, normalize=normalize)


@pytest.fixture(scope="module")
def own_clip(tiny_model_name):
    """A tiny CLIP of this module's own (wrap_model freezes it in place; the shared one stays)."""
    return make_tiny_clip(seed=3)


@pytest.fixture()
def loaded(own_clip, tiny_model_name):
    return wrap_model(own_clip, name=tiny_model_name)


def _reference(loaded, name, templates):
    """Written-out computation: every template, normalise, mean, renormalise."""
    with torch.no_grad():
        tokens = loaded.tokenizer([t(name) for t in templates])
        feats = loaded.model.encode_text(tokens)
    feats = feats / feats.norm(dim=-1, keepdim=True)
    mean = feats.mean(dim=0)
    return mean / mean.norm()


def test_embeddings_match_written_out_computation(loaded):
    encoder = TextEncoder(loaded)
    assert len(encoder.templates) == 80
    classes = parse_classes("road; street, building")
    emb, owner = encoder.encode(classes)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    assert owner.tolist() == [0, 0, 1] and owner.dtype == torch.long
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    templates = open_clip.OPENAI_IMAGENET_TEMPLATES
    for row, name in enumerate(["road", "street", "building"]):
        torch.testing.assert_close(emb[row], _reference(loaded, name, templates),
                                   atol=1e-5, rtol=1e-5)


def test_string_templates_and_batching(loaded):
    strings = ["a photo of a {}.", "a drawing of the {}", "{}"]
    encoder = TextEncoder(loaded, templates=strings, batch_size=2)
    emb, _ = encoder.encode(parse_classes("cat, dog"))
    as_callables = [s.format for s in strings]
    torch.testing.assert_close(emb[1], _reference(loaded, "dog", as_callables),
                               atol=1e-5, rtol=1e-5)
    # the prompts really differ: one template only gives another embedding
    single = TextEncoder(loaded, templates=["{}"]).encode(parse_classes("dog,"))[0][0]
    assert not torch.allclose(single, emb[1], atol=1e-3)


@pytest.mark.parametrize("bad", [[], ["no placeholder"], ["{0} {1}"], [3]])
def test_bad_templates(loaded, bad):
    with pytest.raises(InvalidInputError, match="templates"):
        TextEncoder(loaded, templates=bad)


def test_cache_only_encodes_new_names(own_clip, tiny_model_name):
    counting = CountingModel(own_clip)
    loaded = wrap_model(own_clip, name=tiny_model_name)
    loaded.model = counting
    encoder = TextEncoder(loaded, templates=["a {}", "the {}"])
    first, _ = encoder.encode(parse_classes("road; street, building"))
    assert counting.prompts == 6 and encoder.cache_size == 3
    again, _ = encoder.encode(parse_classes("building, road; street"))
    assert counting.prompts == 6  # all cached, no encode_text call
    torch.testing.assert_close(again[0], first[2])
    encoder.encode(parse_classes("building, tree"))
    assert counting.prompts == 8  # only "tree" was new
    encoder.clear_cache()
    encoder.encode(parse_classes("tree,"))
    assert counting.prompts == 10


def test_iter_encode_reports_each_new_synonym_and_keeps_what_finished(own_clip,
                                                                     tiny_model_name):
    counting = CountingModel(own_clip)
    loaded = wrap_model(own_clip, name=tiny_model_name)
    loaded.model = counting
    # batch_size=2: one synonym (2 prompts) per pass, so a step is a pass and cancel is exact
    encoder = TextEncoder(loaded, templates=["a {}", "the {}"], batch_size=2)
    encoder.encode(parse_classes("road,"))
    steps = encoder.iter_encode(parse_classes("road; street, building, tree"))
    assert next(steps) == (1, 3)  # "road" is cached: 3 new synonyms, one step each
    assert counting.prompts == 2 + 2
    assert next(steps) == (2, 3)
    steps.close()  # the caller cancels here
    assert encoder.cache_size == 3 and counting.prompts == 2 + 4
    emb, owner = encoder.encode(parse_classes("road; street, building, tree"))
    assert counting.prompts == 2 + 6  # only "tree" was left
    assert owner.tolist() == [0, 0, 1, 2]
    torch.testing.assert_close(emb[3], _reference(loaded, "tree", ["a {}".format,
                                                                  "the {}".format]),
                               atol=1e-5, rtol=1e-5)


def test_several_synonyms_share_a_pass_and_each_is_still_one_step(own_clip, tiny_model_name):
    counting = CountingModel(own_clip)
    loaded = wrap_model(own_clip, name=tiny_model_name)
    loaded.model = counting
    encoder = TextEncoder(loaded, templates=["a {}", "the {}"], batch_size=5)
    steps = list(encoder.iter_encode(parse_classes("road; street, building, tree, sky")))
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert counting.prompts == 10 and counting.calls == 3  # passes of 2 + 2 + 1 synonyms
    one_by_one = TextEncoder(wrap_model(own_clip, name=tiny_model_name),
                             templates=["a {}", "the {}"], batch_size=2)
    expected, _ = one_by_one.encode(parse_classes("road; street, building, tree, sky"))
    together, _ = encoder.encode(parse_classes("road; street, building, tree, sky"))
    torch.testing.assert_close(together, expected, atol=1e-6, rtol=0)


# -- class_logits -------------------------------------------------------------------------------

def test_class_logits_max_over_synonyms():
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(2, 3, 5, 8, generator=g), dim=-1)
    text = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    owner = torch.tensor([0, 1, 1, 2])
    out = class_logits(emb, text, owner, 3)
    assert out.shape == (2, 3, 5, 3) and out.dtype == torch.float32
    cos = torch.einsum("...d,sd->...s", emb, text)
    expected = torch.stack([cos[..., 0], torch.maximum(cos[..., 1], cos[..., 2]), cos[..., 3]],
                           dim=-1)
    torch.testing.assert_close(out, expected)
    scaled = class_logits(emb * 3.0, text, owner, 3, normalize=True)
    torch.testing.assert_close(scaled, expected)


def test_class_logits_errors():
    emb = torch.zeros(4, 8)
    text = torch.zeros(3, 8)
    with pytest.raises(InvalidInputError, match="every class"):
        class_logits(emb, text, torch.tensor([0, 0, 2]), 3)
    with pytest.raises(InvalidInputError, match="same D"):
        class_logits(torch.zeros(4, 7), text, torch.tensor([0, 1, 2]), 3)
    with pytest.raises(InvalidInputError, match="owner"):
        class_logits(emb, text, torch.tensor([0, 1]), 2)
    with pytest.raises(InvalidInputError, match="every class"):
        class_logits(emb, text, torch.tensor([0, 1, 5]), 3)
    with pytest.raises(InvalidInputError, match="every class"):
        class_logits(emb, text, torch.tensor([0, -1, 2]), 3)
    with pytest.raises(InvalidInputError, match="every class"):
        class_logits(emb, torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), 1)
    with pytest.raises(InvalidInputError, match="K >= 1"):
        class_logits(emb, text, torch.tensor([0, 1, 2]), 0)


def test_reduced_precision_runs_under_autocast(loaded):
    reduced = dataclasses.replace(loaded, compute_dtype=torch.bfloat16)
    full, _ = TextEncoder(loaded, templates=["a {}", "the {}"]).encode(parse_classes("cat, dog"))
    low, _ = TextEncoder(reduced, templates=["a {}", "the {}"]).encode(parse_classes("cat, dog"))
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.norm(dim=-1), torch.ones(2))
    assert not torch.equal(low, full)  # bf16 really ran ...
    torch.testing.assert_close(low, full, atol=5e-2, rtol=0)  # ... and agrees roughly
