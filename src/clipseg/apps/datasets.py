"""Loaders for the benchmarks of the paper's Table 1, in their standard on-disk layouts.

Every loader yields ``(image (H, W, 3) uint8 RGB, label (H, W) uint8)`` where the label holds
*evaluation ids* ``0..N-1`` and 255 = ignored, after the same mapping the peers apply through
mmsegmentation:

========== ===== ============================================================================
key        N     ground truth -> evaluation ids
========== ===== ============================================================================
voc20      20    VOC ``SegmentationClass``: background 0 -> 255 (ignored), class k -> k - 1
voc21      21    VOC ``SegmentationClass`` as is: 0 = background, 1..20 classes
context59  59    ``SegmentationClassContext``: 0 (background) -> 255, k -> k - 1
context60  60    ``SegmentationClassContext`` as is: 0 = background, 1..59 classes
coco_stuff 171   ``*_labelTrainIds.png`` as is, or raw ``*.png`` (ids 0..181) via the 182 -> 171
                 map that drops COCO's 11 unused thing ids
coco_object 81   ``*_instanceTrainIds.png`` as is (0 = background, 1..80 things), or raw
                 COCO-Stuff ``*.png``: thing -> its rank + 1, stuff -> 0 (background)
ade150     150   ``annotations``: 0 ("other") -> 255, k -> k - 1 (mmseg's reduce_zero_label)
cityscapes 19    ``*_gtFine_labelTrainIds.png`` as is, or ``*_gtFine_labelIds.png`` mapped
                 id -> trainId (everything not among the 19 classes -> 255)
========== ===== ============================================================================

255 stays 255 everywhere. A label value outside what the mapping expects raises
:class:`~clipseg.errors.InvalidInputError` naming the file (a wrong ``--dataset`` choice shows
up at once instead of as a strange score).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import InvalidConfigError, InvalidInputError

__all__ = ["DatasetSpec", "DATASETS", "SegmentationDataset", "open_dataset", "class_names",
           "NAME_VARIANTS", "prompt_classes", "engine_to_dataset_lut", "IGNORE_INDEX"]

IGNORE_INDEX = 255
#: Naming variants of the class lists (``data/classnames/KEY[.VARIANT].txt``).
NAME_VARIANTS: tuple[str, ...] = ("plain", "sclip", "clearclip")
#: Variants whose list for a dataset is another variant's file. ClearCLIP's ``configs/cls_*.txt``
#: equal SCLIP's except on VOC (SCLIP's words without its person / monitor synonyms and, on
#: VOC21, a plain ``background``: ``KEY.clearclip.txt``) and COCO-Object (the plain list).
_SAME_LIST: dict[tuple[str, str], str] = {
    ("clearclip", "coco_object"): "plain",
    **{("clearclip", key): "sclip" for key in ("context59", "context60", "coco_stuff",
                                               "ade150", "cityscapes")},
}
_INVALID = -1


@dataclass(frozen=True)
class DatasetSpec:
    """What one benchmark is and where its files live.

    Attributes
    ----------
    key : str
        Name used by the CLI and the API (``"voc20"``).
    column : str
        Column of the paper's Table 1 (``"V20"``).
    title : str
        Human-readable name.
    num_classes : int
        Evaluated classes N (background included when ``background``).
    background : bool
        Evaluation id 0 is a background class.
    layout : str
        Expected folder layout below the root passed to :func:`open_dataset`.
    """

    key: str
    column: str
    title: str
    num_classes: int
    background: bool
    layout: str


_VOC = ("VOCdevkit/VOC2012 with JPEGImages/ID.jpg, SegmentationClass/ID.png, "
        "ImageSets/Segmentation/SPLIT.txt")
_CTX = ("VOCdevkit/VOC2010 with JPEGImages/ID.jpg, SegmentationClassContext/ID.png (mmseg's "
        "converted labels), ImageSets/SegmentationContext/SPLIT.txt")
_COCO = ("coco_stuff164k with images/SPLIT2017/NAME.jpg and annotations/SPLIT2017/"
         "NAME_labelTrainIds.png or NAME.png (COCO-Stuff stuffthingmaps)")
_COCO_OBJ = ("coco_stuff164k with images/SPLIT2017/NAME.jpg and annotations/SPLIT2017/"
             "NAME_instanceTrainIds.png or NAME.png (COCO-Stuff stuffthingmaps)")
_ADE = ("ADEChallengeData2016 with images/validation/NAME.jpg and "
        "annotations/validation/NAME.png (split 'val' = 'validation')")
_CITY = ("cityscapes with leftImg8bit/SPLIT/CITY/NAME_leftImg8bit.png and gtFine/SPLIT/CITY/"
         "NAME_gtFine_labelTrainIds.png or NAME_gtFine_labelIds.png")

DATASETS: dict[str, DatasetSpec] = {s.key: s for s in (
    DatasetSpec("voc20", "V20", "Pascal VOC 2012 (20 classes, no background)", 20, False, _VOC),
    DatasetSpec("voc21", "V21", "Pascal VOC 2012 (20 classes + background)", 21, True, _VOC),
    DatasetSpec("context59", "C59", "Pascal Context (59 classes, no background)", 59, False,
                _CTX),
    DatasetSpec("context60", "C60", "Pascal Context (59 classes + background)", 60, True, _CTX),
    DatasetSpec("coco_stuff", "STUFF", "COCO-Stuff 164k (171 classes)", 171, False, _COCO),
    DatasetSpec("coco_object", "COCO", "COCO-Object (80 classes + background)", 81, True,
                _COCO_OBJ),
    DatasetSpec("ade150", "A150", "ADE20K (150 classes)", 150, False, _ADE),
    DatasetSpec("cityscapes", "CITY", "Cityscapes (19 classes)", 19, False, _CITY),
)}

# COCO-Stuff stuffthingmaps ids (0-based) that no annotation uses: the 11 unused thing slots.
_COCO_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
# Cityscapes labelId -> trainId for the 19 evaluated classes (all other ids are ignored).
_CITY_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                   24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def _lut(pairs: dict[int, int]) -> np.ndarray:
    """``(256,)`` int16 lookup table; unmapped values are invalid (-1)."""
    table = np.full(256, _INVALID, dtype=np.int16)
    for src, dst in pairs.items():
        table[src] = dst
    return table


def _identity(n: int) -> np.ndarray:
    return _lut({**{i: i for i in range(n)}, IGNORE_INDEX: IGNORE_INDEX})


def _reduce_zero(n: int) -> np.ndarray:
    return _lut({0: IGNORE_INDEX, **{i: i - 1 for i in range(1, n + 1)},
                 IGNORE_INDEX: IGNORE_INDEX})


def coco_stuff_lut() -> np.ndarray:
    """Raw COCO-Stuff id (0..181) -> 171-class id; unused ids invalid, 255 kept."""
    used = [i for i in range(182) if i not in _COCO_UNUSED]
    return _lut({**{src: dst for dst, src in enumerate(used)}, IGNORE_INDEX: IGNORE_INDEX})


def coco_object_lut() -> np.ndarray:
    """Raw COCO-Stuff id -> COCO-Object id: 80 things -> 1..80, 91 stuff -> 0, 255 kept."""
    things = [i for i in range(91) if i not in _COCO_UNUSED]
    pairs = {src: dst + 1 for dst, src in enumerate(things)}
    pairs.update({i: 0 for i in range(91, 182)})
    pairs[IGNORE_INDEX] = IGNORE_INDEX
    return _lut(pairs)


def cityscapes_lut() -> np.ndarray:
    """Cityscapes labelId (0..33) -> trainId (0..18), everything else 255."""
    pairs = {i: _CITY_TRAIN_IDS.get(i, IGNORE_INDEX) for i in range(34)}
    pairs[IGNORE_INDEX] = IGNORE_INDEX
    return _lut(pairs)


@dataclass(frozen=True)
class _Item:
    name: str
    image: Path
    label: Path
    lut: str  # key into SegmentationDataset._luts


def _need_dir(path: Path, spec: DatasetSpec) -> Path:
    if not path.is_dir():
        raise InvalidInputError(
            f"{spec.key}: expected the folder {path} (layout: {spec.layout}), but it does not "
            "exist; pass the dataset root that contains it")
    return path


def _read_list(path: Path, spec: DatasetSpec) -> list[str]:
    if not path.is_file():
        raise InvalidInputError(f"{spec.key}: expected the image list {path} (layout: "
                                f"{spec.layout}), but it does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _voc_items(root: Path, spec: DatasetSpec, split: str, year: str, labels: str,
               sets: str, lut: str) -> list[_Item]:
    nested = root / "VOCdevkit" / f"VOC{year}"
    root = nested if nested.is_dir() else root
    _need_dir(root / "JPEGImages", spec)
    _need_dir(root / labels, spec)
    ids = _read_list(root / "ImageSets" / sets / f"{split}.txt", spec)
    return [_Item(i, root / "JPEGImages" / f"{i}.jpg", root / labels / f"{i}.png", lut)
            for i in ids]


def _coco_items(root: Path, spec: DatasetSpec, split: str, suffix: str, raw_lut: str,
                converted_lut: str) -> list[_Item]:
    images = _need_dir(root / "images" / f"{split}2017", spec)
    labels = _need_dir(root / "annotations" / f"{split}2017", spec)
    items = []
    for img in sorted(images.glob("*.jpg")):
        converted = labels / f"{img.stem}{suffix}"
        if converted.is_file():
            items.append(_Item(img.stem, img, converted, converted_lut))
        else:
            items.append(_Item(img.stem, img, labels / f"{img.stem}.png", raw_lut))
    return items


def _ade_items(root: Path, spec: DatasetSpec, split: str) -> list[_Item]:
    folder = {"val": "validation", "train": "training"}.get(split, split)
    images = _need_dir(root / "images" / folder, spec)
    labels = _need_dir(root / "annotations" / folder, spec)
    return [_Item(p.stem, p, labels / f"{p.stem}.png", "reduce_zero")
            for p in sorted(images.glob("*.jpg"))]


def _city_items(root: Path, spec: DatasetSpec, split: str) -> list[_Item]:
    images = _need_dir(root / "leftImg8bit" / split, spec)
    labels = _need_dir(root / "gtFine" / split, spec)
    items = []
    for img in sorted(images.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        city = img.parent.name
        train = labels / city / f"{stem}_gtFine_labelTrainIds.png"
        if train.is_file():
            items.append(_Item(stem, img, train, "identity"))
        else:
            items.append(_Item(stem, img, labels / city / f"{stem}_gtFine_labelIds.png",
                               "cityscapes"))
    return items


class SegmentationDataset(Sequence):
    """A benchmark split on disk; ``dataset[i] -> (image (H,W,3) uint8, label (H,W) uint8)``.

    Build it with :func:`open_dataset`. Files are read lazily, one item at a time.

    Attributes
    ----------
    spec : DatasetSpec
    root : pathlib.Path
    split : str
    names : list of str
        Item names (file stems), in order.
    """

    def __init__(self, spec: DatasetSpec, root: Path, split: str, items: list[_Item]) -> None:
        self.spec = spec
        self.root = root
        self.split = split
        self._items = items
        self.names = [item.name for item in items]
        n = spec.num_classes
        self._luts = {
            "identity": _identity(n),
            "reduce_zero": _reduce_zero(n),
            "coco_stuff": coco_stuff_lut(),
            "coco_object": coco_object_lut(),
            "cityscapes": cityscapes_lut(),
        }

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        if isinstance(index, slice):
            raise InvalidInputError("dataset: expected an integer index, got a slice")
        item = self._items[index]
        return self.load_image(item.image), self.load_label(index)

    @staticmethod
    def load_image(path: Path) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB of an image file."""
        from PIL import Image

        if not path.is_file():
            raise InvalidInputError(f"expected the image file {path}, but it does not exist")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    def load_label(self, index: int) -> np.ndarray:
        """``(H, W)`` uint8 evaluation ids (255 = ignore) of item ``index``."""
        from PIL import Image

        item = self._items[index]
        if not item.label.is_file():
            raise InvalidInputError(f"{self.spec.key}: expected the label file {item.label} for "
                                    f"image {item.image.name}, but it does not exist")
        with Image.open(item.label) as im:
            if im.mode not in ("P", "L"):
                raise InvalidInputError(
                    f"{item.label}: expected an 8-bit class-id PNG (mode 'P' or 'L'), got mode "
                    f"{im.mode!r}; color-coded label images are not class ids")
            raw = np.asarray(im, dtype=np.uint8)
        mapped = self._luts[item.lut][raw]
        if (mapped == _INVALID).any():
            bad = np.unique(raw[mapped == _INVALID])[:10].tolist()
            raise InvalidInputError(
                f"{item.label}: unexpected label value(s) {bad} for {self.spec.key} "
                f"({self.spec.title}); is this the right dataset?")
        return mapped.astype(np.uint8)

    def class_names(self, variant: str = "plain") -> list[str]:
        """Class list of this dataset (see :func:`class_names`)."""
        return class_names(self.spec.key, variant)


