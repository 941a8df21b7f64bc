"""Streamed preprocessing: the preprocessed case ``(C, X, Y, Z)`` made one slab of slices at
a time, straight from the source volumes, for inference on scans too big to copy.

:func:`medseg.data.preprocessing.preprocess_image` materialises the whole float32 image
(``4 C N`` bytes, twice an int16 CT). A :class:`SlabImage` holds only the source arrays and
the fitted intensity constants (:class:`~medseg.data.intensity.IntensityPlan`); each
:meth:`SlabImage.slab` call reads the needed source slices (from a memory map these are the
only pages touched), reorients them to canonical RAS, resamples them in-plane and normalises
them, with the same arithmetic as the whole-volume path. Pages of a read-only memory-mapped
source are released after each slab (:func:`medseg.io.volume.release_mapped_pages`), so the
source does not stay resident either.

Fitting the intensity constants: CT uses its recorded window and statistics and reads nothing
in advance; MR reads each channel twice more, slab by slab
(:func:`~medseg.data.intensity.mr_plan` over :func:`~medseg.data.intensity.stat_slabs`, ~4 MiB
of float32 at a time), the same slabs the whole-volume path sums, so the constants are
bit-identical. Only ``other`` (percentile
clip, rarely used) still builds one transient float32 copy per channel, freed before
inference.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from medseg.data.intensity import IntensityPlan, intensity_plan, mr_plan, needs_statistics
from medseg.data.preprocessing import (
    CANONICAL,
    GridInfo,
    PreprocessingParams,
    check_channels,
    check_finite,
    make_grid,
    preprocess_image,
    resample_array,
)
from medseg.io.volume import Volume, release_mapped_pages


class SlabImage:
    """A preprocessed case ``(C, X, Y, Z)`` (canonical RAS, float32) computed slab by slab.

    Equal to ``preprocess_image(channels, params)[0]`` slab for slab (tested). Slabs along
    ``params.slice_axis`` (the axis in-plane resampling leaves alone) or along any axis of an
    unresampled case are streamed; any other request falls back to the whole preprocessed
    image, computed once and kept.

    Attributes:
        grid: the :class:`~medseg.data.preprocessing.GridInfo` of the preprocessed case.
        shape: ``(C, X', Y', Z')`` of the preprocessed image.
    """

    def __init__(self, channels: Sequence[Volume], params: PreprocessingParams) -> None:
        channels = list(channels)
        check_channels(channels, params)
        self.params = params
        self.grid: GridInfo = make_grid(channels[0], params)
        self.shape = (len(channels), *self.grid.shape)
        self._channels = channels
        self._ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(channels[0].affine),
            nib.orientations.axcodes2ornt(CANONICAL),
        )
        self._sources, replaced = [], []
        for vol in channels:
            array, count = check_finite(vol.array, str(vol.metadata.get("source", "image")))
            release_mapped_pages(vol.array)  # a float source was read whole to check it
            self._sources.append(array if count else vol.array)  # keep the memory map
            replaced.append(count)
        if any(replaced):
            self.grid.nonfinite_replaced = replaced
        self._plans = [self._fit_plan(c) for c in range(len(channels))]
        self._full: np.ndarray | None = None

    @property
    def streamed_axes(self) -> tuple[int, ...]:
        """Axes along which slabs are made without the whole image."""
        return (self.params.slice_axis,) if self.grid.resampled else (0, 1, 2)

    def _fit_plan(self, c: int) -> IntensityPlan:
        stats = self.params.intensity_stats[c] if self.params.intensity_stats else None
        if not needs_statistics(self.params):
            return intensity_plan(None, self.params, stats)
        axis = self.params.slice_axis  # streamed whether or not the case is resampled
        if self.params.modality == "mr":
            return mr_plan(functools.partial(self._prepared, c, axis), self.grid.shape, axis)
        # percentiles need the whole channel: build it once (float32), fit, free it
        whole = self._prepared(c, axis, 0, self.grid.shape[axis])
        return intensity_plan(whole, self.params, stats)

    def _prepared(self, c: int, axis: int, start: int, stop: int) -> np.ndarray:
        """Channel ``c``'s slab ``start:stop`` along canonical ``axis``: reoriented, resampled
        and cast to float32 with NaN/Inf replaced, not yet normalised."""
        source = self._sources[c]
        src_axis = int(np.flatnonzero(self._ornt[:, 0] == axis)[0])
        n = source.shape[src_axis]
        lo, hi = (n - stop, n - start) if self._ornt[src_axis, 1] < 0 else (start, stop)
        index = [slice(None)] * 3
        index[src_axis] = slice(lo, hi)
        canon = nib.orientations.apply_orientation(source[tuple(index)], self._ornt)
        shape = list(self.grid.shape)
        shape[axis] = stop - start
        if self.grid.resampled:
            canon = resample_array(canon.astype(np.float32)[None], shape, "trilinear")[0]
        out = np.empty(shape, dtype=np.float32)
        out[...] = canon
        release_mapped_pages(source)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def slab(self, axis: int, start: int, stop: int) -> np.ndarray:
        """Preprocessed slices ``start:stop`` along canonical ``axis``: float32
        ``(C, ...)`` with ``stop - start`` entries on ``axis + 1``."""
        if axis not in self.streamed_axes:
            if self._full is None:
                self._full = preprocess_image(self._channels, self.params)[0]
            index = [slice(None)] * 4
            index[axis + 1] = slice(start, stop)
            return self._full[tuple(index)]
        parts = [
            plan.apply(self._prepared(c, axis, start, stop)) for c, plan in enumerate(self._plans)
        ]
        return np.stack(parts) if len(parts) > 1 else parts[0][None]
