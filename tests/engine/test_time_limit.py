"""``train.time_limit_minutes``: a run that would overrun stops after a validated, saved epoch."""

from __future__ import annotations

from pathlib import Path

from medseg.checkpoint import load_checkpoint
from medseg.engine.config import build_config
from medseg.engine.trainer import train


def test_time_limit_stops_after_a_validated_epoch(tiny_raw, tmp_path: Path) -> None:
    tiny_raw["train"].update(epochs=5, val_every=3, time_limit_minutes=1e-4)
    result = train(build_config(tiny_raw), output=tmp_path / "run", progress=False)
    assert result.epochs_completed == 1
    assert result.stopped_early
    # the cut epoch is validated and saved, although val_every would have skipped it
    assert "val_mean_dice" in result.history[-1]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["epoch"] == 1


def test_no_time_limit_runs_every_epoch(tiny_raw, tmp_path: Path) -> None:
    tiny_raw["train"].update(epochs=2)
    result = train(build_config(tiny_raw), output=tmp_path / "run", progress=False)
    assert result.epochs_completed == 2
    assert not result.stopped_early


def test_a_slow_run_is_shortened_and_its_schedule_still_anneals(
    tiny_raw, tmp_path: Path, monkeypatch
) -> None:
    import types

    import medseg.engine.trainer as trainer_module

    clock = {"t": 0.0}

    def fake_clock() -> float:  # every reading is 5 s later: epochs "take" tens of seconds
        clock["t"] += 5.0
        return clock["t"]

    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake_clock))
    tiny_raw["train"].update(epochs=8, time_limit_minutes=1.0)
    tiny_raw["optim"] = {"lr": 0.01}
    result = train(build_config(tiny_raw), output=tmp_path / "run", progress=False)
    assert 1 < result.epochs_completed < 8
    assert result.stopped_early
    # the re-sized poly schedule ends near zero at the new last epoch; the 8-epoch one would
    # still be at (1 - epochs / 8) ** 0.9 of the base rate
    unshortened = (1 - result.epochs_completed / 8) ** 0.9 * 0.01
    assert result.history[-1]["lr"] < 0.5 * unshortened


def test_fill_time_limit_grows_a_fast_run_and_anneals_at_the_new_end(
    tiny_raw, tmp_path: Path, monkeypatch
) -> None:
    import types

    import medseg.engine.trainer as trainer_module

    clock = {"t": 0.0}

    def fake_clock() -> float:  # every reading is 0.1 s later: epochs "take" well under 1 s
        clock["t"] += 0.1
        return clock["t"]

    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake_clock))
    tiny_raw["train"].update(epochs=3, time_limit_minutes=10.0, fill_time_limit=True)
    tiny_raw["optim"] = {"lr": 0.01}
    result = train(build_config(tiny_raw), output=tmp_path / "run", progress=False)
    # ten minutes hold far more epochs: the run grows to its cap of 4x the configured 3,
    # decided after two epochs (a whole validation cycle measured)
    assert result.epochs_completed == trainer_module.FILL_MAX_FACTOR * 3
    assert not result.stopped_early
    # the schedule was re-sized: the last epoch runs near zero, not at the 2-epoch end's rate
    assert result.history[-1]["lr"] < 0.2 * 0.01
    # epoch 3 runs on the grown schedule, (1 - 2/12) ** 0.9 = 0.85 of the base rate, not on
    # the 3-epoch one's (1 - 2/3) ** 0.9 = 0.37
    assert result.history[2]["lr"] > 0.6 * 0.01
    # without fill_time_limit the same run keeps its configured epochs
    tiny_raw["train"]["fill_time_limit"] = False
    again = train(build_config(tiny_raw), output=tmp_path / "run2", progress=False)
    assert again.epochs_completed == 3
