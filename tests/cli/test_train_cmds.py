"""``medseg train``: end to end through the CLI, config errors (exit 2), SIGTERM handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medseg.cli.main import main
from tests.data.data_factory import write_tiny_dataset
from tests.engine.engine_factory import tiny_raw_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("cli") / "Dataset002_Cli")


def _config(tmp_path: Path, dataset: Path, **train: Any) -> Path:
    raw = tiny_raw_config(dataset, tmp_path / "cache", **train)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_end_to_end_and_resume(tmp_path: Path, dataset: Path, capsys) -> None:
    cfg = _config(tmp_path, dataset)
    run = tmp_path / "run"
    main(["train", str(cfg), "--output", str(run), "--set", "train.epochs=1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert f"run folder: {run}" in out
    assert "best validation mean Dice (per volume, 3D)" in out
    assert "research use only" in out.lower()
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == 1
    # --resume alone continues the --output run; epochs raised to 2 with --set
    main(["train", str(cfg), "--output", str(run), "--resume", "--set", "train.epochs=2"])
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == 2
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def _exit_code(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_misspelt_key_in_file_exits_2(tmp_path: Path, dataset: Path, capsys) -> None:
    cfg = _config(tmp_path, dataset)
    raw = yaml.safe_load(cfg.read_text())
    raw["optim"]["learning_rate"] = 0.1
    cfg.write_text(yaml.safe_dump(raw))
    code, err = _exit_code(["train", str(cfg), "--output", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert "optim.learning_rate" in err
    assert "valid keys here: lr, momentum, name, nesterov, weight_decay" in err
    assert not (tmp_path / "r").exists()


def test_misspelt_set_exits_2(tmp_path: Path, dataset: Path, capsys) -> None:
    cfg = _config(tmp_path, dataset)
    code, err = _exit_code(["train", str(cfg), "--set", "train.epoch=1"], capsys)
    assert code == 2
    assert "--set train.epoch" in err
    assert "did you mean 'train.epochs'" in err


def test_resume_without_run_exits_2(tmp_path: Path, dataset: Path, capsys) -> None:
    cfg = _config(tmp_path, dataset)
    code, err = _exit_code(["train", str(cfg), "--resume"], capsys)
    assert code == 2
    assert "--output" in err
    code, err = _exit_code(["train", str(cfg), "--resume", str(tmp_path / "none")], capsys)
    assert code == 2
    assert "cannot resume" in err


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint(tmp_path: Path, dataset: Path) -> None:
    cfg = _config(tmp_path, dataset, epochs=500)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg", "train", str(cfg), "--output", str(run)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.csv").exists():  # at least one epoch done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not finish an epoch in 120 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert "--resume" in err
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert 1 <= ckpt["epoch"] < 500
    assert ckpt["trainer"]["epoch_complete"] is False
