"""Network back ends behind the slice loop: a PyTorch module (checkpoint, TorchScript, or a
model being trained) or an ONNX Runtime session. Each maps a float32 batch ``[B, P, H, W]``
to logits ``[B, K, H, W]``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from medseg.device import autocast, resolve_amp_dtype, use_channels_last

logger = logging.getLogger(__name__)


class TorchNetwork:
    """An ``nn.Module`` or TorchScript module on ``device`` as a batch -> logits callable.

    The one wrapper for the Predictor (``module`` is moved to ``device`` and put in eval mode)
    and for validation during training (:func:`eval_network`, which restores the module's
    train/eval mode afterwards). Autocast and channels_last follow :mod:`medseg.device`.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        device: torch.device | str,
        amp: bool | str | torch.dtype | None = "auto",
        channels_last: bool = False,
    ):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.amp_dtype = resolve_amp_dtype(amp, self.device)
        self.channels_last = use_channels_last(channels_last, self.device)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.amp_dtype):
            return self.module(batch).float()

    def describe(self) -> dict[str, Any]:
        return {"backend": "torch", "device": str(self.device), "amp": str(self.amp_dtype)}


@contextlib.contextmanager
def eval_network(
    model: torch.nn.Module,
    device: torch.device | str = "cpu",
    amp: bool | str | torch.dtype | None = False,
    channels_last: bool = False,
) -> Iterator[TorchNetwork]:
    """``model`` (a training module) wrapped as a :class:`TorchNetwork` in eval mode; its
    previous train/eval mode is restored on exit."""
    was_training = model.training
    try:
        yield TorchNetwork(model, device, amp, channels_last)
    finally:
        model.train(was_training)


class OnnxNetwork:
    """Wraps an ONNX Runtime session (CUDA provider when requested and available)."""

    def __init__(self, path: str, device: torch.device):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")  # outputs come back as host arrays

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run(None, {self.input_name: array})[:1]
        return torch.from_numpy(logits)

    def describe(self) -> dict[str, Any]:
        return {"backend": "onnxruntime", "providers": self.session.get_providers()}
