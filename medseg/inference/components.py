"""26-connected components of a label volume, found slab by slab in bounded memory.

``ndimage.label`` over a whole scan needs an int32 map (4 bytes per voxel, twice an int16
CT) plus a boolean copy; a noise-like mask then also yields hundreds of thousands of
components. :class:`ComponentSweep` labels one slab of planes at a time (about
:data:`COMPONENT_CHUNK` voxels), joins the slabs' components across each slab boundary
(26-connectivity: the 3 x 3 neighbours in the next plane) and hands every finished
component's statistics to a callback as soon as no later slab can reach it. What it keeps
between slabs is the previous slab's last plane, the statistics of the components still
open there and one integer per slab-local component (the join forest), never a per-voxel
array of the volume. A second pass (:meth:`ComponentSweep.relabel`) labels the slabs again
(identically) and says which component each slab-local label belongs to, for work that
needs the voxels of a few chosen components (the readouts' diameters, post-processing).

Components are identified by ``root``, an int64 id stable for one sweep; ``first`` is the
flat C-order index of a component's first voxel in the whole array, so sorting by it gives
the order in which ``ndimage.label`` over the whole volume would number them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medseg.metrics import CONNECTIVITY_26

#: voxels labelled at once (whole planes; at least one): its temporaries are ~20 bytes per
#: voxel (slab labels, bincount's intp copy, float64 coordinate weights)
COMPONENT_CHUNK = 1 << 19

_NONE = np.iinfo(np.int64).max


@dataclasses.dataclass
class ComponentStats:
    """One row per component: ``voxels``; ``first`` (flat C index of the first voxel);
    ``lo``/``hi`` (n, 3) inclusive bounding box in voxel indices of the whole array;
    ``sums`` (n, 3) float64 sums of the voxel indices (centroid = sums / voxels)."""

    root: np.ndarray
    voxels: np.ndarray
    first: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sums: np.ndarray

    def __len__(self) -> int:
        return len(self.root)

    def take(self, index: np.ndarray) -> ComponentStats:
        return ComponentStats(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: Sequence[ComponentStats]) -> ComponentStats:
        return ComponentStats(
            *(
                np.concatenate([getattr(p, f.name) for p in parts])
                for f in dataclasses.fields(ComponentStats)
            )
        )

    @staticmethod
    def empty() -> ComponentStats:
        i = np.zeros(0, np.int64)
        return ComponentStats(i, i, i, np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64),
                              np.zeros((0, 3)))  # fmt: skip


def _label_dtype(shape: Sequence[int]) -> type:
    """The smallest label dtype that holds every possible 26-connected component of a block
    of ``shape`` (at most one per 2 x 2 x 2 cell)."""
    most = math.prod((s + 1) // 2 for s in shape)
    return np.uint16 if most < 2**16 else np.int32


def _boundary_edges(prev: np.ndarray, cur: np.ndarray, n: int) -> np.ndarray:
    """(k, 2) unique pairs (open component index, slab-local label - 1) of voxels touching
    across two adjacent planes (the 9 neighbours of 26-connectivity). ``prev`` holds open
    component index + 1, ``cur`` local labels 1..``n`` (0: background)."""
    h, w = prev.shape
    keys = []
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            a = prev[max(0, -du) : h - max(0, du), max(0, -dv) : w - max(0, dv)]
            b = cur[max(0, du) : h - max(0, -du), max(0, dv) : w - max(0, -dv)]
            both = (a > 0) & (b > 0)
            if both.any():
                keys.append((a[both].astype(np.int64) - 1) * n + b[both] - 1)
    if not keys:
        return np.zeros((0, 2), np.int64)
    unique = np.unique(np.concatenate(keys))
    return np.stack([unique // n, unique % n], 1)


class _Forest:
    """Parent array of the join forest over slab-local component ids (``parent[i] <= i``:
    a group's representative is its smallest id).

    Allocated zeroed at its upper bound: the kernel maps untouched zero pages lazily, so only
    the ids in use are resident, and growing never copies (a doubling copy of 30 M ids, what
    one-plane slabs of a noisy 1024 x 1024 x 400 mask give, would be a 3x transient).
    """

    def __init__(self, capacity: int) -> None:
        dtype = np.int32 if capacity < 2**31 - 1 else np.int64
        self.parent = np.zeros(capacity + 1, dtype)
        self.size = 1  # id 0: background

    def extend(self, n: int) -> int:
        """Reserve ``n`` new ids; returns the offset (ids ``offset+1 .. offset+n``)."""
        offset = self.size - 1
        self.parent[self.size : self.size + n] = np.arange(self.size, self.size + n)
        self.size += n
        return offset

    def resolve(self, chunk: int = 1 << 20) -> np.ndarray:
        """Root of every id, in place: ascending chunks of pointer jumping (a parent is never
        larger than its id, so earlier chunks are final when a later one reads them)."""
        parent = self.parent[: self.size]
        for start in range(0, self.size, chunk):
            part = parent[start : start + chunk]
            while True:
                jumped = parent[part]
                if np.array_equal(jumped, part):
                    break
                part[...] = jumped
        return parent


class ComponentSweep:
    """26-connected components of the voxels of ``label`` whose value is in ``values``,
    within ``box`` (slices; default: the whole array), labelled in slabs along ``axis``.

    Call :meth:`run` once (every component reaches ``on_closed`` exactly once), then
    :meth:`relabel` as often as needed.
    """

    def __init__(
        self,
        label: np.ndarray,
        values: Sequence[int],
        box: tuple[slice, ...] | None = None,
        axis: int = 0,
        chunk_voxels: int | None = None,
    ) -> None:
        self.label = label
        self.values = tuple(int(v) for v in values)
        self.box = box or tuple(slice(0, n) for n in label.shape)
        self.axis = axis
        sizes = [s.stop - s.start for s in self.box]
        plane = math.prod(n for a, n in enumerate(sizes) if a != axis)
        self.step = max(1, (chunk_voxels or COMPONENT_CHUNK) // max(plane, 1))
        # at most one slab-local component per 2 x 2 x 2 cell of each slab
        self._forest = _Forest(
            sum(math.prod((b.stop - b.start + 1) // 2 for b in slab) for slab in self._slab_boxes())
        )
        self._offsets: list[int] = []
        self._roots: np.ndarray | None = None

    # ------------------------------------------------------------------ slabs
    def _slab_boxes(self) -> list[tuple[slice, ...]]:
        span = self.box[self.axis]
        return [
            tuple(
                slice(start, min(start + self.step, span.stop)) if a == self.axis else s
                for a, s in enumerate(self.box)
            )
            for start in range(span.start, span.stop, self.step)
        ]

    def _label_slab(self, slab: tuple[slice, ...]) -> tuple[np.ndarray, int]:
        """Labels of one slab with the sweep axis first (C-contiguous: ``ndimage.label`` is
        ~7x slower on a block whose last axis is a few planes long) and their count."""
        block = np.moveaxis(self.label[slab], self.axis, 0)
        mask = np.empty(block.shape, bool)
        if len(self.values) == 1:
            np.equal(block, self.values[0], out=mask)
        else:
            mask[...] = np.isin(block, self.values)
        local = np.empty(mask.shape, _label_dtype(mask.shape))
        n = ndimage.label(mask, structure=CONNECTIVITY_26, output=local)
        return local, int(n)

    # ------------------------------------------------------------------ statistics
    def _local_stats(self, local: np.ndarray, n: int, slab: tuple[slice, ...]) -> ComponentStats:
        """Statistics of a slab's components from its foreground voxels only (``find_objects``
        costs ~0.2 s per million voxels on noise; this ~20 bytes per foreground voxel)."""
        flat = local.reshape(-1)
        idx = np.flatnonzero(flat)
        lab = flat[idx].astype(np.intp) - 1
        voxels = np.bincount(lab, minlength=n).astype(np.int64)
        lo = np.full((n, 3), _NONE, np.int64)
        hi = np.full((n, 3), -1, np.int64)
        sums = np.empty((n, 3))
        full = np.zeros(len(idx), np.int64)  # flat index in the whole array
        moved = [self.axis, *(a for a in range(3) if a != self.axis)]
        steps = np.cumprod([1, *local.shape[:0:-1]])[::-1]  # C strides of local, in voxels
        whole = np.cumprod([1, *self.label.shape[:0:-1]])[::-1]
        for m, a in enumerate(moved):
            coord = idx // steps[m] % local.shape[m] + slab[a].start
            np.minimum.at(lo[:, a], lab, coord)
            np.maximum.at(hi[:, a], lab, coord)
            sums[:, a] = np.bincount(lab, weights=coord, minlength=n)
            full += coord * whole[a]
            del coord
        first = np.full(n, _NONE, np.int64)
        np.minimum.at(first, lab, full)
        root = np.arange(1, n + 1, dtype=np.int64)  # replaced by the forest ids
        return ComponentStats(root, voxels, first, lo, hi, sums)

    @staticmethod
    def _merge(stats: ComponentStats, group: np.ndarray, count: int) -> ComponentStats:
        """Statistics of ``count`` groups, row ``i`` of ``stats`` belonging to ``group[i]``."""
        root = np.full(count, _NONE, np.int64)
        np.minimum.at(root, group, stats.root)
        first = np.full(count, _NONE, np.int64)
        np.minimum.at(first, group, stats.first)
        lo = np.full((count, 3), _NONE, np.int64)
        np.minimum.at(lo, group, stats.lo)
        hi = np.full((count, 3), -1, np.int64)
        np.maximum.at(hi, group, stats.hi)
        voxels = np.bincount(group, weights=stats.voxels, minlength=count).astype(np.int64)
        sums = np.stack(
            [np.bincount(group, weights=stats.sums[:, a], minlength=count) for a in range(3)], 1
        )
        return ComponentStats(root, voxels, first, lo, hi, sums)

    # ------------------------------------------------------------------ passes
    def run(self, on_closed: Callable[[ComponentStats], None]) -> None:
        """Label every slab; call ``on_closed`` with the statistics of the components that
        no later slab can reach (each component exactly once)."""
        open_ = ComponentStats.empty()
        prev_plane: np.ndarray | None = None  # open index + 1 in the previous slab's last plane
        slabs = self._slab_boxes()
        for k, slab in enumerate(slabs):
            local, n = self._label_slab(slab)
            offset = self._forest.extend(n)
            self._offsets.append(offset)
            if n == 0 and len(open_) == 0:
                prev_plane = None
                continue
            stats = self._local_stats(local, n, slab)
            stats.root += offset
            m = len(open_)
            edges = np.zeros((0, 2), np.int64)
            if prev_plane is not None and m and n:
                edges = _boundary_edges(prev_plane, local[0], n)
                edges[:, 1] += m
            graph = coo_matrix(
                (np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(m + n, m + n)
            )
            count, group = connected_components(graph, directed=False)
            merged = self._merge(ComponentStats.concat([open_, stats]), group, count)
            parent = self._forest.parent
            parent[open_.root] = merged.root[group[:m]]
            parent[offset + 1 : offset + n + 1] = merged.root[group[m:]]
            last = local[-1]
            still_open = np.zeros(count, bool)
            if k + 1 < len(slabs) and n:
                touching = np.flatnonzero(np.bincount(last.reshape(-1), minlength=n + 1)[1:])
                still_open[group[m + touching]] = True
            closed = merged.take(np.flatnonzero(~still_open))
            if len(closed):
                on_closed(closed)
            kept = np.flatnonzero(still_open)
            open_ = merged.take(kept)
            prev_plane = None
            if len(open_):
                index = np.zeros(count, np.int32)
                index[kept] = np.arange(1, len(kept) + 1)
                prev_plane = np.concatenate([np.zeros(1, np.int32), index[group[m:]]])[last]
            del local, last
        self._roots = self._forest.resolve()

    def relabel(
        self, start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[tuple[slice, ...], np.ndarray, np.ndarray]]:
        """(slab box, slab labels, root of each label; index 0 -> 0) for the slabs meeting
        ``[start, stop)`` along the axis (all by default); after :meth:`run`. The labels have
        the sweep axis first (``np.moveaxis(label[slab], axis, 0)``)."""
        if self._roots is None:
            raise RuntimeError("ComponentSweep.relabel before run")
        for slab, offset in zip(self._slab_boxes(), self._offsets, strict=True):
            span = slab[self.axis]
            if (start is not None and span.stop <= start) or (
                stop is not None and span.start >= stop
            ):
                continue
            local, n = self._label_slab(slab)
            roots = np.concatenate([[0], self._roots[offset + 1 : offset + n + 1]])
            yield slab, local, roots
