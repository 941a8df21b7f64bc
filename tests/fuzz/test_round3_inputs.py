"""Bad inputs of hardening round 3 (issue 22) that reached the user as tracebacks: each is now
one ``error:`` line (exit 2) naming what was wrong. Each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from medseg.errors import CheckpointError, ConfigError
from tests.data.data_factory import RAS, nnunet_dataset, save
from tests.io.test_corrupt_headers import _cli_error  # one error line, exit 2, no traceback


@pytest.mark.parametrize("spec", ["", ",", "1,,2", "=1", "wt="])
def test_evaluate_labels_without_a_value(tmp_path, capsys, spec):
    mask = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.uint8), RAS), mask)
    line = _cli_error(["evaluate", mask, mask, "--labels", spec], capsys)
    assert f"--labels {spec!r}" in line
    assert "expected label values" in line


def _onnx_with_metadata(path: Path, text: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 4, 4])],
    )
    model = helper.make_model(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = "medseg", text
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("text", ['{"model": {"name": "unet", ', "[1, 2]", "\x00garbage"])
def test_onnx_with_damaged_metadata_is_a_checkpoint_error(tmp_path, capsys, text):
    from medseg.inference.export import read_export_metadata

    path = _onnx_with_metadata(tmp_path / "model.onnx", text)
    with pytest.raises(CheckpointError, match="metadata") as err:
        read_export_metadata(path)
    assert str(path) in str(err.value)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.float32), RAS), scan)
    line = _cli_error(["predict", scan, "-o", tmp_path / "out", "--model", path], capsys)
    assert str(path) in line


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", "4294967296"])
def test_seed_outside_what_numpy_and_torch_accept_is_a_config_error(seed):
    from medseg.engine.config import build_config, parse_overrides

    with pytest.raises(ConfigError, match=r"seed: .*in --set seed"):
        build_config({"data": {"dataset": "x"}}, parse_overrides([f"seed={seed}"]), "t.yaml")
    assert build_config({"data": {"dataset": "x"}}, {"seed": 2**32 - 1}, "t.yaml").seed == 2**32 - 1
    with pytest.raises(ConfigError, match=r"data\.split_seed: .*in --set data\.split_seed"):
        build_config({"data": {"dataset": "x"}}, {"data.split_seed": -1}, "t.yaml")


def _train_config(tmp_path: Path, dataset: Path) -> Path:
    raw = {
        "name": "tiny",
        "device": "cpu",
        "data": {
            "dataset": str(dataset),
            "cache_dir": str(tmp_path / "cache"),
            "crop_size": [16, 16],
            "num_workers": 0,
            "preprocessing": {"modality": "ct"},
        },
        "model": {"name": "unet", "options": {"depth": 2, "base_channels": 4}},
        "train": {"epochs": 1, "batch_size": 2},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_with_a_label_of_another_shape(tmp_path, capsys):
    dataset = nnunet_dataset(tmp_path / "ds", n_cases=3, channels=1, shape=(20, 18, 6))
    for i in range(3):  # every case, so a training case has it whatever the split
        save(np.ones((20, 18, 5), np.uint8), RAS, dataset / "labelsTr" / f"case{i:03d}.nii.gz")
    cfg = _train_config(tmp_path, dataset)
    line = _cli_error(["train", cfg, "--output", tmp_path / "run"], capsys)
    assert "error: case case00" in line
    assert "(20, 18, 5)" in line
    assert "(20, 18, 6)" in line
    line = _cli_error(
        ["train", cfg, "--output", tmp_path / "run2", "--set", "seed=99999999999999999999"], capsys
    )
    assert "seed" in line
