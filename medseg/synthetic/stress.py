"""Synthetic datasets that stress the planner (``benchmarks/bench_autoplan.py``, tests).

Each writer makes an nnU-Net v2 folder (``imagesTr``, ``labelsTr``, ``dataset.json``) whose
geometry and contrast exercise one planning rule; none is anatomy, all are deterministic:

* :func:`write_tiny_structures` - two adjacent small structures (a curved "head" and "tail",
  hippocampus-sized: ~35 x 50 x 35 voxels at 1 mm), subtle contrast, MR.
* :func:`write_anisotropic` - 0.8 x 0.8 x 5 mm axial MR, an organ with lesions inside
  (``axis`` chooses which axis is thick: 2 axial, 0 sagittal acquisition).
* :func:`write_ct_organs` - CT in HU (int16, air -1000, bone), three organs and a lesion: four
  classes at 0.8 x 0.8 x 2.5 mm.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def _write_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray, spacing) -> None:
    affine = np.diag([*map(float, spacing), 1.0])
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{case_id}_0000.nii.gz")
    nib.save(
        nib.Nifti1Image(label.astype(np.uint8), affine), root / "labelsTr" / f"{case_id}.nii.gz"
    )


def _write_meta(root: Path, name: str, channel: str, labels: dict[str, int], n: int) -> Path:
    meta = {
        "name": name,
        "description": "synthetic planner stress set (medseg.synthetic.stress); not patient data",
        "channel_names": {"0": channel},
        "labels": labels,
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (np.abs(field).max() + 1e-6)


def tiny_structures_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One ~35 x 50 x 35 case at 1 mm: a curved tube along j, its anterior part (head, label 1)
    thicker than its posterior part (tail, label 2); a dark fluid pocket beside it."""
    shape = (int(rng.integers(32, 40)), int(rng.integers(46, 56)), int(rng.integers(32, 40)))
    i, j, k = np.indices(shape, dtype=np.float32)
    t = j / shape[1]  # 0 anterior .. 1 posterior
    bend = rng.uniform(-4, 4)
    ci = shape[0] / 2 + rng.uniform(-3, 3) + bend * np.sin(np.pi * t)
    ck = shape[2] / 2 + rng.uniform(-3, 3) + rng.uniform(-3, 3) * t
    head_r, tail_r = rng.uniform(5.5, 7.5), rng.uniform(2.5, 3.8)
    radius = head_r + (tail_r - head_r) * np.clip((t - 0.2) / 0.6, 0, 1)
    radius = radius * (1 + 0.15 * _smooth_field(rng, shape, 4))
    dist = np.sqrt((i - ci) ** 2 + ((k - ck) * 1.2) ** 2)
    inside = (dist < radius) & (t > 0.12) & (t < 0.9)
    split = rng.uniform(0.42, 0.55)
    label = np.zeros(shape, np.uint8)
    label[inside & (t < split)] = 1
    label[inside & (t >= split)] = 2
    fluid = (np.sqrt((i - ci - radius - 2.5) ** 2 + (k - ck) ** 2) < 2.0) & (t < 0.7)
    tissue = 520 + 60 * _smooth_field(rng, shape, 3)
    image = tissue + 70 * inside - 250 * (fluid & ~inside)
    image = ndimage.gaussian_filter(image, 0.7)
    image *= 1 + 0.2 * _smooth_field(rng, shape, 10)  # bias field
    image += rng.normal(0, 25, shape)
    return np.clip(image, 0, None).astype(np.float32), label


