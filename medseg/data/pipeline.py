"""The one data pipeline: from a :class:`DataConfig` to cached cases, the training loader and the
samples a training step sees. Used by ``medseg train``, ``medseg preview-data`` and the
benchmarks, so what the preview shows is what training draws.

1. :func:`prepare_data`: load the dataset, split at patient level (labelled cases only; the
   split is recorded in a split file with the preprocessed data and kept stable when cases
   are added, see :func:`split_specs`), resolve the preprocessing parameters against the
   dataset (channel and class names; CT statistics fitted on the training patients only,
   unless ``fitted`` parameters are passed, e.g. on resume) and cache every case. Under DDP
   rank 0 fits, caches and writes the split file first; the others then read its cache. The
   distributed context is an argument (:class:`medseg.device.DistInfo`).
2. :func:`build_train_batches`: where training batches come from and where they are
   augmented, decided once (``data.pipeline``, ``augmentation.backend``): the device-resident
   sampler (:mod:`medseg.data.resident`: volumes on the training device, batches cut with
   tensor ops) or :func:`build_train_loader` (the training :class:`SliceDataset`, its
   ``DistributedSampler``, one code path for 1 and N processes, and DataLoader workers).
3. :class:`TrainBatches`: iterate it for an epoch's batches after
   :meth:`TrainBatches.set_epoch` (every random stream seeded from ``(seed, epoch, rank)``
   by :func:`medseg.data.seeds.epoch_seed`), and pass each batch through
   :meth:`TrainBatches.augment` (the on-device augmentation, identity when it runs per
   sample in the workers or is off).
4. :func:`training_samples`: the first ``n`` samples of epoch 0 exactly as the training step
   receives them (crops, augmentation, seed); ``preview-data`` renders these.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.data.cache import cache_key, prepare_cases
from medseg.data.config import AugmentationConfig, DataConfig
from medseg.data.datasets import DatasetSpec, load_dataset
from medseg.data.preprocessing import PreprocessingParams, fit_preprocessing
from medseg.data.sampling import SliceDataset
from medseg.data.seeds import AUGMENT_STREAM, epoch_seed
from medseg.data.splits import Split, default_split_path, stable_split
from medseg.device import DistInfo, all_gather_objects
from medseg.errors import ConfigError, DatasetError, MedsegError
from medseg.io.atomic import atomic_path

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Cached cases (image ``(C, X, Y, Z)``, label ``(X, Y, Z)``) and the fitted parameters."""

    params: PreprocessingParams
    train_cases: list[Any]
    val_cases: list[Any]
    channel_names: list[str]
    class_names: list[str]
    spec: DatasetSpec | None = None
    split: Split | None = None

    @property
    def train_ids(self) -> list[str]:
        return [c.case_id for c in self.train_cases]

    @property
    def val_ids(self) -> list[str]:
        return [c.case_id for c in self.val_cases]


def default_cache_dir(dataset: str | Path) -> Path:
    """``~/.cache/medseg/<name>-<hash of the dataset's absolute path>``.

    Not beside the data: datasets often live on read-only or shared storage.
    """
    path = Path(dataset).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "medseg" / f"{path.stem.split('.')[0]}-{digest}"


def resolve_params(params: PreprocessingParams, spec: DatasetSpec) -> PreprocessingParams:
    """Fill what the user left at its default from the dataset description."""
    update: dict[str, object] = {}
    explicit = params.model_fields_set
    if "channel_names" not in explicit:
        update["channel_names"] = list(spec.channel_names)
    if "modality" not in explicit and spec.modality in ("ct", "mr", "other"):
        update["modality"] = spec.modality
    if "class_names" not in explicit and spec.labels:
        if params.label_map:
            n = max(max(params.label_map.values()), 0) + 1
            update["class_names"] = ["background"] + [f"class{i}" for i in range(1, n)]
            if n == 2:
                update["class_names"] = ["background", "foreground"]
        else:
            n = max(spec.labels) + 1
            update["class_names"] = [spec.labels.get(i, f"class{i}") for i in range(n)]
    resolved = params.model_copy(update=update)
    return PreprocessingParams.model_validate(resolved.model_dump())  # re-run validators


