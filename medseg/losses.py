"""Dice + cross-entropy loss for 2D segmentation logits (MONAI ``DiceCELoss`` underneath).

``build_loss(num_classes, ...)`` returns a module ``loss(logits, target) -> scalar`` with
``logits`` float ``[B, K, H, W]`` (raw, before softmax/sigmoid) and ``target`` int64 class
indices ``[B, H, W]``.

* **Multi-class** (``K >= 2``): softmax Dice + cross-entropy, ``target`` values in ``0..K-1``.
* **Binary** (``K == 1``, a single-logit model): sigmoid Dice + binary cross-entropy; every
  non-zero target value is foreground.
* ``ignore_index``: voxels with that target value count in neither term (masked out of the
  Dice sums and the CE average), e.g. unlabelled regions or padding.
* ``class_weights`` (length ``K``; ``[background, foreground]`` for binary) weight the CE
  (weighted mean, as ``torch.nn.CrossEntropyLoss``) and the per-class Dice terms.
* ``include_background``: whether class 0 takes part in the Dice term (it always takes part in
  the CE). Default False, as nnU-Net: the background Dice is near 1 and dilutes the signal of
  small lesions. Ignored for binary models, whose single channel is the foreground.
* **Regions** (:class:`RegionDiceBCELoss`): one sigmoid output per (possibly overlapping)
  region of label values, Dice + BCE per region (BraTS whole tumour / core / enhancing).

The loss is computed in float32 whatever the autocast dtype of the logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from medseg.errors import ConfigError, DimensionError

logger = logging.getLogger(__name__)


class DiceCELossWithIgnore(nn.Module):
    """MONAI ``DiceCELoss`` on ``(logits [B,K,H,W], target int [B,H,W])`` with an ignore label.

    MONAI's loss has no ``ignore_index``, so the activation is applied here and the Dice term
    of the wrapped ``DiceCELoss`` receives probabilities and one-hot targets multiplied by the
    valid-voxel mask (ignored voxels add nothing to intersection or denominators). Without
    ignored voxels the value equals ``DiceCELoss(softmax=True, to_onehot_y=True)`` exactly
    (``sigmoid=True`` for binary), which the tests check.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        dice_weight: float,
        ce_weight: float,
        class_weights: torch.Tensor | None,
        include_background: bool,
        ignore_index: int | None,
        batch_dice: bool,
        smooth: float,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.binary = num_classes == 1
        self.ignore_index = ignore_index
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        # Binary: class_weights = [bg, fg] weight the BCE per voxel (applied below, since
        # BCEWithLogitsLoss's pos_weight cannot be masked); the single Dice term is unweighted.
        self.register_buffer("class_weights", class_weights if class_weights is not None else None)
        self.dicece = DiceCELoss(
            include_background=True if self.binary else include_background,
            to_onehot_y=False,
            softmax=False,
            sigmoid=False,
            batch=batch_dice,
            smooth_nr=smooth,
            smooth_dr=smooth,
            weight=None if self.binary else class_weights,
            lambda_dice=dice_weight,
            lambda_ce=ce_weight,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` ``[B, K, H, W]`` float, ``target`` ``[B, H, W]`` int -> scalar loss."""
        self._check_shapes(logits, target)
        logits = logits.float()
        if self.ignore_index is None:
            valid = None
            safe = target
        else:
            valid = target != self.ignore_index
            safe = torch.where(valid, target, torch.zeros_like(target))
        if self.binary:
            return self._binary(logits, safe, valid)
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(safe.long(), self.num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        if valid is not None:
            mask = valid.unsqueeze(1).to(probs.dtype)
            probs, onehot = probs * mask, onehot * mask
        dice = self.dicece.dice(probs, onehot)
        if valid is None:
            ce = self.dicece.ce(logits, target.unsqueeze(1).long())
        else:
            ce = self._masked_ce(logits, safe, valid)
        return self.dice_weight * dice + self.ce_weight * ce

    def _masked_ce(
        self, logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Class-weighted mean CE over valid voxels (torch's ``mean`` semantics), 0 when a batch
        is entirely ignored (torch's own ``ignore_index`` gives NaN there and NaN gradients)."""
        per_voxel = F.cross_entropy(logits, safe.long(), reduction="none")
        weights = valid.to(logits.dtype)
        if self.class_weights is not None:
            weights = weights * self.class_weights[safe.long()]
        return (per_voxel * weights).sum() / weights.sum().clamp_min(1e-8)

    def _binary(
        self, logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        fg = (safe > 0).unsqueeze(1).to(logits.dtype)
        probs = torch.sigmoid(logits)
        weights = torch.ones_like(fg) if valid is None else valid.unsqueeze(1).to(fg.dtype)
        dice = self.dicece.dice(probs * weights, fg * weights)
        if self.class_weights is not None:
            weights = weights * torch.where(fg > 0, self.class_weights[1], self.class_weights[0])
        bce = F.binary_cross_entropy_with_logits(logits, fg, reduction="none")
        # Weighted mean as torch's CE does; an all-ignored batch gives 0, not NaN.
        bce = (bce * weights).sum() / weights.sum().clamp_min(1e-8)
        return self.dice_weight * dice + self.ce_weight * bce

    def _check_shapes(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise DimensionError(
                f"loss: logits have shape {tuple(logits.shape)}; expected [B, {self.num_classes}, "
                "H, W] (num_classes given to build_loss must equal the model's output channels)"
            )
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise DimensionError(
                f"loss: target has shape {tuple(target.shape)}; expected [B, H, W] = "
                f"{tuple(logits.shape[:1] + logits.shape[2:])} (class indices, no channel axis)"
            )
        if torch.is_floating_point(target):
            raise DimensionError(
                f"loss: target has dtype {target.dtype}; expected integer class indices (int64)"
            )


def build_loss(
    num_classes: int,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    include_background: bool = False,
    ignore_index: int | None = None,
    binary: bool = False,
    batch_dice: bool = False,
    smooth: float = 1e-5,
) -> nn.Module:
    """Dice + CE loss for logits with ``num_classes`` channels (see the module docstring).

    ``binary=True`` (or ``num_classes == 1``) selects the sigmoid single-logit variant;
    ``batch_dice`` sums Dice statistics over the batch before dividing (helps when many
    slices have no foreground); ``smooth`` is MONAI's ``smooth_nr``/``smooth_dr``.
    Raises ``ConfigError`` for inconsistent settings.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"loss: num_classes must be a positive integer, got {num_classes!r}")
    if binary and num_classes != 1:
        raise ConfigError(
            f"loss: binary=True needs a single-logit model (num_classes=1), got "
            f"num_classes={num_classes}; use num_classes=1 with binary, or binary=False for "
            "softmax over background + classes"
        )
    for label, value in (("dice_weight", dice_weight), ("ce_weight", ce_weight)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"loss: {label} must be a number >= 0, got {value!r}")
    if dice_weight == 0 and ce_weight == 0:
        raise ConfigError("loss: dice_weight and ce_weight are both 0; set at least one > 0")
    if ignore_index is not None and 0 <= ignore_index < max(num_classes, 2):
        raise ConfigError(
            f"loss: ignore_index={ignore_index} is a real class index (classes 0..."
            f"{max(num_classes, 2) - 1}); use a value outside them, e.g. 255 or -100"
        )
    weights = _class_weights(class_weights, num_classes)
    return DiceCELossWithIgnore(
        num_classes,
        dice_weight=dice_weight,
        ce_weight=ce_weight,
        class_weights=weights,
        include_background=include_background,
        ignore_index=ignore_index,
        batch_dice=batch_dice,
        smooth=smooth,
    )


def _class_weights(
    class_weights: Sequence[float] | torch.Tensor | None, num_classes: int
) -> torch.Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    expected = max(num_classes, 2)  # binary: [background, foreground]
    if weights.numel() != expected or bool((weights < 0).any()) or not bool(weights.sum() > 0):
        raise ConfigError(
            f"loss: class_weights {weights.tolist()} are invalid; expected {expected} "
            f"non-negative numbers (one per class{', [background, foreground]' if num_classes == 1 else ''}) "
            "with a positive sum"
        )
    return weights


class RegionDiceBCELoss(nn.Module):
    """Region-based loss (nnU-Net's BraTS regions): one sigmoid output per region, each
    trained with soft Dice + binary cross-entropy against "label value in the region".

    ``forward(logits [B, R, H, W], target int [B, H, W])``; ``regions`` lists the label
    values of each of the ``R`` regions (they may overlap, e.g. whole tumour contains core).
    """

    def __init__(
        self,
        regions: Sequence[Sequence[int]],
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if not regions or any(not r for r in regions):
            raise ConfigError(f"loss: regions {list(regions)} must each list label values")
        top = max(max(r) for r in regions)
        table = torch.zeros(len(regions), top + 1)
        for i, values in enumerate(regions):
            table[i, list(values)] = 1.0
        self.register_buffer("table", table, persistent=False)  # region x label value -> 0/1
        self.dice = DiceLoss(
            sigmoid=True, include_background=True, smooth_nr=smooth, smooth_dr=smooth
        )
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)

    def region_targets(self, target: torch.Tensor) -> torch.Tensor:
        """``[B, H, W]`` label values -> ``[B, R, H, W]`` float 0/1 region masks."""
        table = self.table.to(target.device)
        clipped = target.long().clamp(0, table.shape[1] - 1)
        return table[:, clipped].permute(1, 0, 2, 3).contiguous()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.table.shape[0]:
            raise DimensionError(
                f"loss: logits have shape {tuple(logits.shape)}; expected [B, "
                f"{self.table.shape[0]}, H, W] (one output per region)"
            )
        regions = self.region_targets(target)
        logits = logits.float()
        loss = self.dice_weight * self.dice(logits, regions)
        if self.ce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, regions)
            loss = loss + self.ce_weight * bce
        return loss
