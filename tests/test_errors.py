"""Errors a user can act on (issue 2, item 6): library exceptions and the CLI's one line.

Each bad input is tried through the library (exception type + message naming the path, what
was found and the fix) and through the CLI (one line ``error: ...``, exit code 2, no
traceback; ``--debug`` re-raises with the traceback). Nothing is written when a command fails.
"""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.errors import (
    CorruptFileError,
    DicomSeriesError,
    DimensionError,
    GeometryMismatchError,
    InputNotFoundError,
    MedsegError,
    OverwriteError,
    UnsupportedFormatError,
)
from medseg.io import Volume, check_same_grid, read_volume, write_volume


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _cli_error(capsys, argv) -> str:
    """Run the CLI expecting a user error; return its single error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert not [
        ln for ln in err.splitlines() if ln and not ln.startswith(("error: ", "INFO ", "WARNING "))
    ]
    return lines[0]


@pytest.fixture
def bad_inputs(tmp_path):
    """name -> (path, expected exception, message fragments, extra CLI args)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "report.txt").write_text("not an image")
    good = _nifti(tmp_path / "ok.nii.gz", np.arange(6000, dtype=np.int16).reshape(10, 20, 30))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    four = _nifti(tmp_path / "four.nii.gz", np.zeros((3, 4, 5, 2), np.float32))
    junk = tmp_path / "scan.xyz"
    junk.write_text("?")
    return {
        "missing": (
            tmp_path / "nope.nii.gz",
            InputNotFoundError,
            ["nope.nii.gz", "does not exist"],
        ),
        "empty_folder": (
            empty,
            InputNotFoundError,
            ["empty", "is empty", "expected a DICOM series"],
        ),
        "non_dicom_folder": (
            notes,
            UnsupportedFormatError,
            ["notes", "none of its 1 file", "report.txt"],
        ),
        "truncated_gz": (cut, CorruptFileError, ["cut.nii.gz", "truncated", "copy it again"]),
        "four_d": (four, DimensionError, ["four.nii.gz", "4D with 2", "--channel N", "0..1"]),
        "unknown_suffix": (junk, UnsupportedFormatError, ["scan.xyz", "expected a .nii"]),
    }


@pytest.mark.parametrize(
    "name",
    ["missing", "empty_folder", "non_dicom_folder", "truncated_gz", "four_d", "unknown_suffix"],
)
def test_bad_input_library_and_cli(bad_inputs, tmp_path, capsys, name):
    path, exc, fragments = bad_inputs[name]
    with pytest.raises(exc) as err:
        read_volume(path)
    for fragment in fragments:
        assert fragment in str(err.value)
    for command in ("info", "convert"):
        out = tmp_path / f"out_{command}.nii.gz"
        argv = [command, str(path)] + ([str(out)] if command == "convert" else [])
        line = _cli_error(capsys, argv)
        assert fragments[0] in line
        assert fragments[1] in line
        assert not out.exists()  # nothing written
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out_")]
    assert leftovers == []  # no temp files left behind either


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(InputNotFoundError):
        main(["--debug", "info", str(tmp_path / "nope.nii.gz")])


def test_missing_slice_real_series(shared_data, tmp_path, capsys):
    folder = tmp_path / "ct"
    shutil.copytree(shared_data / "totalseg" / "example_ct_dicom", folder)
    sorted(folder.iterdir())[5].unlink()  # a middle slice (z = -776.5 mm)
    with pytest.raises(DicomSeriesError, match=r"missing at -776\.50"):
        read_volume(folder)
    out = tmp_path / "ct.nii.gz"
    line = _cli_error(capsys, ["convert", str(folder), str(out)])
    assert "uneven slice spacing" in line
    assert "-778.50 -> -774.50 mm" in line
    assert not out.exists()


def test_mixed_series_real(shared_data, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(shared_data / "dcmqi" / "ct-3slice", mixed, dirs_exist_ok=True)
    shutil.copytree(shared_data / "vs_seg_dicom", mixed, dirs_exist_ok=True)
    out = tmp_path / "x.nii.gz"
    line = _cli_error(capsys, ["convert", str(mixed), str(out)])
    assert "holds 2 DICOM series" in line
    assert "1.3.6.1.4.1.14519.5.2.1.149357697745643823053302398129943470751" in line
    assert "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1" in line
    assert "--series" in line
    assert not out.exists()
    main(["convert", str(mixed), str(out), "--series", "1.2.392"])
    assert read_volume(out).shape == (512, 512, 3)


def test_shape_and_geometry_mismatch(tmp_path, capsys):
    image = Volume(np.zeros((4, 5, 6), np.int16), np.eye(4), {"source": "img.nii.gz"})
    small = Volume(np.zeros((4, 5, 5), np.uint8), np.eye(4), {"source": "mask.nii.gz"})
    with pytest.raises(GeometryMismatchError, match=r"mask\.nii\.gz: mask shape \(4, 5, 5\)"):
        check_same_grid(image, small)
    flipped_aff = np.diag([-1.0, 1, 1, 1])
    flipped = Volume(np.zeros((4, 5, 6), np.uint8), flipped_aff, {"source": "mask.nii.gz"})
    with pytest.raises(GeometryMismatchError, match="orientation LAS vs RAS"):
        check_same_grid(image, flipped)
    # via the CLI: info IMAGE --mask MASK
    img_path = _nifti(tmp_path / "img.nii.gz", np.zeros((4, 5, 6), np.int16))
    mask_path = _nifti(tmp_path / "mask.nii.gz", np.zeros((4, 5, 6), np.uint8), flipped_aff)
    line = _cli_error(capsys, ["info", str(img_path), "--mask", str(mask_path)])
    assert "geometry differs" in line
    assert "--align" in line
    main(["info", str(img_path), "--mask", str(mask_path), "--align"])
    assert "(exact)" in capsys.readouterr().out


def test_overwrite_protection_cli(tmp_path, capsys):
    src = _nifti(tmp_path / "img.nii.gz", np.ones((3, 4, 5), np.int16))
    before = src.read_bytes()
    line = _cli_error(capsys, ["convert", str(src), str(src), "--overwrite"])
    assert "would overwrite the input" in line
    assert src.read_bytes() == before
    out = tmp_path / "copy.nii.gz"
    main(["convert", str(src), str(out)])
    line = _cli_error(capsys, ["convert", str(src), str(out)])
    assert "already exists" in line
    assert "--overwrite" in line
    main(["convert", str(src), str(out), "--overwrite"])


def test_failed_write_leaves_nothing(tmp_path):
    vol = Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), {})
    with pytest.raises(UnsupportedFormatError, match=r"\.png: cannot write"):
        write_volume(vol, tmp_path / "x.png")
    sheared = Volume(
        np.zeros((2, 2, 2), np.uint8),
        np.array([[1, 0, 0.5, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
        {},
    )
    with pytest.raises(UnsupportedFormatError):
        write_volume(sheared, tmp_path / "x.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_every_error_is_a_medseg_error():
    for exc in (
        CorruptFileError,
        DicomSeriesError,
        DimensionError,
        GeometryMismatchError,
        InputNotFoundError,
        OverwriteError,
        UnsupportedFormatError,
    ):
        assert issubclass(exc, MedsegError)


def test_gzip_of_garbage(tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"\0" * 400))
    line = _cli_error(capsys, ["info", str(bad)])
    assert "bad.nii.gz" in line
