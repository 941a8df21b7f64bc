"""From a :class:`~medseg.data.config.DataConfig` to cached train/val cases and a slice loader.

Kept apart from the trainer so the trainer only sees cached cases and a DataLoader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from medseg.data.config import DataConfig
from medseg.data.preprocessing import PreprocessingParams
from medseg.engine.distributed import DistInfo, all_gather_objects
from medseg.errors import DatasetError, MedsegError

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Cached cases (image ``(C, X, Y, Z)``, label ``(X, Y, Z)``) and the fitted parameters."""

    params: PreprocessingParams
    train_cases: list[Any]
    val_cases: list[Any]
    channel_names: list[str]
    class_names: list[str]


def split_specs(spec: Any, cfg: DataConfig) -> tuple[list[Any], list[Any]]:
    """Train/val case specs: the manifest's ``split`` column when every case has one, else a
    seeded patient-level split (``val_fraction`` or k-fold ``fold``); ``test`` cases never train."""
    from medseg.data.splits import split_from_spec

    train_ids, val_ids = split_from_spec(
        spec.cases, cfg.val_fraction, cfg.fold, cfg.num_folds, cfg.split_seed, cfg.val_cases
    )
    train = [spec.case(i) for i in train_ids]
    val = [spec.case(i) for i in val_ids]
    train = [c for c in train if c.label is not None]
    val = [c for c in val if c.label is not None]
    if not train:
        raise DatasetError(
            f"{cfg.dataset}: no labelled training cases after the split; "
            "add labelled cases or lower data.val_fraction"
        )
    return train, val


def prepare_data(
    cfg: DataConfig,
    info: DistInfo,
    fitted: PreprocessingParams | None = None,
    progress: bool = True,
) -> PreparedData:
    """Load, split, fit preprocessing (unless ``fitted`` is given, e.g. when resuming) and
    cache every case. Under DDP rank 0 fits and builds the cache first; the others then read
    it. Parameter resolution, fitting and the cache are the data pipeline's own
    (:mod:`medseg.data.pipeline`), so ``medseg preview-data`` sees what training sees."""
    from medseg.data.cache import prepare_cases
    from medseg.data.datasets import load_dataset
    from medseg.data.pipeline import default_cache_dir, fit_params_cached, resolve_params

    spec = load_dataset(cfg.dataset)
    train_specs, val_specs = split_specs(spec, cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.dataset)
    params = fitted
    cached: list[Any] = []
    for turn in (True, False):  # rank 0 first, then the others hit its cache
        error: MedsegError | None = None
        if info.is_main == turn:
            try:
                if fitted is None:
                    train_ids = [c.case_id for c in train_specs]
                    params = fit_params_cached(
                        resolve_params(cfg.preprocessing, spec), spec, train_ids, cache_dir
                    )
                cached = prepare_cases(
                    train_specs + val_specs, params, cache_dir, progress=progress and info.is_main
                )
            except MedsegError as err:
                error = err
        # Doubles as the barrier: every rank learns whether one failed, instead of the others
        # waiting out the process-group timeout for a rank that raised.
        failures = [f for f in all_gather_objects(str(error) if error else None) if f]
        if error is not None:
            raise error
        if failures:
            raise DatasetError(f"preparing the data failed on another rank: {failures[0]}")
    assert params is not None
    by_id = {c.case_id: c for c in cached}
    logger.info(
        "%d training and %d validation cases; classes %s; channels %s",
        len(train_specs),
        len(val_specs),
        params.class_names,
        params.channel_names,
    )
    return PreparedData(
        params=params,
        train_cases=[by_id[c.case_id] for c in train_specs],
        val_cases=[by_id[c.case_id] for c in val_specs],
        channel_names=list(params.channel_names),
        class_names=list(params.class_names),
    )


def build_train_loader(
    data: PreparedData,
    cfg: DataConfig,
    batch_size: int,
    num_workers: int,
    seed: int,
    info: DistInfo,
    pin_memory: bool,
) -> tuple[Any, DataLoader, DistributedSampler]:
    """The training SliceDataset, its DataLoader and the sampler (call ``set_epoch`` on both).

    The sampler shards and shuffles with ``(seed, epoch)`` for any world size (one code path
    for 1 and N processes), so the data order is reproducible after a resume.
    """
    from medseg.data.sampling import SliceDataset

    aug = cfg.augmentation
    transform = None
    if aug.enabled and aug.backend == "cpu":
        from medseg.data.augmentation import build_augmentation

        transform = build_augmentation(aug, seed)
    dataset = SliceDataset(
        data.train_cases,
        axis=cfg.train_axes(),
        context=cfg.context,
        crop_size=cfg.crop_size,
        foreground_ratio=cfg.foreground_ratio,
        transform=transform,
        samples_per_epoch=cfg.samples_per_epoch,
        seed=seed,
        train=True,
    )
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
    )
    per_rank = len(sampler)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # BatchNorm needs > 1 sample; keep the last partial batch only when it is all we have
        drop_last=per_rank > batch_size,
        persistent_workers=False,  # workers re-fork each epoch and see set_epoch()
        generator=torch.Generator().manual_seed(seed),
    )
    return dataset, loader, sampler
