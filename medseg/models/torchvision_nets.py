"""torchvision segmentation networks: DeepLabv3 (ResNet-50/101, MobileNetV3-Large) and FCN.

Built with ``weights=None, weights_backbone=None`` (never a download); ``pretrained=`` loads
local ImageNet encoder weights (:mod:`medseg.models.encoders`). The first convolution is
rebuilt for ``in_channels`` (pretrained RGB kernels averaged, scaled by ``3/in_channels``),
the classifier is built for ``num_classes``, the auxiliary classifier is not kept (the
contract is one logits tensor). torchvision upsamples the logits bilinearly to the input size,
so any H, W works without padding (output stride 8 for ResNets, 16 for MobileNetV3).

Batch norm after global pooling (DeepLabv3's ASPP image pool) needs more than one sample per
batch in training mode: train with batch size >= 2 (``drop_last``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.models.encoders import (
    adapt_first_conv,
    load_encoder_weights,
    replace_module,
    resolve_pretrained,
)
from medseg.models.registry import register_model


class TorchvisionSegmentation(nn.Module):
    """Return only ``model(x)["out"]``: logits ``[B, K, H, W]`` at the input size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _resnet_key(key: str) -> str | None:
    return None if key.startswith("fc.") else key


def _mobilenet_key(key: str) -> str | None:
    # torchvision's seg. model keeps only ``features`` (as the backbone), not the classifier.
    return key.removeprefix("features.") if key.startswith("features.") else None


def _build(
    builder_name: str,
    arch: str,
    name: str,
    in_channels: int,
    num_classes: int,
    pretrained: str | Path | bool | None,
) -> nn.Module:
    from torchvision.models import segmentation

    weights_file = resolve_pretrained(pretrained, arch, name)
    builder: Any = getattr(segmentation, builder_name)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    mobilenet = arch.startswith("mobilenet")
    if weights_file is not None:
        rename = _mobilenet_key if mobilenet else _resnet_key
        load_encoder_weights(model.backbone, weights_file, name, rename)
    first = "0.0" if mobilenet else "conv1"
    conv = model.backbone.get_submodule(first)
    replace_module(
        model.backbone, first, adapt_first_conv(conv, in_channels, weights_file is not None)
    )
    return TorchvisionSegmentation(model)


def _register(name: str, builder_name: str, arch: str, description: str) -> None:
    @register_model(
        name,
        family="torchvision",
        description=description,
        torchscript="script",
        pretrained=True,
        divisor=1,
    )
    def factory(
        in_channels: int, num_classes: int, pretrained: str | Path | bool | None = None
    ) -> nn.Module:
        return _build(builder_name, arch, name, in_channels, num_classes, pretrained)

    factory.__name__ = f"build_{name}"
    factory.__doc__ = f"torchvision ``{builder_name}`` adapted to medseg's contract."


_register(
    "deeplabv3_resnet50", "deeplabv3_resnet50", "resnet50", "DeepLabv3 (ASPP), ResNet-50, OS 8"
)
_register(
    "deeplabv3_resnet101",
    "deeplabv3_resnet101",
    "resnet101",
    "DeepLabv3 (ASPP), ResNet-101, OS 8",
)
_register(
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "mobilenet_v3_large",
    "DeepLabv3 (ASPP), MobileNetV3-Large, OS 16 (light)",
)
_register("fcn_resnet50", "fcn_resnet50", "resnet50", "FCN head, ResNet-50, output stride 8")
