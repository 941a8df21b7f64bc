"""Write a :class:`Volume` as a DICOM series (CT or MR Image Storage, one file per slice).

Geometry: the RAS+ affine is converted to LPS (DICOM's patient frame) by negating its first
two rows. Array axis ``i`` runs along a row (DICOM columns), ``j`` down a column (rows),
``k`` is the slice index, so slice ``k`` stores ``array[:, :, k].T`` (shape ``(J, I)``) and

* ImageOrientationPatient = unit(LPS affine column 0), unit(LPS affine column 1);
* PixelSpacing = ``[spacing_j, spacing_i]`` (row spacing first, as the standard says);
* ImagePositionPatient(k) = LPS affine @ ``(0, 0, k, 1)``.

DICOM readers sort slices along ``row x column`` cosines; when the volume's ``k`` axis points
the other way (a left-handed grid) they return ``k`` reversed, with the same physical
geometry. Files are named by a hash of their SOPInstanceUID, not in slice order, so readers
that rely on file names are caught out (on purpose: that is how scanners' exports look).

No patient data is ever written: PatientName ``Synthetic^Phantom``, PatientID ``SYNTH-0001``
unless the caller passes other (equally fake) values.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medseg.errors import GeometryMismatchError, UnsupportedFormatError
from medseg.io.atomic import check_output, write_error
from medseg.io.volume import LPS_TO_RAS, Volume

logger = logging.getLogger(__name__)

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
_UINT16_MAX = 65535


def lps_geometry(affine: np.ndarray) -> dict[str, np.ndarray]:
    """DICOM geometry of a RAS+ voxel->world affine.

    Returns:
        ``orientation`` (6 cosines: row direction then column direction, LPS),
        ``pixel_spacing`` (row spacing = along ``j``, column spacing = along ``i``, mm),
        ``slice_step`` (mm between slices, along ``k``), ``origin`` (LPS mm of voxel 0,0,0),
        ``k_vector`` (LPS mm step per slice) and ``normal`` (unit row x column).

    Raises:
        GeometryMismatchError: the affine's axes are not orthogonal (DICOM cannot store
            sheared grids); resample the volume onto an orthogonal grid first.
    """
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise GeometryMismatchError(f"affine has a zero-length axis (spacing {spacing.tolist()})")
    unit = axes / spacing
    gram = unit.T @ unit
    if not np.allclose(gram, np.eye(3), atol=1e-4):
        raise GeometryMismatchError(
            "the volume's voxel axes are not orthogonal (sheared affine, e.g. a gantry-tilted "
            "CT); DICOM image planes cannot store that: resample it onto an orthogonal grid "
            "first (e.g. `medseg convert` + resampling in 3D Slicer/SimpleITK)"
        )
    return {
        "orientation": np.concatenate([unit[:, 0], unit[:, 1]]),
        "pixel_spacing": np.array([spacing[1], spacing[0]]),
        "slice_step": np.array(spacing[2]),
        "origin": lps[:3, 3].copy(),
        "k_vector": axes[:, 2].copy(),
        "normal": np.cross(unit[:, 0], unit[:, 1]),
    }


def stored_values(array: np.ndarray, modality: str) -> tuple[np.ndarray, float, float]:
    """``(uint16 stored pixels, slope, intercept)`` with ``value = stored * slope + intercept``.

    Integer-valued data are stored exactly (slope 1; CT with the usual intercept -1024 when
    it fits, so HU -1024..64511 round-trip). Non-integer data (float images) are scaled
    onto the full 16-bit range, which keeps ~1/65535 of their range as precision.
    """
    values = np.asarray(array, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise UnsupportedFormatError("cannot write NaN/inf or empty volumes to DICOM")
    low, high = float(values.min()), float(values.max())
    if np.array_equal(values, np.round(values)):
        intercept = -1024.0 if modality == "CT" and low >= -1024 else min(0.0, low)
        if high - intercept <= _UINT16_MAX:
            return np.rint(values - intercept).astype(np.uint16), 1.0, intercept
    slope = (high - low) / _UINT16_MAX if high > low else 1.0
    stored = np.rint((values - low) / slope).clip(0, _UINT16_MAX).astype(np.uint16)
    return stored, slope, low


def _new_uid(entropy: str | None, *parts: object) -> str:
    """Fresh random UID, or a reproducible one derived from ``entropy`` and ``parts``."""
    if entropy is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[entropy, *map(str, parts)])


def _base_dataset(
    modality: str,
    series_description: str,
    uids: dict[str, str],
    patient: tuple[str, str],
    when: datetime.datetime,
) -> pydicom.Dataset:
    """Attributes shared by every slice of the series (patient, study, series, frame)."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.Modality = modality
    ds.PatientName, ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.PatientPosition = "HFS"  # type 2C for CT/MR series; head first supine is the norm
    ds.AcquisitionNumber = 1
    ds.SeriesDescription = series_description
    ds.Manufacturer = "medseg"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    if modality == "MR":  # MR Image module type 1 attributes; "RM" = research mode
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = ds.EchoTime = ds.EchoTrainLength = ""  # type 2: unknown
    else:
        ds.KVP = ""
        ds.RescaleType = "HU"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def _ds_number(value: float) -> str:
    """The most precise DICOM DS string (at most 16 characters) for ``value``."""
    value = float(value)
    if abs(value) < 1e-9:  # positions like -1e-15 from rotations: avoid "1e-15" noise
        return "0"
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1g}"


