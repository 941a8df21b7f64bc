"""Pretrained encoders come from local files only, and the first conv is adapted correctly.

The "ImageNet" files here are state_dicts of randomly initialised torchvision networks saved
to tmp_path: the loading and adaptation logic is what is tested, no download ever happens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from medseg.errors import CheckpointError, ConfigError
from medseg.models import build_model

RESNET50_FILE = "resnet50-0676ba61.pth"


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("medseg tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def resnet50_state(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / RESNET50_FILE
    torch.save(state, path)
    return path, state


def _adapted(rgb: torch.Tensor, in_channels: int) -> torch.Tensor:
    return rgb.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * 3.0 / in_channels


def test_deeplabv3_loads_file_and_averages_rgb_kernel(resnet50_state):
    path, state = resnet50_state
    model = build_model("deeplabv3_resnet50", 2, 3, pretrained=path)
    backbone = model.model.backbone
    torch.testing.assert_close(backbone.conv1.weight, _adapted(state["conv1.weight"], 2))
    assert backbone.conv1.in_channels == 2
    torch.testing.assert_close(backbone.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])
    torch.testing.assert_close(backbone.bn1.running_var, state["bn1.running_var"])
    assert model(torch.randn(2, 2, 33, 45)).shape == (2, 3, 33, 45)


def test_deeplabv3plus_single_channel_sums_rgb_kernel(resnet50_state):
    path, state = resnet50_state
    model = build_model("deeplabv3plus_resnet50", 1, 2, pretrained=str(path), output_stride=8)
    conv1 = model.backbone.conv1
    # in_channels=1: mean * 3 == the sum of the RGB kernels (a grey image looks like RGB)
    torch.testing.assert_close(conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(
        model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"]
    )


@pytest.mark.slow
def test_three_channels_keep_the_pretrained_kernel(resnet50_state):
    path, state = resnet50_state
    model = build_model("fcn_resnet50", 3, 2, pretrained=path)
    torch.testing.assert_close(model.model.backbone.conv1.weight, state["conv1.weight"])


@pytest.mark.slow
def test_hub_cache_lookup_by_name_and_true(resnet50_state, tmp_path, monkeypatch):
    path, state = resnet50_state
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / RESNET50_FILE).symlink_to(path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.chdir(tmp_path)  # a bare name must not be found in the working directory only
    for value in (True, RESNET50_FILE):
        model = build_model("deeplabv3plus_resnet50", 6, 2, pretrained=value)
        torch.testing.assert_close(model.backbone.conv1.weight, _adapted(state["conv1.weight"], 6))


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError) as err:
        build_model("deeplabv3_resnet50", 1, 2, pretrained=True)
    message = str(err.value)
    assert "cannot download here" in message
    assert RESNET50_FILE in message
    assert str(tmp_path / "empty" / "hub" / "checkpoints") in message
    with pytest.raises(CheckpointError, match="not found"):
        build_model("deeplabv3plus_resnet50", 1, 2, pretrained=tmp_path / "nope.pth")


def test_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not match") as err:
        build_model("deeplabv3_resnet50", 1, 2, pretrained=path)
    assert str(path) in str(err.value)


def test_unreadable_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"broken\.pth"):
        build_model("fcn_resnet50", 1, 2, pretrained=path)


@pytest.mark.slow
def test_mobilenet_backbone_from_classifier_state_dict(tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    path = tmp_path / "mobilenet_v3_large-8738ca79.pth"
    torch.save(state, path)
    model = build_model("deeplabv3_mobilenet_v3_large", 4, 2, pretrained=path)
    first = model.model.backbone.get_submodule("0.0")
    torch.testing.assert_close(first.weight, _adapted(state["features.0.0.weight"], 4))
    torch.testing.assert_close(
        model.model.backbone.get_submodule("16.0").weight, state["features.16.0.weight"]
    )


def test_invalid_pretrained_value_is_a_config_error():
    with pytest.raises(ConfigError, match="pretrained=3"):
        build_model("deeplabv3_resnet50", 1, 2, pretrained=3)
