"""One shared test class that every registered model must pass (the medseg model contract).

``[B, in_channels, H, W] -> logits [B, num_classes, H, W]`` for odd sizes and several channel
/ class counts, trainable end to end, deterministic in eval mode, TorchScript where claimed,
channels_last-safe. Inputs are small so the ResNet models stay fast on a CPU.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

from medseg.models import build_model, list_models, model_info

SLOW_MODELS = {"deeplabv3_resnet101"}
ALL = [
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name
    for name in list_models()
]
# (in_channels, num_classes): 1 logit (sigmoid), 4 classes from a 2.5D 2-plane input, 6 planes.
CONFIGS = [(1, 1), (2, 4), (6, 2)]
ODD = (33, 45)  # neither divisible by 2 nor by the U-Nets' 16


@functools.cache
def _cached(name: str) -> torch.nn.Module:
    """The (2 planes, 4 classes) instance shared by the eval-mode tests (builds are slow)."""
    torch.manual_seed(0)
    return build_model(name, 2, 4)


def _first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_registry_lists_the_required_models():
    required = {
        "unet",
        "monai_unet",
        "basic_unet",
        "attention_unet",
        "deeplabv3_resnet50",
        "deeplabv3_resnet101",
        "deeplabv3_mobilenet_v3_large",
        "fcn_resnet50",
        "deeplabv3plus_resnet50",
    }
    assert required <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", ALL)
class TestEveryModel:
    @pytest.mark.parametrize(("in_channels", "num_classes"), CONFIGS)
    def test_forward_backward_odd_size(self, name, in_channels, num_classes):
        torch.manual_seed(0)
        if (in_channels, num_classes) == (2, 4):
            model = _cached(name)
        else:
            model = build_model(name, in_channels, num_classes)
        model.train()
        x = torch.randn(2, in_channels, *ODD)
        out = model(x)
        assert out.shape == (2, num_classes, *ODD)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        first = _first_conv(model)
        assert first.in_channels == in_channels
        assert first.weight.grad is not None
        assert first.weight.grad.abs().sum() > 0, "gradients do not reach the first layer"
        model.zero_grad(set_to_none=True)

    def test_eval_contract(self, name):
        """Input size kept (odd and divisible), deterministic, batch-independent, channels_last."""
        model = _cached(name).eval()
        x = torch.randn(2, 2, *ODD)
        with torch.no_grad():
            assert model(torch.randn(1, 2, 32, 48)).shape == (1, 4, 32, 48)
            first, second = model(x), model(x)
            single = model(x[:1])
            model.to(memory_format=torch.channels_last)
            try:
                last = model(x.contiguous(memory_format=torch.channels_last))
            finally:
                model.to(memory_format=torch.contiguous_format)
        assert first.shape == (2, 4, *ODD)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        # batch statistics must not leak between samples in eval mode
        torch.testing.assert_close(single, first[:1], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(last, first, rtol=1e-3, atol=1e-4)

    def test_torchscript_matches_eager(self, name):
        info = model_info(name)
        if not info["torchscript"]:
            pytest.skip(f"{name} does not claim TorchScript support")
        model = _cached(name).eval()
        x = torch.randn(1, 2, *ODD)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notice
            if info["torchscript_method"] == "script":
                scripted = torch.jit.script(model)
            else:
                scripted = torch.jit.trace(model, x)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-5)

    def test_model_info_is_complete(self, name):
        info = model_info(name)
        assert info["name"] == name
        assert isinstance(info["torchscript"], bool)
        assert info["torchscript_method"] in ("script", "trace", None)
        assert isinstance(info["pretrained"], bool)
        assert info["divisor"] >= 1
        assert ("pretrained" in info["options"]) == info["pretrained"]
        # every listed option, passed explicitly with its default, is accepted
        assert isinstance(build_model(name, 1, 2, **info["options"]), torch.nn.Module)
