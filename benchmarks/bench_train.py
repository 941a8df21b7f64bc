"""Training-step throughput (slices/s) and the data-pipeline ratio.

For each model: one optimizer step (forward, Dice+CE loss, backward, AdamW) on a batch of
``--batch`` slices of ``--size`` x ``--size`` pixels already on the device, in four variants:
fp32, fp32 + channels_last, AMP, AMP + channels_last. AMP is bf16 autocast on CPU and on GPUs
that support bf16, else fp16 with a GradScaler. Then the **pipeline ratio** = pure model step
time / real step time with the batches from each training pipeline, in the variant the trainer
uses on that device (AMP + channels_last on a GPU and on a CPU with native bf16, AMX /
AVX512-BF16; fp32 + channels_last on other CPUs); near 1.0 means the data is hidden behind,
or negligible next to, compute.

    python benchmarks/bench_train.py            # GPU: 256^2 x 16, 20 steps; CPU: 128^2 x 4, 1 step
    python benchmarks/bench_train.py --size 256 --batch 16 --steps 2   # full size on a CPU
    python benchmarks/bench_train.py --recipe configs/brats_2d.yaml \
        --models unet monai_unet deeplabv3_mobilenet_v3_large --steps 5 --workers 2
        # the BraTS recipe's settings: its UNet options, 2 channels x 3 planes, 128^2 x 16,
        # its augmentation (elastic forced on every sample)

The pipeline ratio is measured for both pipelines, with elastic deformation on every
sample: ``workers`` (SliceDataset + CPU MONAI augmentation in DataLoader workers) and
``resident`` (volumes on the device, batches cut and augmented with tensor ops in the
training process). The resident pipeline runs in the training process, so its ratio is
paired: pure and real steps alternate on the same model and the medians are compared (a
slow moment of the machine hits both). The worker pipeline prefetches in other processes, so
alternating would hand it free time; it is timed as a block after a warm-up that drains the
prefetch queue.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.losses import build_loss
from medseg.models import build_model


@dataclass
class Setup:
    """What one step trains on: ``channels`` modalities x ``2 * context + 1`` planes in,
    ``num_classes`` logits out, ``batch`` crops of ``size``^2, per-model build options."""

    channels: int = 2  # e.g. FLAIR + T1c
    context: int = 0
    num_classes: int = 2  # background + whole tumour
    size: int = 128
    batch: int = 4
    foreground_ratio: float = 0.33
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return self.channels * (2 * self.context + 1)

    def augmentation_config(self, backend: str) -> Any:
        """The setup's augmentation with elastic deformation on every sample (the issue's
        "elastic on": the worst case for the data side)."""
        from medseg.data.config import AugmentationConfig

        raw = {**self.augmentation, "enabled": True, "backend": backend}
        raw["elastic"] = {**raw.get("elastic", {}), "prob": 1.0}
        return AugmentationConfig.model_validate(raw)


def recipe_setup(path: str) -> Setup:
    """The :class:`Setup` of a training config: its channels, 2.5D context, crop, batch size,
    model options (for its own model) and augmentation."""
    from medseg.engine.config import load_config

    cfg = load_config(path)
    crop = cfg.data.crop_size or (128, 128)
    if crop[0] != crop[1]:
        raise SystemExit(f"{path}: bench_train times square crops, the config has {crop}")
    return Setup(
        channels=len(cfg.data.preprocessing.channel_names or ["image"]),
        context=cfg.data.context,
        size=int(crop[0]),
        batch=cfg.train.batch_size,
        foreground_ratio=cfg.data.foreground_ratio,
        model_options={cfg.model.name: dict(cfg.model.options)},
        augmentation=cfg.data.augmentation.model_dump(exclude={"enabled", "backend"}),
    )


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
        self,
        name: str,
        setup: Setup,
        device: torch.device,
        amp: bool,
        channels_last: bool,
        compile: bool = False,
    ) -> None:
        torch.manual_seed(0)
        self.device, self.amp, self.channels_last = device, amp, channels_last
        options = setup.model_options.get(name, {})
        module = build_model(name, setup.in_channels, setup.num_classes, **options)
        module = module.to(device).train()
        if channels_last:
            module.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        # compiled on the first (warm-up) step, so warm up at least once with --variants *+compile
        self.model = torch.compile(module) if compile else module
        self.loss = build_loss(setup.num_classes).to(device)
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


def paired_steps(
    stepper: Stepper,
    batches: Iterator[tuple[Any, Any]],
    fixed: Iterator[tuple[Any, Any]],
    warmup: int,
    steps: int,
) -> tuple[float, float]:
    """Median seconds of a pure step (``fixed`` batch) and of a real step (next batch from
    ``batches``, its preparation included), alternating on the same model."""
    for _ in range(warmup):
        stepper.step(*next(fixed))
        stepper.step(*next(batches))
    pure, real = [], []
    for _ in range(steps):
        for times, source in ((pure, fixed), (real, batches)):
            sync(stepper.device)
            start = time.perf_counter()
            stepper.step(*next(source))
            sync(stepper.device)
            times.append(time.perf_counter() - start)
    return float(np.median(pure)), float(np.median(real))


def fixed_batches(setup: Setup) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    image = torch.randn(setup.batch, setup.in_channels, setup.size, setup.size)
    label = (torch.rand(setup.batch, setup.size, setup.size) > 0.9).long()
    while True:
        yield image, label


def synthetic_cases(size: int, count: int = 4, depth: int = 24, channels: int = 2) -> list[Any]:
    """In-memory cached cases ``(C, X, Y, Z)`` slightly larger than the crop, with a blob
    label, shaped like what ``medseg.data.prepare_cases`` returns (no disk needed)."""
    from medseg.data.cache import CachedCase
    from medseg.data.slicing import slices_with_foreground

    rng = np.random.default_rng(0)
    side = size + 32
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (side, side, depth)], indexing="ij"))
    cases = []
    for i in range(count):
        image = rng.normal(size=(channels, side, side, depth)).astype(np.float32)
        centre = rng.uniform(
            [side / 3, side / 3, depth / 3], [2 * side / 3, 2 * side / 3, 2 * depth / 3]
        )
        label = (np.linalg.norm(grid - centre[:, None, None, None], axis=0) < side / 6).astype(
            np.int16
        )
        fg = {axis: slices_with_foreground(label, axis) for axis in range(3)}
        cases.append(CachedCase(f"case{i}", image, label, None, fg, Path(".")))  # type: ignore[arg-type]
    return cases


def loader_batches(setup: Setup, workers: int) -> tuple[Iterator[tuple[Any, Any]], str]:
    """Batches from training's own loader (:func:`medseg.data.pipeline.build_train_loader`:
    the SliceDataset, sampler and DataLoader settings ``medseg train`` uses) over in-memory
    cases, with the setup's CPU MONAI augmentation."""
    from medseg.data.config import DataConfig
    from medseg.data.pipeline import PreparedData, build_train_loader
    from medseg.data.preprocessing import PreprocessingParams

    cfg = DataConfig(
        dataset="synthetic (in memory)",
        crop_size=(setup.size, setup.size),
        context=setup.context,
        foreground_ratio=setup.foreground_ratio,
        samples_per_epoch=10**6,
        augmentation=setup.augmentation_config("cpu"),
    )
    names = ["background", "tumour"]
    channel_names = [f"c{i}" for i in range(setup.channels)]
    cases = synthetic_cases(setup.size, channels=setup.channels)
    data = PreparedData(PreprocessingParams(), cases, [], channel_names, names)
    _, loader, _ = build_train_loader(
        data, cfg, setup.batch, workers, seed=0, pin_memory=torch.cuda.is_available()
    )

    def batches() -> Iterator[tuple[Any, Any]]:
        while True:
            for sample in loader:
                yield sample["image"], sample["label"]

    return batches(), "medseg.data.pipeline.build_train_loader + CPU MONAI augmentation"


