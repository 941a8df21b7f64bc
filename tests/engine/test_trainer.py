"""Trainer: run-folder artefacts, checkpoint contents, exact resume, best checkpoint, early stop."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medseg import RESEARCH_USE_NOTICE
from medseg.checkpoint import load_checkpoint
from medseg.engine.config import TrainConfig, build_config
from medseg.engine.trainer import Trainer, train
from medseg.engine.validation import ValidationResult
from medseg.errors import CheckpointError, OverwriteError
from medseg.models import build_model

CPU = torch.device("cpu")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def one_epoch_run(tiny_dataset: Path, make_tiny_raw, tmp_path_factory: pytest.TempPathFactory):
    """One tiny epoch trained once for the artefact, checkpoint and refusal tests."""
    base = tmp_path_factory.mktemp("one_epoch")
    cfg = build_config(make_tiny_raw(tiny_dataset, base / "cache"))
    return cfg, train(cfg, output=base / "run", progress=False)


def test_one_epoch_writes_every_artefact(one_epoch_run) -> None:
    cfg, result = one_epoch_run
    run = result.run_dir
    assert result.epochs_completed == 1
    assert not result.interrupted
    assert TrainConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text())) == cfg
    rows = _read_csv(run / "metrics.csv")
    assert len(rows) == 1
    assert {"train_loss", "lr", "val_dice_lesion", "val_dice_rim", "val_mean_dice"} <= set(rows[0])
    assert np.isfinite(float(rows[0]["train_loss"]))
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    assert events[0].stat().st_size > 0
    for png in (run / "curves.png", run / "overlays" / "epoch_001.png"):
        with Image.open(png) as img:
            assert img.size[0] > 300
            assert img.size[1] > 200
            assert img.info.get("Disclaimer") == RESEARCH_USE_NOTICE
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "checkpoints" / "best.pt").is_file()
    assert not list(run.rglob("*.tmp"))
    assert not list(run.rglob(".*.pt*"))


def test_checkpoint_is_complete_and_loads_safely(one_epoch_run) -> None:
    path = one_epoch_run[1].run_dir / "checkpoints" / "last.pt"
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary pickles
    expected = {
        "format_version",
        "medseg_version",
        "model",
        "state_dict",
        "preprocessing",
        "sampling",
        "class_names",
        "channel_names",
        "config",
        "epoch",
        "metrics",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "trainer",
    }
    assert expected <= set(raw)
    ckpt = load_checkpoint(path)
    assert ckpt["model"] == {
        "name": "unet",
        "in_channels": 1,
        "num_classes": 3,
        "options": {"depth": 2, "base_channels": 4},
    }
    assert ckpt["class_names"] == ["background", "lesion", "rim"]
    assert ckpt["channel_names"] == ["MRI"]
    assert ckpt["sampling"] == {"axis": 2, "axes": [2], "context": 0}
    assert ckpt["epoch"] == 1
    # MR is z-scored per case, so no dataset statistics are fitted (CT fits and records them)
    assert ckpt["preprocessing"]["modality"] == "mr"
    assert ckpt["preprocessing"]["intensity_stats"] is None
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"])
    model = build_model(ckpt["model"]["name"], 1, 3, **ckpt["model"]["options"])
    model.load_state_dict(ckpt["state_dict"])  # plain keys: no "module." / "_orig_mod." prefix
    assert "val_mean_dice" in ckpt["metrics"]


@pytest.mark.slow
def test_resume_continues_exactly(tiny_raw: dict[str, Any], tmp_path: Path) -> None:
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 2}}
    # real augmentation too: the batched (on-device) path, re-seeded per (seed, epoch, rank)
    raw["data"] = {**raw["data"], "augmentation": {"enabled": True, "backend": "batched"}}
    cfg = build_config(raw)
    straight = Trainer(cfg, tmp_path / "a", CPU, progress=False)
    assert straight.batches.mode == "resident"  # batched augmentation: device-resident data
    straight.fit()
    first = Trainer(cfg, tmp_path / "b", CPU, progress=False)
    assert first.fit(max_epochs=1).epochs_completed == 1
    resumed = Trainer(
        cfg, tmp_path / "b", CPU, resume_from=tmp_path / "b/checkpoints/last.pt", progress=False
    )
    assert resumed.start_epoch == 1
    # a resumed run keeps the split its checkpoint recorded
    assert resumed.data.split.source == "recorded"
    assert (resumed.data.split.train, resumed.data.split.val) == (
        first.data.split.train,
        first.data.split.val,
    )
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    rows_a, rows_b = _read_csv(tmp_path / "a/metrics.csv"), _read_csv(tmp_path / "b/metrics.csv")
    assert [r["epoch"] for r in rows_b] == ["1", "2"]
    np.testing.assert_allclose(
        [float(r["train_loss"]) for r in rows_a],
        [float(r["train_loss"]) for r in rows_b],
        rtol=1e-5,
    )
    # and the resumed run differs from a fresh second epoch (the test can fail)
    assert not torch.equal(first.model.state_dict()[next(iter(a))], a[next(iter(a))])


def test_run_folder_and_checkpoint_record_the_stable_split(one_epoch_run) -> None:
    cfg, result = one_epoch_run
    recorded = json.loads((result.run_dir / "split.json").read_text())
    plan = json.loads((Path(cfg.data.cache_dir) / "splits_holdout.json").read_text())
    assert recorded["source"] == "split file"
    assert recorded["val"] == plan["folds"][0]["val"]
    assert len(recorded["val"]) == 1  # val_fraction 0.25 of 4 cases
    assert sorted(recorded["train"] + recorded["val"]) == [f"case_{i:03d}" for i in range(4)]
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")
    assert ckpt["data_split"] == recorded


def test_best_checkpoint_follows_validation_dice(
    tiny_raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 3, "selection_ema": 0.0}}
    raw["data"] = {**raw["data"], "samples_per_epoch": 8}
    cfg = build_config(raw)
    trainer = Trainer(cfg, tmp_path / "run", CPU, progress=False)
    _script_validation(monkeypatch, trainer, [0.2, 0.5, 0.4])
    result = trainer.fit()
    assert (result.best_epoch, result.best_metric) == (2, 0.5)
    best = load_checkpoint(tmp_path / "run/checkpoints/best.pt")
    last = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert best["epoch"] == 2
    assert best["metrics"]["val_mean_dice"] == 0.5
    assert last["epoch"] == 3
    assert last["metrics"]["val_mean_dice"] == 0.4


def _script_validation(monkeypatch: pytest.MonkeyPatch, trainer: Trainer, dice: list[float]):
    scripted = iter(dice)

    def fake_validate() -> ValidationResult:
        d = next(scripted)
        return ValidationResult(["background", "lesion", "rim"], np.array([d, d]), num_cases=1)

    monkeypatch.setattr(trainer, "validate", fake_validate)


def test_selection_follows_the_smoothed_dice(
    tiny_raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one lucky epoch (0.9) must not win over a consistently good end of the run
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 4, "selection_ema": 0.5}}
    raw["data"] = {**raw["data"], "samples_per_epoch": 8}
    trainer = Trainer(build_config(raw), tmp_path / "run", CPU, progress=False)
    _script_validation(monkeypatch, trainer, [0.2, 0.9, 0.3, 0.8])
    result = trainer.fit()
    # ema: 0.2, 0.55, 0.425, 0.6125 -> epoch 4, although the raw Dice peaked at epoch 2
    assert result.best_epoch == 4
    assert result.best_metric == pytest.approx(0.6125)
    rows = _read_csv(tmp_path / "run/metrics.csv")
    assert [round(float(r["val_mean_dice_ema"]), 4) for r in rows] == [0.2, 0.55, 0.425, 0.6125]
    assert {r["selected_on"] for r in rows} == {"val_mean_dice_ema"}


def test_auto_patience_is_proportionate_to_the_schedule(tiny_raw: dict[str, Any]) -> None:
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 30}}
    assert build_config(raw).train.patience() == 15
    raw["train"]["val_every"] = 5
    assert build_config(raw).train.patience() == 3
    raw["train"] = {"epochs": 30, "early_stopping_patience": None}
    assert build_config({**tiny_raw, **raw}).train.patience() is None


@pytest.mark.slow
def test_early_stopping_after_patience(tiny_raw: dict[str, Any], tmp_path: Path) -> None:
    raw = {**tiny_raw, "optim": {"lr": 1e-12}, "schedule": {"name": "constant"}}
    raw["train"] = {**raw["train"], "epochs": 5, "early_stopping_patience": 1, "selection_ema": 0}
    result = train(build_config(raw), output=tmp_path / "run", progress=False)
    assert result.stopped_early
    assert result.epochs_completed == 2  # epoch 2 did not beat epoch 1 (weights barely move)
    assert result.best_epoch == 1
    assert len(_read_csv(tmp_path / "run/metrics.csv")) == 2


def test_existing_run_refused_and_wrong_model_resume(one_epoch_run) -> None:
    cfg, result = one_epoch_run
    run = result.run_dir
    with pytest.raises(OverwriteError, match="--resume"):
        train(cfg, output=run, progress=False)
    other = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"name": "basic_unet", "options": {}})}
    )
    with pytest.raises(CheckpointError, match="'unet' model"):
        train(other, resume=run, progress=False)


@pytest.mark.gpu
def test_cuda_amp_channels_last_run(tiny_raw: dict[str, Any], tmp_path: Path) -> None:
    raw = {**tiny_raw, "device": "cuda"}
    raw["train"] = {**raw["train"], "amp": "auto", "channels_last": True}
    trainer = Trainer(build_config(raw), tmp_path / "run", torch.device("cuda"), progress=False)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert trainer.amp_dtype == expected
    assert trainer.scaler.is_enabled() == (expected == torch.float16)
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert all(t.device.type == "cpu" for t in ckpt["state_dict"].values())
    assert np.isfinite(ckpt["metrics"]["train_loss"])


def _fake_trainer(loss_value: float) -> Any:
    """The attributes ``Trainer.train_step`` reads before its non-finite check."""
    from types import SimpleNamespace

    return SimpleNamespace(
        device=CPU,
        batches=SimpleNamespace(augment=lambda x, y: (x, y)),
        channels_last=False,
        amp_dtype=None,
        train_model=lambda x: x,
        loss_fn=lambda logits, y: torch.tensor(loss_value),
        global_step=7,
    )


def _batch() -> dict[str, torch.Tensor]:
    return {"image": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 1, 4, 4)}


def test_non_finite_loss_is_voted_across_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN on another DDP rank stops this rank too (else it would hang in all-reduce)."""
    import medseg.engine.trainer as trainer_mod

    votes: list[bool] = []

    def other_rank_has_nan(flag: bool, device: torch.device) -> bool:
        votes.append(flag)
        return True

    monkeypatch.setattr(trainer_mod, "any_rank", other_rank_has_nan)
    with pytest.raises(FloatingPointError, match="another rank"):
        Trainer.train_step(_fake_trainer(0.5), _batch())
    assert votes == [False]


