"""DICOM series / single-file reading with pydicom -> :class:`Volume` (RAS+, ``[i, j, k]``).

Geometry comes from the headers (never from file names): slices are sorted by their
position along the slice normal ``n = row_cosines x column_cosines``, so ``k`` increases
along ``n``; ``i`` runs along a row (columns), ``j`` down the columns (rows). The LPS affine
built from ImagePositionPatient / ImageOrientationPatient / PixelSpacing is converted to RAS
by negating its first two rows. Pixel data of each file is decoded exactly once (headers are
scanned first without pixels, see :mod:`medseg.io.dicom_series`).

Every slice is checked against the series before it is placed (``docs/io.md``, "DICOM series
checks"): same Rows/Columns, orientation (cosines within 1e-4, highdicom's orthogonality
tolerance), PixelSpacing (within 1e-4 mm), an even step along the normal (within 1 % of the
step, highdicom's default ``rtol``) and a position on one straight line through the series
(within 0.1 pixel in-plane). Slices whose BitsAllocated/PixelRepresentation differ are read
exactly, each in its own stored type, into one type holding all of them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pydicom

from medseg.errors import CorruptFileError, DicomSeriesError, UnsupportedFormatError
from medseg.io.dicom_series import (
    DicomSeries,
    dcmread_bounded,
    identifiers_of,
    read_header,
    scan_folder,
    select_series,
)
from medseg.io.volume import LPS_TO_RAS, Volume, check_affine, checked_voxels

logger = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _floats(value: object, n: int, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError) as err:
        raise DicomSeriesError(f"{path}: {what} missing or unreadable ({value!r})") from err
    if arr.shape != (n,):
        raise DicomSeriesError(f"{path}: {what} has {arr.size} values, expected {n}")
    return arr


def slice_geometry(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(position, orientation(6), pixel_spacing(row, col))`` of one slice, LPS mm."""
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if keyword not in ds:
            raise DicomSeriesError(
                f"{path}: lacks {keyword}, so its position in the patient is unknown; "
                "medseg needs cross-sectional images (CT/MR/PET), not e.g. a scout or report"
            )
    return (
        _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", path),
        _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path),
        _floats(ds.PixelSpacing, 2, "PixelSpacing", path),
    )


ORIENTATION_ATOL = 1e-4  # direction cosines; highdicom's orthogonality tolerance
PIXEL_SPACING_ATOL = 1e-4  # mm
STEP_RTOL = 0.01  # of the slice step, along the normal; highdicom's default rtol
# In-plane distance from the slice line, as a fraction of the smaller pixel spacing: a tenth
# of a pixel is invisible in a segmentation yet far above the rounding of positions written
# with a few decimals; a slice from another stack or a hand-edited header is far beyond it.
OFF_LINE_PIXELS = 0.1


def _check_consistent(series: DicomSeries, orient: np.ndarray, spacing: np.ndarray) -> None:
    # compare with the most common geometry, so the error names the odd file even when it
    # happens to sort first
    geometry = [
        slice_geometry(ds, path) for path, ds in zip(series.files, series.headers, strict=True)
    ]
    keys = [
        (ds.get("Rows"), ds.get("Columns"), tuple(np.round(o, 3)), tuple(np.round(s, 4)))
        for ds, (_, o, s) in zip(series.headers, geometry, strict=True)
    ]
    common = max(set(keys), key=keys.count)
    ref = keys.index(common)
    first, (_, orient, spacing) = series.headers[ref], geometry[ref]
    series = dataclasses.replace(
        series,
        files=[series.files[ref], *series.files[:ref], *series.files[ref + 1 :]],
        headers=[first, *series.headers[:ref], *series.headers[ref + 1 :]],
    )
    size = (first.get("Rows"), first.get("Columns"))
    for path, ds in zip(series.files, series.headers, strict=True):
        if (ds.get("Rows"), ds.get("Columns")) != size:
            raise DicomSeriesError(
                f"{path}: slice size {ds.get('Rows')}x{ds.get('Columns')} differs from "
                f"{series.files[0].name} ({size[0]}x{size[1]}); the series mixes image sizes "
                "(e.g. a localizer): remove the odd files or pick another series"
            )
        _, o, s = slice_geometry(ds, path)
        if not np.allclose(o, orient, atol=ORIENTATION_ATOL):
            raise DicomSeriesError(
                f"{path}: orientation {np.round(o, 4).tolist()} differs from "
                f"{series.files[0].name} {np.round(orient, 4).tolist()}; a series must share one "
                "orientation: remove the odd files (e.g. localizers) or pick another series"
            )
        if not np.allclose(s, spacing, atol=PIXEL_SPACING_ATOL):
            raise DicomSeriesError(
                f"{path}: pixel spacing {s.tolist()} differs from {spacing.tolist()} in "
                f"{series.files[0].name}; the series mixes reconstructions"
            )


