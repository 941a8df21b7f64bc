"""Segmentation metrics in physical units: Dice, IoU, HD95, ASSD (mm), volume difference (mL)
and lesion-wise detection.

Surface distances use MONAI (``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``) with the voxel ``spacing`` in mm, so
anisotropic scans are measured correctly.

Empty-mask conventions (documented in ``docs/inference.md``). One Dice (:func:`dice`; the
all-classes :func:`dice_per_class` computes the same numbers in one pass); Dice of two empty
masks is undefined and the caller says what it stands for:

* per-case evaluation tables (``medseg evaluate``, the viewer): 1, perfect agreement, so a
  correctly empty case counts as a success;
* validation during training (``dice_per_class`` / ``dice_per_region``): NaN, so a class absent
  from both truth and prediction of a case is left out of that class's mean (as in nnU-Net),
  and the mean is not inflated by cases without the class.

Other metrics:

* both prediction and reference empty: IoU = 1, HD95 = ASSD = 0 (perfect agreement);
* exactly one empty: Dice = IoU = 0, HD95 = ASSD = ``nan`` (a distance to nothing is
  undefined; MONAI returns inf/nan); ``nan`` values are left out of means/medians and
  counted in the summary's ``n_undefined`` column.

Lesion-wise detection per class: connected components (26-connectivity) of reference and
prediction; a reference lesion is *detected* (TP) when at least ``min_overlap_voxels`` of its
voxels are predicted as the class by any component, otherwise *missed* (FN); a predicted
component touching no reference lesion is a *false positive* (FP).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: 3x3x3 structuring element: voxels touching by a face, edge or corner are one lesion (the
#: rule of the readouts, post-processing and lesion-wise detection alike)
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def dice(pred: np.ndarray, ref: np.ndarray, empty: float = 1.0) -> float:
    """Dice of two boolean arrays; ``empty`` when both are empty (see the module docstring)."""
    inter = np.count_nonzero(pred & ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return empty if total == 0 else 2.0 * inter / total


def dice_per_class(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_label: int | None = None
) -> np.ndarray:
    """Dice of every foreground class ``1..K-1`` of two label volumes: float64 ``(K-1,)``,
    NaN for a class absent from both (the validation rule of the module docstring).

    Voxels equal to ``ignore_label`` are excluded. One ``bincount`` confusion matrix scores
    all classes in a single pass over a (possibly memory-mapped) volume without one-hot
    copies; per class it equals :func:`dice` with ``empty=nan``.
    """
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} voxels, target {target.size}")
    keep = (target >= 0) & (target < num_classes)
    if ignore_label is not None:
        keep &= target != ignore_label
    pred, target = pred[keep], target[keep]
    conf = np.bincount(target * num_classes + pred, minlength=num_classes**2)
    conf = conf.reshape(num_classes, num_classes)  # rows truth, columns prediction
    tp = np.diag(conf).astype(np.float64)
    denom = conf.sum(axis=0) + conf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(denom > 0, 2 * tp / denom, np.nan)
    return scores[1:]


def dice_per_region(
    pred: np.ndarray, target: np.ndarray, regions: Sequence[Sequence[int]]
) -> np.ndarray:
    """Dice of each region (a set of label values; regions may overlap): ``(R,)``, NaN for a
    region absent from both (the validation rule)."""
    pred, target = np.asarray(pred), np.asarray(target)
    return np.array(
        [dice(np.isin(pred, v), np.isin(target, v), empty=math.nan) for v in regions],
        dtype=np.float64,
    )


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two boolean arrays; 1.0 when both are empty."""
    inter = np.count_nonzero(pred & ref)
    union = np.count_nonzero(pred | ref)
    return 1.0 if union == 0 else inter / union


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> tuple[float, float]:
    """Symmetric 95th-percentile Hausdorff distance and average surface distance in mm.

    ``spacing`` is the voxel size in mm along the array axes. Both empty -> (0, 0); one
    empty -> (nan, nan).
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0, 0.0
    if not has_pred or not has_ref:
        return math.nan, math.nan
    # Cropping to the union box (plus a margin) gives the same distances on a much smaller
    # array. MONAI's compute_hausdorff_distance and compute_average_surface_distance each
    # find both surfaces and both distance maps again: one symmetric pass serves both
    # figures (half the time; tests/test_metrics.py checks they equal MONAI's).
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))
    r = torch.from_numpy(np.ascontiguousarray(ref[box]))
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
        _, distances, _ = get_edge_surface_distance(
            p, r, spacing=[float(s) for s in spacing], symmetric=True
        )
    directed = [d.double().numpy() for d in distances]
    hd95 = max(float(np.percentile(d, 95)) for d in directed)
    assd = float(np.concatenate(directed).mean())
    return hd95, assd


def reference_lesions(ref: np.ndarray, min_ref_voxels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The 26-connected components of boolean ``ref`` (a label map) and, per label (0 the
    background, never a lesion), whether it is a lesion: ``min_ref_voxels`` or more voxels.
    Computed once, it serves every prediction scored against the same reference."""
    ref_cc, n_ref = ndimage.label(ref, structure=CONNECTIVITY_26)
    lesion = np.bincount(ref_cc.ravel(), minlength=n_ref + 1) >= min_ref_voxels
    lesion[0] = False
    return ref_cc, lesion


