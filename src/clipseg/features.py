"""Class-independent dense embeddings from one pass over a CLIP ViT.

:class:`DenseEncoder` runs blocks ``1..L-1`` once, keeping only what the chosen readout needs
(the middle block's keys for CRA, the inputs of the blocks DSI re-reads), then the re-formed last
block (:mod:`clipseg.readouts`), the output head (open_clip: ``ln_post``, ``proj``; timm:
final ``norm``, ``TimmModel.head``) and an L2
normalisation. The model object is only read: its own submodules are called, nothing is patched
and no hook is registered.

The result does not depend on any class list, so it can be cached per image and compared with
any text embeddings later (cosine similarity = dot product, both being unit length).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from .config import ReadoutConfig
from .errors import InvalidConfigError, InvalidInputError, describe
from .models.registry import default_middle_layer
from .models.towers import tower_for
from .readouts import BlockInputs, dsi_blocks, needs_middle_keys, readout_tokens

__all__ = ["DenseEncoder", "dense_embeddings", "default_middle_layer"]


class DenseEncoder:
    """Dense, unit-length patch embeddings in CLIP's joint space.

    Parameters
    ----------
    model : open_clip CLIP, its ``.visual``, a LoadedModel or a :class:`VisionTower`
        A CLIP with a readable ViT tower, open_clip's own or timm's (see
        :data:`clipseg.models.towers.SUPPORTED_TOWERS`); the readouts only see the
        :class:`~clipseg.models.towers.VisionTower` interface.
    readout : ReadoutConfig
        Which re-formed last block to use and its parameters.
    middle_layer : int or None
        Block M (1..L) whose keys build CRA's attention. None: ``readout.middle_layer``, else
        ``ceil(L / 2)``. When both this and ``readout.middle_layer`` are given they must agree.

    Raises
    ------
    UnsupportedModelError
        When the vision tower cannot be read.
    InvalidConfigError
        When ``middle_layer`` or ``dsi_layers`` does not fit the model's depth.
    """

    def __init__(self, model: Any, readout: ReadoutConfig | None = None,
                 middle_layer: int | None = None) -> None:
        readout = ReadoutConfig() if readout is None else readout
        if not isinstance(readout, ReadoutConfig):
            raise InvalidConfigError(f"readout: expected a ReadoutConfig, got {describe(readout)}")
        self.tower = tower_for(model)
        depth = self.tower.num_layers
        if middle_layer is not None and readout.middle_layer is not None \
                and middle_layer != readout.middle_layer:
            raise InvalidConfigError(
                f"middle_layer: expected one value, got {middle_layer!r} as argument and "
                f"{readout.middle_layer!r} in the ReadoutConfig")
        if middle_layer is None:
            middle_layer = readout.middle_layer
        if middle_layer is None:
            middle_layer = default_middle_layer(depth)
        if isinstance(middle_layer, bool) or not isinstance(middle_layer, int) \
                or not 1 <= middle_layer <= depth:
            raise InvalidConfigError(
                f"middle_layer: expected a block number in 1..{depth} (this model has {depth} "
                f"blocks, counted from 1), got {middle_layer!r}")
        if readout.dsi_layers > depth:
            raise InvalidConfigError(
                f"dsi_layers: expected at most {depth} (the model's depth), "
                f"got {readout.dsi_layers}")
        self.readout = dataclasses.replace(readout, middle_layer=middle_layer)
        self.middle_layer = middle_layer

    @property
    def output_dim(self) -> int:
        """``D``, the joint embedding dimension."""
        return self.tower.output_dim

    def check_pixels(self, pixels: Any) -> tuple[int, int]:
        """Validate a pixel batch; return its patch grid ``(h, w)``.

        Raises
        ------
        InvalidInputError
            Unless ``pixels`` is a finite float tensor ``(B, 3, H, W)`` on the model's device
            with ``H, W`` at least one patch.
        """
        expected = (f"a float tensor of shape (B, 3, H, W) with H, W >= {self.tower.patch_size} "
                    f"(one patch)")
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3 \
                or not pixels.is_floating_point() or pixels.shape[0] < 1:
            raise InvalidInputError(f"pixels: expected {expected}, got {describe(pixels)}")
        if pixels.shape[-2] < self.tower.patch_size or pixels.shape[-1] < self.tower.patch_size:
            raise InvalidInputError(f"pixels: expected {expected}, got {describe(pixels)}")
        if pixels.device != self.tower.device:
            raise InvalidInputError(
                f"pixels: expected a tensor on the model's device {self.tower.device}, got one on "
                f"{pixels.device}; move it with pixels.to(device)")
        if not bool(torch.isfinite(pixels).all()):
            raise InvalidInputError("pixels: expected finite values, got NaN or infinity")
        return self.tower.grid_for(pixels.shape[-2], pixels.shape[-1])

    def collect(self, pixels: torch.Tensor) -> BlockInputs:
        """Run blocks ``1..L-1`` once, keeping what the readout needs.

        Parameters
        ----------
        pixels : torch.Tensor
            ``(B, 3, H, W)`` normalised images (already validated).

        Returns
        -------
        BlockInputs
        """
        tower, cfg = self.tower, self.readout
        depth = tower.num_layers
        grid = tower.grid_for(pixels.shape[-2], pixels.shape[-1])
        want_k = needs_middle_keys(cfg)
        dsi_wanted = set(dsi_blocks(cfg, depth))
        k_mid: torch.Tensor | None = None
        dsi: dict[int, torch.Tensor] = {}
        x = tower.embed(pixels, cfg.pos_interp)
        for index in range(1, depth):
            if want_k and index == self.middle_layer:
                k_mid = tower.key(index, x)
            if index in dsi_wanted:
                dsi[index] = x
            x = tower.run_block(index, x)
        if want_k and self.middle_layer == depth:
            k_mid = tower.key(depth, x)
        return BlockInputs(last=x, k_mid=k_mid, grid=grid,
                           dsi=[(i, dsi[i]) for i in sorted(dsi, reverse=True)])

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Dense embeddings of a batch of images.

        Parameters
        ----------
        pixels : torch.Tensor
            ``(B, 3, H, W)`` float, normalised with the model's mean/std, on the model's
            device. ``H, W`` need not be the training size (positions are interpolated);
            pixels beyond the last whole patch are ignored.

        Returns
        -------
        torch.Tensor
            ``(B, h, w, D)`` float32, unit length along ``D``; ``h = H // patch``,
            ``w = W // patch``. Computed under ``torch.no_grad()`` (no autograd graph); an
            enclosing ``torch.autocast`` is honoured, with similarities, softmaxes and
            normalisations kept in float32.

        Raises
        ------
        InvalidInputError
            See :meth:`check_pixels`.
        """
        h, w = self.check_pixels(pixels)
        with torch.no_grad():
            inputs = self.collect(pixels)
            tokens = readout_tokens(self.tower, inputs, self.readout)
            embs = [F.normalize(self.tower.head(t).float(), dim=-1) for t in tokens]
            emb = embs[0] if len(embs) == 1 else F.normalize(torch.stack(embs).mean(0), dim=-1)
        return emb.reshape(pixels.shape[0], h, w, self.tower.output_dim)


