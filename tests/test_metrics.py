"""Metrics against hand-computed values and against MONAI on real BraTS masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.metrics import (
    dice,
    evaluate_masks,
    iou,
    lesion_detection,
    predicted_components,
    surface_distances,
)


def _cube(shape, lo, hi):
    a = np.zeros(shape, dtype=bool)
    a[lo:hi, lo:hi, lo:hi] = True
    return a


def test_dice_iou_shifted_cubes():
    ref = np.zeros((10, 10, 10), bool)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = True  # 64 voxels
    pred[3:7, 2:6, 2:6] = True  # shifted by one voxel: overlap 3*4*4 = 48
    assert dice(pred, ref) == pytest.approx(2 * 48 / 128)
    assert iou(pred, ref) == pytest.approx(48 / 80)


def test_surface_distances_concentric_cubes_by_hand():
    # ref shell: 150 face voxels at 1 voxel from pred's surface, 60 edge voxels at sqrt(2),
    # 8 corners at sqrt(3); every pred surface voxel is 1 voxel from ref's surface.
    ref = _cube((12, 12, 12), 2, 9)  # 7^3
    pred = _cube((12, 12, 12), 3, 8)  # 5^3
    hd95, assd = surface_distances(pred, ref, (1.0, 1.0, 1.0))
    assert hd95 == pytest.approx(math.sqrt(2))
    expected_assd = (98 * 1 + 150 * 1 + 60 * math.sqrt(2) + 8 * math.sqrt(3)) / (98 + 218)
    assert assd == pytest.approx(expected_assd)


def test_surface_distances_use_anisotropic_spacing():
    pred = np.zeros((6, 6, 8), bool)
    ref = np.zeros_like(pred)
    pred[2, 2, 2] = True
    ref[2, 2, 5] = True  # 3 voxels apart along an axis of 2.5 mm voxels
    hd95, assd = surface_distances(pred, ref, (1.0, 1.0, 2.5))
    assert hd95 == pytest.approx(7.5)
    assert assd == pytest.approx(7.5)
    rows = evaluate_masks(pred.astype(int), ref.astype(int), (1.0, 1.0, 2.5), {"x": [1]})
    assert rows[0]["dice"] == 0.0
    assert rows[0]["pred_ml"] == pytest.approx(2.5 / 1000)
    assert (rows[0]["tp"], rows[0]["fn"], rows[0]["fp"]) == (0, 1, 1)


def test_empty_mask_conventions():
    empty = np.zeros((5, 5, 5), bool)
    some = empty.copy()
    some[1:3, 1:3, 1:3] = True
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert surface_distances(empty, empty, (1, 1, 1)) == (0.0, 0.0)
    assert dice(empty, some) == 0.0
    hd95, assd = surface_distances(empty, some, (1, 1, 1))
    assert math.isnan(hd95)
    assert math.isnan(assd)
    row = evaluate_masks(some.astype(int), empty.astype(int), (1, 1, 1), {"a": [1]})[0]
    assert math.isnan(row["volume_diff_pct"])
    assert row["fp"] == 1


def test_lesion_detection_counts():
    ref = np.zeros((30, 30, 30), bool)
    pred = np.zeros_like(ref)
    ref[2:5, 2:5, 2:5] = True  # detected
    ref[10:13, 10:13, 10:13] = True  # detected by a partial overlap
    ref[20:23, 2:5, 2:5] = True  # missed
    pred[2:5, 2:5, 2:5] = True
    pred[12:15, 12:15, 12:15] = True
    pred[25:28, 25:28, 25:28] = True  # false positive
    assert lesion_detection(pred, ref) == {
        "ref_lesions": 3, "pred_lesions": 3, "tp": 2, "fn": 1, "fp": 1,
    }  # fmt: skip
    # requiring more overlap than the 1-voxel corner touch turns it into a miss
    assert lesion_detection(pred, ref, min_overlap_voxels=2)["tp"] == 1
    # a 2-voxel reference fragment is no lesion: not missed, and marking it is no FP
    ref[28, 2, 2:4] = True
    pred[28, 2, 2:4] = True
    assert lesion_detection(pred, ref)["ref_lesions"] == 4
    assert lesion_detection(pred, ref, min_ref_voxels=3) == {
        "ref_lesions": 3, "pred_lesions": 4, "tp": 2, "fn": 1, "fp": 1,
    }  # fmt: skip
    sizes, touches, detects = predicted_components(pred, ref, min_ref_voxels=3)
    assert sorted(zip(sizes.tolist(), touches.tolist(), detects.tolist(), strict=True)) == [
        (2, True, False), (27, False, False), (27, True, True), (27, True, True),
    ]  # fmt: skip


def test_regions_merge_labels():
    ref = np.zeros((8, 8, 8), int)
    ref[1:3] = 1
    ref[3:5] = 4
    pred = ref.copy()
    pred[3:5] = 2  # right region, wrong class
    rows = {
        r["class"]: r for r in evaluate_masks(pred, ref, (1, 1, 1), {"wt": [1, 2, 4], "et": [4]})
    }
    assert rows["wt"]["dice"] == 1.0
    assert rows["et"]["dice"] == 0.0


def test_matches_monai_on_brats(shared_data):
    """Whole-tumour masks of a real BraTS case vs a shifted, eroded copy: our (cropped)
    metrics equal MONAI's DiceMetric / HD95 / ASSD computed on the full arrays."""
    from monai.metrics import (
        DiceMetric,
        compute_average_surface_distance,
        compute_hausdorff_distance,
    )

    from medseg.io import read_volume

    seg = read_volume(shared_data / "brats2015" / "pat0001" / "seg.nii.gz")
    ref = np.rint(seg.array).astype(int) > 0
    pred = ndimage.binary_erosion(np.roll(ref, 3, axis=0), iterations=2)
    spacing = (1.0, 1.0, 2.0)  # pretend anisotropic so spacing handling is exercised
    row = evaluate_masks(pred.astype(int), ref.astype(int), spacing, {"wt": [1]})[0]
    p = torch.from_numpy(pred)[None, None].float()
    r = torch.from_numpy(ref)[None, None].float()
    metric = DiceMetric(include_background=True)
    assert row["dice"] == pytest.approx(float(metric(p, r).item()), abs=1e-6)
    hd = compute_hausdorff_distance(p, r, percentile=95, spacing=list(spacing))
    asd = compute_average_surface_distance(p, r, symmetric=True, spacing=list(spacing))
    assert row["hd95_mm"] == pytest.approx(float(hd.item()), rel=1e-5)
    assert row["assd_mm"] == pytest.approx(float(asd.item()), rel=1e-5)
    assert 0.3 < row["dice"] < 0.95


def test_one_dice_rule_for_evaluation_and_validation() -> None:
    """Validation's one-pass per-class Dice equals metrics.dice per class, with the one
    documented empty rule: 1 in evaluation tables, NaN (left out of means) in validation."""
    from medseg.metrics import dice_per_class, dice_per_region

    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, (9, 8, 7))
    ref = rng.integers(0, 3, (9, 8, 7))
    ref[ref == 2] = 1  # class 2 only in the prediction; class 3 in neither
    fast = dice_per_class(pred, ref, num_classes=4)
    slow = [dice(pred == c, ref == c, empty=np.nan) for c in (1, 2, 3)]
    np.testing.assert_allclose(fast, slow)
    assert fast[1] == 0.0
    assert np.isnan(fast[2])
    assert dice(pred == 3, ref == 3) == 1.0  # evaluation: a correctly empty class agrees
    regions = dice_per_region(pred, ref, [[1, 2], [3]])
    np.testing.assert_allclose(regions[0], dice(pred >= 1, ref >= 1))
    assert np.isnan(regions[1])
