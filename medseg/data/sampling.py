"""2D / 2.5D training and validation samples drawn from cached cases.

Training (``train=True``): each item is a random slice (a share ``foreground_ratio`` drawn
from slices containing foreground, the crop centred near a random foreground pixel, as
nnU-Net does), cut to ``crop_size`` (zero-padded when the slice is smaller), then augmented.
The randomness of item ``i`` depends only on ``(seed, epoch, i)``, so DataLoader workers and
DDP ranks (which get disjoint indices) never repeat one random stream and runs are
reproducible; call :meth:`SliceDataset.set_epoch` each epoch.

Validation (``train=False``): every slice of every case in order, whole, zero-padded at the
bottom/right to one fixed size (the largest slice over the cases, rounded up to
``pad_multiple``) so batches stack; ``valid_shape`` gives the unpadded ``(H, W)`` to crop
predictions back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.cache import CachedCase
from medseg.data.slicing import check_axes, label_slice, plane_shape, slice_stack
from medseg.errors import ConfigError

logger = logging.getLogger(__name__)


def _pad_to(
    array: np.ndarray,
    size: tuple[int, int],
    value: float | np.ndarray = 0,
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Pad the last two axes up to ``size``, placing the data at ``offset`` (top, left).

    ``value`` may be one number or one per leading channel (``(C,)``).
    """
    pad_h, pad_w = max(0, size[0] - array.shape[-2]), max(0, size[1] - array.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return array
    top, left = min(offset[0], pad_h), min(offset[1], pad_w)
    out_shape = (*array.shape[:-2], array.shape[-2] + pad_h, array.shape[-1] + pad_w)
    out = np.empty(out_shape, dtype=array.dtype)
    out[...] = np.reshape(value, (-1,) + (1,) * 2) if np.ndim(value) else value
    out[..., top : top + array.shape[-2], left : left + array.shape[-1]] = array
    return out


def _background(image: np.ndarray) -> np.ndarray:
    """Per-channel minimum of ``(C, H, W)``: what lies outside the body after normalisation.

    Padding with 0 instead would be mid-grey for z-scored MR with a noisy background (not
    skull-stripped) and would teach the network an edge that never occurs at inference.
    """
    return image.reshape(image.shape[0], -1).min(axis=1)


class SliceDataset(Dataset):
    """Slices of cached cases as a torch ``Dataset``.

    Args:
        cases: cached cases (:func:`medseg.data.cache.prepare_cases`).
        axis: canonical axis to slice along (0 sagittal, 1 coronal, 2 axial), or several
            (training draws the axis of each sample uniformly, each with its own 2.5D
            context: one network for a multi-view ensemble; validation uses the first).
        context: 2.5D half-context ``k``.
        crop_size: training crop ``(H, W)`` pixels; ``None`` = whole slices padded to the
            largest slice (as in validation).
        foreground_ratio: share of training items drawn from foreground slices.
        transform: called on ``{"image": (C', H, W) float32 tensor, "label": (H, W) int64
            tensor}``; if it has ``set_random_state(seed)`` it is re-seeded per item.
        samples_per_epoch: training length; ``None`` = number of slices.
        seed: base seed. ``train``: training or validation behaviour (see module docstring).
        pad_multiple: validation padding rounds ``(H, W)`` up to a multiple of this.

    Items: ``{"image": float32 (C*(2k+1), H, W), "label": int64 (H, W), "case_id": str,
    "index": int (slice index along axis), "axis": int, "foreground": bool,
    "valid_shape": (h, w)}``.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        axis: int | Sequence[int] = 2,
        context: int = 0,
        crop_size: tuple[int, int] | None = None,
        foreground_ratio: float = 0.33,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        train: bool = True,
        pad_multiple: int = 1,
    ) -> None:
        if not cases:
            raise ConfigError("SliceDataset needs at least one case; the split left none")
        axes = check_axes([axis] if isinstance(axis, int) else axis, "axis")
        self.cases = list(cases)
        self.axes, self.axis = axes, axes[0]
        self.context, self.crop_size = context, crop_size
        self.foreground_ratio, self.transform = foreground_ratio, transform
        self.seed, self.train, self.epoch = seed, train, 0
        self._starts = {
            a: np.concatenate([[0], np.cumsum([c.label.shape[a] for c in self.cases])])
            for a in axes
        }
        self.num_slices = int(self._starts[self.axis][-1])
        self.samples_per_epoch = samples_per_epoch or self.num_slices
        self._fg_cases = {
            a: [i for i, c in enumerate(self.cases) if len(c.foreground[a])] for a in axes
        }
        # whole training slices of every axis must pad to one size so batches stack
        pad_axes = axes if train else (self.axis,)
        planes = [plane_shape(c.label.shape, a) for c in self.cases for a in pad_axes]
        ceil = lambda n: -(-n // pad_multiple) * pad_multiple  # noqa: E731
        self.pad_size = (ceil(max(p[0] for p in planes)), ceil(max(p[1] for p in planes)))

    def __len__(self) -> int:
        return self.samples_per_epoch if self.train else self.num_slices

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream of training items (call once per epoch)."""
        self.epoch = int(epoch)

    def _locate(self, flat: int, axis: int) -> tuple[int, int]:
        starts = self._starts[axis]
        case = int(np.searchsorted(starts, flat, side="right") - 1)
        return case, int(flat - starts[case])

    def _draw(self, rng: np.random.Generator, axis: int) -> tuple[int, int, bool]:
        fg_cases = self._fg_cases[axis]
        if fg_cases and rng.random() < self.foreground_ratio:
            case = int(rng.choice(fg_cases))
            return case, int(rng.choice(self.cases[case].foreground[axis])), True
        return (*self._locate(int(rng.integers(self._starts[axis][-1])), axis), False)

    def _crop(
        self,
        image: np.ndarray,
        label: np.ndarray,
        size: tuple[int, int],
        rng: np.random.Generator,
        foreground: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A ``size`` crop of ``image`` ``(C, H, W)`` / ``label`` ``(H, W)``, padded if smaller.

        A slice smaller than the crop lands at a random place inside it (a free translation).
        """
        offset = (
            int(rng.integers(max(0, size[0] - label.shape[0]) + 1)),
            int(rng.integers(max(0, size[1] - label.shape[1]) + 1)),
        )
        image = _pad_to(image, size, _background(image), offset)
        label = _pad_to(label, size, 0, offset)
        h, w = label.shape
        if foreground:
            ys, xs = np.nonzero(label > 0)
            pick = int(rng.integers(len(ys)))
            # centre the crop on a foreground pixel, then keep it inside the slice
            top = int(
                np.clip(
                    ys[pick] - size[0] // 2 + rng.integers(-size[0] // 4, size[0] // 4 + 1),
                    0,
                    h - size[0],
                )
            )
            left = int(
                np.clip(
                    xs[pick] - size[1] // 2 + rng.integers(-size[1] // 4, size[1] // 4 + 1),
                    0,
                    w - size[1],
                )
            )
        else:
            top, left = int(rng.integers(h - size[0] + 1)), int(rng.integers(w - size[1] + 1))
        return (
            image[:, top : top + size[0], left : left + size[1]],
            label[top : top + size[0], left : left + size[1]],
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        axis = self.axis
        if self.train:
            if len(self.axes) > 1:
                axis = self.axes[int(rng.integers(len(self.axes)))]
            case_idx, slice_idx, foreground = self._draw(rng, axis)
        else:
            case_idx, slice_idx = self._locate(int(index), axis)
        case = self.cases[case_idx]
        image = slice_stack(case.image, axis, slice_idx, self.context)
        label = label_slice(case.label, axis, slice_idx).astype(np.int64)
        valid_shape = label.shape
        if not self.train:
            foreground = bool(slice_idx in set(case.foreground[axis].tolist()))
        if self.train and self.crop_size is not None:
            foreground = foreground and bool((label > 0).any())
            image, label = self._crop(image, label, self.crop_size, rng, foreground)
            valid_shape = label.shape
        else:
            image = _pad_to(image, self.pad_size, _background(image))
            label = _pad_to(label, self.pad_size)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
        }
        if self.train and self.transform is not None:
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(int(rng.integers(2**31)))
            sample = self.transform(sample)
        sample.update(
            case_id=case.case_id,
            index=slice_idx,
            axis=axis,
            foreground=foreground,
            valid_shape=tuple(int(s) for s in valid_shape),
        )
        return sample
