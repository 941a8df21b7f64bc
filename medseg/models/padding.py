"""Run a network that needs sizes divisible by ``divisor`` on any ``H, W`` (pad, then crop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PadToDivisor(nn.Module):
    """Wrap ``net`` so it accepts any ``[B, C, H, W]``: zero-pad bottom/right up to the next
    multiple of ``divisor``, run ``net``, crop the logits back to ``[B, K, H, W]``.

    Zero padding because inputs are intensity-normalised (0 = mean), as nnU-Net pads; padding
    only at the bottom/right keeps the crop a plain slice (no off-by-one between halves).
    TorchScript-scriptable; the padded size is computed from the runtime shape, so a traced
    model is only valid for the traced size.
    """

    def __init__(self, net: nn.Module, divisor: int) -> None:
        super().__init__()
        if divisor < 1:
            raise ValueError(f"divisor must be >= 1, got {divisor}")
        self.net = net
        self.divisor = int(divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (self.divisor - height % self.divisor) % self.divisor
        pad_w = (self.divisor - width % self.divisor) % self.divisor
        if pad_h == 0 and pad_w == 0:
            return self.net(x)
        out = self.net(F.pad(x, [0, pad_w, 0, pad_h]))
        return out[..., :height, :width]
