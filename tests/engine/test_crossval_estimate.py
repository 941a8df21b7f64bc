"""The cross-validation time estimate measures and counts slices along the training axis."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import medseg.models
from medseg.data.preprocessing import PreprocessingParams
from medseg.engine.config import build_config
from medseg.engine.crossval import CrossValSetup, estimate_seconds


@pytest.mark.parametrize(("axis", "plane", "slices"), [(0, (20, 30), 10), (2, (10, 20), 30)])
def test_estimate_crops_and_counts_slices_along_the_training_axis(monkeypatch, axis, plane, slices):
    seen: list[tuple[int, ...]] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape))
            return x * self.w

    monkeypatch.setattr(medseg.models, "build_model", lambda *a, **k: Probe())
    cfg = build_config(
        {
            "data": {"dataset": "x", "crop_size": None, "preprocessing": {"slice_axis": axis}},
            "train": {"epochs": 2, "batch_size": 4},
        }
    )
    cases = [SimpleNamespace(label=np.zeros((10, 20, 30), np.uint8)) for _ in range(3)]
    setup = CrossValSetup({}, PreprocessingParams(class_names=["bg", "x"]), None, 3, cases)
    est = estimate_seconds(cfg, setup, folds=1, device="cpu")
    assert seen[0] == (4, 1, *plane)  # whole slices along the training axis
    # one validation fold of 3 cases -> 2 training cases x ``slices`` slices per epoch
    steps = 2 * (2 * slices // 4)
    assert est["train"] / est["step_seconds"] == pytest.approx(steps * 1.25)