def test_non_finite_loss_raises_single_process() -> None:
    with pytest.raises(FloatingPointError, match="became nan at step 7"):
        Trainer.train_step(_fake_trainer(float("nan")), _batch())


def test_init_from_starts_from_the_checkpoint_weights(one_epoch_run, tmp_path: Path) -> None:
    cfg, result = one_epoch_run
    best = result.run_dir / "checkpoints" / "best.pt"
    weights = load_checkpoint(best)["state_dict"]
    tuned = cfg.model_copy(update={"train": cfg.train.model_copy(update={"init_from": str(best)})})
    trainer = Trainer(tuned, tmp_path / "tune", CPU, progress=False)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    # the run folder alone works too (its checkpoints/best.pt)
    tuned = tuned.model_copy(
        update={"train": tuned.train.model_copy(update={"init_from": str(result.run_dir)})}
    )
    assert Trainer(tuned, tmp_path / "tune2", CPU, progress=False).model is not None
    # a network of another shape cannot be a starting point
    other = tuned.model_copy(
        update={
            "model": tuned.model.model_copy(update={"options": {"depth": 1, "base_channels": 4}})
        }
    )
    with pytest.raises(CheckpointError, match="init_from"):
        Trainer(other, tmp_path / "tune3", CPU, progress=False)
