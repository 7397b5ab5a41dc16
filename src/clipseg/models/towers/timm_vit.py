"""The tower view over a timm ``VisionTransformer`` inside open_clip's ``TimmModel``.

This is how open_clip builds towers named by ``vision_cfg.timm_model_name`` (BiomedCLIP:
``vit_base_patch16_224`` with ``timm_pool=""`` and ``timm_proj="linear"``). The pieces used:

- embed: ``patch_embed.proj`` (the patch convolution) and ``patch_embed.norm``, ``cls_token``,
  ``pos_embed`` (resampled by :func:`~.base.interpolate_pos_embed` for other grids, as the
  open_clip tower does), ``pos_drop``, ``patch_drop``, ``norm_pre``;
- per block: ``norm1``, the fused ``attn.qkv``, ``attn.proj``, ``ls1``, ``norm2``, ``mlp``,
  ``ls2`` (plus the identity ``drop_path1/2`` in eval mode);
- head, per token: the trunk's final ``norm``, ``fc_norm``, ``head_drop`` and ``head``, then
  open_clip's ``TimmModel.head`` (dropout + linear projection, or an MLP).

Calling ``patch_embed.proj`` rather than ``patch_embed`` itself is what lets other window sizes
through: timm's ``PatchEmbed`` asserts the training size unless the model was built with
``dynamic_img_size``; the convolution is the same either way. Refused: register or
distillation tokens, no class token, ``no_embed_class``, attention pooling (``map``/``prr``,
open_clip's ``abs_attn``/``rot_attn``), blocks other than timm's ``Block`` with its plain
``Attention`` (no q/k norm, no attention output norm, no gate).
"""
from __future__ import annotations

import torch
from open_clip.timm_model import TimmModel
from timm.layers import Attention, DropPath, Mlp, PatchDropout, PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from .base import VisionTower, interpolate_pos_embed, unsupported

__all__ = ["TimmViTTower"]

_PER_TOKEN_HEAD = (nn.Dropout, nn.Linear, nn.Identity, Mlp)


