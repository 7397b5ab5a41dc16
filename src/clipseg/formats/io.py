"""The label file format shared by the CLI and the napari plugin.

One result is two files next to each other::

    NAME.png            8-bit palette PNG when the largest label is <= 255
    NAME.tif            otherwise (uint16 or uint32, zlib-compressed, tiled when large), or
                        whenever TIFF tags are given (``tiff_tags``: a GeoTIFF's
                        georeferencing, see clipseg.formats.geo); the CLI's tiled runs write
                        it uncompressed, so it memory-maps lazily
    NAME.clipseg.json   the sidecar: class names, synonyms, colors, model, config, image info

Label 0 means *unlabeled*; class ``k`` (0-based, in the order given) has label ``k + 1``.
The sidecar is::

    {"version": 1,
     "file": "NAME.png",
     "classes": [{"label": 1, "name": "road", "synonyms": ["road", "street"],
                  "color": "#rrggbb"}, ...],
     "model": "ViT-B-16/openai",
     "config": SegmentConfig.to_flat(),
     "config_hash": "...",          # see :func:`run_hash`; used by resumable batch runs
     "image": {"path": ..., "shape": [H, W], ...},
     "edits": "NAME.edits.png",     # optional: which pixels a person edited (see below)
     "pixel_size": {"y": 0.325, "x": 0.325, "unit": "µm", "source": "ome-tiff"}}
                                    # optional: the source image's physical pixel size
                                    # (clipseg.formats.ome; also in a label TIFF's OME-XML)

``synonyms`` always lists every prompt of the class with the name first (the same order as
:class:`clipseg.text.ClassSpec.synonyms`). ``image.shape`` is the shape of the label array.

The human-edit mask (optional)
------------------------------
A result corrected by hand (the napari plugin's drafts) may carry a third file,
``NAME.edits.png``: a 1-bit PNG of the label image's shape where 1 marks a pixel whose label a
person set (painted, filled or erased; an erased pixel is 0 in the labels and 1 here: "this is
unlabeled", said by a person) and 0 a pixel whose label is the machine's. The sidecar names it
with the key ``"edits"`` (a file name relative to the sidecar's folder). Without the key the
result has no human edits (every label is the machine's), so every version-1 sidecar stays
readable. :func:`read_labels` returns the mask as ``meta["edits"]``, an ``(H, W)`` bool array,
or None when there is none, and the file name as ``meta["edits_file"]`` (or None);
:func:`write_labels` writes it from ``edits=`` and writes no file when no pixel is marked.

Every file is written atomically: the bytes go to a temporary file in the same folder, are
flushed and ``fsync``-ed, and ``os.replace`` moves them into place. The sidecar is written
last and an older sidecar is removed before the image is replaced, so *a sidecar whose
``file`` exists means a complete result*; a killed run never leaves a half file that looks done.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write, atomic_write_text
from ..errors import InvalidInputError, describe

__all__ = ["write_labels", "read_labels", "class_colors", "read_sidecar", "write_sidecar",
           "make_sidecar", "find_sidecar", "sidecar_path", "label_image_path", "output_base",
           "run_hash", "prepare_overwrite", "read_tiff", "label_dtype", "hex_to_rgb",
           "atomic_path", "atomic_write", "atomic_write_text", "FORMAT_VERSION",
           "SIDECAR_SUFFIX", "EDITS_SUFFIX", "edits_path", "read_edits"]

FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".clipseg.json"
#: Suffix of the optional human-edit mask ``NAME.edits.png`` (see the module docstring).
EDITS_SUFFIX = ".edits.png"
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")

#: Options that do not change a result (where it runs, how it is batched or tiled); they are
#: left out of :func:`run_hash` so a resumed run on another machine still skips finished work.
NON_RESULT_OPTIONS = ("device", "cache_dir", "text_cache", "batch_size", "pamr_tile",
                      "max_memory")

# Twenty hand-picked, mutually distinct colors for the first classes; later classes get
# golden-angle hues (see :func:`class_colors`).
_BASE_COLORS = (
    "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
    "#808000", "#ffd8b1", "#000075", "#a9a9a9",
)


# --------------------------------------------------------------------------------------------
# colors
# --------------------------------------------------------------------------------------------
def class_colors(n: int) -> list[str]:
    """Fixed, distinct colors for ``n`` classes, as ``"#rrggbb"`` strings.

    Color ``k`` depends only on ``k`` (class index, 0-based, i.e. label ``k + 1``), so the same
    class index gets the same color in every file, run and napari session.

    Parameters
    ----------
    n : int
        Number of classes, ``>= 0``.

    Returns
    -------
    list of str
        ``n`` colors. The first 20 are a hand-picked palette; later ones step the hue by the
        golden angle with three alternating saturation/value levels.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidInputError(f"class_colors: expected a class count >= 0, got {describe(n)}")
    out: list[str] = []
    for k in range(int(n)):
        if k < len(_BASE_COLORS):
            out.append(_BASE_COLORS[k])
            continue
        j = k - len(_BASE_COLORS)
        hue = (j * 0.618033988749895) % 1.0
        sat, val = ((0.65, 0.95), (0.9, 0.7), (0.45, 0.85))[j % 3]
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def _hex(color: Any, index: int) -> str:
    """Normalise a color (``"#rrggbb"`` or an RGB triple of 0-255 ints / 0-1 floats)."""
    if isinstance(color, str):
        text = color.strip().lower()
        if len(text) == 7 and text[0] == "#" and all(c in "0123456789abcdef" for c in text[1:]):
            return text
    elif isinstance(color, (Sequence, np.ndarray)) and len(color) in (3, 4):
        values = np.asarray(color[:3], dtype=np.float64)
        if np.all(np.isfinite(values)) and values.min() >= 0:
            if values.max() <= 1.0 and np.issubdtype(np.asarray(color).dtype, np.floating):
                values = values * 255.0
            if values.max() <= 255.0:
                return "#" + "".join(f"{round(v):02x}" for v in values)
    raise InvalidInputError(
        f"colors[{index}]: expected '#rrggbb' or an RGB triple, got {describe(color)}")


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b)`` integers in 0-255."""
    text = _hex(color, 0)
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
def output_base(path: str | os.PathLike) -> Path:
    """``NAME`` for any of ``NAME``, ``NAME.png``, ``NAME.tif(f)``, ``NAME.clipseg.json``."""
    p = Path(path)
    if p.name.endswith(SIDECAR_SUFFIX):
        return p.with_name(p.name[: -len(SIDECAR_SUFFIX)])
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return p.with_suffix("")
    return p


def sidecar_path(path: str | os.PathLike) -> Path:
    """The sidecar path ``NAME.clipseg.json`` belonging to ``path`` (see :func:`output_base`)."""
    base = output_base(path)
    return base.with_name(base.name + SIDECAR_SUFFIX)


def edits_path(path: str | os.PathLike) -> Path:
    """The human-edit mask path ``NAME.edits.png`` belonging to ``path``."""
    base = output_base(path)
    return base.with_name(base.name + EDITS_SUFFIX)


def find_sidecar(path: str | os.PathLike) -> Path | None:
    """The existing sidecar of ``path``, or None when there is none (not a clipseg result)."""
    side = sidecar_path(path)
    return side if side.is_file() else None


# --------------------------------------------------------------------------------------------
# sidecar
# --------------------------------------------------------------------------------------------
def _flat_config(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    if hasattr(config, "to_flat"):
        return dict(config.to_flat())
    if isinstance(config, Mapping):
        return dict(config)
    raise InvalidInputError(
        f"config: expected a SegmentConfig or its to_flat() dict, got {describe(config)}")


def run_hash(config: Any, classes: Sequence[Mapping[str, Any]]) -> str:
    """Fingerprint of everything that decides a result: options and classes.

    Parameters
    ----------
    config : SegmentConfig or dict or None
        The run's configuration (flat dict as from ``SegmentConfig.to_flat()``).
    classes : sequence of dict
        Sidecar class entries; only ``name`` and ``synonyms`` (in order) count.

    Returns
    -------
    str
        16 hex digits of a SHA-256 over canonical JSON. Options in
        :data:`NON_RESULT_OPTIONS` are ignored.
    """
    flat = _flat_config(config) or {}
    options = {k: v for k, v in sorted(flat.items()) if k not in NON_RESULT_OPTIONS}
    names = [[c["name"], list(c.get("synonyms", [c["name"]]))] for c in classes]
    blob = json.dumps({"config": options, "classes": names}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def make_sidecar(class_names: Sequence[str], *, colors: Sequence[Any] | None = None,
                 synonyms: Sequence[Sequence[str]] | None = None, model: str | None = None,
                 config: Any = None, image_info: Mapping[str, Any] | None = None,
                 shape: tuple[int, int] | None = None, file: str | None = None,
                 extra: Mapping[str, Any] | None = None,
                 edits: str | None = None) -> dict[str, Any]:
    """Build (and validate) the sidecar dict; see the module docstring for its layout.

    ``edits`` is the file name of the human-edit mask (``"NAME.edits.png"``), or None for a
    result without one (the key is then left out).
    """
    if edits is not None and (not isinstance(edits, str) or not edits.strip()
                              or os.path.basename(edits) != edits):
        raise InvalidInputError(f"edits: expected the file name of the edit mask (no folder), "
                                f"got {describe(edits)}")
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise InvalidInputError(
            f"class_names: expected a list of class names, got {describe(class_names)}")
    names = list(class_names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"class_names[{i}]: expected a non-empty string, "
                                    f"got {describe(name)}")
    if colors is None:
        colors = class_colors(len(names))
    if len(colors) < len(names):
        raise InvalidInputError(
            f"colors: expected one color per class ({len(names)}), got {len(colors)}")
    if synonyms is not None and len(synonyms) != len(names):
        raise InvalidInputError(
            f"synonyms: expected one list per class ({len(names)}), got {len(synonyms)}")
    classes = []
    for k, name in enumerate(names):
        syn = [name]
        if synonyms is not None:
            given = synonyms[k]
            if isinstance(given, str) or not all(isinstance(s, str) and s.strip()
                                                 for s in given):
                raise InvalidInputError(f"synonyms[{k}]: expected a list of non-empty "
                                        f"strings, got {describe(given)}")
            syn += [s for s in given if s != name]
        classes.append({"label": k + 1, "name": name, "synonyms": syn,
                        "color": _hex(colors[k], k)})
    flat = _flat_config(config)
    info = dict(image_info or {})
    if shape is not None:
        info["shape"] = [int(shape[0]), int(shape[1])]
    side: dict[str, Any] = {"version": FORMAT_VERSION}
    if file is not None:
        side["file"] = file
    side.update({"classes": classes, "model": model, "config": flat,
                 "config_hash": run_hash(flat, classes), "image": info})
    if edits is not None:
        side["edits"] = edits
    for key, value in (extra or {}).items():
        if key in side:
            raise InvalidInputError(f"extra: key {key!r} would overwrite a sidecar field")
        side[key] = value
    return side


def write_sidecar(path: str | os.PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Atomically write ``sidecar`` as ``NAME.clipseg.json`` next to ``path``."""
    text = json.dumps(sidecar, indent=2, default=_json_default) + "\n"
    return atomic_write_text(sidecar_path(path), text)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {describe(value)}")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a sidecar (``path`` may be the image, the sidecar or ``NAME``)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise InvalidInputError(
            f"{path}: expected a clipseg result with a sidecar {side.name}, found none "
            "(not a clipseg file, or a run that did not finish)")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{side}: expected a JSON sidecar, could not read it: {exc}") \
            from exc
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        got = meta.get("version") if isinstance(meta, dict) else describe(meta)
        raise InvalidInputError(f"{side}: expected sidecar version {FORMAT_VERSION}, got {got!r}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str)
            and isinstance(c.get("label"), int) for c in classes):
        raise InvalidInputError(f"{side}: expected 'classes' as a list of "
                                f"{{label, name, ...}} entries, got {describe(classes)}")
    edits = meta.get("edits")
    if edits is not None and (not isinstance(edits, str) or os.path.basename(edits) != edits
                              or not edits):
        raise InvalidInputError(f"{side}: expected 'edits' as the file name of the edit mask "
                                f"next to it, got {describe(edits)}")
    return meta


