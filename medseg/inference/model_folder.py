"""A model folder is a model: ``DIR/model.json`` names the fold checkpoints of a
cross-validation and what they share (one :class:`~medseg.checkpoint.ModelRecord`, with the
postprocessing chosen on out-of-fold predictions).

``model.json`` (written atomically by :func:`write_model_folder`)::

    {"format": "medseg-model-folder", "format_version": 1, "medseg_version": "...",
     "notice": "...", "record": {ModelRecord JSON},
     "folds": [{"fold": 0, "checkpoint": "fold_0/checkpoints/best.pt", "sha256": "...",
                "train_cases": [...], "val_cases": [...]}, ...],
     "postprocessing_decision": {per structure: candidates and their out-of-fold figures},
     "cross_validation": {summary figures}}

Checkpoint paths are relative to the folder, so the folder can be moved or copied whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.checkpoint import ModelRecord
from medseg.errors import CheckpointError, InputNotFoundError
from medseg.io.atomic import write_json

logger = logging.getLogger(__name__)

MODEL_FILE = "model.json"
FORMAT = "medseg-model-folder"
FORMAT_VERSION = 1


def is_model_folder(path: str | Path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


def read_model_folder(
    path: str | Path, *, verify: bool = True
) -> tuple[ModelRecord, list[Path], dict[str, Any]]:
    """(record, fold checkpoint paths, the whole model.json) of a model folder.

    With ``verify`` (the default) every fold checkpoint's SHA-256 must equal the one
    ``model.json`` recorded for it: a fold replaced or damaged after training would
    otherwise be used without a word, under the folder's old name.
    """
    folder = Path(path)
    manifest = folder / MODEL_FILE
    if not manifest.is_file():
        raise InputNotFoundError(
            f"{folder}: no {MODEL_FILE}; expected a model folder written by "
            "`medseg train CONFIG --folds all` (or pass a checkpoint .pt file)"
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        record = ModelRecord.model_validate(data["record"])
        checkpoints = [folder / fold["checkpoint"] for fold in data["folds"]]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{manifest}: not a valid medseg model folder ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); re-run `medseg train CONFIG --folds all "
            "--output DIR` to rebuild it"
        ) from err
    missing = [str(p) for p in checkpoints if not p.is_file()]
    if not checkpoints or missing:
        raise CheckpointError(
            f"{manifest}: fold checkpoint(s) missing: {', '.join(missing) or 'none listed'}; "
            "copy the whole model folder (fold_*/checkpoints/best.pt included)"
        )
    if verify:
        verify_fold_hashes(manifest, data["folds"], checkpoints)
    return record, checkpoints, data


def verify_fold_hashes(
    manifest: Path, folds: list[dict[str, Any]], checkpoints: list[Path]
) -> None:
    """Raise :class:`CheckpointError` naming the first fold whose checkpoint's SHA-256
    differs from the one recorded in ``manifest`` (a fold without a recorded hash, from a
    hand-made manifest, is logged and accepted)."""
    from medseg.checkpoint import file_sha256

    for fold, ckpt in zip(folds, checkpoints, strict=True):
        expected = fold.get("sha256") if isinstance(fold, dict) else None
        name = f"fold {fold.get('fold', '?')}" if isinstance(fold, dict) else "a fold"
        if not expected:
            logger.warning("%s: %s has no recorded sha256; not verified", manifest, name)
            continue
        found = file_sha256(ckpt)
        if found != expected:
            raise CheckpointError(
                f"{manifest}: {name} checkpoint {ckpt} has SHA-256 {found[:16]}..., but "
                f"{MODEL_FILE} records {str(expected)[:16]}... (the file was replaced or "
                "damaged after training); restore the original checkpoint from a backup or "
                "re-run the cross-validation (`medseg train CONFIG --folds all`)"
            )


def write_model_folder(
    folder: str | Path,
    record: ModelRecord,
    folds: list[dict[str, Any]],
    **sections: Any,
) -> Path:
    """Write ``folder/model.json`` atomically; ``folds`` hold paths relative to ``folder``."""
    path = Path(folder) / MODEL_FILE
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medseg_version": __version__,
        "notice": RESEARCH_USE_NOTICE,
        "record": record.model_dump(mode="json"),
        "folds": folds,
        **sections,
    }
    return write_json(path, data)