def resident_batches(setup: Setup, device: torch.device) -> tuple[Iterator, str]:
    """Batches from the device-resident pipeline (:class:`medseg.data.resident.ResidentSlices`
    on ``device``) + the batched augmentation, the same in-memory cases as
    :func:`loader_batches`; timed inside the step, as in training."""
    from medseg.data.augmentation import BatchAugmenter
    from medseg.data.resident import ResidentSlices

    cases = synthetic_cases(setup.size, channels=setup.channels)
    crop = (setup.size, setup.size)
    sampler = ResidentSlices(
        cases, (2,), setup.context, crop, setup.foreground_ratio, 10**6, setup.batch, device=device
    )
    sampler.set_epoch(0)
    augment = BatchAugmenter(setup.augmentation_config("batched"), seed=0)

    def batches() -> Iterator[tuple[Any, Any]]:
        while True:
            batch = sampler.batch()
            yield augment(batch["image"], batch["label"])

    return batches(), "medseg.data.resident.ResidentSlices + BatchAugmenter"


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


def run(args: argparse.Namespace, setup: Setup) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "CPU"
    )
    amp_name = {torch.bfloat16: "bf16", torch.float16: "fp16+GradScaler"}[amp_dtype(device)]
    print(
        f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}; batch {setup.batch} x {setup.in_channels} x {setup.size}^2 "
        f"({setup.channels} channels x {2 * setup.context + 1} planes), {setup.num_classes} "
        f"classes, warmup {args.warmup}, steps {args.steps}, AMP = {amp_name} autocast"
    )
    for model, options in setup.model_options.items():
        print(f"  {model} options from the recipe: {options}")
    rows = []
    for model in args.models:
        base = None
        for variant in args.variants:
            seconds = time_steps(
                Stepper(model, setup, device, *VARIANTS[variant]),
                fixed_batches(setup),
                args.warmup,
                args.steps,
            )
            base = base or seconds
            rows.append((model, variant, seconds, setup.batch / seconds, base / seconds))
            print(
                f"  {model:<22} {variant:<8} {seconds:7.3f} s/step {setup.batch / seconds:8.1f} slices/s",
                flush=True,
            )
    print("\n| model | variant | s/step | slices/s | vs fp32 |\n|---|---|---|---|---|")
    for model, variant, seconds, rate, speedup in rows:
        print(f"| {model} | {variant} | {seconds:.3f} | {rate:.1f} | {speedup:.2f}x |")
    ratios = [] if args.skip_pipeline else pipeline_ratios(args, setup, device)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "device": str(device), "device_name": name, "torch": torch.__version__,
            "batch": setup.batch, "size": setup.size, "in_channels": setup.in_channels,
            "recipe": args.recipe, "steps": args.steps,
            "step_table": [
                {"model": m, "variant": v, "s_per_step": sec, "slices_per_s": r, "vs_fp32": sp}
                for m, v, sec, r, sp in rows
            ],
            "pipeline_ratio": ratios,
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2))


