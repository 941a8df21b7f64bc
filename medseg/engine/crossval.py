"""Cross-validation in one command: k folds, out-of-fold evaluation, postprocessing chosen on
out-of-fold predictions, and a model folder that is the ensemble of the folds.

``medseg train CONFIG --folds all --output DIR`` (:func:`cross_validate`):

1. ``DIR/splits.json`` (or ``data.split_file``): the patients of each fold's validation set
   (dealt from a seeded shuffle of the labelled, non-test cases). Written once and then kept
   (:func:`medseg.data.splits.plan_split`, the same stable plan single runs use): re-running
   after cases were added never moves an existing case between training and validation; new
   cases train in every fold (listed under ``added_cases``), or with ``data.new_cases: val``
   join the validation cases of the smallest fold.
2. Preprocessing fitted once on every case (as nnU-Net's dataset fingerprint), so the folds
   share it and can be ensembled.
3. Each fold trains as an ordinary run folder ``DIR/fold_<k>/`` (resumable; a finished fold
   has ``fold_done.json`` and is skipped on a re-run). Folds can run in separate processes
   (``--folds 0,2`` here, ``--folds 1,3`` there) or as torchrun jobs; whoever finds every fold
   finished joins.
4. Join (:mod:`medseg.engine.crossval_join`): each fold's ``best.pt`` predicts its own
   held-out cases (never a case it trained on); per case and structure (class or region)
   Dice, HD95, false-positive lesions, lesion sensitivity and F1, each summarised with a
   bootstrap interval over cases; postprocessing chosen per structure on the out-of-fold
   predictions (it may not lose true lesions, and must raise Dice + lesion F1);
   ``DIR/cv_summary.csv``, ``DIR/cv_summary_intervals.csv``, ``DIR/cv_summary.png`` and
   ``DIR/model.json``.

File and folder names are in :mod:`medseg.engine.cv_layout`; this module imports the join
module, never the reverse.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg import RESEARCH_USE_NOTICE
from medseg.device import DistInfo
from medseg.engine.config import TrainConfig
from medseg.engine.crossval_join import join_folds
from medseg.engine.cv_layout import FOLD_DONE, SPLITS_FILE, CrossValSetup, fold_dir
from medseg.errors import ConfigError, DatasetError
from medseg.io.atomic import write_json

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CrossValResult:
    """What :func:`cross_validate` did in this call."""

    output: Path
    num_folds: int
    trained: list[int]
    skipped: list[int]
    joined: bool
    missing: list[int] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    wall_seconds: float = 0.0
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


def parse_folds(text: str | Sequence[int] | None, num_folds: int) -> list[int]:
    """``"all"`` -> every fold; ``"0,2"`` -> those; refuses folds out of range."""
    if text is None or text == "all":
        return list(range(num_folds))
    if isinstance(text, str):
        try:
            folds = [int(f) for f in text.split(",") if f.strip()]
        except ValueError:
            folds = []
    else:
        folds = [int(f) for f in text]
    if not folds or any(not 0 <= f < num_folds for f in folds):
        raise ConfigError(
            f"folds {text!r}: expected 'all' or fold numbers among 0..{num_folds - 1} "
            f"(data.num_folds = {num_folds}, capped at the number of labelled cases)"
        )
    return sorted(set(folds))


def fold_config(cfg: TrainConfig, plan: dict[str, Any], fold: int) -> TrainConfig:
    """``cfg`` with the fold's validation patients fixed (everything else trains)."""
    val = plan["folds"][fold]["val"]
    data = cfg.data.model_copy(update={"val_cases": list(val), "fold": None})
    return cfg.model_copy(update={"data": data, "name": f"{cfg.name}-fold{fold}"})


