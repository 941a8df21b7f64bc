"""Training across nodes (docs/training.md, "Several nodes"): two torchrun "nodes" on
localhost meet through a c10d rendezvous, each with its own preprocessing cache, and train
one run; ranks that prepared different data stop with one message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medseg.data.pipeline import check_ranks_agree, data_digest
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.splits import Split
from medseg.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_with_different_data_are_refused(tmp_path: Path) -> None:
    params = PreprocessingParams()
    same = data_digest(Split(["a", "b"], ["c"], "split file"), params)
    other = data_digest(Split(["a", "c"], ["b"], "split file"), params)
    assert same == data_digest(Split(["b", "a"], ["c"], "recorded"), params)
    check_ranks_agree([same, same], tmp_path)
    with pytest.raises(DatasetError, match=r"rank\(s\) \[1\] prepared a different split"):
        check_ranks_agree([same, other], tmp_path)


@pytest.mark.long
def test_two_nodes_c10d_rendezvous_train_one_run(tiny_raw: dict[str, Any], tmp_path: Path) -> None:
    raw = {**tiny_raw, "train": {**tiny_raw["train"], "epochs": 1, "batch_size": 2}}
    cfg = tmp_path / "multinode.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run, port = tmp_path / "run", _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = []
    for node in range(2):  # the docs' command, with a cache per node
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
               "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=medseg-multinode-test",
               "-m", "medseg", "train", str(cfg), "--output", str(run), "--device", "cpu",
               "--set", f"data.cache_dir={tmp_path / f'cache_node{node}'}"]  # fmt: skip
        nodes.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in nodes]
    for p, (out, err) in zip(nodes, outputs, strict=True):
        assert p.returncode == 0, (out + err)[-3000:]
    assert sum(out.count("run folder:") for out, _ in outputs) == 1  # only rank 0 talks
    info = json.loads((run / "distributed.json").read_text())
    assert info["world_size"] == 2
    assert len(set(info["parameter_sha256_per_rank"])) == 1
    assert [p.name for p in (run / "checkpoints").glob("*.pt")].count("last.pt") == 1
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["trainer"]["world_size"] == 2
    for node in range(2):  # each node built its own cache
        assert any((tmp_path / f"cache_node{node}").iterdir())