def pipeline_ratios(args: argparse.Namespace, setup: Setup, device: torch.device) -> list[dict]:
    """Pure step / real step for each model and pipeline (see the module docstring)."""
    from medseg.device import cpu_has_native_bf16

    # what the trainer uses there (medseg.device: bf16 autocast on CPUs with native bf16)
    native = device.type == "cuda" or cpu_has_native_bf16()
    variant = "AMP+CL" if native else "fp32+CL"
    amp, cl = VARIANTS[variant]
    print(f"\npipeline ratio = pure step / step with data ({variant}, elastic on every sample):")
    print("| model | pipeline | pure step s | with data s | ratio | slices/s |")
    print("|---|---|---|---|---|---|")
    ratios, sources = [], {}
    for model in args.models:
        stepper = Stepper(model, setup, device, amp, cl)
        for pipeline in args.pipelines:
            if pipeline == "workers":
                batches, source = loader_batches(setup, args.workers)
                pipeline = f"workers ({args.workers})"
                # drain the prefetch queue (2 batches per worker) before timing
                pure = time_steps(stepper, fixed_batches(setup), args.warmup, args.steps)
                real = time_steps(stepper, batches, args.warmup + 2 * args.workers, args.steps)
            else:
                batches, source = resident_batches(setup, device)
                pure, real = paired_steps(
                    stepper, batches, fixed_batches(setup), args.warmup, args.steps
                )
            sources[pipeline] = source
            print(
                f"| {model} | {pipeline} | {pure:.3f} | {real:.3f} | {pure / real:.2f} "
                f"| {setup.batch / real:.1f} |",
                flush=True,
            )
            ratios.append(
                {
                    "model": model,
                    "pipeline": pipeline,
                    "pure_s": pure,
                    "real_s": real,
                    "ratio": pure / real,
                    "slices_per_s": setup.batch / real,
                }
            )
            with contextlib.suppress(Exception):
                batches.close()  # type: ignore[attr-defined]
    for pipeline, source in sources.items():
        print(f"data source {pipeline}: {source}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["unet", "deeplabv3_resnet50"])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument(
        "--recipe",
        help="a training config (e.g. configs/brats_2d.yaml): take its channels, 2.5D "
        "context, crop, batch size, model options and augmentation",
    )
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
    setup = recipe_setup(args.recipe) if args.recipe else Setup()
    if not args.recipe and not gpu and (args.size is None or args.batch is None):
        # One DeepLabv3-ResNet50 step at 256^2 x 16 takes ~3 min on a 2-core CPU, so the CPU
        # default is reduced to keep the whole run near 3 minutes.
        print("CPU default: 128^2 x 4 (pass --size 256 --batch 16 for the full-size figure)")
    if not args.recipe:
        setup.size, setup.batch = (256, 16) if gpu else (128, 4)
    setup.size = args.size or setup.size
    setup.batch = args.batch or setup.batch
    run(args, setup)


if __name__ == "__main__":
    main()