def _check_spacing(folder: Path, positions: np.ndarray) -> float:
    """Uniform slice spacing along the normal (mm); raise naming the gap otherwise."""
    steps = np.diff(positions)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        where = ", ".join(f"{positions[i]:.2f}" for i in dup[:5])
        raise DicomSeriesError(
            f"{folder}: {dup.size} slice(s) share a position with another (at {where} mm along "
            "the slice normal): the series holds several volumes (echoes, phases, time points). "
            "Split them into separate folders or pick another series"
        )
    step = float(np.median(steps))
    tol = max(STEP_RTOL * step, 1e-3)
    bad = np.flatnonzero(np.abs(steps - step) > tol)
    if bad.size:
        details = []
        for i in bad[:5]:
            gap = steps[i]
            missing = round(gap / step) - 1
            where = [positions[i] + step * m for m in range(1, missing + 1)] if missing > 0 else []
            miss = (
                f", about {missing} slice(s) missing at {', '.join(f'{w:.2f}' for w in where[:5])}"
                if where
                else ""
            )
            details.append(f"{positions[i]:.2f} -> {positions[i + 1]:.2f} mm (gap {gap:.2f}){miss}")
        raise DicomSeriesError(
            f"{folder}: uneven slice spacing; expected {step:.3f} mm between slices but found "
            f"{'; '.join(details)}. A slice is missing or the folder mixes series: copy the "
            "complete series again"
        )
    return step


def _check_on_line(
    files: list[Path], positions: np.ndarray, orient: np.ndarray, spacing: np.ndarray
) -> None:
    """Refuse a slice whose position lies off the straight line through the series.

    ``positions`` (LPS mm) are sorted along the normal. In-plane coordinates must change by
    the same amount from slice to slice: zero for an ordinary series, a constant shear for a
    gantry-tilted one. The line is fitted robustly (median step and offset), so the slice
    named is the one that is off, wherever it lies; with two slices any offset is a tilt.
    """
    if len(files) < 3:
        return
    plane = positions @ np.stack([orient[:3], orient[3:]]).T  # (n, 2) along row, column
    k = np.arange(len(files), dtype=np.float64)[:, None]
    shear = np.median(np.diff(plane, axis=0), axis=0)
    offset = np.median(plane - k * shear, axis=0)
    off = np.linalg.norm(plane - offset - k * shear, axis=1)
    worst = int(np.argmax(off))
    tol = OFF_LINE_PIXELS * float(min(spacing))
    if off[worst] > tol:
        raise DicomSeriesError(
            f"{files[worst]}: lies {off[worst]:.2f} mm off the line through the other slices' "
            f"ImagePositionPatient (in the image plane; at most {tol:.3f} mm, a tenth of a "
            f"pixel, expected), so it cannot be stacked without misplacing its voxels. It "
            "belongs to another stack or its header was edited: remove it or export the series "
            "again"
        )


def series_affine(series: DicomSeries, folder: Path) -> tuple[np.ndarray, list[int]]:
    """RAS+ affine of a series and the order of its files sorted along the slice normal."""
    _, orient, spacing = slice_geometry(series.headers[0], series.files[0])
    _check_consistent(series, orient, spacing)
    row_cos, col_cos = orient[:3], orient[3:]
    normal = np.cross(row_cos, col_cos)
    positions = np.array(
        [slice_geometry(ds, p)[0] for p, ds in zip(series.files, series.headers, strict=True)]
    )
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]  # i runs along a row: column spacing
    lps[:3, 1] = col_cos * spacing[0]  # j runs down a column: row spacing
    if len(order) > 1:
        _check_spacing(folder, along[order])
        _check_on_line([series.files[i] for i in order], positions[order], orient, spacing)
        # The mean step vector (not normal * spacing) keeps gantry-tilted series exact.
        lps[:3, 2] = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    else:
        first = series.headers[0]
        thick = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        lps[:3, 2] = normal * float(thick)
    lps[:3, 3] = positions[order[0]]
    return LPS_TO_RAS @ lps, order


def _rescale(ds: pydicom.Dataset) -> tuple[float, float]:
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    return (float(slope) if slope not in (None, "") else 1.0), (
        float(intercept) if intercept not in (None, "") else 0.0
    )


# Only what pixel decoding needs: the header was already parsed by the folder scan.
PIXEL_TAGS = [
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelData",
]


