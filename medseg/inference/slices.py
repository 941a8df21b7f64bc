"""Batched 2.5D slice inference over a preprocessed volume.

The one loop behind :class:`medseg.inference.Predictor` and the trainer's validation
(:func:`medseg.engine.validation.validate`), so a model is scored during training exactly as
it later predicts. Input is a preprocessed case ``(C, X, Y, Z)`` in canonical RAS, either an
array or a :class:`SlabSource` that makes each batch's slab on demand (the Predictor's
:class:`medseg.data.slabs.SlabImage`, which never holds the whole preprocessed image); slices
are built from the slab with :func:`medseg.data.slicing.slice_stack` (the function training
samples use).

Ensembles: every network (e.g. the folds of a cross-validation) and every TTA flip is run on
the same batch and their probabilities averaged there, so a one-axis ensemble still needs no
full-volume accumulator; only several slice axes (or a request for probabilities) do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from medseg.data.slicing import slice_stack

ProgressFn = Callable[[int, int], None]
Network = Callable[[torch.Tensor], torch.Tensor]
#: in-plane flips of one TTA round (dims of a ``[B, K, H, W]`` tensor); () = no flip
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))


class LabelDecoder:
    """Probabilities -> label map: argmax over softmax classes, or, for region models, the
    regions thresholded at 0.5 and written in order (outermost first, inner ones on top)
    with ``region_labels`` as their label values (nnU-Net's region class order).

    Args:
        num_outputs: network output channels (classes, or regions).
        region_labels: label value per region; ``None`` for a softmax model.
    """

    def __init__(self, num_outputs: int, region_labels: Sequence[int] | None = None) -> None:
        self.num_outputs = int(num_outputs)
        self.region_labels = list(region_labels) if region_labels else None
        top = max(self.region_labels) if self.region_labels else self.num_outputs - 1
        self.torch_dtype = torch.uint8 if top < 256 else torch.int16
        self.dtype = np.uint8 if top < 256 else np.int16

    @property
    def sigmoid(self) -> bool:
        return self.region_labels is not None

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """``[B, K, ...]`` probabilities -> ``[B, ...]`` labels."""
        if self.region_labels is None:
            return first_argmax(probs).to(self.torch_dtype)
        labels = torch.zeros(probs.shape[:1] + probs.shape[2:], dtype=self.torch_dtype)
        labels = labels.to(probs.device)
        for channel, value in enumerate(self.region_labels):
            labels[probs[:, channel] > 0.5] = value
        return labels

    def decode_volume(self, probs: np.ndarray) -> np.ndarray:
        """``(K, X, Y, Z)`` probabilities -> ``(X, Y, Z)`` labels."""
        return self(torch.from_numpy(np.asarray(probs))[None])[0].numpy()


def first_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(1)`` (first maximum on ties) for ``[B, K, ...]``, as K elementwise
    comparisons: torch's CPU argmax over a strided class axis took ~10 % of a BraTS predict."""
    if probs.shape[1] > 8:
        return probs.argmax(1)
    best = probs[:, 0]
    index = torch.zeros(best.shape, dtype=torch.int64, device=probs.device)
    for k in range(1, probs.shape[1]):
        better = probs[:, k] > best
        index[better] = k
        best = torch.where(better, probs[:, k], best)
    return index


class SlabSource(Protocol):
    """A preprocessed case ``(C, X, Y, Z)`` that hands out slabs of slices: an array, or a
    :class:`medseg.data.slabs.SlabImage` streaming them from the source volumes."""

    shape: tuple[int, ...]

    def slab(self, axis: int, start: int, stop: int) -> np.ndarray: ...


class ArraySlabs:
    """An in-memory preprocessed image ``(C, X, Y, Z)`` as a :class:`SlabSource` (views)."""

    def __init__(self, image: np.ndarray) -> None:
        if image.ndim != 4:
            raise ValueError(f"expected image (C, X, Y, Z), got shape {image.shape}")
        self.image = image
        self.shape = tuple(image.shape)

    def slab(self, axis: int, start: int, stop: int) -> np.ndarray:
        index = [slice(None)] * 4
        index[axis + 1] = slice(start, stop)
        return self.image[tuple(index)]


def as_slab_source(image: np.ndarray | SlabSource) -> SlabSource:
    return ArraySlabs(image) if isinstance(image, np.ndarray) else image


def infer_slices(
    network: Network | Sequence[Network],
    image: np.ndarray | SlabSource,
    num_classes: int,
    *,
    axes: Sequence[int] = (2,),
    context: int = 0,
    tta: bool = False,
    batch_size: int = 16,
    need_probabilities: bool = False,
    accumulator_limit_bytes: int = 2 << 30,
    progress: ProgressFn | None = None,
    decoder: LabelDecoder | None = None,
    out: np.ndarray | None = None,
    max_batch_pixels: int | None = None,
) -> np.ndarray:
    """Run ``network`` (or several, averaged) over ``image`` ``(C, X, Y, Z)``: an array or a
    :class:`SlabSource` (only the slabs of the current and the next batch then exist).

    Each network maps ``[B, C*(2k+1), H, W]`` to logits ``[B, K, H, W]``; ``num_classes`` is
    ``K`` (regions for a region model, whose ``decoder`` says so).

    Returns labels ``(X, Y, Z)`` uint8/int16 for one axis without probabilities: each batch's
    averaged probabilities become labels at once, so no full-volume class array exists;
    ``out`` (e.g. a canonical-order view of the label array on the source grid) receives them
    when given. ``max_batch_pixels`` caps ``batch * H * W`` (at least one slice per batch), so
    the network's activations stay the same size for 512 x 512 slices as for small ones. Otherwise the mean probabilities over every pass, ``(K, X, Y, Z)`` float32
    (float16 when float32 would exceed ``accumulator_limit_bytes``).
    """
    networks = list(network) if isinstance(network, list | tuple) else [network]
    source = as_slab_source(image)
    spatial = tuple(source.shape[1:])
    decoder = decoder or LabelDecoder(num_classes)
    flips = TTA_FLIPS if tta else ((),)
    direct = len(axes) == 1 and not need_probabilities
    if direct:
        if out is None:
            out = np.zeros(spatial, dtype=decoder.dtype)
        elif tuple(out.shape) != spatial:
            raise ValueError(f"out has shape {out.shape}, expected {spatial}")
    else:
        shape = (num_classes, *spatial)
        big = 4 * int(np.prod(shape)) > accumulator_limit_bytes
        out = np.zeros(shape, dtype=np.float16 if big else np.float32)
    batches = [
        (axis, start, min(start + size, spatial[axis]))
        for axis in axes
        for size in [batch_slices(batch_size, spatial, axis, max_batch_pixels)]
        for start in range(0, spatial[axis], size)
    ]
    passes = len(networks) * len(flips)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        total = None
        for net in networks:
            for flip in flips:
                probs = probabilities(net, batch, flip, sigmoid=decoder.sigmoid)
                total = probs if total is None else total + probs
        return total / passes if passes > 1 else total

    _run_batches(predict, source, context, batches, out, decoder if direct else None, progress)
    if not direct and len(axes) > 1:
        out /= out.dtype.type(len(axes))
    return out


def batch_slices(
    batch_size: int, spatial: Sequence[int], axis: int, max_batch_pixels: int | None = None
) -> int:
    """Slices per batch along ``axis`` of a volume of shape ``spatial``: ``batch_size``, fewer
    when ``batch * H * W`` would exceed ``max_batch_pixels`` (never fewer than one)."""
    size = max(1, int(batch_size))
    if max_batch_pixels:
        plane = int(np.prod([n for a, n in enumerate(spatial) if a != axis]))
        size = min(size, max(1, int(max_batch_pixels) // max(plane, 1)))
    return size


def stack_slices(
    image: np.ndarray | SlabSource, axis: int, start: int, stop: int, context: int
) -> torch.Tensor:
    """The 2.5D inputs of slices ``start..stop-1`` along ``axis``: ``[B, C*(2k+1), H, W]``.

    Reads one slab (the slices and their ``k`` neighbours on either side) from ``image``.
    """
    source = as_slab_source(image)
    length = source.shape[axis + 1]
    lo, hi = max(0, start - context), min(length, stop + context)
    slab = source.slab(axis, lo, hi)
    # indices within the slab: neighbours beyond it are beyond the volume (edge replication)
    stack = np.stack([slice_stack(slab, axis, i - lo, context) for i in range(start, stop)])
    return torch.from_numpy(stack)


def probabilities(
    network: Network, batch: torch.Tensor, flip: tuple[int, ...] = (), sigmoid: bool = False
) -> torch.Tensor:
    """Probabilities ``[B, K, H, W]`` float32 for one (possibly flipped) batch.

    Softmax over classes; ``sigmoid=True`` (region models) gives one independent probability
    per output. A single-logit softmax-less model gives ``K = 2`` with P(background) = 1 - p.
    """
    if flip:
        batch = torch.flip(batch, flip)
    logits = network(batch).float()
    if sigmoid:
        probs = torch.sigmoid(logits)
    elif logits.shape[1] == 1:
        fg = torch.sigmoid(logits)
        probs = torch.cat([1 - fg, fg], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    return torch.flip(probs, flip) if flip else probs


def _run_batches(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: SlabSource,
    context: int,
    batches: list[tuple[int, int, int]],
    out: np.ndarray,
    decoder: LabelDecoder | None,
    progress: ProgressFn | None,
) -> None:
    # One worker thread builds the next batch while the network runs on this one (torch
    # releases the GIL), so slicing costs almost no wall time.
    def build(n: int):
        axis, start, stop = batches[n]
        return stack_slices(image, axis, start, stop, context)

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(build, 0)
        for n, (axis, start, stop) in enumerate(batches):
            batch = future.result()
            if n + 1 < len(batches):
                future = pool.submit(build, n + 1)
            probs = predict(batch)
            if decoder is not None:
                view = np.moveaxis(out, axis, 0)
                view[start:stop] = decoder(probs).cpu().numpy()
            else:
                view = np.moveaxis(out, axis + 1, 1)
                view[:, start:stop] += (
                    probs.transpose(0, 1).cpu().numpy().astype(out.dtype, copy=False)
                )
            if progress is not None:
                progress(n + 1, len(batches))
