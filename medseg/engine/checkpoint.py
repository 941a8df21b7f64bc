"""Checkpoint files: complete, atomic, and loadable without executing pickled code.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``. Keys (all written by the trainer):

``format_version`` (int), ``medseg_version`` (str),
``model``: ``{"name": str, "in_channels": int, "num_classes": int, "options": dict}``,
``state_dict``: model weights, unwrapped from DDP / ``torch.compile``,
``preprocessing``: ``PreprocessingParams.model_dump(mode="json")`` (recorded by the data
pipeline; inference re-applies it exactly),
``sampling``: ``{"axis": int, "context": int}`` (slice axis in canonical RAS voxel order and
2.5D half-context ``k``; the network sees ``(2k+1) * channels`` input planes),
``class_names``: list of str, index = label value (0 = background),
``channel_names``: list of str (one per input modality, e.g. ``["flair", "t1c"]``),
``config``: the resolved training config (dict), ``epoch`` (int), ``metrics`` (dict),
and for resuming: ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (state dicts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from medseg.errors import CheckpointError, InputNotFoundError
from medseg.io.atomic import atomic_path

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "state_dict", "preprocessing", "sampling", "class_names")


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` atomically (temp file + rename): a crash never leaves a corrupt file."""
    from medseg import __version__

    payload = {"format_version": FORMAT_VERSION, "medseg_version": __version__, **payload}
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it has what inference needs."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint {path} does not exist; pass the path to a .pt file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be loaded as a medseg checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); expected a .pt file written by `medseg train`"
        ) from err
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: found a {type(payload).__name__}, expected a dict checkpoint"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint lacks {', '.join(missing)}; expected a checkpoint written by "
            "`medseg train` (a bare state_dict has no preprocessing record and cannot be used)"
        )
    return payload


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded in prediction reports to identify the model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_from_checkpoint(
    payload: dict[str, Any], path: str | Path = "checkpoint"
) -> torch.nn.Module:
    """Rebuild the network a checkpoint records and load its weights (eval mode, CPU).

    Weight-initialisation options such as ``pretrained`` are dropped: the trained weights
    replace them, and the ImageNet file may not exist where the model is used.
    """
    from medseg.models import architecture_options, build_model

    spec = payload["model"]
    options = architecture_options(dict(spec.get("options", {})))
    model = build_model(spec["name"], spec["in_channels"], spec["num_classes"], **options)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit model {spec['name']!r} "
            f"({str(err).splitlines()[0][:200]}); the checkpoint is damaged or was written "
            "by an incompatible medseg version"
        ) from err
    return model.eval()


TRAINING_STATE_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def slim_checkpoint(source: str | Path, output: str | Path, **extra: Any) -> Path:
    """Copy a checkpoint without its resume state (optimizer, scheduler, scaler, RNG).

    What remains is everything inference needs (weights, preprocessing, sampling, names,
    config); ``extra`` adds keys such as a ``description``. Used to build the bundled model.
    """
    payload = load_checkpoint(source)
    slim = {k: v for k, v in payload.items() if k not in TRAINING_STATE_KEYS}
    slim.update(extra)
    slim.pop("format_version", None)
    slim.pop("medseg_version", None)
    return save_checkpoint(slim, output)
