"""Weight loading: local checkpoints, refusal of unsafe files, offline errors, wrap_model."""
from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clipseg.config import ModelConfig
from clipseg.errors import (
    InvalidConfigError,
    ModelLoadError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from clipseg.models import (
    LoadedModel,
    get_entry,
    load_checkpoint_safely,
    load_model,
    loading,
    resolve_device,
    resolve_precision,
    wrap_model,
)
from tests.tiny_models import make_tiny_clip

CODE_RAN: list[str] = []


def _mark(flag: str) -> None:
    CODE_RAN.append(flag)


class _Payload:
    """Unpickling this object would run code (``_mark`` appends to CODE_RAN)."""

    def __reduce__(self):
        return (_mark, ("unpickled",))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


@pytest.fixture(scope="module")
def own_clip(tiny_model_name):
    """A tiny CLIP of this module's own (wrap_model freezes it in place; the shared one stays)."""
    return make_tiny_clip(seed=2)


@pytest.fixture(scope="module")
def weights(tiny_model_name):
    # seed 1: different from any freshly built model, so equality proves the file was read
    return make_tiny_clip(seed=1)


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "torch_wrapped"])
def test_local_checkpoint_roundtrip(fmt, weights, tiny_model_name, tmp_path):
    state = weights.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "torch":
        path = tmp_path / "w.pt"
        torch.save(state, path)
    else:  # {"state_dict": ...} with a DataParallel prefix
        path = tmp_path / "w.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
                   path)
    loaded = load_model(ModelConfig(model=tiny_model_name, checkpoint=str(path), device="cpu"))
    assert isinstance(loaded, LoadedModel)
    assert _same_weights(loaded.model, weights)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.device == torch.device("cpu") and loaded.entry.arch == tiny_model_name
    assert loaded.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert loaded.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    tokens = loaded.tokenizer(["a photo of a cat"])
    assert tokens.dtype == torch.long and tokens.shape == (1, 77)


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "extra": _Payload()}, path)
    CODE_RAN.clear()
    with pytest.raises(UnsafeCheckpointError, match="refused") as info:
        load_checkpoint_safely(path)
    assert CODE_RAN == []
    assert "safetensors" in str(info.value)
    # the same file with plain pickle really would run the code: the flag works
    with open(path, "rb") as fh:
        torch.load(fh, weights_only=False)
    assert CODE_RAN == ["unpickled"]


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "jit.pt"
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        load_checkpoint_safely(path)


def test_bad_files(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_checkpoint_safely(tmp_path / "missing.pt")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError):
        load_checkpoint_safely(junk)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_checkpoint_safely(broken)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ModelLoadError, match="state dict"):
        load_checkpoint_safely(listed)


def test_checkpoint_for_another_model_names_keys(weights, tiny_model_name, tmp_path):
    state = dict(weights.state_dict())
    state.pop("visual.proj")
    state["surprise.weight"] = torch.zeros(1)
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ModelLoadError) as info:
        load_model(ModelConfig(model=tiny_model_name, checkpoint=str(path), device="cpu"))
    assert "missing: visual.proj" in str(info.value)
    assert "unexpected: surprise.weight" in str(info.value)


def test_offline_pretrained_without_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    config = ModelConfig(model="clip-b16", cache_dir=str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadError) as info:
        load_model(config)
    message = str(info.value)
    assert "ViT-B-16/openai" in message and "'openai'" in message
    assert "checkpoint" in message and str(tmp_path) in message
    assert "not in the cache" in message


def test_no_weights_source_is_an_error(tiny_model_name):
    with pytest.raises(ModelLoadError, match="neither"):
        load_model(ModelConfig(model=tiny_model_name, device="cpu"))


def test_wrap_model(own_clip, tiny_model_name):
    loaded = wrap_model(own_clip)
    assert loaded.name == "custom" and loaded.model is own_clip
    assert loaded.entry.middle_layer == 2 and loaded.entry.crop == 32
    assert loaded.device == torch.device("cpu")
    assert loaded.tokenizer(["x", "y"]).shape == (2, 77)
    named = wrap_model(own_clip, name=tiny_model_name, device="cpu")
    assert named.entry.arch == tiny_model_name
    with pytest.raises(UnsupportedModelError):
        wrap_model(torch.nn.Linear(2, 2))


