"""Put one volume on another's voxel grid, by geometry (never by array index).

When both grids share spacing and their axes are parallel (one is the other permuted,
flipped and shifted by whole voxels, e.g. a mask stored with a flipped y-axis) the mapping
is exact index shuffling: no interpolation, voxel values preserved bit for bit. Otherwise
SimpleITK resamples in physical space (nearest neighbour for labels, linear for images).
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from medseg.io.itk import volume_from_sitk, volume_to_sitk
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

_INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}


def index_mapping(moving: Volume, reference: Volume, atol: float = 1e-3) -> np.ndarray | None:
    """The 4x4 integer matrix mapping moving voxel indices to reference indices, if exact.

    Returns None when the map is not a signed axis permutation plus a whole-voxel shift
    (different spacing, rotated axes, sub-voxel offset).
    """
    mapping = np.linalg.inv(reference.affine) @ moving.affine
    rounded = np.round(mapping)
    if not np.allclose(mapping, rounded, atol=atol):
        return None
    block = rounded[:3, :3]
    if not (np.all(np.abs(block).sum(axis=0) == 1) and np.all(np.abs(block).sum(axis=1) == 1)):
        return None
    return rounded.astype(np.int64)


def _exact(moving: Volume, reference: Volume, mapping: np.ndarray, fill: float) -> np.ndarray:
    # Reorder/flip the moving array so that its axes run like the reference's ...
    perm = [int(np.flatnonzero(mapping[r, :3])[0]) for r in range(3)]
    signs = [int(mapping[r, perm[r]]) for r in range(3)]
    array = np.transpose(np.asarray(moving.array), perm)
    start = []
    for r in range(3):
        n = array.shape[r]
        if signs[r] < 0:
            array = np.flip(array, axis=r)
            start.append(int(mapping[r, 3]) - (n - 1))
        else:
            start.append(int(mapping[r, 3]))
    # ... then paste it at its whole-voxel offset, cropping what falls outside.
    out = np.full(reference.shape, fill, dtype=array.dtype)
    src, dst = [], []
    for r in range(3):
        lo, hi = max(start[r], 0), min(start[r] + array.shape[r], reference.shape[r])
        if hi <= lo:
            return out
        dst.append(slice(lo, hi))
        src.append(slice(lo - start[r], hi - start[r]))
    out[tuple(dst)] = array[tuple(src)]
    return out


def align_to_grid(
    moving: Volume, reference: Volume, interpolation: str = "nearest", fill: float = 0
) -> Volume:
    """``moving`` resampled onto ``reference``'s grid (shape and affine of ``reference``).

    Args:
        moving: the volume to move (e.g. a mask stored in another orientation).
        reference: the grid to land on (e.g. the scan).
        interpolation: "nearest" (labels) or "linear" (intensities); only used when the
            grids are not related by an exact axis permutation/flip/shift.
        fill: value outside ``moving``'s field of view.

    Returns:
        A Volume with ``reference.affine``; ``metadata['alignment']`` is "exact" or
        "resampled".
    """
    mapping = index_mapping(moving, reference)
    meta = dict(moving.metadata)
    if mapping is not None:
        array = _exact(moving, reference, mapping, fill)
        meta["alignment"] = "exact"
    else:
        if interpolation not in _INTERPOLATORS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATORS)}")
        logger.info("grids differ by more than an axis flip/permutation: resampling")
        image = sitk.Resample(
            volume_to_sitk(moving),
            volume_to_sitk(reference.with_array(np.zeros(reference.shape, np.uint8))),
            sitk.Transform(),
            _INTERPOLATORS[interpolation],
            float(fill),
        )
        array = volume_from_sitk(image, meta.get("source", "<array>")).array
        meta["alignment"] = "resampled"
    return Volume(array, reference.affine.copy(), meta, dict(moving.identifiers))
