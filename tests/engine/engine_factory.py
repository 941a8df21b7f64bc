"""Training configs for fast CPU training tests (the datasets: tests.data.data_factory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_raw_config(dataset: Path, cache_dir: Path, **train: Any) -> dict[str, Any]:
    """A raw config dict training a very small UNet for seconds on CPU."""
    return {
        "name": "tiny",
        "seed": 3,
        "device": "cpu",
        "data": {
            "dataset": str(dataset),
            "cache_dir": str(cache_dir),
            "crop_size": [16, 16],
            "samples_per_epoch": 16,
            "val_fraction": 0.25,
            "num_workers": 0,
            "augmentation": {"enabled": False},
        },
        "model": {"name": "unet", "options": {"depth": 2, "base_channels": 4}},
        "optim": {"lr": 0.01},
        "train": {"epochs": 1, "batch_size": 4, "overlays": 1, "val_batch_size": 8, **train},
    }