_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(ReadoutConfig) if f.name != "method")


def dense_embeddings(model: Any, pixels: torch.Tensor, method: str = "clipseg",
                     **options: Any) -> torch.Tensor:
    """Class-independent dense embeddings of ``pixels`` with readout ``method``.

    Parameters
    ----------
    model : open_clip CLIP (or its ``.visual``, or a LoadedModel)
        A CLIP with a readable ViT tower (open_clip's or timm's), in eval mode, on the device
        of ``pixels``.
    pixels : torch.Tensor
        ``(B, 3, H, W)`` float, normalised with the model's mean/std.
    method : str
        One of :data:`clipseg.config.READOUTS` (default ``"clipseg"``: CRA + DSI).
    **options
        :class:`~clipseg.config.ReadoutConfig` fields: ``middle_layer`` (counted from 1;
        default ``ceil(L / 2)``), ``tau``, ``eps``, ``min_samples``, ``relation``,
        ``dsi_layers``, ``dsi_mode``, ``cls_in_attention``, ``attn_scale``, ``naclip_std``.

    Returns
    -------
    torch.Tensor
        ``(B, h, w, D)`` float32 unit vectors in the joint image-text space.

    Raises
    ------
    InvalidConfigError
        Unknown option or method, or a value out of range (``middle_layer`` beyond the depth).
    InvalidInputError
        ``pixels`` is not a ``(B, 3, H, W)`` float tensor of at least one patch.
    UnsupportedModelError
        The image tower cannot be read (ConvNeXt, ResNet, attention pooling, ...).
    """
    unknown = sorted(set(options) - set(_OPTION_NAMES))
    if unknown:
        raise InvalidConfigError(
            f"unknown option(s) {', '.join(unknown)}; expected some of: "
            f"{', '.join(_OPTION_NAMES)}")
    readout = ReadoutConfig(method=method, **options)
    return DenseEncoder(model, readout)(pixels)