# --------------------------------------------------------------------------------------------
# label images
# --------------------------------------------------------------------------------------------
def _check_labels(labels: Any, n_classes: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InvalidInputError(
            f"labels: expected an (H, W) integer array, got {describe(labels)}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > n_classes):
        raise InvalidInputError(
            f"labels: expected values in 0..{n_classes} (0 = unlabeled, one label per class), "
            f"got range {int(arr.min())}..{int(arr.max())}")
    return arr


def label_dtype(max_label: int) -> np.dtype:
    """Smallest of uint8 / uint16 / uint32 holding ``max_label``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_label <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise InvalidInputError(f"labels: expected at most {np.iinfo(np.uint32).max} classes, "
                            f"got {max_label}")


def _png_palette(colors: Sequence[str]) -> list[int]:
    palette = [0, 0, 0]
    for c in colors[:255]:
        palette.extend(hex_to_rgb(c))
    return palette + [0] * (768 - len(palette))


def _write_png(tmp: Path, labels: np.ndarray, colors: Sequence[str]) -> None:
    from PIL import Image

    arr = np.ascontiguousarray(labels, dtype=np.uint8)
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    img.putpalette(_png_palette(colors))
    # label 0 (unlabeled) is fully transparent; every class opaque
    img.save(tmp, format="PNG", transparency=0, optimize=False)


def _write_tiff(tmp: Path, labels: np.ndarray, tiff_tags: Sequence[tuple] | None = None,
                pixel_size: Mapping[str, float] | None = None) -> None:
    import tifffile

    from .ome import tiff_kwargs

    dtype = label_dtype(int(labels.max()) if labels.size else 0)
    big = labels.shape[0] >= 1024 and labels.shape[1] >= 1024
    tifffile.imwrite(tmp, labels.astype(dtype, copy=False), compression="zlib",
                     tile=(256, 256) if big else None, photometric="minisblack",
                     extratags=list(tiff_tags or ()), **tiff_kwargs(pixel_size))


def _check_edits(edits: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``edits`` as an ``(H, W)`` bool array of ``shape`` (bool, or integers 0/1)."""
    arr = np.asarray(edits)
    if arr.shape != tuple(shape) or not (arr.dtype == bool or np.issubdtype(arr.dtype,
                                                                            np.integer)):
        raise InvalidInputError(f"edits: expected a bool (or 0/1) mask of the labels' shape "
                                f"{tuple(shape)}, got {describe(edits)}")
    if arr.dtype != bool:
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 1):
            raise InvalidInputError(f"edits: expected 0 (machine) or 1 (edited by a person), "
                                    f"got range {int(arr.min())}..{int(arr.max())}")
        arr = arr.astype(bool)
    return arr


def _write_edits_png(tmp: Path, edits: np.ndarray) -> None:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(edits, dtype=bool))  # mode "1": 1 bit a pixel
    img.save(tmp, format="PNG", optimize=False)