def test_wrap_model_registry_entry_only_when_it_fits(own_clip, tiny_model_name):
    # the tiny model has 4 blocks: clip-b16's M = 6 cannot apply, so defaults are synthesised
    fallback = wrap_model(own_clip, name="clip-b16").entry
    assert fallback.middle_layer == 2 and fallback.arch == "ViT-B-16"
    assert "wants block 6" in fallback.middle_layer_source
    bigger = make_tiny_clip(name="clipseg-test-tiny-12", config={
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 12, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}})
    entry = wrap_model(bigger, name="clip-b16").entry
    assert entry.key == "ViT-B-16/openai" and entry.middle_layer == 6


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("mps", "cpu")
        with pytest.raises(InvalidConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(InvalidConfigError, match="expected"):
        resolve_device("tpu")


def test_cached_weights_are_found_without_network(tmp_path, monkeypatch):
    # a fake Hugging Face cache holding the file open_clip would fetch for ViT-B-16/openai
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    commit = "0" * 40
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"placeholder")
    path = loading._weights_path(get_entry("clip-b16"), str(tmp_path))
    assert path == str(snapshot / "open_clip_model.safetensors")


def test_tag_settings_follow_open_clip():
    quick, pre = loading._tag_settings(get_entry("clip-b16"))
    assert quick is True  # OpenAI weights were trained with QuickGELU
    assert pre["mean"] == open_clip.OPENAI_DATASET_MEAN
    assert loading._tag_settings(get_entry("openclip-b16"))[0] is False
    assert loading._tag_settings(get_entry("ViT-B-32")) == (False, {})


def test_pretrained_override_is_validated(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="ViT-B-16/laion400m_e32"):
        load_model(ModelConfig(model="clip-b16", pretrained="laion400m_e32",
                               cache_dir=str(tmp_path), device="cpu"))
    with pytest.raises(InvalidConfigError, match="pretrained tags"):
        load_model(ModelConfig(model="clip-b16", pretrained="nope", device="cpu"))


def test_resolve_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("auto", cuda) == torch.float16
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("fp32", cuda) == torch.float32
    with pytest.raises(InvalidConfigError, match="precision"):
        resolve_precision("fp8", cpu)


def test_bundled_model_loads_through_the_registry():
    from clipseg.models import bundled

    entry = bundled.BUNDLED_ENTRIES[0]
    assert Path(entry.checkpoint).is_file(), "the bundled weights ship with the package"
    loaded = load_model(ModelConfig(model=entry.key, device="cpu"))
    assert loaded.entry == entry and loaded.name == entry.key
    state = load_checkpoint_safely(entry.checkpoint)
    own = loaded.model.state_dict()
    assert all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in state.items())


@pytest.mark.weights
def test_real_openai_weights_from_cache():
    """Opt-in (-m weights): the cached OpenAI ViT-B/16 loads with its trained logit scale."""
    cfg = open_clip.get_pretrained_cfg("ViT-B-16", "openai")
    if loading._cached_hf_file(cfg, None) is None:
        pytest.skip("ViT-B-16/openai weights are not in the local cache")
    loaded = load_model(ModelConfig(model="clip-b16", device="cpu"))
    assert loaded.model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-3)
    assert loaded.model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == \
        "QuickGELU"


def test_weights_available_looks_only_at_local_files(tmp_path):
    from clipseg.models import weights_available

    config = ModelConfig(model="ViT-B-16/openai", cache_dir=str(tmp_path))
    assert not weights_available(config)  # an empty cache, and no network is touched
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"")
    assert weights_available(config)  # the Hugging Face cache layout open_clip reads
    assert weights_available(ModelConfig(model="clipseg-demo-tiny"))  # bundled weights
    assert not weights_available(ModelConfig(model="ViT-B-16/openai",
                                             checkpoint=str(tmp_path / "none.safetensors")))
    assert not weights_available(ModelConfig(model="no-such-model"))


@pytest.mark.parametrize("poison", ["all_nan", "one_inf"])
def test_non_finite_weights_are_refused_naming_the_tensor(poison, weights, tiny_model_name,
                                                          tmp_path):
    state = {k: v.clone().contiguous() for k, v in weights.state_dict().items()}
    names = [k for k, v in state.items() if v.is_floating_point()]
    if poison == "all_nan":  # every weight NaN: once accepted, every pixel got label 0
        for k in names:
            state[k].fill_(float("nan"))
    else:  # one value of one late tensor: still refused, and that tensor is named
        first = "visual.transformer.resblocks.3.mlp.c_fc.weight"
        state[first].view(-1)[5] = float("inf")
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError) as err:
        load_model(ModelConfig(model=tiny_model_name, checkpoint=str(path), device="cpu"))
    text = str(err.value)
    assert str(path) in text and "non-finite" in text
    if poison == "one_inf":
        assert repr(first) in text and " 1 of " in text and "1 tensor:" in text
    else:
        assert any(f"the first is {k!r}" in text for k in names)
        assert f"{len(names) - 1} other tensors" in text
    # the finite original still loads: the check refuses only bad weights
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in weights.state_dict().items()}, str(good))
    load_model(ModelConfig(model=tiny_model_name, checkpoint=str(good), device="cpu"))
