"""``medseg plan``: a training config planned from the dataset's fingerprint and this machine.

:func:`make_plan` validates the dataset, fingerprints it (cached), applies the rules of
:mod:`medseg.engine.plan_rules`, times the planned network's training step on the device and
fills the time budget. The result, a :class:`Plan`, is an ordinary training config (``raw``,
parsed by :func:`medseg.engine.config.build_config`) plus one reason per planned value, written
as a commented YAML file by :func:`plan_to_yaml`.

Determinism: the same fingerprint and device class give the same plan. The one measured figure,
the step time, is rounded to a coarse grid (steps of ~12 %) and cached per device class and
network shape, so a re-plan reads the cached figure instead of re-timing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.data.datasets import DatasetSpec, load_dataset
from medseg.data.fingerprint import cached_fingerprint, compute_fingerprint
from medseg.data.pipeline import default_cache_dir, resolve_params
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.slicing import plane_axes
from medseg.data.validation import format_problems, validate_dataset
from medseg.engine import plan_rules as rules
from medseg.engine.config import TrainConfig, build_config
from medseg.engine.cv_stats import MIN_TRUSTED_CASES
from medseg.errors import ConfigError, DatasetError
from medseg.io.atomic import write_json, write_text

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 30 * 60.0
STEP_TIMES_FILE = "step_times.json"
# the batched pipeline and augmentation add this share to a pure training step (measured
# resident pipeline ratio 0.89-0.94 on the 2-core CPU, docs/performance.md)
PIPELINE_OVERHEAD = 1.15
# out-of-fold cost per case beyond the network: reading, writing the mask and scoring every
# postprocessing candidate of every structure (surface distances dominate): per million
# voxels and structure, measured on the 1-core CPU as 2.3 s (bench_autoplan ct: 16 cases of
# 0.7 Mvoxel, 4 structures, 138 s for prediction and join) and 0.6 s (tiny: 40 x 0.065 Mvoxel)
OOF_CASE_S = 0.05
OOF_MVOXEL_S = 2.0
# fixed costs per fold: start-up, loading the cached cases, checkpoints, overlays (s); the
# folds of bench_autoplan's tiny set started within 1 s of each other
FOLD_OVERHEAD_S = 5.0
# the join after the folds: intervals, the summary plot, model.json (s)
JOIN_S = 10.0
# test-time augmentation (the four in-plane flips): four forward passes per slice
TTA_PASSES = 4
# the shortest useful fold: fewer, longer-trained folds beat many short ones on a budget
MIN_FOLD_STEPS = 1000
# ... except with few cases, where each fold's share of the cases counts more than its steps
# (2 folds of 4 cases train on 2 each, 4 folds on 3): the BraTS recipe reached out-of-fold
# whole-tumour Dice 0.894 with 4 folds of 400 steps on 3 cases each
FEW_CASES_FOLD_STEPS = 400
# validation passes take up to ~15 % of a model's time (plan_rules.schedule)
VAL_SHARE = 1.15
# fewer planned steps than this share of MIN_FOLD_STEPS gets the "undertrained" note (epochs
# are whole, so a budget that just holds MIN_FOLD_STEPS may plan a few steps less)
UNDERTRAINED_SHARE = 0.8

# nnU-Net-strength augmentation, as the BraTS recipe (configs/brats_2d.yaml) uses it
AUGMENTATION: dict[str, Any] = {
    "enabled": True,
    "backend": "auto",
    "rotation": {"prob": 0.3, "degrees": 45},
    "scaling": {"prob": 0.3, "range": [0.7, 1.4]},
    "elastic": {"prob": 0.2, "spacing": 24, "magnitude": [0, 5]},
    "flips": {"prob": [0.5, 0.5]},
    "gamma": {"prob": 0.3, "range": [0.7, 1.5], "invert_prob": 0.1},
    "lowres": {"prob": 0.25, "range": [0.5, 1.0]},
    "noise": {"prob": 0.1, "std": 0.1},
    "blur": {"prob": 0.2, "sigma": [0.5, 1.0]},
    "brightness": {"prob": 0.15, "range": [0.75, 1.25]},
    "contrast": {"prob": 0.15, "range": [0.75, 1.25]},
}


@dataclasses.dataclass
class Plan:
    """A planned training config (``raw``) with the reason behind each planned value
    (``reasons``: dotted key -> one line), the decisions that are not config values
    (``notes``), the fingerprint and the time estimate."""

    raw: dict[str, Any]
    reasons: dict[str, str]
    notes: list[str]
    fingerprint: dict[str, Any]
    estimate: dict[str, float]

    def config(self) -> TrainConfig:
        return build_config(self.raw, source="the plan")

    @property
    def folds(self) -> int:
        """Cross-validation folds planned (0: one model, no cross-validation)."""
        return int(self.estimate["folds"])


def oof_scoring_seconds(case_mvoxels: float, outputs: int) -> float:
    """Out-of-fold cost of one case beyond the network's passes (see OOF_MVOXEL_S), for a
    model of ``outputs`` channels (one structure per foreground class or region)."""
    return OOF_CASE_S + OOF_MVOXEL_S * case_mvoxels * max(outputs - 1, 1)


def parse_duration(text: str | float | None) -> float | None:
    """Seconds in ``"30m"``, ``"1h30m"``, ``"90s"``, ``"2h"`` or a number of minutes."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) * 60.0
    raw = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw) * 60.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|m|min|s)", raw)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)", "", raw).strip():
        raise ConfigError(
            f"--time-budget {text!r}: expected a duration such as 30m, 1h30m, 90s or a number "
            "of minutes",
            param="time_budget",
        )
    unit = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}
    seconds = sum(float(v) * unit[u] for v, u in parts)
    if seconds <= 0:
        raise ConfigError(f"--time-budget {text!r}: must be positive", param="time_budget")
    return seconds


