"""Tiny synthetic nnU-Net datasets and configs for fast CPU training tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

SHAPE = (24, 24, 6)


def write_tiny_dataset(root: Path, num_cases: int = 4, seed: int = 0) -> Path:
    """nnU-Net v2 folder: 1 channel, classes background/lesion/rim; a bright blob per case."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    for i in range(num_cases):
        centre = np.array([12, 12, 3]) + rng.integers(-4, 5, 3) * np.array([1, 1, 0])
        dist = np.sqrt(
            (
                ((grid - centre[:, None, None, None]) * np.array([1, 1, 2])[:, None, None, None])
                ** 2
            ).sum(0)
        )
        label = np.zeros(SHAPE, np.uint8)
        label[dist < 7] = 2
        label[dist < 4] = 1
        image = 100 + 10 * rng.standard_normal(SHAPE) + 80 * (label == 1) + 40 * (label == 2)
        nib.save(
            nib.Nifti1Image(image.astype(np.float32), affine),
            root / "imagesTr" / f"case_{i:03d}_0000.nii.gz",
        )
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "lesion": 1, "rim": 2},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "Dataset001_Tiny")


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


@pytest.fixture
def tiny_raw(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return tiny_raw_config(tiny_dataset, tmp_path_factory.getbasetemp() / "tiny_cache")


@pytest.fixture(scope="session")
def make_tiny_raw():
    """The :func:`tiny_raw_config` builder (for module-scoped fixtures)."""
    return tiny_raw_config
