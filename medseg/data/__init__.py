"""Training data pipeline: dataset discovery and validation, recorded preprocessing, an on-disk
memory-mapped cache, 2D/2.5D slice sampling and augmentation (CPU MONAI path and batched
device path). See ``docs/data.md``.

Heavy modules (torch, MONAI) are imported lazily by attribute access so that
``import medseg.data`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PreprocessingParams": "preprocessing",
    "GridInfo": "preprocessing",
    "preprocess_image": "preprocessing",
    "preprocess_label": "preprocessing",
    "restore_labels": "preprocessing",
    "restore_probabilities": "preprocessing",
    "fit_preprocessing": "preprocessing",
    "SlabImage": "slabs",
    "AugmentationConfig": "config",
    "DataConfig": "config",
    "load_data_config": "config",
    "CaseSpec": "datasets",
    "DatasetSpec": "datasets",
    "load_dataset": "datasets",
    "Problem": "validation",
    "validate_dataset": "validation",
    "format_problems": "validation",
    "split_cases": "splits",
    "split_from_spec": "splits",
    "CachedCase": "cache",
    "prepare_cases": "cache",
    "SliceDataset": "sampling",
    "build_augmentation": "augmentation",
    "BatchAugmenter": "augmentation",
    "PreparedData": "pipeline",
    "prepare_data": "pipeline",
    "build_train_loader": "pipeline",
    "build_train_batches": "pipeline",
    "training_samples": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medseg.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")