def _decode(path: Path) -> np.ndarray:
    try:
        ds = dcmread_bounded(path, specific_tags=PIXEL_TAGS)
        return np.asarray(ds.pixel_array)
    except Exception as err:  # decoders raise many types (RuntimeError, NotImplementedError...)
        syntax = _transfer_syntax(path)
        raise CorruptFileError(
            f"{path}: cannot decode pixel data stored as {syntax} ({type(err).__name__}: "
            f"{err}); medseg decodes compressed syntaxes with python-gdcm, pylibjpeg and "
            "pylibjpeg-openjpeg (dependencies; reinstall with `pip install medseg` if one is "
            "missing), so the file is likely truncated or damaged: copy it again"
        ) from err


def _transfer_syntax(path: Path) -> str:
    try:
        uid = dcmread_bounded(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        return f"{uid.name} ({uid})"
    except Exception:  # the header itself is unreadable
        return "an unknown transfer syntax"


def _stack_pixels(files: list[Path], headers: list[pydicom.Dataset]) -> tuple[np.ndarray, dict]:
    """Decode and rescale every slice once; ``(array[i, j, k], rescale info)``."""
    rescales = [_rescale(ds) for ds in headers]
    first = _checked_slice(files[0], None)
    raw = np.empty((len(files), *first.shape), dtype=first.dtype)
    raw[0] = first
    stored = {first.dtype}
    for n, path in enumerate(files[1:], start=1):
        pixels = _checked_slice(path, first.shape)
        stored.add(pixels.dtype)
        if not np.can_cast(pixels.dtype, raw.dtype, "safe"):
            # Exact, not refused: each slice's BitsAllocated/PixelRepresentation describes its
            # own values, so a uint8 slice beside int16 ones is unambiguous. Casting into the
            # first slice's type would wrap them (446 -> 190 in uint8, -1450 -> 64086 in uint16).
            raw = raw.astype(np.result_type(raw.dtype, pixels.dtype))
        raw[n] = pixels
    types = sorted(map(str, stored))
    if len(types) > 1:
        raw = _narrowest_int(raw)
        logger.info(
            "%s: slices stored as %s; read exactly as %s", files[0].parent, types, raw.dtype
        )
    slopes = np.array([r[0] for r in rescales])
    intercepts = np.array([r[1] for r in rescales])
    integer = np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts))
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        out = raw
    elif integer:
        # add in int32 (uint16 raw + negative intercept), then narrow when HU fit int16
        out = raw.astype(np.int32) + intercepts.astype(np.int32)[:, None, None]
        if out.min() >= -32768 and out.max() <= 32767:
            out = out.astype(np.int16)
    else:
        out = (
            raw.astype(np.float32) * slopes.astype(np.float32)[:, None, None]
            + intercepts.astype(np.float32)[:, None, None]
        )
    info: dict[str, Any] = {
        "slope": float(slopes[0]),
        "intercept": float(intercepts[0]),
        "type": str(headers[0].get("RescaleType", "") or ""),
        "varies_per_slice": bool(np.ptp(slopes) > 0 or np.ptp(intercepts) > 0),
    }
    if len(types) > 1:
        info["stored_types"] = types
    # (k, rows, cols) -> [i, j, k] = (cols, rows, k): a free view, Fortran-ordered like nibabel's
    return out.transpose(2, 1, 0), info


def _checked_slice(path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    """The decoded pixels of one slice: 2D greyscale, of ``shape`` when given."""
    pixels = _decode(path)
    if pixels.ndim != 2:
        raise UnsupportedFormatError(
            f"{path}: pixel data has shape {pixels.shape}; medseg reads single-frame "
            "greyscale slices (colour or multi-frame images are not supported in a series): "
            "remove the file or pick another series"
        )
    if shape is not None and pixels.shape != shape:
        raise DicomSeriesError(
            f"{path}: pixel data has shape {pixels.shape}, the series' other slices "
            f"{shape}; the series mixes image sizes: remove the odd file or pick another series"
        )
    return pixels


def _narrowest_int(array: np.ndarray) -> np.ndarray:
    """A promoted integer stack (uint16 + int16 -> int32) back in int16 when its values fit."""
    wide = array.dtype.kind in "iu" and array.dtype.itemsize > 2 and array.size
    if wide and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16)
    return array


