"""``Volume``: a voxel array with its geometry.

Conventions used everywhere in medseg:

* ``array`` is indexed ``[i, j, k]`` in the file's own voxel order (nibabel's order; for a
  DICOM series ``i`` = column, ``j`` = row, ``k`` = slice sorted along the slice normal).
  Reading never reorients silently; :meth:`Volume.to_canonical` does it on request.
* ``affine`` is a 4x4 matrix mapping voxel indices ``(i, j, k, 1)`` to world coordinates in
  millimetres, **RAS+** as in nibabel: +x towards the patient's Right, +y Anterior,
  +z Superior. ITK and DICOM use LPS+; readers and writers convert at the boundary by
  negating the first two rows.
* ``spacing`` is the voxel size in mm along ``i, j, k`` (the column norms of the affine).
"""

from __future__ import annotations

import dataclasses
import mmap
from typing import Any

import nibabel as nib
import numpy as np

from medseg.errors import (
    CorruptFileError,
    DatasetError,
    DimensionError,
    GeometryMismatchError,
    UnsupportedFormatError,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclasses.dataclass(eq=False)
class Volume:
    """A 3D scan or mask and its geometry.

    Attributes:
        array: voxel values, shape ``(I, J, K)``; a multi-channel case is a list of Volumes.
        affine: 4x4 voxel-to-world matrix, RAS+ millimetres.
        metadata: non-identifying facts (``modality``, ``source``, ``format``,
            ``series_description``, ``rescale`` ...). JSON-serialisable values only.
        identifiers: patient identifiers (DICOM PatientName/PatientID/...). Never logged or
            shown unless the user explicitly asks; excluded from ``repr``.
    """

    array: np.ndarray
    affine: np.ndarray
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    identifiers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim != 3:
            source = self.metadata.get("source", "<array>")
            raise DimensionError(
                f"{source}: expected a 3D volume, found shape {self.array.shape}; "
                "pick one channel/time point (e.g. `medseg convert --channel N`) first"
            )

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"orientation={''.join(self.orientation)}, dtype={self.array.dtype}, "
            f"modality={self.metadata.get('modality', 'unknown')})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``i, j, k``."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Anatomical direction each array axis points to, e.g. ``('L', 'P', 'S')``."""
        return nib.orientations.aff2axcodes(self.affine)

    @property
    def origin(self) -> np.ndarray:
        """World position (RAS mm) of the centre of voxel ``(0, 0, 0)``."""
        return self.affine[:3, 3].copy()

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def with_array(self, array: np.ndarray, **metadata: Any) -> Volume:
        """A new Volume on the same grid holding ``array`` (e.g. a mask for this scan)."""
        if tuple(array.shape) != self.shape:
            raise GeometryMismatchError(
                f"array of shape {tuple(array.shape)} does not fit the grid {self.shape} of "
                f"{self.metadata.get('source', 'the reference volume')}"
            )
        meta = {k: v for k, v in self.metadata.items() if k in ("source", "format")}
        meta.update(metadata)
        return Volume(array, self.affine.copy(), meta)

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when both volumes share shape and affine (within ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    def to_canonical(self) -> Volume:
        """Reorient (axis permutation and flips only, no resampling) to RAS+ voxel order."""
        return self.reoriented(("R", "A", "S"))

    def reoriented(self, axcodes: tuple[str, str, str] | str, order: str = "C") -> Volume:
        """The same image with its array axes permuted/flipped to point along ``axcodes``.

        Pure index shuffling (lossless); the affine is updated so every voxel keeps its
        world position. ``vol.reoriented(vol.orientation)`` is the identity. ``order``: the
        new array's memory layout, "C" or "F" (one copy either way).

        Raises:
            ValueError: ``axcodes`` does not name each anatomical axis (R/L, A/P, S/I)
                exactly once, e.g. ``"SIL"``.
        """
        codes = tuple(str(c).upper() for c in axcodes)
        axes = sorted({"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(c, -1) for c in codes)
        if axes != [0, 1, 2]:
            raise ValueError(
                f"orientation codes {axcodes!r}: expected three letters naming R/L, A/P and "
                "S/I once each (e.g. 'RAS' or 'LPS')"
            )
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(self.affine),
            nib.orientations.axcodes2ornt(codes),
        )
        array = nib.orientations.apply_orientation(self.array, ornt)
        affine = self.affine @ nib.orientations.inv_ornt_aff(ornt, self.shape)
        return Volume(
            np.asarray(array, order=order), affine, dict(self.metadata), dict(self.identifiers)
        )


def checked_voxels(array: np.ndarray, source: str) -> np.ndarray:
    """``array`` if its voxel type is one medseg segments; every reader calls this.

    Integer and floating-point arrays pass unchanged (no copy); bool becomes uint8 (a mask).
    Complex, colour (NIfTI RGB24/RGBA32, a structured type) and non-numeric voxels are
    refused rather than handled silently: numpy would keep only a complex value's real part,
    and no grey level can be chosen for a colour without guessing.

    Raises:
        UnsupportedFormatError: the voxel type is complex, colour or not numeric.
    """
    dtype = array.dtype
    if dtype.kind == "b":
        return array.astype(np.uint8)
    if dtype.kind in "iuf" and not dtype.names:
        return array
    if dtype.kind == "c":
        why = (
            f"holds complex voxels ({dtype}), e.g. MR phase or k-space data; medseg segments "
            "real-valued intensities and will not keep only the real part. Save the magnitude "
            "(numpy.abs) or one real component as a real-valued image and read that"
        )
    elif dtype.names:
        n = len(dtype.names)
        why = (
            f"is a colour image ({'/'.join(dtype.names)} per voxel); medseg segments greyscale "
            f"scans and does not guess a grey level. Pick one component with channel=N (CLI: "
            f"--channel N, N in 0..{n - 1}) or convert the image to greyscale first"
        )
    else:
        why = f"has voxels of type {dtype}, which is not numeric; expected integer or float voxels"
    raise UnsupportedFormatError(f"{source}: {why}")


def release_mapped_pages(array: np.ndarray) -> bool:
    """Drop the resident pages of a read-only memory-mapped ``array`` (e.g. an uncompressed
    NIfTI read by :func:`medseg.io.read_volume`); returns whether it did.

    The data stays in the file (and the OS page cache) and is read again on the next access,
    so a slab-by-slab pass over a big scan keeps only its current slab resident. Only
    read-only maps qualify: a copy-on-write map may hold changes that dropping would lose.
    """
    mapped = getattr(array, "_mmap", None)
    if mapped is None or getattr(array, "mode", None) != "r" or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    mapped.madvise(mmap.MADV_DONTNEED)
    return True


def check_affine(affine: np.ndarray, source: str) -> None:
    """Refuse a voxel-to-world matrix that places no voxel anywhere: non-finite, zero or singular.

    Readers call this before decoding voxels, so ``medseg info``/``convert``/``predict`` report
    a corrupt header in one line instead of failing later in orientation or resampling code.

    Raises:
        CorruptFileError: the 3x3 rotation/zoom part is non-finite, zero or (near) singular.
    """
    affine = np.asarray(affine, dtype=np.float64)
    matrix = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        why = "it holds NaN or infinite values"
    else:
        sv = np.linalg.svd(matrix, compute_uv=False)
        if sv[0] == 0.0:
            why = "its rotation/zoom part is all zeros (zero voxel spacing)"
        elif sv[-1] <= 1e-6 * sv[0]:
            why = "its rotation/zoom part is singular (two axes coincide or a spacing is 0)"
        else:
            return
    raise CorruptFileError(
        f"{source}: degenerate voxel-to-world geometry: {why} (3x3 part "
        f"{np.round(matrix, 4).tolist()}), so where the voxels lie in the patient is unknown. "
        "The header's spacing/orientation (NIfTI pixdim/qform/sform, NRRD space directions, "
        "DICOM PixelSpacing/ImageOrientationPatient) is corrupt: export the scan again from "
        "its source, or repair the header (e.g. nibabel set_sform) if you know the true geometry"
    )


def check_same_grid(reference: Volume, other: Volume, what: str = "mask") -> None:
    """Raise :class:`GeometryMismatchError` unless ``other`` lies on ``reference``'s grid."""
    ref_src = reference.metadata.get("source", "image")
    other_src = other.metadata.get("source", what)
    if reference.shape != other.shape:
        raise GeometryMismatchError(
            f"{other_src}: {what} shape {other.shape} differs from {ref_src} shape "
            f"{reference.shape}; both must share one voxel grid (resample the {what} onto the "
            "image, e.g. with 3D Slicer or SimpleITK, or check you paired the right files)"
        )
    if not np.allclose(reference.affine, other.affine, atol=1e-3):
        raise GeometryMismatchError(
            f"{other_src}: {what} geometry differs from {ref_src} (origin "
            f"{np.round(other.origin, 3).tolist()} vs {np.round(reference.origin, 3).tolist()} mm, "
            f"orientation {''.join(other.orientation)} vs {''.join(reference.orientation)}, "
            f"spacing {np.round(other.spacing, 4).tolist()} vs "
            f"{np.round(reference.spacing, 4).tolist()}); they must share one voxel grid"
        )


def integer_labels(
    array: np.ndarray, source: str = "mask", what: str = "label", dtype: type = np.int16
) -> np.ndarray:
    """``array`` as integer class labels of ``dtype``; refuses soft/probability masks.

    Labels stored as floats (BraTS ``seg.nii.gz``) are accepted when every value lies within
    1e-3 of an integer. Anything else (0.5 in a soft mask) raises :class:`DatasetError`
    instead of being rounded silently, which would shrink every lesion.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return array.astype(dtype, copy=False)
    rounded = np.rint(array)
    off = ~(np.abs(rounded - array) <= 1e-3)  # NaN counts as off
    if off.any():
        example = float(array[off].flat[0])
        raise DatasetError(
            f"{source}: the {what} has non-integer values (e.g. {example:g} in "
            f"{int(off.sum())} voxel(s)); expected integer class labels 0, 1, 2, ... It looks "
            "like a soft or probability mask: threshold soft masks first (e.g. >= 0.5 -> 1)"
        )
    return rounded.astype(dtype)
