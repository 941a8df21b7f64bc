"""DICOM-SEG output (highdicom) referencing the source DICOM series.

The label volume must lie on the source series' grid as read by ``medseg.io.read_volume``:
``array[i, j, k]`` with ``i`` = column, ``j`` = row and ``k`` = slice, and the source files in
``Volume.metadata["dicom_files"]``. Each source file is matched to its slice ``k`` by
geometry (ImagePositionPatient vs the affine), not by file order, so a reordered file list
cannot misplace a frame.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__
from medseg.errors import GeometryMismatchError, InputNotFoundError
from medseg.io.atomic import atomic_path, check_output
from medseg.io.volume import LPS_TO_RAS, Volume

logger = logging.getLogger(__name__)

# highdicom copies these patient/study attributes from the source images and fails when they
# are absent; anonymisers often delete them. All are type 2 (may be empty) in a DICOM-SEG.
REQUIRED_EMPTY_OK = (
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
)
# ContentDescription is a LO element (at most 64 characters): a short notice instead of a
# truncated RESEARCH_USE_NOTICE.
SEG_NOTICE = "For research use only. Not for diagnostic use."


def _source_datasets(files: Sequence[Any]) -> list:
    import pydicom

    if not files:
        raise InputNotFoundError(
            "no source DICOM files recorded (Volume.metadata['dicom_files']); a DICOM-SEG "
            "needs the series it segments: read the scan from its DICOM folder"
        )
    # Pixel data is not needed to reference the images; skipping it avoids decoding JPEG 2000.
    # Every dataset is a fresh in-memory read (or a copy of a header kept in memory, e.g. from
    # an upload whose files are gone), so repairs below never touch the inputs.
    datasets = [
        copy.deepcopy(f)
        if isinstance(f, pydicom.Dataset)
        else pydicom.dcmread(str(f), stop_before_pixels=True)
        for f in files
    ]
    for ds in datasets:
        # Some anonymisers blank the SOP UIDs in the dataset but keep them in the file meta
        # header; highdicom needs them to reference the images.
        meta = getattr(ds, "file_meta", None)
        if not ds.get("SOPClassUID") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not ds.get("SOPInstanceUID") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default repertoire; highdicom refuses ''
        for keyword in REQUIRED_EMPTY_OK:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return datasets


def _frame_order(datasets: list, label: Volume) -> list[int]:
    """Slice index ``k`` of every dataset, checked against the label's affine (mm)."""
    affine_lps = LPS_TO_RAS @ label.affine
    inverse = np.linalg.inv(affine_lps)
    order = []
    for ds in datasets:
        position = np.array([float(v) for v in ds.ImagePositionPatient] + [1.0])
        i, j, k = (inverse @ position)[:3]
        if abs(i) > 0.05 or abs(j) > 0.05 or abs(k - round(k)) > 0.05:
            raise GeometryMismatchError(
                f"{getattr(ds, 'filename', 'DICOM file')}: slice position "
                f"{position[:3].round(3).tolist()} (LPS mm) does not lie on the label grid; the "
                "mask must be on the source series' grid (predict from the DICOM folder itself)"
            )
        order.append(round(k))
    if sorted(order) != list(range(label.shape[2])):
        raise GeometryMismatchError(
            f"the {len(datasets)} source files cover slices {sorted(set(order))[:5]}..., expected "
            f"every slice 0..{label.shape[2] - 1} of the mask exactly once"
        )
    return order


def write_dicom_seg(
    label: Volume,
    source_files: Sequence[Any],
    class_names: Sequence[str],
    path: str | Path,
    *,
    model_name: str = "medseg",
    overwrite: bool = False,
    reviewed: bool = False,
) -> Path:
    """Write ``label`` (integer classes on the source series' grid) as a DICOM-SEG.

    ``source_files``: the series' files, or their headers as pydicom Datasets.
    One segment per foreground class (``class_names[1:]``), binary, referencing every source
    image; the segments' algorithm type is AUTOMATIC, or SEMIAUTOMATIC with ``reviewed`` (a
    prediction a person corrected in the viewer). Empty frames are omitted (highdicom default).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    sources = [p for p in source_files if isinstance(p, (str, os.PathLike))]
    check_output(path, overwrite=overwrite, inputs=sources)
    datasets = _source_datasets(source_files)
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    if (cols, rows) != label.shape[:2]:
        raise GeometryMismatchError(
            f"mask in-plane shape {label.shape[:2]} (columns, rows) != source images "
            f"({cols}, {rows}); the mask must be on the source series' grid"
        )
    order = _frame_order(datasets, label)
    frames = np.stack([label.array[:, :, k].T for k in order]).astype(np.uint8)  # (F, rows, cols)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64], version=__version__, family=codes.DCM.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
            if reviewed
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(class_names[1:], start=1)
    ]
    with warnings.catch_warnings(), _quiet_highdicom():
        # highdicom warns about the source's PatientName format, quoting the name itself:
        # patient identifiers must never reach logs or the terminal.
        warnings.filterwarnings("ignore", message=".*person name.*")
        seg = _build_segmentation(
            hd, datasets, frames, descriptions, f"{model_name} reviewed" if reviewed else model_name
        )
    seg.ContentDescription = SEG_NOTICE
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


@contextlib.contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom logs one INFO line per copied module and source UID; keep logs readable."""
    hd_logger = logging.getLogger("highdicom")
    level = hd_logger.level
    hd_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        hd_logger.setLevel(level)


def _build_segmentation(hd, datasets, frames, descriptions, model_name: str):
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"medseg {model_name}"[:64],
    )
