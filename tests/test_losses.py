"""Dice + CE loss: hand-computed values, equality with MONAI DiceCELoss, ignore_index masking."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss

from medseg.errors import ConfigError, DimensionError
from medseg.losses import build_loss

LN2 = math.log(2.0)
TARGET = torch.tensor([[[0, 1], [1, 1]]])  # [B=1, H=2, W=2]: 1 background, 3 foreground


def test_hand_values_multiclass_uniform_logits():
    logits = torch.zeros(1, 2, 2, 2)  # softmax 0.5 everywhere, CE = ln 2 per voxel
    # foreground Dice: intersection 0.5 * 3, denominators 3 + 4 * 0.5 -> 1 - 3 / 5 = 0.4
    loss = build_loss(2, include_background=False)(logits, TARGET)
    assert loss.item() == pytest.approx(0.4 + LN2, abs=1e-5)
    # background Dice: 1 - (2 * 0.5) / (1 + 2) = 2/3; classes averaged
    loss = build_loss(2, include_background=True)(logits, TARGET)
    assert loss.item() == pytest.approx((0.4 + 2 / 3) / 2 + LN2, abs=1e-5)
    loss = build_loss(2, dice_weight=2.0, ce_weight=0.5)(logits, TARGET)
    assert loss.item() == pytest.approx(2 * 0.4 + 0.5 * LN2, abs=1e-5)


def test_hand_values_binary_single_logit():
    logits = torch.zeros(1, 1, 2, 2)  # sigmoid 0.5: same Dice and CE as above
    loss = build_loss(1, binary=True)(logits, TARGET)
    assert loss.item() == pytest.approx(0.4 + LN2, abs=1e-5)
    # any non-zero label is foreground
    assert build_loss(1)(logits, TARGET * 4).item() == pytest.approx(loss.item())


def test_class_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[0, 1]]])
    loss = build_loss(2, dice_weight=0.0, class_weights=[1.0, 3.0])(logits, target)
    expected = (1 * LN2 + 3 * math.log(4 / 3)) / (1 + 3)  # weighted mean, as torch
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_perfect_prediction_has_near_zero_loss():
    target = torch.randint(0, 3, (2, 8, 9))
    logits = 30.0 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert build_loss(3, include_background=True)(logits, target).item() < 1e-4


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("weights", [None, [0.5, 1.0, 2.0]])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_equals_monai_dicece_without_ignored_voxels(include_background, weights, batch_dice):
    torch.manual_seed(0)
    logits, target = torch.randn(3, 3, 7, 9), torch.randint(0, 3, (3, 7, 9))
    target[0] = 0  # a slice without foreground
    ours = build_loss(
        3, include_background=include_background, class_weights=weights, batch_dice=batch_dice
    )
    reference = DiceCELoss(
        include_background=include_background,
        softmax=True,
        to_onehot_y=True,
        batch=batch_dice,
        weight=None if weights is None else torch.tensor(weights),
    )
    torch.testing.assert_close(ours(logits, target), reference(logits, target[:, None]))


def test_binary_equals_monai_sigmoid_dicece():
    torch.manual_seed(1)
    logits, target = torch.randn(2, 1, 6, 5), torch.randint(0, 2, (2, 6, 5))
    reference = DiceCELoss(sigmoid=True)(logits, target[:, None])
    torch.testing.assert_close(build_loss(1, binary=True)(logits, target), reference)


@pytest.mark.parametrize(("num_classes", "weights"), [(3, None), (3, [0.2, 1.0, 4.0]), (1, None)])
def test_ignored_voxels_count_in_neither_term(num_classes, weights):
    """A loss with the last two columns ignored equals the loss on the image without them."""
    torch.manual_seed(2)
    logits = torch.randn(2, num_classes, 6, 8, requires_grad=True)
    target = torch.randint(0, max(num_classes, 2), (2, 6, 8))
    masked = target.clone()
    masked[..., 6:] = 255
    loss_fn = build_loss(num_classes, ignore_index=255, class_weights=weights)
    loss = loss_fn(logits, masked)
    cropped = build_loss(num_classes, class_weights=weights)(logits[..., :6], target[..., :6])
    torch.testing.assert_close(loss, cropped)
    loss.backward()
    assert logits.grad[..., 6:].abs().max() == 0, "ignored voxels received gradient"
    assert logits.grad[..., :6].abs().max() > 0


def test_fully_ignored_batch_is_finite():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = build_loss(3, ignore_index=-100)(logits, torch.full((1, 4, 4), -100))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_bf16_logits_give_float32_loss():
    logits = torch.randn(2, 2, 5, 5).to(torch.bfloat16)
    loss = build_loss(2)(logits, torch.randint(0, 2, (2, 5, 5)))
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"num_classes": 3, "binary": True}, "num_classes=1"),
        ({"num_classes": 3, "ignore_index": 2}, "real class index"),
        ({"num_classes": 1, "ignore_index": 1}, "real class index"),
        ({"num_classes": 3, "class_weights": [1.0, 2.0]}, "expected 3 non-negative"),
        ({"num_classes": 1, "class_weights": [1.0]}, "[background, foreground]"),
        ({"num_classes": 2, "class_weights": [1.0, -1.0]}, "non-negative"),
        ({"num_classes": 2, "dice_weight": 0, "ce_weight": 0}, "both 0"),
        ({"num_classes": 2, "ce_weight": -1}, "ce_weight"),
        ({"num_classes": 0}, "positive integer"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        build_loss(**kwargs)
    assert fragment in str(err.value)


def test_shape_and_dtype_mismatches_are_explained():
    loss = build_loss(3)
    with pytest.raises(DimensionError, match=r"expected \[B, 3, H, W\]"):
        loss(torch.randn(2, 2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(DimensionError, match="no channel axis"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(DimensionError, match="integer class indices"):
        loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4))
