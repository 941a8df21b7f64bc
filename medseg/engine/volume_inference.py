"""Run a 2D / 2.5D network in training over every slice of a preprocessed volume.

Thin wrappers that put a training ``nn.Module`` behind the one slice loop shared with the
Predictor (:func:`medseg.inference.slices.infer_slices`), so validation scores a model exactly
as ``medseg predict`` will run it. The volume is a preprocessed case ``(C, X, Y, Z)`` in
canonical RAS; results have the volume's own grid.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

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


def _check_image(image: np.ndarray, axis: int) -> None:
    if image.ndim != 4:
        raise ValueError(f"expected a preprocessed image (C, X, Y, Z), got shape {image.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")


@contextlib.contextmanager
def eval_network(
    model: nn.Module,
    device: torch.device | str = "cpu",
    amp: bool | str | torch.dtype | None = False,
    channels_last: bool = False,
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """``model`` (already on ``device``) in eval mode as a batch -> logits callable; the
    previous train/eval mode is restored on exit."""
    device = torch.device(device)
    amp_dtype = resolve_amp_dtype(amp, device)

    def network(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, amp_dtype):
            return model(batch)

    was_training = model.training
    model.eval()
    try:
        yield network
    finally:
        model.train(was_training)


def predict_volume_labels(
    model: nn.Module,
    image: np.ndarray,
    axis: int = 2,
    context: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    amp: bool | str | torch.dtype | None = False,
    channels_last: bool = False,
    num_classes: int = 256,
) -> np.ndarray:
    """Streaming variant: argmax labels ``(X, Y, Z)`` (uint8 up to 256 classes, else int16)
    without any full-volume probability map (validation of large volumes)."""
    from medseg.inference.slices import infer_slices

    _check_image(image, axis)
    with eval_network(model, device, amp, channels_last) as network:
        return infer_slices(
            network, image, num_classes, axes=(axis,), context=context, batch_size=batch_size
        )
