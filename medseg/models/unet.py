"""The classic U-Net (Ronneberger et al. 2015) for 2D / 2.5D slices.

Hand-written rather than MONAI's ``UNet`` (residual units, strided convs) because users ask
for the reference architecture: double 3x3 conv blocks, 2x2 max-pool down, 2x2 transposed
conv up, skip connections by concatenation; "same" padding so the output keeps the input size.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.padding import PadToDivisor
from medseg.models.registry import check_choice, check_range, register_model

NORMS = ("batch", "instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> norm -> ReLU) x 2, with optional channel dropout between the convs.

    ``[B, in_ch, H, W] -> [B, out_ch, H, W]``.
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str, dropout: float) -> None:
        bias = norm == "none"  # a bias before a norm layer is redundant
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """2x2 transposed conv up, concatenate the skip, double conv.

    ``x [B, 2*out_ch, H, W]``, ``skip [B, out_ch, 2H, 2W] -> [B, out_ch, 2H, 2W]``.
    """

    def __init__(self, out_ch: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2 * out_ch, out_ch, 2, stride=2)
        self.conv = DoubleConv(2 * out_ch, out_ch, norm, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` down-samplings; widths ``base_channels * 2**level``.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` for H, W divisible by ``2**depth``
    (:func:`build_model` wraps it in :class:`PadToDivisor` for any size).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList([DoubleConv(in_channels, widths[0], norm, dropout)])
        self.encoders.extend(
            DoubleConv(widths[i], widths[i + 1], norm, dropout) for i in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoders = nn.ModuleList(
            UpBlock(widths[i], norm, dropout) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        depth = len(skips) - 1
        for i, decoder in enumerate(self.decoders):
            x = decoder(x, skips[depth - 1 - i])
        return self.head(x)


@register_model(
    "unet",
    family="unet",
    description="classic U-Net: double 3x3 convs, max-pool down, transposed-conv up, skips",
    torchscript="script",
    divisor=lambda depth, **_: 2**depth,
)
def build_unet(
    in_channels: int,
    num_classes: int,
    depth: int = 4,
    base_channels: int = 32,
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    """Classic U-Net, padded internally to a multiple of ``2**depth``."""
    check_range("unet", "depth", depth, 1, 7, kind=int)
    check_range("unet", "base_channels", base_channels, 1, 1024, kind=int)
    check_choice("unet", "norm", norm, NORMS)
    check_range("unet", "dropout", dropout, 0.0, 0.99)
    net = UNet(in_channels, num_classes, depth, base_channels, norm, float(dropout))
    return PadToDivisor(net, 2**depth)
