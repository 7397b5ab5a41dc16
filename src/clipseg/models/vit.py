"""Read-only view over an open_clip ``VisionTransformer``.

:class:`VisionTower` exposes the pieces the dense readouts need (patch embedding with
interpolated positions, per-block q/k/v, the block's own FFN branch, the output head) by
*calling* the model's own submodules. Nothing is replaced, patched or hooked, so the model object
stays exactly what open_clip built.

Only the standard open_clip ViT is readable: ``ResidualAttentionBlock`` blocks holding a
``torch.nn.MultiheadAttention`` and a batch-first transformer. Anything else (ModifiedResNet,
timm towers, ``CustomResidualAttentionBlock``, attentional pooling, ...) raises
:class:`~clipseg.errors.UnsupportedModelError`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import PatchDropout, ResidualAttentionBlock, VisionTransformer
from torch import nn

from ..errors import InvalidInputError, UnsupportedModelError, describe

__all__ = ["VisionTower", "interpolate_pos_embed"]

_PARTS = ("q", "k", "v")


def interpolate_pos_embed(pos: torch.Tensor, grid_from: tuple[int, int],
                          grid_to: tuple[int, int]) -> torch.Tensor:
    """Resample a ViT positional embedding to another patch grid.

    Parameters
    ----------
    pos : torch.Tensor
        ``(1 + H0 * W0, C)`` positional embedding; row 0 belongs to the class token, the rest
        are the patches in row-major order.
    grid_from : tuple of int
        ``(H0, W0)``, the grid ``pos`` was trained for.
    grid_to : tuple of int
        ``(h, w)``, the grid wanted.

    Returns
    -------
    torch.Tensor
        ``(1 + h * w, C)`` in the dtype of ``pos``. The class row is kept; the patch rows are
        resampled bilinearly (``align_corners=False``, computed in float32). At
        ``grid_to == grid_from`` the input tensor itself is returned (exact identity).
    """
    h0, w0 = (int(v) for v in grid_from)
    h, w = (int(v) for v in grid_to)
    if pos.ndim != 2 or pos.shape[0] != 1 + h0 * w0:
        raise InvalidInputError(
            f"positional embedding: expected shape (1 + {h0}*{w0}, C), got {describe(pos)}")
    if h < 1 or w < 1:
        raise InvalidInputError(f"target grid: expected at least 1x1 patches, got {h}x{w}")
    if (h, w) == (h0, w0):
        return pos
    cls_row, patches = pos[:1], pos[1:]
    grid = patches.float().reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(h * w, -1).to(pos.dtype)
    return torch.cat([cls_row, patches], dim=0)


def _unsupported(what: str, got: Any) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"expected an open_clip VisionTransformer with standard ResidualAttentionBlocks "
        f"({what}), got {got}")


class VisionTower:
    """Read-only adapter over ``model.visual`` of an open_clip ViT.

    Block indices are counted from 1 (block ``i`` maps ``x_{i-1}`` to ``x_i``), as in METHOD.md.

    Attributes
    ----------
    visual : open_clip.transformer.VisionTransformer
        The wrapped tower (not modified).
    num_layers, width, num_heads, head_dim, patch_size, output_dim : int
        Depth L, residual width, attention heads, per-head width, square patch side in pixels,
        joint embedding dim D.
    native_grid : tuple of int
        ``(H0, W0)`` patch grid of the training resolution.
    blocks : list of ResidualAttentionBlock
        ``blocks[i - 1]`` is block ``i``.
    """

    def __init__(self, visual: nn.Module) -> None:
        if not isinstance(visual, VisionTransformer):
            raise _unsupported("e.g. not a ModifiedResNet or timm tower", type(visual).__name__)
        if getattr(visual, "attn_pool", None) is not None:
            raise _unsupported("no attentional pooling", "a tower with attn_pool")
        if getattr(visual, "proj", None) is None:
            raise _unsupported("with an output projection", "a tower whose proj is None")
        if not getattr(visual.transformer, "batch_first", False):
            raise _unsupported("batch-first transformer", "batch_first=False")
        ph, pw = visual.patch_size
        if ph != pw:
            raise _unsupported("square patches", f"patch size {ph}x{pw}")
        blocks = list(visual.transformer.resblocks)
        if not blocks:
            raise _unsupported("at least one block", "an empty transformer")
        for i, block in enumerate(blocks, start=1):
            self._check_block(i, block)
        self.visual = visual
        self.blocks: list[ResidualAttentionBlock] = blocks
        self.num_layers = len(blocks)
        self.width = int(visual.conv1.out_channels)
        self.num_heads = int(blocks[0].attn.num_heads)
        self.head_dim = self.width // self.num_heads
        self.patch_size = int(ph)
        self.native_grid = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        self.output_dim = int(visual.proj.shape[1])
        self._fused: dict[int, tuple] = {}  # value_out's fused weights, per block

    @staticmethod
    def _check_block(index: int, block: nn.Module) -> None:
        if type(block) is not ResidualAttentionBlock:
            raise _unsupported(f"block {index} is a ResidualAttentionBlock",
                               type(block).__name__)
        if hasattr(block, "ln_1_kv"):
            raise _unsupported(f"block {index} without cross-attention", "a cross-attention block")
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) \
                or getattr(attn, "in_proj_weight", None) is None:
            raise _unsupported(f"block {index} with a packed nn.MultiheadAttention",
                               type(attn).__name__)
        if attn.bias_k is not None or attn.bias_v is not None or attn.add_zero_attn:
            raise _unsupported(f"block {index} without bias_k/bias_v/add_zero_attn",
                               "extra key/value biases")
        if not attn.batch_first:
            raise _unsupported(f"block {index} batch-first attention", "batch_first=False")

    @classmethod
    def from_model(cls, model: Any) -> "VisionTower":
        """Wrap an open_clip CLIP (or its ``.visual``, or an object with a ``.model`` CLIP).

        Raises
        ------
        UnsupportedModelError
            When the vision tower is not a readable open_clip ViT.
        """
        if isinstance(model, VisionTower):
            return model
        if not isinstance(model, nn.Module) and isinstance(getattr(model, "model", None),
                                                           nn.Module):
            model = model.model  # a LoadedModel-like wrapper
        if isinstance(model, VisionTransformer):
            return cls(model)
        visual = getattr(model, "visual", None)
        if visual is None:
            raise _unsupported("a CLIP model with a .visual tower", describe(model))
        return cls(visual)

    # -- geometry ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the tower's weights."""
        return self.visual.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the tower's weights."""
        return self.visual.conv1.weight.dtype

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of an input of ``height x width`` pixels (floor division).

        Raises
        ------
        InvalidInputError
            When the input is smaller than one patch in either direction.
        """
        h, w = int(height) // self.patch_size, int(width) // self.patch_size
        if h < 1 or w < 1:
            raise InvalidInputError(
                f"pixels: expected height and width of at least one patch ({self.patch_size} px), "
                f"got {height}x{width}")
        return h, w

    # -- the pieces of the forward pass ---------------------------------------------------------
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch + class token embeddings with positions, after ``ln_pre``: ``x_0``.

        Parameters
        ----------
        pixels : torch.Tensor
            ``(B, 3, H, W)`` normalised images; cast to the weights' dtype. Pixels beyond the
            last whole patch are ignored (as the strided patch convolution does).

        Returns
        -------
        torch.Tensor
            ``(B, 1 + h * w, width)``; the positional embedding is bilinearly interpolated when
            ``(h, w)`` differs from :attr:`native_grid` and used as is otherwise.

        Raises
        ------
        UnsupportedModelError
            When the tower is in train mode with patch or attention dropout, which this pass
            would not reproduce.
        InvalidInputError
            When the input is smaller than one patch.
        """
        visual = self.visual
        if visual.training:
            if isinstance(visual.patch_dropout, PatchDropout) and visual.patch_dropout.prob > 0:
                raise _unsupported("patch dropout inactive (call model.eval())",
                                   "a tower in train mode with patch dropout")
            if any(block.attn.dropout > 0 for block in self.blocks):
                raise _unsupported("attention dropout inactive (call model.eval())",
                                   "a tower in train mode with attention dropout")
        h, w = self.grid_for(pixels.shape[-2], pixels.shape[-1])
        x = visual.conv1(pixels.to(self.dtype))  # (B, width, h, w)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls_tok = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls_tok, x], dim=1)
        pos = interpolate_pos_embed(visual.positional_embedding, self.native_grid, (h, w))
        x = x + pos.to(x.dtype)
        return visual.ln_pre(x)

    def _block(self, index: int) -> ResidualAttentionBlock:
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 1 <= index <= self.num_layers:
            raise InvalidInputError(
                f"block index: expected an integer in 1..{self.num_layers}, got {index!r}")
        return self.blocks[index - 1]

    def run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` as open_clip runs it (the module itself): ``x_{i-1} -> x_i``."""
        return self._block(index)(x)

    def qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of block ``index`` for its input ``x``.

        Parameters
        ----------
        index : int
            Block number, 1..L.
        x : torch.Tensor
            ``(B, N, width)`` block input (``ln_1`` is applied here).

        Returns
        -------
        tuple of torch.Tensor
            ``q, k, v`` each ``(B, N, width)``, heads concatenated (head ``j`` is channels
            ``j*head_dim:(j+1)*head_dim``); no attention scaling applied.
        """
        block = self._block(index)
        attn = block.attn
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.chunk(3, dim=-1)
        return q, k, v

    def norm_1(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s ``ln_1``: ``(B, N, width) -> (B, N, width)``."""
        return self._block(index).ln_1(x)

    def project_in(self, index: int, y: torch.Tensor, part: str) -> torch.Tensor:
        """One of block ``index``'s input projections of ``y = ln_1(x)``.

        Parameters
        ----------
        y : torch.Tensor
            ``(B, N, width)``, already through :meth:`norm_1`.
        part : {"q", "k", "v"}

        Returns
        -------
        torch.Tensor
            ``(B, N, width)``: the rows of ``in_proj_weight`` / ``in_proj_bias`` for ``part``
            only (a third of :meth:`qkv`'s work), equal to that part of :meth:`qkv`.
        """
        if part not in _PARTS:
            raise InvalidInputError(f"part: expected one of q, k, v, got {part!r}")
        attn = self._block(index).attn
        rows = slice(_PARTS.index(part) * self.width, (_PARTS.index(part) + 1) * self.width)
        bias = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
        return F.linear(y, attn.in_proj_weight[rows], bias)

    def key(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Keys of block ``index`` for its input ``x``: ``qkv(index, x)[1]``, computed alone."""
        return self.project_in(index, self.norm_1(index, x), "k")

    def value(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Values of block ``index`` for its input ``x``: ``qkv(index, x)[2]``, computed alone."""
        return self.project_in(index, self.norm_1(index, x), "v")

    def value_out(self, index: int, y: torch.Tensor) -> torch.Tensor:
        """``out_proj(project_in(index, y, "v"))`` as one product with a fused weight.

        Both maps are affine, so ``W_o (W_v y + b_v) + b_o = (W_o W_v) y + (W_o b_v + b_o)``;
        the fused ``(width, width)`` weight is computed once per block (again if the weights
        change in place) and saves one ``width x width`` product per token. Equal to the two
        steps up to float rounding.
        """
        attn = self._block(index).attn
        rows = slice(2 * self.width, 3 * self.width)
        w_v, w_o = attn.in_proj_weight[rows], attn.out_proj.weight
        b_v = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
        b_o = attn.out_proj.bias
        stamp = (attn.in_proj_weight._version, w_o._version, w_v.data_ptr(), w_o.data_ptr(),
                 None if b_v is None else attn.in_proj_bias._version,
                 None if b_o is None else b_o._version)
        cached = self._fused.get(index)
        if cached is None or cached[0] != stamp:
            with torch.no_grad():
                weight = w_o.float() @ w_v.float()
                bias = torch.zeros(self.width, device=weight.device) if b_o is None \
                    else b_o.float().clone()
                if b_v is not None:
                    bias += w_o.float() @ b_v.float()
            cached = (stamp, weight.to(w_o.dtype), bias.to(w_o.dtype))
            self._fused[index] = cached
        return F.linear(y, cached[1], cached[2])

    def out_proj(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s attention output projection: ``(B, N, width) -> (B, N, width)``."""
        return self._block(index).attn.out_proj(ctx)

    def attn_residual_branch(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s attention branch after attention: ``ls_1(out_proj(ctx))``.

        ``ctx`` is ``(B, N, width)`` attention output with heads concatenated; adding the result
        to the block input gives the block's first residual step.
        """
        block = self._block(index)
        return block.ls_1(block.attn.out_proj(ctx))

    def ffn_residual(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` with its attention skipped: ``x + ls_2(mlp(ln_2(x)))``.

        This is DSI's ``x~_i`` (METHOD.md) for ``x = x_{i-1}``; ``(B, N, width)`` in and out.
        """
        block = self._block(index)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Output head: ``ln_post`` then ``@ proj``: ``(B, N, width) -> (B, N, output_dim)``."""
        z = self.visual.ln_post(z)
        return z @ self.visual.proj.to(z.dtype)
