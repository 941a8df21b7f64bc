"""Slicing geometry: axes, 2D / 2.5D slice extraction shared by training samples (worker
and device-resident) and inference (one code path).

A preprocessed case is an array ``(C, X, Y, Z)`` in canonical RAS voxel order. Slicing along
``axis`` (0 = sagittal, 1 = coronal, 2 = axial, counted over the spatial axes) with 2.5D
half-context ``k`` gives a stack of ``C * (2k + 1)`` planes, **channel-major**: plane index
``c * (2k + 1) + (offset + k)`` for ``offset`` in ``-k..k``. Neighbours beyond the volume's
edge replicate the edge slice. The two remaining spatial axes keep their order
(:func:`plane_axes`), so a slice along axis 2 has shape ``(X, Y)``, along axis 1 ``(X, Z)``,
along axis 0 ``(Y, Z)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medseg.errors import ConfigError, MedsegError

AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


def plane_axes(axis: int) -> tuple[int, int]:
    """The canonical axes of a slice along ``axis``: ``(rows, columns)``, in increasing order."""
    rows, cols = (d for d in (0, 1, 2) if d != axis)
    return rows, cols


def plane_shape(shape: Sequence[int], axis: int) -> tuple[int, int]:
    """``(H, W)`` of a slice along ``axis`` of a volume of spatial ``shape`` ``(X, Y, Z)``."""
    rows, cols = plane_axes(axis)
    return int(shape[rows]), int(shape[cols])


def check_axes(
    axes: Iterable[Any] | str, name: str = "axes", error: type[Exception] = ConfigError
) -> tuple[int, ...]:
    """``axes`` (a sequence, or CLI text like ``"0,1,2"``) as a tuple of distinct canonical
    axes; the one axis check of configs, checkpoints, samplers, the Predictor and the CLI.

    Raises ``error`` for an empty list, a value other than 0, 1, 2, or a repeated axis: a
    :class:`ConfigError` naming ``name`` (an axis is a setting, not a property of the data),
    or ``ValueError`` from a pydantic validator, so that the model's own error names the key.
    """
    try:
        out = tuple(int(a) for a in (axes.split(",") if isinstance(axes, str) else axes))
    except (TypeError, ValueError):
        out = ()
    if not out or any(a not in AXIS_NAMES for a in out) or len(set(out)) != len(out):
        choices = ", ".join(f"{a} ({n})" for a, n in AXIS_NAMES.items())
        exc = error(
            f"{name} {axes!r}: expected distinct canonical axes among {choices}, e.g. 2 or 0,1,2"
        )
        if isinstance(exc, MedsegError):
            exc.param = name
        raise exc
    return out


def num_input_planes(num_channels: int, context: int) -> int:
    """Network input channels for ``num_channels`` modalities and half-context ``context``."""
    return num_channels * (2 * context + 1)


def neighbour_indices(index: Any, length: Any, context: int) -> Any:
    """Slice indices ``index-k .. index+k`` clipped to ``[0, length)`` (edge replication).

    ``index`` and ``length``: ints, or integer numpy arrays / torch tensors of one shape
    ``(...)`` for a batch; the result has shape ``(..., 2k+1)`` and the inputs' kind.
    """
    if hasattr(index, "clamp"):  # a torch tensor: the device-resident sampler's batches
        import torch

        near = index[..., None] + torch.arange(-context, context + 1, device=index.device)
        return torch.minimum(near.clamp(min=0), length[..., None] - 1)
    near = np.asarray(index)[..., None] + np.arange(-context, context + 1)
    return np.clip(near, 0, np.asarray(length)[..., None] - 1)


def channel_major(planes: Any) -> Any:
    """``(..., C, 2k+1, H, W)`` -> ``(..., C*(2k+1), H, W)``: the 2.5D plane order."""
    return planes.reshape(*planes.shape[:-4], -1, *planes.shape[-2:])


def slice_stack(image: np.ndarray, axis: int, index: int, context: int = 0) -> np.ndarray:
    """The 2.5D input for one slice: ``(C * (2k+1), H, W)`` from ``image`` ``(C, X, Y, Z)``.

    Works on memory-mapped arrays: only the ``2k+1`` needed slices are read. The
    device-resident sampler builds the same stacks for a batch from the same two rules
    (:func:`neighbour_indices`, :func:`channel_major`) with strided reads of its buffer.
    """
    if image.ndim != 4:
        raise ValueError(f"expected image (C, X, Y, Z), got shape {image.shape}")
    idx = neighbour_indices(index, image.shape[axis + 1], context)
    planes = np.take(image, idx, axis=axis + 1)  # (C, ..., 2k+1 along axis+1, ...)
    planes = np.moveaxis(planes, axis + 1, 1)  # (C, 2k+1, H, W)
    return np.ascontiguousarray(channel_major(planes))


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
    return np.flatnonzero(fg.any(axis=plane_axes(axis)))
