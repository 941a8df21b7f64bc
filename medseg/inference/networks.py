"""Network back ends behind the Predictor: a PyTorch module (checkpoint or TorchScript) or an
ONNX Runtime session. Each maps a float32 batch ``[B, P, H, W]`` to logits ``[B, K, H, W]``."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any

import numpy as np
import torch

from medseg.errors import ConfigError

logger = logging.getLogger(__name__)


DEVICE_CHOICES = "auto|cpu|cuda|cuda:N"
_DEVICE_RE = re.compile(r"^(cpu|cuda)(:\d+)?$")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA GPU when present, else CPU; ``cpu``, ``cuda``, ``cuda:N``.

    Raises:
        ConfigError: an unknown device name, or a CUDA device that this machine does not have
            (instead of torch's RuntimeError deep inside model loading).
    """
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _DEVICE_RE.match(text):
        raise ConfigError(f"--device {device!r}: unknown device; expected {DEVICE_CHOICES}")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"--device {device!r}: no CUDA GPU is available on this machine; use "
                f"--device cpu or auto (valid values: {DEVICE_CHOICES})"
            )
        index = int(text.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(
                f"--device {device!r}: this machine has {count} CUDA GPU(s) (cuda:0.."
                f"cuda:{count - 1}); pick one of those, or auto|cpu"
            )
    return torch.device(text)


def resolve_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, shared with training validation: bf16 (fp16 where bf16 is
    unsupported) on CUDA; CPU runs in float32 (CPU autocast is usually slower)."""
    from medseg.engine.volume_inference import resolve_amp_dtype

    return resolve_amp_dtype(amp, device)


class TorchNetwork:
    """Wraps an ``nn.Module`` or TorchScript module in eval mode on ``device``."""

    def __init__(self, module: torch.nn.Module, device: torch.device, amp: bool | str = "auto"):
        self.device = device
        self.module = module.to(device).eval()
        self.amp_dtype = resolve_amp(amp, device)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        ctx = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), ctx:
            return self.module(batch).float()

    def describe(self) -> dict[str, Any]:
        return {"backend": "torch", "device": str(self.device), "amp": str(self.amp_dtype)}


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
