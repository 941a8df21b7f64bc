"""Intensity normalisation per modality as a fitted, elementwise :class:`IntensityPlan`.

CT uses only its recorded window and statistics. MR's z-score over the foreground is fitted
in two streamed passes over slabs of whole planes (:func:`mr_plan`, :func:`stat_slabs`), so
neither path needs a float32 copy of the channel for it; ``other`` (percentile clip) is fitted
on the whole channel. Both the whole-volume path
(:func:`medseg.data.preprocessing.preprocess_image`) and the slab-by-slab one
(:mod:`medseg.data.slabs`) fit MR over the same slabs and apply the plan elementwise, so they
give identical values.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medseg.data.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)

# voxels per slab of the streamed MR fit (whole planes, at least one): ~4 MiB of float32
STAT_SLAB_VOXELS = 1 << 20
_DEVIATION_CHUNK = 1 << 16  # float64 deviations are made this many voxels at a time (512 KiB)


@dataclasses.dataclass(frozen=True)
class IntensityPlan:
    """The elementwise intensity normalisation of one channel, with its constants fitted.

    Applied in this order by :meth:`apply`: clip to ``clip``, subtract ``shift``, divide by
    ``divide`` or multiply by ``multiply``, subtract ``offset``; for MR, voxels that were
    background (0, or the constant fill value ``fill``) are then set to 0. The constants are
    fitted on the channel's voxels (:func:`intensity_plan`, :func:`mr_plan`); applying them is
    elementwise, so a slab of slices normalises exactly as the whole volume does
    (:mod:`medseg.data.slabs`).
    """

    clip: tuple[float, float] | None = None
    shift: float = 0.0
    divide: float | None = None
    multiply: float | None = None
    offset: float = 0.0
    foreground_only: bool = False  # MR: background voxels become 0
    fill: float | None = None  # MR: constant background fill at the volume's minimum
    zero: bool = False  # MR without foreground: everything 0

    def apply(self, out: np.ndarray) -> np.ndarray:
        """Normalise float32 ``out`` (any shape, NaN/Inf already replaced) in place."""
        if self.zero:
            out[...] = 0.0
            return out
        background = None
        if self.foreground_only:
            background = out == 0
            if self.fill is not None:
                background |= out == self.fill
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        out -= self.shift
        if self.divide is not None:
            out /= self.divide
        if self.multiply is not None:
            out *= self.multiply
        if self.offset:
            out -= self.offset
        if background is not None:
            out[background] = 0.0
        return out


def needs_statistics(params: PreprocessingParams) -> bool:
    """True when the normalisation constants depend on the case's own voxels (MR z-score,
    ``other`` percentiles); CT uses its recorded window and statistics only."""
    return params.modality != "ct"


def intensity_plan(
    data: np.ndarray | None, params: PreprocessingParams, stats: dict[str, float] | None
) -> IntensityPlan:
    """The :class:`IntensityPlan` of one canonical float32 channel ``data`` (NaN/Inf already
    replaced by 0); ``data`` may be ``None`` when :func:`needs_statistics` is false."""
    if params.modality == "ct":
        if params.ct_window is not None:
            low, high = params.ct_window
        elif stats is not None:
            low, high = stats["p_low"], stats["p_high"]
        else:
            low, high = -1000.0, 1000.0  # documented fallback: a wide soft-tissue/bone window
            logger.warning(
                "CT without ct_window or fitted statistics: clipping to [-1000, 1000] HU"
            )
        if stats is not None and stats.get("std", 0) > 0:
            return IntensityPlan(clip=(low, high), shift=stats["mean"], divide=stats["std"])
        return IntensityPlan(clip=(low, high), shift=low, multiply=2.0 / (high - low), offset=1.0)
    if data is None:
        raise ValueError(f"{params.modality} normalisation is fitted on the channel's voxels")
    if params.modality == "mr":
        axis = params.slice_axis
        return mr_plan(lambda start, stop: _planes(data, axis, start, stop), data.shape, axis)
    # an exact streamed percentile needs a selection over the whole channel (several passes
    # or a sort); ``other`` is rare, so it keeps the whole-channel fit
    low, high = (float(v) for v in np.percentile(data, params.clip_percentiles))
    clipped = np.clip(data, low, high)
    mean, std = float(clipped.mean(dtype=np.float64)), float(clipped.std(dtype=np.float64))
    return IntensityPlan(clip=(low, high), shift=mean, divide=max(std, 1e-8))


def stat_slabs(shape: tuple[int, ...], axis: int) -> list[tuple[int, int]]:
    """``(start, stop)`` slabs of whole planes along ``axis`` of a volume ``shape``, each of
    about :data:`STAT_SLAB_VOXELS` voxels (at least one plane), covering the axis in order."""
    n = shape[axis]
    plane = max(1, int(np.prod(shape)) // max(n, 1))
    step = max(1, STAT_SLAB_VOXELS // plane)
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def mr_plan(
    read: Callable[[int, int], np.ndarray],
    shape: tuple[int, ...],
    axis: int,
    fill_fraction: float = 0.05,
) -> IntensityPlan:
    """nnU-Net's MR scheme, fitted slab by slab: z-score over the foreground
    (:func:`mr_foreground`: skull-stripped voxels), background set to 0 so padding and
    background agree.

    ``read(start, stop)`` returns planes ``start:stop`` along ``axis`` of the canonical float32
    channel ``shape`` (NaN/Inf replaced by 0), C-contiguous; it is called for each of
    :func:`stat_slabs` twice. Pass 1: minimum, voxels at it, non-zero voxels and the float64 sum
    (which decide the fill rule exactly as :func:`mr_foreground`); pass 2: the float64 sum of
    squared deviations from the mean over the foreground. One slab is alive at a time, plus
    float64 deviations of :data:`_DEVIATION_CHUNK` voxels. The statistics depend only on the
    slabs' values, so any caller reading the same values gets bit-identical constants.
    """
    slabs = stat_slabs(shape, axis)
    low, at_low, nonzero, total = np.inf, 0, 0, 0.0
    for start, stop in slabs:
        part = read(start, stop)
        m = float(part.min())
        count = int(np.count_nonzero(part == m))
        if m < low:
            low, at_low = m, count
        elif m == low:
            at_low += count
        nonzero += int(np.count_nonzero(part))
        total += float(np.sum(part, dtype=np.float64))
        del part  # before the next read: one slab alive at a time
    size = int(np.prod(shape))
    fill = low if low != 0.0 and at_low > fill_fraction * size else None
    n = nonzero - (at_low if fill is not None else 0)
    if n < 2:
        return IntensityPlan(zero=True)
    # zeros add nothing to the sum; a constant fill adds ``at_low`` times itself
    mean = (total - (fill * at_low if fill is not None else 0.0)) / n
    squares = 0.0
    for start, stop in slabs:
        part = read(start, stop)
        foreground = part != 0
        if fill is not None:
            foreground &= part != fill
        flat, keep = part.reshape(-1), foreground.reshape(-1)
        for i in range(0, flat.size, _DEVIATION_CHUNK):
            dev = flat[i : i + _DEVIATION_CHUNK].astype(np.float64)
            dev -= mean
            np.square(dev, out=dev)
            squares += float(np.sum(dev, where=keep[i : i + _DEVIATION_CHUNK]))
        del part, flat, foreground, keep
    std = float(np.sqrt(squares / n))
    return IntensityPlan(shift=mean, divide=max(std, 1e-8), foreground_only=True, fill=fill)


def _planes(data: np.ndarray, axis: int, start: int, stop: int) -> np.ndarray:
    index = [slice(None)] * data.ndim
    index[axis] = slice(start, stop)
    # C-contiguous like the slab path's slabs, so the reductions run in the same order
    return np.ascontiguousarray(data[tuple(index)])


def _mr_foreground_and_fill(
    data: np.ndarray, fill_fraction: float = 0.05
) -> tuple[np.ndarray, float | None]:
    mask = data != 0
    low = float(data.min())
    fill = None
    if low != 0.0:
        at_low = data == low
        if np.count_nonzero(at_low) > fill_fraction * data.size:
            mask &= ~at_low
            fill = low
    return mask, fill


def mr_foreground(data: np.ndarray, fill_fraction: float = 0.05) -> np.ndarray:
    """Voxels of an MR volume that are not background: non-zero, and not a constant fill at
    the volume's minimum when that value covers more than ``fill_fraction`` of it.

    Skull-stripped scans come with background 0 (TCGA, raw BraTS) or, once z-scored by
    another tool, with a constant at their minimum (the BraTS copies in shared/ use -3.6):
    both must give the brain alone, or the same patient normalises two different ways.
    """
    return _mr_foreground_and_fill(data, fill_fraction)[0]