def fit_params_cached(
    params: PreprocessingParams, spec: DatasetSpec, train_ids: list[str], cache_dir: Path
) -> PreprocessingParams:
    """``params`` with dataset statistics fitted on the training cases, cached on disk.

    Only CT needs them (MR is z-scored per case). Fitting decodes every training volume, so
    the result is cached under a key of the sources and the parameters.
    """
    if params.modality != "ct" or params.intensity_stats is not None:
        return params
    cases = [spec.case(i) for i in train_ids]
    digest = hashlib.sha256("".join(cache_key(c, params) for c in cases).encode()).hexdigest()[:16]
    path = cache_dir / f"params-{digest}.json"
    if path.is_file():
        return PreprocessingParams.model_validate_json(path.read_text())
    fitted = fit_preprocessing(cases, params)
    with atomic_path(path) as tmp:
        tmp.write_text(fitted.model_dump_json(indent=2))
    return fitted


def split_file_path(cfg: DataConfig, cache_dir: Path) -> Path:
    """``data.split_file``, else the split file in the dataset's cache folder; refuses a path
    inside the dataset folder (inputs are never modified)."""
    if not cfg.split_file:
        return default_split_path(cache_dir, kfold=cfg.fold is not None)
    path = Path(cfg.split_file).expanduser()
    dataset = Path(cfg.dataset).expanduser().resolve()
    if dataset.is_dir() and dataset in path.resolve().parents:
        raise DatasetError(
            f"data.split_file {path} lies inside the dataset folder {dataset}; medseg never "
            "writes into a dataset. Put the split file beside your config or in data.cache_dir"
        )
    return path


def split_specs(
    spec: DatasetSpec,
    cfg: DataConfig,
    cache_dir: Path,
    write: bool = True,
    recorded: Split | None = None,
    inherit: Split | None = None,
) -> tuple[list[Any], list[Any], Split]:
    """Train/val case specs and the :class:`~medseg.data.splits.Split` they came from.

    ``data.val_cases`` or the manifest's ``split`` column when given; otherwise the stable plan
    in :func:`split_file_path` (created on the first run: a seeded patient-level split of
    ``val_fraction``, or k folds with ``fold``; later runs keep every recorded case on its side
    and put new cases on ``data.new_cases``). ``recorded``: a resumed run's own split, used
    as it is. ``inherit``: the split a fine-tune's starting model recorded, adopted when no
    split file exists yet (:func:`~medseg.data.splits.plan_split`). ``test`` cases never
    train; unlabelled cases are left out of both sides."""
    if recorded is not None:
        known = {c.case_id for c in spec.cases if c.label is not None}
        split = Split(
            [c for c in recorded.train if c in known],
            [c for c in recorded.val if c in known],
            "recorded",
            recorded.path,
            recorded.fold,
        )
    else:
        split = stable_split(
            spec.cases,
            split_file_path(cfg, cache_dir),
            val_fraction=cfg.val_fraction,
            fold=cfg.fold,
            num_folds=cfg.num_folds,
            seed=cfg.split_seed,
            val_cases=cfg.val_cases,
            new_cases=cfg.new_cases,
            write=write,
            inherit=inherit,
        )
    if not split.train:
        raise DatasetError(
            f"{cfg.dataset}: no labelled training cases after the split; "
            "add labelled cases or lower data.val_fraction"
        )
    return [spec.case(i) for i in split.train], [spec.case(i) for i in split.val], split