class TimmViTTower(VisionTower):
    """Read-only view over ``TimmModel`` whose ``trunk`` is a timm ``VisionTransformer``."""

    kind = "timm ViT"

    def __init__(self, visual: nn.Module) -> None:
        if not isinstance(visual, TimmModel):
            raise unsupported("open_clip's TimmModel", type(visual).__name__)
        trunk = visual.trunk
        if type(trunk) is not VisionTransformer:
            raise unsupported("a TimmModel whose trunk is timm's VisionTransformer",
                              f"a TimmModel around {type(trunk).__name__}")
        self._check_trunk(trunk)
        self._check_heads(visual, trunk)
        blocks = list(trunk.blocks)
        for i, block in enumerate(blocks, start=1):
            self._check_block(i, block, int(trunk.embed_dim))
        self.visual = visual
        self.trunk = trunk
        self.blocks = blocks
        self.num_layers = len(blocks)
        self.width = int(trunk.embed_dim)
        self.num_heads = int(blocks[0].attn.num_heads)
        self.head_dim = int(blocks[0].attn.head_dim)
        self.patch_size = int(trunk.patch_embed.patch_size[0])
        grid = trunk.patch_embed.grid_size
        self.native_grid = (int(grid[0]), int(grid[1]))
        self.output_dim = self._output_dim(visual, trunk)

    # -- what is readable ---------------------------------------------------------------------
    @staticmethod
    def _check_trunk(trunk: VisionTransformer) -> None:
        if trunk.cls_token is None or trunk.num_prefix_tokens != 1:
            raise unsupported("one class token and no register/distillation tokens",
                              f"class token {trunk.cls_token is not None}, "
                              f"{trunk.num_prefix_tokens} prefix tokens")
        if trunk.no_embed_class or trunk.pos_embed is None:
            raise unsupported("a learned positional embedding that includes the class token",
                              "no_embed_class=True" if trunk.no_embed_class else "no pos_embed")
        if trunk.attn_pool is not None:
            raise unsupported("no attention pooling (timm global_pool 'map'/'prr')",
                              f"global_pool {trunk.global_pool!r}")
        if trunk.global_pool not in ("token", "avg"):
            raise unsupported("token or avg pooling", f"global_pool {trunk.global_pool!r}")
        embed = trunk.patch_embed
        if type(embed) is not PatchEmbed or not isinstance(embed.proj, nn.Conv2d):
            raise unsupported("timm's PatchEmbed with a patch convolution",
                              type(embed).__name__)
        ph, pw = embed.patch_size
        if ph != pw or tuple(embed.proj.kernel_size) != (ph, pw) \
                or tuple(embed.proj.stride) != (ph, pw):
            raise unsupported("square, non-overlapping patches",
                              f"patch {ph}x{pw}, kernel {tuple(embed.proj.kernel_size)}, "
                              f"stride {tuple(embed.proj.stride)}")
        if embed.dynamic_img_pad:
            raise unsupported("no dynamic image padding", "dynamic_img_pad=True")
        if not trunk.blocks:
            raise unsupported("at least one block", "an empty transformer")

    @staticmethod
    def _check_heads(visual: TimmModel, trunk: VisionTransformer) -> None:
        if not isinstance(trunk.head, (nn.Identity, nn.Linear)):
            raise unsupported("a linear or no classifier in the trunk", type(trunk.head).__name__)
        for name, module in visual.head.named_children():
            if not isinstance(module, _PER_TOKEN_HEAD):
                raise unsupported("a per-token head (dropout, linear or MLP projection; no "
                                  "attention pooling)", f"TimmModel.head.{name} = "
                                  f"{type(module).__name__}")

    @staticmethod
    def _check_block(index: int, block: nn.Module, width: int) -> None:
        if type(block) is not Block:
            raise unsupported(f"block {index} is timm's Block", type(block).__name__)
        attn = block.attn
        if type(attn) is not Attention:
            raise unsupported(f"block {index} with timm's Attention", type(attn).__name__)
        if not isinstance(attn.q_norm, nn.Identity) or not isinstance(attn.k_norm, nn.Identity):
            raise unsupported(f"block {index} without q/k normalisation", "qk_norm=True")
        if not isinstance(attn.norm, nn.Identity):
            raise unsupported(f"block {index} without attention output norm", "scale_norm=True")
        if getattr(attn, "gate", None) is not None:
            raise unsupported(f"block {index} without an attention gate", "gated attention")
        if attn.attn_dim != width or attn.qkv.out_features != 3 * width:
            raise unsupported(f"block {index} with attention width = residual width ({width})",
                              f"attention width {attn.attn_dim}")

    @staticmethod
    def _output_dim(visual: TimmModel, trunk: VisionTransformer) -> int:
        dim = int(trunk.embed_dim)
        for module in [trunk.head, *visual.head.children()]:
            if isinstance(module, nn.Linear):
                dim = int(module.out_features)
            elif isinstance(module, Mlp):
                dim = int(module.fc2.out_features)
        return dim

    def _check_eval(self) -> None:
        if not self.visual.training:
            return
        for name, module in self.visual.named_modules():
            active = ((isinstance(module, nn.Dropout) and module.p > 0)
                      or (isinstance(module, DropPath) and module.drop_prob > 0)
                      or (isinstance(module, PatchDropout) and module.prob > 0))
            if active:
                raise unsupported("dropout, drop-path and patch dropout inactive (call "
                                  "model.eval())", f"a tower in train mode with active {name}")

    # -- geometry ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.trunk.patch_embed.proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.trunk.patch_embed.proj.weight.dtype

    # -- the pieces of the forward pass ---------------------------------------------------------
    def embed(self, pixels: torch.Tensor, pos_interp: str = "bilinear") -> torch.Tensor:
        self._check_eval()
        trunk = self.trunk
        h, w = self.grid_for(pixels.shape[-2], pixels.shape[-1])
        x = trunk.patch_embed.proj(pixels.to(self.dtype))  # (B, width, h, w)
        x = trunk.patch_embed.norm(x.flatten(2).transpose(1, 2))
        cls_tok = trunk.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls_tok, x], dim=1)
        pos = interpolate_pos_embed(trunk.pos_embed[0], self.native_grid, (h, w),
                                    mode=pos_interp)
        x = trunk.pos_drop(x + pos.to(x.dtype))
        return trunk.norm_pre(trunk.patch_drop(x))

    def qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        block = self._block(index)
        # timm lays the fused output out as (3, heads, head_dim): chunks are q, k, v with
        # heads concatenated, the same layout as open_clip's in_proj.
        q, k, v = block.attn.qkv(block.norm1(x)).chunk(3, dim=-1)
        return q, k, v

    def norm_1(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self._block(index).norm1(x)

    def _in_proj(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        qkv = self._block(index).attn.qkv
        return qkv.weight, qkv.bias

    def _out_linear(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        # proj_drop is a no-op in eval mode, which the tower checks before reading
        proj = self._block(index).attn.proj
        return proj.weight, proj.bias

    def out_proj(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        attn = self._block(index).attn
        return attn.proj_drop(attn.proj(ctx))

    def attn_residual_branch(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        block = self._block(index)
        return block.drop_path1(block.ls1(self.out_proj(index, ctx)))

    def ffn_residual(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self._block(index)
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """``norm``, ``fc_norm``, ``head_drop``, ``head`` of the trunk, then ``TimmModel.head``.

        The trunk pools between ``norm`` and ``fc_norm``; per token there is nothing to pool,
        so each token goes through what the pooled token would: ``(B, N, width) ->
        (B, N, output_dim)``.
        """
        trunk = self.trunk
        z = trunk.head(trunk.head_drop(trunk.fc_norm(trunk.norm(z))))
        return self.visual.head(z)
