"""Lesion targets (readout lesions mapped to display slices) and per-slice areas."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.inference.readouts import compute_readouts
from medseg.io import Volume
from medseg.viewer.core import navigation, render


@pytest.mark.parametrize("flip", [False, True])
def test_lesion_targets_follow_display_orientation(flip: bool) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    if flip:  # store the same anatomy flipped along i and j (LPS)
        affine = np.array([[-1.0, 0, 0, 19], [0, -1.0, 0, 15], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    label = np.zeros((20, 16, 12), np.uint8)
    big = (slice(2, 8), slice(3, 9), slice(1, 5))
    small = (slice(14, 16), slice(10, 12), slice(8, 9))
    if flip:
        big = (slice(12, 18), slice(7, 13), big[2])
        small = (slice(4, 6), slice(4, 6), small[2])
    label[big] = 1
    label[small] = 2
    vol = Volume(label, affine)
    readouts = compute_readouts(vol, ["background", "core", "oedema"])
    shown = render.to_display(vol)
    targets = navigation.lesion_targets(readouts["lesions"], vol.affine, shown.affine, shown.shape)
    assert [t.class_name for t in targets] == ["core", "oedema"]  # largest first
    core, oedema = targets
    assert core.slice_range("axial") == (1, 4)
    assert oedema.slice_range("axial") == (8, 8)
    assert oedema.slice_for("axial") == 8
    for target in targets:  # the centre lies inside the lesion in display space
        assert shown.array[target.centre] == target.label
    assert navigation.neighbour_lesion(targets, "axial", 0, +1) is core
    assert navigation.neighbour_lesion(targets, "axial", 3, +1) is oedema
    assert navigation.neighbour_lesion(targets, "axial", 10, +1) is core  # wraps around
    assert navigation.neighbour_lesion(targets, "axial", 8, -1) is core
    assert navigation.neighbour_lesion([], "axial", 0, 1) is None


def test_slice_areas_in_mm2() -> None:
    label = np.zeros((10, 10, 4), np.uint8)
    label[0:2, 0:3, 1] = 1
    label[5, 5, 2] = 2
    areas = navigation.slice_areas_mm2(label, (0.5, 2.0, 3.0), "axial")
    assert areas.tolist() == [0.0, 6.0, 1.0, 0.0]  # 6 px * 0.5 * 2.0 mm^2
    only_two = navigation.slice_areas_mm2(label, (0.5, 2.0, 3.0), "axial", include=[2])
    assert only_two.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert navigation.slice_areas_mm2(label, (0.5, 2.0, 3.0), "sagittal").shape == (10,)


@pytest.mark.parametrize(
    ("dtype", "values"),
    [(np.uint8, (0, 1, 2, 5)), (np.uint16, (0, 3, 40, 900)), (np.int16, (-1, 0, 2)),
     (np.float32, (0.0, 1.0, 2.0))],
)  # fmt: skip
def test_fast_label_mask_and_present_labels_match_numpy(dtype, values) -> None:
    from medseg.viewer.core.navigation import label_mask
    from medseg.viewer.core.state import present_labels

    rng = np.random.default_rng(0)
    labels = np.asfortranarray(rng.choice(np.array(values, dtype), size=(9, 8, 7)))
    expected = [int(v) for v in np.unique(labels) if v > 0]
    assert present_labels(labels) == expected
    for keep in (expected, expected[:1], [7, *expected[-1:]]):
        np.testing.assert_array_equal(label_mask(labels, keep), np.isin(labels, keep))
