"""Every scan kind in ../shared/data is predicted onto its exact source grid: the mask is read
back by nibabel and SimpleITK with the source geometry; DICOM input also gets a DICOM-SEG
that pydicom/highdicom read and that lies on the source series."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.io import align_to_grid, read_volume
from tests.inference.infer_factory import run_cli, write_tiny_checkpoint

SCANS = {
    "nifti_ras": "totalseg/example_ct_sm.nii.gz",
    "nifti_lps": "totalseg/example_mr_sm.nii.gz",
    "nrrd": "pyradiomics/breast1_image.nrrd",
    "dicom_ct_jpeg2000": "totalseg/example_ct_dicom",
}


@pytest.fixture(scope="module")
def resampling_checkpoint(tmp_path_factory):
    """Model trained at 2 mm in-plane: real scans are resampled there and back, so the
    inverse preprocessing onto the source grid is exercised on every kind of file (and the
    512x512 DICOM series costs a quarter of the compute)."""
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt_2mm") / "m.pt", target_spacing=(2.0, 2.0)
    )


def _sitk_source(path):
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _check_mask(source_path, mask_path):
    source = read_volume(source_path)
    img = nib.load(str(mask_path))
    assert img.shape == source.shape
    np.testing.assert_allclose(img.affine, source.affine, atol=1e-3)
    assert np.issubdtype(img.get_data_dtype(), np.integer)
    ref, mask = _sitk_source(source_path), sitk.ReadImage(str(mask_path))
    assert mask.GetSize() == ref.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mask.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), ref.GetDirection(), atol=1e-5)
    return source


def _check_dicom_seg(source, seg_path, mask_path):
    import highdicom as hd
    import pydicom

    ds = pydicom.dcmread(str(seg_path))
    assert ds.Modality == "SEG"
    series_uid = pydicom.dcmread(source.metadata["dicom_files"][0], stop_before_pixels=True)
    referenced = ds.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced == series_uid.SeriesInstanceUID
    seg = hd.seg.segread(str(seg_path))
    assert seg.number_of_segments == 1
    # the SEG, read back on its own frames and placed by geometry, equals the NIfTI mask
    seg_on_grid = align_to_grid(read_volume(seg_path), source)
    expected = np.asarray(nib.load(str(mask_path)).dataobj)
    np.testing.assert_array_equal(seg_on_grid.array > 0, expected > 0)


@pytest.mark.parametrize("kind", sorted(SCANS))
def test_predict_every_scan_kind(kind, shared_data, resampling_checkpoint, tmp_path, capsys):
    source_path = shared_data / SCANS[kind]
    out = tmp_path / "out"
    # --min-lesion-ml drops the random network's specks (fast readouts; option exercised)
    args = ["predict", source_path, "-o", out, "--model", resampling_checkpoint, "--device", "cpu"]
    code = run_cli([*args, "-q", "--min-lesion-ml", "0.5"])
    assert code == 0, capsys.readouterr().err
    case = source_path.name.split(".")[0]
    mask_path = out / f"{case}.nii.gz"
    source = _check_mask(source_path, mask_path)
    report = json.loads((out / f"{case}.json").read_text())
    assert report["status"] == "ok"
    assert report["shape"] == list(source.shape)
    assert all(les["volume_ml"] >= 0.5 for les in report["readouts"]["lesions"])
    if source_path.is_dir():
        _check_dicom_seg(source, out / f"{case}_seg.dcm", mask_path)
    else:
        assert not (out / f"{case}_seg.dcm").exists()


@pytest.mark.slow
def test_predict_large_mr_dicom_series(shared_data, resampling_checkpoint, tmp_path):
    """512x512x120 MR series (uncompressed, 0.41 mm in-plane)."""
    source_path = shared_data / "vs_seg_dicom"
    out = tmp_path / "out"
    args = ["predict", source_path, "-o", out, "--model", resampling_checkpoint, "--device", "cpu"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_cli([*args, "-q", "--batch-size", "8", "--min-lesion-ml", "0.5"]) == 0
    # patient identifiers never reach the terminal (highdicom would quote the PatientName)
    assert not [w for w in caught if "VS-SEG" in str(w.message)]
    source = _check_mask(source_path, out / "vs_seg_dicom.nii.gz")
    _check_dicom_seg(source, out / "vs_seg_dicom_seg.dcm", out / "vs_seg_dicom.nii.gz")
