"""NRRD / MHA / MHD (and NIfTI, for cross-checks) through SimpleITK.

SimpleITK works in LPS+ and its numpy view is ``(z, y, x)``; medseg's ``Volume`` is RAS+ with
``array[i, j, k]`` = ``(x, y, z)``. Conversion at this boundary only:

* array: ``sitk.GetArrayFromImage(img).transpose(2, 1, 0)``;
* affine: ``A_lps[:3, :3] = direction @ diag(spacing)``, ``A_lps[:3, 3] = origin``,
  then ``A_ras = diag(-1, -1, 1, 1) @ A_lps`` (first two rows negated).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import CorruptFileError, DimensionError, UnsupportedFormatError
from medseg.io.atomic import atomic_path
from medseg.io.nifti import GZIP_MAX_RATIO, GZIP_SLACK_BYTES
from medseg.io.volume import LPS_TO_RAS, Volume, check_affine, checked_voxels

logger = logging.getLogger(__name__)

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def is_itk_file(path: Path) -> bool:
    """True for the NRRD/MetaImage suffixes read through SimpleITK."""
    return path.name.lower().endswith(ITK_SUFFIXES)


def affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """RAS+ 4x4 affine of a 3D SimpleITK image (voxel ``(x, y, z)`` -> world mm)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


