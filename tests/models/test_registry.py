"""Model lookup and option validation errors a user sees (names, did-you-mean, valid values)."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError, UnknownNameError
from medseg.models import architecture_options, build_model, list_models, model_info


def test_unknown_model_suggests_close_name_and_lists_all():
    with pytest.raises(UnknownNameError) as err:
        build_model("deeplabv3_resnet5", 1, 2)
    message = str(err.value)
    assert "Did you mean 'deeplabv3_resnet50'" in message
    for name in list_models():
        assert name in message
    with pytest.raises(UnknownNameError, match="unet"):
        model_info("unett")


def test_unknown_option_names_valid_options():
    with pytest.raises(ConfigError) as err:
        build_model("unet", 1, 2, dept=3)
    message = str(err.value)
    assert "'dept'" in message
    assert "Did you mean 'depth'" in message
    assert "base_channels (default 32)" in message


@pytest.mark.parametrize(
    ("name", "options", "fragment"),
    [
        ("unet", {"norm": "group"}, "norm='group'"),
        ("unet", {"depth": 0}, "depth=0"),
        ("unet", {"dropout": 1.5}, "dropout=1.5"),
        ("monai_unet", {"channels": [16, 32], "strides": [2, 2]}, "need 1 strides"),
        ("monai_unet", {"channels": "16,32"}, "channels='16,32'"),
        ("basic_unet", {"features": [32, 32, 64]}, "features="),
        ("deeplabv3plus_resnet50", {"output_stride": 4}, "output_stride=4"),
    ],
)
def test_invalid_option_values(name, options, fragment):
    with pytest.raises(ConfigError, match="expected") as err:
        build_model(name, 1, 2, **options)
    assert fragment in str(err.value)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_channel_counts_must_be_positive_ints(bad):
    with pytest.raises(ConfigError, match="positive integer"):
        build_model("unet", bad, 2)
    with pytest.raises(ConfigError, match="positive integer"):
        build_model("unet", 1, bad)


def test_unet_options_change_the_network():
    net = build_model("unet", 3, 2, depth=2, base_channels=8, norm="instance", dropout=0.2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 8
    assert max(c.out_channels for c in convs) == 32  # 8 * 2**depth
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.Dropout2d) for m in net.modules())
    assert net.divisor == 4
    assert net(torch.randn(1, 3, 9, 11)).shape == (1, 2, 9, 11)


def test_unet_without_norm_has_biases():
    net = build_model("unet", 1, 2, depth=1, base_channels=4, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_model_info_divisor_follows_defaults():
    assert model_info("unet")["divisor"] == 16
    assert model_info("monai_unet")["divisor"] == 16
    assert model_info("basic_unet")["divisor"] == 1
    assert model_info("deeplabv3_resnet50")["pretrained"] is True
    assert model_info("unet")["pretrained"] is False


def test_monai_unet_custom_strides_pad_to_their_product():
    net = build_model("monai_unet", 1, 3, channels=[4, 8, 16], strides=[2, 3])
    assert net.divisor == 6
    assert net(torch.randn(1, 1, 13, 17)).shape == (1, 3, 13, 17)


def test_architecture_options_drop_the_pretrained_file(tmp_path):
    options = {"output_stride": 8, "pretrained": str(tmp_path / "gone.pth")}
    kept = architecture_options(options)
    assert kept == {"output_stride": 8}
    # a trained model can be rebuilt (to load its state_dict) without the ImageNet file
    model = build_model("deeplabv3plus_resnet50", 1, 2, **kept)
    assert model(torch.randn(2, 1, 17, 19)).shape == (2, 2, 17, 19)
