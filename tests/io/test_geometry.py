"""The geometry proof on real files (issue 2, item 4).

(a) the TotalSegmentator DICOM series and its NIfTI mask (stored with a flipped y-axis) land
    on one physical grid: aligning by the affines is an exact flip, the liver label then sits
    on liver HU, while a naive array-index overlay does not;
(b) masks written by ``write_mask`` are read back by nibabel AND SimpleITK with the source's
    geometry and voxel-for-voxel equality (RAS, LPS, LAS inputs and a DICOM series);
(c) reorienting to canonical and back is the identity.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.io import align_to_grid, read_volume, write_mask
from medseg.io.resample import index_mapping

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

# (image, mask or None, expected orientation of the image)
CASES = {
    "ct_ras": ("totalseg/example_ct_sm.nii.gz", "totalseg/example_seg.nii.gz", "RAS"),
    "mr_lps": ("totalseg/example_mr_sm.nii.gz", "totalseg/example_seg_mr.nii.gz", "LPS"),
    "brats_lps": ("brats2015/pat0001/t1c.nii.gz", "brats2015/pat0001/seg.nii.gz", "LPS"),
    "seg_las": ("totalseg/example_seg_dicom.nii.gz", None, "LAS"),
    "nrrd_las": ("pyradiomics/brain1_image.nrrd", "pyradiomics/brain1_label.nrrd", "LAS"),
    "dicom_lps": ("totalseg/example_ct_dicom", None, "LPS"),
}


@pytest.fixture(scope="module")
def dicom_ct(shared_data):
    return read_volume(shared_data / "totalseg" / "example_ct_dicom")


@pytest.fixture(scope="module")
def dicom_mask(shared_data):
    return read_volume(shared_data / "totalseg" / "example_seg_dicom.nii.gz")


# ---- (a) ------------------------------------------------------------------------------


def test_mask_is_stored_flipped_in_y(dicom_ct, dicom_mask):
    assert "".join(dicom_ct.orientation) == "LPS"
    assert "".join(dicom_mask.orientation) == "LAS"
    assert dicom_ct.shape == dicom_mask.shape == (512, 512, 20)
    mapping = index_mapping(dicom_mask, dicom_ct)
    # j -> 511 - j, i and k unchanged: an exact flip, no interpolation needed
    np.testing.assert_array_equal(
        mapping, [[1, 0, 0, 0], [0, -1, 0, 511], [0, 0, 1, 0], [0, 0, 0, 1]]
    )


def test_aligned_liver_sits_on_liver_hu(dicom_ct, dicom_mask):
    aligned = align_to_grid(dicom_mask, dicom_ct)
    assert aligned.metadata["alignment"] == "exact"
    np.testing.assert_array_equal(aligned.array, dicom_mask.array[:, ::-1, :])
    hu = dicom_ct.array
    liver = hu[aligned.array == 5]
    # contrast-enhanced (portal venous) CT: liver about 90 HU; no air inside the organ
    assert 60 <= np.median(liver) <= 130, np.median(liver)
    assert np.mean((liver > 0) & (liver < 200)) > 0.98
    assert np.mean(liver < -200) < 0.001
    spleen = hu[aligned.array == 1]
    assert 40 <= np.median(spleen) <= 130


def test_naive_index_overlay_is_wrong(dicom_ct, dicom_mask):
    hu = dicom_ct.array
    liver = hu[dicom_mask.array == 5]  # same array index, ignoring the affines
    assert np.mean((liver > 0) & (liver < 200)) < 0.8
    assert np.mean(liver < -200) > 0.1  # lands partly on air/lung
    spleen = hu[dicom_mask.array == 1]
    assert np.median(spleen) < 0  # the flipped spleen falls outside soft tissue


def test_small_ct_and_mask_share_grid(shared_data):
    ct = read_volume(shared_data / "totalseg" / "example_ct_sm.nii.gz")
    seg = read_volume(shared_data / "totalseg" / "example_seg.nii.gz")
    assert ct.same_grid(seg)
    assert 20 <= np.median(ct.array[seg.array == 5]) <= 90


# ---- (b) ------------------------------------------------------------------------------


def _mask_for(shared_data, image, mask_rel):
    if mask_rel is not None:
        return np.asarray(read_volume(shared_data / mask_rel).array)
    arr = np.asarray(image.array)
    return (arr > np.percentile(arr, 90)).astype(np.uint8) + (arr > np.percentile(arr, 99))


def _itk_source(path):
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(path))
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("case", sorted(CASES))
def test_write_mask_reread_by_nibabel_and_sitk(shared_data, tmp_path, case):
    image_rel, mask_rel, codes = CASES[case]
    image = read_volume(shared_data / image_rel)
    assert "".join(image.orientation) == codes
    mask = _mask_for(shared_data, image, mask_rel)
    out = write_mask(mask, image, tmp_path / "mask.nii.gz")

    nib_img = nib.load(str(out))
    np.testing.assert_allclose(nib_img.affine, image.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nib_img.dataobj), mask)

    itk_img = sitk.ReadImage(str(out))
    lps = LPS @ image.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    np.testing.assert_allclose(itk_img.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(itk_img.GetOrigin(), lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(
        np.reshape(itk_img.GetDirection(), (3, 3)), lps[:3, :3] / spacing, atol=1e-5
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk_img).transpose(2, 1, 0), mask)

    # and ITK's own reading of the SOURCE (incl. its DICOM series reader) agrees with it
    src = _itk_source(shared_data / image_rel)
    np.testing.assert_allclose(src.GetOrigin(), itk_img.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(src.GetDirection(), itk_img.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(src.GetSpacing(), itk_img.GetSpacing(), atol=1e-4)


def test_dicom_pixels_match_itk_series_reader(shared_data, dicom_ct):
    src = _itk_source(shared_data / "totalseg" / "example_ct_dicom")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(src).transpose(2, 1, 0), dicom_ct.array)


# ---- (c) ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_canonical_and_back_is_identity(shared_data, case):
    image = read_volume(shared_data / CASES[case][0])
    canon = image.to_canonical()
    assert "".join(canon.orientation) == "RAS"
    # every voxel keeps its world position: centre voxel's world point is unchanged
    back = canon.reoriented(image.orientation)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-9)
    # world coordinates of a corner voxel survive the reorientation
    corner = image.affine @ np.array([0, 0, 0, 1.0])
    idx = np.round(np.linalg.inv(canon.affine) @ corner).astype(int)[:3]
    assert canon.array[tuple(idx)] == image.array[0, 0, 0]
