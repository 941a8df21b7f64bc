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
from scipy.spatial import ConvexHull, QhullError

from medseg.data.slicing import plane_axes
from medseg.inference.components import ComponentStats, ComponentSweep
from medseg.io.volume import Volume
from medseg.metrics import CONNECTIVITY_26  # noqa: F401  (the viewer's review imports it here)

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
#: voxel), so a whole CT at once would cost 4x the source volume (8 MiB per call here)
COUNT_CHUNK = 1 << 20


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


def _bbox_mm(affine: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[list[float]]:
    corners = np.array(list(itertools.product(*zip(lo - 0.5, hi + 0.5, strict=True))))
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return [world.min(0).round(3).tolist(), world.max(0).round(3).tolist()]


#: lesions listed per class in the readouts (largest first); the rest are summarised
DEFAULT_MAX_LESIONS = 100

#: unlisted lesions are counted in decades of voxels: 1-9, 10-99, 100-999, ...
_DECADES = 12


def _size_histogram(voxels: np.ndarray) -> np.ndarray:
    """(2, decades): number of components and their voxels per decade of size."""
    decade = np.minimum(np.log10(np.maximum(voxels, 1)).astype(int), _DECADES - 1)
    return np.stack(
        [
            np.bincount(decade, minlength=_DECADES),
            np.bincount(decade, weights=voxels, minlength=_DECADES),
        ]
    )


@dataclasses.dataclass
class _Largest:
    """The ``limit`` largest components seen so far (all with None; ties in raster order, as
    ``ndimage.label`` numbers them) and a count, voxel total and size histogram of all."""

    limit: int | None
    count: int = 0
    voxels: int = 0
    decades: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((2, _DECADES)))
    _parts: list[ComponentStats] = dataclasses.field(default_factory=list)

    def add(self, stats: ComponentStats) -> None:
        self.count += len(stats)
        self.voxels += int(stats.voxels.sum())
        self.decades += _size_histogram(stats.voxels)
        self._parts.append(stats)
        if self.limit is not None:  # keep only the candidates: memory stays O(limit)
            self._parts = [self.kept]

    @property
    def kept(self) -> ComponentStats:
        """The kept components, largest first."""
        kept = ComponentStats.concat([ComponentStats.empty(), *self._parts])
        order = np.lexsort((kept.first, -kept.voxels))
        self._parts = [kept.take(order if self.limit is None else order[: self.limit])]
        return self._parts[0]

    def unlisted(self, voxel_ml: float) -> dict[str, Any]:
        """Count, volume and size histogram of the components not kept."""
        kept = self.kept
        rest = self.decades - _size_histogram(kept.voxels)
        bins = [
            {
                "voxels_from": 10**d,
                "voxels_to": 10 ** (d + 1) - 1,
                "lesions": int(rest[0, d]),
                "volume_ml": round(float(rest[1, d]) * voxel_ml, 4),
            }
            for d in range(_DECADES)
            if rest[0, d] > 0
        ]
        return {
            "lesions": self.count - len(kept),
            "volume_ml": round((self.voxels - int(kept.voxels.sum())) * voxel_ml, 4),
            "size_histogram": bins,
        }


def _diameters(
    sweep: ComponentSweep, kept: ComponentStats, affine: np.ndarray
) -> list[tuple[float, int]]:
    """Longest axial diameter (and its slice) of each kept component, from a second pass
    over the axial slabs: only the planes a kept component spans are looked at."""
    ax, inplane, r = _plane_frame(np.asarray(affine, dtype=float).tobytes())
    best = [(0.0, int(lo[ax])) for lo in kept.lo]
    if not len(kept):
        return best
    order = np.argsort(kept.root)
    roots = kept.root[order]
    start, stop = int(kept.lo[:, ax].min()), int(kept.hi[:, ax].max()) + 1
    origin = [s.start for s in sweep.box]
    for slab, local, local_roots in sweep.relabel(start, stop):
        pos = np.searchsorted(roots, local_roots).clip(max=len(roots) - 1)
        rank = np.where(roots[pos] == local_roots, order[pos], -1).astype(np.int32)
        rank[0] = -1
        for t in range(slab[ax].start, slab[ax].stop):
            active = np.flatnonzero((kept.lo[:, ax] <= t) & (kept.hi[:, ax] >= t))
            if not len(active):
                continue
            plane = rank[local[t - slab[ax].start]]  # sweep axis first
            for i in active:
                lo, hi = kept.lo[i], kept.hi[i]
                crop = tuple(slice(lo[a] - origin[a], hi[a] + 1 - origin[a]) for a in inplane)
                mask2d = plane[crop] == i
                if mask2d.any():
                    d = _max_pairwise_distance(_slice_corners(mask2d) @ r.T)
                    if d > best[i][0]:
                        best[i] = (d, t)
    return best


