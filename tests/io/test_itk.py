"""NRRD/MHA through SimpleITK: LPS<->RAS and (z,y,x)<->[i,j,k] at the boundary."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import CorruptFileError, DimensionError, UnsupportedFormatError
from medseg.io import Volume, read_volume, write_volume
from medseg.io.itk import affine_from_sitk, volume_to_sitk


def _sitk_image() -> sitk.Image:
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(4, 3, 2)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))  # rotated 90 degrees in-plane
    return img


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_read_itk_geometry(tmp_path, suffix):
    img = _sitk_image()
    path = tmp_path / f"x{suffix}"
    sitk.WriteImage(img, str(path))
    vol = read_volume(path)
    assert vol.shape == (2, 3, 4)
    assert vol.array[1, 2, 3] == sitk.GetArrayFromImage(img)[3, 2, 1]
    # world point of voxel (1, 2, 3): ITK gives LPS, medseg RAS = (-x, -y, z)
    lps = img.TransformIndexToPhysicalPoint((1, 2, 3))
    ras = vol.affine @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)
    np.testing.assert_allclose(vol.spacing, (0.5, 0.75, 2.0))
    assert vol.metadata["format"] == suffix[1:]


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_write_itk_roundtrip(tmp_path, suffix):
    arr = np.random.default_rng(0).integers(0, 5, size=(5, 6, 7)).astype(np.uint8)
    aff = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    out = write_volume(Volume(arr, aff, {}), tmp_path / f"m{suffix}")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, aff, atol=1e-9)
    raw = sitk.ReadImage(str(out))
    np.testing.assert_allclose(affine_from_sitk(raw), aff, atol=1e-9)


def test_sheared_affine_refused_for_nrrd(tmp_path):
    aff = np.eye(4)
    aff[0, 2] = 0.3  # gantry tilt: k axis not orthogonal to i
    with pytest.raises(UnsupportedFormatError, match="shear"):
        write_volume(Volume(np.zeros((2, 2, 2), np.uint8), aff, {}), tmp_path / "x.nrrd")
    assert not (tmp_path / "x.nrrd").exists()


def test_vector_and_4d_images_need_channel(tmp_path):
    vec = sitk.Compose([sitk.Image(3, 4, 5, sitk.sitkFloat32) + c for c in range(2)])
    sitk.WriteImage(vec, str(tmp_path / "vec.nrrd"))
    with pytest.raises(DimensionError, match="2 components"):
        read_volume(tmp_path / "vec.nrrd")
    assert read_volume(tmp_path / "vec.nrrd", channel=1).array.max() == 1.0
    four = sitk.JoinSeries([sitk.Image(3, 4, 5, sitk.sitkInt16) + c for c in range(3)])
    sitk.WriteImage(four, str(tmp_path / "four.mha"))
    with pytest.raises(DimensionError, match="4D with 3"):
        read_volume(tmp_path / "four.mha")
    assert read_volume(tmp_path / "four.mha", channel=2).array.max() == 2


def test_corrupt_nrrd(tmp_path):
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ngarbage\n")
    with pytest.raises(CorruptFileError, match=r"bad\.nrrd"):
        read_volume(tmp_path / "bad.nrrd")


def test_volume_to_sitk_matches_real_nrrd(shared_data):
    path = shared_data / "pyradiomics" / "brain1_image.nrrd"
    vol = read_volume(path)
    ref = sitk.ReadImage(str(path))
    img = volume_to_sitk(vol)
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref))
    assert "".join(vol.orientation) == "LAS"  # y direction -1 in LPS = anterior
