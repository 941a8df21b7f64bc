"""The public Python API, re-exported lazily by ``medseg/__init__.py``::

    import medseg

    scan = medseg.read_volume("scan.nii.gz")
    prediction = medseg.Predictor.load("model.pt", device="auto").predict(scan)
    result = medseg.predict_folder("scans/", "predictions/", model="model.pt")
    run = medseg.train("configs/sample.yaml", output="runs/demo", overrides=["train.epochs=2"])
    per_case, summary = medseg.evaluate("predictions/", "labels/")

Each function is the one the matching CLI command calls; the CLI only parses arguments.
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

    from medseg.engine.config import TrainConfig
    from medseg.engine.trainer import FitResult


def train(
    config: str | Path | TrainConfig,
    output: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> FitResult:
    """Train a model: ``config`` is a YAML path, a shipped config name (``"sample"``) or a
    :class:`~medseg.engine.config.TrainConfig`; ``overrides`` are ``KEY=VALUE`` strings as
    with ``--set``. Returns the run's :class:`~medseg.engine.trainer.FitResult` (run folder,
    best validation Dice, history). A single process; use ``torchrun -m medseg train`` for DDP.
    """
    from medseg.engine.config import TrainConfig, load_config
    from medseg.engine.trainer import train as run

    if isinstance(config, TrainConfig):
        if overrides:
            raise ConfigError(
                "overrides: only apply to a config file; edit the TrainConfig instead "
                "(cfg.model_copy(update=...))",
                param="overrides",
            )
        cfg = config
    else:
        cfg = load_config(config, list(overrides))
    return run(cfg, output=output, resume=resume, device=device, progress=progress)


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    labels: Mapping[str, Sequence[int]] | Sequence[str] | None = None,
    output: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dice, IoU, HD95/ASSD (mm), volume difference and lesion detection of predicted masks
    against reference masks (files or folders matched by case id).

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
    return evaluate_paths(prediction, reference, classes, output, overwrite=overwrite)


def plan(
    dataset: str | Path,
    time_budget: str | float | None = "30m",
    device: str = "auto",
    cross_validation: bool = True,
    progress: bool = True,
) -> Any:
    """Plan training of ``dataset`` from its fingerprint and this machine (``medseg plan``).

    ``time_budget``: wall time of the whole training command (``"30m"``, ``"2h"`` or
    minutes); ``cross_validation``: the budget covers every fold and the join. Returns a
    :class:`medseg.engine.planner.Plan`; ``plan.config()`` is the training config.
    """
    from medseg.engine.planner import make_plan, parse_duration

    return make_plan(dataset, parse_duration(time_budget), device, cross_validation, progress)


#: public name -> (module, attribute); resolved on first access so ``import medseg`` stays
#: light (no torch)
EXPORTS: dict[str, tuple[str, str]] = {
    "Predictor": ("medseg.inference.predictor", "Predictor"),
    "Prediction": ("medseg.inference.predictor", "Prediction"),
    "PostprocessConfig": ("medseg.inference.postprocess", "PostprocessConfig"),
    "default_model_path": ("medseg.inference.predictor", "default_model_path"),
    "predict_folder": ("medseg.inference.batch", "predict_folder"),
    "Volume": ("medseg.io.volume", "Volume"),
    "read_volume": ("medseg.io", "read_volume"),
    "write_volume": ("medseg.io", "write_volume"),
    "write_mask": ("medseg.io", "write_mask"),
    "load_config": ("medseg.engine.config", "load_config"),
    "TrainConfig": ("medseg.engine.config", "TrainConfig"),
    "train": ("medseg.api", "train"),
    "evaluate": ("medseg.api", "evaluate"),
    "plan": ("medseg.api", "plan"),
    "resolve_device": ("medseg.device", "resolve_device"),
}


def resolve(name: str) -> Any:
    """The object behind public name ``name`` (imports its module)."""
    import importlib

    module, attribute = EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)
