"""Synthetic data for the viewer tests: a small nnU-Net style case folder and a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.io import Volume, write_mask, write_volume

#: LPS-stored affine (like DICOM): i -> patient's left, j -> posterior, k -> superior.
LPS_AFFINE = np.array([[-1.0, 0, 0, 30.0], [0, -1.0, 0, 25.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])
SHAPE = (64, 56, 20)
CLASS_NAMES = ["background", "tumour_core", "oedema"]


def synthetic_brain(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A head-like ellipsoid with two lesions (core 1 + oedema 2 rim; a small oedema spot)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    head = ((i - 32) / 28) ** 2 + ((j - 28) / 24) ** 2 + ((k - 10) / 9) ** 2 < 1
    image = np.where(head, 400.0, 0.0) + rng.normal(0, 10, SHAPE)
    label = np.zeros(SHAPE, np.uint8)
    big = ((i - 40) ** 2 + (j - 30) ** 2 + ((k - 10) * 3) ** 2) < 8**2
    core = ((i - 40) ** 2 + (j - 30) ** 2 + ((k - 10) * 3) ** 2) < 4**2
    small = ((i - 18) ** 2 + (j - 20) ** 2 + ((k - 6) * 3) ** 2) < 3**2
    label[big | small] = 2
    label[core] = 1
    image = image + 300.0 * (label == 2) + 150.0 * (label == 1)
    return image.astype(np.float32), label


def write_case_folder(root: Path, cases: int = 2) -> Path:
    """``root/brain_mr`` in nnU-Net layout (imagesTr/labelsTr + dataset.json)."""
    folder = root / "brain_mr"
    for n in range(1, cases + 1):
        image, label = synthetic_brain(seed=n)
        vol = Volume(image, LPS_AFFINE, {"modality": "MR"})
        write_volume(vol, folder / "imagesTr" / f"brain_{n:03d}_0000.nii.gz")
        write_mask(label, vol, folder / "labelsTr" / f"brain_{n:03d}.nii.gz")
    meta = {
        "channel_names": {"0": "FLAIR"},
        "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def write_constant_checkpoint(
    path: Path, label: int = 1, channels: tuple[str, ...] = ("flair",)
) -> Path:
    """A tiny real U-Net checkpoint whose head is zeroed with a bias so it predicts ``label``
    everywhere: deterministic output that exercises the real Predictor end to end."""
    import torch

    from medseg.checkpoint import save_checkpoint
    from medseg.data.preprocessing import PreprocessingParams
    from medseg.models import build_model

    options = {"depth": 2, "base_channels": 4}
    model = build_model("unet", len(channels), len(CLASS_NAMES), **options)
    state = model.state_dict()
    state["net.head.weight"].zero_()
    bias = torch.zeros_like(state["net.head.bias"])
    bias[label] = 10.0
    state["net.head.bias"] = bias
    params = PreprocessingParams(
        modality="mr", channel_names=list(channels), class_names=CLASS_NAMES
    )
    payload = {
        "model": {
            "name": "unet",
            "in_channels": len(channels),
            "num_classes": 3,
            "options": options,
        },
        "state_dict": state,
        "preprocessing": params.model_dump(mode="json"),
        "sampling": {"axis": 2, "context": 0},
        "class_names": CLASS_NAMES,
        "channel_names": list(channels),
    }
    return save_checkpoint(payload, path)


def stand_in_model(
    monkeypatch,  # pytest.MonkeyPatch
    folder: Path,
    label: np.ndarray,
    affine: np.ndarray,
    class_names: list[str],
    foreground: np.ndarray | None = None,
    channels: tuple[str, ...] = ("flair",),
) -> tuple[Path, list[list[np.ndarray]]]:
    """A model file the page lists, whose predictor is replaced: it expects ``channels`` and
    predicts ``label`` (with ``foreground`` as its probability map). Returns the file and the
    list that receives the channel arrays of each inference run. AppTests then control every
    lesion and its confidence, without loading a network."""
    import types

    from medseg.viewer.core import services

    model = folder / "stand_in.pt"
    model.write_bytes(b"never read: load_predictor is replaced")
    fed: list[list[np.ndarray]] = []

    def load_predictor(path, device="auto", tta=False):
        return types.SimpleNamespace(channel_names=list(channels), class_names=class_names)

    def run_inference(predictor, volumes, name, progress=None):
        fed.append([np.asarray(v.array) for v in volumes])
        maps = {}
        if foreground is not None:
            maps = {
                "foreground probability": foreground.astype(np.float16),
                "entropy": (1 - foreground).astype(np.float16),
            }
        return services.ViewerPrediction(
            Volume(label, affine), list(class_names), None, name, maps, "0" * 64
        )

    monkeypatch.setattr(services, "load_predictor", load_predictor)
    monkeypatch.setattr(services, "run_inference", run_inference)
    return model, fed


def page_ok(at):  # AppTest -> AppTest
    """``at`` after a run that showed no exception and no error (the values say which)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at
