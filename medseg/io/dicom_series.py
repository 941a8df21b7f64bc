"""Find DICOM series in a folder and pick one: header scan only, no pixel data decoded.

A folder is scanned once with pydicom (``stop_before_pixels``); files are grouped by
SeriesInstanceUID. Anonymised exports sometimes blank the UID (the TotalSegmentator example
series has an empty one), so files without a UID are grouped by a key built from
non-identifying header fields instead.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medseg.errors import (
    DicomSeriesError,
    GeometryMismatchError,
    InputNotFoundError,
    UnsupportedFormatError,
)
from medseg.io.atomic import check_output
from medseg.io.volume import LPS_TO_RAS, Volume

logger = logging.getLogger(__name__)

# Patient/visit identifiers: kept in Volume.identifiers only, never in metadata or logs.
IDENTIFIER_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDate",
    "StudyID",
)

# Modalities that are not pixel images on a slice grid; never auto-picked as "the" series.
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "RTPLAN", "RTDOSE", "PR", "KO", "REG"}


@dataclasses.dataclass
class DicomSeries:
    """One series found in a folder.

    Attributes:
        uid: SeriesInstanceUID ("" when the files carry none).
        key: unique key used for grouping (the UID, or a derived key when the UID is blank).
        description: SeriesDescription.
        modality: Modality ("CT", "MR", "SEG" ...).
        files: the series' files (unsorted; :func:`medseg.io.dicom.read_dicom_series` sorts
            them by position along the slice normal).
        headers: pydicom datasets read without pixel data, one per file.
    """

    uid: str
    key: str
    description: str
    modality: str
    files: list[Path]
    headers: list[pydicom.Dataset] = dataclasses.field(repr=False)

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def is_image(self) -> bool:
        return self.modality.upper() not in NON_IMAGE_MODALITIES

    def summary(self) -> dict[str, object]:
        """JSON-friendly description: uid, description, modality, number of files, size."""
        first = self.headers[0]
        return {
            "uid": self.uid,
            "key": self.key,
            "description": self.description,
            "modality": self.modality,
            "n_files": self.n_files,
            "rows": int(first.get("Rows", 0) or 0),
            "columns": int(first.get("Columns", 0) or 0),
            "series_number": _text(first.get("SeriesNumber")),
        }

    def label(self) -> str:
        """One line naming the series for messages (no patient identifiers)."""
        uid = self.uid or f"{self.key} (no SeriesInstanceUID; use this key)"
        desc = self.description or "(no description)"
        return f"{uid}  '{desc}'  {self.modality}  {self.n_files} file(s)"


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


class _BoundedFile:
    """A binary file whose ``read(n)`` never asks for more than what is left in it.

    A damaged length field (a flipped bit) makes pydicom call ``read(800_000_000)`` on a
    1 KB file; CPython allocates the requested size before reading, so an unbounded read
    allocates far more than the file holds. This caps each request at the bytes left.
    """

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by dcmread_bounded
        self._size = os.fstat(self._fh.fileno()).st_size
        self.name = str(path)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._fh.read()
        return self._fh.read(max(0, min(size, self._size - self._fh.tell())))

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def close(self) -> None:
        self._fh.close()


def dcmread_bounded(path: Path, **kwargs) -> pydicom.Dataset:
    """``pydicom.dcmread`` that allocates no more than the file's size per read (see
    :class:`_BoundedFile`); same keyword arguments."""
    handle = _BoundedFile(Path(path))
    try:
        ds = pydicom.dcmread(handle, **kwargs)
        ds.filename = str(path)
        return ds
    finally:
        handle.close()


def read_header(path: Path) -> pydicom.Dataset | None:
    """The DICOM header of ``path`` without pixel data, or None when it is not DICOM."""
    try:
        ds = dcmread_bounded(path, stop_before_pixels=True)
        for _ in ds.iterall():  # pydicom converts values lazily: fail here, not mid-read
            pass
        for _ in getattr(ds, "file_meta", ()):
            pass
        return ds
    except InvalidDicomError as err:
        logger.debug("%s: not read as DICOM (%s)", path, type(err).__name__)
        return None
    except Exception as err:  # a damaged header raises almost anything inside pydicom
        logger.debug("%s: DICOM header unreadable (%s: %s)", path, type(err).__name__, err)
        return None


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts with the DICOM preamble ``DICM`` marker."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _group_key(ds: pydicom.Dataset) -> tuple[str, str]:
    uid = _text(ds.get("SeriesInstanceUID"))
    if uid:
        return uid, uid
    # Blank UID (anonymised export): group by fields that identify a series but not a person.
    parts = [
        _text(ds.get(k))
        for k in ("FrameOfReferenceUID", "SeriesDescription", "SeriesNumber", "Modality")
    ]
    parts += [_text(ds.get("Rows")), _text(ds.get("Columns"))]
    digest = hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]
    return "", f"no-uid-{digest}"


#: Media Storage Directory Storage: the DICOMDIR index of a CD/PACS export, not an image.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def is_directory_record(ds: pydicom.Dataset) -> bool:
    """True for a DICOMDIR (or similar index object) that holds no image or series data.

    Such files sit beside the slices of every CD/PACS export; counting them as a series
    would make a single-series folder look like two.
    """
    meta = getattr(ds, "file_meta", None)
    sop = _text(meta.get("MediaStorageSOPClassUID")) if meta is not None else ""
    if DICOMDIR_SOP_CLASS in (sop, _text(ds.get("SOPClassUID"))):
        return True
    return "Modality" not in ds and "Rows" not in ds


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def scan_folder(folder: str | Path) -> list[DicomSeries]:
    """All DICOM series under ``folder`` (recursive), largest first.

    Raises:
        InputNotFoundError: the folder does not exist or holds no files.
        UnsupportedFormatError: it holds files but none is DICOM.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"{folder} is not a folder; give a DICOM series folder")
    files = _candidate_files(folder)
    if not files:
        raise InputNotFoundError(
            f"{folder} is empty; expected a DICOM series (one .dcm file per slice), a NIfTI "
            "file or an NRRD/MHA file. Check the path or the download/export"
        )
    groups: dict[str, DicomSeries] = {}
    skipped: list[Path] = []
    for path in files:
        ds = read_header(path)
        if ds is None or is_directory_record(ds):
            skipped.append(path)
            continue
        uid, key = _group_key(ds)
        if key not in groups:
            groups[key] = DicomSeries(
                uid=uid,
                key=key,
                description=_text(ds.get("SeriesDescription")),
                modality=_text(ds.get("Modality")) or "unknown",
                files=[],
                headers=[],
            )
        groups[key].files.append(path)
        groups[key].headers.append(ds)
    if not groups:
        examples = ", ".join(p.name for p in files[:3])
        raise UnsupportedFormatError(
            f"{folder}: none of its {len(files)} file(s) is DICOM (e.g. {examples}); expected "
            "a folder of DICOM slices. For NIfTI/NRRD/MHA give the file itself, not its folder"
        )
    if skipped:
        logger.info("%s: ignored %d non-DICOM or DICOMDIR file(s)", folder, len(skipped))
    return sorted(groups.values(), key=lambda s: (-s.n_files, s.key))


