"""``write_dicom_series``: valid DICOM that SimpleITK, pydicom and medseg read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.errors import GeometryMismatchError, OverwriteError, UnsupportedFormatError
from medseg.io import read_volume
from medseg.io.dicom_write import lps_geometry, write_dicom_series
from medseg.io.volume import LPS_TO_RAS, Volume
from medseg.synthetic.fields import lps_grid_affine, rotation_matrix


def _volume(dtype=np.int16, shape=(12, 9, 7), spacing=(0.7, 0.9, 2.5), modality="CT") -> Volume:
    """Oblique LPS-stored grid with anisotropic, row != column spacing and a ramp+noise."""
    affine = lps_grid_affine(
        shape, spacing, np.array([20.0, -35.0, 110.0]), rotation_matrix(6, -4, 9)
    )
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        array = rng.normal(300.0, 80.0, shape).astype(dtype)
    else:
        array = rng.integers(-1024, 1500, shape).astype(dtype)
    return Volume(array, affine, {"modality": modality})


def _sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_simpleitk_reads_same_geometry_and_values(tmp_path: Path) -> None:
    vol = _volume()
    folder = write_dicom_series(vol, tmp_path / "series", series_description="round trip")
    img = _sitk_read(folder)
    lps = LPS_TO_RAS @ vol.affine
    assert img.GetSize() == vol.shape
    assert np.allclose(img.GetSpacing(), vol.spacing, atol=1e-4)
    assert np.allclose(img.GetOrigin(), lps[:3, 3], atol=1e-3)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    assert np.allclose(direction, lps[:3, :3] / np.array(vol.spacing), atol=1e-5)
    # SimpleITK arrays are [k, j, i]; CT values come back in HU (rescale applied).
    assert np.array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), vol.array)


def test_medseg_reader_round_trip(tmp_path: Path) -> None:
    vol = _volume()
    back = read_volume(write_dicom_series(vol, tmp_path / "series"))
    assert np.array_equal(back.array, vol.array)
    assert np.allclose(back.affine, vol.affine, atol=1e-4)
    assert back.metadata["modality"] == "CT"


def test_every_file_is_valid_dicom_without_patient_data(tmp_path: Path) -> None:
    vol = _volume()
    folder = write_dicom_series(vol, tmp_path / "series", series_description="check")
    files = sorted(folder.iterdir())
    assert len(files) == vol.shape[2]
    headers = [pydicom.dcmread(f) for f in files]
    for ds in headers:
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert str(ds.PatientName) == "Synthetic^Phantom"
        assert ds.PatientID == "SYNTH-0001"
        assert ds.SeriesDescription == "check"
        assert ds.RescaleType == "HU"
        assert ds.pixel_array.shape == (vol.shape[1], vol.shape[0])  # rows = j, columns = i
        # Row spacing (between rows, along j) comes first.
        assert np.allclose([float(v) for v in ds.PixelSpacing], [0.9, 0.7])
        assert float(ds.SliceThickness) == pytest.approx(2.5)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(2.5)
    assert len({ds.SOPInstanceUID for ds in headers}) == len(headers)
    for key in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert len({ds.get(key) for ds in headers}) == 1
    # File names are not in slice order: a reader must sort by position.
    assert [int(ds.InstanceNumber) for ds in headers] != sorted(
        int(ds.InstanceNumber) for ds in headers
    )
    first = min(headers, key=lambda ds: int(ds.InstanceNumber))
    lps = LPS_TO_RAS @ vol.affine
    assert np.allclose([float(v) for v in first.ImagePositionPatient], lps[:3, 3], atol=1e-3)
    slice0 = first.pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert np.array_equal(slice0, vol.array[:, :, 0].T)


def test_float_mr_is_rescaled_within_precision(tmp_path: Path) -> None:
    vol = _volume(dtype=np.float32, modality="MR")
    folder = write_dicom_series(vol, tmp_path / "mr", modality="MR")
    ds = pydicom.dcmread(next(folder.iterdir()))
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert ds.Modality == "MR"
    back = read_volume(folder)
    step = (vol.array.max() - vol.array.min()) / 65535
    assert np.abs(back.array - vol.array).max() <= step
    assert np.allclose(back.affine, vol.affine, atol=1e-4)


def test_uid_seed_makes_uids_reproducible(tmp_path: Path) -> None:
    vol = _volume(shape=(4, 3, 2))
    a = write_dicom_series(vol, tmp_path / "a", uid_seed="case-1")
    b = write_dicom_series(vol, tmp_path / "b", uid_seed="case-1")
    c = write_dicom_series(vol, tmp_path / "c")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    assert not {p.name for p in a.iterdir()} & {p.name for p in c.iterdir()}


def test_left_handed_grid_reads_back_reversed_but_in_place(tmp_path: Path) -> None:
    vol = _volume(shape=(5, 4, 6))
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, 5  # k runs the other way: same voxels, left-handed grid
    mirrored = Volume(vol.array[:, :, ::-1].copy(), vol.affine @ flip, {"modality": "CT"})
    back = read_volume(write_dicom_series(mirrored, tmp_path / "s"))
    assert np.array_equal(back.array, vol.array)
    assert np.allclose(back.affine, vol.affine, atol=1e-4)


def test_existing_folder_needs_overwrite(tmp_path: Path) -> None:
    vol = _volume(shape=(4, 3, 2))
    folder = write_dicom_series(vol, tmp_path / "s")
    with pytest.raises(OverwriteError, match="already exists"):
        write_dicom_series(vol, folder)
    old = {p.name for p in folder.iterdir()}
    write_dicom_series(vol, folder, overwrite=True)
    assert len(list(folder.iterdir())) == 2
    assert not old & {p.name for p in folder.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folders left


def test_refuses_to_write_into_its_input(tmp_path: Path) -> None:
    folder = write_dicom_series(_volume(shape=(4, 3, 2)), tmp_path / "s")
    source = read_volume(folder)
    with pytest.raises(OverwriteError, match="input"):
        write_dicom_series(source, folder, overwrite=True)
    assert np.array_equal(read_volume(folder).array, source.array)


def test_sheared_affine_and_bad_modality_write_nothing(tmp_path: Path) -> None:
    vol = _volume(shape=(4, 3, 2))
    sheared = Volume(
        vol.array, vol.affine @ np.array([[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    )
    with pytest.raises(GeometryMismatchError, match="orthogonal"):
        write_dicom_series(sheared, tmp_path / "a")
    with pytest.raises(UnsupportedFormatError, match="CT, MR"):
        write_dicom_series(vol, tmp_path / "b", modality="US")
    assert list(tmp_path.iterdir()) == []


def test_lps_geometry_row_spacing_first() -> None:
    affine = np.diag([-0.5, -0.8, 3.0, 1.0])  # RAS of an LPS grid
    geo = lps_geometry(affine)
    assert np.allclose(geo["orientation"], [1, 0, 0, 0, 1, 0])
    assert np.allclose(geo["pixel_spacing"], [0.8, 0.5])
    assert np.allclose(geo["normal"], [0, 0, 1])
