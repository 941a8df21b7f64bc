"""Volume I/O with exact geometry: NIfTI, DICOM series, NRRD/MHA/MHD -> :class:`Volume`.

See ``docs/io.md`` for the conventions (array order ``[i, j, k]``, RAS+ affine in mm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputNotFoundError, UnsupportedFormatError
from medseg.io.nifti import is_nifti, read_nifti, write_nifti
from medseg.io.volume import Volume, check_same_grid

__all__ = ["Volume", "check_same_grid", "read_volume", "write_mask", "write_volume"]


def read_volume(path: str | Path, *, series: str | None = None, channel: int | None = None) -> Volume:
    """Read a scan or mask from a NIfTI file, DICOM series folder or NRRD/MHA/MHD file.

    Args:
        path: file or DICOM folder.
        series: SeriesInstanceUID (or a unique prefix / description) when a DICOM folder
            holds several series.
        channel: index along the 4th axis of a 4D NIfTI.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist; check the path")
    if path.is_file() and is_nifti(path):
        return read_nifti(path, channel=channel)
    raise UnsupportedFormatError(
        f"{path}: unsupported input; expected a .nii/.nii.gz file, a DICOM series folder or a "
        ".nrrd/.mha/.mhd file"
    )


def write_volume(volume: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``volume`` as NIfTI (``.nii``/``.nii.gz``) with its exact geometry, atomically."""
    return write_nifti(volume, Path(path), overwrite=overwrite)


def write_mask(
    mask: np.ndarray, like: Volume, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write an integer label array on ``like``'s voxel grid (same shape, affine) as NIfTI."""
    mask = np.asarray(mask)
    dtype = np.uint8 if mask.size == 0 or (mask.min() >= 0 and mask.max() < 256) else np.int16
    return write_volume(like.with_array(mask.astype(dtype)), path, overwrite=overwrite)
