"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), tiled.

For every dilation ``d`` a pixel's neighbours are the 8 pixels at offsets ``{-d, 0, d}^2``
minus the centre, with replicate padding at the image border. With ``N = 8 * len(dilations)``
neighbours ``j`` of pixel ``i``:

- ``std_i`` (per channel) is the standard deviation (unbiased) of the image over the 3x3 samples
  of every dilation pooled together, the centre included once per dilation (``9 *
  len(dilations)`` samples), as in the reference implementation;
- ``a_ij = mean_c( -|I_ic - I_jc| / (1e-8 + 0.1 * std_ic) )``, then ``softmax_j``;
- each iteration replaces ``mask_i`` by ``sum_j a_ij * mask_j``.

The affinities are invariant to a per-channel affine change of the image (up to the 1e-8), so
the image may be given in [0, 1], in 0..255 or normalised.

A pixel after ``T`` iterations depends on image and mask values at most ``T * max(d)`` pixels
away, so the image is processed in tiles with a halo of that width and the result equals the
untiled computation exactly; memory is bounded by the tile size, and classes are also processed
in chunks so that ``K`` does not multiply the per-tile buffers.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .errors import InvalidInputError, describe
from .tiling import Box

#: Upper bound on floats per class-chunk buffer inside one tile (chunk of classes x tile area).
CLASS_CHUNK_FLOATS = 1 << 24