def read_edits(path: str | os.PathLike, meta: Mapping[str, Any] | None = None
               ) -> np.ndarray | None:
    """The human-edit mask of result ``path``, or None when it has none.

    Parameters
    ----------
    path : path-like
        The label image, the sidecar or ``NAME``.
    meta : dict, optional
        The sidecar as read by :func:`read_sidecar` (read from ``path`` when not given).

    Returns
    -------
    (H, W) bool ndarray or None
        True where a person set the label (see the module docstring).
    """
    if meta is None:
        meta = read_sidecar(path)
    name = meta.get("edits")
    if name is None:
        return None
    target = output_base(path).parent / name
    if not target.is_file():
        raise InvalidInputError(f"{sidecar_path(path)}: names the edit mask {name}, which is "
                                "missing")
    from PIL import Image

    with Image.open(target) as img:
        if img.mode not in ("1", "L", "P"):
            raise InvalidInputError(f"{target}: expected a 1-bit or 8-bit PNG edit mask, got "
                                    f"mode {img.mode}")
        arr = np.asarray(img)
    mask = _check_edits(arr if arr.dtype == bool else arr.astype(np.uint8), arr.shape)
    shape = meta.get("image", {}).get("shape")
    if shape is not None and list(mask.shape) != list(shape):
        raise InvalidInputError(f"{target}: expected an edit mask of shape {shape} (sidecar), "
                                f"got {tuple(mask.shape)}")
    return mask


