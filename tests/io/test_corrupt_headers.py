"""Headers that lie: huge claimed shapes, zero-length dimensions, degenerate affines.

Each is refused by the reader before any voxel is allocated, with a ``CorruptFileError``
naming the file, and reaches the CLI as one ``error:`` line (no traceback).
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.cli.main import main
from medseg.errors import CorruptFileError
from medseg.io import read_volume
from medseg.io.volume import check_affine
from tests.io.dicom_factory import write_series

DIM_OFFSET, QFORM_CODE, SFORM_CODE, SROW = 40, 252, 254, 280


def _header_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0])), path)
    return path.read_bytes()


def _with_dims(raw: bytes, dims: tuple[int, ...]) -> bytes:
    out = bytearray(raw)
    struct.pack_into("<8h", out, DIM_OFFSET, len(dims), *dims, *([1] * (7 - len(dims))))
    return bytes(out)


def _with_sform(raw: bytes, rows: np.ndarray) -> bytes:
    out = bytearray(raw)
    struct.pack_into("<h", out, QFORM_CODE, 0)
    struct.pack_into("<h", out, SFORM_CODE, 1)
    struct.pack_into("<12f", out, SROW, *np.asarray(rows, np.float32).ravel())
    return bytes(out)


def _cli_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_header_claiming_far_more_voxels_than_the_file_is_refused_before_allocating(
    tmp_path, suffix, capsys
):
    raw = _with_dims(_header_bytes(tmp_path)[:352], (30000, 30000, 30000)) + b"\0" * 700
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    tracemalloc.start()
    with pytest.raises(CorruptFileError) as exc:
        read_volume(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20
    message = str(exc.value)
    assert str(path) in message
    assert "(30000, 30000, 30000)" in message
    assert "copy it again" in message
    line = _cli_error(["convert", path, tmp_path / "out.nii.gz"], capsys)
    assert "claims shape" in line
    assert not (tmp_path / "out.nii.gz").exists()


def test_truncated_uncompressed_nifti_names_what_is_missing(tmp_path):
    raw = _header_bytes(tmp_path)
    path = tmp_path / "cut.nii"
    path.write_bytes(raw[:-100])
    with pytest.raises(CorruptFileError, match=r"holds only 156 bytes after the header"):
        read_volume(path)


def test_truncated_gzip_stream_is_a_corrupt_file(tmp_path):
    path = tmp_path / "noise.nii.gz"
    data = np.random.default_rng(0).random((30, 30, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_volume(path)


def test_zero_length_dimension_is_named(tmp_path, capsys):
    path = tmp_path / "empty.nii"
    path.write_bytes(_with_dims(_header_bytes(tmp_path), (0, 4, 4)))
    with pytest.raises(
        CorruptFileError, match=r"has a dimension of length 0 \(shape \(0, 4, 4\)\)"
    ):
        read_volume(path)
    assert "dimension of length 0" in _cli_error(["info", path], capsys)


@pytest.mark.parametrize(
    "rows",
    [np.zeros((3, 4)), np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]])],
    ids=["zero", "singular"],
)
def test_degenerate_nifti_affine_is_one_error_line(tmp_path, rows, capsys):
    path = tmp_path / "bad.nii"
    path.write_bytes(_with_sform(_header_bytes(tmp_path), rows))
    with pytest.raises(CorruptFileError, match="degenerate voxel-to-world"):
        read_volume(path)
    assert str(path) in _cli_error(["info", path], capsys)
    assert "degenerate" in _cli_error(["convert", path, tmp_path / "o.nii.gz"], capsys)


def test_degenerate_affine_in_predict_is_a_failure_line_not_a_traceback(tmp_path, capsys):
    from tests.inference.infer_factory import run_cli, write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "m.pt")
    path = tmp_path / "bad.nii"
    path.write_bytes(_with_sform(_header_bytes(tmp_path), np.zeros((3, 4))))
    code = run_cli(["predict", path, "-o", tmp_path / "out", "--model", ckpt, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "Traceback" not in err
    assert "degenerate voxel-to-world" in err
    assert not list(tmp_path.glob("out/*.nii*"))


def test_itk_header_claiming_huge_size_is_refused(tmp_path):
    path = tmp_path / "ok.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 4, 4), np.int16)), str(path))
    huge = tmp_path / "huge.nrrd"
    huge.write_bytes(path.read_bytes().replace(b"sizes: 4 4 4", b"sizes: 30000 30000 30000"))
    with pytest.raises(CorruptFileError, match=r"claims size \(30000, 30000, 30000\)"):
        read_volume(huge)
    assert read_volume(path).shape == (4, 4, 4)


def test_dicom_with_zero_pixel_spacing_is_refused(tmp_path, capsys):
    folder, _ = write_series(tmp_path / "series", n=1, spacing=(0.0, 0.0))
    with pytest.raises(CorruptFileError, match="degenerate voxel-to-world"):
        read_volume(folder)
    assert "degenerate" in _cli_error(["info", folder], capsys)


@pytest.mark.parametrize("command", ["info", "convert"])
def test_dicom_slice_off_the_slice_line_is_one_error_line(tmp_path, capsys, command):
    folder, _ = write_series(tmp_path / "series", n=4)
    odd = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(odd)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + 5.0, z]
    ds.save_as(odd)
    out = tmp_path / "out.nii.gz"
    line = _cli_error([command, folder] + ([out] if command == "convert" else []), capsys)
    assert f"{odd}: lies 5.00 mm off the line" in line
    assert not out.exists()


def test_check_affine_accepts_real_geometries_and_refuses_nan():
    check_affine(np.diag([-0.5, -0.5, 3.0, 1.0]), "x")
    tilted = np.eye(4)
    tilted[1, 2] = 0.3  # gantry tilt: sheared but invertible
    check_affine(tilted, "x")
    bad = np.eye(4)
    bad[0, 0] = np.nan
    with pytest.raises(CorruptFileError, match="NaN"):
        check_affine(bad, "scan.nii")