def open_dataset(key: str, root: str | Path, split: str = "val") -> SegmentationDataset:
    """Open benchmark ``key`` (one of :data:`DATASETS`) stored below ``root``.

    Parameters
    ----------
    key : str
        ``voc20``, ``voc21``, ``context59``, ``context60``, ``coco_stuff``, ``coco_object``,
        ``ade150`` or ``cityscapes``.
    root : str or Path
        The dataset folder (see :attr:`DatasetSpec.layout`; for VOC and Context the folder
        that holds ``VOCdevkit`` works too).
    split : str
        ``val`` (the benchmarks' evaluation split) or another split present on disk.

    Raises
    ------
    InvalidConfigError
        Unknown ``key``.
    InvalidInputError
        Missing folders or list files, or no images found.
    """
    spec = get_spec(key)
    root = Path(root).expanduser()
    if spec.key in ("voc20", "voc21"):
        items = _voc_items(root, spec, split, "2012", "SegmentationClass", "Segmentation",
                           "identity" if spec.background else "reduce_zero")
    elif spec.key in ("context59", "context60"):
        items = _voc_items(root, spec, split, "2010", "SegmentationClassContext",
                           "SegmentationContext",
                           "identity" if spec.background else "reduce_zero")
    elif spec.key == "coco_stuff":
        items = _coco_items(root, spec, split, "_labelTrainIds.png", "coco_stuff", "identity")
    elif spec.key == "coco_object":
        items = _coco_items(root, spec, split, "_instanceTrainIds.png", "coco_object",
                            "identity")
    elif spec.key == "ade150":
        items = _ade_items(root, spec, split)
    else:
        items = _city_items(root, spec, split)
    if not items:
        raise InvalidInputError(f"{spec.key}: expected images below {root} (layout: "
                                f"{spec.layout}), found none")
    return SegmentationDataset(spec, root, split, items)


