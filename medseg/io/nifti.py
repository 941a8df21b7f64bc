"""NIfTI-1/2 reading and writing through nibabel (RAS+ affines natively)."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import CorruptFileError, DimensionError, OverwriteError, UnsupportedFormatError
from medseg.io.atomic import atomic_path, check_output
from medseg.io.volume import Volume, check_affine, checked_voxels, release_mapped_pages

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")

# deflate never compresses better than about 1032:1; anything claiming more is a bad header
GZIP_MAX_RATIO = 1100
GZIP_SLACK_BYTES = 64 * 2**20


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: Path, channel: int | None = None) -> Volume:
    """Read a NIfTI file. A 4D file needs ``channel`` (index along the 4th axis)."""
    try:
        # Uncompressed files come back as a read-only memory map: nothing is read until used,
        # and slab-by-slab inference can release the pages it has read (Volume docs).
        img = nib.load(str(path), mmap="r")
        _check_header(path, img)
        data = _load_data(img)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError, OverflowError) as err:
        raise CorruptFileError(
            f"{path}: cannot decode NIfTI data ({type(err).__name__}: {err}); the file is "
            "truncated or not a NIfTI file: copy it again from the source"
        ) from err
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as err:
        if "data code 1 " in str(err):  # DT_BINARY: one bit per voxel
            raise UnsupportedFormatError(
                f"{path}: stores 1-bit voxels (NIfTI datatype 1, DT_BINARY), which medseg and "
                "nibabel cannot read; save the mask as uint8 (e.g. `fslmaths IN OUT -odt char`)"
            ) from err
        raise CorruptFileError(
            f"{path}: not a valid NIfTI file ({type(err).__name__}: {err}); the file is "
            "truncated or not NIfTI despite its extension, or its header is corrupt: copy it "
            "again from the source"
        ) from err
    data = checked_voxels(_select_channel(path, data, channel), str(path))
    header = img.header
    meta = {
        "source": str(path),
        "format": "nifti",
        "modality": "unknown",
        "stored_dtype": str(header.get_data_dtype()),
        "description": _header_text(header, "descrip"),
    }
    if _itk_would_differ(img):
        meta["qform_sform_mismatch"] = True
        logger.warning(
            "%s: qform and sform disagree (codes %d/%d); medseg and nibabel use the sform, "
            "ITK-based tools (3D Slicer, SimpleITK) the qform, so they will place this image "
            "differently. Re-save it with `medseg convert` to make them agree",
            path,
            int(header["qform_code"]),
            int(header["sform_code"]),
        )
    labels = float_labels_as_int(data)
    if labels is not None:
        meta["labels_stored_as_float"] = True
        data = labels
    release_mapped_pages(data)  # the label check above touched the pages of a float map
    return Volume(data, img.affine, meta)


def _check_header(path: Path, img: nib.Nifti1Image) -> None:
    """Refuse, before allocating, a header whose shape, size or geometry cannot be right."""
    shape = tuple(int(s) for s in img.shape)
    if any(s == 0 for s in shape):
        raise CorruptFileError(
            f"{path}: has a dimension of length 0 (shape {shape}), so it holds no voxels; the "
            "header's dim field is wrong or the export failed: copy or export it again"
        )
    claimed = int(np.prod(shape, dtype=object)) * img.header.get_data_dtype().itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        bound = size * GZIP_MAX_RATIO + GZIP_SLACK_BYTES
        if claimed > bound:
            raise CorruptFileError(
                f"{path}: the header claims shape {shape} ({claimed:,} bytes of voxels), more "
                f"than a {size:,}-byte gzip file can hold (at most ~{bound:,} bytes); the header's "
                "dim/datatype fields are corrupt or the file is truncated: copy it again"
            )
    else:
        available = size - int(getattr(img.dataobj, "offset", 352))
        if claimed > available:
            raise CorruptFileError(
                f"{path}: the header claims shape {shape} ({claimed:,} bytes of voxels) but the "
                f"file holds only {max(available, 0):,} bytes after the header (vox_offset); it is "
                "truncated or its dim/datatype/vox_offset fields are corrupt: copy it again"
            )
    check_affine(img.affine, str(path))


def _itk_would_differ(img: nib.Nifti1Image) -> bool:
    """True when ITK would pick a different affine than nibabel.

    nibabel uses the sform whenever sform_code > 0; ITK uses it only when sform_code is 1
    (scanner) or there is no qform, and the qform otherwise.
    """
    header = img.header
    if not hasattr(header, "get_qform"):
        return False
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 or scode in (0, 1):
        return False
    try:
        qform = header.get_qform()
    except ValueError:  # quaternion b, c, d with b^2 + c^2 + d^2 > 1: no rotation at all
        return True
    return not np.allclose(qform, header.get_sform(), atol=1e-3)


def float_labels_as_int(
    data: np.ndarray, max_labels: int = 256, atol: float = 1e-4
) -> np.ndarray | None:
    """``data`` as an integer array when it is a label map stored as float, else None.

    Masks saved as float32 (BraTS ``seg``), or as integers with a scale factor that turns
    1 into 0.99999997 (BraTS ``brainmask``), would otherwise be treated as intensities: a
    float array whose values all lie within ``atol`` of whole numbers, with at most
    ``max_labels`` distinct values, is rounded (uint8 when 0..255, else int16/int32).
    """
    if data.dtype.kind != "f" or data.size == 0:
        return None
    # a cheap strided look first: a true intensity image fails it without a full pass
    # order="K": a view of an F-ordered (NIfTI) array, where ravel() would copy all of it
    sample = data.ravel(order="K")[:: max(1, data.size // 100_000)]
    if not _label_like(sample, max_labels, atol):
        return None
    if not np.all(np.isfinite(data)):
        return None
    rounded = np.round(data)
    if np.max(np.abs(data - rounded)) > atol:
        return None
    lo, hi = float(rounded.min()), float(rounded.max())
    if lo < -(2**31) or hi >= 2**31 or np.unique(rounded).size > max_labels:
        return None
    if lo >= 0 and hi <= 255:
        return rounded.astype(np.uint8)
    return rounded.astype(np.int16 if lo >= -32768 and hi <= 32767 else np.int32)


def _label_like(values: np.ndarray, max_labels: int, atol: float) -> bool:
    if not np.all(np.isfinite(values)):
        return False
    rounded = np.round(values)
    return bool(np.max(np.abs(values - rounded)) <= atol) and np.unique(rounded).size <= max_labels


def _load_data(img: nib.Nifti1Image) -> np.ndarray:
    """Voxel data with scaling applied, except an identity scale on integer storage."""
    proxy = img.dataobj
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    if img.header.get_data_dtype().kind in "iub" and slope == 1.0 and inter == 0.0:
        return np.asanyarray(proxy.get_unscaled())  # keeps the stored integer dtype
    return np.asanyarray(proxy)


def _select_channel(path: Path, data: np.ndarray, channel: int | None) -> np.ndarray:
    if data.dtype.names and channel is not None:  # RGB24/RGBA32: the colours are channels
        names = data.dtype.names
        if not 0 <= channel < len(names):
            raise DimensionError(f"{path}: channel {channel} out of range 0..{len(names) - 1}")
        data, channel = np.array(data[names[channel]]), None  # a copy: fields are strided
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]  # vector intent: components on dim 5, time (dim 4) is 1
    while data.ndim > 3 and data.shape[-1] == 1 and channel in (None, 0):
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
        return np.asanyarray(data[..., channel])  # a memory map stays one
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
    check_output(path, overwrite=overwrite, inputs=[source] if source else [])
    if not is_nifti(path):
        raise OverwriteError(f"{path}: output must end in .nii or .nii.gz")
    return _save(_storable(np.asarray(volume.array)), volume.affine, path)


def write_nifti_channels(
    channels: np.ndarray, like: Volume, path: Path, overwrite: bool = False
) -> Path:
    """Write ``channels`` ``(C, I, J, K)`` on ``like``'s grid as one 4D NIfTI ``(I, J, K, C)``
    (e.g. class probabilities), float32, exact affine, atomically."""
    path = Path(path)
    channels = np.asarray(channels)
    if channels.ndim != 4 or channels.shape[1:] != like.shape:
        raise DimensionError(
            f"{path}: channels of shape {channels.shape} do not lie on the grid {like.shape}; "
            "expected (channels, *grid)"
        )
    source = like.metadata.get("source")
    check_output(path, overwrite=overwrite, inputs=[source] if source else [])
    if not is_nifti(path):
        raise OverwriteError(f"{path}: output must end in .nii or .nii.gz")
    return _save(np.moveaxis(channels.astype(np.float32, copy=False), 0, -1), like.affine, path)


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"medseg; research use only"
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def _storable(array: np.ndarray) -> np.ndarray:
    """Cast dtypes NIfTI readers handle badly: bool -> uint8, int64 -> int32 when it fits."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype in (np.int64, np.uint64) and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= 255:
            return array.astype(np.uint8)
        if lo >= -(2**31) and hi < 2**31:
            return array.astype(np.int32)
    return array