def _slice_dataset(
    base: pydicom.Dataset, geometry: dict[str, np.ndarray], k: int, sop_uid: str
) -> FileDataset:
    """Header of slice ``k`` (positions in LPS mm) without pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = base.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.update(base)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    position = geometry["origin"] + k * geometry["k_vector"]
    ds.ImagePositionPatient = [_ds_number(v) for v in position]
    ds.ImageOrientationPatient = [_ds_number(v) for v in geometry["orientation"]]
    ds.PixelSpacing = [_ds_number(v) for v in geometry["pixel_spacing"]]
    step = float(geometry["slice_step"])
    ds.SliceThickness = _ds_number(step)
    ds.SpacingBetweenSlices = _ds_number(step)
    ds.SliceLocation = _ds_number(float(position @ geometry["normal"]))
    return ds


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    modality: str = "CT",
    series_description: str = "medseg export",
    patient_name: str = "Synthetic^Phantom",
    patient_id: str = "SYNTH-0001",
    uid_seed: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``volume`` as an uncompressed DICOM series in ``folder``, atomically.

    Args:
        volume: 3D scan, ``array[i, j, k]`` with a RAS+ affine (mm); CT values in HU.
        folder: output folder; created. It must not exist unless ``overwrite`` (then it is
            replaced as a whole once the new series is complete).
        modality: ``"CT"`` (CT Image Storage, RescaleType HU) or ``"MR"`` (MR Image Storage).
        series_description: SeriesDescription of the new series.
        patient_name, patient_id: fake identifiers (never pass real ones from another file).
        uid_seed: ``None`` gives fresh random UIDs (pydicom ``generate_uid``); a string
            derives them reproducibly (the same seed gives the same UIDs, e.g. committed
            sample data that should not change on regeneration). Study date is then fixed.
        overwrite: replace an existing ``folder``.

    Returns:
        The folder. One file per slice ``<hash of SOPInstanceUID>.dcm`` (not in slice order).

    Raises:
        UnsupportedFormatError: unknown modality, NaN/inf values.
        GeometryMismatchError: sheared (non-orthogonal) affine.
        OverwriteError: ``folder`` exists without ``overwrite``, or holds the volume's input.
    """
    folder = Path(folder)
    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise UnsupportedFormatError(
            f"{folder}: cannot write modality {modality!r} as a DICOM image series; "
            f"use one of {', '.join(SOP_CLASSES)}"
        )
    inputs = [Path(p) for p in volume.metadata.get("dicom_files", [])]
    if volume.metadata.get("source"):
        inputs.append(Path(volume.metadata["source"]))
    check_output(folder, overwrite=overwrite, inputs=inputs, folder=True)
    geometry = lps_geometry(volume.affine)
    stored, slope, intercept = stored_values(volume.array, modality)
    when = datetime.datetime(2000, 1, 1) if uid_seed else datetime.datetime.now()
    uids = {name: _new_uid(uid_seed, name) for name in ("study", "series", "frame")}
    base = _base_dataset(modality, series_description, uids, (patient_name, patient_id), when)
    base.RescaleSlope = _ds_number(slope)
    base.RescaleIntercept = _ds_number(intercept)
    base.Rows, base.Columns = volume.shape[1], volume.shape[0]
    _window(base, volume.array, modality)

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private (0700); the series is an ordinary output
    except OSError as err:
        raise write_error(err, folder) from err
    try:
        for k in range(volume.shape[2]):
            sop_uid = _new_uid(uid_seed, "instance", k)
            ds = _slice_dataset(base, geometry, k, sop_uid)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            name = hashlib.sha1(sop_uid.encode()).hexdigest()[:16] + ".dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
        _replace_folder(tmp, folder)
    except OSError as err:  # full or read-only disk: the partial series is removed below
        raise write_error(err, folder) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("wrote %d-slice %s DICOM series to %s", volume.shape[2], modality, folder)
    return folder


def _window(ds: pydicom.Dataset, array: np.ndarray, modality: str) -> None:
    """Default display window: soft tissue for CT, 1-99th percentile otherwise."""
    if modality == "CT":
        centre, width = 40.0, 400.0
    else:
        low, high = np.percentile(array, [1, 99])
        centre, width = (low + high) / 2, max(float(high - low), 1.0)
    ds.WindowCenter = _ds_number(float(centre))
    ds.WindowWidth = _ds_number(float(width))


def _replace_folder(new: Path, target: Path) -> None:
    """Move the complete ``new`` folder onto ``target`` (old one removed only afterwards)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old)
