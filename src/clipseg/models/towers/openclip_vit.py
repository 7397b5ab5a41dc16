"""The tower view over open_clip's own ``VisionTransformer``.

Readable: ``ResidualAttentionBlock`` blocks holding a packed ``torch.nn.MultiheadAttention``, a
batch-first transformer, square patches, an output projection, no attentional pooling.
Anything else (``CustomResidualAttentionBlock``, attention pooling, ...) is refused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import PatchDropout, ResidualAttentionBlock, VisionTransformer
from torch import nn

from .base import VisionTower, interpolate_pos_embed, unsupported

__all__ = ["OpenClipViTTower"]


class OpenClipViTTower(VisionTower):
    """Read-only view over an open_clip ``VisionTransformer`` (``model.visual``).

    Pieces: ``conv1`` + ``class_embedding`` + ``positional_embedding`` + ``ln_pre`` (embed);
    per block ``ln_1``, ``attn.in_proj_weight/bias``, ``attn.out_proj``, ``ls_1``, ``ln_2``,
    ``mlp``, ``ls_2``; head ``ln_post`` then ``@ proj``.
    """

    kind = "open_clip ViT"

    def __init__(self, visual: nn.Module) -> None:
        if not isinstance(visual, VisionTransformer):
            raise unsupported("an open_clip VisionTransformer or a timm ViT in TimmModel",
                              type(visual).__name__)
        if getattr(visual, "attn_pool", None) is not None:
            raise unsupported("no attentional pooling", "a tower with attn_pool")
        if getattr(visual, "proj", None) is None:
            raise unsupported("with an output projection", "a tower whose proj is None")
        if not getattr(visual.transformer, "batch_first", False):
            raise unsupported("batch-first transformer", "batch_first=False")
        ph, pw = visual.patch_size
        if ph != pw:
            raise unsupported("square patches", f"patch size {ph}x{pw}")
        blocks = list(visual.transformer.resblocks)
        if not blocks:
            raise unsupported("at least one block", "an empty transformer")
        for i, block in enumerate(blocks, start=1):
            self._check_block(i, block)
        self.visual = visual
        self.blocks = blocks
        self.num_layers = len(blocks)
        self.width = int(visual.conv1.out_channels)
        self.num_heads = int(blocks[0].attn.num_heads)
        self.head_dim = self.width // self.num_heads
        self.patch_size = int(ph)
        self.native_grid = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        self.output_dim = int(visual.proj.shape[1])

    @staticmethod
    def _check_block(index: int, block: nn.Module) -> None:
        if type(block) is not ResidualAttentionBlock:
            raise unsupported(f"block {index} is a ResidualAttentionBlock",
                              type(block).__name__)
        if hasattr(block, "ln_1_kv"):
            raise unsupported(f"block {index} without cross-attention", "a cross-attention block")
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) \
                or getattr(attn, "in_proj_weight", None) is None:
            raise unsupported(f"block {index} with a packed nn.MultiheadAttention",
                              type(attn).__name__)
        if attn.bias_k is not None or attn.bias_v is not None or attn.add_zero_attn:
            raise unsupported(f"block {index} without bias_k/bias_v/add_zero_attn",
                              "extra key/value biases")
        if not attn.batch_first:
            raise unsupported(f"block {index} batch-first attention", "batch_first=False")

    @property
    def device(self) -> torch.device:
        return self.visual.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def embed(self, pixels: torch.Tensor, pos_interp: str = "bilinear") -> torch.Tensor:
        visual = self.visual
        if visual.training:
            if isinstance(visual.patch_dropout, PatchDropout) and visual.patch_dropout.prob > 0:
                raise unsupported("patch dropout inactive (call model.eval())",
                                  "a tower in train mode with patch dropout")
            if any(block.attn.dropout > 0 for block in self.blocks):
                raise unsupported("attention dropout inactive (call model.eval())",
                                  "a tower in train mode with attention dropout")
        h, w = self.grid_for(pixels.shape[-2], pixels.shape[-1])
        x = visual.conv1(pixels.to(self.dtype))  # (B, width, h, w)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls_tok = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls_tok, x], dim=1)
        pos = interpolate_pos_embed(visual.positional_embedding, self.native_grid, (h, w),
                                    mode=pos_interp)
        x = x + pos.to(x.dtype)
        return visual.ln_pre(x)

    def qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        block = self._block(index)
        attn = block.attn
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.chunk(3, dim=-1)
        return q, k, v

    def norm_1(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._block(index).ln_1(x)

    def _in_proj(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn = self._block(index).attn
        return attn.in_proj_weight, attn.in_proj_bias

    def _out_linear(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self._block(index).attn.out_proj
        return out.weight, out.bias

    def out_proj(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        return self._block(index).attn.out_proj(ctx)

    def attn_residual_branch(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        block = self._block(index)
        return block.ls_1(block.attn.out_proj(ctx))

    def ffn_residual(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._block(index)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """``ln_post`` then ``@ proj``: ``(B, N, width) -> (B, N, output_dim)``."""
        z = self.visual.ln_post(z)
        return z @ self.visual.proj.to(z.dtype)
