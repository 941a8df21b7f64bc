"""Batched 2.5D slice inference over a preprocessed volume.

The one loop behind :class:`medseg.inference.Predictor` and the trainer's validation
(:func:`medseg.engine.validation.validate`), so a model is scored during training exactly as
it later predicts. Input is a preprocessed case ``(C, X, Y, Z)`` in canonical RAS; slices are
built with :func:`medseg.data.slicing.slice_stack` (the function training samples use).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from medseg.data.slicing import slice_stack

ProgressFn = Callable[[int, int], None]
Network = Callable[[torch.Tensor], torch.Tensor]
#: in-plane flips of one TTA round (dims of a ``[B, K, H, W]`` tensor); () = no flip
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))


def infer_slices(
    network: Network,
    image: np.ndarray,
    num_classes: int,
    *,
    axes: Sequence[int] = (2,),
    context: int = 0,
    tta: bool = False,
    batch_size: int = 16,
    need_probabilities: bool = False,
    accumulator_limit_bytes: int = 2 << 30,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Run ``network`` (``[B, C*(2k+1), H, W]`` -> logits ``[B, K, H, W]``) over ``image``.

    Returns labels ``(X, Y, Z)`` uint8/int16 for a single pass (one axis, no TTA) without
    probabilities: each batch's softmax becomes labels at once, so no full-volume class array
    exists. Otherwise the mean softmax over all passes, ``(K, X, Y, Z)`` float32 (float16 when
    float32 would exceed ``accumulator_limit_bytes``).
    """
    passes = [(axis, flip) for axis in axes for flip in (TTA_FLIPS if tta else ((),))]
    single = len(passes) == 1 and not need_probabilities
    if single:
        out = np.zeros(image.shape[1:], dtype=np.uint8 if num_classes <= 256 else np.int16)
    else:
        shape = (num_classes, *image.shape[1:])
        big = 4 * int(np.prod(shape)) > accumulator_limit_bytes
        out = np.zeros(shape, dtype=np.float16 if big else np.float32)
    batch_size = max(1, int(batch_size))
    batches = [
        (axis, flip, start, min(start + batch_size, image.shape[axis + 1]))
        for axis, flip in passes
        for start in range(0, image.shape[axis + 1], batch_size)
    ]
    _run_batches(network, image, context, batches, out, single, progress)
    if not single and len(passes) > 1:
        out /= out.dtype.type(len(passes))
    return out


def stack_slices(image: np.ndarray, axis: int, start: int, stop: int, context: int) -> torch.Tensor:
    """The 2.5D inputs of slices ``start..stop-1`` along ``axis``: ``[B, C*(2k+1), H, W]``."""
    stack = np.stack([slice_stack(image, axis, i, context) for i in range(start, stop)])
    return torch.from_numpy(stack)


def probabilities(
    network: Network, batch: torch.Tensor, flip: tuple[int, ...] = ()
) -> torch.Tensor:
    """Class probabilities ``[B, K, H, W]`` float32 for one (possibly flipped) batch.

    A single-logit (sigmoid) model gives ``K = 2`` with P(background) = 1 - p.
    """
    if flip:
        batch = torch.flip(batch, flip)
    logits = network(batch).float()
    if logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        probs = torch.cat([1 - fg, fg], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    return torch.flip(probs, flip) if flip else probs


def _run_batches(
    network: Network,
    image: np.ndarray,
    context: int,
    batches: list[tuple[int, tuple[int, ...], int, int]],
    out: np.ndarray,
    single: bool,
    progress: ProgressFn | None,
) -> None:
    # One worker thread builds the next batch while the network runs on this one (torch
    # releases the GIL), so slicing costs almost no wall time.
    def build(n: int):
        axis, _flip, start, stop = batches[n]
        return stack_slices(image, axis, start, stop, context)

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(build, 0)
        for n, (axis, flip, start, stop) in enumerate(batches):
            batch = future.result()
            if n + 1 < len(batches):
                future = pool.submit(build, n + 1)
            probs = probabilities(network, batch, flip)
            view = np.moveaxis(out, axis if single else axis + 1, 0 if single else 1)
            if single:
                labels = probs.argmax(1).to(torch.uint8 if out.dtype == np.uint8 else torch.int16)
                view[start:stop] = labels.cpu().numpy()
            else:
                view[:, start:stop] += probs.transpose(0, 1).cpu().numpy().astype(out.dtype)
            if progress is not None:
                progress(n + 1, len(batches))
