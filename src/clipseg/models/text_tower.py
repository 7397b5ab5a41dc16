"""open_clip text towers: an exact truncated forward, and a digest of the text weights.

open_clip's ``encode_text`` runs every prompt through the full context (77 tokens for CLIP),
although class prompts are about 5 to 20 tokens long. With a causal attention mask a token only
sees the tokens before it, so the output at position ``i`` does not depend on anything after
``i``; the pooled output (the end-of-text token for ``argmax``/``eos`` pooling, the first token
for ``first``) therefore comes out the same when only the first ``T`` tokens are run, ``T`` being
one more than the largest pooled position of the batch. :func:`truncated_encode` does that with
the tower's own modules (``token_embedding``, ``positional_embedding[:T]``, ``transformer`` with
the mask cut to ``T x T``, ``ln_final``, open_clip's ``text_global_pool``, ``text_projection``),
read-only, nothing patched.

:func:`text_tower` says whether a model has a tower of exactly that shape; anything else (a
Hugging Face text tower such as BiomedCLIP's, a custom or missing attention mask, CoCa's
appended class token, ``last``/``none`` pooling, blocks of a kind not listed here, subclasses
of these classes) is left to ``model.encode_text``, and the reason is returned.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import open_clip
import torch
from open_clip.transformer import (
    CustomResidualAttentionBlock,
    ResidualAttentionBlock,
    TextTransformer,
    Transformer,
    text_global_pool,
)
from torch import nn

__all__ = ["TextTower", "text_tower", "pooled_positions", "truncated_encode",
           "text_weights_digest"]

#: Block types whose only interaction between tokens is attention under ``attn_mask``.
_BLOCKS = (ResidualAttentionBlock, CustomResidualAttentionBlock)
_POOLS = ("argmax", "eos", "first")


@dataclass(frozen=True)
class TextTower:
    """The modules of an open_clip causal text tower (references into the model, not copies).

    Attributes
    ----------
    token_embedding : nn.Embedding
    positional_embedding : torch.Tensor
        ``(C, W)``; C = context length.
    transformer : open_clip.transformer.Transformer
    ln_final : nn.Module
    text_projection : nn.Linear, torch.Tensor ``(W, D)`` or None
    attn_mask : torch.Tensor
        ``(C, C)`` additive causal mask (0 on and below the diagonal, ``-inf`` above).
    pool_type : {"argmax", "eos", "first"}
    eos_id : int or None
    """

    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: nn.Module | torch.Tensor | None
    attn_mask: torch.Tensor
    pool_type: str
    eos_id: int | None


def _is_causal(mask: torch.Tensor | None, context: int) -> bool:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or tuple(mask.shape) != (
            context, context) or not mask.dtype.is_floating_point:
        return False
    expected = torch.full((context, context), float("-inf"), device=mask.device,
                          dtype=mask.dtype).triu_(1)
    return bool(torch.equal(mask, expected))


def text_tower(model: nn.Module) -> tuple[TextTower | None, str]:
    """The model's causal text tower, or None and the reason it must use ``encode_text``.

    Parameters
    ----------
    model : nn.Module
        An open_clip ``CLIP`` or ``CustomTextCLIP`` (anything else gets None).

    Returns
    -------
    tower : TextTower or None
    reason : str
        Empty when ``tower`` is given; else why the truncated forward would not be exact.
    """
    if type(model) is open_clip.CLIP:
        owner, pool, eos = model, getattr(model, "text_pool_type", None), \
            getattr(model, "text_eos_id", None)
    elif type(model) is open_clip.CustomTextCLIP:
        text = getattr(model, "text", None)
        if type(text) is not TextTransformer:
            return None, f"its text tower is a {type(text).__name__}, not open_clip's " \
                         "TextTransformer"
        if text.cls_emb is not None:
            return None, "its text tower appends a class token (CoCa), which sees every token"
        if text.use_pad_mask:
            return None, "its text tower masks padding tokens"
        owner, pool, eos = text, text.pool_type, text.eos_id
    else:
        return None, f"it is a {type(model).__name__}, not an open_clip CLIP or CustomTextCLIP"
    transformer = getattr(owner, "transformer", None)
    if type(transformer) is not Transformer or not all(
            type(block) in _BLOCKS for block in transformer.resblocks):
        return None, "its text transformer or blocks are not open_clip's own"
    if pool not in _POOLS:
        return None, f"it pools text with {pool!r} (exact truncation needs one of {_POOLS})"
    positional = owner.positional_embedding
    if not _is_causal(getattr(owner, "attn_mask", None), positional.shape[0]):
        return None, "its text attention mask is not the standard causal mask"
    return TextTower(token_embedding=owner.token_embedding, positional_embedding=positional,
                     transformer=transformer, ln_final=owner.ln_final,
                     text_projection=owner.text_projection, attn_mask=owner.attn_mask,
                     pool_type=pool, eos_id=eos), ""


def pooled_positions(tower: TextTower, tokens: torch.Tensor) -> torch.Tensor:
    """``(N,)`` long: the position each row's embedding is pooled from (as open_clip pools)."""
    if tower.pool_type == "argmax":
        return tokens.argmax(dim=-1)
    if tower.pool_type == "eos":
        return (tokens == tower.eos_id).int().argmax(dim=-1)
    return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)


def truncated_encode(tower: TextTower, tokens: torch.Tensor) -> torch.Tensor:
    """``encode_text(tokens)`` computed on the first ``T`` tokens only.

    Parameters
    ----------
    tower : TextTower
    tokens : torch.LongTensor
        ``(N, C)`` token ids as the tokenizer returns them, on the tower's device.

    Returns
    -------
    torch.Tensor
        ``(N, D)`` text features (not normalised), equal to ``model.encode_text(tokens)`` up
        to float rounding; T = 1 + the largest pooled position of the batch.
    """
    if tokens.ndim != 2 or tokens.shape[1] != tower.positional_embedding.shape[0]:
        raise ValueError(f"truncated_encode: expected tokens (N, "
                         f"{tower.positional_embedding.shape[0]}), got {tuple(tokens.shape)}")
    length = int(pooled_positions(tower, tokens).max()) + 1
    short = tokens[:, :length]
    cast = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(short).to(cast)
    x = x + tower.positional_embedding[:length].to(cast)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    x = text_global_pool(x, short, tower.pool_type, eos_token_id=tower.eos_id)
    projection = tower.text_projection
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x if projection is None else x @ projection


_DIGESTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _text_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer that can change a text embedding, by name."""
    if isinstance(getattr(model, "text", None), nn.Module):  # CustomTextCLIP (hf towers too)
        module, prefix = model.text, "text."
    else:
        module, prefix = model, ""
    skip = ("visual.", "logit_scale", "logit_bias")
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [(prefix + name, tensor) for name, tensor in named
            if not (prefix + name).startswith(skip)]


def text_weights_digest(model: nn.Module) -> str:
    """A digest of the text tower's weights (names, shapes, dtypes, values), once per model.

    Two models with the same text weights get the same digest whatever they are called; the
    digest is remembered for the model object (weights of a loaded model are frozen), so only
    the first call reads the weights (about 0.3 s for a ViT-B-16 text tower on a CPU).

    Returns
    -------
    str
        32 hex digits.
    """
    known = _DIGESTS.get(model)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__name__.encode())
    for name, tensor in sorted(_text_tensors(model), key=lambda item: item[0]):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    _DIGESTS[model] = value = digest.hexdigest()
    return value