def device_class(device: Any) -> str:
    """What a step time depends on: the GPU model, or the CPU model and its core count."""
    import os
    import platform

    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # the cores this process may run on and the threads torch uses: a job pinned to one core
    # (taskset, a Slurm cpu share) must not reuse a step time timed on the whole machine
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{device.type}:{cpu}:{cores}cores:{torch.get_num_threads()}threads:"
        f"torch{torch.__version__}"
    )


def time_training_step(
    model: str,
    options: dict[str, Any],
    planes: int,
    outputs: int,
    batch: int,
    crop: tuple[int, int],
    device: Any,
    amp: str = "auto",
    channels_last: bool = True,
    repeats: int = 4,
) -> float:
    """Seconds of one optimiser step of a throw-away network, with the trainer's precision
    and memory layout on ``device``: the fastest of ``repeats`` after a warm-up step (the
    minimum, because a busy machine only ever makes a step slower)."""
    import torch

    from medseg.device import autocast, resolve_amp_dtype, use_channels_last
    from medseg.models import build_model

    net = build_model(model, planes, outputs, **options).to(device).train()
    dtype = resolve_amp_dtype(amp, device, training=True)
    layout = use_channels_last(channels_last, device, training=True)
    if layout:
        net = net.to(memory_format=torch.channels_last)
    optim = torch.optim.AdamW(net.parameters(), lr=1e-6)
    x = torch.randn(batch, planes, *crop, device=device)
    if layout:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with autocast(device, dtype):
            loss = net(x).float().mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.min(times[1:]))


def quantise(seconds: float) -> float:
    """Round to the grid 2**(k/6) (steps of ~12 %) so timing noise does not change a plan."""
    k = round(6 * math.log2(max(seconds, 1e-6)))
    return float(f"{2 ** (k / 6):.4g}")


def step_times_path() -> Path:
    """Where measured step times are kept: one table per user, whatever the dataset."""
    return Path.home() / ".cache" / "medseg" / STEP_TIMES_FILE


def cached_step_seconds(
    key: str, measure: Any, path: Path, retime: bool = False
) -> tuple[float, bool]:
    """``(seconds, was_cached)`` of the step named ``key``, measured once per table (again
    with ``retime``)."""
    table: dict[str, float] = {}
    if path.is_file():
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            table = {}
    if key in table and not retime:
        return float(table[key]), True
    seconds = quantise(measure())
    table[key] = seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table)
    return seconds, False


def _check_dataset(spec: DatasetSpec, source: str) -> None:
    """Run validate-data's checks on the labelled cases; any problem but an empty label is an
    error listing them all."""
    problems = [p for p in validate_dataset(spec) if p.kind != "empty-label"]
    if problems:
        raise DatasetError(
            f"{source}: {len(problems)} problem(s) found before planning (the same checks as "
            f"`medseg validate-data {source}`):\n{format_problems(problems)}\nfix them, or move "
            "the cases out of the dataset, then plan again"
        )


