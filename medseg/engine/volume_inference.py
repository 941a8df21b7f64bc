"""Run a 2D / 2.5D network over every slice of a preprocessed volume (validation and inference).

The volume is a preprocessed case ``(C, X, Y, Z)`` in canonical RAS voxel order. Slices along
``axis`` (0 sagittal, 1 coronal, 2 axial) are built with :func:`medseg.data.slicing.slice_stack`
(the same code path as training samples), batched, run through the model, and written back in
place, so the result has the volume's own grid. Memory: one batch of inputs on the device plus
the output array on the host (``K * X * Y * Z`` float32 for probabilities, ``X * Y * Z`` int16
for the streaming label variant); an ``out`` array (e.g. ``np.memmap``) may be passed for very
large volumes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medseg.data.slicing import slice_stack

logger = logging.getLogger(__name__)


def resolve_amp_dtype(
    amp: bool | str | torch.dtype | None, device: torch.device
) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; ``None`` means full precision.

    Mixed precision is used on CUDA only (CPU autocast is slower than float32 for convolutions
    on most CPUs). ``True``/``"auto"`` pick bf16 where the GPU supports it, else fp16.
    """
    if device.type != "cuda" or amp in (None, False, "off"):
        return None
    if isinstance(amp, torch.dtype):
        return amp
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` when ``dtype`` is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def iter_slice_batches(
    image: np.ndarray, axis: int, context: int, batch_size: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, stack)`` with ``stack`` float32 ``(stop-start, C*(2k+1), H, W)``."""
    length = image.shape[axis + 1]
    for start in range(0, length, batch_size):
        stop = min(start + batch_size, length)
        stack = np.stack([slice_stack(image, axis, i, context) for i in range(start, stop)])
        yield start, stop, stack.astype(np.float32, copy=False)


def _forward_probs(
    model: nn.Module,
    batch: np.ndarray,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
) -> torch.Tensor:
    """Softmax probabilities ``(B, K, H, W)`` float32 on ``device``; a single-logit (binary
    sigmoid) model gives ``K = 2`` as ``[1 - p, p]`` so argmax works the same way."""
    x = torch.from_numpy(batch).to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp_dtype):
        logits = model(x)
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _check_image(image: np.ndarray, axis: int) -> None:
    if image.ndim != 4:
        raise ValueError(f"expected a preprocessed image (C, X, Y, Z), got shape {image.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")


@torch.inference_mode()
def predict_volume_probabilities(
    model: nn.Module,
    image: np.ndarray,
    axis: int = 2,
    context: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    amp: bool | str | torch.dtype | None = False,
    channels_last: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities ``float32 (K, X, Y, Z)`` for ``image`` ``(C, X, Y, Z)``.

    ``model`` maps ``[B, C*(2k+1), H, W]`` to logits ``[B, K, H, W]`` and is already on
    ``device``; it is put in eval mode for the call and restored afterwards.
    """
    _check_image(image, axis)
    device = torch.device(device)
    amp_dtype = resolve_amp_dtype(amp, device)
    was_training = model.training
    model.eval()
    try:
        for start, stop, batch in iter_slice_batches(image, axis, context, batch_size):
            probs = _forward_probs(model, batch, device, amp_dtype, channels_last).cpu().numpy()
            if out is None:
                spatial = image.shape[1:]
                out = np.zeros((probs.shape[1], *spatial), dtype=np.float32)
            # (K, N, H, W) view of the output with the slice axis second
            np.moveaxis(out, axis + 1, 1)[:, start:stop] = probs.transpose(1, 0, 2, 3)
    finally:
        model.train(was_training)
    assert out is not None  # the volume has at least one slice
    return out


@torch.inference_mode()
def predict_volume_labels(
    model: nn.Module,
    image: np.ndarray,
    axis: int = 2,
    context: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    amp: bool | str | torch.dtype | None = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Streaming variant: argmax labels ``int16 (X, Y, Z)`` without keeping ``K`` probability
    maps in host memory (validation of large volumes)."""
    _check_image(image, axis)
    device = torch.device(device)
    amp_dtype = resolve_amp_dtype(amp, device)
    labels = np.zeros(image.shape[1:], dtype=np.int16)
    view = np.moveaxis(labels, axis, 0)  # (N, H, W)
    was_training = model.training
    model.eval()
    try:
        for start, stop, batch in iter_slice_batches(image, axis, context, batch_size):
            probs = _forward_probs(model, batch, device, amp_dtype, channels_last)
            view[start:stop] = probs.argmax(dim=1).to(torch.int16).cpu().numpy()
    finally:
        model.train(was_training)
    return labels
