"""DICOM-SEG output (highdicom) referencing the source DICOM series.

The label volume must lie on the source series' grid as read by ``medseg.io.read_volume``:
``array[i, j, k]`` with ``i`` = column, ``j`` = row and ``k`` = slice, and the source files in
``Volume.metadata["dicom_files"]``. Each source file is matched to its slice ``k`` by
geometry (ImagePositionPatient vs the affine), not by file order, so a reordered file list
cannot misplace a frame.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__
from medseg.io.atomic import atomic_path
from medseg.io.dicom_series import REQUIRED_EMPTY_OK, checked_sources  # noqa: F401
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

# ContentDescription is a LO element (at most 64 characters): a short notice instead of a
# truncated RESEARCH_USE_NOTICE.
SEG_NOTICE = "For research use only. Not for diagnostic use."


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
    datasets, order = checked_sources(label, source_files, path, overwrite=overwrite)
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
