"""Measurements (medseg.viewer.core.measure): ruler, ROI statistics, intensity and its unit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.viewer.core import measure


def test_ruler_uses_anisotropic_spacing() -> None:
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    assert measure.distance_mm((0, 0, 0), (4, 0, 0), affine) == pytest.approx(2.0)
    assert measure.distance_mm((0, 0, 0), (0, 0, 2), affine) == pytest.approx(6.0)
    # 3-4-5 in mm: 6 voxels of 0.5 mm along i, 8 along j
    assert measure.distance_mm((0, 0, 0), (6, 8, 0), affine) == pytest.approx(5.0)
    assert measure.distance_mm((1.5, 2, 3), (1.5, 2, 3), affine) == 0.0


def test_ruler_follows_an_oblique_affine() -> None:
    angle = math.radians(30)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 1.0, 1.0])
    affine[:3, 3] = (10, -5, 7)  # a translation never changes a distance
    assert measure.distance_mm((0, 0, 0), (3, 0, 0), affine) == pytest.approx(6.0)
    assert measure.distance_mm((0, 0, 0), (0, 3, 4), affine) == pytest.approx(5.0)


def test_ruler_refuses_points_that_are_not_3d() -> None:
    with pytest.raises(MedsegError, match=r"\(i, j, k\)"):
        measure.distance_mm((0, 0), (1, 1), np.eye(4))


def test_rectangle_roi_mean_sd_area() -> None:
    plane = np.zeros((10, 12), np.float32)
    plane[2:4, 3:6] = [[1, 2, 3], [4, 5, 6]]
    stats = measure.roi_stats(plane, (2, 3, 2, 3), (0.5, 2.0), "rectangle", "HU")
    assert stats.pixels == 6
    assert stats.mean == pytest.approx(3.5)
    assert stats.sd == pytest.approx(np.std([1, 2, 3, 4, 5, 6], ddof=1))
    assert stats.area_mm2 == pytest.approx(6 * 0.5 * 2.0)
    assert "mean 3.5 HU" in stats.text()
    assert "area 6 mm²" in stats.text()


def test_ellipse_roi_is_inscribed_in_its_box() -> None:
    mask = measure.roi_mask((40, 40), (10, 10, 20, 20), "ellipse")
    assert mask[20, 20]
    assert mask[10, 20]
    assert mask[29, 20]
    assert not mask[10, 10]
    assert not mask[29, 29]
    assert not mask[:10].any()
    assert not mask[:, 30:].any()
    # pixel count close to the ellipse's area (pi r^2 with r = 10 pixels)
    assert abs(int(mask.sum()) - math.pi * 100) < 12
    plane = np.where(mask, 7.0, 100.0)
    stats = measure.roi_stats(plane, (10, 10, 20, 20), (1.0, 1.5), "ellipse")
    assert stats.mean == 7.0
    assert stats.sd == 0.0
    assert stats.area_mm2 == pytest.approx(mask.sum() * 1.5)


def test_roi_is_cut_at_the_slice_edge_and_refused_outside() -> None:
    mask = measure.roi_mask((8, 8), (6, 6, 5, 5), "rectangle")
    assert int(mask.sum()) == 4
    with pytest.raises(MedsegError, match="no pixel on the 8 x 8 slice"):
        measure.roi_mask((8, 8), (9, 0, 2, 2))
    with pytest.raises(MedsegError, match="unknown ROI shape 'circle'"):
        measure.roi_mask((8, 8), (0, 0, 2, 2), "circle")
    one = measure.roi_stats(np.ones((4, 4)), (1, 1, 1, 1), (1.0, 1.0))
    assert one.pixels == 1
    assert one.sd == 0.0


def test_intensity_at_a_voxel_and_its_unit() -> None:
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert measure.intensity_at(volume, (1, 2, 3), is_ct=True) == (23.0, "HU")
    assert measure.intensity_at(volume, (0, 0, 1), is_ct=False) == (1.0, "a.u.")
    with pytest.raises(MedsegError, match="outside the volume"):
        measure.intensity_at(volume, (2, 0, 0), is_ct=False)
