"""COCO RLE written out with numpy: hand-worked strings, round trips, streaming strips."""
from __future__ import annotations

import numpy as np
import pytest

from clipseg.errors import InvalidInputError
from clipseg.formats import coco


def _reference_counts(mask):
    """Run lengths by walking the pixels one by one in column-major order."""
    counts, current, run = [], False, 0
    for x in range(mask.shape[1]):
        for y in range(mask.shape[0]):
            v = bool(mask[y, x])
            if v != current:
                counts.append(run)
                current, run = v, 0
            run += 1
    counts.append(run)
    return counts


@pytest.mark.parametrize("counts, text", [([0, 5], "05"), ([3, 40], "3X1"),
                                          ([2, 3, 10, 1], "23:N")])
def test_compressed_strings_worked_by_hand(counts, text):
    # 40 = 0b01000 + (1 << 5): group 8 with the "more" bit (8|32 -> 'X'), then 1 -> '1';
    # the 4th count is stored as 1 - 3 = -2: group 30 (sign bit set, no more) -> 'N'.
    assert coco.compress_counts(counts) == text
    assert coco.decompress_counts(text) == counts


def test_round_trips_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = rng.integers(1, 25, 2)
        mask = rng.random((h, w)) < rng.random()
        rle = coco.rle_encode(mask)
        assert rle["counts"] == _reference_counts(mask)
        assert sum(rle["counts"]) == h * w
        np.testing.assert_array_equal(coco.rle_decode(rle), mask)
        np.testing.assert_array_equal(coco.rle_decode(coco.rle_compress(rle)), mask)


def test_big_counts_and_negative_differences_round_trip():
    counts = [0, 100000, 3, 99999, 1, 5, 70000, 2]
    assert coco.decompress_counts(coco.compress_counts(counts)) == counts


@pytest.mark.parametrize("strip", [1, 7, 10_000])
def test_label_rles_in_strips_equal_whole_masks(strip, monkeypatch):
    monkeypatch.setattr(coco, "STRIP_PIXELS", strip)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (13, 17))
    labels[:, 5:9] = 0
    labels[labels == 2] = 0
    out = coco.label_rles(labels, 3)
    assert sorted(out) == [1, 3]
    for lab, enc in out.items():
        mask = labels == lab
        assert enc["counts"] == _reference_counts(mask)
        ys, xs = np.nonzero(mask)
        assert enc["area"] == mask.sum()
        assert enc["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                               ys.max() - ys.min() + 1]


def test_coco_document_decodes_back_to_the_labels():
    labels = np.zeros((9, 11), np.uint8)
    labels[2:5, 3:8] = 1
    labels[6:, :] = 2
    classes = [{"label": 1, "name": "a", "synonyms": ["a"], "color": "#000001"},
               {"label": 2, "name": "b", "synonyms": ["b", "bee"], "color": "#000002"}]
    doc = coco.coco_document(classes, [("x/img.png", labels)])
    assert doc["images"] == [{"id": 1, "file_name": "x/img.png", "height": 9, "width": 11}]
    assert [c["id"] for c in doc["categories"]] == [1, 2]
    rebuilt = np.zeros_like(labels)
    for ann in doc["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
        rebuilt[coco.rle_decode(ann["segmentation"])] = ann["category_id"]
    np.testing.assert_array_equal(rebuilt, labels)


def test_bad_rle_is_refused():
    with pytest.raises(InvalidInputError, match="summing"):
        coco.rle_decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(InvalidInputError, match="cut short"):
        coco.decompress_counts("X")
