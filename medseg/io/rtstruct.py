"""RTSTRUCT (DICOM RT Structure Set): read, rasterise onto a series' grid, write from a mask.

Geometry. Contour points are LPS mm in the patient frame; a series' :class:`Volume` maps
voxel ``[i, j, k]`` to RAS mm, so a point's voxel coordinates are
``inv(affine) @ LPS_TO_RAS @ point``. Each closed contour must lie on one slice ``k``.

* Mask -> contours: the 0.5 iso-line of each slice (marching squares, ``contourpy``), i.e. on
  the pixel edges halfway between a voxel inside and one outside, not through boundary pixel
  centres. Collinear points are dropped; holes become separate contours.
* Contours -> mask: a voxel is inside when its centre is, by the even-odd rule over every
  contour of the ROI on that slice (scan lines, half-open so a centre on an edge is decided
  once), which is how holes drawn as separate contours come out.

With both rules mask -> contours -> mask is exact (each voxel centre stays on its side of the
iso-line). Why not a library: highdicom writes no RT Structure Set; rt-utils (MIT, 1.2.7)
scales the row direction by PixelSpacing[0] (the spacing between rows: wrong for non-square
pixels), rounds points to whole pixels and fills them with OpenCV including boundary pixels,
and traces contours through boundary pixel centres, so a centre-inside reader loses half a
pixel all round; it also needs OpenCV. The tests use rt-utils as an independent second reader.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.errors import CorruptFileError, GeometryMismatchError, UnsupportedFormatError
from medseg.io.atomic import atomic_path
from medseg.io.dicom_series import checked_sources, dcmread_bounded, identifiers_of
from medseg.io.volume import LPS_TO_RAS, Volume

logger = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RTReferencedStudySequence names
# SeriesDescription is LO (64 characters): a short research notice
RTSTRUCT_NOTICE = "research use, not for diagnosis"
# A contour's points may sit this far (in slices) off a slice plane: rounding of the
# positions, never a contour drawn between slices or on another series
SLICE_TOLERANCE = 0.1
EDGE_TOLERANCE = 1e-3  # voxels beyond the outer pixel edge still counted as inside the image
_COLOURS = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (255, 0, 255), (0, 200, 200))


@dataclasses.dataclass
class Roi:
    """One ROI of a structure set: ``contours`` are ``(n, 3)`` LPS mm closed polygons."""

    number: int
    name: str
    contours: list[np.ndarray]


@dataclasses.dataclass
class StructureSet:
    """An RTSTRUCT as read: its ROIs, the image series and frame of reference it refers to."""

    path: Path
    rois: list[Roi]
    series_uids: list[str]
    frame_of_reference_uid: str
    identifiers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def names(self) -> list[str]:
        return sorted({roi.name for roi in self.rois})


def is_rtstruct(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop = str(
        ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")
    )
    return sop == RTSTRUCT_SOP_CLASS or str(ds.get("Modality", "")).upper() == "RTSTRUCT"


def referenced_series(ds: Dataset) -> list[str]:
    """SeriesInstanceUIDs of the image series an RTSTRUCT's contours were drawn on."""
    uids = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", ()):
        for study in frame.get("RTReferencedStudySequence", ()):
            for series in study.get("RTReferencedSeriesSequence", ()):
                uid = str(series.get("SeriesInstanceUID", "") or "")
                if uid and uid not in uids:
                    uids.append(uid)
    return uids


def read_rtstruct(path: str | Path) -> StructureSet:
    """The ROIs and references of the RTSTRUCT file ``path`` (closed planar contours only;
    points and open contours are skipped with a log line)."""
    path = Path(path)
    try:
        ds = dcmread_bounded(path)
    except Exception as err:  # pydicom raises many types on a damaged file
        raise CorruptFileError(
            f"{path}: not a readable DICOM file ({type(err).__name__}); export it again"
        ) from err
    if not is_rtstruct(ds):
        raise UnsupportedFormatError(
            f"{path}: is a {ds.get('Modality', 'non-RTSTRUCT')} object, expected an RTSTRUCT "
            "(RT Structure Set); give the structure set file"
        )
    names = {
        int(item.ROINumber): str(item.get("ROIName", "") or f"ROI {item.ROINumber}")
        for item in ds.get("StructureSetROISequence", ())
    }
    rois = []
    skipped = 0
    for item in ds.get("ROIContourSequence", ()):
        number = int(item.ReferencedROINumber)
        contours = []
        for contour in item.get("ContourSequence", ()):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                skipped += 1
                continue
            data = np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)
            if data.size % 3:
                raise CorruptFileError(
                    f"{path}: ROI {names.get(number, number)!r} has a contour of {data.size} "
                    "coordinates; expected x, y, z triples: export the structure set again"
                )
            if data.size < 9:  # one or two points enclose no voxel centre (some writers' specks)
                skipped += 1
                continue
            contours.append(data.reshape(-1, 3))
        rois.append(Roi(number, names.get(number, f"ROI {number}"), contours))
    if skipped:
        logger.info("%s: skipped %d point/open/degenerate contour(s)", path, skipped)
    frames = ds.get("ReferencedFrameOfReferenceSequence", ())
    frame_uid = str(frames[0].get("FrameOfReferenceUID", "")) if frames else ""
    return StructureSet(path, rois, referenced_series(ds), frame_uid, identifiers_of(ds))


