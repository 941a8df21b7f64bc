"""The training loop: fit -> epoch -> step, with validation, checkpoints and a run folder.

Use :func:`train` (what ``medseg train`` calls) or build a :class:`Trainer` directly::

    cfg = load_config("configs/sample.yaml", ["train.epochs=2"])
    result = train(cfg, output="runs/demo")
    print(result.best_metric, result.run_dir)

Reproducibility: weights are initialised from ``seed``; the data order is a function of
``(seed, epoch, rank)`` (:meth:`~medseg.data.pipeline.TrainBatches.set_epoch`) and the RNG
states are stored in every checkpoint, so ``--resume`` after a completed epoch continues
exactly as an uninterrupted run would (tested on CPU). A run interrupted mid-epoch resumes from
the start of that epoch with the weights it had when interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from medseg.checkpoint import ModelRecord, load_checkpoint, save_checkpoint
from medseg.data.pipeline import PreparedData, TrainBatches, build_train_batches, prepare_data
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.splits import Split
from medseg.device import (
    DistInfo,
    all_gather_objects,
    any_rank,
    autocast,
    barrier,
    destroy_process_group,
    init_process_group,
    resolve_amp_dtype,
    resolve_device,
    use_channels_last,
)
from medseg.engine import artifacts
from medseg.engine.config import TrainConfig, config_to_yaml
from medseg.engine.optim import build_optimizer, build_scheduler, lr_factor
from medseg.engine.state import capture_rng_state, restore_rng_state, seed_everything
from medseg.engine.validation import ValidationResult, validate
from medseg.errors import CheckpointError, OverwriteError
from medseg.io.atomic import remove_partials
from medseg.models import architecture_options

logger = logging.getLogger(__name__)
# train.fill_time_limit grows a run to at most this many times its configured epochs
FILL_MAX_FACTOR = 4


@dataclass
class FitResult:
    """What a finished (or interrupted) run produced."""

    run_dir: Path
    epochs_completed: int
    best_metric: float
    best_epoch: int
    stopped_early: bool = False
    interrupted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and/or DDP wrappers (for ``state_dict``)."""
    for _ in range(3):
        model = getattr(model, "_orig_mod", model)
        model = getattr(model, "module", model)
    return model


