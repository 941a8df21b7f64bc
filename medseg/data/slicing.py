"""2D / 2.5D slice extraction shared by training samples and inference (one code path).

A preprocessed case is an array ``(C, X, Y, Z)`` in canonical RAS voxel order. Slicing along
``axis`` (0 = sagittal, 1 = coronal, 2 = axial, counted over the spatial axes) with 2.5D
half-context ``k`` gives a stack of ``C * (2k + 1)`` planes, **channel-major**: plane index
``c * (2k + 1) + (offset + k)`` for ``offset`` in ``-k..k``. Neighbours beyond the volume's
edge replicate the edge slice. The two remaining spatial axes keep their order, so a slice
along axis 2 has shape ``(X, Y)``, along axis 1 ``(X, Z)``, along axis 0 ``(Y, Z)``.
"""

from __future__ import annotations

import numpy as np

AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


def num_input_planes(num_channels: int, context: int) -> int:
    """Network input channels for ``num_channels`` modalities and half-context ``context``."""
    return num_channels * (2 * context + 1)


def neighbour_indices(index: int, length: int, context: int) -> np.ndarray:
    """Slice indices ``index-k .. index+k`` clipped to ``[0, length)`` (edge replication)."""
    return np.clip(np.arange(index - context, index + context + 1), 0, length - 1)


def slice_stack(image: np.ndarray, axis: int, index: int, context: int = 0) -> np.ndarray:
    """The 2.5D input for one slice: ``(C * (2k+1), H, W)`` from ``image`` ``(C, X, Y, Z)``.

    Works on memory-mapped arrays: only the ``2k+1`` needed slices are read.
    """
    if image.ndim != 4:
        raise ValueError(f"expected image (C, X, Y, Z), got shape {image.shape}")
    idx = neighbour_indices(index, image.shape[axis + 1], context)
    planes = np.take(image, idx, axis=axis + 1)  # (C, ..., 2k+1 along axis+1, ...)
    planes = np.moveaxis(planes, axis + 1, 1)  # (C, 2k+1, H, W)
    return np.ascontiguousarray(planes.reshape(-1, *planes.shape[2:]))


def label_slice(label: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The label plane ``(H, W)`` of ``label`` ``(X, Y, Z)`` at ``index`` along ``axis``."""
    return np.ascontiguousarray(np.take(label, index, axis=axis))


def slices_with_foreground(
    label: np.ndarray, axis: int, ignore_label: int | None = None
) -> np.ndarray:
    """Indices along ``axis`` of slices containing any foreground (label > 0, not ignored)."""
    fg = label > 0
    if ignore_label is not None:
        fg &= label != ignore_label
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(fg.any(axis=other))
