"""DDP on CPU: 2 gloo processes launched by torchrun train one run with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medseg.device import DistInfo, shard

REPO = Path(__file__).resolve().parents[2]


def test_dist_info_from_env_and_sharding() -> None:
    info = DistInfo.from_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (1, 3, True, False)
    assert shard(list("abcdefg"), info) == ["b", "e"]
    assert DistInfo.from_env({}) == DistInfo(0, 1, 0)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_raw: dict[str, Any], tmp_path: Path) -> None:
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 2, "batch_size": 2}}
    raw["data"] = {**raw["data"], "cache_dir": str(tmp_path / "cache")}  # built under the barrier
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "medseg",
            "train",
            str(cfg),
            "--output",
            str(run),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # only rank 0 talks
    info = json.loads((run / "distributed.json").read_text())
    assert info["world_size"] == 2
    hashes = info["parameter_sha256_per_rank"]
    assert len(hashes) == 2
    assert hashes[0] == hashes[1]
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    assert ckpt["trainer"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    # each rank saw half the samples: 16 per epoch / (2 ranks * batch 2) = 4 steps per epoch
    assert ckpt["trainer"]["global_step"] == 8
    assert "val_mean_dice" in ckpt["metrics"]


@pytest.mark.slow
def test_data_error_on_rank0_stops_every_rank(tiny_raw: dict[str, Any], tmp_path: Path) -> None:
    """Rank 0 prepares the data first; when that fails, rank 1 must stop with it at once
    instead of waiting out the process-group timeout (30 min)."""
    raw = {**tiny_raw, "data": {**tiny_raw["data"], "cache_dir": str(tmp_path / "cache")}}
    # the labels hold 0, 1, 2: naming only two classes is a data error found while caching
    raw["data"]["preprocessing"] = {"class_names": ["background", "lesion"]}
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         "-m", "medseg", "train", str(cfg), "--output", str(tmp_path / "run"), "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "beyond the 2 classes" in output  # rank 0's own message
    assert "failed on another rank" in output  # rank 1 learnt it from rank 0
    assert output.count("error: ") >= 2  # each rank: one line, exit 2 (torchrun then reports)
