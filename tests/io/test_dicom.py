"""DICOM series reading: sorting by position, rescale, geometry, series choice, bad folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import (
    DicomSeriesError,
    InputNotFoundError,
    UnsupportedFormatError,
)
from medseg.io import list_dicom_series, read_volume
from tests.io.dicom_factory import edit, write_series, write_slice


def test_series_sorted_by_position_not_file_name(tmp_path):
    folder, stack = write_series(tmp_path / "s", n=6, step=2.5)
    vol = read_volume(folder)
    # array[i, j, k] = stored pixel (row j, column i) of the k-th slice along +z, in HU
    expected = stack.transpose(1, 0, 2).astype(np.int32) - 1024
    np.testing.assert_array_equal(vol.array, expected)
    assert vol.array.dtype == np.int16
    # LPS (1,0,0)/(0,1,0) cosines -> RAS columns negated; PixelSpacing is (row, column)
    np.testing.assert_allclose(vol.affine[:3, 0], [-0.75, 0, 0])
    np.testing.assert_allclose(vol.affine[:3, 1], [0, -0.5, 0])
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, 2.5])
    np.testing.assert_allclose(vol.origin, [10.0, -20.0, 5.0])
    files = vol.metadata["dicom_files"]
    positions = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    assert positions == sorted(positions)
    assert files != sorted(files)  # the names were shuffled: order came from positions


def test_reversed_slice_order_gives_same_volume(tmp_path):
    a, _ = write_series(tmp_path / "a", n=4)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    # renumber the files in reverse: content identical, names permuted
    files = sorted(b.iterdir())
    for f in files:
        f.rename(f.with_name("x" + f.name))
    for new, f in zip(files, reversed(sorted(b.iterdir())), strict=True):
        f.rename(new)
    va, vb = read_volume(a), read_volume(b)
    np.testing.assert_array_equal(va.array, vb.array)
    np.testing.assert_allclose(va.affine, vb.affine)


def test_float_rescale_gives_float32(tmp_path):
    folder, stack = write_series(tmp_path / "s", n=3, slope=0.5, intercept=-10.0)
    vol = read_volume(folder)
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, stack.transpose(1, 0, 2) * 0.5 - 10.0)
    assert vol.metadata["rescale"]["slope"] == 0.5


def test_identifiers_kept_out_of_metadata_and_repr(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    vol = read_volume(folder)
    assert vol.identifiers["PatientID"] == "SECRET-ID-42"
    assert vol.identifiers["PatientName"] == "Doe^Jane"
    text = repr(vol) + repr(vol.metadata)
    for secret in ("SECRET-ID-42", "Doe^Jane", "19700101", "ACC123"):
        assert secret not in text


def test_oblique_series_affine(tmp_path):
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    row, col = (c, s, 0.0), (-s, c, 0.0)
    normal = np.cross(row, col)
    folder = tmp_path / "obl"
    folder.mkdir()
    for k in range(3):
        pos = np.array([1.0, 2.0, 3.0]) + normal * 1.5 * k
        write_slice(
            folder / f"{2 - k}.dcm",
            np.full((3, 4), k, np.uint16),
            tuple(pos),
            series_uid="1.2.3",
            orientation=(*row, *col),
            intercept=0,
        )
    vol = read_volume(folder)
    assert vol.array[0, 0].tolist() == [0, 1, 2]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.affine
    np.testing.assert_allclose(lps[:3, 0], np.array(row) * 0.75, atol=1e-5)
    np.testing.assert_allclose(lps[:3, 1], np.array(col) * 0.5, atol=1e-5)
    np.testing.assert_allclose(lps[:3, 2], normal * 1.5, atol=1e-4)


def test_missing_slice_names_the_gap(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=6, step=2.0)
    middle = [
        f for f in folder.iterdir() if float(pydicom.dcmread(f).ImagePositionPatient[2]) == 11.0
    ]
    middle[0].unlink()
    with pytest.raises(DicomSeriesError, match=r"uneven slice spacing") as err:
        read_volume(folder)
    msg = str(err.value)
    assert "9.00 -> 13.00 mm" in msg
    assert "missing at 11.00" in msg
    assert str(folder) in msg


def test_duplicate_positions_rejected(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    write_slice(folder / "dup.dcm", np.zeros((6, 4)), (-10.0, 20.0, 7.0), series_uid=uid)
    with pytest.raises(DicomSeriesError, match="share a position"):
        read_volume(folder)


def test_mixed_sizes_rejected(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    write_slice(folder / "odd.dcm", np.zeros((8, 8)), (-10.0, 20.0, 11.0), series_uid=uid)
    with pytest.raises(DicomSeriesError, match=r"slice size 8x8 differs"):
        read_volume(folder)


def test_mixed_orientation_rejected(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    edit(next(iter(sorted(folder.iterdir()))), ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    with pytest.raises(DicomSeriesError, match="orientation"):
        read_volume(folder)


def test_several_series_listed_and_selectable(tmp_path):
    folder = tmp_path / "mixed"
    write_series(folder, n=3, series_uid="1.2.3.4.100", description="T1 axial")
    write_series(folder / "sub", n=4, series_uid="1.2.3.4.200", description="T2 axial")
    listed = list_dicom_series(folder)
    assert [(s["uid"], s["description"], s["n_files"]) for s in listed] == [
        ("1.2.3.4.200", "T2 axial", 4),
        ("1.2.3.4.100", "T1 axial", 3),
    ]
    with pytest.raises(DicomSeriesError) as err:
        read_volume(folder)
    msg = str(err.value)
    assert "1.2.3.4.100" in msg
    assert "1.2.3.4.200" in msg
    assert "--series" in msg
    assert read_volume(folder, series="1.2.3.4.100").shape[2] == 3
    assert read_volume(folder, series="t2 AXIAL").shape[2] == 4  # description, any case
    assert read_volume(folder, series="1.2.3.4.2").shape[2] == 4  # unique prefix
    with pytest.raises(DicomSeriesError, match="matches 2 series"):
        read_volume(folder, series="1.2.3.4")
    with pytest.raises(DicomSeriesError, match="no series matches"):
        read_volume(folder, series="9.9")


def test_single_file_reads_one_slice(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    first = sorted(folder.iterdir())[0]
    vol = read_volume(first)
    assert vol.shape == (4, 6, 1)
    assert vol.spacing[2] == pytest.approx(2.0)  # SliceThickness


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="is empty"):
        read_volume(tmp_path / "empty")


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "scan.png").write_bytes(b"\x89PNG....")
    with pytest.raises(UnsupportedFormatError, match="none of its 2 file"):
        read_volume(folder)


def test_non_dicom_files_beside_a_series_are_ignored(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    (folder / "DICOMDIR.txt").write_text("index")
    assert read_volume(folder).shape == (4, 6, 3)


# ---- real data -------------------------------------------------------------------------


def test_totalseg_jpeg2000_series_in_hu(shared_data):
    vol = read_volume(shared_data / "totalseg" / "example_ct_dicom")
    assert vol.shape == (512, 512, 20)
    assert vol.metadata["transfer_syntax"] == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    assert vol.metadata["modality"] == "CT"
    assert vol.metadata["rescale"] == {
        "slope": 1.0,
        "intercept": -1024.0,
        "type": "HU",
        "varies_per_slice": False,
    }
    assert vol.array.min() == -1024  # air outside the body, in HU
    np.testing.assert_allclose(vol.spacing, (0.9765625, 0.9765625, 2.0))
    assert "".join(vol.orientation) == "LPS"
    # slices sorted along +z (S): the first file name is the top slice (z = -766.5)
    assert vol.origin[2] == pytest.approx(-804.5)
    assert len(vol.metadata["dicom_files"]) == 20


def test_vs_seg_mr_series(shared_data):
    vol = read_volume(shared_data / "vs_seg_dicom")
    assert vol.shape == (512, 512, 120)
    assert vol.metadata["modality"] == "MR"
    assert vol.metadata["series_description"] == "t1_mpr_tra_gk_v4"
    assert vol.metadata["series_uid"].startswith("1.3.6.1.4.1.14519")
    np.testing.assert_allclose(vol.spacing, (0.41015625, 0.41015625, 1.5), atol=1e-6)
    assert vol.identifiers["PatientID"] == "VS-SEG-001"
    assert "VS-SEG-001" not in repr(vol.metadata)


def test_real_missing_slice(shared_data, tmp_path):
    folder = tmp_path / "ct"
    shutil.copytree(shared_data / "totalseg" / "example_ct_dicom", folder)
    victim = sorted(folder.iterdir())[10]  # z = -786.5 mm (LPS) / instance 277
    victim.unlink()
    with pytest.raises(DicomSeriesError) as err:
        read_volume(folder)
    msg = str(err.value)
    assert "expected 2.000 mm" in msg
    assert "-788.50 -> -784.50 mm (gap 4.00)" in msg
    assert "missing at -786.50" in msg


def test_list_series_of_real_folders(shared_data):
    (ct,) = list_dicom_series(shared_data / "totalseg" / "example_ct_dicom")
    assert ct["uid"] == ""  # anonymised export: blank SeriesInstanceUID
    assert ct["key"].startswith("no-uid-")
    assert (ct["description"], ct["modality"], ct["n_files"]) == ("CT Body 3.0", "CT", 20)


def test_dicom_outputs_are_sorted_paths(shared_data):
    vol = read_volume(shared_data / "dcmqi" / "ct-3slice")
    names = [Path(f).name for f in vol.metadata["dicom_files"]]
    assert names == ["03.dcm", "02.dcm", "01.dcm"]  # ascending z, opposite to name order


def test_pixel_data_decoded_once_per_file(tmp_path, monkeypatch):
    """The folder scan reads headers only; each file's pixel data is parsed exactly once."""
    import medseg.io.dicom as dicom_mod
    import medseg.io.dicom_series as series_mod

    folder, _ = write_series(tmp_path / "s", n=7)
    calls: list[tuple[str, bool]] = []
    real = pydicom.dcmread

    def counting(path, *args, **kwargs):
        ds = real(path, *args, **kwargs)
        calls.append((Path(getattr(path, "name", path)).name, "PixelData" in ds))
        return ds

    monkeypatch.setattr(series_mod.pydicom, "dcmread", counting)
    monkeypatch.setattr(dicom_mod.pydicom, "dcmread", counting)
    read_volume(folder)
    with_pixels = [name for name, has_pixels in calls if has_pixels]
    assert sorted(with_pixels) == sorted(p.name for p in folder.iterdir())
    assert len(calls) == 2 * 7  # one header scan + one pixel read per file