def _metadata(series: DicomSeries, files: list[Path], rescale: dict) -> dict:
    ds = series.headers[0]
    modality = series.modality.upper()
    if modality == "CT" and rescale["type"] in ("", "HU"):
        rescale["type"] = "HU"
    meta = {
        "format": "dicom",
        "modality": modality,
        "series_description": series.description,
        "series_uid": series.uid,
        "study_description": str(ds.get("StudyDescription", "") or ""),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "body_part": str(ds.get("BodyPartExamined", "") or ""),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "") or ""),
        "slice_thickness": float(ds.SliceThickness) if ds.get("SliceThickness") else None,
        "transfer_syntax": str(getattr(ds.file_meta, "TransferSyntaxUID", "")),
        "rescale": rescale,
        "dicom_files": [str(p) for p in files],
    }
    if modality == "CT":
        meta["units"] = "HU"
    return meta


def read_dicom_series(series: DicomSeries, folder: Path) -> Volume:
    """Read one scanned series (see :func:`scan_folder`) into a Volume."""
    affine, order = series_affine(series, folder)
    check_affine(affine, str(folder))
    files = [series.files[i] for i in order]
    headers = [series.headers[i] for i in order]
    array, rescale = _stack_pixels(files, headers)
    array = checked_voxels(array, str(folder))
    meta = _metadata(series, files, rescale)
    meta["source"] = str(folder)
    logger.info(
        "%s: read %s series '%s' (%d slices)",
        folder,
        meta["modality"],
        series.description,
        len(files),
    )
    return Volume(array, affine, meta, identifiers_of(headers[0]))


_Reader = TypeVar("_Reader", bound=Callable[..., Volume])

# what interpreting a damaged header raises inside pydicom/numpy (a value of the wrong VR or
# multiplicity, a bad number); any of these means the file, not medseg, is at fault
_HEADER_VALUE_ERRORS = (TypeError, ValueError, IndexError, KeyError, AttributeError,
                        OverflowError, ZeroDivisionError)  # fmt: skip


def _header_errors_as_corrupt(reader: _Reader) -> _Reader:
    """Report a header value that cannot be interpreted as a ``CorruptFileError`` naming
    the file (MedsegErrors raised inside pass through unchanged)."""

    @functools.wraps(reader)
    def wrapped(path, *args, **kwargs):
        try:
            return reader(path, *args, **kwargs)
        except _HEADER_VALUE_ERRORS as err:
            raise CorruptFileError(
                f"{path}: a DICOM header value cannot be interpreted ({type(err).__name__}: "
                f"{err}); the file is damaged or was written by a non-conforming tool: export "
                "the series again from the scanner or PACS"
            ) from err

    return wrapped  # type: ignore[return-value]


@_header_errors_as_corrupt
def read_dicom_folder(folder: str | Path, series: str | None = None) -> Volume:
    """Read the DICOM series in ``folder`` (``series`` picks one when there are several)."""
    folder = Path(folder)
    found = scan_folder(folder)
    chosen = select_series(folder, found, series)
    if chosen.modality.upper() == "SEG" or _is_seg(chosen.headers[0]):
        from medseg.io.dicom_seg import read_dicom_seg

        return read_dicom_seg(chosen.files[0])[0]
    if not chosen.is_image:
        raise UnsupportedFormatError(
            f"{folder}: series {chosen.label()} is a {chosen.modality} object, not images; "
            "pick an image series with --series"
        )
    return read_dicom_series(chosen, folder)


def _is_seg(ds: pydicom.Dataset) -> bool:
    sop = str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", ""))
    return sop == SEG_SOP_CLASS


@_header_errors_as_corrupt
def read_dicom_file(path: str | Path) -> Volume:
    """Read a single DICOM file: a DICOM-SEG (label map), a multi-frame image or one slice."""
    path = Path(path)
    ds = read_header(path)
    if ds is None:
        raise CorruptFileError(f"{path}: not a readable DICOM file (no DICM marker/header)")
    if _is_seg(ds):
        from medseg.io.dicom_seg import read_dicom_seg

        return read_dicom_seg(path)[0]
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        # Enhanced multi-frame images keep geometry in functional groups; ITK/GDCM reads them.
        from medseg.io.itk import read_itk

        volume = read_itk(path)
        volume.metadata.update(format="dicom", modality=str(ds.get("Modality", "unknown")))
        volume.identifiers.update(identifiers_of(ds))
        return volume
    series = DicomSeries(
        uid=str(ds.get("SeriesInstanceUID", "") or ""),
        key="single",
        description=str(ds.get("SeriesDescription", "") or ""),
        modality=str(ds.get("Modality", "") or "unknown"),
        files=[path],
        headers=[ds],
    )
    volume = read_dicom_series(series, path)
    logger.info("%s: single DICOM slice; give its folder to read the whole series", path)
    return volume
