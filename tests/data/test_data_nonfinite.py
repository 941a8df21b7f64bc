"""NaN/Inf voxels: one rule (``check_finite``) for training and inference, never a silent mask."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from medseg.data.preprocessing import (
    GridInfo,
    PreprocessingParams,
    check_finite,
    fit_preprocessing,
    preprocess_image,
)
from medseg.errors import CorruptFileError
from medseg.io import Volume, write_volume
from tests.inference.infer_factory import blob_volume, run_cli, write_tiny_checkpoint


def _mr(array: np.ndarray, source: str = "scan.nii.gz") -> Volume:
    return Volume(array, np.diag([1.0, 1.0, 2.0, 1.0]), {"source": source})


def _params() -> PreprocessingParams:
    return PreprocessingParams(modality="mr", channel_names=["t1"], class_names=["bg", "x"])


def test_all_nan_is_refused_with_count_and_location():
    data = np.full((4, 5, 6), np.nan, np.float32)
    with pytest.raises(CorruptFileError) as exc:
        preprocess_image([_mr(data)], _params())
    message = str(exc.value)
    assert message.startswith("scan.nii.gz: 120 of 120 voxels (100.0 %)")
    assert "first at voxel (0, 0, 0)" in message


def test_more_than_one_percent_is_refused_and_names_the_first_voxel():
    data = np.ones((10, 10, 10), np.float32)
    data[3, 4, 5:] = np.inf  # 5 voxels ...
    data[7, :, :] = np.nan  # ... + 100 = 10.5 %
    with pytest.raises(
        CorruptFileError, match=r"105 of 1,000 voxels .*\(first at voxel \(3, 4, 5\)"
    ):
        check_finite(data, "scan.nii.gz")


def test_a_few_are_replaced_by_the_minimum_logged_and_recorded(caplog):
    rng = np.random.default_rng(0)
    data = rng.uniform(10, 100, size=(20, 20, 20)).astype(np.float32)
    data[1, 2, 3] = np.nan
    data[4, 5, 6] = -np.inf
    original = data.copy()
    with caplog.at_level(logging.WARNING):
        image, grid = preprocess_image([_mr(data)], _params())
    assert grid.nonfinite_replaced == [2]
    assert GridInfo.from_dict(json.loads(json.dumps(grid.to_dict()))).nonfinite_replaced == [2]
    assert "2 NaN/infinite voxel(s)" in caplog.text
    assert np.isfinite(image).all()
    np.testing.assert_array_equal(data, original, strict=True)  # the input is not modified
    repaired, count = check_finite(data, "x")
    assert count == 2
    assert repaired[1, 2, 3] == repaired[4, 5, 6] == np.nanmin(data[np.isfinite(data)])


def test_finite_and_integer_volumes_pass_untouched():
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    assert check_finite(data, "x")[0] is data
    labels = np.zeros((3, 4, 5), np.int16)
    assert check_finite(labels, "x") == (labels, 0)
    huge = np.full((3, 4, 5), 3e38, np.float32)  # its float64 sum is finite; no false alarm
    assert check_finite(huge, "x")[1] == 0
    _, grid = preprocess_image([_mr(data + 1)], _params())
    assert grid.nonfinite_replaced == []


def test_training_statistics_use_the_same_rule():
    bad = np.full((4, 4, 4), np.nan, np.float32)
    with pytest.raises(CorruptFileError, match="NaN or infinite"):
        fit_preprocessing([([_mr(bad, "train/case1.nii.gz")], None)], _params())


def test_all_nan_volume_through_predict_is_a_failure_line_and_no_mask(tmp_path, capsys):
    ckpt = write_tiny_checkpoint(tmp_path / "m.pt")
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = blob_volume()
    write_volume(good, inputs / "good.nii.gz")
    write_volume(good.with_array(np.full(good.shape, np.nan, np.float32)), inputs / "nan.nii.gz")
    few = good.array.copy()
    few[0, 0, 0] = np.nan
    write_volume(good.with_array(few), inputs / "few.nii.gz")
    out = tmp_path / "out"
    args = ["predict", inputs, "-o", out, "--model", ckpt, "--device", "cpu", "-q"]
    assert run_cli(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "failed: nan" in err
    assert "NaN or infinite" in err
    assert not (out / "nan.nii.gz").exists()
    assert not (out / "nan.json").exists()
    assert (out / "good.nii.gz").is_file()
    report = json.loads((out / "few.json").read_text())
    assert report["readouts"]["nonfinite_voxels_replaced"] == [1]
    assert (
        "nonfinite_voxels_replaced" not in json.loads((out / "good.json").read_text())["readouts"]
    )
