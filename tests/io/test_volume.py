"""Volume.reoriented: valid orientation codes work, invalid ones are refused."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.io.volume import Volume


def _volume() -> Volume:
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    return Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), affine, {})


@pytest.mark.parametrize("codes", ["SIL", "RRA", "RAX", "LP", "RASP", ("R", "A", "A")])
def test_invalid_axcodes_raise(codes) -> None:
    with pytest.raises(ValueError, match="R/L, A/P and S/I"):
        _volume().reoriented(codes)


@pytest.mark.parametrize("codes", ["LPS", "SAR", ("I", "R", "P")])
def test_valid_axcodes_keep_world_positions(codes) -> None:
    vol = _volume()
    moved = vol.reoriented(codes)
    assert "".join(moved.orientation) == "".join(codes)
    np.testing.assert_array_equal(moved.reoriented(vol.orientation).array, vol.array)
    # voxel (0, 0, 0) of the source keeps its world position after the shuffle
    world = vol.affine @ np.array([0, 0, 0, 1.0])
    idx = np.rint(np.linalg.solve(moved.affine, world)[:3]).astype(int)
    assert moved.array[tuple(idx)] == vol.array[0, 0, 0]


def test_integer_labels_accepts_float_stored_labels_and_refuses_soft_masks():
    import numpy as np
    import pytest

    from medseg.errors import DatasetError
    from medseg.io import integer_labels

    stored = np.array([0.0, 1.0000001, 4.0], np.float32)  # BraTS stores labels as float32
    labels = integer_labels(stored, "seg.nii.gz")
    assert labels.dtype == np.int16
    assert labels.tolist() == [0, 1, 4]
    with pytest.raises(DatasetError, match=r"soft\.nii\.gz.*non-integer.*threshold soft masks"):
        integer_labels(np.array([0.0, 0.5]), "soft.nii.gz")
    with pytest.raises(DatasetError, match="non-integer"):
        integer_labels(np.array([1.0, np.nan]), "nan.nii.gz")
