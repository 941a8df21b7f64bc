"""TorchScript / ONNX export: logit parity, embedded metadata, same masks as the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg import RESEARCH_USE_NOTICE
from medseg.checkpoint import ModelRecord, load_checkpoint
from medseg.errors import CheckpointError, OverwriteError
from medseg.inference import Predictor
from medseg.inference.export import check_parity, export_model, read_export_metadata
from medseg.models import build_model
from tests.inference.infer_factory import blob_volume, run_cli


@pytest.mark.parametrize(("fmt", "suffix"), [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_export_parity_metadata_and_masks(fmt, suffix, tiny_checkpoint, tmp_path):
    out = tmp_path / f"model{suffix}"
    meta = export_model(tiny_checkpoint, out, fmt)
    assert meta["max_abs_diff"] < 1e-4
    embedded = read_export_metadata(out)
    payload = load_checkpoint(tiny_checkpoint)
    assert embedded["preprocessing"] == payload["preprocessing"]
    assert embedded["class_names"] == payload["class_names"]
    # a checkpoint from medseg 0.1 has no "axes": the export records them explicitly
    assert embedded["sampling"] == {**payload["sampling"], "axes": [payload["sampling"]["axis"]]}
    assert ModelRecord.from_payload(embedded) == ModelRecord.from_payload(payload)
    assert len(embedded["checkpoint_sha256"]) == 64
    # dynamic batch and H/W: a batch size and odd size never seen at export time
    spec = payload["model"]
    model = build_model(spec["name"], spec["in_channels"], spec["num_classes"], **spec["options"])
    model.load_state_dict(payload["state_dict"])
    assert check_parity(model, out, torch.randn(5, spec["in_channels"], 37, 51)) < 1e-4
    vol = blob_volume(shape=(45, 38, 9))
    reference = Predictor.load(tiny_checkpoint, device="cpu").predict(vol)
    exported = Predictor.load(out, device="cpu").predict(vol)
    assert exported.settings["model_format"] == fmt
    np.testing.assert_array_equal(exported.label.array, reference.label.array)


def test_export_cli_and_errors(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert run_cli(["export", "--model", tiny_checkpoint, "--format", "onnx", "-o", out]) == 0
    printed = capsys.readouterr().out
    assert "max |logit difference|" in printed
    assert printed.rstrip().endswith(RESEARCH_USE_NOTICE)
    assert run_cli(["export", "--model", tiny_checkpoint, "--format", "onnx", "-o", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli(["export", "--model", tiny_checkpoint, "--format", "tflite", "-o", out]) == 2
    assert "torchscript or onnx" in capsys.readouterr().err
    with pytest.raises(OverwriteError):
        export_model(tiny_checkpoint, tiny_checkpoint, "onnx", overwrite=True)


def test_export_without_metadata_is_rejected(tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(
        torch.nn.Conv2d(1, 2, 1), (torch.randn(1, 1, 4, 4),), str(plain), dynamo=False
    )
    with pytest.raises(CheckpointError, match="no medseg metadata"):
        Predictor.load(plain)


@pytest.mark.slow
def test_onnx_runtime_probabilities_match_pytorch(checkpoint_factory, tmp_path):
    """An exported ONNX model runs on ONNX Runtime by default (faster on CPU, see
    docs/performance.md) and gives PyTorch's probabilities, TTA included."""
    ckpt = checkpoint_factory(channel_names=("flair", "t1c"), context=1, seed=3)
    out = tmp_path / "model.onnx"
    export_model(ckpt, out, "onnx")
    vol = blob_volume(shape=(33, 29, 7))
    channels = [vol, vol.with_array(vol.array[::-1].copy())]
    for tta in (False, True):
        reference = Predictor.load(ckpt, device="cpu", tta=tta, batch_size=3)
        onnx = Predictor.load(out, device="cpu", tta=tta, batch_size=3)
        assert onnx.settings()["backend"] == "onnxruntime"
        ours = onnx.predict(channels, return_probabilities=True)
        theirs = reference.predict(channels, return_probabilities=True)
        np.testing.assert_allclose(ours.probabilities, theirs.probabilities, atol=1e-5)
        np.testing.assert_array_equal(ours.label.array, theirs.label.array)
