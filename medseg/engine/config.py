"""Typed training configuration: YAML file + ``--set a.b=c`` overrides, strictly validated.

Every level forbids unknown keys, so a misspelt key (``train.epocs``) is an error that lists the
valid keys at that level with a did-you-mean, instead of being silently ignored. The resolved
config (defaults filled in) is written to the run folder as ``config.yaml`` and stored in every
checkpoint, so a run can always be reproduced.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from medseg.config_base import StrictConfig, config_error, read_yaml_mapping
from medseg.config_base import valid_keys as _valid_keys
from medseg.data.config import DataConfig
from medseg.errors import ConfigError, InputNotFoundError

PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class ModelConfig(StrictConfig):
    """Network: a name from ``medseg.models.list_models()`` and its keyword options."""

    name: str = "unet"
    options: dict[str, Any] = Field(default_factory=dict)


class LossConfig(StrictConfig):
    """Dice + cross-entropy weighting (``medseg.losses.build_loss``)."""

    dice_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)
    class_weights: list[float] | None = None
    include_background: bool = False


class OptimConfig(StrictConfig):
    """Optimiser. ``momentum``/``nesterov`` apply to SGD only."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    nesterov: bool = True


class ScheduleConfig(StrictConfig):
    """Learning-rate schedule, stepped once per optimiser step.

    ``poly``: ``lr * (1 - t/T) ** power`` (nnU-Net); ``cosine``: from ``lr`` to ``min_lr``;
    ``constant``. A linear warm-up over ``warmup_epochs`` precedes any of them.
    """

    name: Literal["poly", "cosine", "constant"] = "poly"
    warmup_epochs: float = Field(0.0, ge=0)
    power: float = Field(0.9, gt=0)
    min_lr: float = Field(0.0, ge=0)


class TrainLoopConfig(StrictConfig):
    """The training loop: epochs, batch, precision, validation cadence, logging."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = Field(True, description="CUDA only (slower on CPU)")
    compile: bool = False
    grad_clip: float | None = Field(12.0, gt=0)
    val_every: int = Field(1, ge=1)
    val_batch_size: int = Field(32, ge=1)
    time_limit_minutes: float | None = Field(
        None,
        gt=0,
        description="stop after the epoch that would run past this many minutes of this call "
        "(validated and saved as a last epoch); None = no limit. `medseg plan` sets it a "
        "little above its estimate, so a slower machine cannot overrun the budget by much",
    )
    fill_time_limit: bool = Field(
        False,
        description="also grow the run (up to 4x train.epochs) when its epochs leave room under "
        "train.time_limit_minutes, re-sizing the learning-rate schedule; `medseg plan` sets it "
        "so a training run fills its share of the time budget on a faster machine",
    )
    test_time_augmentation: bool = Field(
        False,
        description="predict with the four in-plane flips averaged by default: out-of-fold "
        "figures and `medseg predict` of the trained model (`--no-tta` turns it off there)",
    )
    early_stopping_patience: int | Literal["auto"] | None = Field(
        "auto",
        description="validations without a better (smoothed) Dice before stopping; 'auto' = "
        "half the schedule's validations (a 30-epoch run cannot stop before epoch 15); None = off",
    )
    selection_ema: float = Field(
        0.8,
        ge=0,
        lt=1,
        description="best checkpoint and early stopping follow an exponential moving average "
        "of the validation Dice, ema = a * ema + (1 - a) * dice (0 = the raw Dice)",
    )
    init_from: str | None = Field(
        None,
        description="start from this checkpoint's (or model folder's first fold's) weights; "
        "channels and classes must match, its preprocessing is kept",
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader workers; None uses data.num_workers"
    )
    log_every: int = Field(10, ge=1)
    overlays: int = Field(4, ge=0, description="validation cases drawn per overlay PNG")

    @field_validator("early_stopping_patience")
    @classmethod
    def _positive_patience(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, 'auto' or null, got {value}")
        return value

    def patience(self) -> int | None:
        """Validations without improvement before stopping (``auto`` resolved)."""
        if self.early_stopping_patience == "auto":
            return max(3, math.ceil(self.epochs / self.val_every / 2))
        return self.early_stopping_patience  # type: ignore[return-value]

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off`/`on` as a boolean
        if isinstance(value, bool):
            return "auto" if value else "off"
        return value


class TrainConfig(StrictConfig):
    """Everything a training run needs; ``medseg train CONFIG.yaml`` parses exactly this."""

    name: str = "run"
    # numpy's legacy seeding (np.random.seed) takes 0..2**32-1; torch accepts that range too
    seed: int = Field(0, ge=0, le=2**32 - 1, description="run seed, 0..4294967295")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps (medseg.device)")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig)
    output: str | None = Field(None, description="run folder; None -> runs/<name>-<timestamp>")

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        from medseg.device import check_device_name

        try:
            return check_device_name(value)
        except ConfigError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _check_names(self) -> TrainConfig:
        if not self.name or "/" in self.name or "\\" in self.name:
            raise ValueError(f"name {self.name!r} must be a non-empty folder-safe string")
        return self


def valid_keys(loc: tuple[str | int, ...], root: type[BaseModel] = TrainConfig) -> list[str]:
    """Keys accepted at the config level that contains ``loc`` (the last element excluded)."""
    return _valid_keys(loc, root)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.epochs=2", "model.options.depth=3"]`` -> ``{dotted key: YAML-parsed value}``."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set train.epochs=2"
            )
        try:
            parsed[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({err})") from err
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with each dotted key set (intermediate dicts created)."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"--set {dotted}: {prefix!r} is a value ({child!r}), not a section; "
                    "set the whole value instead"
                )
            node = child
        node[parts[-1]] = value
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a config shipped with medseg (``sample``)."""
    path = Path(path)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / f"{path.stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and packaged.is_file() and path.parent == Path("."):
        return packaged
    shipped = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
    raise InputNotFoundError(
        f"config {path} does not exist; pass a YAML file path or a shipped config name ({shipped})"
    )


def build_config(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "config"
) -> TrainConfig:
    """Validate ``raw`` (+ dotted ``overrides``) into a TrainConfig or raise one ConfigError
    listing every problem."""
    overrides = overrides or {}
    merged = apply_overrides(raw, overrides)
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as err:
        raise config_error(err, TrainConfig, "training config", source, set(overrides)) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML training config and apply ``--set`` overrides (``KEY=VALUE``, YAML values)."""
    resolved = resolve_config_path(path)
    return build_config(
        read_yaml_mapping(resolved), parse_overrides(overrides), source=str(resolved)
    )


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved config (every default filled in) as YAML text."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
