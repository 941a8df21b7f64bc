"""Helpers for inference tests: tiny random-weight checkpoints and synthetic volumes.

The networks are random (geometry, file formats and bookkeeping are what is tested); the
last layer's bias is shifted so that a scan gets a mix of classes instead of one class
everywhere, which makes "same mask" comparisons meaningful.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medseg.checkpoint import save_checkpoint
from medseg.data.preprocessing import PreprocessingParams
from medseg.io.volume import Volume
from medseg.models import build_model

MODEL_OPTIONS = {"depth": 1, "base_channels": 4}


def _balance_last_layer(model: torch.nn.Module, in_planes: int, num_classes: int) -> None:
    """Shift the output bias so the classes split a smooth random image roughly evenly."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    last = next(c for c in reversed(convs) if c.out_channels == num_classes)
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.avg_pool2d(torch.randn(4, in_planes, 64, 64, generator=gen), 5, 1, 2)
    with torch.no_grad():
        logits = model.eval()(x * 3)
        median = logits.transpose(0, 1).reshape(num_classes, -1).median(dim=1).values
        last.bias -= median
        # sharper logits: fewer near-ties, so comparisons between code paths are meaningful
        last.weight *= 10
        last.bias *= 10


def write_tiny_checkpoint(
    path: Path,
    channel_names: tuple[str, ...] = ("image",),
    class_names: tuple[str, ...] = ("background", "lesion"),
    context: int = 1,
    modality: str = "mr",
    target_spacing: tuple[float, float] | None = None,
    seed: int = 0,
    axes: tuple[int, ...] | None = None,
    regions: dict[str, list[int]] | None = None,
) -> Path:
    """A checkpoint in the trainer's format holding a random tiny ``unet``.

    ``axes`` records the trained slice axes (``None``: a medseg 0.1 file without them, i.e.
    axial only); ``regions`` makes it a region model (one sigmoid output per region).
    """
    torch.manual_seed(seed)
    in_planes = len(channel_names) * (2 * context + 1)
    outputs = len(regions) if regions else len(class_names)
    model = build_model("unet", in_planes, outputs, **MODEL_OPTIONS)
    _balance_last_layer(model, in_planes, outputs)
    params = PreprocessingParams(
        modality=modality,
        channel_names=list(channel_names),
        class_names=list(class_names),
        target_spacing=target_spacing,
        regions=regions,
    )
    sampling = {"axis": 2, "context": context}
    if axes is not None:
        sampling.update(axis=axes[0], axes=list(axes))
    payload = {
        "model": {
            "name": "unet",
            "in_channels": in_planes,
            "num_classes": outputs,
            "options": MODEL_OPTIONS,
        },
        "state_dict": model.state_dict(),
        "preprocessing": params.model_dump(mode="json"),
        "sampling": sampling,
        "class_names": list(class_names),
        "channel_names": list(channel_names),
    }
    return save_checkpoint(payload, path)


def blob_volume(
    shape: tuple[int, int, int] = (40, 36, 12),
    affine: np.ndarray | None = None,
    seed: int = 0,
) -> Volume:
    """A smooth random MR-like volume (float32) with a few bright blobs."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    data = ndimage.gaussian_filter(rng.normal(size=shape), 2.0).astype(np.float32) * 10 + 50
    if affine is None:
        affine = np.diag([-0.9, -0.8, 2.5, 1.0])  # LPS-stored, anisotropic
        affine[:3, 3] = [20.0, 15.0, -10.0]
    return Volume(data, affine, {"source": "synthetic", "format": "nifti", "modality": "MR"})


def run_cli(argv: list[str]) -> int:
    """Exit code of ``medseg ARGV`` run in-process (0 when ``main`` returns normally)."""
    from medseg.cli.main import main

    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
