"""The synthetic datasets of the tests, written to tmp_path: one nnU-Net v2 writer
(:func:`write_nnunet`) for the data tests' blob cases and the training tests' tiny cases."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
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


def write_nnunet(
    root: Path,
    cases: Iterable[tuple[list[np.ndarray], np.ndarray]],
    affine: np.ndarray,
    channel_names: list[str],
    labels: dict[str, int],
    name: str | None = None,
    case_id: str = "case{:03d}",
) -> Path:
    """The one synthetic nnU-Net v2 writer: ``dataset.json``, ``imagesTr/<id>_<c>.nii.gz``
    and ``labelsTr/<id>.nii.gz`` for each ``(channel images, label)`` of ``cases``."""
    count = 0
    for i, (images, label) in enumerate(cases):
        for c, img in enumerate(images):
            save(img, affine, root / "imagesTr" / f"{case_id.format(i)}_{c:04d}.nii.gz")
        save(label, affine, root / "labelsTr" / f"{case_id.format(i)}.nii.gz")
        count += 1
    meta = {"name": name} if name else {}
    meta.update(
        channel_names={str(i): n for i, n in enumerate(channel_names)},
        labels=labels,
        numTraining=count,
        file_ending=".nii.gz",
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def nnunet_dataset(root: Path, n_cases=4, channels=2, shape=(40, 36, 10), affine=RAS) -> Path:
    """An nnU-Net v2 folder with ``n_cases`` :func:`blob_case` cases, labels 0, 1, 2."""
    cases = (blob_case(shape, seed=i, channels=channels) for i in range(n_cases))
    names = ["flair", "t1c", "t2"][:channels]
    labels = {"background": 0, "oedema": 1, "core": 2}
    return write_nnunet(root, cases, affine, names, labels, name="synth")


TINY_SHAPE = (24, 24, 6)


def tiny_cases(num_cases: int = 4, seed: int = 0) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """1-channel cases for fast training tests: a noisy bright blob (``lesion``, 1) in a
    ring (``rim``, 2), centres drawn from one stream seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in TINY_SHAPE], indexing="ij"))
    for _ in range(num_cases):
        centre = np.array([12, 12, 3]) + rng.integers(-4, 5, 3) * np.array([1, 1, 0])
        offset = (grid - centre[:, None, None, None]) * np.array([1, 1, 2])[:, None, None, None]
        dist = np.sqrt((offset**2).sum(0))
        label = np.zeros(TINY_SHAPE, np.uint8)
        label[dist < 7] = 2
        label[dist < 4] = 1
        image = 100 + 10 * rng.standard_normal(TINY_SHAPE) + 80 * (label == 1) + 40 * (label == 2)
        yield [image.astype(np.float32)], label


def write_tiny_dataset(root: Path, num_cases: int = 4, seed: int = 0) -> Path:
    """nnU-Net v2 folder of :func:`tiny_cases`: channel ``MRI``, classes background/lesion/rim."""
    labels = {"background": 0, "lesion": 1, "rim": 2}
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    return write_nnunet(
        root, tiny_cases(num_cases, seed), affine, ["MRI"], labels, case_id="case_{:03d}"
    )