def write_labels(path: str | os.PathLike, labels: np.ndarray, class_names: Sequence[str], *,
                 colors: Sequence[Any] | None = None,
                 synonyms: Sequence[Sequence[str]] | None = None, model: str | None = None,
                 config: Any = None, image_info: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None,
                 edits: np.ndarray | None = None,
                 tiff_tags: Sequence[tuple] | None = None,
                 pixel_size: Mapping[str, float] | None = None) -> list[Path]:
    """Write a label image and its sidecar (and the human-edit mask, if any), atomically.

    Parameters
    ----------
    path : path-like
        ``NAME``, ``NAME.png``, ``NAME.tif`` or ``NAME.clipseg.json``. Without a suffix the
        format follows the labels: PNG when the largest label is <= 255, else TIFF. An explicit
        ``.tif``/``.tiff`` is honoured; an explicit ``.png`` with labels > 255 is an error.
    labels : (H, W) integer ndarray
        0 = unlabeled, ``k + 1`` = class ``k``; values must lie in ``0..len(class_names)``.
    class_names : list of str
        The ``K`` class names in label order.
    colors : list of "#rrggbb" or RGB triples, optional
        One per class (default :func:`class_colors`). Used for the PNG palette and the sidecar.
    synonyms : list of list of str, optional
        All prompts of each class; the name is put first if missing.
    model : str, optional
        The model name (registry key).
    config : SegmentConfig or dict, optional
        Stored as ``SegmentConfig.to_flat()``.
    image_info : dict, optional
        Source image facts (``path``, original ``dtype``...); ``shape`` is set to
        ``labels.shape``.
    extra : dict, optional
        More top-level sidecar keys (e.g. ``"scores"``: the per-class scores file name).
    edits : (H, W) bool ndarray, optional
        True where a person set the label. Written as ``NAME.edits.png`` (and named in the
        sidecar) when any pixel is True; None or an all-False mask writes no mask file (an old
        one is removed).
    tiff_tags : list of (code, dtype, count, value, writeonce), optional
        Extra TIFF tags (tifffile ``extratags`` tuples), e.g. a GeoTIFF's georeferencing
        (:meth:`clipseg.formats.geo.GeoReference.label_tags`). Given (even empty), the label
        image is a TIFF whatever the largest label; an explicit ``.png`` is then an error.
    pixel_size : {"y": µm, "x": µm[, "z": µm]}, optional
        The source image's physical pixel size (:mod:`clipseg.formats.ome`), recorded in the
        sidecar as ``"pixel_size"`` and, in a label TIFF, as OME-XML ``PhysicalSizeX/Y`` and
        resolution tags. Given, the label image is a TIFF (so Fiji or QuPath open it at
        scale) unless the name says ``.png``: a PNG cannot carry it, the sidecar still does.

    Returns
    -------
    list of Path
        ``[label image path, sidecar path]``, with the edit mask path between them when one
        is written.
    """
    if pixel_size is not None:
        from .ome import pixel_size_entry

        extra = {**(extra or {}), "pixel_size": pixel_size_entry(pixel_size)}
    meta_probe = make_sidecar(class_names, colors=colors, synonyms=synonyms, model=model,
                              config=config, image_info=image_info, extra=extra)
    arr = _check_labels(labels, len(meta_probe["classes"]))
    mask = _check_edits(edits, arr.shape) if edits is not None else None
    base = output_base(path)
    given = Path(path).suffix.lower()
    max_label = int(arr.max()) if arr.size else 0
    if given in (".tif", ".tiff"):
        image_path = base.with_name(base.name + given)
    elif given == ".png" and tiff_tags is not None:
        raise InvalidInputError(f"{path}: expected a .tif name for labels with TIFF tags "
                                "(e.g. georeferencing), got .png")
    elif tiff_tags is not None or (pixel_size is not None and given != ".png"):
        image_path = base.with_name(base.name + ".tif")
    elif given == ".png" and max_label > 255:
        raise InvalidInputError(f"{path}: expected labels <= 255 for a PNG, got {max_label}; "
                                "write NAME.tif instead")
    else:
        image_path = base.with_name(base.name + (".png" if max_label <= 255 else ".tif"))
    prepare_overwrite(base, keep=image_path)
    colors_hex = [c["color"] for c in meta_probe["classes"]]
    if image_path.suffix == ".png":
        atomic_write(image_path, lambda tmp: _write_png(tmp, arr, colors_hex))
    else:
        atomic_write(image_path, lambda tmp: _write_tiff(tmp, arr, tiff_tags, pixel_size))
    written = [image_path]
    mask_name = None
    if mask is not None and mask.any():
        written.append(atomic_write(edits_path(base), lambda tmp: _write_edits_png(tmp, mask)))
        mask_name = edits_path(base).name
    side = make_sidecar(class_names, colors=colors, synonyms=synonyms, model=model,
                        config=config, image_info=image_info, shape=arr.shape,
                        file=image_path.name, extra=extra, edits=mask_name)
    return written + [write_sidecar(base, side)]


