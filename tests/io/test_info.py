"""describe(): the facts behind `medseg info`."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.io import Volume
from medseg.io.info import describe, format_info, value_counts


def _vol(array, **meta) -> Volume:
    return Volume(array, np.diag([2.0, 2.0, 2.5, 1.0]), meta)


def test_mask_labels_with_volumes_in_ml():
    arr = np.zeros((10, 10, 10), np.uint8)
    arr[:2, :5, :4] = 1  # 40 voxels of 10 mm^3 = 0.4 mL
    arr[5, 5, 5] = 3
    info = describe(_vol(arr))
    assert info["is_mask"] is True
    assert info["labels"] == [
        {"value": 0, "name": "", "voxels": 959, "volume_ml": 9.59},
        {"value": 1, "name": "", "voxels": 40, "volume_ml": 0.4},
        {"value": 3, "name": "", "voxels": 1, "volume_ml": 0.01},
    ]
    assert info["spacing_mm"] == [2.0, 2.0, 2.5]
    assert info["orientation"] == "RAS"
    assert "labels:" in format_info(info)


def test_image_is_not_a_mask():
    arr = np.arange(1000, dtype=np.int16).reshape(10, 10, 10) - 500
    info = describe(_vol(arr, modality="CT", units="HU"))
    assert info["is_mask"] is False
    assert "labels" not in info
    assert info["intensity"]["min"] == -500
    assert info["intensity"]["max"] == 499
    assert info["intensity"]["percentiles"]["p50"] == pytest.approx(-0.5)
    assert "HU" in format_info(info)


def test_identifiers_only_on_request():
    vol = _vol(np.zeros((2, 2, 2), np.uint8))
    vol.identifiers["PatientID"] = "SECRET"
    assert "SECRET" not in str(describe(vol))
    assert describe(vol, show_identifiers=True)["identifiers"] == {"PatientID": "SECRET"}


def test_value_counts_negative_and_float():
    values, counts = value_counts(np.array([-3, -3, 5], np.int16))
    assert values.tolist() == [-3, 5]
    assert counts.tolist() == [2, 1]
    assert value_counts(np.zeros(3, np.float32)) is None


def test_nan_ignored_in_intensity():
    arr = np.ones((3, 3, 3), np.float32)
    arr[0, 0, 0] = np.nan
    assert describe(_vol(arr))["intensity"]["max"] == 1.0


@pytest.mark.parametrize("dtype", [np.int16, np.uint8])
def test_percentiles_from_counts_equal_numpy(dtype):
    from medseg.io.info import PERCENTILES, percentiles_from_counts

    data = np.random.default_rng(3).integers(0, 200, size=1001).astype(dtype)
    values, counts = value_counts(data)
    np.testing.assert_allclose(
        percentiles_from_counts(values, counts, PERCENTILES), np.percentile(data, PERCENTILES)
    )
