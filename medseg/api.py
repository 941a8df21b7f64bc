"""The public Python API, re-exported lazily by ``medseg/__init__.py``::

    import medseg

    scan = medseg.read_volume("scan.nii.gz")
    prediction = medseg.Predictor.load("model.pt", device="auto").predict(scan)
    result = medseg.predict_folder("scans/", "predictions/", model="model.pt")
    run = medseg.train("configs/sample.yaml", output="runs/demo", overrides=["train.epochs=2"])
    per_case, summary = medseg.evaluate("predictions/", "labels/")

Each function is the one the matching CLI command calls (``train``, ``cross_validate`` for
``train --folds``, ``evaluate``, ``export_model`` / ``export_package``, ``install_model``,
``installed_models``, ``merge_prediction_parts``, ``validate_data``, ``preview_data``,
``describe_models``; ``predict_folder``, ``predict_dicomweb``, ``import_dicom``,
``read_volume``/``write_volume`` are re-exported);
the CLI only parses arguments and prints.
Errors are :class:`~medseg.errors.MedsegError` subclasses whose message starts with the name
of the parameter at fault where there is one (``device 'cuda:3': ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from medseg.data.config import DataConfig
    from medseg.data.datasets import DatasetSpec
    from medseg.data.validation import Problem
    from medseg.device import DistInfo
    from medseg.engine.config import TrainConfig
    from medseg.engine.crossval import CrossValResult
    from medseg.engine.trainer import FitResult


def train(
    config: str | Path | TrainConfig,
    output: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    info: DistInfo | None = None,
) -> FitResult:
    """Train a model: ``config`` is a YAML path, a shipped config name (``"sample"``) or a
    :class:`~medseg.engine.config.TrainConfig`; ``overrides`` are ``KEY=VALUE`` strings as
    with ``--set``. Returns the run's :class:`~medseg.engine.trainer.FitResult` (run folder,
    best validation Dice, history). One process unless ``info`` (torchrun's ranks, what
    ``torchrun -m medseg train`` passes) says otherwise.
    """
    from medseg.engine.trainer import train as run

    cfg = _train_config(config, overrides)
    return run(cfg, output=output, resume=resume, device=device, info=info, progress=progress)


def cross_validate(
    config: str | Path | TrainConfig,
    output: str | Path | None = None,
    folds: str | Sequence[int] = "all",
    *,
    overrides: Sequence[str] = (),
    device: str | None = None,
    progress: bool = True,
    info: DistInfo | None = None,
) -> CrossValResult:
    """Train ``folds`` (``"all"``, ``"0,2"`` or ``[0, 2]``) of ``data.num_folds`` into
    ``output/fold_<k>`` (``output`` defaults as for :func:`train`); when every fold is
    finished, the out-of-fold evaluation, the postprocessing choice and ``output/model.json``
    (the ensemble, usable as ``model=`` anywhere). Re-running continues unfinished folds."""
    from medseg.engine.crossval import cross_validate as run
    from medseg.engine.trainer import default_run_dir

    cfg = _train_config(config, overrides)
    output = default_run_dir(cfg, output)
    return run(cfg, output, folds, device=device, info=info, progress=progress)


def _train_config(config: str | Path | TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    from medseg.engine.config import TrainConfig, load_config

    if not isinstance(config, TrainConfig):
        return load_config(config, list(overrides))
    if overrides:
        raise ConfigError(
            "overrides: only apply to a config file; edit the TrainConfig instead "
            "(cfg.model_copy(update=...))",
            param="overrides",
        )
    return config


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    labels: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
    output: str | Path | None = None,
    *,
    overwrite: bool = False,
    min_lesion_ml: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dice, IoU, HD95/ASSD (mm), volume difference and lesion detection of predicted masks
    against reference masks (files or folders matched by case id). Reference components
    under ``min_lesion_ml`` are not counted as lesions (0: every component is one).

    ``labels``: ``{"tumour": [1], "whole": [1, 2, 3]}``, or the CLI's ``--labels`` strings
    (``["1", "whole=1,2,3"]``); ``None`` scores every label present. With ``output`` (a
    ``.csv`` path) the per-case table and ``<name>_summary.csv`` are written (an existing
    file only with ``overwrite``; never over an input). Returns
    ``(per_case, summary)`` DataFrames.
    """
    from medseg.inference.evaluation import evaluate_paths, parse_labels

    if labels is not None and not isinstance(labels, Mapping):
        if isinstance(labels, str):
            labels = [labels]
        labels = parse_labels(list(labels))
    classes = {str(k): [int(v) for v in vs] for k, vs in labels.items()} if labels else None
    return evaluate_paths(
        prediction, reference, classes, output, overwrite=overwrite, min_lesion_ml=min_lesion_ml
    )