def cross_validate(
    cfg: TrainConfig,
    output: str | Path,
    folds: str | Sequence[int] | None = "all",
    device: str | None = None,
    info: DistInfo | None = None,
    progress: bool = True,
) -> CrossValResult:
    """Train the requested folds into ``output/fold_<k>`` and join when all are finished."""
    from medseg.engine.trainer import train

    start = time.perf_counter()
    info = info or DistInfo()
    output = Path(output)
    setup = prepare_crossval(cfg, output, info, progress)
    todo = parse_folds(folds, setup.num_folds)
    result = CrossValResult(output, setup.num_folds, [], [], joined=False)
    pending = [k for k in todo if not (output / fold_dir(k) / FOLD_DONE).is_file()]
    result.skipped = [k for k in todo if k not in pending]
    if info.is_main:
        _announce(cfg, setup, pending, device, output)
    for fold in pending:
        run_dir = output / fold_dir(fold)
        last = run_dir / "checkpoints" / "last.pt"
        fold_start = time.perf_counter()
        fit = train(
            fold_config(cfg, setup.plan, fold),
            output=run_dir,
            resume=last if last.is_file() else None,
            device=device,
            info=info,
            progress=progress,
            fitted=setup.params,
        )
        if fit.interrupted:
            logger.warning("cross-validation interrupted in fold %d; re-run to continue", fold)
            result.interrupted = True
            result.wall_seconds = time.perf_counter() - start
            return result
        if info.is_main:
            write_json(
                run_dir / FOLD_DONE,
                {
                    "fold": fold,
                    "val_cases": setup.plan["folds"][fold]["val"],
                    "epochs_completed": fit.epochs_completed,
                    "best_epoch": fit.best_epoch,
                    "best_smoothed_val_dice": fit.best_metric,
                    "stopped_early": fit.stopped_early,
                    "wall_seconds": round(time.perf_counter() - fold_start, 1),
                },
            )
        result.trained.append(fold)
    result.missing = [
        k for k in range(setup.num_folds) if not (output / fold_dir(k) / FOLD_DONE).is_file()
    ]
    if info.is_main and not result.missing:
        result.summary = join_folds(output, setup, device=device or cfg.device, progress=progress)
        result.joined = True
    elif info.is_main:
        logger.info(
            "folds %s are not finished yet; the last process to finish them joins (or re-run "
            "with --folds all)",
            result.missing,
        )
    result.wall_seconds = time.perf_counter() - start
    return result


def prepare_crossval(
    cfg: TrainConfig, output: Path, info: DistInfo, progress: bool = True
) -> CrossValSetup:
    """Split plan (rank 0 writes it, the others wait for the file), parameters fitted on every
    case, and the cache built for every case."""
    from medseg.data.cache import prepare_cases
    from medseg.data.datasets import load_dataset
    from medseg.data.pipeline import (
        default_cache_dir,
        fit_params_cached,
        resolve_params,
        split_file_path,
    )
    from medseg.data.splits import plan_split

    spec = load_dataset(cfg.data.dataset)
    labelled = [
        c.case_id for c in spec.cases if c.label is not None and (c.split or "").lower() != "test"
    ]
    if len(labelled) < 2:
        raise DatasetError(
            f"{cfg.data.dataset}: {len(labelled)} labelled case(s); cross-validation needs at "
            "least 2 (label more cases, or train one run without --folds)"
        )
    num_folds = min(cfg.data.num_folds, len(labelled))
    cache_dir = (
        Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir(cfg.data.dataset)
    )
    path = split_file_path(cfg.data, cache_dir) if cfg.data.split_file else output / SPLITS_FILE
    if info.is_main:
        output.mkdir(parents=True, exist_ok=True)
        plan = plan_split(
            labelled,
            path,
            num_folds=num_folds,
            seed=cfg.data.split_seed,
            new_cases=cfg.data.new_cases,
        )
    else:
        plan = _wait_for_json(path)
    params = fit_params_cached(
        resolve_params(cfg.data.preprocessing, spec), spec, labelled, cache_dir
    )
    cached = []
    if info.is_main:
        specs = [spec.case(c) for c in labelled]
        cached = prepare_cases(specs, params, cache_dir, progress=progress)
    return CrossValSetup(plan, params, spec, num_folds, cached)


