"""``clipseg calibrate``: its command-line arguments and the command, apart from the computation.

Kept light (no torch at import) so ``clipseg calibrate --help`` answers at once; the work is in
:mod:`clipseg.apps.calibrate`, imported when the command runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidConfigError, InvalidInputError
from .calibrate_kinds import KINDS
from .cliopts import add_channels_argument, channel_choice

if TYPE_CHECKING:
    import numpy as np

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _read_array(path: Path) -> np.ndarray:
    import numpy as np  # not at import: `clipseg --help` stays fast

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        return np.asarray(tifffile.imread(path))
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im)


def _read_image(path: Path, channels: Any) -> np.ndarray:
    """An image as stored, or with ``--channels`` its chosen channels as RGB (names and dye
    presets matched against the file's channel names, as in ``clipseg segment``)."""
    if channels is None:
        return _read_array(path)
    from .largeimage import open_image

    with open_image(path, channels=channels) as source:
        return source.read()


def _pair_name(path: Path) -> str:
    """The name an image and its mask share: the stem, less an OME ``.ome`` (``a.ome.tif``
    goes with ``a.png``, ``a.ome.png`` or ``a.tif``)."""
    stem = path.stem
    return stem[:-4] if stem.lower().endswith(".ome") else stem


def read_pairs(image_dir: Path, mask_dir: Path, channels: Any = None
               ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Images and masks matched by name (``a.jpg`` with ``a.png``/``a.tif``, ``a.ome.tif``
    with ``a.png``: :func:`_pair_name`); ``channels``: a :class:`clipseg.channels.ChannelChoice`
    applied to every image."""
    for folder in (image_dir, mask_dir):
        if not Path(folder).is_dir():
            raise InvalidInputError(f"expected a folder, got {folder}")
    masks = {_pair_name(p): p for p in sorted(Path(mask_dir).iterdir())
             if p.suffix.lower() in _IMAGE_EXT}
    images, labels, names = [], [], []
    unmatched = []
    for path in sorted(Path(image_dir).iterdir()):
        if path.suffix.lower() not in _IMAGE_EXT:
            continue
        name = _pair_name(path)
        if name not in masks:
            unmatched.append(path.name)
            continue
        images.append(_read_image(path, channels))
        labels.append(_read_array(masks[name]))
        names.append(name)
    if not images:
        seen = (f" (images such as {', '.join(unmatched[:3])}; masks such as "
                f"{', '.join(p.name for p in list(masks.values())[:3]) or 'none'})"
                if unmatched else "")
        raise InvalidInputError(f"expected images in {image_dir} with a mask of the same name "
                                f"in {mask_dir}, found no such pairs{seen}; name each mask "
                                "after its image (a.jpg -> a.png)")
    return images, labels, names


def add_subparser(subparsers: Any) -> None:
    """Register ``clipseg calibrate`` on the ``clipseg`` command's subparsers."""
    p = subparsers.add_parser(
        "calibrate", help="choose the middle layer M on your own labelled images",
        description="Per-layer coherence (AUROC of patch-pair similarity predicting 'same "
        "class') of keys, queries, values and block outputs; suggests M and can save a named "
        "model profile usable as --model NAME and in the widget.")
    p.add_argument("--model", default="ViT-B-16/openai")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="auto")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of images (masks matched by name)")
    src.add_argument("--data", metavar="KEY=ROOT", help="a benchmark (see clipseg evaluate)")
    p.add_argument("--masks", type=Path, help="folder of integer label images (with --images)")
    p.add_argument("--ignore", type=int, nargs="+", default=None,
                   help="mask values that are not classes (default 0; 255 with --data)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    add_channels_argument(p)
    p.add_argument("--short-side", type=int, default=None)
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--pairs", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, metavar="N")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="save model + best layer + window as a profile named NAME")
    p.add_argument("-o", "--output", type=Path, default=Path("clipseg-calibrate"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..config import ModelConfig
    from ..models import load_model
    from .calibrate import calibrate

    if args.limit is not None and args.limit < 1:
        raise InvalidConfigError(f"--limit: expected a positive integer, got {args.limit}")
    channels = channel_choice(args)
    if args.data is not None:
        if channels is not None:
            raise InvalidConfigError("--channels: expected image files (--images), got a "
                                     "benchmark (--data), whose images are RGB already")
        from .datasets import open_dataset
        key, sep, root = args.data.partition("=")
        if not sep or not root:
            raise InvalidConfigError(f"--data: expected KEY=ROOT, got {args.data!r}")
        dataset = open_dataset(key, root)
        count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        images, masks = map(list, zip(*(dataset[i] for i in range(count))))
        ignore = args.ignore if args.ignore is not None else [255]
    else:
        if args.masks is None:
            raise InvalidConfigError("--masks: expected a folder of label images with --images, "
                                     "got none")
        images, masks, _ = read_pairs(args.images, args.masks, channels)
        images, masks = images[: args.limit], masks[: args.limit]
        ignore = args.ignore if args.ignore is not None else [0]
    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else None
    loaded = load_model(ModelConfig(model=args.model, pretrained=args.pretrained,
                                    checkpoint=checkpoint, device=args.device))
    report = calibrate(loaded, images, masks, kinds=args.kinds, short_side=args.short_side,
                       crop=args.crop, pairs=args.pairs, ignore=ignore, seed=args.seed,
                       progress=not args.quiet)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n",
                                          encoding="utf-8")
    (out / "calibration.md").write_text(report.to_markdown(), encoding="utf-8")
    report.plot(out / "calibration.png")
    print(report.to_markdown())
    if args.profile:
        path = report.save_profile(args.profile, checkpoint=checkpoint)
        print(f"saved profile {args.profile!r} to {path}; use it with --model {args.profile}")
    print(f"wrote {out / 'calibration.json'}, calibration.md and calibration.png",
          file=sys.stderr)
    return 0
