"""Clinical readouts from a label volume: per-class volume (mL) and lesion tables.

A *lesion* is a 3D connected component of one class (26-connectivity: voxels touching by a
face, edge or corner belong together, as in nnU-Net's and 3D Slicer's island tools). For each
lesion we report its volume in mL, centroid (RAS mm), bounding box (voxel indices and RAS mm),
slice range along the axial voxel axis and the **longest axial diameter** in mm: the largest
in-plane Feret diameter over the axial slices of the lesion, measured in physical mm through
the affine on the outer voxel edges (like a RECIST longest diameter, but computed
automatically and not verified by a reader). The viewer and ``medseg predict`` both use these
functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from medseg.data.slicing import plane_axes
from medseg.io.volume import Volume
from medseg.metrics import CONNECTIVITY_26

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Lesion:
    """One connected component of one class (all lengths in mm, volumes in mL)."""

    label: int
    class_name: str
    index: int  # 1-based, largest lesion of the class first
    volume_ml: float
    voxels: int
    longest_axial_diameter_mm: float
    diameter_slice: int  # index along the axial voxel axis where the diameter was measured
    centroid_ras_mm: list[float]
    bbox_voxel: list[list[int]]  # [[i0, j0, k0], [i1, j1, k1]] inclusive
    bbox_ras_mm: list[list[float]]  # [[xmin, ymin, zmin], [xmax, ymax, zmax]] over voxel edges
    slice_range: list[int]  # [first, last] along the axial voxel axis

    def as_dict(self) -> dict[str, Any]:
        # shallow: the list fields are fresh per lesion (asdict's deep copy is slow)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def axial_axis(affine: np.ndarray) -> int:
    """Voxel axis (0, 1 or 2) whose direction is closest to superior-inferior (world z)."""
    directions = np.asarray(affine, dtype=float)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    return int(np.argmax(np.abs(directions[2])))


#: voxels counted per np.bincount call: bincount copies its input to int64 (8 bytes per
#: voxel), so a whole CT at once would cost 4x the source volume
COUNT_CHUNK = 1 << 22


def label_counts(label: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Voxels per label value ``0..max`` of an integer ``label`` array (negatives count as 0),
    in chunks of :data:`COUNT_CHUNK` voxels so no full-size temporary is made."""
    flat = label.reshape(-1)
    counts = np.zeros(max(minlength, 1), dtype=np.int64)
    for start in range(0, flat.size, COUNT_CHUNK):
        part = flat[start : start + COUNT_CHUNK]
        if not np.issubdtype(part.dtype, np.unsignedinteger):
            part = part.astype(np.int64).clip(0)
        found = np.bincount(part, minlength=counts.size)
        if found.size > counts.size:
            counts = np.pad(counts, (0, found.size - counts.size))
        counts[: found.size] += found
    return counts


def class_volumes_ml(label: np.ndarray, voxel_ml: float, num_classes: int) -> list[float]:
    """Volume in mL of every class ``0..num_classes-1`` of an integer ``label`` array."""
    counts = label_counts(label, minlength=num_classes)
    return [float(c) * voxel_ml for c in counts[:num_classes]]


def class_box(label: np.ndarray, value: int, chunk: int = 16) -> tuple[slice, ...] | None:
    """Bounding box (slices) of the voxels equal to ``value`` in a 3D ``label``, or ``None``;
    scanned ``chunk`` planes of axis 0 at a time (no full-size boolean mask)."""
    planes = np.zeros(label.shape[0], dtype=bool)
    rest = np.zeros(label.shape[1:], dtype=bool)
    for start in range(0, label.shape[0], chunk):
        hit = label[start : start + chunk] == value
        planes[start : start + chunk] = hit.any(axis=(1, 2))
        rest |= hit.any(axis=0)
    if not planes.any():
        return None
    box = []
    for found in (planes, rest.any(axis=1), rest.any(axis=0)):
        idx = np.flatnonzero(found)
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _max_pairwise_distance(points: np.ndarray) -> float:
    """Largest Euclidean distance between rows of ``points`` (N, 2), via the convex hull."""
    if len(points) < 2:
        return 0.0
    if len(points) > 32:
        # the farthest pair lies on the convex hull; collinear points make Qhull fail, and
        # brute force over all of them is fine then
        with contextlib.suppress(QhullError):
            points = points[ConvexHull(points).vertices]
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


_CORNERS = np.array(list(itertools.product((-0.5, 0.5), repeat=2)))