def list_dicom_series(folder: str | Path) -> list[dict[str, object]]:
    """Summaries (uid, description, modality, n_files, rows, columns) of a folder's series."""
    return [s.summary() for s in scan_folder(folder)]


def _listing(series: list[DicomSeries]) -> str:
    return "; ".join(s.label() for s in series)


def select_series(folder: Path, series: list[DicomSeries], choice: str | None) -> DicomSeries:
    """Pick one series by UID, unique UID prefix or description (case-insensitive).

    With ``choice=None`` the folder must hold exactly one image series (SEG/RTSTRUCT/SR
    objects beside it are ignored).
    """
    if choice is None:
        images = [s for s in series if s.is_image] or series
        if len(images) == 1:
            return images[0]
        raise DicomSeriesError(
            f"{folder} holds {len(images)} DICOM series: {_listing(images)}. Pick one with "
            "series=UID (a unique UID prefix or the description also works; CLI: --series UID); "
            "`medseg info FOLDER` lists them"
        )
    wanted = choice.strip()
    for test in (
        lambda s: wanted in (s.uid, s.key),
        lambda s: s.uid.startswith(wanted) or s.key.startswith(wanted),
        lambda s: s.description.lower() == wanted.lower(),
    ):
        hits = [s for s in series if test(s)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DicomSeriesError(
                f"{folder}: --series {wanted!r} matches {len(hits)} series: {_listing(hits)}; "
                "give more of the SeriesInstanceUID"
            )
    raise DicomSeriesError(
        f"{folder}: no series matches --series {wanted!r}; the folder holds: {_listing(series)}"
    )


def identifiers_of(ds: pydicom.Dataset) -> dict[str, str]:
    """Non-empty patient/visit identifiers of a header, as strings."""
    found = {}
    for keyword in IDENTIFIER_KEYWORDS:
        value = _text(ds.get(keyword))
        if value:
            found[keyword] = value
    return found


# Objects derived from a series (DICOM-SEG, RTSTRUCT) copy these patient/study attributes from
# the source images (highdicom fails when they are absent); anonymisers often delete them.
# All are type 2 (may be empty) in both objects.
REQUIRED_EMPTY_OK = (
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
)


def source_datasets(files: Sequence[Any]) -> list[pydicom.Dataset]:
    """In-memory headers of a series' files (paths or Datasets) for an object that references
    them (DICOM-SEG, RTSTRUCT): SOP UIDs repaired from the file meta, type 2 attributes added."""
    if not files:
        raise InputNotFoundError(
            "no source DICOM files recorded (Volume.metadata['dicom_files']); a DICOM-SEG or "
            "RTSTRUCT needs the series it segments: read the scan from its DICOM folder"
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
        # header; references need them.
        meta = getattr(ds, "file_meta", None)
        if not ds.get("SOPClassUID") and meta is not None:
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID", "")
        if not ds.get("SOPInstanceUID") and meta is not None:
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID", "")
        for keyword in REQUIRED_EMPTY_OK:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet  # empty means the default (ASCII); highdicom refuses ''
    return datasets


def slice_indices(datasets: Sequence[pydicom.Dataset], label: Volume) -> list[int]:
    """Slice index ``k`` of every dataset on ``label``'s grid, by geometry (ImagePositionPatient
    vs the affine), never by file order; each slice must be covered exactly once."""
    inverse = np.linalg.inv(LPS_TO_RAS @ label.affine)
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


def checked_sources(
    label: Volume, source_files: Sequence[Any], path: str | os.PathLike, *, overwrite: bool
) -> tuple[list[pydicom.Dataset], list[int]]:
    """For an object derived from a series (DICOM-SEG, RTSTRUCT) written to ``path``: the
    output guard, then the series' headers (:func:`source_datasets`) and the slice ``k`` of
    each (:func:`slice_indices`), once ``label`` is known to lie on their grid."""
    sources = [f for f in source_files if isinstance(f, (str, os.PathLike))]
    check_output(Path(path), overwrite=overwrite, inputs=sources)
    datasets = source_datasets(source_files)
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    if (cols, rows) != label.shape[:2]:
        raise GeometryMismatchError(
            f"mask in-plane shape {label.shape[:2]} (columns, rows) != source images "
            f"({cols}, {rows}); the mask must be on the source series' grid"
        )
    return datasets, slice_indices(datasets, label)
