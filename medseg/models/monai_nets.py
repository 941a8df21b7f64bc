"""MONAI networks in 2D: ``monai_unet`` (residual units), ``basic_unet``, ``attention_unet``.

``monai_unet`` and ``attention_unet`` down-sample with strided convolutions and concatenate
skips of equal size, so they need H, W divisible by ``prod(strides)``: they are wrapped in
:class:`PadToDivisor`. ``basic_unet`` pads its up-sampled features itself (MONAI ``UpCat``),
so it runs on any size natively. All three are TorchScript-scriptable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from medseg.errors import ConfigError
from medseg.models.padding import PadToDivisor
from medseg.models.registry import check_choice, check_range, register_model

MONAI_NORMS = ("batch", "instance")


def _int_tuple(model: str, option: str, value: Sequence[int], min_len: int) -> tuple[int, ...]:
    """Validate a list/tuple of positive ints (YAML gives lists) and return it as a tuple."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) < min_len
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ConfigError(
            f"model {model!r}: option {option}={value!r} is invalid; expected a list of at "
            f"least {min_len} positive integers, e.g. [16, 32, 64, 128, 256]"
        )
    return tuple(int(v) for v in value)


def _channels_strides(
    model: str, channels: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    chans = _int_tuple(model, "channels", channels, 2)
    strd = _int_tuple(model, "strides", strides, 1)
    if len(strd) != len(chans) - 1:
        raise ConfigError(
            f"model {model!r}: {len(chans)} channels need {len(chans) - 1} strides, got "
            f"strides={list(strd)}; expected one stride per down-sampling"
        )
    return chans, strd


@register_model(
    "monai_unet",
    family="monai",
    description="MONAI UNet with residual units and strided-conv down-sampling",
    torchscript="script",
    divisor=lambda strides, **_: math.prod(strides),
)
def build_monai_unet(
    in_channels: int,
    num_classes: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
) -> nn.Module:
    """``monai.networks.nets.UNet`` (2D), padded to a multiple of ``prod(strides)``."""
    from monai.networks.nets import UNet

    chans, strd = _channels_strides("monai_unet", channels, strides)
    check_range("monai_unet", "num_res_units", num_res_units, 0, 8, kind=int)
    check_choice("monai_unet", "norm", norm, MONAI_NORMS)
    check_range("monai_unet", "dropout", dropout, 0.0, 0.99)
    net = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=chans,
        strides=strd,
        num_res_units=num_res_units,
        norm=norm,
        dropout=float(dropout),
    )
    return PadToDivisor(net, math.prod(strd))


@register_model(
    "basic_unet",
    family="monai",
    description="MONAI BasicUNet (two-conv blocks, LeakyReLU); any input size natively",
    torchscript="script",
    divisor=1,
)
def build_basic_unet(
    in_channels: int,
    num_classes: int,
    features: Sequence[int] = (32, 32, 64, 128, 256, 32),
    norm: str = "instance",
    dropout: float = 0.0,
    upsample: str = "deconv",
) -> nn.Module:
    """``monai.networks.nets.BasicUNet`` (2D); six ``features``: five encoder widths + output."""
    from monai.networks.nets import BasicUNet

    feats = _int_tuple("basic_unet", "features", features, 6)
    if len(feats) != 6:
        raise ConfigError(
            f"model 'basic_unet': option features={list(features)} has {len(feats)} values; "
            "expected exactly 6 (five encoder widths and the decoder output width)"
        )
    check_choice("basic_unet", "norm", norm, MONAI_NORMS)
    check_range("basic_unet", "dropout", dropout, 0.0, 0.99)
    check_choice("basic_unet", "upsample", upsample, ("deconv", "pixelshuffle", "nontrainable"))
    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        features=feats,
        norm=(norm, {"affine": True}) if norm == "instance" else norm,
        dropout=float(dropout),
        upsample=upsample,
    )


@register_model(
    "attention_unet",
    family="monai",
    description="MONAI AttentionUnet (attention gates on the skip connections)",
    torchscript="script",
    divisor=lambda strides, **_: math.prod(strides),
)
def build_attention_unet(
    in_channels: int,
    num_classes: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    dropout: float = 0.0,
) -> nn.Module:
    """``monai.networks.nets.AttentionUnet`` (2D), padded to a multiple of ``prod(strides)``."""
    from monai.networks.nets import AttentionUnet

    chans, strd = _channels_strides("attention_unet", channels, strides)
    check_range("attention_unet", "dropout", dropout, 0.0, 0.99)
    net = AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=chans,
        strides=strd,
        dropout=float(dropout),
    )
    return PadToDivisor(net, math.prod(strd))
