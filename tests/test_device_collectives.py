"""Where the collectives' tensors live: the one NCCL rule in ``medseg.device``."""

from __future__ import annotations

import socket

import pytest
import torch

from medseg import device as device_module
from medseg.device import all_reduce_sum, backend_for


def test_backend_is_nccl_on_cuda_and_gloo_elsewhere() -> None:
    assert backend_for(torch.device("cuda:1")) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("mps")) == "gloo"


def test_sum_runs_where_the_backend_needs_it_and_comes_back(monkeypatch) -> None:
    seen: list[str] = []

    class Group:
        class ReduceOp:
            SUM = "sum"

        def all_reduce(self, tensor, op):
            seen.append(tensor.device.type)
            tensor.mul_(2)  # two ranks holding the same numbers

    monkeypatch.setattr(device_module, "_initialised", lambda: True)
    monkeypatch.setattr(device_module, "_dist", Group)
    out = all_reduce_sum(torch.ones(3, dtype=torch.float64), torch.device("cpu"))
    assert seen == ["cpu"]
    assert out.dtype == torch.float64
    assert out.tolist() == [2.0, 2.0, 2.0]
    assert all_reduce_sum(torch.ones(1)).tolist() == [2.0]  # no device: stays where it is


@pytest.mark.gpu
def test_sum_under_nccl_runs_on_the_gpu_and_returns_to_the_cpu() -> None:
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        out = all_reduce_sum(torch.ones(2, dtype=torch.float64), torch.device("cuda"))
        assert out.device.type == "cpu"
        assert out.tolist() == [1.0, 1.0]
    finally:
        dist.destroy_process_group()
