"""RTSTRUCT: mask -> contours -> mask on real CT slices (dcmqi), geometry read back from the
DICOM headers alone, a second reader (rt-utils), bad contours, and ``predict --format``."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from medseg.errors import GeometryMismatchError, UnsupportedFormatError
from medseg.io import read_dicom_seg, read_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.io.rtstruct import (
    fill_polygons,
    mask_contours,
    rasterise,
    read_rtstruct,
    write_rtstruct,
)
from medseg.io.volume import Volume

IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[:, :, 1] = True  # 8-neighbourhood within a slice


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def within_one_voxel_of_boundary(reference: np.ndarray, other: np.ndarray) -> bool:
    """Every voxel where ``other`` differs lies next to ``reference``'s in-plane boundary."""
    band = ndimage.binary_dilation(reference, IN_PLANE) & ~ndimage.binary_erosion(
        reference, IN_PLANE
    )
    return bool(np.all(band[reference != other]))


@pytest.fixture(scope="module")
def ct_and_labels(shared_data):
    """The dcmqi CT (3 real slices) and its five overlapping real segments on that grid."""
    ct = read_volume(shared_data / "dcmqi" / "ct-3slice")
    seg, segments = read_dicom_seg(shared_data / "dcmqi" / "partial_overlaps.dcm", reference=ct)
    liver, _ = read_dicom_seg(shared_data / "dcmqi" / "liver.dcm", reference=ct)
    names = ["background"] + [s["label"] for s in segments]
    return ct, seg, names, liver


def test_round_trip_on_real_ct_is_exact(ct_and_labels, tmp_path):
    ct, seg, names, _ = ct_and_labels
    path = write_rtstruct(seg, ct.metadata["dicom_files"], names, tmp_path / "rt.dcm")
    structure = read_rtstruct(path)
    assert [roi.name for roi in structure.rois] == names[1:]
    assert structure.series_uids == [ct.metadata["series_uid"]]
    masks = rasterise(structure, ct)
    for value, name in enumerate(names[1:], start=1):
        reference = seg.array == value
        assert reference.any()
        assert dice(masks[name], reference) >= 0.98
        np.testing.assert_array_equal(masks[name], reference)  # pixel-edge contours: exact
    # boundary error: every contour vertex sits on a pixel edge between an inside voxel and
    # an outside one (both among the voxel centres around it), so under one voxel away
    inverse = np.linalg.inv(ct.affine)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    for roi in structure.rois:
        reference = np.pad(seg.array == names.index(roi.name), ((1, 1), (1, 1), (0, 0)))
        for contour in roi.contours:
            voxels = (inverse @ flip @ np.c_[contour, np.ones(len(contour))].T)[:3].T
            voxels += np.array([1.0, 1.0, 0.0])  # the padding
            i0, j0 = np.floor(voxels[:, 0]).astype(int), np.floor(voxels[:, 1]).astype(int)
            k = np.round(voxels[:, 2]).astype(int)
            around = np.stack(
                [reference[i0 + di, j0 + dj, k] for di in (0, 1) for dj in (0, 1)], axis=1
            )
            assert around.any(axis=1).all()
            assert (~around).any(axis=1).all()
            # ... halfway between them: one coordinate on a pixel edge (x.5), as the 0.5
            # iso-line of the mask runs (not through boundary pixel centres)
            halfway = np.abs(voxels[:, :2] - np.floor(voxels[:, :2]) - 0.5).min(axis=1)
            np.testing.assert_allclose(halfway, 0.0, atol=1e-3)


def test_holes_and_separate_components_round_trip():
    mask = np.zeros((20, 16), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:8, 5:9] = False  # a hole
    mask[14:18, 3:5] = True  # a second component
    mask[15, 12] = True  # a single voxel
    contours = mask_contours(mask)
    assert len(contours) == 4
    np.testing.assert_array_equal(fill_polygons(contours, mask.shape), mask)


