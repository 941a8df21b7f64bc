"""The planning rules: each takes fingerprint figures and returns ``(value, reason)``.

Every rule is a small pure function so it can be tested with a synthetic fingerprint, and its
reason (the figure behind the choice) becomes the comment beside the value in the written plan.
Numbers follow nnU-Net's heuristics where they carry over to 2D/2.5D training on a time budget
(median spacing as target, bottleneck of at least 4 pixels, intensity rules per modality);
the CPU figures are medseg's own, measured on the 2-core reference machine (docs/accuracy.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medseg.data.slicing import AXIS_NAMES, plane_axes

# median spacing ratio (largest / smallest) from which a dataset counts as anisotropic and is
# sliced across its low-resolution axis (nnU-Net switches to low-res handling at 3; slicing a
# 2:1 volume across the thick axis already keeps every plane at full resolution)
ANISOTROPY_THRESHOLD = 2.0
# largest in-plane size (pixels) of the body trained whole on each device class; beyond it,
# resample coarser or crop. 128 px holds a brain at 1.5 mm, where the CPU recipe trains.
MAX_SLICE_PIXELS = {"cpu": 128, "cuda": 512, "mps": 256}
# a structure is never planned smaller than this many pixels across (in-plane median extent)
MIN_OBJECT_PIXELS = 12
# pixels per batch that keep a 2-core CPU busy without slowing each step (16 x 128 x 128)
CPU_BATCH_PIXELS = 16 * 128 * 128
GPU_BATCH_PIXELS = 64 * 256 * 256
# a class absent from more than this share of labelled cases gets a warning
RARE_CLASS_SHARE = 0.5


def slice_axis(median_spacing: Sequence[float]) -> tuple[int, str]:
    """The canonical axis to slice along: the low-resolution one of an anisotropic dataset
    (every training plane then has the fine spacing), else axial (2)."""
    ratio = max(median_spacing) / min(median_spacing)
    if ratio >= ANISOTROPY_THRESHOLD:
        axis = int(max(range(3), key=lambda a: median_spacing[a]))
        return axis, (
            f"anisotropic: median spacing {mm_text(median_spacing)}, ratio {ratio:.1f} >= "
            f"{ANISOTROPY_THRESHOLD}; slices are {AXIS_NAMES[axis]} (axis {axis}), across the "
            "thick axis"
        )
    return 2, f"near-isotropic (median spacing {mm_text(median_spacing)}, ratio {ratio:.1f}): axial"


def target_spacing(
    median_spacing: Sequence[float],
    body_mm: Sequence[float],
    axis: int,
    device_type: str,
    smallest_object_mm: float | None,
) -> tuple[tuple[float, float], str]:
    """In-plane target spacing: the median spacing (one grid for every case), made coarser
    only when the body (``body_mm``: the extent of non-background voxels per canonical axis)
    would exceed the device's whole-slice size, and never so coarse that the smallest
    structure (its largest object per case) spans fewer than :data:`MIN_OBJECT_PIXELS`."""
    axes = plane_axes(axis)
    base = [float(median_spacing[a]) for a in axes]
    fov = [float(body_mm[a]) for a in axes]
    limit = MAX_SLICE_PIXELS.get(device_type, MAX_SLICE_PIXELS["cpu"])
    scale = max(1.0, max(f / s for f, s in zip(fov, base, strict=True)) / limit)
    reason = f"median in-plane spacing {mm_text(base)}"
    if scale > 1.0:
        if smallest_object_mm:
            scale = min(scale, max(1.0, smallest_object_mm / MIN_OBJECT_PIXELS / max(base)))
        if scale > 1.0:
            reason += (
                f"; coarsened x{scale:.2f} so the body ({mm_text(fov)} in-plane) fits "
                f"{limit} px on {device_type}"
            )
    spacing = tuple(round(s * scale, 3) for s in base)
    return spacing, reason  # type: ignore[return-value]


def slice_pixels(
    shape: Sequence[float], spacing3: Sequence[float], axis: int, target: Sequence[float]
) -> tuple[int, int]:
    """In-plane size (pixels) of a slice of a volume of ``shape``/``spacing3`` at ``target``."""
    axes = plane_axes(axis)
    return tuple(  # type: ignore[return-value]
        max(1, round(float(shape[a]) * float(spacing3[a]) / t))
        for a, t in zip(axes, target, strict=True)
    )


def network(crop: Sequence[int], device_type: str) -> tuple[dict[str, Any], str]:
    """UNet depth from the crop (the bottleneck keeps at least 4 pixels, as nnU-Net's
    pooling rule) and width from the compute available: 32 base channels on a GPU (nnU-Net's
    width), 16 on a CPU, where a time budget buys ~2.5x more training steps at 16 (measured:
    0.78 vs 1.9 s per step for a 32 x 48 x 64 batch, the same machine and load)."""
    depth = math.floor(math.log2(max(min(crop), 8) / 4))
    depth = max(2, min(depth, 5 if device_type == "cuda" else 4))
    base = 32 if device_type == "cuda" else 16
    return (
        {"depth": depth, "base_channels": base, "norm": "batch"},
        f"crop {crop[0]}x{crop[1]}: {depth} poolings leave a {crop[0] >> depth}x"
        f"{crop[1] >> depth} bottleneck; {base} base channels for {device_type}",
    )


def divisor_ceil(value: float, divisor: int) -> int:
    return int(math.ceil(value / divisor) * divisor)


def crop_size(
    body_px: Sequence[float],
    max_slice: Sequence[int],
    object_p95_px: Sequence[float] | None,
    device_type: str,
) -> tuple[tuple[int, int], str]:
    """Training crop (H, W), multiples of 16: the body (95th percentile extent, never more
    than the slice) when it fits the device's whole-slice size; else a window covering the
    typical object (95th percentile foreground extent) twice over for context, >= 64 px."""
    limit = MAX_SLICE_PIXELS.get(device_type, MAX_SLICE_PIXELS["cpu"])
    if max(body_px) <= limit:
        crop = tuple(
            min(divisor_ceil(b, 16), divisor_ceil(s, 16))
            for b, s in zip(body_px, max_slice, strict=True)
        )
        return crop, (  # type: ignore[return-value]
            f"the whole body: {body_px[0]:.0f}x{body_px[1]:.0f} px (95th percentile; slices "
            f"up to {max_slice[0]}x{max_slice[1]} px)"
        )
    wanted = [2 * p for p in (object_p95_px or body_px)]
    crop = tuple(
        min(divisor_ceil(max(64, w), 16), divisor_ceil(min(s, limit), 16))
        for w, s in zip(wanted, max_slice, strict=True)
    )
    return crop, (  # type: ignore[return-value]
        f"the body ({body_px[0]:.0f}x{body_px[1]:.0f} px) exceeds {limit}: crop twice the 95th "
        "percentile foreground extent, foreground-oversampled"
    )


def batch_size(crop: Sequence[int], device_type: str, train_slices: int) -> tuple[int, str]:
    """Batch from a pixel budget per step (CPU: what keeps two cores busy; GPU: a memory-safe
    budget), a power of two in [4, 128], and at most 5 % of the training slices (nnU-Net's
    cap, so a batch is not the whole dataset)."""
    budget = GPU_BATCH_PIXELS if device_type == "cuda" else CPU_BATCH_PIXELS
    raw = budget / (crop[0] * crop[1])
    batch = 2 ** math.floor(math.log2(max(raw, 1)))
    cap = max(4, int(0.05 * train_slices))
    batch = max(4, min(batch, 128, 2 ** math.floor(math.log2(cap))))
    return (
        batch,
        f"{budget // 1000}k pixels per step on {device_type}, <= 5% of {train_slices} slices",
    )


def normalisation(channels: list[dict[str, Any]]) -> tuple[str, str]:
    """Preprocessing modality: CT (clip to the foreground 0.5-99.5 percentiles, z-score with
    dataset statistics) when every channel is CT, MR (per-case z-score inside the body)
    otherwise; a mixed dataset is normalised as MR and said so."""
    kinds = {c["modality"] for c in channels}
    why = "; ".join(f"{c['name']}: {c['modality_reason']}" for c in channels)
    if kinds == {"ct"}:
        return "ct", f"CT ({why}): clip to foreground percentiles 0.5-99.5, then z-score"
    if "ct" in kinds:
        return "mr", f"mixed CT and MR ({why}): per-case z-score for every channel"
    return "mr", f"MR ({why}): per-case z-score inside the body"


def context(axis_slices_median: float, anisotropy: float) -> tuple[int, str]:
    """2.5D half-context: one neighbour each side (3 planes), unless cases have so few slices
    along the axis that neighbours are mostly padding."""
    if axis_slices_median < 5:
        return 0, f"only {axis_slices_median:.0f} slices per case along the axis: plain 2D"
    return 1, f"2.5D: the network sees 3 planes ({axis_slices_median:.0f} slices per case)"


def folds(labelled: int, budget_s: float | None, min_fold_s: float) -> tuple[int, str]:
    """Cross-validation folds: 5 (nnU-Net), fewer when there are fewer cases or when the time
    budget cannot give every fold ``min_fold_s`` of training; 0 means no cross-validation."""
    if labelled < 2:
        return 0, f"{labelled} labelled case: no cross-validation possible"
    n = min(5, labelled)
    reason = f"{labelled} labelled cases"
    if budget_s is not None and n > 2:
        fit = int(budget_s // max(min_fold_s, 1.0))
        if fit < n:
            n = max(2, fit)
            reason += f"; the time budget holds {n} folds of >= {min_fold_s / 60:.1f} min"
    return n, reason


def schedule(
    train_seconds: float, step_seconds: float, batch: int, train_slices: int, val_seconds: float
) -> tuple[dict[str, int], str]:
    """Epochs, samples per epoch and validation cadence that fill ``train_seconds``.

    An epoch is at most one pass over the training slices and at most 250 steps (nnU-Net's
    epoch); validation (``val_seconds`` per pass) takes at most ~15 % of the time.
    """
    steps = max(1, int(train_seconds / step_seconds))
    per_epoch = max(10, min(250, train_slices // batch))
    epochs = max(1, steps // per_epoch)
    if epochs < 8 and steps >= 80:  # enough epochs for the schedule and model selection
        epochs = 8
        per_epoch = max(10, steps // epochs)
    epoch_s = per_epoch * step_seconds
    val_every = max(1, math.ceil(val_seconds / max(0.15 * epoch_s, 1e-6)))
    val_every = min(val_every, max(1, epochs // 4))
    # validation passes cost time too: shorten the epochs, keep their number
    val_total = math.ceil(epochs / val_every) * val_seconds
    if 0 < val_total < train_seconds:
        per_epoch = max(10, int(per_epoch * (train_seconds - val_total) / train_seconds))
    return (
        {"epochs": epochs, "samples_per_epoch": per_epoch * batch, "val_every": val_every},
        f"{train_seconds / 60:.1f} min of training at {step_seconds:.3f} s/step (timed here) "
        f"-> {epochs} epochs x {per_epoch} steps x {batch}",
    )


def rare_classes(classes: list[dict[str, Any]], labelled: int) -> list[str]:
    """Names of classes present in at most :data:`RARE_CLASS_SHARE` of the labelled cases."""
    return [
        f"{c['name']} (in {c['cases_present']} of {labelled} cases)"
        for c in classes
        if labelled and c["cases_present"] <= RARE_CLASS_SHARE * labelled
    ]


def mm_text(values: Sequence[float]) -> str:
    return "x".join(f"{float(v):.3g}" for v in values) + " mm"
