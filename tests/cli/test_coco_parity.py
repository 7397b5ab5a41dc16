"""clipseg's own COCO RLE against pycocotools (the reference implementation), mask by mask."""
from __future__ import annotations

import numpy as np
import pytest

from clipseg.formats import coco

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools is in the test extra")


def _reference(mask: np.ndarray) -> dict:
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _masks() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    out = [("empty", np.zeros((5, 7), bool)), ("full", np.ones((5, 7), bool)),
           ("first pixel", np.eye(1, 35, 0, dtype=bool).reshape(5, 7, order="F")),
           ("last pixel", np.eye(1, 35, 34, dtype=bool).reshape(5, 7, order="F")),
           ("middle pixel", np.pad(np.ones((1, 1), bool), ((2, 2), (3, 3)))),
           ("1 x 1 set", np.ones((1, 1), bool)), ("1 x 1 empty", np.zeros((1, 1), bool)),
           ("row", rng.random((1, 61)) > 0.5), ("column", rng.random((61, 1)) > 0.5),
           ("checkerboard", (np.indices((9, 11)).sum(0) % 2).astype(bool)),
           ("long runs", np.pad(np.ones((300, 200), bool), ((0, 0), (0, 157)))),
           # counts far above 2^5 and differences of both signs
           ("big blocks", np.kron(rng.random((6, 5)) > 0.5, np.ones((97, 131), bool)))]
    for i, (h, w) in enumerate([(3, 5), (17, 13), (64, 48), (101, 7), (2, 255)]):
        for density in (0.02, 0.5, 0.98):
            out.append((f"random {h}x{w} p={density} #{i}", rng.random((h, w)) < density))
    return out


MASKS = _masks()


@pytest.mark.parametrize("name, mask", MASKS, ids=[m[0] for m in MASKS])
def test_compressed_rle_equals_pycocotools(name, mask):
    ref = _reference(mask)
    ours = coco.rle_compress(coco.rle_encode(mask))
    assert ours == ref
    # and each side decodes the other's
    assert np.array_equal(coco.rle_decode(ref), mask)
    back = mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode("ascii")})
    assert np.array_equal(back.astype(bool), mask)
    # pycocotools' uncompressed counts (frPyObjects) compress to the same string
    py = mask_api.frPyObjects(coco.rle_encode(mask), *mask.shape)
    assert py["counts"].decode("ascii") == ours["counts"]


@pytest.mark.parametrize("layout", ["C", "F", "strided", "uint8", "int64"])
def test_memory_layout_and_dtype_do_not_change_the_encoding(layout):
    mask = np.random.default_rng(3).random((23, 31)) > 0.6
    given = {"C": np.ascontiguousarray(mask), "F": np.asfortranarray(mask),
             "strided": np.repeat(np.repeat(mask, 2, 0), 2, 1)[::2, ::2],
             "uint8": mask.astype(np.uint8) * 7, "int64": mask.astype(np.int64)}[layout]
    assert np.array_equal(given != 0, mask)
    assert coco.rle_compress(coco.rle_encode(given)) == _reference(mask)


@pytest.mark.parametrize("strip", [1, 3, 1 << 22])
def test_label_image_annotations_equal_pycocotools(strip, monkeypatch):
    """Per-class RLE, area and bbox of a whole label image, read in column strips."""
    monkeypatch.setattr(coco, "STRIP_PIXELS", strip * 37)  # strip columns of a 37-row image
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, (37, 53)).astype(np.uint8)
    labels[:, :10] = 2            # class 2 starts in the first strip
    labels[labels == 4] = 0       # class 4 absent
    labels[-1, -1] = 3            # class 3 present in the last pixel
    classes = [{"label": k + 1, "name": f"c{k}"} for k in range(4)]
    doc = coco.coco_document(classes, [("a.png", labels)])
    by_id = {a["category_id"]: a for a in doc["annotations"]}
    assert sorted(by_id) == [1, 2, 3]
    for lab, ann in by_id.items():
        mask = labels == lab
        ref = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ann["segmentation"]["counts"] == ref["counts"].decode("ascii")
        assert ann["segmentation"]["size"] == [37, 53]
        assert ann["area"] == int(mask_api.area(ref))
        assert ann["bbox"] == [int(v) for v in mask_api.toBbox(ref)]