def write_tiny_structures(root: str | Path, n: int = 40, seed: int = 0) -> Path:
    """``n`` cases of :func:`tiny_structures_case` (hippocampus-sized, 2 classes)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(n):
        image, label = tiny_structures_case(rng)
        _write_case(root, f"tiny_{c:03d}", image, label, (1.0, 1.0, 1.0))
    return _write_meta(root, "TinyStructures", "T1", {"background": 0, "head": 1, "tail": 2}, n)


def anisotropic_case(rng: np.random.Generator, thick_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """An organ (label 1) with 1-3 lesions (label 2) on a 0.8 mm grid, then averaged to 5 mm
    slices along ``thick_axis`` (partial volume as in a thick-slice acquisition)."""
    fine = [128, 128, 128]
    fine[thick_axis] = 120  # 24 slices of 5 mm from 0.8 mm (6.25 rounded to 5 voxels each)
    grid = np.indices(fine, dtype=np.float32)
    centre = np.array(fine, np.float32) / 2 + rng.uniform(-8, 8, 3)
    radii = rng.uniform(28, 40, 3)
    organ = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1
    label = organ.astype(np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        spot = centre + rng.uniform(-0.5, 0.5, 3) * radii
        r = rng.uniform(4, 9)
        lesion = (((grid - spot[:, None, None, None]) ** 2).sum(0) < r * r) & organ
        label[lesion] = 2
    image = 300 + 200 * organ + 180 * (label == 2) + 40 * _smooth_field(rng, fine, 6)
    image += rng.normal(0, 20, fine)
    factor = 5
    moved = np.moveaxis(image, thick_axis, 0)
    thick = moved.reshape(moved.shape[0] // factor, factor, *moved.shape[1:]).mean(axis=1)
    image = np.moveaxis(thick, 0, thick_axis)
    label = np.take(label, np.arange(factor // 2, fine[thick_axis], factor), axis=thick_axis)
    return image.astype(np.float32), label


def write_anisotropic(root: str | Path, n: int = 20, seed: int = 0, thick_axis: int = 2) -> Path:
    """``n`` cases of :func:`anisotropic_case`: 5 mm slices across ``thick_axis``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    spacing = [0.8, 0.8, 0.8]
    spacing[thick_axis] = 4.0  # 5 voxels of 0.8 mm averaged
    for c in range(n):
        image, label = anisotropic_case(rng, thick_axis)
        _write_case(root, f"aniso_{c:03d}", image, label, spacing)
    name = "ThickSlices" if thick_axis == 2 else f"ThickAxis{thick_axis}"
    return _write_meta(root, name, "T2", {"background": 0, "organ": 1, "lesion": 2}, n)


def ct_organs_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Abdomen-like CT in HU: body, fat, a bone ring, liver (1), spleen (2), kidney (3) and a
    hypodense lesion in the liver (4)."""
    shape = (160, 160, 40)
    i, j, k = np.indices(shape, dtype=np.float32)
    body = ((i - 80) / rng.uniform(68, 76)) ** 2 + ((j - 80) / rng.uniform(52, 60)) ** 2 < 1
    image = np.full(shape, -1000.0, np.float32)
    image[body] = -90 + 20 * rng.standard_normal()
    muscle = body & (((i - 80) / 60) ** 2 + ((j - 80) / 45) ** 2 < 1)
    image[muscle] = 50
    spine = ((i - 80) ** 2 + (j - 118) ** 2 < 81) & body
    image[spine] = 700
    label = np.zeros(shape, np.uint8)

    def blob(ci, cj, ri, rj, rk):
        return ((i - ci) / ri) ** 2 + ((j - cj) / rj) ** 2 + ((k - 20) / rk) ** 2 < 1

    liver = blob(55 + rng.uniform(-4, 4), 75 + rng.uniform(-4, 4), 26, 30, 18)
    spleen = blob(112 + rng.uniform(-4, 4), 90 + rng.uniform(-4, 4), 10, 16, 12)
    kidney = blob(100 + rng.uniform(-3, 3), 110 + rng.uniform(-3, 3), 8, 11, 10) & ~spine
    lesion = blob(50 + rng.uniform(-6, 6), 70 + rng.uniform(-6, 6), 6, 6, 5) & liver
    for value, mask, hu in ((1, liver, 60), (2, spleen, 48), (3, kidney, 150), (4, lesion, 15)):
        label[mask] = value
        image[mask] = hu
    image += rng.normal(0, 12, shape) * body
    return np.round(image).astype(np.int16), label


def write_ct_organs(root: str | Path, n: int = 16, seed: int = 0) -> Path:
    """``n`` cases of :func:`ct_organs_case` at 0.8 x 0.8 x 2.5 mm (CT in HU, 4 classes)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(n):
        image, label = ct_organs_case(rng)
        _write_case(root, f"ct_{c:03d}", image, label, (0.8, 0.8, 2.5))
    labels = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3, "lesion": 4}
    return _write_meta(root, "CTOrgans", "CT", labels, n)