def _offsets(dilation: int) -> list[tuple[int, int]]:
    """The 8 neighbour offsets of a dilated 3x3 neighbourhood (centre excluded), row-major."""
    return [(dy * dilation, dx * dilation) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dy, dx) != (0, 0)]


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, height: int, width: int
             ) -> torch.Tensor:
    """View of ``x[..., i + dy, j + dx]`` from ``x`` replicate-padded by ``pad`` (``|dy|,|dx| <=
    pad``)."""
    return padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def _replicate_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``(C, H, W) -> (C, H + 2 pad, W + 2 pad)`` with edge values repeated."""
    return F.pad(x.unsqueeze(0), [pad] * 4, mode="replicate")[0]


def local_affinity(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """PAMR's normalised affinities to the dilated 3x3 neighbours.

    Parameters
    ----------
    image : torch.Tensor
        ``(C, H, W)`` float32.
    dilations : sequence of int
        Neighbourhood dilations.

    Returns
    -------
    torch.Tensor
        ``(8 * len(dilations), H, W)`` float32; sums to 1 over the first axis. Neighbour order:
        dilations in the given order, each with the row-major 3x3 offsets minus the centre.
    """
    _, height, width = image.shape
    padded = [(d, _replicate_pad(image, d)) for d in dilations]
    samples = len(dilations) * 9
    mean = torch.zeros_like(image)
    for d, pad in padded:
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                mean += _shifted(pad, d, dy, dx, height, width)
    mean /= samples
    var = torch.zeros_like(image)
    for d, pad in padded:
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                var += (_shifted(pad, d, dy, dx, height, width) - mean) ** 2
    denom = 1e-8 + 0.1 * torch.sqrt(var / (samples - 1))
    del mean, var
    aff = torch.empty(8 * len(dilations), height, width, dtype=image.dtype, device=image.device)
    index = 0
    for d, pad in padded:
        for dy, dx in _offsets(d):
            diff = (image - _shifted(pad, d, dy, dx, height, width)).abs_()
            aff[index] = -(diff / denom).mean(dim=0)
            index += 1
    return torch.softmax(aff, dim=0)


def propagate(mask: torch.Tensor, affinity: torch.Tensor, dilations: Sequence[int],
              iterations: int) -> torch.Tensor:
    """Iterate ``mask_i <- sum_j a_ij mask_j``.

    Parameters
    ----------
    mask : torch.Tensor
        ``(K, H, W)`` float32.
    affinity : torch.Tensor
        ``(8 * len(dilations), H, W)`` from :func:`local_affinity`.
    dilations : sequence of int
        The dilations ``affinity`` was built with (same order).
    iterations : int
        Number of propagation steps.

    Returns
    -------
    torch.Tensor
        ``(K, H, W)`` float32.
    """
    _, height, width = mask.shape
    for _ in range(iterations):
        out = torch.zeros_like(mask)
        index = 0
        for d in dilations:
            pad = _replicate_pad(mask, d)
            for dy, dx in _offsets(d):
                out.addcmul_(affinity[index], _shifted(pad, d, dy, dx, height, width))
                index += 1
            del pad
        mask = out
    return mask


def pamr_tiles(height: int, width: int, tile: int, halo: int) -> Iterator[tuple[Box, Box]]:
    """Tiles of PAMR: a core that is written to the output and the haloed region read for it.

    Parameters
    ----------
    height, width : int
        Image size.
    tile : int
        Core tile side.
    halo : int
        Extra pixels read on each side of a core (clipped to the image).

    Yields
    ------
    (core, region) : ((y0, x0, y1, x1), (y0, x0, y1, x1))
        Cores partition the image; ``region`` contains ``core``.
    """
    for y0 in range(0, height, tile):
        y1 = min(height, y0 + tile)
        for x0 in range(0, width, tile):
            x1 = min(width, x0 + tile)
            yield ((y0, x0, y1, x1),
                   (max(0, y0 - halo), max(0, x0 - halo), min(height, y1 + halo),
                    min(width, x1 + halo)))


def _pamr_region(image: torch.Tensor, logits: torch.Tensor, dilations: Sequence[int],
                 iterations: int) -> torch.Tensor:
    """PAMR on one region: ``(C, h, w)``, ``(K, h, w)`` -> ``(K, h, w)`` float32."""
    affinity = local_affinity(image, dilations)
    num_classes, height, width = logits.shape
    per_chunk = max(1, CLASS_CHUNK_FLOATS // max(1, height * width))
    out = torch.empty(num_classes, height, width, dtype=torch.float32, device=logits.device)
    for k0 in range(0, num_classes, per_chunk):
        k1 = min(num_classes, k0 + per_chunk)
        out[k0:k1] = propagate(logits[k0:k1].to(torch.float32), affinity, dilations, iterations)
    return out


def pamr(image: torch.Tensor, logits: torch.Tensor, dilations: Sequence[int] = (8, 16),
         iterations: int = 10, tile: int = 512, *,
         device: torch.device | str | None = None) -> torch.Tensor:
    """Refine per-class maps so that they follow the image's edges.

    Parameters
    ----------
    image : torch.Tensor
        ``(C, H, W)`` float image (usually C = 3), any per-channel scale.
    logits : torch.Tensor
        ``(K, H, W)`` float maps to refine (cosine logits or probabilities), same ``H, W``.
    dilations : sequence of int
        Dilations of the 3x3 neighbourhoods, each >= 1.
    iterations : int
        Propagation steps, >= 1.
    tile : int
        Core tile side, >= 1; each tile reads a halo of ``iterations * max(dilations)`` pixels,
        so the result does not depend on ``tile``.
    device : torch.device, str or None
        Where each tile is computed (e.g. the GPU while the full-size maps stay in host memory);
        None: ``logits.device``.

    Returns
    -------
    torch.Tensor
        ``(K, H, W)`` float32 on ``logits.device``.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        raise InvalidInputError(f"pamr: expected a (C, H, W) float image tensor, got "
                                f"{describe(image)}")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 \
            or not logits.is_floating_point():
        raise InvalidInputError(f"pamr: expected (K, H, W) float logits, got {describe(logits)}")
    if image.shape[1:] != logits.shape[1:]:
        raise InvalidInputError(f"pamr: expected image and logits of the same size, got image "
                                f"{tuple(image.shape)} and logits {tuple(logits.shape)}")
    dilations = tuple(dilations)
    if not dilations or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                for d in dilations):
        raise InvalidInputError(f"pamr: expected dilations as positive integers, got "
                                f"{dilations!r}")
    for name, value in (("iterations", iterations), ("tile", tile)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"pamr: expected {name} as an integer >= 1, got {value!r}")

    device = logits.device if device is None else torch.device(device)
    _, height, width = logits.shape
    halo = iterations * max(dilations)
    out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    for (y0, x0, y1, x1), (ry0, rx0, ry1, rx1) in pamr_tiles(height, width, tile, halo):
        region_image = image[:, ry0:ry1, rx0:rx1].to(device=device, dtype=torch.float32)
        region_logits = logits[:, ry0:ry1, rx0:rx1].to(device)
        refined = _pamr_region(region_image, region_logits, dilations, iterations)
        out[:, y0:y1, x0:x1] = refined[:, y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0].to(out.device)
    return out
