"""DICOM-SEG reading through highdicom -> label map :class:`Volume` + segment descriptions.

The label map lies on the SEG's own frame geometry (highdicom's ``get_volume``), reordered to
medseg's convention (``[i, j, k]`` with ``k`` ascending along the slice normal, RAS+). Pass
``reference`` (e.g. the CT the SEG was drawn on) to get it on that volume's grid instead.
Overlapping segments cannot share one label map: the higher segment number wins, and the
number of overlapping voxels is logged and stored in ``metadata['overlapping_voxels']``.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError

from medseg.errors import CorruptFileError, UnsupportedFormatError, first_line
from medseg.io.dicom_series import dcmread_bounded, identifiers_of
from medseg.io.volume import LPS_TO_RAS, Volume, check_affine

logger = logging.getLogger(__name__)


def _code_meaning(item: Any, keyword: str) -> str:
    seq = item.get(keyword)
    return str(seq[0].CodeMeaning) if seq else ""


def segment_descriptions(seg: hd.seg.Segmentation) -> list[dict[str, Any]]:
    """Number, label, category, type and algorithm of each segment (JSON-friendly)."""
    out = []
    for item in seg.SegmentSequence:
        out.append(
            {
                "number": int(item.SegmentNumber),
                "label": str(item.get("SegmentLabel", "") or ""),
                "description": str(item.get("SegmentDescription", "") or ""),
                "category": _code_meaning(item, "SegmentedPropertyCategoryCodeSequence"),
                "type": _code_meaning(item, "SegmentedPropertyTypeCodeSequence"),
                "algorithm_type": str(item.get("SegmentAlgorithmType", "") or ""),
                "algorithm_name": str(item.get("SegmentAlgorithmName", "") or ""),
            }
        )
    return out


def _to_medseg(array: np.ndarray, affine_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """highdicom ``(slice, row, column)`` + LPS affine -> ``[i, j, k]`` + RAS affine."""
    array = array.transpose(2, 1, 0)
    lps = affine_lps[:, [2, 1, 0, 3]]
    normal = np.cross(lps[:3, 0], lps[:3, 1])
    if array.shape[2] > 1 and float(lps[:3, 2] @ normal) < 0:
        # keep medseg's series convention: k ascends along row x column cosines
        lps = lps.copy()
        lps[:3, 3] = lps[:3, 3] + lps[:3, 2] * (array.shape[2] - 1)
        lps[:3, 2] = -lps[:3, 2]
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array), LPS_TO_RAS @ lps


# what pydicom and highdicom raise on damaged files (a bit flip, a wrong value type, a
# missing functional group, a NaN position in highdicom's SQLite frame index); all mean
# "this file is not a valid DICOM-SEG"
_DAMAGED = (ValueError, AttributeError, KeyError, IndexError, TypeError, OSError, EOFError,
            OverflowError, NotImplementedError, RuntimeError, InvalidDicomError,
            BytesLengthException, sqlite3.Error, struct.error)  # fmt: skip


def _read_segmentation(path: Path) -> hd.seg.Segmentation:
    """The SEG in ``path``, its pixel data checked against its header before decoding."""
    try:
        ds = dcmread_bounded(path)
        for _ in ds.iterall():  # pydicom converts values lazily: fail here, not later
            pass
    except _DAMAGED as err:
        raise CorruptFileError(
            f"{path}: not a readable DICOM file ({type(err).__name__}: {first_line(err)})"
        ) from err
    _check_pixel_data(ds, path)
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except _DAMAGED as err:
        raise CorruptFileError(
            f"{path}: not a readable DICOM-SEG file ({type(err).__name__}: {first_line(err)}); "
            "it is damaged or not a Segmentation object: export it again"
        ) from err


def _check_pixel_data(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse frame counts and sizes the stored pixel data cannot hold (uncompressed SEGs)
    before anything is decoded: a damaged header must not allocate gigabytes."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames, bits = int(ds.get("NumberOfFrames", 1) or 1), int(ds.BitsAllocated)
        stored = len(ds.PixelData)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        compressed = syntax is not None and syntax.is_compressed
    except _DAMAGED as err:
        raise CorruptFileError(
            f"{path}: DICOM-SEG header lacks or garbles Rows/Columns/NumberOfFrames/"
            f"BitsAllocated/PixelData/TransferSyntaxUID ({type(err).__name__}: "
            f"{first_line(err)})"
        ) from err
    if min(rows, cols, frames) < 1 or bits not in (1, 8, 16):
        raise CorruptFileError(
            f"{path}: DICOM-SEG header claims {frames} frame(s) of {rows}x{cols} at {bits} "
            "bit(s); expected positive sizes and 1 (binary) or 8 (fractional/label map) bits"
        )
    if compressed:
        return  # encapsulated frames: the decoder checks each frame's size
    needed = (rows * cols * frames * bits + 7) // 8
    if stored < needed:
        raise CorruptFileError(
            f"{path}: DICOM-SEG pixel data holds {stored:,} bytes but its header claims "
            f"{frames} frame(s) of {rows}x{cols} at {bits} bit(s) ({needed:,} bytes); the "
            "file is truncated or its header is wrong"
        )


def _label_map(seg: hd.seg.Segmentation, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Combined label map (highdicom order), its LPS affine and the overlapping voxel count."""
    try:
        vol = seg.get_volume(combine_segments=False, dtype=np.float32)
    except _DAMAGED as err:
        raise UnsupportedFormatError(
            f"{path}: the SEG frames do not form a regularly spaced 3D volume "
            f"({type(err).__name__}: {first_line(err)}); medseg reads volumetric DICOM-SEG only"
        ) from err
    masks = vol.array > 0.5  # (slice, row, column, segment); fractional SEGs threshold at 0.5
    numbers = np.asarray(vol.get_channel_values(vol.channel_descriptors[0]), dtype=np.int64)
    dtype = np.uint8 if numbers.max(initial=0) < 256 else np.uint16
    labels = np.zeros(masks.shape[:3], dtype=dtype)
    for index in np.argsort(numbers):  # ascending: the higher number wins on overlap
        labels[masks[..., index]] = numbers[index]
    overlap = int(np.count_nonzero(masks.sum(axis=-1) > 1))
    return labels, np.asarray(vol.affine, dtype=np.float64), overlap


