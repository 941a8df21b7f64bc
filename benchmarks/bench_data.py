"""Data-pipeline throughput: naive vs cached DataLoader, CPU vs batched augmentation.

Measures, in one run on one machine (so the ratios are meaningful):

(a) naive: a DataLoader whose dataset re-reads and re-preprocesses the NIfTI files per sample;
(b) cached: :class:`medseg.data.SliceDataset` over the memory-mapped cache (no augmentation),
    and the same with the CPU (MONAI) augmentation in the workers;
(c) batched augmentation (:class:`medseg.data.BatchAugmenter`) on CPU tensors, and on CUDA
    when available, in slices/s at the given size.

Usage (BraTS from ../shared/data when present, otherwise a synthetic dataset in a temp dir):

    python benchmarks/bench_data.py                 # ~1-2 min on 2 cores
    python benchmarks/bench_data.py --only-batched --device cuda --size 256 --batch 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medseg.data.augmentation import BatchAugmenter, build_augmentation
from medseg.data.cache import prepare_cases
from medseg.data.config import AugmentationConfig
from medseg.data.datasets import CaseSpec, load_dataset
from medseg.data.preprocessing import PreprocessingParams, preprocess_image, preprocess_label
from medseg.data.sampling import SliceDataset
from medseg.data.slicing import label_slice, slice_stack
from medseg.io import read_volume

BRATS = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2015"


class NaiveDataset(Dataset):
    """Re-reads (gzip decode) and re-preprocesses the whole case for every sample."""

    def __init__(self, cases: list[CaseSpec], params: PreprocessingParams, n: int, crop: int):
        self.cases, self.params, self.n, self.crop = cases, params, n, crop

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(index)
        case = self.cases[index % len(self.cases)]
        image, grid = preprocess_image([read_volume(p) for p in case.images], self.params)
        label = preprocess_label(read_volume(case.label), self.params, grid)
        k = int(rng.integers(label.shape[2]))
        img, lab = slice_stack(image, 2, k), label_slice(label, 2, k)
        pad = max(0, self.crop - img.shape[1]), max(0, self.crop - img.shape[2])
        img = np.pad(img, ((0, 0), (0, pad[0]), (0, pad[1])))[:, : self.crop, : self.crop]
        lab = np.pad(lab, ((0, pad[0]), (0, pad[1])))[: self.crop, : self.crop]
        return {"image": torch.from_numpy(img), "label": torch.from_numpy(lab.astype(np.int64))}


def synthetic_dataset(root: Path, n_cases: int = 4, shape=(240, 240, 96)) -> Path:
    """A BraTS-sized synthetic 2-channel nnU-Net folder (used when ../shared/data is absent)."""
    import json

    import nibabel as nib

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    meta = {
        "channel_names": {"0": "flair", "1": "t1c"},
        "labels": {"background": 0, "tumour": 1},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    for i in range(n_cases):
        centre = np.array(shape) / 2 + rng.uniform(-20, 20, 3)
        r = np.sqrt((((grid - centre[:, None, None, None]) / [1, 1, 1.5][0]) ** 2).sum(0))
        label = (r < 25).astype(np.uint8)
        for c in range(2):
            img = (r < 100) * (100 + rng.normal(0, 5, shape)) + label * 50
            nib.save(
                nib.Nifti1Image(img.astype(np.float32), np.eye(4)),
                str(root / "imagesTr" / f"case{i}_{c:04d}.nii.gz"),
            )
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / f"case{i}.nii.gz"))
    return root


def loader_rate(dataset: Dataset, batch: int, workers: int, n_batches: int) -> float:
    """Samples/s delivered by a DataLoader (first batch excluded: worker start-up)."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False)
    it = iter(loader)
    next(it)
    start, count = time.perf_counter(), 0
    for _ in range(n_batches):
        try:
            count += next(it)["image"].shape[0]
        except StopIteration:
            break
    return count / (time.perf_counter() - start)