def estimate_seconds(
    cfg: TrainConfig, setup: CrossValSetup, folds: int, device: str | None
) -> dict[str, float]:
    """Expected wall time of ``folds`` folds on this machine, from timed training steps of
    the configured network (a throw-away copy) at the configured batch and crop size, in
    the trainer's precision and memory layout (:func:`medseg.engine.planner.time_training_step`)."""
    from medseg.data.slicing import num_input_planes, plane_shape
    from medseg.device import resolve_device
    from medseg.engine.planner import (
        FOLD_OVERHEAD_S,
        JOIN_S,
        TTA_PASSES,
        oof_scoring_seconds,
        time_training_step,
    )

    dev = resolve_device(device or cfg.device, DistInfo())
    planes = num_input_planes(len(setup.params.channel_names), cfg.data.context)
    shape0 = setup.cached[0].label.shape if setup.cached else (240, 240, 155)
    axis = cfg.data.train_axes()[0]  # what the trainer counts slices and crops along
    crop = cfg.data.crop_size or plane_shape(shape0, axis)
    step = time_training_step(
        cfg.model.name,
        dict(cfg.model.options),
        planes,
        setup.params.num_outputs,
        cfg.train.batch_size,
        tuple(crop),
        dev,
        amp=cfg.train.amp,
        channels_last=cfg.train.channels_last,
        repeats=3,
    )
    n_val = max(1, math.ceil(len(setup.cached) / max(setup.num_folds, 1)))
    slices = float(np.mean([c.label.shape[axis] for c in setup.cached] or [shape0[axis]]))
    samples = cfg.data.samples_per_epoch or int(slices * max(1, len(setup.cached) - n_val))
    steps = cfg.train.epochs * max(1, samples // cfg.train.batch_size)
    # data loading and augmentation on the same cores: ~25 % on top of the pure step (measured
    # pipeline ratio 0.75-0.8 on a 2-core CPU), forward-only ~1/3 of a training step
    train_s = steps * step * 1.25
    area = float(np.prod(shape0)) / max(float(np.prod(crop)) * shape0[axis], 1.0)
    per_case = slices * len(cfg.data.train_axes()) * step / cfg.train.batch_size / 3 * area
    n_vals = math.ceil(cfg.train.epochs / cfg.train.val_every)
    val_s = n_vals * n_val * per_case
    limit = cfg.train.time_limit_minutes
    if limit is not None:  # the trainer fits (and with fill_time_limit fills) this time
        fold_s = 60.0 * limit if cfg.train.fill_time_limit else min(train_s + val_s, 60.0 * limit)
        share = fold_s / (train_s + val_s)
        train_s, val_s = train_s * share, val_s * share
    passes = TTA_PASSES if cfg.train.test_time_augmentation else 1
    mvoxels = float(np.prod(shape0)) / 1e6
    oof_case = passes * per_case + oof_scoring_seconds(mvoxels, setup.params.num_outputs)
    oof_s = setup.num_folds * n_val * oof_case + JOIN_S + folds * FOLD_OVERHEAD_S
    return {
        "step_seconds": step,
        "train": folds * train_s,
        "validation": folds * val_s,
        "out_of_fold": oof_s,
        "total": folds * (train_s + val_s) + oof_s,
    }


def _announce(
    cfg: TrainConfig, setup: CrossValSetup, pending: list[int], device: str | None, output: Path
) -> None:
    if not pending:
        logger.info("every requested fold is finished; joining")
        return
    est = estimate_seconds(cfg, setup, len(pending), device)
    logger.warning(
        "cross-validation into %s: %d fold(s) to train (%s) of %d, %d epochs each; measured "
        "%.2f s per training step here -> about %.0f min in all (training %.0f, validation "
        "%.0f, out-of-fold prediction %.0f). %s",
        output,
        len(pending),
        ", ".join(map(str, pending)),
        setup.num_folds,
        cfg.train.epochs,
        est["step_seconds"],
        est["total"] / 60,
        est["train"] / 60,
        est["validation"] / 60,
        est["out_of_fold"] / 60,
        RESEARCH_USE_NOTICE,
    )


def _wait_for_json(path: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise DatasetError(f"{path} did not appear within {timeout_s:.0f} s (rank 0 failed?)")
        time.sleep(0.5)
    return json.loads(path.read_text(encoding="utf-8"))
