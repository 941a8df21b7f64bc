"""Intensity normalisation per modality as a fitted, elementwise :class:`IntensityPlan`.

Fitting needs the whole channel (MR z-score over the foreground, percentiles of ``other``;
CT only its recorded window and statistics); applying the plan is elementwise, so the
whole-volume path (:func:`medseg.data.preprocessing.preprocess_image`) and the slab-by-slab
one (:mod:`medseg.data.slabs`) give identical values.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medseg.data.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IntensityPlan:
    """The elementwise intensity normalisation of one channel, with its constants fitted.

    Applied in this order by :meth:`apply`: clip to ``clip``, subtract ``shift``, divide by
    ``divide`` or multiply by ``multiply``, subtract ``offset``; for MR, voxels that were
    background (0, or the constant fill value ``fill``) are then set to 0. The constants are
    fitted on the whole channel (:func:`intensity_plan`); applying them is elementwise, so a
    slab of slices normalises exactly as the whole volume does (:mod:`medseg.data.slabs`).
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
        # nnU-Net's MR scheme: z-score over the foreground (skull-stripped) voxels, background
        # set to 0, so padding and background agree.
        mask, fill = _mr_foreground_and_fill(data)
        if np.count_nonzero(mask) < 2:
            return IntensityPlan(zero=True)
        mean = float(data.mean(where=mask, dtype=np.float64))
        std = float(data.std(where=mask, dtype=np.float64))
        return IntensityPlan(shift=mean, divide=max(std, 1e-8), foreground_only=True, fill=fill)
    low, high = (float(v) for v in np.percentile(data, params.clip_percentiles))
    clipped = np.clip(data, low, high)
    mean, std = float(clipped.mean(dtype=np.float64)), float(clipped.std(dtype=np.float64))
    return IntensityPlan(clip=(low, high), shift=mean, divide=max(std, 1e-8))


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
