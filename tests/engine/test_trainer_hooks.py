"""The trainer's public epoch hooks (nnU-Net v2's names): a subclass sees them in order,
each with the epoch, and the base hooks keep doing the trainer's own work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.engine.config import build_config
from medseg.engine.trainer import FitResult, Trainer


class _Recording(Trainer):
    calls: list[tuple[Any, ...]]

    def on_train_start(self) -> None:
        self.calls = [("train_start",)]
        super().on_train_start()

    def on_train_epoch_start(self, epoch: int) -> None:
        self.calls.append(("train_epoch_start", epoch))
        super().on_train_epoch_start(epoch)

    def on_train_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        self.calls.append(("train_epoch_end", epoch, sorted(k for k in row if k.startswith("val"))))
        super().on_train_epoch_end(epoch, row)

    def on_validation_epoch_end(self, epoch: int, val: Any, row: dict[str, Any]) -> None:
        self.calls.append(("validation_epoch_end", epoch, "val_mean_dice" in row))
        super().on_validation_epoch_end(epoch, val, row)

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        self.calls.append(("epoch_end", epoch, "val_mean_dice_ema" in row))
        super().on_epoch_end(epoch, row)

    def on_train_end(self, result: FitResult) -> None:
        self.calls.append(("train_end", result.epochs_completed))


def test_subclass_hooks_are_called_in_order_with_the_epoch(
    tiny_raw: dict[str, Any], tmp_path: Path
) -> None:
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 2, "overlays": 0}}
    trainer = _Recording(build_config(raw), tmp_path / "run", torch.device("cpu"), progress=False)
    trainer.epoch_end_hooks.append(lambda t, row: t.calls.append(("hook", row["epoch"])))
    result = trainer.fit()
    per_epoch = [
        [
            ("train_epoch_start", e),
            ("train_epoch_end", e, []),  # before validation: training metrics only
            ("validation_epoch_end", e, True),
            ("epoch_end", e, True),  # the base validation hook did the model selection
            ("hook", e + 1),  # epoch_end_hooks run from the base on_epoch_end
        ]
        for e in (0, 1)
    ]
    assert trainer.calls == [("train_start",), *per_epoch[0], *per_epoch[1], ("train_end", 2)]
    assert 1 <= result.best_epoch <= 2