def _class_lesions(
    label: np.ndarray,
    affine: np.ndarray,
    cls: int,
    name: str,
    max_lesions: int | None,
) -> tuple[list[Lesion], _Largest] | None:
    """The ``max_lesions`` largest lesions of class ``cls`` (all with None) and the tally of
    every lesion of it; None when the class is absent."""
    region = class_box(label, cls)
    if region is None:
        return None
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    ax = axial_axis(affine)
    # components of the class's bounding box, slab by slab along the axial axis: no
    # whole-volume component map, and each axial plane lies in one slab for the diameters
    sweep = ComponentSweep(label, (cls,), region, axis=ax)
    largest = _Largest(max_lesions)
    sweep.run(largest.add)
    kept = largest.kept
    lesions = []
    for i, (diameter, d_slice) in enumerate(_diameters(sweep, kept, affine)):
        voxels, lo, hi = int(kept.voxels[i]), kept.lo[i], kept.hi[i]
        centroid_voxel = (kept.sums[i] - voxels * lo) / voxels + lo
        lesions.append(
            Lesion(
                label=int(cls),
                class_name=name,
                index=i + 1,
                volume_ml=float(voxels) * voxel_ml,
                voxels=voxels,
                longest_axial_diameter_mm=round(diameter, 3),
                diameter_slice=d_slice,
                centroid_ras_mm=(affine[:3, :3] @ centroid_voxel + affine[:3, 3]).round(3).tolist(),
                bbox_voxel=[lo.tolist(), hi.tolist()],
                bbox_ras_mm=_bbox_mm(affine, lo, hi),
                slice_range=[int(lo[ax]), int(hi[ax])],
            )
        )
    return lesions, largest


def _present_classes(label: np.ndarray) -> list[int]:
    return [int(c) for c in np.flatnonzero(label_counts(label)) if c > 0]


def find_lesions(
    label: np.ndarray,
    affine: np.ndarray,
    class_names: Sequence[str],
    classes: Sequence[int] | None = None,
    max_lesions: int | None = None,
) -> list[Lesion]:
    """Lesions (26-connected components) of every foreground class in ``label`` (I, J, K),
    largest first per class; the ``max_lesions`` largest of each class (None: all).

    ``affine`` is the voxel -> RAS mm matrix of the grid ``label`` lives on (the source grid,
    so volumes and diameters are in true physical units). Memory stays bounded whatever the
    mask (:mod:`medseg.inference.components`).
    """
    affine = np.asarray(affine, dtype=float)
    lesions: list[Lesion] = []
    for cls in _present_classes(label) if classes is None else classes:
        name = class_names[cls] if 0 <= cls < len(class_names) else f"class_{cls}"
        found = _class_lesions(label, affine, int(cls), name, max_lesions)
        if found is not None:
            lesions.extend(found[0])
    return lesions


def compute_readouts(
    label: Volume, class_names: Sequence[str], max_lesions: int | None = DEFAULT_MAX_LESIONS
) -> dict[str, Any]:
    """Per-class volume (mL), lesion count and the ``max_lesions`` largest lesions per class.

    Lesions beyond ``max_lesions`` (None: list all) are summarised per class under
    ``unlisted``: their count, total volume and a histogram by decades of voxels.
    ``lesions`` stays the count of every lesion; ``largest_lesion_diameter_mm`` is the
    largest among the listed ones.
    """
    counts = label_counts(label.array, minlength=len(class_names))
    num_classes = counts.size
    voxel_ml = label.voxel_volume_ml
    affine = np.asarray(label.affine, dtype=float)
    per_class = {}
    listed: list[Lesion] = []
    for cls in range(1, num_classes):
        name = class_names[cls] if cls < len(class_names) else f"class_{cls}"
        found = _class_lesions(label.array, affine, cls, name, max_lesions) if counts[cls] else None
        lesions, tally = found if found is not None else ([], _Largest(max_lesions))
        listed.extend(lesions)
        per_class[name] = {
            "label": cls,
            "volume_ml": round(float(counts[cls]) * voxel_ml, 4),
            "lesions": tally.count,
            "largest_lesion_diameter_mm": max(
                (les.longest_axial_diameter_mm for les in lesions), default=0.0
            ),
            "lesions_listed": len(lesions),
            "unlisted": tally.unlisted(voxel_ml),
        }
    return {
        "voxel_volume_ml": voxel_ml,
        "max_lesions_per_class": max_lesions,
        "classes": per_class,
        "lesions": [les.as_dict() for les in listed],
    }


def lesion_table(
    label_volume: Volume,
    class_names: Sequence[str],
    max_lesions: int | None = DEFAULT_MAX_LESIONS,
):
    """The ``max_lesions`` largest lesions per class of ``label_volume`` (None: all) as a
    pandas DataFrame (one row per lesion, mm / mL)."""
    import pandas as pd

    rows = []
    for les in find_lesions(
        label_volume.array, label_volume.affine, class_names, max_lesions=max_lesions
    ):
        row = les.as_dict()
        row["centroid_ras_mm"] = ", ".join(f"{v:.1f}" for v in les.centroid_ras_mm)
        row["bbox_voxel"] = " - ".join(str(tuple(b)) for b in les.bbox_voxel)
        row["bbox_ras_mm"] = " - ".join(str(tuple(b)) for b in les.bbox_ras_mm)
        row["slice_range"] = f"{les.slice_range[0]}-{les.slice_range[1]}"
        rows.append(row)
    columns = [f.name for f in dataclasses.fields(Lesion)]
    return pd.DataFrame(rows, columns=columns)
