"""Regression tests for what the fuzz harness found (each failed before its fix)."""

from __future__ import annotations

import struct
import sys
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.data.config import load_data_config
from medseg.errors import ConfigError, CorruptFileError
from medseg.io import read_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from dicom_factory import write_slice


def _slice(tmp_path: Path) -> Path:
    pixels = np.arange(30, dtype=np.uint16).reshape(6, 5)
    return write_slice(tmp_path / "s.dcm", pixels, (0.0, 0.0, 0.0), series_uid="1.2.3")


def test_nifti_header_nibabel_refuses_is_a_corrupt_file(tmp_path):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<h", raw, 40, 3)
    struct.pack_into("<f", raw, 108, 1.0)  # vox_offset 1: nibabel raises HeaderDataError
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"bad\.nii: not a valid NIfTI file"):
        read_volume(path)


def test_dicom_length_field_larger_than_the_file_allocates_nothing_big(tmp_path):
    path = _slice(tmp_path)
    raw = bytearray(path.read_bytes())
    # an unbounded file read allocates the requested size first: here 800 MB for a 1 KB file
    # the explicit-VR 32-bit length of the pixel data element, set to ~800 MB
    at = raw.rfind(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    struct.pack_into("<I", raw, at, 800_000_000)
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        read_volume(path)  # the 60 pixel bytes that are there are read; nothing more
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_dicom_header_value_of_the_wrong_multiplicity_is_a_corrupt_file(tmp_path):
    path = _slice(tmp_path)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = "0\\0"
    ds.save_as(path)
    with pytest.raises(CorruptFileError, match=r"s\.dcm: a DICOM header value cannot be"):
        read_volume(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"just a string", "expected a YAML mapping"), (b"\xe4\xff: 1", "not a UTF-8 text file")],
)
def test_yaml_config_that_is_not_a_mapping_or_not_text(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_data_config(path)


def test_metaimage_with_a_negative_dimension_count_does_not_crash_the_process(tmp_path):
    """SimpleITK segfaults on ``NDims = -1``; run in a child so a regression cannot kill pytest."""
    import subprocess

    import SimpleITK as sitk

    path = tmp_path / "neg.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path))
    path.write_bytes(path.read_bytes().replace(b"NDims = 3", b"NDims = -1"))
    code = (
        "import sys\nfrom medseg.io import read_volume\nfrom medseg.errors import CorruptFileError\n"
        f"try:\n    read_volume({str(path)!r})\nexcept CorruptFileError as err:\n"
        "    print('refused:', err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: " in result.stdout
    assert "neg.mha: corrupt header: NDims '-1'" in result.stdout


def test_nifti_with_an_infinite_vox_offset_is_a_corrupt_file(tmp_path):
    path = tmp_path / "inf.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 108, float("inf"))
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"inf\.nii: cannot decode NIfTI data"):
        read_volume(path)