def prepare_overwrite(base: str | os.PathLike, keep: str | os.PathLike | None = None) -> None:
    """Before rewriting result ``NAME``: drop its sidecar, then its edit mask and other-format
    label images.

    Removing the sidecar first keeps the invariant "sidecar present = result complete" while
    the new files are being written; removing the edit mask keeps an old mask from being read
    with new labels.
    """
    base = output_base(base)
    sidecar_path(base).unlink(missing_ok=True)
    edits_path(base).unlink(missing_ok=True)
    for suffix in IMAGE_SUFFIXES:
        other = base.with_name(base.name + suffix)
        if keep is None or other != Path(keep):
            other.unlink(missing_ok=True)


def label_image_path(path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """The label image of result ``path``: the sidecar's ``file``, else ``NAME.png/.tif``."""
    base = output_base(path)
    if meta is not None and isinstance(meta.get("file"), str):
        return base.parent / meta["file"]
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
        return p
    for suffix in IMAGE_SUFFIXES:
        cand = base.with_name(base.name + suffix)
        if cand.is_file():
            return cand
    raise InvalidInputError(f"{path}: expected a label image {base.name}.png or .tif, found none")


def read_labels(path: str | os.PathLike, *, lazy: bool = False) -> tuple[Any, dict[str, Any]]:
    """Read a label image and its sidecar.

    Parameters
    ----------
    path : path-like
        The label image (``NAME.png``/``NAME.tif``), the sidecar or ``NAME``.
    lazy : bool
        For TIFFs, return a read-only array that loads tiles on access (a ``numpy.memmap``
        for uncompressed contiguous files, else a zarr array over the TIFF) instead of
        reading everything. PNGs are always read whole.

    Returns
    -------
    labels : (H, W) uint8/uint16/uint32 ndarray (or lazy array-like of that shape and dtype)
    meta : dict
        The sidecar (see the module docstring), with ``meta["edits"]`` replaced by the
        human-edit mask, an ``(H, W)`` bool ndarray, or None when the result has none, and
        ``meta["edits_file"]`` the mask's file name (or None).
    """
    meta = read_sidecar(path)
    image_path = label_image_path(path, meta)
    if not image_path.is_file():
        raise InvalidInputError(f"{sidecar_path(path)}: names {image_path.name}, which is missing")
    if image_path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(image_path) as img:
            if img.mode not in ("P", "L"):
                raise InvalidInputError(f"{image_path}: expected a palette or 8-bit gray PNG of "
                                        f"labels, got mode {img.mode}")
            labels: Any = np.asarray(img, dtype=np.uint8).copy()
    else:
        labels = read_tiff(image_path, lazy=lazy)
    shape = meta.get("image", {}).get("shape")
    if labels.ndim != 2 or (shape is not None and list(labels.shape) != list(shape)):
        raise InvalidInputError(f"{image_path}: expected labels of shape {shape} (sidecar), "
                                f"got {tuple(labels.shape)}")
    mask = read_edits(path, meta)
    if mask is not None and mask.shape != tuple(labels.shape):
        raise InvalidInputError(f"{edits_path(path)}: expected an edit mask of the labels' shape "
                                f"{tuple(labels.shape)}, got {mask.shape}")
    meta = {**meta, "edits_file": meta.get("edits"), "edits": mask}
    return labels, meta


def read_tiff(path: str | os.PathLike, *, lazy: bool = False) -> Any:
    """Read a single-series TIFF, whole or lazily (memmap when possible, else zarr)."""
    import tifffile

    if not lazy:
        return tifffile.imread(path)
    try:
        return tifffile.memmap(path, mode="r")
    except ValueError:  # compressed or tiled: not memory-mappable; read tiles through zarr
        import zarr

        return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
