"""Volume I/O with exact geometry: NIfTI, DICOM series, DICOM-SEG, NRRD/MHA/MHD -> :class:`Volume`.

See ``docs/io.md`` for the conventions (array order ``[i, j, k]``, RAS+ affine in mm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputNotFoundError, UnsupportedFormatError
from medseg.io.atomic import check_output
from medseg.io.dicom import read_dicom_file, read_dicom_folder
from medseg.io.dicom_seg import read_dicom_seg
from medseg.io.dicom_series import is_dicom_file, list_dicom_series
from medseg.io.itk import ITK_SUFFIXES, is_itk_file, read_itk, write_itk
from medseg.io.nifti import is_nifti, read_nifti, write_nifti, write_nifti_channels
from medseg.io.resample import align_to_grid
from medseg.io.volume import Volume, check_same_grid, integer_labels

__all__ = [
    "Volume",
    "align_to_grid",
    "channel_count",
    "check_output_path",
    "check_same_grid",
    "integer_labels",
    "list_dicom_series",
    "read_dicom_seg",
    "read_volume",
    "write_mask",
    "write_probabilities",
    "write_volume",
]

WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def read_volume(
    path: str | Path, *, series: str | None = None, channel: int | None = None
) -> Volume:
    """Read a scan or mask from NIfTI, a DICOM folder/file, DICOM-SEG or NRRD/MHA/MHD.

    Args:
        path: ``.nii``/``.nii.gz`` file, DICOM series folder, single DICOM file (a DICOM-SEG
            gives its label map), or ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` file.
        series: SeriesInstanceUID (or a unique prefix / the description) when a DICOM folder
            holds several series.
        channel: index along the 4th axis (or vector component) of a 4D file.

    Returns:
        A 3D :class:`Volume`: ``array[i, j, k]`` in the file's voxel order, RAS+ affine (mm).
        Float-stored label maps come back as integers; CT DICOM comes back in HU.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{path} does not exist; check the path")
    if path.is_dir():
        return read_dicom_folder(path, series=series)
    if path.stat().st_size == 0:
        raise InputNotFoundError(f"{path} is an empty file (0 bytes); copy it again")
    if is_nifti(path):
        return read_nifti(path, channel=channel)
    if is_itk_file(path):
        return read_itk(path, channel=channel)
    if path.suffix.lower() in (".dcm", ".dicom", ".ima") or is_dicom_file(path):
        return read_dicom_file(path)
    raise UnsupportedFormatError(
        f"{path}: unsupported input (suffix {''.join(path.suffixes) or 'none'}); expected a "
        ".nii/.nii.gz file, a DICOM series folder or file, or a "
        f"{'/'.join(ITK_SUFFIXES)} file"
    )


def channel_count(path: str | Path) -> int:
    """Channels (4th-axis entries or vector components) of an image file, from its header
    only; 1 for 3D files and DICOM. Use with ``read_volume(path, channel=i)``."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        return 1
    if is_nifti(path):
        import nibabel as nib

        try:
            img = nib.load(str(path))
        except Exception:  # unreadable: read_volume will report it properly
            return 1
        colours = img.header.get_data_dtype().names  # RGB24/RGBA32: one channel per colour
        if colours:
            return len(colours)
        extra = [int(s) for s in img.shape[3:]]
        return int(np.prod(extra)) if extra else 1
    if is_itk_file(path):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return 1
        size = reader.GetSize()
        return max(int(reader.GetNumberOfComponents()), int(size[3]) if len(size) > 3 else 1)
    return 1


def _inputs_of(volume: Volume) -> list[Path]:
    meta = volume.metadata
    paths = [Path(p) for p in meta.get("dicom_files", [])]
    if meta.get("source"):
        paths.append(Path(meta["source"]))
    return paths


def check_output_path(
    path: str | Path, *, overwrite: bool = False, inputs: list[Path] | tuple[Path, ...] = ()
) -> Path:
    """Validate an output path before any work: writable format, then the output guard
    (:func:`medseg.io.atomic.check_output`: not an input, not a folder, no clobbering).

    Raises:
        OverwriteError: ``path`` is one of ``inputs`` (a link to one included, or inside an
            input DICOM folder), a folder, or exists and ``overwrite`` is False.
        OutputWriteError: a link loop or a file among ``path``'s folders.
        UnsupportedFormatError: the suffix is not one medseg writes.
    """
    path = Path(path)
    if not path.name.lower().endswith(WRITE_SUFFIXES) and not path.is_dir():
        raise UnsupportedFormatError(
            f"{path}: cannot write this format; use one of {', '.join(WRITE_SUFFIXES)}"
        )
    return check_output(path, overwrite=overwrite, inputs=list(inputs))


def write_volume(volume: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``volume`` with its exact geometry, atomically; the suffix picks the format.

    ``.nii.gz``/``.nii`` (default, nibabel: qform = sform = the affine) or ``.nrrd``/``.mha``
    (SimpleITK, LPS). Refuses to overwrite the volume's own input, or an existing file
    unless ``overwrite=True``.
    """
    path = check_output_path(path, overwrite=overwrite, inputs=_inputs_of(volume))
    if is_nifti(path):
        return write_nifti(volume, path, overwrite=overwrite)
    return write_itk(volume, path)


def write_probabilities(
    probabilities: np.ndarray, like: Volume, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write class probabilities ``(K, I, J, K')`` on ``like``'s grid as a 4D float32 NIfTI
    ``(I, J, K', classes)`` with ``like``'s exact affine (never over an input)."""
    path = check_output_path(path, overwrite=overwrite, inputs=_inputs_of(like))
    return write_nifti_channels(probabilities, like, path, overwrite=overwrite)


def write_mask(
    mask: np.ndarray, like: Volume, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write an integer label array on ``like``'s voxel grid (same shape, affine).

    ``mask`` must have ``like.shape`` (array order ``[i, j, k]``); it is stored as uint8
    (labels 0..255) or int16, so nibabel and SimpleITK both read it back exactly.
    """
    mask = np.asarray(mask)
    if mask.dtype.kind == "f" and not np.array_equal(mask, np.round(mask)):
        raise UnsupportedFormatError(
            "write_mask got non-integer values (probabilities?); threshold or argmax first, "
            "or use write_volume for float images"
        )
    dtype = np.uint8 if mask.size == 0 or (mask.min() >= 0 and mask.max() < 256) else np.int16
    return write_volume(like.with_array(mask.astype(dtype)), path, overwrite=overwrite)