def fill_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Voxels of an ``(I, J)`` slice whose centres lie inside ``polygons`` (``(n, 2)`` arrays of
    ``(i, j)`` voxel coordinates), by the even-odd rule over all of them (holes)."""
    n_i, n_j = shape
    rows, xs = [], []
    for poly in polygons:
        x0, y0 = poly[:, 0], poly[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        # half-open [low, high): a scan line through a vertex crosses exactly once (or twice)
        first = np.maximum(np.ceil(np.minimum(y0, y1)).astype(np.int64), 0)
        last = np.minimum(np.ceil(np.maximum(y0, y1)).astype(np.int64) - 1, n_j - 1)
        count = np.maximum(last - first + 1, 0)
        edge = np.repeat(np.arange(len(x0)), count)
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        row = np.repeat(first, count) + offset
        t = (row - y0[edge]) / (y1[edge] - y0[edge])
        rows.append(row)
        xs.append(x0[edge] + t * (x1[edge] - x0[edge]))
    inside = np.zeros((n_j, n_i + 1), dtype=np.int32)
    if rows:
        row, x = np.concatenate(rows), np.concatenate(xs)
        order = np.lexsort((x, row))
        row, x = row[order], x[order]  # every row holds an even number of crossings
        start = np.clip(np.ceil(x[0::2]), 0, n_i).astype(np.int64)
        stop = np.clip(np.ceil(x[1::2]), 0, n_i).astype(np.int64)
        np.add.at(inside, (row[0::2], start), 1)
        np.add.at(inside, (row[0::2], stop), -1)
    return (np.cumsum(inside, axis=1)[:, :n_i] > 0).T


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    before = np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0)
    a, b = points - before, after - points
    turn = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) > 1e-9
    return points[turn] if turn.sum() >= 3 else points


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours ``(n, 2)`` in ``(i, j)`` voxel coordinates around the ``True`` voxels of
    an ``(I, J)`` slice: the 0.5 iso-line, on pixel edges (see the module docstring)."""
    import contourpy  # matplotlib's contouring library

    padded = np.pad(np.asarray(mask, dtype=np.float64), 1).T  # rows j, columns i
    generator = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate)
    contours = []
    for line in generator.lines(0.5):
        points = np.asarray(line, dtype=np.float64) - 1.0  # undo the padding
        if len(points) > 1 and np.allclose(points[0], points[-1]):
            points = points[:-1]  # DICOM closes CLOSED_PLANAR contours implicitly
        if len(points) >= 3:
            contours.append(_drop_collinear(points))
    return contours


def _voxel_coordinates(points_lps: np.ndarray, reference: Volume) -> np.ndarray:
    ras = LPS_TO_RAS @ np.c_[points_lps, np.ones(len(points_lps))].T
    return (np.linalg.inv(reference.affine) @ ras)[:3].T


def _contour_slice(voxels: np.ndarray, reference: Volume, where: str) -> int:
    """The slice a contour lies on; raises when it leaves the image or lies between slices."""
    n_i, n_j, n_k = reference.shape
    low = np.array([-0.5 - EDGE_TOLERANCE, -0.5 - EDGE_TOLERANCE, -SLICE_TOLERANCE])
    high = np.array(
        [n_i - 0.5 + EDGE_TOLERANCE, n_j - 0.5 + EDGE_TOLERANCE, n_k - 1 + SLICE_TOLERANCE]
    )
    k = voxels[:, 2]
    if np.any(voxels < low) or np.any(voxels > high):
        extent = f"{voxels.min(axis=0).round(1).tolist()} to {voxels.max(axis=0).round(1).tolist()}"
        raise GeometryMismatchError(
            f"{where}: contour points reach voxels {extent} (i, j, k), outside the image "
            f"{list(reference.shape)}; the RTSTRUCT was drawn on another (larger) series: give the "
            "series it references, or fix the contour in the planning system"
        )
    slice_k = round(float(np.median(k)))
    if np.max(np.abs(k - slice_k)) > SLICE_TOLERANCE:
        raise GeometryMismatchError(
            f"{where}: contour lies at slice position {float(k.min()):.2f}..{float(k.max()):.2f}, "
            "not on one slice of the image; expected contours drawn on the referenced series' "
            "slices: give that series (same slice positions)"
        )
    return slice_k