def parameter_hash(model: nn.Module) -> str:
    """SHA-256 of the parameters (not buffers: BatchNorm statistics are rank-local in DDP)."""
    digest = hashlib.sha256()
    for name, param in unwrap_model(model).named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def default_run_dir(cfg: TrainConfig, output: str | Path | None) -> Path:
    """``--output``, else ``cfg.output``, else ``runs/<name>-<YYYYmmdd-HHMMSS>``."""
    if output is not None:
        return Path(output)
    if cfg.output:
        return Path(cfg.output)
    return Path("runs") / f"{cfg.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class Trainer:
    """Owns the model, optimiser and data of one run; :meth:`fit` runs the epochs.

    Public hooks, called on every rank in this order, to override in a subclass (nnU-Net
    v2's names): :meth:`on_train_start`; then per epoch :meth:`on_train_epoch_start` (seeds
    the epoch), :meth:`train_step` per batch, :meth:`on_train_epoch_end` (the training
    metrics), :meth:`validate` and :meth:`on_validation_epoch_end` (model selection and
    early stopping) when validation is due, :meth:`on_epoch_end` (after the artefacts and
    checkpoints); finally :meth:`on_train_end`. An override that replaces rather than adds
    calls ``super()``. ``epoch_end_hooks`` are called as ``hook(trainer, row)`` by
    :meth:`on_epoch_end` (e.g. for extra logging) without subclassing.

    Model selection: ``best.pt`` is the epoch with the best *smoothed* validation Dice (an
    exponential moving average, ``train.selection_ema``), and early stopping counts
    validations without a better smoothed Dice: with few, noisy validation cases the raw
    Dice of one epoch is mostly luck.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        device: torch.device,
        info: DistInfo | None = None,
        resume_from: Path | None = None,
        progress: bool = True,
        fitted: PreprocessingParams | None = None,
    ) -> None:
        """``fitted``: preprocessing already fitted elsewhere (cross-validation fits once on
        every case so all folds share it); a resumed or initialised run keeps its own."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.info = info or DistInfo()
        self.progress = progress and self.info.is_main
        self.epoch_end_hooks: list[Callable[[Trainer, dict[str, Any]], None]] = []
        self.history: list[dict[str, Any]] = []
        self.best_metric, self.best_epoch, self.bad_validations = -1.0, 0, 0
        self.dice_ema: float | None = None
        self.start_epoch, self.global_step = 0, 0
        self._stop_signal: int | None = None
        resume = load_checkpoint(resume_from) if resume_from else None
        init = _init_checkpoint(cfg.train.init_from) if resume is None else None
        source = resume or (init[1] if init else None)
        if source is not None:
            fitted = PreprocessingParams.model_validate(source["preprocessing"])
        # a resumed run keeps its own split, even if cases were added to the dataset meanwhile;
        # a fine-tune on a new copy of the dataset keeps its starting model's validation cases
        split = resume.get("data_split") if resume is not None else None
        start = init[1].get("data_split") if init is not None else None
        self.data: PreparedData = prepare_data(
            cfg.data,
            self.info,
            fitted,
            self.progress,
            Split.from_dict(split) if split else None,
            Split.from_dict(start, f"train.init_from {init[0]}") if init and start else None,
        )
        self._build(cfg)
        if resume is not None:
            self._restore(resume, resume_from)
        elif init is not None:
            self._init_weights(*init)
        self.tb = (
            artifacts.TensorBoardLogger(self.run_dir / "tensorboard") if self.info.is_main else None
        )

    # ----------------------------------------------------------------- setup
    def _build(self, cfg: TrainConfig) -> None:
        from medseg.data.slicing import num_input_planes
        from medseg.models import build_model

        seed_everything(cfg.seed)
        self.in_channels = num_input_planes(len(self.data.channel_names), cfg.data.context)
        self.num_classes = len(self.data.class_names)
        self.num_outputs = self.data.params.num_outputs  # regions (sigmoid) or classes
        model = build_model(cfg.model.name, self.in_channels, self.num_outputs, **cfg.model.options)
        model = model.to(self.device)
        # channels_last: faster cuDNN convolutions, and faster CPU training (bench_train.py)
        self.channels_last = use_channels_last(cfg.train.channels_last, self.device, training=True)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the plain module: state_dict, validation
        if self.info.enabled:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.model = model
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.train_model = torch.compile(model) if cfg.train.compile else model
        self.loss_fn = self._build_loss(cfg)
        workers = cfg.train.num_workers
        workers = cfg.data.num_workers if workers is None else workers
        self.batches: TrainBatches = build_train_batches(
            self.data, cfg.data, cfg.train.batch_size, workers, cfg.seed, self.info, self.device
        )
        self.steps_per_epoch = max(len(self.batches), 1)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, cfg.train.epochs, self.steps_per_epoch
        )
        self.amp_dtype = resolve_amp_dtype(cfg.train.amp, self.device, training=True)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        logger.info(
            "model %s: %d inputs -> %d %s, %.2fM parameters, device %s, amp %s",
            cfg.model.name,
            self.in_channels,
            self.num_outputs,
            "regions (sigmoid)" if self.data.params.regions else "classes",
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            self.device,
            self.amp_dtype,
        )

    def _build_loss(self, cfg: TrainConfig) -> nn.Module:
        from medseg.losses import RegionDiceBCELoss, build_loss

        regions = self.data.params.regions
        if regions:
            return RegionDiceBCELoss(
                list(regions.values()),
                dice_weight=cfg.loss.dice_weight,
                ce_weight=cfg.loss.ce_weight,
            )
        return build_loss(
            self.num_classes,
            dice_weight=cfg.loss.dice_weight,
            ce_weight=cfg.loss.ce_weight,
            class_weights=cfg.loss.class_weights,
            include_background=cfg.loss.include_background,
            ignore_index=self.data.params.ignore_label,
        )

    def _restore(self, ckpt: dict[str, Any], path: Path | None) -> None:
        if ckpt["model"]["name"] != self.cfg.model.name:
            raise CheckpointError(
                f"{path}: holds a {ckpt['model']['name']!r} model but the config asks for "
                f"{self.cfg.model.name!r}; resume with the config the run was started with"
            )
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        state = ckpt.get("trainer", {})
        self.history = list(state.get("history", []))
        self.best_metric = float(state.get("best_metric", -1.0))
        self.best_epoch = int(state.get("best_epoch", 0))
        self.bad_validations = int(state.get("bad_validations", 0))
        self.dice_ema = state.get("dice_ema")
        self.global_step = int(state.get("global_step", 0))
        self.start_epoch = int(ckpt["epoch"])
        changed = _changed_keys(ckpt.get("config", {}), self.cfg.model_dump(mode="json"))
        if changed:
            logger.warning(
                "resuming with a config that differs from the run's in: %s", ", ".join(changed)
            )
        restore_rng_state(ckpt["rng"])
        logger.info("resumed from %s after epoch %d", path, self.start_epoch)

    # ----------------------------------------------------------------- loop
    def fit(self, max_epochs: int | None = None) -> FitResult:
        """Train from ``start_epoch`` to ``train.epochs`` (or ``max_epochs`` more epochs in this
        call), validating every ``val_every`` epochs. Ctrl-C / SIGTERM save ``last.pt``."""
        cfg = self.cfg.train
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for folder in (self.run_dir, self.run_dir / "checkpoints", self.run_dir / "overlays"):
                remove_partials(folder)  # left by a run killed mid-write (kill -9)
            artifacts.write_text(self.run_dir / "config.yaml", config_to_yaml(self.cfg))
            if self.data.split is not None:
                text = json.dumps(self.data.split.as_dict(), indent=2)
                artifacts.write_text(self.run_dir / "split.json", text + "\n")
        end = cfg.epochs if max_epochs is None else min(cfg.epochs, self.start_epoch + max_epochs)
        result = FitResult(self.run_dir, self.start_epoch, self.best_metric, self.best_epoch)
        self.on_train_start()
        started = time.perf_counter()
        self._first_epoch_of_call = self.start_epoch
        with _StopSignals(self):
            epoch = self.start_epoch
            # a while loop: train.fill_time_limit may move `end` past the configured epochs
            while epoch < end:
                row = self._train_epoch(epoch)
                if self._stop_signal is not None:
                    self._save("last.pt", epoch, row, complete=False)
                    result.interrupted = True
                    logger.warning(
                        "interrupted by signal %d during epoch %d; saved %s (resume with --resume)",
                        self._stop_signal,
                        epoch + 1,
                        self.run_dir / "checkpoints" / "last.pt",
                    )
                    break
                self.on_train_epoch_end(epoch, row)
                end = self._epochs_in_time(started, epoch, end, grow=max_epochs is None)
                last = epoch + 1 >= end
                stop_early = self._end_epoch(epoch, row, last=last)
                result.epochs_completed = self.start_epoch = epoch + 1
                if last:
                    result.stopped_early = end < cfg.epochs and max_epochs is None
                    break
                if stop_early:
                    result.stopped_early = True
                    logger.info(
                        "early stopping: no improvement for %d validations", self.bad_validations
                    )
                    break
                epoch += 1
        self._record_rank_hashes()
        if self.tb is not None:
            self.tb.close()
        result.best_metric, result.best_epoch = self.best_metric, self.best_epoch
        result.history = list(self.history)
        self.on_train_end(result)
        return result

    def _epochs_in_time(self, started: float, epoch: int, end: int, grow: bool = True) -> int:
        """The run's last epoch (exclusive) under ``train.time_limit_minutes``: ``end``, or
        fewer when the epochs left do not fit at this call's mean epoch time, or more with
        ``train.fill_time_limit`` when they fit with room to spare (up to
        :data:`FILL_MAX_FACTOR` x the configured epochs). Either change re-sizes the
        learning-rate schedule so it still anneals by the new end (a cut-off run would stop
        at a high learning rate). Every rank takes the same decision."""
        limit = self.cfg.train.time_limit_minutes
        if limit is None:
            return end
        elapsed = time.perf_counter() - started
        per_epoch = elapsed / (epoch + 1 - self._first_epoch_of_call)
        fit = epoch + 1 + max(0, int((60.0 * limit - elapsed) // per_epoch))
        fit = int(min(all_gather_objects(fit)))  # type: ignore[type-var]
        # grow only on a mean over whole validation cycles: a first epoch without its
        # validation pass looks faster than the run is (it grew, then had to shrink back)
        done = epoch + 1 - self._first_epoch_of_call
        cycles = done >= 2 and done % self.cfg.train.val_every == 0
        if self.cfg.train.fill_time_limit and grow and cycles:
            fit = min(fit, FILL_MAX_FACTOR * self.cfg.train.epochs)
        elif fit >= end:
            return end
        if fit == end or (fit > end and fit - end < max(1, end // 20)):
            return end  # growing by under 5% is not worth re-sizing the schedule for
        base_lr = self.scheduler.base_lrs[0]
        warmup = round(self.cfg.schedule.warmup_epochs * self.steps_per_epoch)
        total = fit * self.steps_per_epoch
        self.scheduler.lr_lambdas = [lr_factor(self.cfg.schedule, total, warmup, base_lr)]
        logger.log(
            logging.WARNING if fit < self.cfg.train.epochs else logging.INFO,
            "time limit %.1f min: %.0f s per epoch here, so the run ends after epoch %d "
            "(configured: %d); the learning-rate schedule is re-sized to end there "
            "(train.time_limit_minutes%s)",
            limit,
            per_epoch,
            fit,
            self.cfg.train.epochs,
            ", train.fill_time_limit" if fit > self.cfg.train.epochs else "",
        )
        return fit

    # ----------------------------------------------------------------- hooks
    def on_train_start(self) -> None:
        """Called once before the first epoch of :meth:`fit` (after a resume, too)."""

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called before the first batch of each epoch (``epoch`` 0-based): seeds the epoch's
        order, crops, worker seeds and augmentation from ``(seed, epoch, rank)`` only."""
        self.batches.set_epoch(epoch)
        self.train_model.train()

    def on_train_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Called after the last batch of each completed epoch, before validation; ``row``
        holds the training metrics (``train_loss``, ``lr``, ...), later ones may be added."""

    def on_validation_epoch_end(
        self, epoch: int, val: ValidationResult, row: dict[str, Any]
    ) -> None:
        """Called after each validation: model selection on the smoothed (EMA) mean Dice,
        written to ``row`` and to ``best_metric``/``best_epoch``/``bad_validations`` (the
        epoch is the best so far when ``best_epoch == epoch + 1`` afterwards)."""
        a = self.cfg.train.selection_ema
        raw = val.mean_dice
        self.dice_ema = raw if self.dice_ema is None else a * self.dice_ema + (1 - a) * raw
        row["val_mean_dice_ema"] = self.dice_ema
        row["selected_on"] = "val_mean_dice_ema" if a > 0 else "val_mean_dice"
        if self.dice_ema > self.best_metric:
            self.best_metric, self.best_epoch, self.bad_validations = self.dice_ema, epoch + 1, 0
        else:
            self.bad_validations += 1

    def on_epoch_end(self, epoch: int, row: dict[str, Any]) -> None:
        """Called after each epoch's validation, artefacts and checkpoints; ``epoch`` is
        0-based, ``row`` the epoch's metrics (what ``metrics.csv`` gets). Calls the
        ``epoch_end_hooks``."""
        for hook in self.epoch_end_hooks:
            hook(self, row)

    def on_train_end(self, result: FitResult) -> None:
        """Called once when :meth:`fit` ends (finished, stopped early or interrupted)."""

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.on_train_epoch_start(epoch)
        total, seen, start = 0.0, 0, time.perf_counter()
        bar = tqdm(
            total=len(self.batches) * self.cfg.train.batch_size * self.info.world_size,
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            unit="slice",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        for batch in self._batches():
            loss = self.train_step(batch)
            total += loss
            seen += 1
            bar.update(batch["image"].shape[0] * self.info.world_size)
            bar.set_postfix(loss=f"{total / seen:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            if self.tb is not None and self.global_step % self.cfg.train.log_every == 0:
                self.tb.scalars(
                    {"loss": loss, "lr": self.scheduler.get_last_lr()[0]}, self.global_step, "step/"
                )
            if any_rank(self._stop_signal is not None, self.device):
                self._stop_signal = self._stop_signal or signal.SIGTERM
                break
        bar.close()
        elapsed = time.perf_counter() - start
        slices = seen * self.cfg.train.batch_size * self.info.world_size
        return {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "lr": self.scheduler.get_last_lr()[0],
            "epoch_seconds": round(elapsed, 3),
            "slices_per_second": round(slices / max(elapsed, 1e-9), 2),
        }

    def _batches(self) -> Iterator[dict[str, Any]]:
        """The loader's batches; a Ctrl-C also reaches the DataLoader workers (same process
        group) and kills them, which must end the epoch quietly rather than crash."""
        iterator = iter(self.batches)
        while True:
            try:
                yield next(iterator)
            except StopIteration:
                return
            except RuntimeError:
                if self._stop_signal is None:
                    raise
                return

    def train_step(self, batch: dict[str, Any]) -> float:
        """One optimiser step on ``batch`` (``image`` ``[B, P, H, W]``, ``label`` ``[B, H, W]``);
        returns the loss. Override to change the step (keep the scheduler step and
        ``global_step`` increment, which resume relies on)."""
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True)
        x, y = self.batches.augment(x, y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            logits = self.train_model(x)
        loss = self.loss_fn(logits.float(), y)
        # Every rank votes: under DDP a rank that raised alone would leave the others
        # blocked in the gradient all-reduce forever.
        finite = bool(torch.isfinite(loss))
        if any_rank(not finite, self.device):
            where = f"became {loss.item()}" if not finite else "became non-finite on another rank"
            raise FloatingPointError(
                f"training loss {where} at step {self.global_step}; lower optim.lr, "
                "enable train.grad_clip or check the data for NaNs"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.global_step += 1
        return float(loss.detach())

    def _end_epoch(self, epoch: int, row: dict[str, Any], last: bool) -> bool:
        """Validate when due, update best/patience, write artefacts; True = stop early."""
        cfg = self.cfg.train
        val: ValidationResult | None = None
        if self.data.val_cases and ((epoch + 1) % cfg.val_every == 0 or last):
            val = self.validate()
            row.update(val.as_metrics())
            self.on_validation_epoch_end(epoch, val, row)
        improved = val is not None and self.best_epoch == epoch + 1
        self.history.append(row)
        self._write_artifacts(epoch, row, val)
        # last.pt is the commit point of an epoch: written after best.pt, so a kill between
        # the two redoes this epoch on --resume (and rewrites best.pt) instead of keeping a
        # stale best.pt that the resumed history says is newer
        if improved or (not self.data.val_cases and last):
            self._save("best.pt", epoch + 1, row)
        self._save("last.pt", epoch + 1, row)
        self.on_epoch_end(epoch, row)
        patience = cfg.patience()
        return patience is not None and self.bad_validations >= patience

    def validate(self) -> ValidationResult:
        """Per-volume Dice on this fold's validation cases along every trained axis (the
        Predictor's slice loop), all-reduced over DDP ranks."""
        from medseg.device import broadcast_buffers, shard

        broadcast_buffers(self.model)  # BatchNorm statistics are rank-local in DDP
        params = self.data.params
        return validate(
            self.model,
            shard(self.data.val_cases, self.info),
            self.data.class_names,
            axis=self.cfg.data.train_axes(),
            regions=params.regions,
            region_labels=params.region_labels if params.regions else None,
            context=self.cfg.data.context,
            device=self.device,
            batch_size=self.cfg.train.val_batch_size,
            amp=self.amp_dtype,
            channels_last=self.channels_last,
            ignore_label=self.data.params.ignore_label,
            num_samples=self.cfg.train.overlays if self.info.is_main else 0,
            progress=self.progress,
        )

    # ----------------------------------------------------------------- outputs
    def _write_artifacts(
        self, epoch: int, row: dict[str, Any], val: ValidationResult | None
    ) -> None:
        if not self.info.is_main:
            return
        artifacts.write_metrics_csv(self.run_dir / "metrics.csv", self.history)
        artifacts.plot_curves(self.run_dir / "curves.png", self.history, self.data.class_names)
        if val is not None and val.samples:
            path = self.run_dir / "overlays" / f"epoch_{epoch + 1:03d}.png"
            artifacts.plot_overlays(path, val.samples, self.data.class_names, epoch + 1)
        if self.tb is not None:
            self.tb.scalars({k: v for k, v in row.items() if k != "epoch"}, epoch + 1, "epoch/")
            self.tb.flush()
        dice = row.get("val_mean_dice")
        logger.info(
            "epoch %d: train loss %.4f%s (%.1f slices/s)",
            epoch + 1,
            row["train_loss"],
            ""
            if dice is None
            else f", val mean Dice {dice:.4f} (best {self.best_metric:.4f} @ {self.best_epoch})",
            row["slices_per_second"],
        )

    def checkpoint_payload(
        self, epoch: int, metrics: dict[str, Any], complete: bool = True
    ) -> dict[str, Any]:
        """The checkpoint dict (format in :mod:`medseg.checkpoint`)."""
        return {
            **self.model_record().payload_fields(),
            "state_dict": unwrap_model(self.model).state_dict(),
            "config": self.cfg.model_dump(mode="json"),
            "data_split": None if self.data.split is None else self.data.split.as_dict(),
            "epoch": epoch,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "trainer": {
                "history": list(self.history),
                "best_metric": self.best_metric,
                "best_epoch": self.best_epoch,
                "bad_validations": self.bad_validations,
                "dice_ema": self.dice_ema,
                "global_step": self.global_step,
                "epoch_complete": complete,
                "world_size": self.info.world_size,
            },
        }

    def model_record(self) -> ModelRecord:
        """What this run's model is (written into every checkpoint)."""
        return ModelRecord(
            name=self.cfg.model.name,
            in_channels=self.in_channels,
            num_outputs=self.num_outputs,
            # without `pretrained`: rebuilding must not need the ImageNet file
            options=architecture_options(dict(self.cfg.model.options)),
            preprocessing=self.data.params,
            class_names=list(self.data.class_names),
            channel_names=list(self.data.channel_names),
            axes=self.cfg.data.train_axes(),
            context=self.cfg.data.context,
            tta=self.cfg.train.test_time_augmentation,
        )

    def _init_weights(self, path: Path, payload: dict[str, Any]) -> None:
        """Load another model's weights as the starting point (``train.init_from``)."""
        theirs = ModelRecord.from_payload(payload, path)
        ours = self.model_record()
        # the ensembling rule, plus the architecture: the weights are loaded as they are
        same_net = [k for k in ("name", "options") if getattr(theirs, k) != getattr(ours, k)]
        differ = same_net + theirs.same_model_family(ours)
        if differ:
            detail = "; ".join(f"{k}: {getattr(theirs, k)} vs {getattr(ours, k)}" for k in differ)
            raise CheckpointError(
                f"train.init_from {path}: the model differs from this config's in {detail}; "
                "fine-tune with the config the model was trained with (same model, channels "
                "and classes)"
            )
        try:
            self.model.load_state_dict(payload["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(
                f"train.init_from {path}: its weights do not fit this model "
                f"({str(err).splitlines()[0][:200]})"
            ) from err
        logger.info("initialised the weights from %s", path)

    def _save(self, name: str, epoch: int, metrics: dict[str, Any], complete: bool = True) -> None:
        if self.info.is_main:
            path = self.run_dir / "checkpoints" / name
            save_checkpoint(self.checkpoint_payload(epoch, metrics, complete), path)
        barrier()

    def _record_rank_hashes(self) -> None:
        """Under DDP, rank 0 writes every rank's parameter hash to ``distributed.json`` (they
        must be identical: a cheap check that gradients were synchronised)."""
        if not self.info.enabled:
            return
        hashes = all_gather_objects(parameter_hash(self.model))
        if self.info.is_main:
            info = {"world_size": self.info.world_size, "parameter_sha256_per_rank": hashes}
            artifacts.write_text(self.run_dir / "distributed.json", json.dumps(info, indent=2))
            if len(set(hashes)) != 1:
                logger.error("DDP ranks ended with different weights: %s", hashes)


class _StopSignals:
    """Turn SIGINT/SIGTERM into a flag checked after each step (main thread only)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer._stop_signal is not None:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.trainer._stop_signal = signum
        logger.warning("signal %d received: finishing this step and saving last.pt", signum)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(
    cfg: TrainConfig,
    output: str | Path | None = None,
    resume: str | Path | None = None,
    device: str | None = None,
    info: DistInfo | None = None,
    progress: bool = True,
    fitted: PreprocessingParams | None = None,
) -> FitResult:
    """Run a whole training job (what ``medseg train`` calls); DDP when ``info`` says so.

    ``resume``: a checkpoint file or a run folder (its ``checkpoints/last.pt``); the run
    continues in that checkpoint's run folder. ``fitted``: see :class:`Trainer`.
    """
    info = info or DistInfo()
    where = "device" if device else "config key device"
    torch_device = resolve_device(device or cfg.device, info, param=where)
    init_process_group(info, torch_device)
    try:
        resume_path = _resume_path(resume) if resume is not None else None
        if resume_path is not None and output is None:
            run_dir = resume_path.parent.parent
        else:
            run_dir = default_run_dir(cfg, output)
        run_dir = Path(str(all_gather_objects(str(run_dir))[0]))  # rank 0's timestamp wins
        if resume_path is None and (run_dir / "checkpoints" / "last.pt").exists():
            raise OverwriteError(
                f"run folder {run_dir} already holds a run (checkpoints/last.pt); pass --resume "
                "to continue it or choose another --output"
            )
        trainer = Trainer(cfg, run_dir, torch_device, info, resume_path, progress, fitted)
        return trainer.fit()
    finally:
        destroy_process_group()


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [c for k in keys for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _init_checkpoint(init_from: str | None) -> tuple[Path, dict[str, Any]] | None:
    """(path, payload) of ``train.init_from``: a checkpoint, or a model folder's first fold."""
    if not init_from:
        return None
    path = Path(init_from)
    if path.is_dir():
        from medseg.inference.model_folder import is_model_folder, read_model_folder

        if is_model_folder(path):
            path = read_model_folder(path)[1][0]
        elif (path / "checkpoints" / "best.pt").is_file():
            path = path / "checkpoints" / "best.pt"
    return path, load_checkpoint(path)


def _resume_path(resume: str | Path) -> Path:
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        from medseg.errors import InputNotFoundError

        raise InputNotFoundError(
            f"cannot resume: {path} does not exist; pass a run folder with checkpoints/last.pt "
            "or a checkpoint file"
        )
    return path
