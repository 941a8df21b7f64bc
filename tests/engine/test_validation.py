"""Per-volume 3D Dice: hand-computed values, empty classes, ignore label, case averaging."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medseg.engine.validation import validate
from medseg.metrics import dice_per_class


def test_dice_hand_values() -> None:
    target = np.zeros((4, 4, 2), np.int16)
    pred = np.zeros_like(target)
    target[0, :2, 0] = 1  # 2 voxels of class 1
    pred[0, :1, 0] = 1  # 1 overlapping voxel
    pred[3, 3, 1] = 2  # class 2 predicted but absent
    dice = dice_per_class(pred, target, num_classes=4)
    np.testing.assert_allclose(dice[:2], [2 * 1 / 3, 0.0])
    assert np.isnan(dice[2])  # class 3 absent from both


def test_dice_ignore_label_excluded() -> None:
    target = np.array([1, 1, 255, 0])
    pred = np.array([1, 1, 0, 1])
    np.testing.assert_allclose(dice_per_class(pred, target, 2, ignore_label=255), [0.8])


@dataclass
class _Case:
    case_id: str
    image: np.ndarray
    label: np.ndarray


class _Threshold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], 1) + self.p


def test_validate_is_per_volume_not_per_slice() -> None:
    # case a: one slice with a perfect 8-voxel object, one slice with a 1-voxel false positive.
    # Per volume: 2*8/(9+8) = 0.941; a per-slice mean would give (1 + 0) / 2 = 0.5.
    label_a = np.zeros((4, 4, 2), np.int16)
    label_a[:2, :, 0] = 1
    image_a = np.where(label_a > 0, 1.0, -1.0).astype(np.float32)[None]
    image_a[0, 3, 3, 1] = 1.0
    # case b: perfect
    label_b = label_a.copy()
    image_b = np.where(label_b > 0, 1.0, -1.0).astype(np.float32)[None]
    cases = [_Case("a", image_a, label_a), _Case("b", image_b, label_b)]
    result = validate(
        _Threshold(),
        cases,
        ["bg", "fg"],
        axis=2,
        context=0,
        device=torch.device("cpu"),
        num_samples=1,
        progress=False,
    )
    assert result.num_cases == 2
    np.testing.assert_allclose(result.per_case["a"], [16 / 17])
    np.testing.assert_allclose(result.dice, [(16 / 17 + 1) / 2])
    assert result.as_metrics()["val_dice_fg"] == result.mean_dice
    assert len(result.samples) == 1
    assert result.samples[0]["index"] == 0