def _slice_corners(mask2d: np.ndarray) -> np.ndarray:
    """Voxel-corner coordinates ``(N, 2)`` whose convex hull is that of the 2D mask's pixels.

    Only the first and last pixel of every row can be hull vertices (every other pixel of
    the row lies between them), so at most ``8 * rows`` corners are needed: this keeps big,
    ragged masks (thousands of boundary pixels) fast.
    """
    rows = np.flatnonzero(mask2d.any(axis=1))
    sub = mask2d[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    pix = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    return (pix[:, None, :] + _CORNERS[None]).reshape(-1, 2)


@functools.lru_cache(maxsize=16)
def _plane_frame(affine_bytes: bytes) -> tuple[int, list[int], np.ndarray]:
    """Axial axis, in-plane axes and the 2x2 metric factor ``r`` of the axial plane.

    World offsets in the plane are ``corners @ M.T`` with ``M`` the two in-plane affine
    columns; ``M = Q R`` with orthonormal ``Q``, so ``corners @ R.T`` has the same distances
    (exact for oblique and sheared grids) in 2D.
    """
    affine = np.frombuffer(affine_bytes, dtype=float).reshape(4, 4)
    ax = axial_axis(affine)
    inplane = list(plane_axes(ax))
    return ax, inplane, np.linalg.qr(affine[:3, inplane])[1]


def longest_axial_diameter(
    mask: np.ndarray, affine: np.ndarray, offset: Sequence[int] = (0, 0, 0)
) -> tuple[float, int]:
    """Largest in-plane Feret diameter (mm) of a binary ``mask`` over its axial slices.

    ``mask`` may be a crop of the full grid starting at voxel ``offset``. Returns the
    diameter and the (full-grid) slice index along the axial voxel axis where it was found.
    """
    ax, inplane, r = _plane_frame(np.asarray(affine, dtype=float).tobytes())
    best, best_slice = 0.0, int(offset[ax])
    for s in np.flatnonzero(mask.any(axis=tuple(inplane))):
        corners = _slice_corners(np.take(mask, s, axis=ax))
        d = _max_pairwise_distance(corners @ r.T)
        if d > best:
            best, best_slice = d, int(s + offset[ax])
    return best, best_slice


def _centroid(mask: np.ndarray) -> np.ndarray:
    """Mean voxel index of a 3D boolean mask, from its three axis projections (cheap)."""
    total = max(int(mask.sum()), 1)
    return (
        np.array([float(np.arange(mask.shape[a]) @ mask.sum(axis=plane_axes(a))) for a in range(3)])
        / total
    )


def _bbox_mm(affine: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[list[float]]:
    corners = np.array(list(itertools.product(*zip(lo - 0.5, hi + 0.5, strict=True))))
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return [world.min(0).round(3).tolist(), world.max(0).round(3).tolist()]


def find_lesions(
    label: np.ndarray,
    affine: np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
) -> list[Lesion]:
    """All lesions (26-connected components) of every foreground class in ``label`` (I, J, K).

    ``affine`` is the voxel -> RAS mm matrix of the grid ``label`` lives on (the source grid,
    so volumes and diameters are in true physical units).
    """
    affine = np.asarray(affine, dtype=float)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    ax = axial_axis(affine)
    if classes is None:
        classes = [int(c) for c in np.flatnonzero(label_counts(label)) if c > 0]
    lesions: list[Lesion] = []
    for cls in classes:
        name = class_names[cls] if 0 <= cls < len(class_names) else f"class_{cls}"
        region = class_box(label, cls)
        if region is None:
            continue
        # components of the class's bounding box only: the int32 component map of a whole
        # CT would be twice the size of the scan itself
        origin = np.array([r.start for r in region])
        components, _ = ndimage.label(label[region] == cls, structure=CONNECTIVITY_26)
        found = []
        for comp_id, box in enumerate(ndimage.find_objects(components), start=1):
            crop = components[box] == comp_id
            voxels = int(np.count_nonzero(crop))
            lo = np.array([b.start for b in box]) + origin
            hi = np.array([b.stop - 1 for b in box]) + origin
            diameter, d_slice = longest_axial_diameter(crop, affine, lo)
            centroid = affine[:3, :3] @ (_centroid(crop) + lo) + affine[:3, 3]
            found.append(
                Lesion(
                    label=int(cls),
                    class_name=name,
                    index=0,
                    volume_ml=float(voxels) * voxel_ml,
                    voxels=voxels,
                    longest_axial_diameter_mm=round(diameter, 3),
                    diameter_slice=d_slice,
                    centroid_ras_mm=centroid.round(3).tolist(),
                    bbox_voxel=[lo.tolist(), hi.tolist()],
                    bbox_ras_mm=_bbox_mm(affine, lo, hi),
                    slice_range=[int(lo[ax]), int(hi[ax])],
                )
            )
        del components
        found.sort(key=lambda les: -les.voxels)
        for i, les in enumerate(found, start=1):
            les.index = i
        lesions.extend(found)
    return lesions


def compute_readouts(label: Volume, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class volume (mL), lesion count and lesion list of a label ``Volume``."""
    counts = label_counts(label.array, minlength=len(class_names))
    num_classes = counts.size
    volumes = [float(c) * label.voxel_volume_ml for c in counts]
    present = [int(c) for c in np.flatnonzero(counts) if c > 0]
    lesions = find_lesions(label.array, label.affine, class_names, classes=present)
    per_class = {}
    for cls in range(1, num_classes):
        name = class_names[cls] if cls < len(class_names) else f"class_{cls}"
        of_class = [les for les in lesions if les.label == cls]
        per_class[name] = {
            "label": cls,
            "volume_ml": round(volumes[cls], 4),
            "lesions": len(of_class),
            "largest_lesion_diameter_mm": max(
                (les.longest_axial_diameter_mm for les in of_class), default=0.0
            ),
        }
    return {
        "voxel_volume_ml": label.voxel_volume_ml,
        "classes": per_class,
        "lesions": [les.as_dict() for les in lesions],
    }


def lesion_table(label_volume: Volume, class_names: Sequence[str]):
    """Lesions of ``label_volume`` as a pandas DataFrame (one row per lesion, mm / mL)."""
    import pandas as pd

    rows = []
    for les in find_lesions(label_volume.array, label_volume.affine, class_names):
        row = les.as_dict()
        row["centroid_ras_mm"] = ", ".join(f"{v:.1f}" for v in les.centroid_ras_mm)
        row["bbox_voxel"] = " - ".join(str(tuple(b)) for b in les.bbox_voxel)
        row["bbox_ras_mm"] = " - ".join(str(tuple(b)) for b in les.bbox_ras_mm)
        row["slice_range"] = f"{les.slice_range[0]}-{les.slice_range[1]}"
        rows.append(row)
    columns = [f.name for f in dataclasses.fields(Lesion)]
    return pd.DataFrame(rows, columns=columns)
