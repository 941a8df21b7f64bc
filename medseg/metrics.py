"""Segmentation metrics in physical units: Dice, IoU, HD95, ASSD (mm), volume difference (mL)
and lesion-wise detection.

Surface distances use MONAI (``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``) with the voxel ``spacing`` in mm, so
anisotropic scans are measured correctly.

Empty-mask conventions (documented in ``docs/inference.md``):

* both prediction and reference empty: Dice = IoU = 1, HD95 = ASSD = 0 (perfect agreement);
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


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean arrays; 1.0 when both are empty."""
    inter = np.count_nonzero(pred & ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return 1.0 if total == 0 else 2.0 * inter / total


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
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0, 0.0
    if not has_pred or not has_ref:
        return math.nan, math.nan
    # MONAI wants one-hot [B, C, *spatial]; cropping to the union box (plus a margin) gives
    # the same distances on a much smaller array.
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))[None, None]
    r = torch.from_numpy(np.ascontiguousarray(ref[box]))[None, None]
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
        hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)
        assd = compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)
    return float(hd95.item()), float(assd.item())


def lesion_detection(
    pred: np.ndarray, ref: np.ndarray, min_overlap_voxels: int = 1
) -> dict[str, int]:
    """Counts of detected (tp), missed (fn) reference lesions and false-positive (fp)
    predicted components of two boolean arrays (26-connectivity)."""
    ref_cc, n_ref = ndimage.label(ref, structure=CONNECTIVITY_26)
    pred_cc, n_pred = ndimage.label(pred, structure=CONNECTIVITY_26)
    overlap_ref = np.bincount(ref_cc[pred], minlength=n_ref + 1)[1:]
    tp = int(np.count_nonzero(overlap_ref >= min_overlap_voxels))
    overlap_pred = np.bincount(pred_cc[ref], minlength=n_pred + 1)[1:]
    fp = int(np.count_nonzero(overlap_pred == 0))
    return {"ref_lesions": n_ref, "pred_lesions": n_pred, "tp": tp, "fn": n_ref - tp, "fp": fp}


def evaluate_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    classes: dict[str, Sequence[int]],
    min_overlap_voxels: int = 1,
) -> list[dict[str, Any]]:
    """All metrics for each named class/region of two integer label arrays on one grid.

    ``classes`` maps a name to the label values forming it (``{"tumour": [1]}`` or a region
    such as ``{"whole_tumour": [1, 2, 3, 4]}``). Returns one row per name.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
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
                **lesion_detection(p, r, min_overlap_voxels),
            }
        )
    return rows
