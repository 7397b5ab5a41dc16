"""How much memory a run will need, estimated before any work, and the refusal when it will not fit.

A run's peak memory is set by a handful of buffers whose sizes follow from the resolved options
and the image size alone (``pipeline.py``, ``windows.py``, ``tiling.py``, ``refine.py``,
``labels.py``). With ``H x W`` the image, ``H' x W'`` the working image (short side resized to
``short_side``), ``K`` the maps (classes, or synonyms with ``softmax_then_max``), ``T`` the tokens
of one window and floats of 4 bytes, a run goes through five phases, each holding the
**image** (the caller's array and the copy the cache keeps for PAMR and relabelling) and the
**window features** (every window's ``h x w x D`` embedding, kept for relabelling) plus:

1. ``windows``: the **working image** (the float copy of the image, 12 bytes a pixel; the
   resized image and the resize's temporaries, 36 bytes a working pixel) and the **window
   batch**: ``batch_size`` windows through the ViT (their pixels; ``T x width`` activations of
   a block, its ``qkv``, the residual stream and the DSI inputs kept, ``8 + dsi_layers + 2``
   of them; the MLP's ``2 x T x mlp_ratio x width``; and the ``T x T`` maps of the re-formed last
   pass, :func:`_attention_maps`: 10 for CRA, ``8 + 2..3 x heads`` for the per-head
   readouts, as measured). ``crop = 0`` is one window of the whole working image, so
   ``T`` grows with its area and the maps with its square.
2. ``stitch``: the **logits at working resolution**, the stitcher's ``(K + 1) x H' x W'`` sum and
   count, and two groups of upsampled window logits (at most ``UPSAMPLE_FLOATS`` each).
3. ``upsample``: the same plus the **logits at output resolution**, ``K x H x W`` (none when
   nothing was resized: the stitcher's sum is then the output).
4. ``pamr`` (with PAMR): the ``K x H x W`` logits, the guide image (12 bytes a pixel; twice
   with ``pamr_guide resized``), the refined ``K x H x W`` map and one tile's work, counted
   twice (the C library's heap may keep a freed tile's blocks resident, and edge tiles differ
   in size, so the next tile does not reuse them all; measured): a tile is
   ``pamr_tile`` plus a halo of ``pamr_iterations x max(pamr_dilations)`` on each side; it
   holds the tile image padded once per dilation, mean, variance and their temporaries, the
   ``8 x len(dilations)`` affinities and their softmax, a chunk of classes (at most
   ``CLASS_CHUNK_FLOATS``) three times (the input's padded copy, the iterate, the next one)
   plus padded by the largest dilation, and the tile's ``K``-map output.
5. ``labels``: the ``K x H x W`` logits, the ``K x H x W`` probabilities, the label image and
   one chunk of :func:`clipseg.labels.labels_from_logits` (about ``CHUNK_PIXELS`` pixels: 10
   bytes a map and 112 bytes of arg-max, threshold and label tensors per pixel); after PAMR
   also one PAMR tile's work, which the heap may keep resident (measured: most of it with
   256-pixel tiles and many classes).

:func:`estimate_memory` adds each phase's buffers, takes the largest phase and adds the
**allocator slack** (:data:`SLACK_FRACTION` of it, at least :data:`SLACK_MIN`): the C library's
malloc serves blocks under its mmap threshold (which grows up to 32 MiB) from its heap and keeps
them there once freed, so resident memory runs above the live buffers after a phase has freed
many such blocks. :func:`check_memory` compares the estimate with the budget
(:func:`memory_budget`: the ``max_memory`` option, else the memory available now) and raises
:class:`~clipseg.errors.InvalidConfigError` naming the option to change, the size the run would
need and the budget. Model weights, the framework itself and the text embeddings are not
counted (they are loaded already when "available" is measured).

How good it is: ``benchmarks/bench_memory.py`` runs the real :class:`~clipseg.pipeline.Segmenter`
on a grid of cases (ViT-B-16, CPU) and prints the measured peak resident memory above the
baseline over this estimate (see ``benchmarks/README.md``); the estimate is meant to be an upper
bound within a factor of about 2 of the truth for images large enough for the check to matter.
On a GPU the window batch lives in device memory (:attr:`MemoryEstimate.device`), so the host
figure is an over-estimate there.

This module imports nothing heavy (no torch), so the command line can check a run before
loading a model.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidConfigError

__all__ = ["ModelFacts", "MemoryEstimate", "estimate_memory", "memory_budget",
           "available_memory", "check_memory", "working_size", "format_bytes"]

GIB = 1 << 30
#: Floats of upsampled window logits the stitching holds at once (pipeline.UPSAMPLE_FLOATS).
_UPSAMPLE_FLOATS = 1 << 24
#: Floats of one PAMR class chunk (refine.CLASS_CHUNK_FLOATS).
_PAMR_CHUNK_FLOATS = 1 << 24
#: Resident memory above the live buffers, as a fraction of the busiest phase: heap blocks the
#: C library keeps after a free (measured: up to about a tenth, benchmarks/bench_memory.py).
SLACK_FRACTION = 0.125
#: ... and at least this many bytes.
SLACK_MIN = 16 << 20
#: Pixels per chunk of the softmax over classes (labels.CHUNK_PIXELS is of this order).
_LABEL_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class ModelFacts:
    """The sizes of a vision tower that the estimate needs (defaults: a ViT-B/16)."""

    patch_size: int = 16
    width: int = 768
    heads: int = 12
    layers: int = 12
    output_dim: int = 512
    mlp_ratio: float = 4.0

    @classmethod
    def of_tower(cls, tower: Any) -> ModelFacts:
        """Facts read off a :class:`clipseg.models.towers.VisionTower`."""
        return cls(patch_size=int(tower.patch_size), width=int(tower.width),
                   heads=int(tower.num_heads), layers=int(tower.num_layers),
                   output_dim=int(tower.output_dim))

    @classmethod
    def of_arch(cls, arch: str) -> ModelFacts | None:
        """Facts from open_clip's config of ``arch`` (no weights loaded); None if unknown."""
        try:
            import open_clip

            cfg = open_clip.get_model_config(arch) or {}
        except Exception:  # any failure only means "unknown": the defaults apply
            return None
        vision = cfg.get("vision_cfg") or {}
        layers, width = vision.get("layers"), vision.get("width")
        if not isinstance(layers, int) or not isinstance(width, int):
            return None  # timm towers and others: their sizes are not in the config
        head_width = vision.get("head_width", 64) or 64
        return cls(patch_size=int(vision.get("patch_size", 16)), width=width,
                   heads=max(1, width // int(head_width)), layers=layers,
                   output_dim=int(cfg.get("embed_dim", 512)),
                   mlp_ratio=float(vision.get("mlp_ratio", 4.0)))


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of one image, in bytes, and what makes it up.

    Attributes
    ----------
    peak : int
        Bytes at the busiest moment: the largest :attr:`phases` value plus the allocator
        slack (``parts["allocator slack"]``).
    phases : dict of str to int
        Bytes held during each phase (``windows``, ``stitch``, ``upsample``, ``pamr``,
        ``labels``).
    parts : dict of str to int
        Size of each buffer (``working image``, ``window batch``, ``window features``,
        ``logits at working resolution``, ``logits at output resolution``, ``PAMR``...).
    working : (int, int)
        Size of the working image ``(H', W')``.
    device : int
        Bytes the window batch needs on the compute device (the part that is not host
        memory when the device is a GPU).
    """

    peak: int
    phases: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    working: tuple[int, int] = (0, 0)
    device: int = 0

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)

    def largest_part(self) -> str:
        """The buffer that weighs most in the peak phase."""
        return max(_PHASE_PARTS[self.peak_phase], key=lambda p: self.parts.get(p, 0))


_PHASE_PARTS = {
    "windows": ("image", "working image", "window batch", "window features"),
    "stitch": ("image", "window features", "logits at working resolution"),
    "upsample": ("image", "window features", "logits at working resolution",
                 "logits at output resolution"),
    "pamr": ("image", "window features", "logits at output resolution", "PAMR"),
    "labels": ("image", "window features", "logits at output resolution", "probabilities",
               "PAMR tile"),
}


def format_bytes(n: float) -> str:
    """``"1.5 GiB"``, ``"12 MiB"``, ``"48.0 TiB"``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def working_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Size after resizing the short side to ``short_side`` (0 keeps it): the rule of
    :func:`clipseg.tiling.resized_shape`, without importing torch."""
    if not short_side:
        return int(height), int(width)
    scale = short_side / min(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _grid_count(size: int, crop: int, stride: int) -> int:
    return max(size - crop + stride - 1, 0) // stride + 1


def _fed(side: int, patch: int, patch_fit: str) -> int:
    return side if patch_fit == "drop" else math.ceil(side / patch) * patch


def _attention_maps(readout: Any, heads: int) -> int:
    """``T x T`` float maps a window holds at its busiest, for ``readout``.

    Measured on ViT-B-16 with one window of 3073 tokens (``benchmarks/bench_memory.py``,
    crop 0): about 9 maps with ``clipseg`` (CRA + relation) and with ``kk_middle`` alike, so
    most of it is common to the pass (the blocks' attention) rather than CRA's DBSCAN masks:
    8 are counted for every readout, plus the re-formed last block's own: 2 for the one-map
    family (logits and softmax), 2 per head for the per-head readouts (``qk``, ``clearclip``,
    ``naclip``, the last with its window bias), 3 per head for SCLIP's two attentions and their
    sum (measured about 2.6), one per head for ``vanilla`` (the library's block); MaskCLIP
    has no attention of its own.
    """
    method = getattr(readout, "method", "clipseg")
    own = {"sclip": 3 * heads + 1, "clearclip": 2 * heads + 1, "naclip": 2 * heads + 2,
           "qk": 2 * heads + 1, "vanilla": heads, "maskclip": 0}
    return 8 + own.get(method, 2)


def _label_chunk_bytes(maps: int, height: int, width: int) -> int:
    """Temporaries of one chunk of :func:`clipseg.labels.labels_from_logits`: per pixel the
    scaled logits and their softmax (8 bytes a map, 2 more for the per-synonym reduction) and
    the arg-max, threshold and label tensors (int64 mostly: 112 bytes, measured with
    ``benchmarks/bench_memory.py``, heap reuse included)."""
    rows = max(1, _LABEL_CHUNK_PIXELS // max(1, width))
    return (10 * maps + 112) * min(height, rows) * width


def estimate_memory(config: Any, height: int, width: int, num_maps: int, *,
                    facts: ModelFacts | None = None, image_bytes: int = 3,
                    feature_bytes: int = 4, cached: bool = False) -> MemoryEstimate:
    """Peak memory of segmenting one ``height x width`` image into ``num_maps`` maps.

    Parameters
    ----------
    config : SegmentConfig
        Resolved options (:func:`clipseg.resolve.resolve_config`: no ``None`` in the window).
    height, width : int
        Size of the image given to the engine (a tile's region in a tiled run).
    num_maps : int
        Logit maps: the number of classes, or of synonyms with
        ``synonym_reduce="softmax_then_max"``.
    facts : ModelFacts or None
        The vision tower's sizes (default: a ViT-B/16).
    image_bytes : int
        Bytes per pixel of the image as given (3 for 8-bit RGB, 12 for float32 RGB).
    feature_bytes : int
        Bytes per stored feature value (2 when the model runs in fp16).
    cached : bool
        The window features of this image exist already (a relabel): only the stitching, the
        upsampling, PAMR and the labels are counted.
    """
    facts = facts or ModelFacts()
    window, refine = config.window, config.refine
    if window.short_side is None or window.crop is None or window.stride is None:
        raise InvalidConfigError("estimate_memory: expected a resolved config "
                                 "(clipseg.resolve.resolve_config), got None in the window "
                                 "options")
    height, width, maps = int(height), int(width), max(1, int(num_maps))
    rh, rw = working_size(height, width, window.short_side)
    hw, rhw = height * width, rh * rw
    f4 = 4
    p = facts.patch_size
    # -- windows ---------------------------------------------------------------------------
    if window.crop == 0:
        count, wh, ww = 1, rh, rw
    else:
        count = _grid_count(rh, window.crop, window.stride) * \
            _grid_count(rw, window.crop, window.stride)
        wh, ww = min(window.crop, rh), min(window.crop, rw)
    fh, fw = _fed(wh, p, window.patch_fit), _fed(ww, p, window.patch_fit)
    gh, gw = max(1, fh // p), max(1, fw // p)
    tokens = gh * gw + 1
    batch = 1 if window.crop == 0 else min(window.batch_size, count)
    kept = config.readout.dsi_layers + 2
    hidden = int(facts.mlp_ratio * facts.width)
    per_window = (3 * fh * fw * 2                                  # pixels, and their concat
                  + tokens * facts.width * (8 + kept)              # block activations, DSI
                  + tokens * hidden * 2                            # MLP
                  + tokens * tokens * _attention_maps(config.readout, facts.heads))
    parts: dict[str, int] = {
        "image": 2 * image_bytes * hw,  # the caller's and the copy kept for PAMR / relabel
        "working image": f4 * 3 * (hw + 3 * rhw),  # float copy, resized, resize temporaries
        "window batch": f4 * batch * per_window,
        "window features": feature_bytes * count * gh * gw * facts.output_dim,
        "logits at working resolution": f4 * ((maps + 1) * rhw + 2 * min(
            _UPSAMPLE_FLOATS, count * maps * wh * ww)),
        "logits at output resolution": f4 * maps * hw if (rh, rw) != (height, width) else 0,
        "probabilities": f4 * maps * hw + 2 * hw + _label_chunk_bytes(maps, height, width),
    }
    if cached:
        parts["image"] = image_bytes * hw
        parts["working image"] = parts["window batch"] = parts["window features"] = 0
    logits_out = f4 * maps * hw
    if refine.pamr:
        dil = refine.pamr_dilations
        dmax, nd = max(dil), len(dil)
        halo = refine.pamr_iterations * dmax
        th, tw = min(height, refine.pamr_tile + 2 * halo), min(width, refine.pamr_tile + 2 * halo)
        area, padded = th * tw, (th + 2 * dmax) * (tw + 2 * dmax)
        chunk = min(maps, max(1, _PAMR_CHUNK_FLOATS // max(1, area)))
        guide = 3 * hw if config.refine.pamr_guide == "original" else 3 * (hw + rhw)
        region = (sum(3 * (th + 2 * d) * (tw + 2 * d) for d in dil)   # padded image per d
                  + 3 * 3 * area                                      # mean, var, temporaries
                  + 2 * 8 * nd * area                                 # affinities, softmax
                  + chunk * (3 * area + padded)                       # propagate
                  + maps * area)                                      # the region's output
        parts["PAMR"] = f4 * (guide + region + maps * hw)             # + the refined map
        parts["PAMR tile"] = f4 * region
    image, feats = parts["image"], parts["window features"]
    out = parts["logits at output resolution"]
    phases = {
        "windows": image + parts["working image"] + parts["window batch"] + feats,
        "stitch": image + feats + parts["logits at working resolution"],
        "upsample": image + feats + parts["logits at working resolution"] + out,
        "labels": image + feats + logits_out + parts["probabilities"],
    }
    if refine.pamr:
        # the heap keeps up to one tile's work resident once it is freed (measured: most of it
        # with tiles of 256 and many classes), under the next tile (edge tiles differ in
        # size, so their blocks do not all reuse it) and under the labels that follow
        phases["pamr"] = image + feats + logits_out + parts["PAMR"] + parts["PAMR tile"]
        phases["labels"] += parts["PAMR tile"]
    device = f4 * per_window  # one window: what a GPU must hold at the least
    busiest = max(phases.values())
    parts["allocator slack"] = max(SLACK_MIN, int(busiest * SLACK_FRACTION))
    return MemoryEstimate(peak=busiest + parts["allocator slack"], phases=phases, parts=parts,
                          working=(rh, rw), device=device)


# --------------------------------------------------------------------------------------------
# the budget
# --------------------------------------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's available memory (psutil, else
    ``/proc/meminfo`` MemAvailable), lowered by a cgroup memory limit when one is set; None
    when it cannot be told."""
    found: list[int] = []
    try:
        import psutil

        found.append(int(psutil.virtual_memory().available))
    except Exception:  # psutil is optional
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        found.append(int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError, IndexError):
            pass
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 1 << 60:
            found.append(max(0, limit - usage))
            break
    return min(found) if found else None


def memory_budget(config: Any) -> tuple[int | None, str]:
    """``(bytes, where it comes from)``; None bytes when there is no limit to check.

    ``max_memory`` (GiB) when set, 0 meaning no check; else :func:`available_memory`.
    ``$CLIPSEG_MAX_MEMORY`` (GiB) stands in for an unset option (used by tests and scripts).
    """
    value = config.model.max_memory
    if value is None and os.environ.get("CLIPSEG_MAX_MEMORY"):
        try:
            value = float(os.environ["CLIPSEG_MAX_MEMORY"])
        except ValueError:
            raise InvalidConfigError(f"CLIPSEG_MAX_MEMORY: expected a number of GiB, got "
                                     f"{os.environ['CLIPSEG_MAX_MEMORY']!r}") from None
    if value is not None:
        if value == 0:
            return None, "max_memory 0 (no check)"
        return int(value * GIB), f"max_memory {value:g} GiB"
    free = available_memory()
    return free, "the memory available now"


# --------------------------------------------------------------------------------------------
# the refusal
# --------------------------------------------------------------------------------------------
_ADVICE = {
    "image": ("short_side", "the image itself is too large for the budget: process it in "
                            "tiles (short_side 0 with the command line's --tile-size)"),
    "working image": ("short_side", "lower short_side"),
    "window batch": ("batch_size", "lower batch_size, or crop"),
    "window features": ("short_side", "lower short_side, or raise stride"),
    "logits at working resolution": ("short_side", "lower short_side, or use fewer classes"),
    "logits at output resolution": ("short_side", "use fewer classes, or process the image in "
                                                  "tiles (short_side 0 with --tile-size)"),
    "probabilities": ("short_side", "use fewer classes, or process the image in tiles "
                                    "(short_side 0 with --tile-size)"),
    "PAMR": ("pamr_tile", "lower pamr_tile, pamr_dilations or pamr_iterations, or turn PAMR "
                          "off"),
    "PAMR tile": ("pamr_tile", "lower pamr_tile, pamr_dilations or pamr_iterations, or turn "
                               "PAMR off"),
}


def _fitting_short_side(config: Any, height: int, width: int, num_maps: int,
                        budget: int, **kwargs: Any) -> int | None:
    """The largest short_side (multiple of 16, >= 16) whose estimate fits, or None."""
    low, high = 1, max(1, config.window.short_side // 16)
    best = None
    while low <= high:
        mid = (low + high) // 2
        trial = config.replace(short_side=mid * 16)
        if estimate_memory(trial, height, width, num_maps, **kwargs).peak <= budget:
            best, low = mid * 16, mid + 1
        else:
            high = mid - 1
    return best


def check_memory(config: Any, height: int, width: int, num_maps: int, *,
                 facts: ModelFacts | None = None, budget: int | None = None,
                 budget_source: str | None = None, what: str = "image",
                 **kwargs: Any) -> MemoryEstimate:
    """Estimate and refuse: raise :class:`InvalidConfigError` when the estimate is above the
    budget (``budget`` bytes, else :func:`memory_budget` of ``config``).

    The message names the image size, the working size, the estimate, the budget, the buffer
    that dominates and the option to change (with a ``short_side`` that would fit when
    lowering it helps).

    Returns
    -------
    MemoryEstimate
    """
    estimate = estimate_memory(config, height, width, num_maps, facts=facts, **kwargs)
    if budget is None:
        budget, source = memory_budget(config)
    else:
        source = budget_source or "the budget given"
    if budget is None or estimate.peak <= budget:
        return estimate
    part = estimate.largest_part()
    option, advice = _ADVICE.get(part, ("short_side", "lower short_side"))
    rh, rw = estimate.working
    window = config.window
    where = (f"a {height}x{width} {what} at working size {rh}x{rw} (short_side "
             f"{window.short_side})")
    hint = advice
    if option == "short_side" and window.short_side and "lower short_side" in advice:
        fit = _fitting_short_side(config, height, width, num_maps, budget, facts=facts,
                                  **kwargs)
        if fit is not None:
            hint = advice.replace("lower short_side", f"lower short_side (at most {fit} fits)")
    raise InvalidConfigError(
        f"memory: expected a run that fits in {format_bytes(budget)} ({source}), got an "
        f"estimated peak of {format_bytes(estimate.peak)} for {where}; the largest part is the "
        f"{part} ({format_bytes(estimate.parts.get(part, 0))}). To fix: {hint}; or set "
        f"max_memory (--max-memory GiB, 0 = no check) if the estimate is wrong for this "
        f"machine.")


def parts_table(estimate: MemoryEstimate) -> Mapping[str, str]:
    """The estimate's buffers formatted, for reports and benchmarks."""
    return {name: format_bytes(size) for name, size in estimate.parts.items()}