def rasterise(structure: StructureSet, reference: Volume) -> dict[str, np.ndarray]:
    """Boolean masks ``(I, J, K)`` on ``reference``'s grid, one per ROI name (ROIs sharing a
    name are merged). Contours outside the image or between slices raise
    :class:`GeometryMismatchError` naming the file and ROI."""
    masks: dict[str, np.ndarray] = {}
    for roi in structure.rois:
        where = f"{structure.path}: ROI {roi.name!r}"
        per_slice: dict[int, list[np.ndarray]] = {}
        for contour in roi.contours:
            voxels = _voxel_coordinates(contour, reference)
            k = _contour_slice(voxels, reference, where)
            per_slice.setdefault(k, []).append(voxels[:, :2])
        mask = masks.setdefault(roi.name, np.zeros(reference.shape, dtype=bool))
        for k, polygons in per_slice.items():
            mask[:, :, k] |= fill_polygons(polygons, reference.shape[:2])
    return masks


def _ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _base(first: Dataset, series_description: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    # the patient and study of the images, so PACS and planning systems file it beside them
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "ReferringPhysicianName", "StudyDescription"):  # fmt: skip
        setattr(ds, keyword, first.get(keyword, ""))
    now = datetime.datetime.now()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(first.get("SeriesNumber", 0) or 0) + 2000
    ds.InstanceNumber = 1
    ds.SeriesDescription = series_description[:64]
    ds.Manufacturer = "medseg"
    ds.SoftwareVersions = __version__
    ds.StructureSetLabel = "medseg"
    ds.StructureSetDescription = RESEARCH_USE_NOTICE
    ds.StructureSetDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ApprovalStatus = "UNAPPROVED"  # a model's output, never a clinical plan's structures
    return ds


def _frame_of_reference(first: Dataset, datasets: Sequence[Dataset]) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = first.get("SeriesInstanceUID", "")
    series.ContourImageSequence = DicomSequence(
        [_ref(ds.SOPClassUID, ds.SOPInstanceUID) for ds in datasets]
    )
    study = _ref(DETACHED_STUDY_SOP_CLASS, first.get("StudyInstanceUID", ""))
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.get("FrameOfReferenceUID", "")
    frame.RTReferencedStudySequence = DicomSequence([study])
    return frame


def _roi_contours(mask: np.ndarray, affine_lps: np.ndarray, images: dict[int, Dataset]) -> list:
    contours = []
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        for points in mask_contours(mask[:, :, k]):
            voxels = np.c_[points, np.full(len(points), k), np.ones(len(points))]
            lps = (affine_lps @ voxels.T)[:3].T
            contour = Dataset()
            image = images[int(k)]
            contour.ContourImageSequence = DicomSequence(
                [_ref(image.SOPClassUID, image.SOPInstanceUID)]
            )
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(lps)
            contour.ContourNumber = len(contours) + 1
            contour.ContourData = [f"{v:.4f}" for v in lps.ravel()]  # DS: at most 16 characters
            contours.append(contour)
    return contours


def write_rtstruct(
    label: Volume,
    source_files: Sequence[Any],
    class_names: Sequence[str],
    path: str | Path,
    *,
    model_name: str = "medseg",
    overwrite: bool = False,
) -> Path:
    """Write ``label`` (integer classes on the source series' grid) as an RTSTRUCT.

    ``source_files``: the series' files (``Volume.metadata["dicom_files"]``) or their headers.
    One ROI per foreground class (``class_names[1:]``; an empty class keeps its ROI, without
    contours), contours per slice, each referencing its source image by geometry. Marked as
    research output: SeriesDescription, StructureSetDescription and ApprovalStatus UNAPPROVED.
    """
    path = Path(path)
    datasets, order = checked_sources(label, source_files, path, overwrite=overwrite)
    images = dict(zip(order, datasets, strict=True))
    first = images[0]
    ds = _base(first, f"{model_name} RTSTRUCT, {RTSTRUCT_NOTICE}")
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_frame_of_reference(first, datasets)])
    array = np.asarray(label.array)
    affine_lps = LPS_TO_RAS @ label.affine
    structure_rois, roi_contours, observations = [], [], []
    for number, name in enumerate(class_names[1:], start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.get("FrameOfReferenceUID", "")
        roi.ROIName = str(name)[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        structure_rois.append(roi)
        item = Dataset()
        item.ROIDisplayColor = list(_COLOURS[(number - 1) % len(_COLOURS)])
        item.ReferencedROINumber = number
        contours = _roi_contours(array == number, affine_lps, images)
        if contours:
            item.ContourSequence = DicomSequence(contours)
        roi_contours.append(item)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = ""
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(structure_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return path
