"""Instances from semantic masks: connected components, min_area, watershed on touching discs."""
import numpy as np
import pytest

pytest.importorskip("skimage")

from clipseg.errors import InvalidInputError
from clipseg.instances import instance_map, split_instances


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def touching_pair(shape=(60, 90)):
    """Two radius-12 discs whose centres are 22 px apart: they overlap in a narrow neck."""
    return disc(shape, (30, 30), 12) | disc(shape, (30, 52), 12)


def test_separate_discs_are_counted_with_their_areas_and_raster_ids():
    mask = disc((50, 80), (25, 60), 10) | disc((50, 80), (10, 12), 6)
    objects = split_instances(mask)
    assert objects.dtype == np.int32 and objects.shape == mask.shape
    assert objects.max() == 2
    # raster order: the disc whose first row comes first (the small one at row 4) is 1
    assert objects[10, 12] == 1 and objects[25, 60] == 2
    assert (objects == 1).sum() == disc((50, 80), (10, 12), 6).sum()
    assert (objects == 2).sum() == disc((50, 80), (25, 60), 10).sum()
    assert ((objects > 0) == mask).all()


def test_min_area_drops_small_objects_and_renumbers():
    mask = disc((50, 80), (25, 60), 10) | disc((50, 80), (10, 12), 6)
    mask[45, 2] = True  # a one-pixel speck
    assert split_instances(mask).max() == 3
    small = int(disc((50, 80), (10, 12), 6).sum())
    kept = split_instances(mask, min_area=small + 1)
    assert kept.max() == 1 and kept[25, 60] == 1 and kept[10, 12] == 0 and kept[45, 2] == 0
    assert split_instances(mask, min_area=2).max() == 2


def test_touching_discs_merge_as_components_and_separate_with_the_watershed():
    mask = touching_pair()
    assert split_instances(mask).max() == 1
    objects = split_instances(mask, watershed=True)
    assert objects.max() == 2
    assert objects[30, 30] != objects[30, 52]
    assert ((objects > 0) == mask).all()  # the watershed covers the mask, no pixel lost
    areas = sorted(np.bincount(objects.ravel())[1:].tolist())
    one = int(disc((60, 90), (30, 30), 12).sum())
    # each half is about one disc less half the lens where they overlap
    assert abs(areas[0] - areas[1]) <= 12
    assert sum(areas) == int(mask.sum()) and one - 40 < areas[0] <= one


def test_the_watershed_does_not_split_a_single_disc_or_drop_a_tiny_object():
    mask = disc((60, 60), (30, 30), 15)
    mask[0, 59] = True
    objects = split_instances(mask, watershed=True)
    assert objects.max() == 2 and objects[0, 59] > 0


def test_an_explicit_min_distance_larger_than_the_gap_keeps_the_pair_together():
    assert split_instances(touching_pair(), watershed=True, min_distance=30).max() == 1


def test_instance_map_gives_unique_ids_across_classes_and_their_owner():
    labels = np.zeros((60, 90), np.uint8)
    labels[touching_pair()] = 2
    labels[disc((60, 90), (8, 80), 5)] = 3
    labels[disc((60, 90), (50, 80), 5)] = 3
    labels[:5, :20] = 1  # stuff: never split
    instances, owner = instance_map(labels, [3, 2], watershed=True)
    assert instances.dtype == np.int32
    assert instances.max() == 4 and owner.tolist() == [0, 3, 3, 2, 2]
    assert (owner[instances] == np.where(np.isin(labels, [2, 3]), labels, 0)).all()
    assert instances[2, 2] == 0
    # a thing label that does not occur adds nothing
    again, owner2 = instance_map(labels, [7, 3])
    assert again.max() == 2 and owner2.tolist() == [0, 3, 3]


def test_empty_and_bad_input_say_what_was_expected():
    assert split_instances(np.zeros((4, 5), bool)).max() == 0
    with pytest.raises(InvalidInputError, match=r"expected an \(H, W\) bool or integer"):
        split_instances(np.zeros((4, 5, 3), bool))
    with pytest.raises(InvalidInputError, match="bool or integer"):
        split_instances(np.zeros((4, 5), np.float32))
    with pytest.raises(InvalidInputError, match="min_area: expected an integer >= 0"):
        split_instances(np.zeros((4, 5), bool), min_area=-1)
    with pytest.raises(InvalidInputError, match="min_distance: expected an integer >= 1"):
        split_instances(np.ones((4, 5), bool), watershed=True, min_distance=0)
    with pytest.raises(InvalidInputError, match="integer label map"):
        instance_map(np.zeros((4, 5), np.float32), [1])
    with pytest.raises(InvalidInputError, match="thing_labels: expected an integer >= 1"):
        instance_map(np.zeros((4, 5), np.uint8), [0])
