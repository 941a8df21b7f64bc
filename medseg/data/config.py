"""Typed data-pipeline configuration (parsed once at the entry point).

Every model is a :class:`~medseg.config_base.StrictConfig`, so a misspelt key in a YAML config
is rejected with the offending name (and a did-you-mean) instead of silently ignored. Spatial sizes are in pixels of the preprocessed
grid, angles in degrees, probabilities in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from medseg.config_base import StrictConfig, config_error, read_yaml_mapping
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.slicing import check_axes
from medseg.errors import InputNotFoundError

Range = tuple[float, float]


def _check_range(value: Range) -> Range:
    if value[0] > value[1]:
        raise ValueError(f"expected (low, high) with low <= high, got {value}")
    return value


class ElasticConfig(StrictConfig):
    """Elastic deformation: a coarse grid of random offsets, smoothly (bicubic) upsampled.

    ``spacing`` is the distance in pixels between control points (larger = smoother);
    ``magnitude`` the range (pixels) from which each sample's offset scale is drawn; offsets
    are ``N(0, 1) * magnitude`` at each control point (MONAI ``Rand2DElasticd`` semantics).
    """

    prob: float = Field(0.2, ge=0, le=1)
    spacing: float = Field(32.0, gt=1)
    magnitude: Range = (0.0, 4.0)

    _ordered = field_validator("magnitude")(classmethod(lambda cls, v: _check_range(v)))


class RotationConfig(StrictConfig):
    """In-plane rotation by an angle drawn uniformly from ``[-degrees, degrees]``."""

    prob: float = Field(0.2, ge=0, le=1)
    degrees: float = Field(15.0, ge=0, le=180)


class ScalingConfig(StrictConfig):
    """Isotropic zoom by a factor drawn from ``range`` (> 1 enlarges the anatomy)."""

    prob: float = Field(0.2, ge=0, le=1)
    range: Range = (0.85, 1.25)

    _ordered = field_validator("range")(classmethod(lambda cls, v: _check_range(v)))


class FlipConfig(StrictConfig):
    """Mirror along each in-plane axis ``(H, W)`` with the given probabilities."""

    prob: tuple[float, float] = (0.5, 0.5)


class GammaConfig(StrictConfig):
    """Gamma on intensities rescaled to [0, 1] (then rescaled back), gamma from ``range``.

    ``invert_prob``: probability of a second, *inverted* gamma (on the negated image, mean and
    standard deviation kept), which brightens dark structures (nnU-Net: 0.1).
    """

    prob: float = Field(0.3, ge=0, le=1)
    range: Range = (0.7, 1.5)
    invert_prob: float = Field(0.1, ge=0, le=1)

    _ordered = field_validator("range")(classmethod(lambda cls, v: _check_range(v)))


class NoiseConfig(StrictConfig):
    """Additive Gaussian noise, standard deviation drawn from ``[0, std]`` (normalised units)."""

    prob: float = Field(0.15, ge=0, le=1)
    std: float = Field(0.1, ge=0)


class BlurConfig(StrictConfig):
    """Gaussian blur, sigma (pixels) drawn from ``sigma``."""

    prob: float = Field(0.1, ge=0, le=1)
    sigma: Range = (0.5, 1.0)

    _ordered = field_validator("sigma")(classmethod(lambda cls, v: _check_range(v)))


class LowResConfig(StrictConfig):
    """Low-resolution simulation: down-sample (nearest) by a zoom from ``range``, then back up
    (bilinear), as from a thicker-slice or lower-field acquisition (nnU-Net: p 0.25, 0.5-1)."""

    prob: float = Field(0.25, ge=0, le=1)
    range: Range = (0.5, 1.0)

    _ordered = field_validator("range")(classmethod(lambda cls, v: _check_range(v)))


class BrightnessConfig(StrictConfig):
    """Multiply intensities by a factor from ``range``."""

    prob: float = Field(0.15, ge=0, le=1)
    range: Range = (0.75, 1.25)

    _ordered = field_validator("range")(classmethod(lambda cls, v: _check_range(v)))


class ContrastConfig(StrictConfig):
    """Scale intensities around their mean by a factor from ``range`` (mean kept)."""

    prob: float = Field(0.15, ge=0, le=1)
    range: Range = (0.75, 1.25)

    _ordered = field_validator("range")(classmethod(lambda cls, v: _check_range(v)))


class AugmentationConfig(StrictConfig):
    """Training-time augmentation. ``backend``: ``"cpu"`` (MONAI dictionary transforms per
    sample in the DataLoader workers), ``"batched"``
    (:class:`~medseg.data.augmentation.BatchAugmenter` on whole batches on the training
    device) or ``"auto"`` (batched with the device-resident pipeline, else cpu)."""

    enabled: bool = True
    backend: Literal["auto", "cpu", "batched"] = "auto"
    elastic: ElasticConfig = ElasticConfig()
    rotation: RotationConfig = RotationConfig()
    scaling: ScalingConfig = ScalingConfig()
    flips: FlipConfig = FlipConfig()
    gamma: GammaConfig = GammaConfig()
    noise: NoiseConfig = NoiseConfig()
    blur: BlurConfig = BlurConfig()
    brightness: BrightnessConfig = BrightnessConfig()
    contrast: ContrastConfig = ContrastConfig()
    lowres: LowResConfig = LowResConfig()


class DataConfig(StrictConfig):
    """Where the data is and how it becomes training samples.

    Attributes:
        dataset: path to an nnU-Net v2/MSD folder, a CSV/YAML manifest or a plain folder.
        cache_dir: where preprocessed ``.npy`` volumes are cached; ``None`` =
            ``~/.cache/medseg/<dataset name>-<hash of its path>`` (never inside the dataset).
        preprocessing: see :class:`PreprocessingParams`.
        context: 2.5D half-context ``k`` (the network sees ``C * (2k + 1)`` planes).
        slice_axes: canonical axes to train on; ``None`` = ``preprocessing.slice_axis`` only.
            ``[0, 1, 2]`` trains one network on sagittal, coronal and axial slices (axis drawn
            per sample), so ``medseg predict --axes 0,1,2`` is a real multi-view ensemble.
        crop_size: training crop ``(H, W)`` in pixels; ``None`` = whole slices (padded to the
            largest slice in the batch by the collate function).
        foreground_ratio: share of training samples drawn from slices containing foreground.
        samples_per_epoch: training samples per epoch; ``None`` = one per slice.
        val_fraction: share of patients held out when ``fold`` is ``None``.
        fold: k-fold cross-validation fold (0-based) or ``None``.
        num_folds: number of folds of ``fold`` and of ``medseg train --folds all`` (capped at
            the number of labelled cases).
        split_seed: seed of the patient-level split.
        val_cases: case ids to validate on (everything else trains); overrides the split file.
        split_file: the JSON file recording the split (see docs/training.md, "Stable
            splits"); ``None`` = ``<cache_dir>/splits_holdout.json`` (or ``splits_kfold.json``
            with ``fold``). Created on the first run, then kept: recorded cases never change
            side, and a different ``val_fraction``/``num_folds``/``split_seed`` is refused.
        new_cases: where cases missing from the split file go: ``train`` (default) or ``val``.
        num_workers: DataLoader workers (``pipeline: workers``).
        pipeline: ``"resident"`` keeps the cached volumes as tensors on the training device
            and cuts each batch there with tensor ops (no workers,
            :mod:`medseg.data.resident`); ``"workers"`` is the per-sample DataLoader
            pipeline; ``"auto"`` (default) is resident when the volumes fit (see
            :data:`medseg.data.resident.FIT_SHARE`), a crop size is set and the augmentation
            backend is not ``cpu``.
        augmentation: see :class:`AugmentationConfig`.
    """

    dataset: str
    cache_dir: str | None = None
    preprocessing: PreprocessingParams = PreprocessingParams()
    context: int = Field(0, ge=0)
    slice_axes: list[int] | None = None
    crop_size: tuple[int, int] | None = (256, 256)
    foreground_ratio: float = Field(0.33, ge=0, le=1)
    samples_per_epoch: int | None = Field(None, gt=0)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    fold: int | None = Field(None, ge=0)
    num_folds: int = Field(5, ge=2)
    split_seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy seeds are non-negative
    val_cases: list[str] | None = None
    split_file: str | None = None
    new_cases: Literal["train", "val"] = "train"
    num_workers: int = Field(2, ge=0)
    pipeline: Literal["auto", "resident", "workers"] = "auto"
    augmentation: AugmentationConfig = AugmentationConfig()

    @field_validator("slice_axes")
    @classmethod
    def _axes(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else list(check_axes(value, "slice_axes", ValueError))

    def train_axes(self) -> tuple[int, ...]:
        """The axes training slices along, the primary (``preprocessing.slice_axis``) first."""
        primary = self.preprocessing.slice_axis
        if not self.slice_axes:
            return (primary,)
        return (
            (primary, *[a for a in self.slice_axes if a != primary])
            if primary in self.slice_axes
            else tuple(self.slice_axes)
        )

    @field_validator("crop_size")
    @classmethod
    def _positive_crop(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"crop_size must be positive pixels, got {value}")
        return value


def load_data_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DataConfig:
    """Read a YAML file holding a ``DataConfig`` (or a training config with a ``data:`` section).

    Raises :class:`ConfigError` naming the bad keys, with the valid ones.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"config {path} does not exist; pass a YAML file")
    raw = read_yaml_mapping(path)
    if isinstance(raw.get("data"), dict):
        raw = raw["data"]
    raw = {**raw, **(overrides or {})}
    return parse_data_config(raw, source=str(path))


def parse_data_config(raw: dict[str, Any], source: str = "config") -> DataConfig:
    """Validate a dict into a :class:`DataConfig`; errors name each bad key and the fix."""
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, DataConfig, "data config", source, see="docs/data.md") from err