def read_dicom_seg(
    path: str | Path, reference: Volume | None = None
) -> tuple[Volume, list[dict[str, Any]]]:
    """Read a DICOM-SEG file.

    Args:
        path: the SEG file.
        reference: optional volume (usually the source CT/MR series) whose grid the label map
            is resampled onto (exactly, by index shuffling, when the grids are compatible).

    Returns:
        ``(label_map, segments)``: an integer Volume whose voxel values are segment numbers
        (0 = background) and one dict per segment (number, label, category, type, ...).
    """
    path = Path(path)
    seg = _read_segmentation(path)
    labels, affine_lps, overlap = _label_map(seg, path)
    array, affine = _to_medseg(labels, affine_lps)
    check_affine(affine, str(path))
    segments = segment_descriptions(seg)
    if overlap:
        logger.warning(
            "%s: %d voxel(s) belong to several segments; the higher segment number was kept",
            path,
            overlap,
        )
    meta = {
        "source": str(path),
        "format": "dicom-seg",
        "modality": "SEG",
        "series_description": str(seg.get("SeriesDescription", "") or ""),
        "series_uid": str(seg.get("SeriesInstanceUID", "") or ""),
        "manufacturer": str(seg.get("Manufacturer", "") or ""),
        "segmentation_type": str(seg.get("SegmentationType", "") or ""),
        "frame_of_reference_uid": str(seg.get("FrameOfReferenceUID", "") or ""),
        "segments": segments,
        "overlapping_voxels": overlap,
    }
    volume = Volume(array, affine, meta, identifiers_of(seg))
    if reference is not None:
        from medseg.io.resample import align_to_grid

        volume = align_to_grid(volume, reference, interpolation="nearest")
    return volume, segments