def plan(
    dataset: str | Path,
    time_budget: str | float | None = "30m",
    device: str = "auto",
    cross_validation: bool = True,
    progress: bool = True,
    retime: bool = False,
) -> Any:
    """Plan training of ``dataset`` from its fingerprint and this machine (``medseg plan``).

    ``time_budget``: wall time of the whole training command (``"30m"``, ``"2h"`` or
    minutes); ``cross_validation``: the budget covers every fold and the join; ``retime``:
    time the network's step again (the figure is cached per machine class). Returns a
    :class:`medseg.engine.planner.Plan`; ``plan.config()`` is the training config.
    """
    from medseg.engine.planner import make_plan, parse_duration

    return make_plan(
        dataset, parse_duration(time_budget), device, cross_validation, progress, retime
    )


def export_model(
    output: str | Path,
    fmt: str,
    model: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (a checkpoint or a model folder, whose folds become one averaged
    network; default: the bundled demo model) to TorchScript (``fmt="torchscript"``, ``.pt``)
    or ONNX (``"onnx"``) at ``output``, with its preprocessing and class metadata. Returns
    that metadata plus ``max_abs_diff``, the logit difference to PyTorch on CPU.
    ``fmt="package"``: the shippable zip of :func:`export_package` (returns its manifest).
    ``model`` may also name an installed model (:func:`install_model`)."""
    from medseg.inference.export import export_model as run
    from medseg.inference.predictor import default_model_path

    if fmt == "package":
        return export_package(output, model, overwrite=overwrite)
    return run(model or default_model_path(), output, fmt, overwrite=overwrite)  # type: ignore[arg-type]


def export_package(
    output: str | Path,
    model: str | Path | None = None,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model`` (a checkpoint or a model folder; default: the bundled demo model) as
    a shippable zip at ``output``: the model, ``model_card.md``, a MONAI-bundle-style
    ``metadata.json``, ``checksums.sha256`` and the medseg version (``medseg export
    --format package``). ``name`` (default: the zip's stem) is the name it installs under.
    Returns the package manifest."""
    from medseg.inference.package import export_package as run
    from medseg.inference.predictor import default_model_path

    return run(model or default_model_path(), output, name=name, version=version,
               overwrite=overwrite)  # fmt: skip


def install_model(
    package: str | Path,
    name: str | None = None,
    *,
    overwrite: bool = False,
    store: str | Path | None = None,
) -> dict[str, Any]:
    """Verify a model package (checksums, required medseg version, no paths escaping the
    target) and unpack it into the model store (``store``, else ``$MEDSEG_MODELS``, else
    ``~/.local/share/medseg/models``) as ``NAME`` (``medseg models install``); then
    ``model=NAME`` works wherever a model path does. Returns its :func:`installed_models`
    entry."""
    from medseg.inference.store import install_package

    return install_package(package, name, overwrite=overwrite, root=store)


def installed_models(store: str | Path | None = None) -> list[dict[str, Any]]:
    """The installed model packages (``medseg models list``): name, classes, channels,
    version, ``medseg_version``, ``installed`` (UTC date) and ``path``."""
    from medseg.inference.store import list_installed

    return list_installed(store)


def merge_prediction_parts(
    output: str | Path, *, overwrite: bool = False
) -> tuple[Path, list[tuple[str, str]]]:
    """Write ``output/summary.csv`` and ``lesions.csv`` of a finished job-array run
    (``predict_folder(..., num_parts=N, part_id=K)`` for every ``K``; ``medseg predict
    --merge-parts OUT``). Returns the summary's path and the ``(case, error)`` failures."""
    from medseg.inference.batch import Case, collect_failures, merge_parts

    summary, ids = merge_parts(output, overwrite=overwrite)
    return summary, collect_failures([Case(i, []) for i in ids], output)


def validate_data(
    dataset: str | Path, config: str | Path | None = None, progress: bool = False
) -> tuple[DatasetSpec, list[Problem]]:
    """Check every case of ``dataset`` (files, grids, NaNs, label values, empty masks);
    ``config``: a data or training config whose ``label_map`` defines the allowed labels.
    Returns the dataset description and the problems found (empty: ready to train)."""
    from medseg.data.config import load_data_config
    from medseg.data.datasets import load_dataset
    from medseg.data.validation import validate_dataset

    params = None
    if config is not None:
        params = load_data_config(config, {"dataset": str(dataset)}).preprocessing
    spec = load_dataset(dataset)
    return spec, validate_dataset(spec, params, progress=progress)


def preview_data(
    dataset: str | Path,
    output: str | Path,
    config: str | Path | None = None,
    *,
    n: int = 16,
    seed: int | None = None,
    batch_size: int | None = None,
    augment: bool = True,
) -> Path:
    """Write a PNG grid of the first ``n`` samples training draws from ``dataset`` (same
    crops, augmentation and seed). ``config``: a training config (its ``data:``, ``seed`` and
    ``train.batch_size`` are the defaults of ``seed`` and ``batch_size``) or a data config."""
    from medseg.data.preview import preview_dataset
    from medseg.io.atomic import check_not_input

    inputs = [Path(dataset)] + ([Path(config)] if config else [])
    check_not_input(Path(output), inputs)
    cfg, train_seed, train_batch = _preview_config(Path(dataset), config)
    if not augment:
        cfg = cfg.model_copy(
            update={"augmentation": cfg.augmentation.model_copy(update={"enabled": False})}
        )
    seed = train_seed if seed is None else seed
    batch_size = train_batch if batch_size is None else batch_size
    return preview_dataset(cfg, output, n=n, seed=seed, batch_size=batch_size)


def _preview_config(dataset: Path, config: str | Path | None) -> tuple[DataConfig, int, int]:
    """``(DataConfig, seed, batch size)``: a training config (with a ``data:`` section) gives
    its own seed and batch size, so the preview draws what ``medseg train`` will."""
    from medseg.data.config import DataConfig, load_data_config, read_yaml_mapping
    from medseg.engine.config import TrainConfig, build_config

    default_batch = TrainConfig.model_fields["train"].default_factory().batch_size  # type: ignore[misc]
    if config is None:
        return DataConfig(dataset=str(dataset)), 0, default_batch
    config = Path(config)
    if not config.is_file() or not isinstance(read_yaml_mapping(config).get("data"), dict):
        return load_data_config(config, {"dataset": str(dataset)}), 0, default_batch
    train_cfg = build_config(read_yaml_mapping(config), {"data.dataset": str(dataset)}, str(config))
    return train_cfg.data, train_cfg.seed, train_cfg.train.batch_size


def describe_models(name: str | None = None) -> list[dict[str, Any]]:
    """The registered networks usable as ``model.name`` (or only ``name``): description,
    options with their defaults, divisor, TorchScript method, pretrained encoder."""
    from medseg.models import list_models, model_info

    return [model_info(name)] if name else [model_info(n) for n in list_models()]


#: public name -> (module, attribute); resolved on first access so ``import medseg`` stays
#: light (no torch)
EXPORTS: dict[str, tuple[str, str]] = {
    "Predictor": ("medseg.inference.predictor", "Predictor"),
    "Prediction": ("medseg.inference.predictor", "Prediction"),
    "PostprocessConfig": ("medseg.inference.postprocess", "PostprocessConfig"),
    "default_model_path": ("medseg.inference.predictor", "default_model_path"),
    "predict_folder": ("medseg.inference.batch", "predict_folder"),
    "predict_dicomweb": ("medseg.inference.pacs", "predict_dicomweb"),
    "import_dicom": ("medseg.data.dicom_import", "import_dicom"),
    "Volume": ("medseg.io.volume", "Volume"),
    "read_volume": ("medseg.io", "read_volume"),
    "write_volume": ("medseg.io", "write_volume"),
    "write_mask": ("medseg.io", "write_mask"),
    "load_config": ("medseg.engine.config", "load_config"),
    "TrainConfig": ("medseg.engine.config", "TrainConfig"),
    "train": ("medseg.api", "train"),
    "cross_validate": ("medseg.api", "cross_validate"),
    "evaluate": ("medseg.api", "evaluate"),
    "plan": ("medseg.api", "plan"),
    "export_model": ("medseg.api", "export_model"),
    "merge_prediction_parts": ("medseg.api", "merge_prediction_parts"),
    "export_package": ("medseg.api", "export_package"),
    "install_model": ("medseg.api", "install_model"),
    "installed_models": ("medseg.api", "installed_models"),
    "validate_data": ("medseg.api", "validate_data"),
    "preview_data": ("medseg.api", "preview_data"),
    "describe_models": ("medseg.api", "describe_models"),
    "resolve_device": ("medseg.device", "resolve_device"),
}


def resolve(name: str) -> Any:
    """The object behind public name ``name`` (imports its module)."""
    import importlib

    module, attribute = EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)
