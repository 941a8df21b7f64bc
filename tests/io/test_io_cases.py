"""Format detection and case naming (medseg.io.cases) and 4D probability maps through medseg.io."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import DatasetError, DimensionError, OverwriteError
from medseg.io import Volume, write_probabilities
from medseg.io.cases import (
    channel_names_of,
    image_stem,
    is_dicom_folder,
    labels_of,
    read_dataset_json,
    split_channel,
)


def test_image_stem_and_channels() -> None:
    assert image_stem("CT_001.NII.GZ") == "CT_001"
    assert image_stem("a.mha") == "a"
    assert image_stem("notes.txt") is None
    assert image_stem("x.nrrd", (".nii.gz",)) is None
    assert split_channel("BRATS_001_0002") == ("BRATS_001", 2)
    assert split_channel("case_12") == ("case_12", None)


def test_dicom_folder_by_dicomdir_suffix_or_marker(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.nii.gz").write_bytes(b"\0" * 200)
    assert not is_dicom_folder(plain)
    marker = tmp_path / "marker"
    marker.mkdir()
    (marker / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert is_dicom_folder(marker)
    suffix = tmp_path / "suffix"
    suffix.mkdir()
    (suffix / "x.dcm").write_bytes(b"")
    assert is_dicom_folder(suffix)
    assert not is_dicom_folder(marker / "IM0001")  # a file is not a folder


def test_dataset_json_both_label_directions(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(
        json.dumps({"channel_names": {"1": "t1c", "0": "flair"}, "labels": {"bg": 0, "tumour": 1}})
    )
    meta = read_dataset_json(path)
    assert channel_names_of(meta) == ["flair", "t1c"]
    assert labels_of(meta["labels"], path) == {0: "bg", 1: "tumour"}
    assert labels_of({"0": "bg", "1": "tumour"}, path) == {0: "bg", 1: "tumour"}  # MSD
    assert channel_names_of({}) == ["image"]
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_dataset_json(path)
    with pytest.raises(DatasetError, match="label entry"):
        labels_of({"x": "y"}, path)


def test_probability_maps_are_written_through_io(tmp_path: Path) -> None:
    affine = np.array([[0.0, 0, 2, 10], [-1, 0, 0, 20], [0, 1.5, 0, -5], [0, 0, 0, 1]])
    like = Volume(np.zeros((4, 5, 3), np.int16), affine)
    probs = np.random.default_rng(0).random((3, 4, 5, 3)).astype(np.float32)
    path = write_probabilities(probs, like, tmp_path / "p.nii.gz")
    img = nib.load(str(path))
    assert img.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 2], probs[2])
    assert sitk.ReadImage(str(path)).GetNumberOfComponentsPerPixel() in (1, 3)  # SimpleITK reads it
    with pytest.raises(OverwriteError):
        write_probabilities(probs, like, path)
    with pytest.raises(DimensionError, match="do not lie on the grid"):
        write_probabilities(probs[:, :2], like, tmp_path / "q.nii.gz")
