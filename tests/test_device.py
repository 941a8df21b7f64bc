"""The one device policy (medseg.device): names, missing GPUs, AMP, channels_last, torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medseg.cli.main import main
from medseg.device import (
    DistInfo,
    check_device_name,
    cpu_has_native_bf16,
    process_group,
    resolve_amp_dtype,
    resolve_device,
    use_channels_last,
)
from medseg.errors import ConfigError

NO_GPU = not torch.cuda.is_available()


def test_names_are_normalised_and_unknown_ones_refused() -> None:
    assert check_device_name(" CUDA:1 ") == "cuda:1"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device 'gpu0': unknown device; expected") as err:
        resolve_device("gpu0")
    assert err.value.param == "device"
    assert err.value.for_cli() == "--device" + str(err.value)[len("device") :]


def test_auto_is_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", DistInfo(1, 2, 1)) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_missing_gpu_is_an_error_never_the_cpu(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ConfigError, match="no CUDA GPU is available on this machine; use cpu or auto"
    ):
        resolve_device(name)


def test_gpu_index_beyond_those_present_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "Test GPU")
    with pytest.raises(ConfigError, match=r"has 1 CUDA GPU\(s\): cuda:0 \(Test GPU\); pick one"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_torchrun_rank_takes_its_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert resolve_device("auto", DistInfo(3, 4, 3)) == torch.device("cuda", 1)
    assert resolve_device("cuda", DistInfo(0, 4, 0)) == torch.device("cuda", 0)
    assert chosen == [torch.device("cuda", 1), torch.device("cuda", 0)]


def test_amp_and_channels_last_on_cuda_and_for_cpu_training_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp_dtype("auto", cpu) is None  # CPU inference stays fp32
    assert resolve_amp_dtype(torch.bfloat16, cpu) is None
    assert resolve_amp_dtype("bf16", cuda) is torch.bfloat16
    assert resolve_amp_dtype(False, cuda) is None
    assert not use_channels_last(True, cpu)
    assert use_channels_last(True, cpu, training=True)
    assert not use_channels_last(False, cpu, training=True)
    assert use_channels_last(True, cuda)
    assert not use_channels_last(False, cuda)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_training_uses_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    assert cpu_has_native_bf16() is native
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if native else None
    for amp in ("auto", True, "bf16", torch.bfloat16):
        assert resolve_amp_dtype(amp, cpu, training=True) is expected
    for amp in ("off", False, "fp16", None):  # no fast fp16 kernels on a CPU
        assert resolve_amp_dtype(amp, cpu, training=True) is None


def test_single_process_group_is_a_no_op() -> None:
    with process_group(DistInfo(), torch.device("cpu")):
        assert not torch.distributed.is_initialized()


@pytest.mark.skipif(not NO_GPU, reason="checks the error on a machine without CUDA")
def test_train_on_a_missing_gpu_exits_2_with_one_line(
    tiny_dataset_for_cli: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_dataset_for_cli))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(path), "--output", str(tmp_path / "run"), "--device", "cuda:1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --device 'cuda:1': no CUDA GPU is available on this machine; use cpu or auto "
        "(valid values: auto|cpu|cuda|cuda:N|mps)"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not NO_GPU, reason="checks the error on a machine without CUDA")
def test_config_device_cuda_1_is_refused_too(
    tiny_dataset_for_cli: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**tiny_dataset_for_cli, "device": "cuda:1"}))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(path), "--output", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: config key device 'cuda:1': no CUDA GPU is available")


def test_unknown_config_device_is_a_config_error(tiny_dataset_for_cli: dict[str, Any]) -> None:
    from medseg.engine.config import build_config

    with pytest.raises(ConfigError, match="device"):
        build_config({**tiny_dataset_for_cli, "device": "tpu"})


@pytest.fixture
def tiny_dataset_for_cli(tmp_path: Path) -> dict[str, Any]:
    """A minimal training config whose dataset is never read (the device fails first)."""
    return {"name": "x", "data": {"dataset": str(tmp_path / "no-dataset-needed")}}


def test_torchrun_variables_are_read_by_the_cli_only() -> None:
    """``DistInfo.from_env()`` is called in ``medseg/cli`` only; the library takes ``info``."""
    import ast

    package = Path(__file__).resolve().parents[1] / "medseg"
    callers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "from_env"
    )
    assert callers
    assert all(c.startswith("cli/") for c in callers), callers