def batched_rate(
    cfg: AugmentationConfig, device: str, size: int, batch: int, channels: int, repeats: int
) -> float:
    """Slices/s of BatchAugmenter on ``device`` for ``[batch, channels, size, size]``."""
    aug = BatchAugmenter(cfg, seed=0)
    image = torch.randn(batch, channels, size, size, device=device)
    label = (image[:, 0] > 1).long()
    aug(image, label)  # warm-up (CUDA kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        aug(image, label)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def resident_rate(
    cfg: AugmentationConfig, device: str, size: int, batch: int, channels: int, repeats: int
) -> float:
    """Slices/s of whole training batches from the device-resident pipeline: slice draw,
    foreground-centred crop gather and BatchAugmenter, on ``device`` (synthetic cases)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train import synthetic_cases

    from medseg.data.resident import ResidentSlices

    cases = synthetic_cases(size, count=4, depth=24)
    sampler = ResidentSlices(cases, (2,), 0, (size, size), 0.33, 10**6, batch, device=device)
    sampler.set_epoch(0)
    aug = BatchAugmenter(cfg, seed=0)
    warm = sampler.batch()
    aug(warm["image"], warm["label"])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        b = sampler.batch()
        aug(b["image"], b["label"])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def all_on(cfg: AugmentationConfig) -> AugmentationConfig:
    """Every spatial transform on every sample (worst case for the CPU elastic path)."""
    return AugmentationConfig.model_validate(
        {
            **cfg.model_dump(),
            "elastic": {"prob": 1.0},
            "rotation": {"prob": 1.0},
            "scaling": {"prob": 1.0},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=None, help="dataset (default: BraTS or synthetic)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="crop / slice size in pixels")
    parser.add_argument("--naive-samples", type=int, default=8)
    parser.add_argument("--cached-batches", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only-batched", action="store_true", help="skip the DataLoader runs")
    parser.add_argument("--repeats", type=int, default=20, help="timed batches on CUDA")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    cfg = AugmentationConfig()
    results: dict[str, float] = {}
    if not args.only_batched:
        with tempfile.TemporaryDirectory() as tmp:
            source = args.dataset or (
                BRATS if BRATS.is_dir() else synthetic_dataset(Path(tmp) / "synth")
            )
            spec = load_dataset(source)
            params = PreprocessingParams(
                channel_names=spec.channel_names,
                label_map={v: 1 for v in spec.labels if v > 0} or None,
            )
            print(f"dataset {source}: {len(spec.cases)} cases, channels {spec.channel_names}")
            crop = (args.size, args.size)
            naive = NaiveDataset(
                spec.cases, params, args.naive_samples + args.workers * 2, args.size
            )
            results["naive"] = loader_rate(naive, 2, args.workers, args.naive_samples // 2)
            t0 = time.perf_counter()
            cached = prepare_cases(spec.cases, params, Path(tmp) / "cache", progress=False)
            print(f"cache built in {time.perf_counter() - t0:.1f} s (once)")
            n = args.batch * (args.cached_batches + 1)
            plain = SliceDataset(cached, crop_size=crop, samples_per_epoch=n)
            results["cached"] = loader_rate(plain, args.batch, args.workers, args.cached_batches)
            augmented = SliceDataset(
                cached, crop_size=crop, samples_per_epoch=n, transform=build_augmentation(cfg)
            )
            results["cached+cpu-aug"] = loader_rate(
                augmented, args.batch, args.workers, args.cached_batches // 4
            )
            always = SliceDataset(
                cached,
                crop_size=crop,
                samples_per_epoch=n,
                transform=build_augmentation(all_on(cfg)),
            )
            results["cached+cpu-aug(all spatial)"] = loader_rate(
                always, args.batch, args.workers, args.cached_batches // 8
            )
    channels = 2
    results["batched-aug cpu"] = batched_rate(cfg, "cpu", args.size, args.batch, channels, 3)
    results["batched-aug cpu (all spatial)"] = batched_rate(
        all_on(cfg), "cpu", args.size, args.batch, channels, 3
    )
    if args.device.startswith("cuda"):
        results["batched-aug cuda"] = batched_rate(
            cfg, args.device, args.size, 256, channels, args.repeats
        )
        results["batched-aug cuda (all spatial)"] = batched_rate(
            all_on(cfg), args.device, args.size, 256, channels, args.repeats
        )
    results[f"resident sampling+aug {args.device} (all spatial)"] = resident_rate(
        all_on(cfg), args.device, args.size, args.batch, channels, max(args.repeats // 4, 2)
    )
    print(f"\n{'path':34s} {'samples/s':>12s}")
    for name, rate in results.items():
        print(f"{name:34s} {rate:12.1f}")
    if "naive" in results:
        print(f"\ncached / naive               = {results['cached'] / results['naive']:.0f}x")
        print(f"cached+cpu-aug / naive       = {results['cached+cpu-aug'] / results['naive']:.0f}x")
        print(
            f"batched-aug cpu / cpu-aug(all spatial) = "
            f"{results['batched-aug cpu (all spatial)'] / results['cached+cpu-aug(all spatial)']:.1f}x"
        )
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"samples_per_s": results}, indent=2))
    if "batched-aug cuda" in results:
        print(
            f"batched-aug cuda (all spatial) / 20,000 goal = "
            f"{results['batched-aug cuda (all spatial)'] / 20000:.2f}"
        )


if __name__ == "__main__":
    main()