def sitk_geometry(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """``(spacing, origin, direction)`` in ITK's LPS convention from a RAS+ affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise UnsupportedFormatError(
            "the affine has shear (non-orthogonal axes, e.g. a gantry-tilted CT), which "
            "NRRD/MHA cannot store; write NIfTI (.nii.gz) instead"
        )
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), tuple(direction.ravel().tolist())


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with ``volume``'s voxels and geometry (LPS)."""
    array = np.asarray(volume.array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    spacing, origin, direction = sitk_geometry(volume.affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def volume_from_sitk(image: sitk.Image, source: str, channel: int | None = None) -> Volume:
    """Convert a SimpleITK image (3D, or 4D / vector with ``channel``) to a Volume."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        n = image.GetNumberOfComponentsPerPixel()
        if channel is None:
            raise DimensionError(
                f"{source}: has {n} components per voxel (vector image), expected one; "
                f"pick one with channel=N (CLI: --channel N, N in 0..{n - 1})"
            )
        if not 0 <= channel < n:
            raise DimensionError(f"{source}: channel {channel} out of range 0..{n - 1}")
        image = sitk.VectorIndexSelectionCast(image, channel)
    elif image.GetDimension() == 4:
        n = image.GetSize()[3]
        if channel is None and n > 1:
            raise DimensionError(
                f"{source}: is 4D with {n} channels/time points (size {image.GetSize()}), "
                f"expected 3D; pick one with channel=N (CLI: --channel N, N in 0..{n - 1})"
            )
        index = channel or 0
        if not 0 <= index < n:
            raise DimensionError(f"{source}: channel {index} out of range 0..{n - 1}")
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, index])
    elif channel not in (None, 0):
        raise DimensionError(f"{source}: has a single channel; --channel {channel} does not apply")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)  # one slice: z spacing 1 mm, as ITK itself assumes
    if image.GetDimension() != 3:
        raise DimensionError(
            f"{source}: has {image.GetDimension()} dimensions (size {image.GetSize()}), expected 3"
        )
    if 0 in image.GetSize():
        raise CorruptFileError(
            f"{source}: has a dimension of length 0 (size {image.GetSize()}), so it holds no "
            "voxels; the header's sizes are wrong or the export failed: export it again"
        )
    affine = affine_from_sitk(image)
    check_affine(affine, source)
    array = checked_voxels(sitk.GetArrayFromImage(image).transpose(2, 1, 0), source)
    meta = {"source": source, "format": "itk", "modality": "unknown"}
    return Volume(array, affine, meta)  # Fortran-ordered view, no copy


def read_itk(path: str | Path, channel: int | None = None) -> Volume:
    """Read an NRRD/MHA/MHD (or any SimpleITK-readable) file as a Volume."""
    path = Path(path)
    try:
        _check_claimed_size(path)
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise CorruptFileError(
            f"{path}: SimpleITK cannot read it ({first}); the file is truncated, its data file "
            "(.raw/.zraw next to a .mhd/.nhdr) is missing, or it is not what its extension says"
        ) from err
    volume = volume_from_sitk(image, str(path), channel)
    suffix = path.name.lower().rsplit(".", 1)[-1]
    volume.metadata["format"] = {"nhdr": "nrrd", "mhd": "mha"}.get(suffix, suffix)
    if suffix in ("nrrd", "nhdr"):
        volume.metadata["description"] = _nrrd_text(image)
    return volume


# header keys holding the number of dimensions and the size per dimension
_TEXT_HEADER_KEYS = {"mha": ("NDims", "DimSize", "="), "nrrd": ("dimension", "sizes", ":")}
MAX_DIMENSIONS = 5


def _check_text_header(path: Path) -> None:
    """Refuse MHA/NRRD headers whose dimension count ITK would trust blindly.

    SimpleITK 2.x crashes the whole process (segmentation fault) on a MetaImage with
    ``NDims = -1``; a crash cannot be caught, so the count and sizes are checked here first.
    """
    kind = "mha" if path.name.lower().endswith((".mha", ".mhd")) else "nrrd"
    ndims_key, sizes_key, sep = _TEXT_HEADER_KEYS[kind]
    with open(path, "rb") as fh:
        head = fh.read(65536)
    fields: dict[str, str] = {}
    for line in head.split(b"\n"):
        if sep.encode() not in line:
            if kind == "nrrd" and not line.strip() and fields:
                break  # blank line: the NRRD data starts
            continue
        key, _, value = line.decode("latin-1").partition(sep)
        fields.setdefault(key.strip(), value.strip())
        if kind == "mha" and key.strip() == "ElementDataFile":
            break
    ndims, sizes = fields.get(ndims_key), fields.get(sizes_key)
    try:
        n = int(ndims) if ndims is not None else None
        dims = [int(v) for v in sizes.split()] if sizes is not None else None
    except ValueError:
        n, dims = -1, None
    if (n is not None and not 1 <= n <= MAX_DIMENSIONS) or (
        dims is not None and (not dims or min(dims) < 1 or (n is not None and len(dims) != n))
    ):
        raise CorruptFileError(
            f"{path}: corrupt header: {ndims_key} {ndims!r} and {sizes_key} {sizes!r} do not "
            f"describe an image (expected 1 to {MAX_DIMENSIONS} dimensions, one positive size "
            "each); the file is damaged: copy or export it again"
        )


def _check_claimed_size(path: Path) -> None:
    """Refuse, before allocating, a single-file header claiming more voxels than it can hold.

    At least one byte per voxel; compressed data at most ~1100:1 (deflate's limit) plus slack.
    Detached headers (.mhd/.nhdr) keep their voxels elsewhere and are left to SimpleITK.
    """
    _check_text_header(path)
    if path.name.lower().endswith((".mhd", ".nhdr")):
        return
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = tuple(int(s) for s in reader.GetSize())
    voxels = int(np.prod(size, dtype=object)) * max(1, reader.GetNumberOfComponents())
    bound = path.stat().st_size * GZIP_MAX_RATIO + GZIP_SLACK_BYTES
    if voxels > bound:
        raise CorruptFileError(
            f"{path}: the header claims size {size} ({voxels:,} voxels), more than a "
            f"{path.stat().st_size:,}-byte file can hold; its sizes/DimSize field is corrupt or "
            "the file is truncated: copy or export it again"
        )


def _nrrd_text(image: sitk.Image) -> str:
    for key in ("content", "NRRD_content"):
        if image.HasMetaDataKey(key):
            return image.GetMetaData(key)
    return ""


def write_itk(volume: Volume, path: Path) -> Path:
    """Write ``volume`` as NRRD/MHA (compressed), atomically. The caller checks overwrites."""
    image = volume_to_sitk(volume)
    if path.name.lower().endswith((".mhd", ".nhdr")):
        raise UnsupportedFormatError(
            f"{path}: detached-header formats (.mhd/.nhdr) write two files and cannot be "
            "written atomically; use .mha or .nrrd"
        )
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path
