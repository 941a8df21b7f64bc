"""align_to_grid: exact index shuffling when grids are flips/permutations, else resampling."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.io import Volume, align_to_grid
from medseg.io.resample import index_mapping


def _ref() -> Volume:
    aff = np.diag([-1.0, -1.0, 2.0, 1.0])
    aff[:3, 3] = [20.0, 30.0, -10.0]
    rng = np.random.default_rng(0)
    return Volume(rng.integers(0, 9, size=(6, 7, 4)).astype(np.uint8), aff, {})


@pytest.mark.parametrize("codes", ["LPS", "LAS", "RAS", "SAR", "PIL"])
def test_reoriented_copy_maps_back_exactly(codes):
    ref = _ref()
    moved = ref.reoriented(codes)
    assert "".join(moved.orientation) == codes
    if codes != "LPS":
        assert not np.allclose(moved.affine, ref.affine)
    back = align_to_grid(moved, ref)
    assert back.metadata["alignment"] == "exact"
    np.testing.assert_array_equal(back.array, ref.array)
    np.testing.assert_allclose(back.affine, ref.affine)


@pytest.mark.parametrize("codes", ["RAS", "SAR"])
def test_reoriented_into_either_memory_layout(codes):
    ref = _ref()
    c_order, f_order = ref.reoriented(codes), ref.reoriented(codes, order="F")
    assert c_order.array.flags.c_contiguous
    assert f_order.array.flags.f_contiguous
    np.testing.assert_array_equal(f_order.array, c_order.array)
    np.testing.assert_array_equal(f_order.affine, c_order.affine)


def test_shifted_crop_is_pasted_in_place():
    ref = _ref()
    crop = Volume(ref.array[2:5, 1:4, 1:3].copy(), ref.affine.copy(), {})
    crop.affine[:3, 3] = (ref.affine @ np.array([2, 1, 1, 1.0]))[:3]
    out = align_to_grid(crop, ref)
    expected = np.zeros_like(ref.array)
    expected[2:5, 1:4, 1:3] = ref.array[2:5, 1:4, 1:3]
    np.testing.assert_array_equal(out.array, expected)


def test_different_spacing_is_resampled():
    ref = _ref()
    coarse_aff = ref.affine.copy()
    coarse_aff[:3, :3] *= 2
    coarse = Volume(np.ones((3, 4, 2), np.uint8), coarse_aff, {})
    assert index_mapping(coarse, ref) is None
    out = align_to_grid(coarse, ref)
    assert out.metadata["alignment"] == "resampled"
    assert out.shape == ref.shape
    assert out.array[0, 0, 0] == 1
    assert out.array.dtype == np.uint8
