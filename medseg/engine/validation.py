"""Validation with per-volume 3D Dice (slices put back into volumes, not a per-slice average).

Each validation case is predicted slice by slice with
:func:`medseg.inference.networks.eval_network` (the Predictor's network wrapper) and
:func:`medseg.inference.slices.infer_slices` (the Predictor's own slice loop), then Dice is computed per class on
the whole 3D volume, and averaged over cases. Under DDP the cases are sharded across ranks and
the per-class sums are all-reduced, so every rank ends with the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medseg.data.slicing import plane_axes
from medseg.device import all_reduce_sum
from medseg.inference.networks import eval_network
from medseg.inference.slices import LabelDecoder, infer_slices
from medseg.metrics import dice_per_class, dice_per_region

logger = logging.getLogger(__name__)


@dataclass
class ValidationResult:
    """Mean per-volume Dice per foreground class (NaN where no case had the class)."""

    class_names: list[str]
    dice: np.ndarray  # (K-1,) mean over cases
    num_cases: int
    per_case: dict[str, list[float]] = field(default_factory=dict)  # this rank's cases only
    samples: list[dict[str, Any]] = field(default_factory=list)  # for overlays (this rank)

    @property
    def mean_dice(self) -> float:
        """Mean over foreground classes (the best-checkpoint criterion); 0 when undefined."""
        valid = self.dice[~np.isnan(self.dice)]
        return float(valid.mean()) if valid.size else 0.0

    def as_metrics(self) -> dict[str, float]:
        out = {
            f"val_dice_{name}": float(d)
            for name, d in zip(self.class_names[1:], self.dice, strict=False)
        }
        out["val_mean_dice"] = self.mean_dice
        return out


def _overlay_sample(image: np.ndarray, label: np.ndarray, pred: np.ndarray, axis: int) -> dict:
    """The slice along ``axis`` with the most ground-truth foreground (2D arrays for a PNG)."""
    area = (np.asarray(label) > 0).sum(axis=plane_axes(axis))
    index = int(area.argmax())
    return {
        "index": index,
        "image": np.take(np.asarray(image[0]), index, axis=axis).astype(np.float32),
        "label": np.take(np.asarray(label), index, axis=axis).astype(np.int16),
        "pred": np.take(pred, index, axis=axis),
    }


def validate(
    model: nn.Module,
    cases: Sequence[Any],
    class_names: list[str],
    axis: int | Sequence[int],
    context: int,
    device: torch.device,
    batch_size: int = 32,
    amp: bool | str | torch.dtype | None = False,
    channels_last: bool = False,
    ignore_label: int | None = None,
    num_samples: int = 0,
    progress: bool = True,
    regions: dict[str, list[int]] | None = None,
    region_labels: Sequence[int] | None = None,
) -> ValidationResult:
    """Per-volume Dice of ``model`` on ``cases`` (this rank's shard), all-reduced over ranks.

    ``cases`` are cached cases with ``case_id``, ``image`` ``(C, X, Y, Z)`` and ``label``
    ``(X, Y, Z)``. ``axis``: one axis or several (probabilities averaged, as the Predictor
    does). ``regions`` (with the ``region_labels`` they decode to) scores a region model per
    region instead of per class. ``num_samples`` keeps that many overlay slices.
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    names = [class_names[0], *regions] if regions else list(class_names)
    num_fg = len(names) - 1
    decoder = LabelDecoder(len(regions) if regions else len(class_names), region_labels)
    sums = torch.zeros(2, num_fg, dtype=torch.float64)  # row 0: sum of Dice, row 1: count
    result = ValidationResult(class_names=names, dice=np.zeros(num_fg), num_cases=0)
    for case in tqdm(cases, desc="validation", unit="case", disable=not progress, leave=False):
        with eval_network(model, device, amp, channels_last) as network:
            pred = infer_slices(
                network, case.image, decoder.num_outputs, axes=axes, context=context,
                batch_size=batch_size, decoder=decoder,
            )  # fmt: skip
        if pred.ndim == 4:
            pred = decoder.decode_volume(pred)
        if regions:
            dice = dice_per_region(pred, case.label, list(regions.values()))
        else:
            dice = dice_per_class(pred, case.label, len(class_names), ignore_label)
        result.per_case[case.case_id] = [float(d) for d in dice]
        valid = ~np.isnan(dice)
        sums[0, torch.from_numpy(valid)] += torch.from_numpy(dice[valid])
        sums[1] += torch.from_numpy(valid.astype(np.float64))
        if len(result.samples) < num_samples:
            sample = _overlay_sample(case.image, case.label, pred, axes[0])
            result.samples.append({"case_id": case.case_id, **sample})
    sums = all_reduce_sum(sums, device)
    count = all_reduce_sum(torch.tensor([float(len(cases))], dtype=torch.float64), device)
    with np.errstate(invalid="ignore", divide="ignore"):
        result.dice = np.where(sums[1] > 0, (sums[0] / sums[1]).numpy(), np.nan)
    result.num_cases = int(count.item())
    return result
