"""Readouts (mL, lesions, longest axial diameter) and post-processing on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.inference import PostprocessConfig, compute_readouts, lesion_table, postprocess_labels
from medseg.inference.readouts import axial_axis, find_lesions
from medseg.io.volume import Volume

NAMES = ["background", "tumour", "oedema"]


def _lps_volume(array: np.ndarray, spacing=(0.5, 0.8, 3.0)) -> Volume:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    return Volume(array, affine, {"source": "mask"})


def test_volume_and_longest_axial_diameter_by_hand():
    label = np.zeros((30, 30, 6), np.uint8)
    label[5:15, 10:14, 2:4] = 1  # 10 x 4 voxels in-plane on 2 slices
    vol = _lps_volume(label)
    read = compute_readouts(vol, NAMES)
    assert read["classes"]["tumour"]["volume_ml"] == pytest.approx(80 * 0.5 * 0.8 * 3.0 / 1000)
    (lesion,) = read["lesions"]
    # outer voxel edges: 10 * 0.5 mm by 4 * 0.8 mm -> diagonal
    assert lesion["longest_axial_diameter_mm"] == pytest.approx(math.hypot(5.0, 3.2), abs=1e-3)
    assert lesion["slice_range"] == [2, 3]
    assert lesion["bbox_voxel"] == [[5, 10, 2], [14, 13, 3]]
    # centroid: voxel (9.5, 11.5, 2.5) through the LPS-stored affine
    assert lesion["centroid_ras_mm"] == pytest.approx([10 - 4.75, 20 - 9.2, -30 + 7.5])
    lo, hi = lesion["bbox_ras_mm"]
    assert hi[0] - lo[0] == pytest.approx(5.0)
    assert hi[2] - lo[2] == pytest.approx(6.0)
    assert read["classes"]["oedema"]["lesions"] == 0


def test_diameter_uses_the_axial_plane_when_s_is_not_the_last_axis():
    # array axis 0 points superior: the axial plane is spanned by axes 1 and 2
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    label = np.zeros((8, 20, 20), np.uint8)
    label[3, 2:8, 5:6] = 1  # 6 x 1 voxels in the axial plane, one slice
    assert axial_axis(affine) == 0
    (lesion,) = find_lesions(label, affine, NAMES)
    assert lesion.longest_axial_diameter_mm == pytest.approx(math.hypot(6.0, 1.0), abs=1e-3)
    assert lesion.diameter_slice == 3


def test_lesions_sorted_and_table():
    label = np.zeros((20, 20, 20), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    label[10:15, 10:15, 10:15] = 1
    label[2:4, 15:18, 2:4] = 2
    table = lesion_table(_lps_volume(label, (1, 1, 1)), NAMES)
    assert list(table["class_name"]) == ["tumour", "tumour", "oedema"]
    assert list(table["index"]) == [1, 2, 1]
    assert list(table["voxels"]) == [125, 8, 12]


def test_postprocess_largest_component_and_min_volume():
    label = np.zeros((20, 20, 20), np.uint8)
    label[1:3, 1:3, 1:3] = 1  # 8 voxels = 0.008 mL at 1 mm
    label[10:15, 10:15, 10:15] = 1  # 125 voxels
    label[2:4, 15:18, 2:4] = 2  # 12 voxels
    out, stats = postprocess_labels(label, 0.001, PostprocessConfig(largest_component=True))
    assert (out == 1).sum() == 125
    assert (out == 2).sum() == 12
    assert stats == {"removed_components": 1, "removed_voxels": 8}
    out, stats = postprocess_labels(label, 0.001, PostprocessConfig(min_component_ml=0.01))
    assert (out == 1).sum() == 125
    assert (out == 2).sum() == 12  # 0.012 mL kept
    out, _ = postprocess_labels(label, 0.001, PostprocessConfig(min_component_ml=0.02))
    assert (out == 2).sum() == 0
    unchanged, stats = postprocess_labels(label, 0.001, PostprocessConfig())
    assert unchanged is label
    assert stats["removed_voxels"] == 0
