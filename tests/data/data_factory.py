"""Tiny synthetic datasets written to tmp_path (nnU-Net layout, manifests, broken cases)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

RAS = np.diag([1.5, 1.2, 3.0, 1.0])
LPS_LIKE = np.array(  # stored L-P-S (like ITK/DICOM-derived NIfTI), non-zero origin
    [[-1.5, 0, 0, 40.0], [0, -1.2, 0, 30.0], [0, 0, 3.0, -12.0], [0, 0, 0, 1]]
)


def blob_case(shape=(40, 36, 10), seed=0, channels=2, labels=(1, 2)):
    """Images ``channels x shape`` (smooth blobs on a non-zero 'head', zeros outside) and a label
    with two classes inside one blob (float32 like BraTS)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.array(shape, np.float32)[:, None, None, None] / 2
    head = (((grid - centre) / (np.array(shape)[:, None, None, None] * 0.42)) ** 2).sum(0) < 1
    c = centre[:, 0, 0, 0] + rng.uniform(-3, 3, 3) * np.array([1, 1, 0.3])
    r2 = ((grid - c[:, None, None, None]) ** 2 * np.array([1, 1, 4.0])[:, None, None, None]).sum(0)
    tumour = r2 < 36
    label = np.zeros(shape, np.float32)
    label[tumour] = labels[0]
    label[r2 < 9] = labels[-1]
    images = []
    for ch in range(channels):
        img = head * (100.0 + 10 * ch + rng.normal(0, 2, shape)) + tumour * (40.0 + 5 * ch)
        images.append(img.astype(np.float32))
    return images, label


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def nnunet_dataset(root: Path, n_cases=4, channels=2, shape=(40, 36, 10), affine=RAS) -> Path:
    """An nnU-Net v2 folder with ``n_cases`` cases, labels 0, 1, 2."""
    names = ["flair", "t1c", "t2"][:channels]
    meta = {
        "name": "synth",
        "channel_names": {str(i): n for i, n in enumerate(names)},
        "labels": {"background": 0, "oedema": 1, "core": 2},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(n_cases):
        images, label = blob_case(shape, seed=i, channels=channels)
        for c, img in enumerate(images):
            save(img, affine, root / "imagesTr" / f"case{i:03d}_{c:04d}.nii.gz")
        save(label, affine, root / "labelsTr" / f"case{i:03d}.nii.gz")
    return root