def prepare_data(
    cfg: DataConfig,
    info: DistInfo | None = None,
    fitted: PreprocessingParams | None = None,
    progress: bool = True,
    split: Split | None = None,
    inherit: Split | None = None,
) -> PreparedData:
    """Load, split, fit preprocessing (unless ``fitted`` is given, e.g. when resuming) and
    cache every case. Under DDP (``info``) rank 0 fits and builds the cache first; the
    others then read it, and an error on any rank stops every rank. ``split``: use this
    recorded split (a resumed run's) instead of the split file; ``inherit``: see
    :func:`split_specs`."""
    info = info or DistInfo()
    spec = load_dataset(cfg.dataset)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.dataset)
    # Only rank 0 writes the split file; the others compute the same plan from it.
    train_specs, val_specs, split = split_specs(spec, cfg, cache_dir, info.is_main, split, inherit)
    params = fitted
    cached: list[Any] = []
    for turn in (True, False):  # rank 0 first, then the others hit its cache
        error: MedsegError | None = None
        if info.is_main == turn:
            try:
                if fitted is None:
                    train_ids = [c.case_id for c in train_specs]
                    params = fit_params_cached(
                        resolve_params(cfg.preprocessing, spec), spec, train_ids, cache_dir
                    )
                cached = prepare_cases(
                    train_specs + val_specs, params, cache_dir, progress=progress and info.is_main
                )
            except MedsegError as err:
                error = err
        # Doubles as the barrier: every rank learns whether one failed, instead of the others
        # waiting out the process-group timeout for a rank that raised.
        failures = [f for f in all_gather_objects(str(error) if error else None) if f]
        if error is not None:
            raise error
        if failures:
            raise DatasetError(f"preparing the data failed on another rank: {failures[0]}")
    assert params is not None  # set by rank 0's turn or passed in
    # Nodes with their own data.cache_dir fit and split on their own: all must have got
    # rank 0's answer, or each would train on other cases or other intensities.
    check_ranks_agree(all_gather_objects(data_digest(split, params)), cache_dir)
    by_id = {c.case_id: c for c in cached}
    logger.info(
        "%d training and %d validation cases; classes %s; channels %s",
        len(train_specs),
        len(val_specs),
        params.class_names,
        params.channel_names,
    )
    return PreparedData(
        params=params,
        train_cases=[by_id[c.case_id] for c in train_specs],
        val_cases=[by_id[c.case_id] for c in val_specs],
        channel_names=list(params.channel_names),
        class_names=list(params.class_names),
        spec=spec,
        split=split,
    )


def data_digest(split: Split, params: PreprocessingParams) -> str:
    """SHA-256 of what every rank of one run must share: its split and fitted preprocessing."""
    text = repr((sorted(split.train), sorted(split.val), params.model_dump_json()))
    return hashlib.sha256(text.encode()).hexdigest()


def check_ranks_agree(digests: list[Any], cache_dir: Path) -> None:
    """Refuse a run whose ranks prepared different data (:func:`data_digest`, rank order)."""
    odd = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
    if odd:
        raise DatasetError(
            f"data.cache_dir {cache_dir}: rank(s) {odd} prepared a different split or "
            "preprocessing than rank 0 (a cache per node whose split file or dataset copy "
            "differs); copy rank 0's split file and dataset to every node, or put "
            "data.cache_dir (or data.split_file) on a file system all nodes share"
        )


