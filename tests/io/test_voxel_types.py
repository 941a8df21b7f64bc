"""Voxel types a scan should not have: complex, colour (RGB), vector and 1-bit NIfTI/NRRD.

Each is refused when it is read, by one check every reader runs
(:func:`medseg.io.volume.checked_voxels`), with one ``error:`` line from ``medseg info`` and
``medseg convert``, or read explicitly when the user picks a component with ``--channel``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import UnsupportedFormatError
from medseg.io import channel_count, read_volume
from medseg.io.volume import checked_voxels
from tests.io.test_corrupt_headers import _cli_error

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
RGBA = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])


def _complex_nifti(tmp_path: Path) -> Path:
    data = (np.arange(60, dtype=np.float32).reshape(3, 4, 5) * (1 + 1j)).astype(np.complex64)
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _complex_nrrd(tmp_path: Path) -> Path:
    data = (np.arange(60, dtype=np.float32).reshape(5, 4, 3) * 1j).astype(np.complex64)
    path = tmp_path / "complex.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(data), str(path))
    return path


def _colour_nifti(tmp_path: Path, dtype: np.dtype = RGB) -> Path:
    data = np.zeros((3, 4, 5), dtype=dtype)
    data["R"], data["G"], data["B"] = 10, 20, 30
    path = tmp_path / f"colour{len(dtype.names)}.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _one_bit_nifti(tmp_path: Path) -> Path:
    """DT_BINARY (datatype 1): the NIfTI 'bool', which nibabel cannot decode."""
    plain = tmp_path / "u8.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 4, 5), np.uint8), AFFINE), plain)
    raw = bytearray(plain.read_bytes())
    struct.pack_into("<hh", raw, 70, 1, 1)  # datatype, bitpix
    path = tmp_path / "bits.nii"
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("make", [_complex_nifti, _complex_nrrd])
def test_complex_voxels_are_refused_not_cut_to_their_real_part(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(UnsupportedFormatError, match="complex") as err:
        read_volume(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "complex64" in msg
    assert "magnitude" in msg  # the fix


@pytest.mark.parametrize("dtype", [RGB, RGBA])
def test_colour_nifti_is_refused_unless_a_component_is_picked(tmp_path, dtype):
    path = _colour_nifti(tmp_path, dtype)
    n = len(dtype.names)
    with pytest.raises(UnsupportedFormatError, match="colour") as err:
        read_volume(path)
    assert f"--channel N, N in 0..{n - 1}" in str(err.value)
    assert channel_count(path) == n
    green = read_volume(path, channel=1)
    assert green.array.dtype == np.uint8
    assert np.all(green.array == 20)
    np.testing.assert_allclose(green.affine, AFFINE)
    with pytest.raises(Exception, match=f"out of range 0..{n - 1}"):
        read_volume(path, channel=n)


def test_vector_nifti_components_are_channels(tmp_path):
    data = np.zeros((3, 4, 5, 1, 3), np.float32)  # NIfTI vector intent: components on dim 5
    data[..., 2] = 7.0
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_intent("vector")
    path = tmp_path / "vector.nii.gz"
    nib.save(img, path)
    assert channel_count(path) == 3
    assert np.all(read_volume(path, channel=2).array == 7)
    with pytest.raises(Exception, match=r"--channel N, N in 0..2"):
        read_volume(path)


def test_one_bit_nifti_names_the_datatype_and_the_fix(tmp_path):
    path = _one_bit_nifti(tmp_path)
    with pytest.raises(UnsupportedFormatError, match="1-bit") as err:
        read_volume(path)
    assert "uint8" in str(err.value)


@pytest.mark.parametrize(
    "make", [_complex_nifti, _complex_nrrd, _colour_nifti, _one_bit_nifti], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("command", ["info", "convert"])
def test_cli_gives_one_error_line(tmp_path, capsys, make, command):
    path = make(tmp_path)
    argv = [command, path] + ([tmp_path / "out.nii.gz"] if command == "convert" else [])
    line = _cli_error(argv, capsys)
    assert str(path) in line
    assert not (tmp_path / "out.nii.gz").exists()


def test_checked_voxels_policy():
    assert checked_voxels(np.ones((2, 2, 2), bool), "m").dtype == np.uint8  # bool -> uint8
    for ok in (np.uint8, np.int16, np.float32, np.float64):
        arr = np.zeros((2, 2, 2), ok)
        assert checked_voxels(arr, "x") is arr  # no copy for ordinary types
    with pytest.raises(UnsupportedFormatError, match="not numeric"):
        checked_voxels(np.zeros((2, 2, 2), "U3"), "x")