def _dicomdir_for(series_folder: Path, staging: Path) -> Path:
    """A real DICOMDIR (pydicom FileSet) indexing ``series_folder``, copied beside its slices."""
    from pydicom.fileset import FileSet

    fs = FileSet()
    for path in sorted(series_folder.iterdir()):
        fs.add(pydicom.dcmread(path))
    fs.write(staging)
    target = series_folder / "DICOMDIR"
    shutil.copy(staging / "DICOMDIR", target)
    return target


def test_dicomdir_beside_a_series_is_not_a_second_series(tmp_path):
    from medseg.io.dicom_write import write_dicom_series
    from medseg.io.volume import Volume

    array = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3) - 100
    folder = write_dicom_series(Volume(array, np.diag([0.7, 0.8, 2.0, 1.0]), {}), tmp_path / "s")
    dicomdir = _dicomdir_for(folder, tmp_path / "staging")
    assert pydicom.dcmread(dicomdir).file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert len(list_dicom_series(folder)) == 1
    vol = read_volume(folder)
    np.testing.assert_allclose(vol.array, array, atol=1)


def test_header_without_modality_or_rows_is_ignored(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    index = pydicom.Dataset()
    index.file_meta = pydicom.dataset.FileMetaDataset()
    index.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # raw data
    index.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    index.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    index.SeriesInstanceUID = pydicom.uid.generate_uid()
    index.save_as(folder / "INDEX", enforce_file_format=True)
    assert read_volume(folder).shape == (4, 6, 3)


# ---- per-slice checks: position on the slice line, bits and sign -------------------------


def _slice_at(folder: Path, z: float) -> Path:
    return next(
        f for f in folder.iterdir() if float(pydicom.dcmread(f).ImagePositionPatient[2]) == z
    )


@pytest.mark.parametrize("z", [5.0, 9.0, 13.0])  # first, middle and last slice along the normal
def test_slice_shifted_off_the_slice_line_is_refused_naming_it(tmp_path, z):
    folder, _ = write_series(tmp_path / "s", n=5, step=2.0)
    odd = _slice_at(folder, z)
    edit(odd, ImagePositionPatient=[-10.0 + 5.0, 20.0, z])  # 5 mm along the rows, same z
    with pytest.raises(DicomSeriesError, match="off the line") as err:
        read_volume(folder)
    msg = str(err.value)
    assert str(odd) in msg
    assert "5.00 mm" in msg


def test_sub_tolerance_jitter_and_gantry_tilt_still_read(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=5, step=2.0)
    edit(_slice_at(folder, 9.0), ImagePositionPatient=[-10.0 + 0.02, 20.0, 9.0])  # < 0.1 pixel
    assert read_volume(folder).shape == (4, 6, 5)
    tilted = tmp_path / "tilt"  # every slice 0.5 mm further along y: a straight, sheared line
    tilted.mkdir()
    for k in range(4):
        write_slice(
            tilted / f"{k}.dcm", np.full((6, 4), k), (-10.0, 20.0 + 0.5 * k, 5.0 + 2 * k),
            series_uid="1.2.3", intercept=0,
        )  # fmt: skip
    vol = read_volume(tilted)
    assert vol.array[0, 0].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(vol.affine[:3, 2], [0, -0.5, 2.0])  # RAS: y negated


def test_slices_with_different_bits_and_sign_are_read_exactly(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    values = [
        (np.full((6, 4), 200), 8, False),  # the first slice along z: 8 bits unsigned
        (np.full((6, 4), 446), 16, False),  # 446 would wrap to 190 in uint8
        (np.full((6, 4), -1450), 16, True),  # -1450 would wrap to 64086 in uint16
    ]
    for k, (pixels, bits, signed) in enumerate(values):
        write_slice(
            folder / f"{k}.dcm", pixels, (-10.0, 20.0, 5.0 + 2 * k), series_uid="1.2.3",
            intercept=0, bits=bits, signed=signed,
        )  # fmt: skip
    vol = read_volume(folder)
    assert vol.array[0, 0].tolist() == [200, 446, -1450]
    assert vol.array.dtype == np.int16
    # with a CT rescale as well: every slice in HU, whatever its stored type
    for k in range(3):
        edit(folder / f"{k}.dcm", RescaleIntercept="-1024")
    assert read_volume(folder).array[0, 0].tolist() == [200 - 1024, 446 - 1024, -1450 - 1024]


def test_slice_with_other_pixel_shape_than_its_header_names_the_file(tmp_path):
    folder, _ = write_series(tmp_path / "s", n=3)
    odd = _slice_at(folder, 7.0)
    ds = pydicom.dcmread(odd)
    ds.SamplesPerPixel = 3  # a colour slice inside a greyscale series
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = 6, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((6, 4, 3), np.uint8).tobytes()
    ds.save_as(odd)
    with pytest.raises(UnsupportedFormatError, match="colour") as err:
        read_volume(folder)
    assert str(odd) in str(err.value)