def lesion_detection(
    pred: np.ndarray,
    ref: np.ndarray,
    min_overlap_voxels: int = 1,
    min_ref_voxels: int = 1,
    lesions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, int]:
    """Counts of detected (tp), missed (fn) reference lesions and false-positive (fp)
    predicted components of two boolean arrays (26-connectivity).

    Reference components under ``min_ref_voxels`` are not lesions: they count neither as
    detected nor as missed, and a predicted component touching one is not a false positive
    (manual labels carry 1-16 voxel fragments; lesion-wise BraTS 2023 ignores < 50 voxels).
    ``lesions``: :func:`reference_lesions` of ``ref`` when already computed.
    """
    ref_cc, lesion = lesions if lesions is not None else reference_lesions(ref, min_ref_voxels)
    pred_cc, n_pred = ndimage.label(pred, structure=CONNECTIVITY_26)
    counted = lesion[1:]
    overlap_ref = np.bincount(ref_cc[pred], minlength=len(lesion))[1:]
    tp = int(np.count_nonzero((overlap_ref >= min_overlap_voxels) & counted))
    overlap_pred = np.bincount(pred_cc[ref], minlength=n_pred + 1)[1:]
    fp = int(np.count_nonzero(overlap_pred == 0))
    n_counted = int(np.count_nonzero(counted))
    return {
        "ref_lesions": n_counted,
        "pred_lesions": n_pred,
        "tp": tp,
        "fn": n_counted - tp,
        "fp": fp,
    }


def min_lesion_voxels(min_lesion_ml: float, spacing: Sequence[float]) -> int:
    """The voxel count of ``min_lesion_ml`` on a grid of ``spacing`` (mm), at least 1."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return max(1, math.ceil(min_lesion_ml / voxel_ml - 1e-9)) if voxel_ml > 0 else 1


def lesion_sensitivity(tp: float, fn: float) -> float:
    """Lesion-level recall ``tp / (tp + fn)``: the share of reference lesions detected; NaN
    when there is no reference lesion. Counts of one case or summed over cases (pooled)."""
    return tp / (tp + fn) if tp + fn > 0 else math.nan


def lesion_f1(tp: float, fn: float, fp: float) -> float:
    """Lesion-level F1 ``2 tp / (2 tp + fp + fn)`` (detected reference lesions against missed
    ones and false-positive components); NaN when there is neither a reference lesion nor a
    predicted component."""
    den = 2 * tp + fp + fn
    return 2 * tp / den if den > 0 else math.nan


def predicted_components(
    pred: np.ndarray,
    ref: np.ndarray,
    min_ref_voxels: int = 1,
    lesions: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel count of each connected component of boolean ``pred`` (26-connectivity),
    whether it touches ``ref`` (False: a false-positive component, as in
    :func:`lesion_detection`) and whether it touches a reference lesion of at least
    ``min_ref_voxels`` (a detection; ``lesions``: :func:`reference_lesions` of ``ref`` when
    already computed)."""
    pred_cc, n_pred = ndimage.label(pred, structure=CONNECTIVITY_26)
    sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)[1:]
    touches = np.bincount(pred_cc[ref], minlength=n_pred + 1)[1:] > 0
    if lesions is None and min_ref_voxels <= 1:
        return sizes, touches, touches
    ref_cc, lesion = lesions if lesions is not None else reference_lesions(ref, min_ref_voxels)
    detects = np.bincount(pred_cc[lesion[ref_cc]], minlength=n_pred + 1)[1:] > 0
    return sizes, touches, detects


def evaluate_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    classes: dict[str, Sequence[int]],
    min_overlap_voxels: int = 1,
    min_lesion_ml: float = 0.0,
) -> list[dict[str, Any]]:
    """All metrics for each named class/region of two integer label arrays on one grid.

    ``classes`` maps a name to the label values forming it (``{"tumour": [1]}`` or a region
    such as ``{"whole_tumour": [1, 2, 3, 4]}``). Reference components under
    ``min_lesion_ml`` are not counted as lesions (:func:`lesion_detection`). Returns one row
    per name.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    min_ref_voxels = min_lesion_voxels(min_lesion_ml, spacing)
    rows = []
    for name, values in classes.items():
        p = np.isin(pred, values)
        r = np.isin(ref, values)
        hd95, assd = surface_distances(p, r, spacing)
        pred_ml = np.count_nonzero(p) * voxel_ml
        ref_ml = np.count_nonzero(r) * voxel_ml
        rows.append(
            {
                "class": name,
                "labels": ",".join(str(v) for v in values),
                "dice": dice(p, r),
                "iou": iou(p, r),
                "hd95_mm": hd95,
                "assd_mm": assd,
                "pred_ml": pred_ml,
                "ref_ml": ref_ml,
                "volume_diff_ml": pred_ml - ref_ml,
                "volume_diff_pct": (pred_ml - ref_ml) / ref_ml * 100.0 if ref_ml > 0 else math.nan,
                **lesion_detection(p, r, min_overlap_voxels, min_ref_voxels),
            }
        )
    return rows
