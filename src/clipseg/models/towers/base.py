"""The tower interface the dense readouts are written against.

A :class:`VisionTower` is a read-only view over the image tower of a CLIP. It exposes the
pieces the readouts need (patch + class token embedding with interpolated positions, per-block
q/k/v, the block's attention output projection and FFN branch, the output head) by *calling*
the model's own submodules. Nothing is replaced, patched or hooked.

One implementation per kind of tower (:mod:`.openclip_vit`, :mod:`.timm_vit`);
:func:`~clipseg.models.towers.dispatch.tower_for` picks it. The readouts
(:mod:`clipseg.readouts`) and the single pass (:mod:`clipseg.features`) only use what is
declared here.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InvalidInputError, UnsupportedModelError, describe

__all__ = ["VisionTower", "interpolate_pos_embed", "POS_INTERP_MODES", "SUPPORTED_TOWERS",
           "unsupported"]

#: Ways to resample positional embeddings (``ReadoutConfig.pos_interp``).
POS_INTERP_MODES: tuple[str, ...] = ("bilinear", "bicubic", "bicubic_scale")

#: What the engine can read, for refusals.
SUPPORTED_TOWERS = (
    "an open_clip VisionTransformer with standard ResidualAttentionBlocks, or open_clip's "
    "TimmModel around a timm VisionTransformer (class token, learned positions, Block/Attention "
    "with fused qkv, token or avg pooling, linear/MLP head)")


_PARTS = ("q", "k", "v")


def unsupported(what: str, got: Any) -> UnsupportedModelError:
    """Refusal naming the supported towers, the violated requirement and what arrived."""
    return UnsupportedModelError(
        f"expected {SUPPORTED_TOWERS}; this tower fails: {what}; got {got}. ConvNeXt, ResNet "
        "and attention-pooled towers cannot be read by the dense readouts")


def interpolate_pos_embed(pos: torch.Tensor, grid_from: tuple[int, int],
                          grid_to: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
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
    mode : {"bilinear", "bicubic", "bicubic_scale"}
        ``bilinear`` and ``bicubic`` resample to the target size (``align_corners=False``;
        bicubic is TCL's ``interpolate_pos_emb``). ``bicubic_scale`` is the formula of DINO that
        SCLIP, ClearCLIP and NACLIP use: bicubic with ``scale_factor = ((h + 0.1) / H0,
        (w + 0.1) / W0)``, so the sampling positions follow that factor rather than ``h / H0``.

    Returns
    -------
    torch.Tensor
        ``(1 + h * w, C)`` in the dtype of ``pos``. The class row is kept; the patch rows are
        resampled (computed in float32). At ``grid_to == grid_from`` the input tensor itself is
        returned (exact identity), as every peer does for the native grid.
    """
    h0, w0 = (int(v) for v in grid_from)
    h, w = (int(v) for v in grid_to)
    if pos.ndim != 2 or pos.shape[0] != 1 + h0 * w0:
        raise InvalidInputError(
            f"positional embedding: expected shape (1 + {h0}*{w0}, C), got {describe(pos)}")
    if h < 1 or w < 1:
        raise InvalidInputError(f"target grid: expected at least 1x1 patches, got {h}x{w}")
    if mode not in POS_INTERP_MODES:
        raise InvalidInputError(f"positional interpolation: expected one of "
                                f"{', '.join(POS_INTERP_MODES)}, got {mode!r}")
    if (h, w) == (h0, w0):
        return pos
    cls_row, patches = pos[:1], pos[1:]
    grid = patches.float().reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
    if mode == "bicubic_scale":
        grid = F.interpolate(grid, scale_factor=((h + 0.1) / h0, (w + 0.1) / w0),
                             mode="bicubic", align_corners=False, recompute_scale_factor=False)
        if tuple(grid.shape[-2:]) != (h, w):  # floor((n + 0.1) / N0 * N0) is n for real grids
            raise InvalidInputError(f"positional interpolation: the scale-factor formula gave "
                                    f"{tuple(grid.shape[-2:])} for a {h}x{w} grid")
    else:
        grid = F.interpolate(grid, size=(h, w), mode=mode, align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(h * w, -1).to(pos.dtype)
    return torch.cat([cls_row, patches], dim=0)


class VisionTower(ABC):
    """Read-only view over a CLIP image tower; the interface every readout uses.

    Block indices are counted from 1 (block ``i`` maps ``x_{i-1}`` to ``x_i``), as in METHOD.md.
    Tokens are ``(B, 1 + P, width)`` with the class token first.

    Attributes
    ----------
    visual : torch.nn.Module
        The wrapped tower (never modified).
    kind : str
        Which implementation reads it (``"open_clip ViT"``, ``"timm ViT"``).
    num_layers, width, num_heads, head_dim, patch_size, output_dim : int
        Depth L, residual width, attention heads, per-head width, square patch side in pixels,
        joint embedding dim D.
    native_grid : tuple of int
        ``(H0, W0)`` patch grid of the training resolution.
    blocks : list of torch.nn.Module
        ``blocks[i - 1]`` is block ``i`` (the model's own module).
    """

    kind: str = ""
    visual: nn.Module
    blocks: list[nn.Module]
    num_layers: int
    width: int
    num_heads: int
    head_dim: int
    patch_size: int
    native_grid: tuple[int, int]
    output_dim: int

    # -- geometry ------------------------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device of the tower's weights."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Dtype of the tower's weights."""

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

    def _block(self, index: int) -> nn.Module:
        if isinstance(index, bool) or not isinstance(index, int) \
                or not 1 <= index <= self.num_layers:
            raise InvalidInputError(
                f"block index: expected an integer in 1..{self.num_layers}, got {index!r}")
        return self.blocks[index - 1]

    # -- the pieces of the forward pass ---------------------------------------------------------
    @abstractmethod
    def embed(self, pixels: torch.Tensor, pos_interp: str = "bilinear") -> torch.Tensor:
        """``x_0``: patch + class token embeddings with positions, after the pre-norm.

        Parameters
        ----------
        pixels : torch.Tensor
            ``(B, 3, H, W)`` normalised images; cast to the weights' dtype. Pixels beyond the
            last whole patch are ignored (as the strided patch convolution does).

        Returns
        -------
        torch.Tensor
            ``(B, 1 + h * w, width)``; the positional embedding is bilinearly interpolated
            (:func:`interpolate_pos_embed`) when ``(h, w)`` differs from :attr:`native_grid`.

        Raises
        ------
        UnsupportedModelError
            When the tower is in train mode with active dropout, which this pass would not
            reproduce.
        InvalidInputError
            When the input is smaller than one patch.
        """

    def run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` as its library runs it (the module itself): ``x_{i-1} -> x_i``."""
        return self._block(index)(x)

    @abstractmethod
    def qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of block ``index`` for its input ``x``.

        Parameters
        ----------
        index : int
            Block number, 1..L.
        x : torch.Tensor
            ``(B, N, width)`` block input (the block's first norm is applied here).

        Returns
        -------
        tuple of torch.Tensor
            ``q, k, v`` each ``(B, N, width)``, heads concatenated (head ``j`` is channels
            ``j*head_dim:(j+1)*head_dim``); no attention scaling applied.
        """

    # -- the projections alone (each readout computes only what it reads) ----------------------
    @abstractmethod
    def norm_1(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s first norm (before attention): ``(B, N, width) -> (B, N, width)``."""

    @abstractmethod
    def _in_proj(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block ``index``'s fused input projection: weight ``(3 * width, width)`` with rows
        q, k, v (heads concatenated in each), and its bias ``(3 * width,)`` or None."""

    @abstractmethod
    def _out_linear(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block ``index``'s attention output projection as weight ``(width, width)`` and bias."""

    def project_in(self, index: int, y: torch.Tensor, part: str) -> torch.Tensor:
        """One of block ``index``'s input projections of ``y = norm_1(x)``.

        Parameters
        ----------
        y : torch.Tensor
            ``(B, N, width)``, already through :meth:`norm_1`.
        part : {"q", "k", "v"}

        Returns
        -------
        torch.Tensor
            ``(B, N, width)``: that part of :meth:`qkv`, at a third of its work.
        """
        if part not in _PARTS:
            raise InvalidInputError(f"part: expected one of q, k, v, got {part!r}")
        weight, bias = self._in_proj(index)
        rows = slice(_PARTS.index(part) * self.width, (_PARTS.index(part) + 1) * self.width)
        return F.linear(y, weight[rows], None if bias is None else bias[rows])

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
        w_in, b_in = self._in_proj(index)
        w_o, b_o = self._out_linear(index)
        rows = slice(2 * self.width, 3 * self.width)
        stamp = (w_in._version, w_o._version, w_in.data_ptr(), w_o.data_ptr(),
                 None if b_in is None else b_in._version, None if b_o is None else b_o._version)
        fused = self.__dict__.setdefault("_fused", {})
        cached = fused.get(index)
        if cached is None or cached[0] != stamp:
            with torch.no_grad():
                weight = w_o.float() @ w_in[rows].float()
                bias = torch.zeros(self.width, device=weight.device) if b_o is None \
                    else b_o.float().clone()
                if b_in is not None:
                    bias += w_o.float() @ b_in[rows].float()
            cached = (stamp, weight.to(w_o.dtype), bias.to(w_o.dtype))
            fused[index] = cached
        return F.linear(y, cached[1], cached[2])

    @abstractmethod
    def out_proj(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s attention output projection: ``(B, N, width) -> (B, N, width)``."""

    @abstractmethod
    def attn_residual_branch(self, index: int, ctx: torch.Tensor) -> torch.Tensor:
        """Block ``index``'s attention branch after attention: layer-scale of ``out_proj(ctx)``.

        ``ctx`` is ``(B, N, width)`` attention output with heads concatenated; adding the result
        to the block input gives the block's first residual step.
        """

    @abstractmethod
    def ffn_residual(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` with its attention skipped: ``x + ls_2(mlp(norm_2(x)))``.

        This is DSI's ``x~_i`` (METHOD.md) for ``x = x_{i-1}``; ``(B, N, width)`` in and out.
        """

    @abstractmethod
    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Output head applied per token: ``(B, N, width) -> (B, N, output_dim)``."""
