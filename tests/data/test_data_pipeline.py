"""From a DataConfig to cached cases and the training loader (medseg.data.pipeline), and the
preview-data command."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch
import yaml

from medseg.cli.main import main
from medseg.data.config import DataConfig
from medseg.data.pipeline import build_train_loader, prepare_data
from tests.data.data_factory import nnunet_dataset


@pytest.fixture
def dataset(tmp_path):
    return nnunet_dataset(tmp_path / "ds", n_cases=5, shape=(40, 36, 12))


def test_build_datasets_resolves_params_and_splits_patients(dataset, tmp_path):
    cfg = DataConfig.model_validate(
        {
            "dataset": str(dataset),
            "cache_dir": str(tmp_path / "cache"),
            "crop_size": [32, 32],
            "context": 1,
            "fold": 1,
            "num_folds": 5,
            "samples_per_epoch": 8,
            "augmentation": {"backend": "batched"},
        }
    )
    data = prepare_data(cfg, progress=False)
    assert data.params.channel_names == ["flair", "t1c"]  # from dataset.json
    assert data.params.class_names == ["background", "oedema", "core"]
    assert len(data.val_ids) == 1
    assert set(data.train_ids).isdisjoint(data.val_ids)
    train, train_loader, _ = build_train_loader(data, cfg, batch_size=4, num_workers=0, seed=0)
    assert train.transform is None  # batched backend: augmentation runs on the device
    batch = next(iter(train_loader))
    assert batch["image"].shape == (4, 6, 32, 32)
    assert batch["label"].dtype == torch.int64
    assert data.val_cases[0].image.shape == (2, 40, 36, 12)  # whole cached volumes


def test_ct_statistics_fitted_on_training_cases_and_cached(dataset, tmp_path):
    cfg = DataConfig.model_validate(
        {
            "dataset": str(dataset),
            "cache_dir": str(tmp_path / "cache"),
            "preprocessing": {"modality": "ct"},
            "val_fraction": 0.4,
        }
    )
    bundle = prepare_data(cfg, progress=False)
    stats = bundle.params.intensity_stats
    assert stats is not None
    assert len(stats) == 2
    assert stats[0]["p_low"] < stats[0]["mean"] < stats[0]["p_high"]
    saved = list((tmp_path / "cache").glob("params-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["intensity_stats"] == stats
    again = prepare_data(cfg, progress=False)
    assert again.params == bundle.params


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_preview_data_writes_png(dataset, tmp_path, capsys, backend):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "dataset": "ignored-overridden-by-argument",
                    "cache_dir": str(tmp_path / "cache"),
                    "crop_size": [32, 32],
                    "foreground_ratio": 0.5,
                    "augmentation": {"backend": backend},
                }
            }
        )
    )
    out = tmp_path / "preview.png"
    main(["preview-data", str(dataset), "--output", str(out), "--config", str(cfg), "--n", "6"])
    assert f"wrote {out}" in capsys.readouterr().out
    image = matplotlib.image.imread(out)
    assert image.ndim == 3
    assert image.shape[0] > 300
    assert image.shape[1] > 600  # 2 rows x 4 columns of tiles
    assert float(np.std(image[..., :3])) > 0.05  # not blank
    assert not list(tmp_path.glob(".preview.png.*"))  # written atomically, no temp left


def test_preview_data_refuses_to_overwrite_its_config(dataset, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "x", "cache_dir": str(tmp_path / "cache")}))
    with pytest.raises(SystemExit) as exc:
        main(["preview-data", str(dataset), "--output", str(cfg), "--config", str(cfg)])
    assert exc.value.code == 2
    assert yaml.safe_load(cfg.read_text())["dataset"] == "x"
