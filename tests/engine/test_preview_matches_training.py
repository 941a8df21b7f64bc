"""``medseg preview-data`` shows exactly the samples a training step receives (same order,
crops, augmentation and seed): one data pipeline for both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from medseg.cli.main import main
from medseg.data.pipeline import prepare_data, training_samples
from medseg.engine.config import build_config
from medseg.engine.trainer import Trainer

CPU = torch.device("cpu")


class _Recorder(nn.Module):
    """Passes batches to the real model and keeps a copy of each input."""

    def __init__(self, model: nn.Module, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.model, self.seen = model, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_preview_samples_equal_the_training_step_inputs(
    tiny_raw: dict[str, Any], tmp_path: Path, backend: str
) -> None:
    raw = {**tiny_raw, "data": {**tiny_raw["data"], "augmentation": {"backend": backend}}}
    raw["data"]["foreground_ratio"] = 0.5
    cfg = build_config(raw)
    trainer = Trainer(cfg, tmp_path / "run", CPU, progress=False)
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    trainer.train_model = _Recorder(trainer.train_model, images)
    loss_fn = trainer.loss_fn
    trainer.loss_fn = lambda logits, y: (labels.append(y.clone()), loss_fn(logits, y))[1]
    trainer.fit(max_epochs=1)
    seen_image, seen_label = torch.cat(images), torch.cat(labels)
    assert len(seen_image) == 16  # samples_per_epoch

    samples = training_samples(
        prepare_data(cfg.data, progress=False), cfg.data, 16, cfg.seed, cfg.train.batch_size
    )
    np.testing.assert_array_equal(torch.stack([s["image"] for s in samples]), seen_image)
    np.testing.assert_array_equal(torch.stack([s["label"] for s in samples]), seen_label)
    # a different seed draws other samples: the comparison above is not vacuous
    other = training_samples(prepare_data(cfg.data, progress=False), cfg.data, 16, 99, 4)
    assert not torch.equal(torch.stack([s["image"] for s in other]), seen_image)


def test_preview_data_cli_takes_seed_and_batch_size_from_the_training_config(
    tiny_raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {**tiny_raw, "data": {**tiny_raw["data"], "augmentation": {"backend": "batched"}}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    drawn: list[tuple[int, int]] = []
    from medseg.data import pipeline

    real = pipeline.training_samples

    def spy(data, cfg, n, seed, batch_size):
        drawn.append((seed, batch_size))
        return real(data, cfg, n, seed, batch_size)

    monkeypatch.setattr(pipeline, "training_samples", spy)
    out = tmp_path / "p.png"
    main(["preview-data", raw["data"]["dataset"], "-o", str(out), "-c", str(path), "--n", "4"])
    assert drawn == [(raw["seed"], raw["train"]["batch_size"])]
    assert matplotlib.image.imread(out).ndim == 3
