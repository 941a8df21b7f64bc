"""NIfTI-1/2 reading and writing through nibabel (RAS+ affines natively)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import CorruptFileError, DimensionError, OverwriteError
from medseg.io.atomic import atomic_path
from medseg.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: Path, channel: int | None = None) -> Volume:
    """Read a NIfTI file. A 4D file needs ``channel`` (index along the 4th axis)."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as err:
        raise CorruptFileError(
            f"{path}: cannot decode NIfTI data ({type(err).__name__}: {err}); the file is "
            "truncated or not a NIfTI file: copy it again from the source"
        ) from err
    except nib.filebasedimages.ImageFileError as err:
        raise CorruptFileError(f"{path}: not a valid NIfTI file ({err})") from err
    data = _select_channel(path, data, channel)
    header = img.header
    meta = {
        "source": str(path),
        "format": "nifti",
        "modality": "unknown",
        "stored_dtype": str(header.get_data_dtype()),
        "description": _header_text(header, "descrip"),
    }
    return Volume(data, img.affine, meta)


def _select_channel(path: Path, data: np.ndarray, channel: int | None) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1 and channel is None:
        data = data[..., 0]
    if data.ndim == 3:
        if channel not in (None, 0):
            raise DimensionError(f"{path}: is 3D; --channel {channel} does not apply")
        return data
    if data.ndim == 4:
        n = data.shape[3]
        if channel is None:
            raise DimensionError(
                f"{path}: is 4D with {n} channels/time points (shape {data.shape}), expected 3D; "
                f"pick one with channel=N (CLI: --channel N, N in 0..{n - 1})"
            )
        if not 0 <= channel < n:
            raise DimensionError(f"{path}: channel {channel} out of range 0..{n - 1}")
        return np.asarray(data[..., channel])
    raise DimensionError(f"{path}: has {data.ndim} dimensions (shape {data.shape}), expected 3")


def _header_text(header: nib.Nifti1Header, key: str) -> str:
    try:
        value = header[key]
        raw = value.item() if hasattr(value, "item") else value
        return raw.decode("latin-1").strip("\x00 ") if isinstance(raw, bytes) else str(raw)
    except (KeyError, ValueError):
        return ""


def write_nifti(volume: Volume, path: Path, overwrite: bool = False) -> Path:
    """Write ``volume`` as NIfTI with its exact affine (qform and sform), atomically."""
    path = Path(path)
    source = volume.metadata.get("source")
    if source and Path(source).resolve() == path.resolve():
        raise OverwriteError(f"{path}: refusing to overwrite the input file; choose another path")
    if path.exists() and not overwrite:
        raise OverwriteError(f"{path} already exists; pass overwrite=True (CLI: --overwrite)")
    if not is_nifti(path):
        raise OverwriteError(f"{path}: output must end in .nii or .nii.gz")
    img = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"medseg; research use only"
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return path