def _case_notes(unlabelled: list[str], fp: dict[str, Any]) -> list[str]:
    notes = []
    if unlabelled:
        notes.append(
            f"{len(unlabelled)} case(s) have no label and are left out of training: "
            + ", ".join(unlabelled[:20])
            + (" ..." if len(unlabelled) > 20 else "")
        )
    empty = [c["case_id"] for c in fp["cases"] if c.get("foreground_fraction") == 0]
    if empty:
        notes.append(
            f"{len(empty)} case(s) have an empty label (no foreground): {', '.join(empty[:20])}"
        )
    return notes


def make_plan(
    dataset: str | Path,
    time_budget_s: float | None = None,
    device: str = "auto",
    cross_validation: bool = True,
    progress: bool = False,
    retime: bool = False,
) -> Plan:
    """Plan a training run of ``dataset`` that fits ``time_budget_s`` (default 30 min) on
    ``device``; ``cross_validation``: the budget covers all folds and their join; ``retime``:
    measure the step time again instead of using the one cached for this machine."""
    from medseg.device import resolve_device

    budget = DEFAULT_BUDGET_S if time_budget_s is None else float(time_budget_s)
    spec = load_dataset(dataset)
    labelled_cases = [c for c in spec.cases if c.label is not None and Path(c.label).is_file()]
    unlabelled = sorted(c.case_id for c in spec.cases if c not in labelled_cases)
    if not labelled_cases:
        raise DatasetError(f"{dataset}: no case has a label; training needs labelled cases")
    labelled_spec = dataclasses.replace(spec, cases=labelled_cases)
    cache_dir = default_cache_dir(dataset)
    # an unchanged dataset passed validation when its fingerprint was made: read no image
    fp = cached_fingerprint(labelled_spec, cache_dir)
    if fp is None:
        _check_dataset(labelled_spec, str(dataset))
        fp = compute_fingerprint(labelled_spec, cache_dir, progress=progress)
    notes = _case_notes(unlabelled, fp)
    fp_seconds = fp["seconds"]
    dev = resolve_device(device)
    dtype = "cuda" if dev.type == "cuda" else dev.type
    reasons: dict[str, str] = {}
    notes += _fingerprint_notes(fp)

    axis, reasons["data.preprocessing.slice_axis"] = rules.slice_axis(fp["median_spacing"])
    smallest = _smallest_object_mm(fp, axis)
    target, reasons["data.preprocessing.target_spacing"] = rules.target_spacing(
        fp["median_spacing"], fp["body_extent_mm"]["p95"], axis, dtype, smallest
    )
    max_slice = _max_slice_pixels(fp, axis, target)
    obj_px = _object_p95_pixels(fp, axis, target)
    body_px = [
        fp["body_extent_mm"]["p95"][a] / t for a, t in zip(plane_axes(axis), target, strict=True)
    ]
    crop, reasons["data.crop_size"] = rules.crop_size(body_px, max_slice, obj_px, dtype)
    options, reasons["model.options"] = rules.network(crop, dtype)
    n_labelled = fp["num_labelled"]
    axis_slices = float(np.median([c["shape"][axis] for c in fp["cases"]]))
    modality, reasons["data.preprocessing.modality"] = rules.normalisation(fp["channels"])
    k, reasons["data.context"] = rules.context(axis_slices, fp["anisotropy"])
    regions = _regions(spec)
    class_names = resolve_params(PreprocessingParams(), spec).class_names
    outputs = len(regions) if regions else len(class_names)
    planes = len(spec.channel_names) * (2 * k + 1)

    # training slices per fold (labelled cases minus one fold's validation share)
    n_folds_max = min(5, n_labelled) if cross_validation and n_labelled >= 2 else 1
    train_cases = n_labelled - (n_labelled // n_folds_max if n_folds_max > 1 else 0)
    train_slices = int(axis_slices * max(train_cases, 1))
    batch, reasons["train.batch_size"] = rules.batch_size(crop, dtype, train_slices)

    key = f"{device_class(dev)}|unet|{json.dumps(options, sort_keys=True)}|{planes}|{outputs}|{batch}|{crop}"
    step_s, cached = cached_step_seconds(
        key,
        lambda: time_training_step("unet", options, planes, outputs, batch, crop, dev),
        step_times_path(),
        retime,
    )
    step_s *= PIPELINE_OVERHEAD
    per_slice_fwd = step_s / batch / 3  # forward only, fp32: ~1/3 of a training step
    area_ratio = _val_area_ratio(max_slice, crop)
    preprocess_s = 2.0 * fp_seconds  # reading + resampling + writing the cache
    case_mvoxels = float(np.median([np.prod(c["shape"]) for c in fp["cases"]])) / 1e6
    # every case is predicted once out of fold, whatever the number of folds
    oof_all = (
        n_labelled
        * (
            TTA_PASSES * axis_slices * per_slice_fwd * area_ratio
            + oof_scoring_seconds(case_mvoxels, outputs)
        )
        + JOIN_S
    )
    # the shortest useful model: MIN_FOLD_STEPS steps plus its validation share
    min_steps = MIN_FOLD_STEPS if n_labelled >= MIN_TRUSTED_CASES else FEW_CASES_FOLD_STEPS
    min_model_s = FOLD_OVERHEAD_S + min_steps * step_s * VAL_SHARE
    if cross_validation:
        n_folds, reasons["data.num_folds"] = rules.folds(
            n_labelled, budget - preprocess_s - oof_all, min_model_s
        )
    else:
        n_folds = 0
        reasons["data.val_fraction"] = (
            "one model: 20% of the cases validate it"
            if n_labelled > 1
            else "one case: no validation"
        )
    folds_trained = max(n_folds, 1)
    val_cases = max(1, n_labelled // max(n_folds, 2)) if n_labelled > 1 else 0
    val_pass_s = val_cases * axis_slices * per_slice_fwd * area_ratio
    oof_s = oof_all if n_folds else 0.0
    train_s = (budget - preprocess_s - oof_s) / folds_trained - FOLD_OVERHEAD_S
    minimum = (
        preprocess_s
        + oof_s
        + folds_trained * (FOLD_OVERHEAD_S + math.ceil(train_slices / batch) * step_s + val_pass_s)
    )
    if train_s < math.ceil(min(train_slices, 250 * batch) / batch) * step_s + val_pass_s:
        raise ConfigError(
            f"time budget {budget / 60:.1f} min is shorter than one epoch per fold on this "
            f"machine ({step_s:.3f} s per step, {folds_trained} fold(s)); the minimum is about "
            f"{math.ceil(minimum / 60)} min: pass --time-budget {math.ceil(minimum / 60)}m or more",
            param="time_budget",
        )
    sched, reasons["train.epochs"] = rules.schedule(
        train_s, step_s, batch, train_slices, val_pass_s
    )
    reasons["data.samples_per_epoch"] = "steps per epoch x batch (see train.epochs)"
    steps = sched["epochs"] * sched["samples_per_epoch"] // batch
    if steps < UNDERTRAINED_SHARE * min_steps:
        advised = preprocess_s + oof_s + folds_trained * min_model_s
        notes.append(
            f"the budget gives each of the {folds_trained} model(s) {steps} training steps on "
            f"this machine ({step_s:.2f} s per step); expect an undertrained model (rare or "
            f"small classes may not be learnt at all): >= {min_steps} steps each need "
            f"about --time-budget {math.ceil(advised / 60)}m"
        )
    reasons["train.time_limit_minutes"] = (
        f"the planned {train_s / 60:.1f} min per model: a slower machine shortens the "
        "schedule to fit instead of overrunning the budget"
    )
    reasons["train.fill_time_limit"] = (
        "a faster machine (or a slow first timing) grows the schedule to fill that time"
    )
    reasons["train.test_time_augmentation"] = (
        "the four in-plane flips averaged, as nnU-Net mirrors: held-out Dice 0.863 -> 0.885 "
        "on bench_autoplan's tiny set; 4x prediction time"
    )
    reasons["train.val_every"] = f"one validation pass ~{val_pass_s:.0f} s: <= 15% of the time"
    fg_fraction = (
        float(np.mean([c["voxel_fraction"] for c in fp["classes"]])) if fp["classes"] else 0.0
    )
    fg_ratio = 0.5 if fg_fraction < 0.01 else 0.33
    reasons["data.foreground_ratio"] = f"foreground is {100 * fg_fraction:.2f}% of the voxels: " + (
        "oversample it in half the samples"
        if fg_ratio == 0.5
        else "a third of the samples (nnU-Net)"
    )
    if n_labelled < MIN_TRUSTED_CASES:
        notes.append(
            f"only {n_labelled} labelled cases: out-of-fold figures will carry wide intervals "
            f"and cannot be trusted to carry over to new patients (>= {MIN_TRUSTED_CASES} "
            "cases advised)"
        )
    if n_labelled == 1:
        notes.append(
            "one labelled case: no cross-validation and no validation are possible; the model "
            "trains on that case and its figures are unknown. Label more cases to measure it"
        )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name).strip("_") or "plan"
    preprocessing: dict[str, Any] = {
        "modality": modality,
        "channel_names": list(spec.channel_names),
        "slice_axis": axis,
        "target_spacing": list(target),
        "class_names": class_names,
    }
    reasons["data.preprocessing.class_names"] = "from the dataset's labels"
    if regions:
        preprocessing["regions"] = regions
        reasons["data.preprocessing.regions"] = "regions from dataset.json (nnU-Net v2 convention)"
    raw: dict[str, Any] = {
        "name": f"{name}_auto",
        "seed": 0,
        "device": device,
        "data": {
            "dataset": str(Path(dataset).resolve()),
            "preprocessing": preprocessing,
            "context": k,
            "crop_size": list(crop),
            "foreground_ratio": fg_ratio,
            "samples_per_epoch": sched["samples_per_epoch"],
            "num_folds": max(n_folds, 2),
            "val_fraction": 0.0 if n_labelled == 1 else 0.2,
            "num_workers": 2,
            "augmentation": AUGMENTATION,
        },
        "model": {"name": "unet", "options": options},
        "loss": {"dice_weight": 1.0, "ce_weight": 1.0},
        "optim": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001},
        "schedule": {"name": "poly", "warmup_epochs": min(1, max(sched["epochs"] // 16, 0))},
        "train": {
            "epochs": sched["epochs"],
            "batch_size": batch,
            "amp": "auto",
            "channels_last": True,
            "grad_clip": 12.0,
            "val_every": sched["val_every"],
            "time_limit_minutes": round(max(train_s, 30.0) / 60.0, 2),
            "fill_time_limit": True,
            "test_time_augmentation": True,
            "selection_ema": 0.7,
            "early_stopping_patience": "auto",
            "overlays": 1,
        },
    }
    reasons["data.augmentation"] = "nnU-Net-strength spatial and intensity augmentation, batched"
    reasons["model.name"] = "2D U-Net (nnU-Net's 2d architecture family)"
    reasons["optim"] = "AdamW 2e-3 with a poly schedule: the recipe measured on BraTS"
    estimate = {
        "budget_s": budget,
        "step_seconds": step_s,
        "step_cached": float(cached),
        "preprocess_s": preprocess_s,
        "train_per_fold_s": train_s,
        "out_of_fold_s": oof_s,
        "folds": float(n_folds),
        "total_s": preprocess_s + oof_s + folds_trained * (train_s + FOLD_OVERHEAD_S),
    }
    plan = Plan(raw, reasons, notes, fp, estimate)
    plan.config()  # the plan must be a valid config
    return plan


def _fingerprint_notes(fp: dict[str, Any]) -> list[str]:
    notes = []
    lo, hi = fp["min_spacing"], fp["max_spacing"]
    if any(h > 1.1 * low for low, h in zip(lo, hi, strict=True)):
        notes.append(
            f"spacing varies across cases ({rules.mm_text(lo)} to {rules.mm_text(hi)}): every case is "
            "resampled in-plane to the target spacing"
        )
    if len(fp["orientations"]) > 1:
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(fp["orientations"].items()))
        notes.append(f"orientations differ ({counts}): every case is reoriented to RAS")
    rare = rules.rare_classes(fp["classes"], fp["num_labelled"])
    if rare:
        notes.append(
            "classes absent from most cases (expect a low Dice for them): " + "; ".join(rare)
        )
    return notes


def _smallest_object_mm(fp: dict[str, Any], axis: int) -> float | None:
    axes = plane_axes(axis)
    sizes = [
        min(c["largest_object_extent_mm"][a] for a in axes)
        for c in fp["classes"]
        if c.get("largest_object_extent_mm")
    ]
    return min(sizes) if sizes else None


def _max_slice_pixels(
    fp: dict[str, Any], axis: int, target: tuple[float, float]
) -> tuple[int, int]:
    sizes = [rules.slice_pixels(c["shape"], c["spacing"], axis, target) for c in fp["cases"]]
    return tuple(int(np.percentile([s[i] for s in sizes], 95)) for i in range(2))  # type: ignore[return-value]


def _object_p95_pixels(
    fp: dict[str, Any], axis: int, target: tuple[float, float]
) -> list[float] | None:
    ext = fp["foreground_extent_mm"]["p95"]
    if not ext:
        return None
    return [ext[a] / t for a, t in zip(plane_axes(axis), target, strict=True)]


def _val_area_ratio(max_slice: tuple[int, int], crop: tuple[int, int]) -> float:
    return max(1.0, (max_slice[0] * max_slice[1]) / (crop[0] * crop[1]))


def _regions(spec: DatasetSpec) -> dict[str, list[int]] | None:
    """nnU-Net v2 regions (``labels: {name: [values]}``) from the dataset's dataset.json."""
    if spec.root is None or not (Path(spec.root) / "dataset.json").is_file():
        return None
    from medseg.io.cases import read_dataset_json

    meta = read_dataset_json(Path(spec.root) / "dataset.json")
    labels = meta.get("labels") or {}
    regions = {str(k): [int(x) for x in v] for k, v in labels.items() if isinstance(v, list)}
    return regions or None


# ------------------------------------------------------------------ writing and explaining
def plan_to_yaml(plan: Plan) -> str:
    """The plan as a commented YAML config: a header with the estimate and the notes, and a
    ``# why`` comment beside every planned value."""
    est = plan.estimate
    header = [
        f"# Planned by medseg {__version__} `medseg plan` from the fingerprint of "
        f"{plan.fingerprint['num_labelled']} labelled case(s) of {plan.fingerprint['dataset']}.",
        f"# Time budget {est['budget_s'] / 60:.0f} min: estimated {est['total_s'] / 60:.1f} min "
        f"({int(est['folds']) or 1} model(s), {est['train_per_fold_s'] / 60:.1f} min training "
        f"each, {est['step_seconds']:.3f} s per step measured on this machine).",
        "# Edit any value and train with: medseg train THIS_FILE --folds all",
        *[f"# note: {n}" for n in plan.notes],
        f"# {RESEARCH_USE_NOTICE}",
    ]
    return "\n".join(header) + "\n" + "\n".join(_yaml_lines(plan.raw, plan.reasons, "", 0)) + "\n"


def _yaml_lines(
    node: dict[str, Any], reasons: dict[str, str], prefix: str, indent: int
) -> list[str]:
    lines = []
    pad = "  " * indent
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        comment = f"  # {reasons[dotted]}" if dotted in reasons else ""
        nested = any(r.startswith(dotted + ".") for r in reasons)
        if isinstance(value, dict) and nested:
            lines.append(f"{pad}{key}:{comment}")
            lines.extend(_yaml_lines(value, reasons, dotted + ".", indent + 1))
            continue
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
        text = text.strip().removesuffix("...").strip()
        lines.append(f"{pad}{key}: {text}{comment}")
    return lines


def explain(plan: Plan) -> str:
    """The decisions as a table: key, value, why."""
    rows = []
    for dotted, why in plan.reasons.items():
        node: Any = plan.raw
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = json.dumps(node) if not isinstance(node, str) else node
        rows.append((dotted, value if len(value) <= 40 else value[:37] + "...", why))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [
        f"{'setting':<{width[0]}}  {'value':<{width[1]}}  why",
        "-" * (width[0] + width[1] + 40),
    ]
    lines += [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def summary(plan: Plan) -> str:
    """Two lines: what will be trained and how long it should take here."""
    est, raw = plan.estimate, plan.raw
    models = f"{int(est['folds'])}-fold cross-validation" if est["folds"] else "one model"
    return (
        f"plan: {models}, {raw['train']['epochs']} epochs x "
        f"{raw['data']['samples_per_epoch']} samples, batch {raw['train']['batch_size']}, crop "
        f"{raw['data']['crop_size']}, slice axis {raw['data']['preprocessing']['slice_axis']}\n"
        f"estimate: {est['total_s'] / 60:.1f} min of the {est['budget_s'] / 60:.0f} min budget "
        f"({est['step_seconds']:.3f} s per training step here)"
    )


def write_plan(
    plan: Plan, path: str | Path, inputs: list[Path] | None = None, overwrite: bool = False
) -> Path:
    """Write :func:`plan_to_yaml` to ``path`` atomically (never over an input)."""
    from medseg.io.atomic import check_output

    path = check_output(path, overwrite=overwrite, inputs=list(inputs or []))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, plan_to_yaml(plan))


def is_dataset_argument(path: str | Path) -> bool:
    """Whether ``medseg train ARG`` names a dataset (to be planned) rather than a config:
    a folder, a dataset.json or .csv manifest, or a YAML file without a ``data:`` section."""
    path = Path(path)
    if path.is_dir() or path.name == "dataset.json" or path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        from medseg.data.config import read_yaml_mapping

        raw = read_yaml_mapping(path)
        return "data" not in raw and ("cases" in raw or "pattern" in raw)
    return False