def build_train_loader(
    data: PreparedData,
    cfg: DataConfig,
    batch_size: int,
    num_workers: int,
    seed: int,
    info: DistInfo | None = None,
    pin_memory: bool = False,
) -> tuple[SliceDataset, Any, Any]:
    """The training SliceDataset, its DataLoader and the sampler (:func:`build_train_batches`
    wraps them in a :class:`TrainBatches`, which seeds them each epoch).

    The sampler shards and shuffles with ``(seed, epoch)`` for any world size (one code path
    for 1 and N processes), so the data order is reproducible after a resume.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from medseg.data.augmentation import build_augmentation

    info = info or DistInfo()
    dataset = SliceDataset(
        data.train_cases,
        axis=cfg.train_axes(),
        context=cfg.context,
        crop_size=cfg.crop_size,
        foreground_ratio=cfg.foreground_ratio,
        # per sample here only where augmentation_site says so (None otherwise)
        transform=build_augmentation(cfg.augmentation, seed)
        if augmentation_site(cfg.augmentation) == "samples"
        else None,
        samples_per_epoch=cfg.samples_per_epoch,
        seed=seed,
        train=True,
    )
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
    )
    per_rank = len(sampler)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # BatchNorm needs > 1 sample; keep the last partial batch only when it is all we have
        drop_last=per_rank > batch_size,
        persistent_workers=False,  # workers re-fork each epoch and see set_epoch()
        generator=torch.Generator().manual_seed(seed),
    )
    return dataset, loader, sampler


@dataclass
class TrainBatches:
    """The training batches of one run, the one object the training loop talks to.

    Iterate it for one epoch of batches (``len()`` per rank) after :meth:`set_epoch`, and
    pass each batch through :meth:`augment`. ``mode`` is ``"resident"`` (``loader`` is a
    :class:`~medseg.data.resident.ResidentSlices`) or ``"workers"`` (``loader`` a DataLoader
    over ``dataset``, a SliceDataset, sharded by ``sampler``); ``augmentation`` is the config
    with its backend resolved, ``augmenter`` the on-device augmentation (``None`` when
    augmentation runs per sample in the dataset or is off), ``reason`` why this mode was
    chosen; ``seed`` and ``rank`` seed every epoch.
    """

    loader: Any
    mode: str
    augmentation: AugmentationConfig
    reason: str
    dataset: Any = None
    sampler: Any = None
    augmenter: Any = None
    seed: int = 0
    rank: int = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        return iter(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Seed everything random in ``epoch`` from ``(seed, epoch, rank)`` only (exact
        resume): the resident draws, or the sampler's order, the dataset's crops and CPU
        augmentation and the worker seeds; and the on-device augmentation."""
        if self.mode == "resident":
            self.loader.set_epoch(epoch)
        else:
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            self.loader.generator.manual_seed(epoch_seed(self.seed, epoch))
        if self.augmenter is not None:
            self.augmenter.generator.manual_seed(
                epoch_seed(self.seed, epoch, self.rank, AUGMENT_STREAM)
            )

    def augment(self, image: Any, label: Any) -> tuple[Any, Any]:
        """A batch (``[B, P, H, W]``, ``[B, H, W]``, on the training device) after the
        on-device augmentation; unchanged when there is none."""
        if self.augmenter is None:
            return image, label
        return self.augmenter(image, label)


def choose_pipeline(data: PreparedData, cfg: DataConfig, device: Any) -> tuple[str, str]:
    """``("resident" | "workers", why)`` for ``cfg.pipeline`` on ``device``."""
    import torch

    from medseg.data.resident import fits_on_device

    if cfg.pipeline == "workers":
        return "workers", "data.pipeline: workers"
    problems = []
    if cfg.crop_size is None:
        problems.append("data.crop_size is not set (whole slices of different sizes)")
    if cfg.augmentation.enabled and cfg.augmentation.backend == "cpu":
        problems.append("augmentation.backend: cpu runs per sample in DataLoader workers")
    fits, why = fits_on_device(data.train_cases, torch.device(device))
    if not fits:
        problems.append(f"the volumes do not fit: {why}")
    if cfg.pipeline == "resident" and problems:
        raise ConfigError(
            "data.pipeline: resident cannot be used: "
            + "; ".join(problems)
            + ". Fix that, or set data.pipeline: workers (or auto)"
        )
    if problems:
        return "workers", "; ".join(problems)
    return "resident", why


def resolved_augmentation(cfg: AugmentationConfig, mode: str) -> AugmentationConfig:
    """``cfg`` with ``backend: auto`` resolved for the pipeline ``mode``."""
    if cfg.backend != "auto":
        return cfg
    return cfg.model_copy(update={"backend": "batched" if mode == "resident" else "cpu"})