def test_contours_read_back_from_the_dicom_headers_alone(tmp_path):
    """Non-square pixels and a flipped grid: the points, mapped with each referenced image's own
    ImagePositionPatient/Orientation/PixelSpacing (not medseg's affine), fill the same pixels."""
    from matplotlib.path import Path as PolyPath

    affine = np.diag([-0.6, 0.9, 2.0, 1.0])
    affine[:3, 3] = [30.0, -12.0, 40.0]
    array = np.zeros((14, 10, 4), dtype=np.int16)
    volume = Volume(array, affine, {"modality": "CT"})
    folder = write_dicom_series(volume, tmp_path / "ct")
    ct = read_volume(folder)
    label = np.zeros(ct.shape, dtype=np.uint8)
    label[2:9, 1:4, 1] = 1
    label[3:5, 5:9, 2] = 1
    path = write_rtstruct(
        ct.with_array(label), ct.metadata["dicom_files"], ["bg", "lesion"], tmp_path / "rt.dcm"
    )
    headers = {
        h.SOPInstanceUID: h
        for h in (pydicom.dcmread(f, stop_before_pixels=True) for f in ct.metadata["dicom_files"])
    }
    ds = pydicom.dcmread(path)
    filled = {}
    rows, cols = np.mgrid[0 : ct.shape[1], 0 : ct.shape[0]]
    centres = np.c_[cols.ravel(), rows.ravel()]
    for contour in ds.ROIContourSequence[0].ContourSequence:
        image = headers[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        offset = points - np.asarray(image.ImagePositionPatient, dtype=float)
        orient = np.asarray(image.ImageOrientationPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in image.PixelSpacing)
        col = offset @ orient[:3] / col_spacing
        row = offset @ orient[3:] / row_spacing
        inside = PolyPath(np.c_[col, row]).contains_points(centres).reshape(rows.shape)
        filled[image.SOPInstanceUID] = filled.get(image.SOPInstanceUID, False) ^ inside
    for k, file in enumerate(ct.metadata["dicom_files"]):
        uid = pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID
        np.testing.assert_array_equal(
            filled.get(uid, np.zeros_like(rows, bool)), label[:, :, k].T == 1
        )


def test_rt_utils_reads_what_we_write(ct_and_labels, tmp_path, shared_data):
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils (dev extra) is the second reader")
    ct, _, _, liver = ct_and_labels
    path = write_rtstruct(liver, ct.metadata["dicom_files"], ["bg", "Liver"], tmp_path / "rt.dcm")
    loaded = rt_utils.RTStructBuilder.create_from(
        str(shared_data / "dcmqi" / "ct-3slice"), str(path)
    )
    theirs = loaded.get_roi_mask_by_name("Liver").transpose(1, 0, 2)  # (rows, cols) -> [i, j]
    reference = liver.array == 1
    # rt-utils rounds points to whole pixels and fills boundary pixels: a little larger
    assert dice(theirs, reference) >= 0.98
    assert within_one_voxel_of_boundary(reference, theirs)


def test_we_read_what_rt_utils_writes(ct_and_labels, shared_data, tmp_path):
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils (dev extra) is the second writer")
    ct, _, _, liver = ct_and_labels
    reference = liver.array == 1
    theirs = rt_utils.RTStructBuilder.create_new(str(shared_data / "dcmqi" / "ct-3slice"))
    theirs.add_roi(mask=reference.transpose(1, 0, 2), name="Liver")
    theirs.save(str(tmp_path / "theirs.dcm"))
    ours = rasterise(read_rtstruct(tmp_path / "theirs.dcm"), ct)["Liver"]
    assert dice(ours, reference) >= 0.98
    assert within_one_voxel_of_boundary(reference, ours)


def _moved(path, dx: float, out):
    ds = pydicom.dcmread(path)
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 0] += dx
    contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    ds.save_as(out)
    return out


def test_contour_outside_the_image_is_refused(ct_and_labels, tmp_path):
    ct, _, _, liver = ct_and_labels
    path = write_rtstruct(liver, ct.metadata["dicom_files"], ["bg", "Liver"], tmp_path / "rt.dcm")
    bad = _moved(path, 1000.0, tmp_path / "outside.dcm")
    with pytest.raises(
        GeometryMismatchError, match=r"outside\.dcm: ROI 'Liver'.*outside the image"
    ):
        rasterise(read_rtstruct(bad), ct)


def test_contour_between_slices_is_refused(ct_and_labels, tmp_path):
    ct, _, _, liver = ct_and_labels
    path = write_rtstruct(liver, ct.metadata["dicom_files"], ["bg", "Liver"], tmp_path / "rt.dcm")
    ds = pydicom.dcmread(path)
    contours = ds.ROIContourSequence[0].ContourSequence
    contour = contours[len(contours) // 2]  # the middle slice's: half a slice stays inside
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 2] += 0.5  # half a slice (1 mm apart)
    contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    ds.save_as(tmp_path / "between.dcm")
    with pytest.raises(GeometryMismatchError, match="not on one slice"):
        rasterise(read_rtstruct(tmp_path / "between.dcm"), ct)


def test_a_seg_is_not_an_rtstruct(shared_data):
    with pytest.raises(UnsupportedFormatError, match="expected an RTSTRUCT"):
        read_rtstruct(shared_data / "dcmqi" / "liver.dcm")


def test_predict_format_rtstruct(tmp_path, capsys):
    from tests.inference.infer_factory import blob_volume, run_cli, write_tiny_checkpoint

    model = write_tiny_checkpoint(tmp_path / "tiny.pt")
    series = write_dicom_series(blob_volume(shape=(24, 20, 6)), tmp_path / "scan", modality="MR")
    out = tmp_path / "out"
    args = ["predict", series, "-o", out, "--model", model, "--device", "cpu", "-q"]
    assert run_cli([*args, "--format", "rtstruct"]) == 0, capsys.readouterr().err
    assert not (out / "scan_seg.dcm").exists()
    structure = read_rtstruct(out / "scan_rtstruct.dcm")
    ds = pydicom.dcmread(out / "scan_rtstruct.dcm")
    assert "research use" in ds.SeriesDescription
    assert ds.ApprovalStatus == "UNAPPROVED"
    scan = read_volume(series)
    assert structure.series_uids == [scan.metadata["series_uid"]]
    mask = read_volume(out / "scan.nii.gz").array
    masks = rasterise(structure, scan)
    assert len(masks) == 1
    (name,) = masks
    np.testing.assert_array_equal(masks[name], mask == 1)
    assert run_cli([*args, "--format", "rtstrct"]) == 2
    assert "error: --format rtstrct: expected seg, rtstruct" in capsys.readouterr().err


def test_seg_for_a_series_with_an_empty_character_set(ct_and_labels, tmp_path):
    """The dcmqi CT has SpecificCharacterSet '' (allowed: the default); highdicom refused it."""
    import highdicom as hd

    from medseg.inference.dicom_seg import write_dicom_seg

    ct, _, _, liver = ct_and_labels
    assert pydicom.dcmread(ct.metadata["dicom_files"][0]).SpecificCharacterSet == ""
    path = write_dicom_seg(liver, ct.metadata["dicom_files"], ["bg", "Liver"], tmp_path / "s.dcm")
    assert int(hd.seg.segread(str(path)).pixel_array.sum()) == int(liver.array.sum())
