"""TrainBatches owns an epoch's seeding and the on-device augmentation for both pipelines,
with the seed formulas the pipelines always used (so sampled batches are unchanged)."""

from __future__ import annotations

import pytest
import torch

from medseg.data.config import DataConfig
from medseg.data.pipeline import augmentation_site, build_train_batches, prepare_data
from medseg.data.seeds import epoch_seed
from tests.data.data_factory import nnunet_dataset


@pytest.fixture(scope="module")
def data_and_cfg(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("batches")
    dataset = nnunet_dataset(root / "ds", n_cases=3, channels=1, shape=(20, 18, 6))
    cfg = DataConfig(
        dataset=str(dataset), cache_dir=str(root / "cache"), crop_size=(16, 16),
        samples_per_epoch=8, val_fraction=0.34, num_workers=0,
    )  # fmt: skip
    return prepare_data(cfg, progress=False), cfg


def _with(cfg: DataConfig, pipeline: str, backend: str) -> DataConfig:
    aug = cfg.augmentation.model_copy(update={"backend": backend})
    return cfg.model_copy(update={"pipeline": pipeline, "augmentation": aug})


def test_epoch_seed_is_the_formula_the_streams_always_used() -> None:
    assert epoch_seed(3, 2) == 3 * 100_003 + 2  # DataLoader worker seeds
    assert epoch_seed(3, 2, 1, 1009) == (3 * 100_003 + 2) * 1009 + 1  # batched augmentation
    assert epoch_seed(3, 2, 1, 7919) == (3 * 100_003 + 2) * 7919 + 1  # resident sampler


@pytest.mark.parametrize(
    ("pipeline", "backend", "site"),
    [("resident", "batched", "batches"), ("workers", "batched", "batches"),
     ("workers", "cpu", "samples")],
)  # fmt: skip
def test_set_epoch_seeds_every_stream_of_either_pipeline(data_and_cfg, pipeline, backend, site):
    data, cfg = data_and_cfg
    batches = build_train_batches(data, _with(cfg, pipeline, backend), 4, 0, seed=3)
    assert batches.mode == pipeline
    assert augmentation_site(batches.augmentation) == site
    assert (batches.augmenter is not None) == (site == "batches")
    if site == "samples":
        assert batches.dataset.transform is not None  # augmented per sample in the workers
    batches.set_epoch(2)
    if pipeline == "resident":
        assert batches.loader.generator.initial_seed() == (3 * 100_003 + 2) * 7919
    else:
        assert batches.sampler.epoch == batches.dataset.epoch == 2
        assert batches.loader.generator.initial_seed() == 3 * 100_003 + 2
    if batches.augmenter is not None:
        assert batches.augmenter.generator.initial_seed() == (3 * 100_003 + 2) * 1009
    first = [batches.augment(b["image"], b["label"]) for b in batches]
    batches.set_epoch(2)
    again = [batches.augment(b["image"], b["label"]) for b in batches]
    assert len(first) == len(batches) > 0
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2)
        assert torch.equal(y1, y2)


def test_augment_is_the_identity_without_on_device_augmentation(data_and_cfg) -> None:
    data, cfg = data_and_cfg
    off = cfg.model_copy(
        update={"augmentation": cfg.augmentation.model_copy(update={"enabled": False})}
    )
    batches = build_train_batches(data, off, 4, 0, seed=0)
    assert augmentation_site(batches.augmentation) is None
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    assert batches.augment(x, y) == (x, y)
