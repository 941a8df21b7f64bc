"""A peer pipeline assembled from MONAI's tutorials, for side-by-side benchmarks.

2D slices of 3D BraTS-format volumes (FLAIR + T1c): ``LoadImaged`` + ``NormalizeIntensityd``
(non-zero, channel-wise), every axial slice cached in a ``CacheDataset``, ``Rand2DElasticd`` +
flips + intensity scale/shift, a MONAI residual ``UNet`` with ``DiceCELoss`` (softmax over
background / oedema / core / enhancing), trained for a wall-time budget, and ``SliceInferer``
over whole axial slices at test time. Predictions are written in BraTS label values (2 oedema,
1 core, 4 enhancing) so the same metrics score both pipelines.

Used by ``bench_accuracy.py`` (and reusable by ``bench_train.py``); not part of medseg.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

#: peer class index -> BraTS label value written back (0 bg, 1 oedema, 2 core, 3 enhancing)
PEER_TO_BRATS = np.array([0, 2, 1, 4], dtype=np.uint8)


def _brats_to_peer(seg: np.ndarray) -> np.ndarray:
    out = np.zeros(seg.shape, dtype=np.int64)
    out[seg == 2] = 1
    out[(seg == 1) | (seg == 3)] = 2
    out[seg == 4] = 3
    return out


def load_case(images: Sequence[Path], label: Path | None = None) -> dict[str, np.ndarray]:
    """``image`` ``(2, H, W, D)`` normalised as MONAI's BraTS tutorial does, ``label``
    ``(H, W, D)`` peer classes (when given), in the file's own voxel order."""
    from monai.transforms import LoadImage, NormalizeIntensity

    loader = LoadImage(image_only=True)
    image = np.stack([np.asarray(loader(str(p)), dtype=np.float32) for p in images])
    image = np.asarray(NormalizeIntensity(nonzero=True, channel_wise=True)(image))
    out = {"image": image}
    if label is not None:
        out["label"] = _brats_to_peer(np.rint(np.asarray(loader(str(label)))).astype(np.int64))
    return out


def slice_items(cases: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Every axial slice of every case as ``{"image": (2, H, W), "label": (1, H, W)}``."""
    items = []
    for case in cases:
        for k in range(case["image"].shape[-1]):
            items.append(
                {"image": case["image"][..., k].copy(), "label": case["label"][None, ..., k].copy()}
            )
    return items


def build_network() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=2,
        out_channels=4,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm="batch",
    )


def train_peer(
    cases: Sequence[dict[str, np.ndarray]],
    budget_s: float,
    seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 2,
    max_slices: int | None = None,
    evaluate=None,
    evaluate_every: int = 400,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train on the cases' axial slices until ``budget_s`` seconds of wall time are spent
    (or ``max_slices`` training slices are seen: a budget that a loaded machine cannot bend).

    ``evaluate(model, training_seconds)`` is called every ``evaluate_every`` slices and at the
    end, with the clock paused (scoring is not training time)."""
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )
    from monai.utils import set_determinism

    set_determinism(seed)
    start = time.perf_counter()
    transforms = Compose(
        [
            Rand2DElasticd(
                ["image", "label"],
                spacing=(20, 20),
                magnitude_range=(1, 2),
                prob=0.3,
                mode=("bilinear", "nearest"),
            ),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=0),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=1),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    )
    dataset = CacheDataset(slice_items(cases), transform=transforms, cache_rate=1.0, progress=False)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True
    )
    model = build_network()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = slices = 0
    paused = 0.0  # seconds spent in evaluate(), not counted as training
    model.train()

    def training_seconds() -> float:
        return time.perf_counter() - start - paused

    def spent() -> bool:
        over_time = training_seconds() >= budget_s
        return over_time or (max_slices is not None and slices >= max_slices)

    scored_at = -1

    def score() -> None:
        nonlocal paused, scored_at
        scored_at = slices
        began = time.perf_counter()
        evaluate(model.eval(), training_seconds())
        model.train()
        paused += time.perf_counter() - began

    next_eval = evaluate_every
    while not spent():
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            steps += 1
            slices += batch["image"].shape[0]
            if evaluate is not None and slices >= next_eval:
                next_eval += evaluate_every
                score()
            if spent():
                break
    if evaluate is not None and scored_at != slices:
        score()
    elapsed = training_seconds()
    return model.eval(), {"steps": steps, "slices": slices, "seconds": elapsed}


@torch.no_grad()
def predict_peer(models: Sequence[torch.nn.Module], image: np.ndarray) -> np.ndarray:
    """BraTS label map ``(H, W, D)`` from the softmax averaged over ``models``
    (``SliceInferer`` over whole axial slices)."""
    from monai.inferers import SliceInferer

    inferer = SliceInferer(roi_size=image.shape[1:3], sw_batch_size=16, spatial_dim=2)
    x = torch.from_numpy(image)[None]
    probs = None
    for model in models:
        p = torch.softmax(inferer(x, model.eval()), dim=1)
        probs = p if probs is None else probs + p
    return PEER_TO_BRATS[probs[0].argmax(0).numpy()]
