"""Training-step throughput (slices/s) and the data-pipeline ratio.

For each model: one optimizer step (forward, Dice+CE loss, backward, AdamW) on a batch of
``--batch`` slices of ``--size`` x ``--size`` pixels already on the device, in four variants:
fp32, fp32 + channels_last, AMP, AMP + channels_last. AMP is bf16 autocast on CPU and on GPUs
that support bf16, else fp16 with a GradScaler (what the trainer does on a GPU; it keeps AMP
off on CPU). Then the **pipeline ratio** = pure model step time / real step time where the
batches come from a DataLoader (``medseg.data.SliceDataset`` with the CPU MONAI augmentation
over in-memory synthetic cases, crop to ``--size``); near 1.0 means data loading is hidden
behind compute.

    python benchmarks/bench_train.py            # GPU: 256^2 x 16, 20 steps; CPU: 128^2 x 4, 1 step
    python benchmarks/bench_train.py --size 256 --batch 16 --steps 2   # full size on a CPU
    python benchmarks/bench_train.py --models unet monai_unet deeplabv3_mobilenet_v3_large \
        --size 128 --batch 16 --steps 5 --workers 2          # the BraTS recipe's step size

The pipeline ratio is measured for both pipelines: ``workers`` (SliceDataset + CPU MONAI
augmentation in DataLoader workers) and ``resident`` (volumes on the device, batches cut and
augmented with tensor ops in the training process, elastic deformation on every sample).

Figures are noisy on a shared CPU; compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.losses import build_loss
from medseg.models import build_model

IN_CHANNELS = 2  # e.g. FLAIR + T1c
NUM_CLASSES = 2  # background + whole tumour


def amp_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """One model + optimizer + loss in one variant; ``step(image, label)`` trains once."""

    def __init__(
        self, name: str, device: torch.device, amp: bool, channels_last: bool, compile: bool = False
    ) -> None:
        torch.manual_seed(0)
        self.device, self.amp, self.channels_last = device, amp, channels_last
        module = build_model(name, IN_CHANNELS, NUM_CLASSES).to(device).train()
        if channels_last:
            module.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        # compiled on the first (warm-up) step, so warm up at least once with --variants *+compile
        self.model = torch.compile(module) if compile else module
        self.loss = build_loss(NUM_CLASSES).to(device)
        self.dtype = amp_dtype(device)
        use_scaler = amp and self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        image = image.to(self.device, non_blocking=True)
        label = label.to(self.device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
            loss = self.loss(self.model(image), label)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())


def time_steps(
    stepper: Stepper, batches: Iterator[tuple[Any, Any]], warmup: int, steps: int
) -> float:
    """Mean seconds per step over ``steps`` after ``warmup`` untimed steps."""
    for _ in range(warmup):
        stepper.step(*next(batches))
    sync(stepper.device)
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step(*next(batches))
    sync(stepper.device)
    return (time.perf_counter() - start) / steps


def fixed_batches(batch: int, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    image = torch.randn(batch, IN_CHANNELS, size, size)
    label = (torch.rand(batch, size, size) > 0.9).long()
    while True:
        yield image, label


def synthetic_cases(size: int, count: int = 4, depth: int = 24) -> list[Any]:
    """In-memory cached cases ``(C, X, Y, Z)`` slightly larger than the crop, with a blob
    label, shaped like what ``medseg.data.prepare_cases`` returns (no disk needed)."""
    from medseg.data.cache import CachedCase
    from medseg.data.slicing import slices_with_foreground

    rng = np.random.default_rng(0)
    side = size + 32
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (side, side, depth)], indexing="ij"))
    cases = []
    for i in range(count):
        image = rng.normal(size=(IN_CHANNELS, side, side, depth)).astype(np.float32)
        centre = rng.uniform(
            [side / 3, side / 3, depth / 3], [2 * side / 3, 2 * side / 3, 2 * depth / 3]
        )
        label = (np.linalg.norm(grid - centre[:, None, None, None], axis=0) < side / 6).astype(
            np.int16
        )
        fg = {axis: slices_with_foreground(label, axis) for axis in range(3)}
        cases.append(CachedCase(f"case{i}", image, label, None, fg, Path(".")))  # type: ignore[arg-type]
    return cases


def loader_batches(args: argparse.Namespace) -> tuple[Iterator[tuple[Any, Any]], str]:
    """Batches from training's own loader (:func:`medseg.data.pipeline.build_train_loader`:
    the SliceDataset, sampler and DataLoader settings ``medseg train`` uses) over in-memory
    cases, with the default CPU MONAI augmentation."""
    from medseg.data.config import DataConfig
    from medseg.data.pipeline import PreparedData, build_train_loader
    from medseg.data.preprocessing import PreprocessingParams

    cfg = DataConfig(
        dataset="synthetic (in memory)",
        crop_size=(args.size, args.size),
        samples_per_epoch=10**6,
        augmentation={"enabled": True, "backend": "cpu"},
    )
    names = ["background", "tumour"]
    data = PreparedData(PreprocessingParams(), synthetic_cases(args.size), [], ["c0", "c1"], names)
    _, loader, _ = build_train_loader(
        data, cfg, args.batch, args.workers, seed=0, pin_memory=torch.cuda.is_available()
    )

    def batches() -> Iterator[tuple[Any, Any]]:
        while True:
            for sample in loader:
                yield sample["image"], sample["label"]

    return batches(), "medseg.data.pipeline.build_train_loader + CPU MONAI augmentation"


def resident_batches(args: argparse.Namespace, device: torch.device) -> tuple[Iterator, str]:
    """Batches from the device-resident pipeline (:class:`medseg.data.resident.ResidentSlices`
    on ``device``) + the batched augmentation with elastic deformation on every sample,
    the same in-memory cases as :func:`loader_batches`; timed inside the step, as in training."""
    from medseg.data.augmentation import BatchAugmenter
    from medseg.data.config import AugmentationConfig
    from medseg.data.resident import ResidentSlices

    sampler = ResidentSlices(
        synthetic_cases(args.size), (2,), 0, (args.size, args.size), 0.33, 10**6, args.batch,
        device=device,
    )  # fmt: skip
    sampler.set_epoch(0)
    augment = BatchAugmenter(AugmentationConfig(elastic={"prob": 1.0}), seed=0)

    def batches() -> Iterator[tuple[Any, Any]]:
        while True:
            batch = sampler.batch()
            yield augment(batch["image"], batch["label"])

    return (
        batches(),
        "medseg.data.resident.ResidentSlices + BatchAugmenter (elastic on every sample)",
    )


VARIANTS = {
    "fp32": (False, False),
    "fp32+CL": (False, True),
    "AMP": (True, False),
    "AMP+CL": (True, True),
    # torch.compile (inductor): minutes to compile on a CPU, so not in the default set
    "fp32+CL+compile": (False, True, True),
    "AMP+CL+compile": (True, True, True),
}
DEFAULT_VARIANTS = ["fp32", "fp32+CL", "AMP", "AMP+CL"]


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "CPU"
    )
    amp_name = {torch.bfloat16: "bf16", torch.float16: "fp16+GradScaler"}[amp_dtype(device)]
    print(
        f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}; batch {args.batch} x {IN_CHANNELS} x {args.size}^2, "
        f"{NUM_CLASSES} classes, warmup {args.warmup}, steps {args.steps}, AMP = {amp_name} autocast"
    )
    rows = []
    for model in args.models:
        base = None
        for variant in args.variants:
            seconds = time_steps(
                Stepper(model, device, *VARIANTS[variant]),
                fixed_batches(args.batch, args.size),
                args.warmup,
                args.steps,
            )
            base = base or seconds
            rows.append((model, variant, seconds, args.batch / seconds, base / seconds))
            print(
                f"  {model:<22} {variant:<8} {seconds:7.3f} s/step {args.batch / seconds:8.1f} slices/s",
                flush=True,
            )
    print("\n| model | variant | s/step | slices/s | vs fp32 |\n|---|---|---|---|---|")
    for model, variant, seconds, rate, speedup in rows:
        print(f"| {model} | {variant} | {seconds:.3f} | {rate:.1f} | {speedup:.2f}x |")
    if args.skip_pipeline:
        return
    variant = "AMP+CL" if device.type == "cuda" else "fp32+CL"  # what the trainer uses there
    amp, cl = VARIANTS[variant]
    print(f"\npipeline ratio = pure step / step with data ({variant}):")
    print("| model | pipeline | pure step s | with data s | ratio |\n|---|---|---|---|---|")
    ratios, sources = [], {}
    for model in args.models:
        pure = time_steps(
            Stepper(model, device, amp, cl),
            fixed_batches(args.batch, args.size),
            args.warmup,
            args.steps,
        )
        for pipeline in args.pipelines:
            if pipeline == "workers":
                batches, source = loader_batches(args)
                pipeline = f"workers ({args.workers})"
            else:
                batches, source = resident_batches(args, device)
            sources[pipeline] = source
            real = time_steps(Stepper(model, device, amp, cl), batches, args.warmup, args.steps)
            print(
                f"| {model} | {pipeline} | {pure:.3f} | {real:.3f} | {pure / real:.2f} |",
                flush=True,
            )
            ratios.append(
                {
                    "model": model,
                    "pipeline": pipeline,
                    "pure_s": pure,
                    "real_s": real,
                    "ratio": pure / real,
                }
            )
            with contextlib.suppress(Exception):
                batches.close()  # type: ignore[attr-defined]
    for pipeline, source in sources.items():
        print(f"data source {pipeline}: {source}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "device": str(device), "device_name": name, "torch": torch.__version__,
            "batch": args.batch, "size": args.size, "steps": args.steps,
            "step_table": [
                {"model": m, "variant": v, "s_per_step": sec, "slices_per_s": r, "vs_fp32": sp}
                for m, v, sec, r, sp in rows
            ],
            "pipeline_ratio": ratios,
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["unet", "deeplabv3_resnet50"])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--size", type=int, default=None, help="slice side (GPU 256, CPU 128)")
    parser.add_argument("--batch", type=int, default=None, help="slices per step (GPU 16, CPU 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 1, GPU 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (CPU 1, GPU 5)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument(
        "--device", default=None, help="cpu / cuda / cuda:1 (default: cuda if present)"
    )
    parser.add_argument("--skip-pipeline", action="store_true", help="only the pure step table")
    parser.add_argument(
        "--pipelines", nargs="+", default=["workers", "resident"], choices=["workers", "resident"]
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.batch, args.steps, args.warmup = 32, 2, 1, 0
        args.models, args.variants, args.workers = ["unet"], ["fp32", "fp32+CL"], 0
    gpu = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    args.steps = args.steps or (20 if gpu else 1)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    if not gpu and (args.size is None or args.batch is None):
        # One DeepLabv3-ResNet50 step at 256^2 x 16 takes ~3 min on a 2-core CPU, so the CPU
        # default is reduced to keep the whole run near 3 minutes.
        print("CPU default: 128^2 x 4 (pass --size 256 --batch 16 for the full-size figure)")
    args.size = args.size or (256 if gpu else 128)
    args.batch = args.batch or (16 if gpu else 4)
    run(args)


if __name__ == "__main__":
    main()