def augmentation_site(cfg: AugmentationConfig) -> str | None:
    """Where augmentation runs: ``"samples"`` (per sample, in the DataLoader workers),
    ``"batches"`` (:meth:`TrainBatches.augment`, on the training device) or ``None`` (off).
    ``auto`` means samples here; :func:`resolved_augmentation` resolves it per pipeline."""
    if not cfg.enabled:
        return None
    return "batches" if cfg.backend == "batched" else "samples"


def build_train_batches(
    data: PreparedData,
    cfg: DataConfig,
    batch_size: int,
    num_workers: int,
    seed: int,
    info: DistInfo | None = None,
    device: Any = "cpu",
) -> TrainBatches:
    """The training batches for ``cfg.pipeline`` on ``device``, with their augmentation
    (:func:`augmentation_site`) and per-epoch seeding (call :meth:`TrainBatches.set_epoch`)."""
    import torch

    info = info or DistInfo()
    mode, reason = choose_pipeline(data, cfg, device)
    aug = resolved_augmentation(cfg.augmentation, mode)
    augmenter = None
    if augmentation_site(aug) == "batches":
        from medseg.data.augmentation import BatchAugmenter

        augmenter = BatchAugmenter(aug, seed=seed)
    seeding = {"augmenter": augmenter, "seed": seed, "rank": info.rank}
    if mode == "resident":
        from medseg.data.resident import ResidentSlices

        loader = ResidentSlices(
            data.train_cases,
            axes=cfg.train_axes(),
            context=cfg.context,
            crop_size=cfg.crop_size,
            foreground_ratio=cfg.foreground_ratio,
            samples_per_epoch=cfg.samples_per_epoch,
            batch_size=batch_size,
            seed=seed,
            device=device,
            info=info,
        )
        logger.info("%s (%s)", loader.describe(), reason)
        return TrainBatches(loader, mode, aug, reason, **seeding)
    logger.info("training data through DataLoader workers (%s)", reason)
    dataset, loader, sampler = build_train_loader(
        data,
        cfg.model_copy(update={"augmentation": aug}),
        batch_size,
        num_workers,
        seed,
        info,
        pin_memory=torch.device(device).type == "cuda",
    )
    return TrainBatches(loader, mode, aug, reason, dataset, sampler, **seeding)


def training_samples(
    data: PreparedData, cfg: DataConfig, n: int, seed: int, batch_size: int
) -> list[dict[str, Any]]:
    """The first ``n`` samples of epoch 0 on rank 0 as the training step receives them:
    same order, crops and augmentation (CPU or batched) for the same ``seed`` and
    ``batch_size``. Each: ``image`` ``[P, H, W]``, ``label`` ``[H, W]`` (CPU tensors) plus
    ``case_id``, ``index`` and ``foreground``."""
    batches = build_train_batches(data, cfg, batch_size, 0, seed)
    batches.set_epoch(0)
    samples: list[dict[str, Any]] = []
    while len(samples) < n:  # a short epoch repeats, as --n may exceed samples_per_epoch
        for batch in batches:
            image, label = batches.augment(batch["image"], batch["label"])
            if "case_index" in batch:  # resident batches carry case indices, not ids
                batch = {**batch, "case_id": [data.train_ids[int(i)] for i in batch["case_index"]]}
            for i in range(image.shape[0]):
                extra = {k: _unbatch(v, i) for k, v in batch.items() if k not in ("image", "label")}
                samples.append({**extra, "image": image[i], "label": label[i]})
            if len(samples) >= n:
                break
    return samples[:n]


def _unbatch(value: Any, i: int) -> Any:
    """Item ``i`` of a collated field: a tensor row, a string, or a collated tuple of ints."""
    if isinstance(value, (list, tuple)) and value and hasattr(value[0], "ndim"):
        return tuple(int(v[i]) for v in value)  # e.g. valid_shape
    item = value[i]
    return item.item() if getattr(item, "ndim", 1) == 0 else item
