"""Small synthetic DICOM series for tests (pydicom only; no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position: tuple[float, float, float],
    *,
    series_uid: str,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.75),
    description: str = "synthetic",
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    instance: int = 1,
    bits: int = 16,
    signed: bool = False,
) -> Path:
    """One uncompressed slice; ``pixels`` is ``(rows, columns)``, stored with ``bits``
    BitsAllocated (8 or 16) as unsigned, or signed (PixelRepresentation 1) when ``signed``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesDescription = description
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-42"
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = "ACC123"
    ds.Manufacturer = "medseg-tests"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.SliceThickness = "2"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    n: int = 5,
    shape: tuple[int, int] = (6, 4),
    step: float = 2.0,
    **kwargs,
) -> tuple[Path, np.ndarray]:
    """``n`` slices along +z written in shuffled file-name order.

    Returns the folder and the expected stored pixels as ``(rows, columns, n)`` sorted by z.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = kwargs.pop("series_uid", generate_uid())
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 3000, size=(n, *shape)).astype(np.uint16)
    names = rng.permutation(n)  # file names deliberately NOT in position order
    for z in range(n):
        write_slice(
            folder / f"img{names[z]:03d}.dcm",
            stack[z],
            (-10.0, 20.0, 5.0 + z * step),
            series_uid=uid,
            instance=int(names[z]) + 1,
            **kwargs,
        )
    return folder, stack.transpose(1, 2, 0)


def edit(path: Path, **values) -> None:
    """Rewrite header fields of one file in place (test fixture copies only)."""
    ds = pydicom.dcmread(str(path))
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(str(path))
