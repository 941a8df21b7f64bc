"""From a :class:`DataConfig` to training/validation datasets and DataLoaders (one call for the trainer).

``build_datasets`` resolves the preprocessing parameters against the dataset (channel and
class names, CT statistics fitted on the training patients only), splits at patient level,
caches the cases and returns :class:`SliceDataset` objects plus the final
:class:`PreprocessingParams` to store in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from medseg.data.cache import cache_key, prepare_cases
from medseg.data.config import DataConfig
from medseg.data.datasets import DatasetSpec, load_dataset
from medseg.data.preprocessing import PreprocessingParams, fit_preprocessing
from medseg.data.sampling import SliceDataset
from medseg.data.splits import split_from_spec
from medseg.errors import DatasetError
from medseg.io.atomic import atomic_path

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DataBundle:
    """What the trainer needs: datasets, the resolved parameters and the split."""

    train: SliceDataset
    val: SliceDataset | None
    params: PreprocessingParams
    spec: DatasetSpec
    train_ids: list[str]
    val_ids: list[str]


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


def build_datasets(cfg: DataConfig, seed: int = 0, progress: bool = True) -> DataBundle:
    """Load, split (patient level), fit, cache and wrap the dataset described by ``cfg``."""
    from medseg.data.augmentation import build_augmentation

    spec = load_dataset(cfg.dataset)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(cfg.dataset)
    train_ids, val_ids = split_from_spec(
        spec.cases, cfg.val_fraction, cfg.fold, cfg.num_folds, cfg.split_seed, cfg.val_cases
    )
    if not train_ids:
        raise DatasetError(f"{cfg.dataset}: the split left no training cases; lower val_fraction")
    params = fit_params_cached(resolve_params(cfg.preprocessing, spec), spec, train_ids, cache_dir)
    cached = prepare_cases([spec.case(i) for i in train_ids + val_ids], params, cache_dir, progress)
    by_id = {c.case_id: c for c in cached}
    axis = params.slice_axis
    train = SliceDataset(
        [by_id[i] for i in train_ids],
        axis,
        cfg.context,
        cfg.crop_size,
        cfg.foreground_ratio,
        transform=build_augmentation(cfg.augmentation, seed),
        samples_per_epoch=cfg.samples_per_epoch,
        seed=seed,
        train=True,
    )
    val = (
        SliceDataset([by_id[i] for i in val_ids], axis, cfg.context, train=False, seed=seed)
        if val_ids
        else None
    )
    logger.info(
        "train %d cases (%d items/epoch), val %d cases", len(train_ids), len(train), len(val_ids)
    )
    return DataBundle(train, val, params, spec, train_ids, val_ids)


def build_loaders(
    bundle: DataBundle, batch_size: int, num_workers: int = 2, distributed: bool = False
) -> tuple[object, object | None]:
    """``(train_loader, val_loader)``; with ``distributed`` each rank gets disjoint indices
    (``DistributedSampler``; call ``loader.sampler.set_epoch`` and ``dataset.set_epoch``)."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    def loader(ds: SliceDataset | None, train: bool) -> DataLoader | None:
        if ds is None:
            return None
        sampler = DistributedSampler(ds, shuffle=train) if distributed else None
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=train,
            # not persistent: workers must see set_epoch() on the dataset each epoch
            persistent_workers=False,
        )

    return loader(bundle.train, True), loader(bundle.val, False)


def describe(bundle: DataBundle) -> dict[str, object]:
    """JSON-able summary (for logs and ``medseg preview-data``)."""
    return json.loads(
        json.dumps(
            {
                "dataset": bundle.spec.name,
                "train": bundle.train_ids,
                "val": bundle.val_ids,
                "preprocessing": bundle.params.model_dump(mode="json"),
            }
        )
    )