def get_spec(key: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``key``; unknown keys raise InvalidConfigError."""
    if key not in DATASETS:
        raise InvalidConfigError(f"dataset: expected one of {', '.join(DATASETS)}, got {key!r}")
    return DATASETS[key]


def class_names(key: str, variant: str = "plain") -> list[str]:
    """Class list of dataset ``key``: one entry per evaluation id, synonyms joined by ``"; "``.

    Parameters
    ----------
    key : str
        Dataset key.
    variant : {"plain", "sclip", "clearclip"}
        ``plain``: the dataset's names as words; ``sclip``: the synonym lists SCLIP and NACLIP
        publish; ``clearclip``: ClearCLIP's lists (``data/classnames/README.md``).
    """
    spec = get_spec(key)
    if variant not in NAME_VARIANTS:
        raise InvalidConfigError(f"names: expected one of {', '.join(NAME_VARIANTS)}, "
                                 f"got {variant!r}")
    variant = _SAME_LIST.get((variant, key), variant)
    fname = f"{key}.txt" if variant == "plain" else f"{key}.{variant}.txt"
    text = resources.files("clipseg.apps").joinpath("data", "classnames", fname).read_text("utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != spec.num_classes:  # a packaging error, not user input
        raise InvalidConfigError(f"class list {fname}: expected {spec.num_classes} lines, "
                                 f"got {len(lines)}")
    return lines


def prompt_classes(key: str, variant: str = "plain",
                   background_prompt: bool = True) -> tuple[list[str], list[int]]:
    """Classes to prompt the model with and the evaluation id of each.

    For a dataset with a background class, ``background_prompt=False`` leaves the background
    line out (background then comes only from the probability threshold, as in TCL).

    Returns
    -------
    names : list of str
        Class lines (synonyms separated by ``;``), in prompt order.
    ids : list of int
        ``ids[i]`` = evaluation id of ``names[i]``.
    """
    spec = get_spec(key)
    lines = class_names(key, variant)
    ids = list(range(spec.num_classes))
    if spec.background and not background_prompt:
        return lines[1:], ids[1:]
    return lines, ids


def engine_to_dataset_lut(ids: Sequence[int], spec: DatasetSpec) -> np.ndarray:
    """Map the engine's labels to evaluation ids.

    The engine gives label 0 to pixels under the probability threshold and ``i + 1`` to
    prompted class ``i``. Label 0 becomes the background id 0 on datasets with a background
    class, and "no class" (``N``, a miss in :mod:`clipseg.apps.metrics`) on the others.

    Returns
    -------
    numpy.ndarray
        ``(len(ids) + 1,)`` int64 table: ``dataset_ids = table[engine_labels]``.
    """
    table = np.empty(len(ids) + 1, dtype=np.int64)
    table[0] = 0 if spec.background else spec.num_classes
    table[1:] = np.asarray(ids, dtype=np.int64)
    return table
